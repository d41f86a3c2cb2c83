//! The circuit breaker (`[guard]`): pauses a run before it burns the sending domain. It watches
//! a sliding window of the run's last `window` charged attempts, overall and per mailbox
//! provider, and trips when, with at least `min_sample` attempts in the window:
//!
//! - the hard-bounce rate `hard / (accepted + hard + soft)` passes `max_hard_bounce_rate`;
//! - the deferral rate `deferred / (accepted + hard + soft + deferred)` passes
//!   `max_deferral_rate`;
//! - the complaint rate `complained / relay accepted` of the campaign (fed by `bounces import`
//!   of ARF reports, read from the ledger while the run goes) passes `max_complaint_rate`, once
//!   `min_sample` recipients were accepted.
//!
//! Per provider only for the named providers (Google, Microsoft, Yahoo, ...): `other`,
//! `self_hosted` and `unknown` are mixed bags, covered by the overall window. Attempts that
//! were given back uncharged (throttling, a pause) are not samples. The pipeline has no test
//! sends (a `--to` send never enters the ledger), so every sample is a real recipient.
//!
//! Pure state and arithmetic, no I/O or clock: the worker feeds samples, the dispatcher feeds
//! complaint counts, and a [`Trip`] becomes `Stop::Guard`, which pauses the run.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::provider::Provider;

/// `[guard]` as the pipeline uses it. Rates are percentages, as in campaign.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardOptions {
    pub enabled: bool,
    pub max_hard_bounce_rate: f64,
    pub max_complaint_rate: f64,
    pub max_deferral_rate: f64,
    /// Attempts (recipients accepted, for complaints) needed before a rate counts.
    pub min_sample: u32,
    /// How many of the latest attempts the rates are computed over.
    pub window: u32,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            enabled: true,
            max_hard_bounce_rate: 5.0,
            max_complaint_rate: 0.3,
            max_deferral_rate: 20.0,
            min_sample: 200,
            window: 1000,
        }
    }
}

impl From<&crate::campaign::GuardSection> for GuardOptions {
    fn from(g: &crate::campaign::GuardSection) -> Self {
        GuardOptions {
            enabled: g.enabled,
            max_hard_bounce_rate: g.max_hard_bounce_rate,
            max_complaint_rate: g.max_complaint_rate,
            max_deferral_rate: g.max_deferral_rate,
            min_sample: g.min_sample,
            window: g.window,
        }
    }
}

/// What one charged attempt counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Accepted,
    Hard,
    Soft,
    /// A temporary failure (deferred, or failed after its last retry).
    Deferred,
}

/// The rate a guard watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    HardBounce,
    Complaint,
    Deferral,
}

impl Limit {
    /// The campaign.toml key of its limit.
    pub fn key(self) -> &'static str {
        match self {
            Limit::HardBounce => "max_hard_bounce_rate",
            Limit::Complaint => "max_complaint_rate",
            Limit::Deferral => "max_deferral_rate",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Limit::HardBounce => "hard-bounce",
            Limit::Complaint => "complaint",
            Limit::Deferral => "deferral",
        }
    }
}

/// The counts of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub hard: u64,
    pub soft: u64,
    pub deferred: u64,
}

impl Counts {
    fn slot(&mut self, sample: Sample) -> &mut u64 {
        match sample {
            Sample::Accepted => &mut self.accepted,
            Sample::Hard => &mut self.hard,
            Sample::Soft => &mut self.soft,
            Sample::Deferred => &mut self.deferred,
        }
    }

    /// Every attempt counted.
    pub fn total(&self) -> u64 {
        self.accepted + self.hard + self.soft + self.deferred
    }
}

/// Why a guard tripped: which rate, where, and the figures behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    pub limit: Limit,
    /// `None` for the whole run.
    pub provider: Option<Provider>,
    /// The rate's numerator and denominator.
    pub count: u64,
    pub of: u64,
    /// The limit, in hundredths of a percent (500 = 5%).
    pub max_bp: u32,
    /// The window's counts (for the complaint guard: none, it reads the campaign's totals).
    pub window: Option<Counts>,
}

impl Trip {
    /// The rate in percent.
    pub fn rate(&self) -> f64 {
        if self.of == 0 {
            0.0
        } else {
            self.count as f64 * 100.0 / self.of as f64
        }
    }
}

impl fmt::Display for Trip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.provider {
            Some(p) => format!(" at {}", p.label()),
            None => String::new(),
        };
        let max = f64::from(self.max_bp) / 100.0;
        write!(
            f,
            "the {} guard tripped{at}: {:.2}% ({} of {}), above [guard] {} = {max}",
            self.limit.name(),
            self.rate(),
            self.count,
            self.of,
            self.limit.key(),
        )?;
        if let Some(w) = self.window {
            write!(
                f,
                " (last {} attempts: {} accepted, {} bounced hard, {} soft, {} deferred)",
                w.total(),
                w.accepted,
                w.hard,
                w.soft,
                w.deferred
            )?;
        }
        f.write_str(match self.limit {
            Limit::HardBounce => {
                ". Clean the list: `mailroom check` the contacts and `mailroom suppress import` \
                 the addresses you know are dead, then `mailroom send` again; or raise the limit \
                 in campaign.toml if these bounces are expected"
            }
            Limit::Complaint => {
                ". People are reporting this campaign as spam: remove everyone who did not opt \
                 in (`mailroom suppress import`), then `mailroom send` again; or raise the limit \
                 in campaign.toml"
            }
            Limit::Deferral => {
                ". The receiving side keeps deferring: send more slowly ([rate], \
                 [rate.per_domain]) and `mailroom send` again later; or raise the limit in \
                 campaign.toml"
            }
        })
    }
}

/// A sliding window of the latest samples.
#[derive(Debug, Clone)]
struct Window {
    ring: VecDeque<Sample>,
    counts: Counts,
}

impl Window {
    fn new() -> Window {
        Window {
            ring: VecDeque::new(),
            counts: Counts::default(),
        }
    }

    fn push(&mut self, sample: Sample, cap: usize) {
        if self.ring.len() == cap
            && let Some(old) = self.ring.pop_front()
        {
            *self.counts.slot(old) -= 1;
        }
        self.ring.push_back(sample);
        *self.counts.slot(sample) += 1;
    }
}

/// A percent limit in hundredths of a percent.
fn basis_points(percent: f64) -> u32 {
    (percent * 100.0).round().clamp(0.0, 10_000.0) as u32
}

/// Whether `count / of` is above `max_bp` hundredths of a percent (exact integer arithmetic).
fn above(count: u64, of: u64, max_bp: u32) -> bool {
    of > 0 && u128::from(count) * 10_000 > u128::from(max_bp) * u128::from(of)
}

/// Whether a provider gets a window of its own.
fn watched(provider: Provider) -> bool {
    !matches!(
        provider,
        Provider::Other | Provider::SelfHosted | Provider::Unknown
    )
}

/// The breaker's state for one run.
#[derive(Debug, Clone)]
pub struct Guard {
    enabled: bool,
    hard_bp: u32,
    complaint_bp: u32,
    deferral_bp: u32,
    min_sample: u64,
    window: usize,
    overall: Window,
    providers: HashMap<Provider, Window>,
}

impl Guard {
    pub fn new(options: &GuardOptions) -> Guard {
        Guard {
            enabled: options.enabled,
            hard_bp: basis_points(options.max_hard_bounce_rate),
            complaint_bp: basis_points(options.max_complaint_rate),
            deferral_bp: basis_points(options.max_deferral_rate),
            min_sample: u64::from(options.min_sample.max(1)),
            window: options.window.max(options.min_sample).max(1) as usize,
            overall: Window::new(),
            providers: HashMap::new(),
        }
    }

    /// Counts one charged attempt to a recipient of `provider`; the trip, if this sample makes
    /// a window's rate pass its limit (the whole run's first, then the provider's).
    pub fn observe(&mut self, provider: Provider, sample: Sample) -> Option<Trip> {
        if !self.enabled {
            return None;
        }
        self.overall.push(sample, self.window);
        let overall = self.check(None, self.overall.counts);
        if overall.is_some() || !watched(provider) {
            return overall;
        }
        let window = self.window;
        let counts = {
            let w = self.providers.entry(provider).or_insert_with(Window::new);
            w.push(sample, window);
            w.counts
        };
        self.check(Some(provider), counts)
    }

    fn check(&self, provider: Option<Provider>, c: Counts) -> Option<Trip> {
        if c.total() < self.min_sample {
            return None;
        }
        let trip = |limit, count, of, max_bp| Trip {
            limit,
            provider,
            count,
            of,
            max_bp,
            window: Some(c),
        };
        let sent = c.accepted + c.hard + c.soft;
        if above(c.hard, sent, self.hard_bp) {
            return Some(trip(Limit::HardBounce, c.hard, sent, self.hard_bp));
        }
        if above(c.deferred, c.total(), self.deferral_bp) {
            return Some(trip(
                Limit::Deferral,
                c.deferred,
                c.total(),
                self.deferral_bp,
            ));
        }
        None
    }

    /// Checks the campaign's complaint rates: `overall` and `per_provider` are (complained,
    /// relay accepted) pairs read from the ledger.
    pub fn complaints(
        &self,
        overall: (u64, u64),
        per_provider: &HashMap<Provider, (u64, u64)>,
    ) -> Option<Trip> {
        if !self.enabled {
            return None;
        }
        let trip = |provider, (complained, accepted): (u64, u64)| {
            (accepted >= self.min_sample && above(complained, accepted, self.complaint_bp))
                .then_some(Trip {
                    limit: Limit::Complaint,
                    provider,
                    count: complained,
                    of: accepted,
                    max_bp: self.complaint_bp,
                    window: None,
                })
        };
        if let Some(t) = trip(None, overall) {
            return Some(t);
        }
        let mut providers: Vec<_> = per_provider.iter().filter(|(p, _)| watched(**p)).collect();
        providers.sort_by_key(|(p, _)| **p);
        providers
            .into_iter()
            .find_map(|(p, counts)| trip(Some(*p), *counts))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn guard() -> Guard {
        Guard::new(&GuardOptions::default())
    }

    /// Feeds `n` samples in a repeating pattern; returns the index of the sample that tripped.
    fn feed(
        g: &mut Guard,
        provider: Provider,
        pattern: &[Sample],
        n: usize,
    ) -> Option<(usize, Trip)> {
        (0..n).find_map(|i| {
            g.observe(provider, pattern[i % pattern.len()])
                .map(|t| (i, t))
        })
    }

    use Sample::{Accepted as A, Deferred as D, Hard as H, Soft as S};

    #[test]
    fn the_trip_table() {
        // (pattern, samples fed, tripped at sample index, limit)
        type Case<'a> = (&'a [Sample], usize, Option<(usize, Limit)>);
        let cases: &[Case<'_>] = &[
            // 20% unknown users: trips as soon as the minimum sample is reached.
            (&[A, A, A, A, H], 1000, Some((199, Limit::HardBounce))),
            // A clean list never trips.
            (&[A], 5000, None),
            // Exactly at the limit (5%) is not above it.
            (
                &[A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, H],
                5000,
                None,
            ),
            // Soft bounces count in the denominator, not the numerator.
            (&[S, S, S, A], 5000, None),
            // 25% deferred: the deferral guard.
            (&[A, A, A, D], 1000, Some((199, Limit::Deferral))),
            // Deferrals do not dilute the hard rate: 1 hard of 16 sent (6.25%), 27% deferred.
            (
                &[
                    A, A, A, A, A, A, A, A, A, A, A, A, A, A, A, H, D, D, D, D, D, D,
                ],
                2000,
                Some((199, Limit::HardBounce)),
            ),
        ];
        for (pattern, n, want) in cases {
            let mut g = guard();
            let got = feed(&mut g, Provider::Other, pattern, *n).map(|(i, t)| (i, t.limit));
            assert_eq!(got, *want, "{pattern:?}");
        }
    }

    #[test]
    fn a_bad_start_then_a_clean_tail_slides_out_of_the_window() {
        let mut g = Guard::new(&GuardOptions {
            max_hard_bounce_rate: 50.0,
            ..GuardOptions::default()
        });
        // 150 hard bounces before the minimum sample: nothing yet.
        assert!(feed(&mut g, Provider::Other, &[H], 150).is_none());
        // Then accepted ones: at 200 samples, 150/200 = 75% > 50%: trips.
        let (i, trip) = feed(&mut g, Provider::Other, &[A], 100).unwrap();
        assert_eq!((i, trip.count, trip.of), (49, 150, 200));
    }

    #[test]
    fn the_window_forgets_old_samples() {
        let mut g = Guard::new(&GuardOptions {
            min_sample: 10,
            window: 10,
            ..GuardOptions::default()
        });
        assert!(feed(&mut g, Provider::Other, &[A], 9).is_none());
        // 1 of 10 = 10% > 5%.
        assert_eq!(
            g.observe(Provider::Other, H).map(|t| (t.count, t.of)),
            Some((1, 10))
        );
        let mut g = Guard::new(&GuardOptions {
            min_sample: 10,
            window: 10,
            max_hard_bounce_rate: 15.0,
            ..GuardOptions::default()
        });
        // One hard bounce, then it slides out: never 2 in 10.
        assert!(
            feed(
                &mut g,
                Provider::Other,
                &[H, A, A, A, A, A, A, A, A, A, A],
                500
            )
            .is_none()
        );
    }

    #[test]
    fn a_provider_trips_on_its_own_window() {
        let mut g = guard();
        // Microsoft bounces 10% while Google is clean: overall stays under 5% of 2000...
        for _ in 0..100 {
            assert!(feed(&mut g, Provider::Google, &[A], 10).is_none());
            if let Some((_, trip)) = feed(
                &mut g,
                Provider::Microsoft,
                &[A, A, A, A, A, A, A, A, A, H],
                10,
            ) {
                assert_eq!(trip.provider, Some(Provider::Microsoft));
                assert_eq!(trip.limit, Limit::HardBounce);
                assert_eq!(trip.of, 200);
                assert_eq!(trip.count, 20);
                return;
            }
        }
        panic!("Microsoft's window never tripped");
    }

    #[test]
    fn unwatched_providers_only_count_overall_and_disabled_never_trips() {
        let mut g = guard();
        assert!(
            feed(
                &mut g,
                Provider::Unknown,
                &[A, A, A, A, A, A, A, A, A, H],
                150
            )
            .is_none()
        );
        assert!(g.providers.is_empty());
        let mut off = Guard::new(&GuardOptions {
            enabled: false,
            ..GuardOptions::default()
        });
        assert!(feed(&mut off, Provider::Google, &[H], 5000).is_none());
        assert!(off.complaints((100, 200), &HashMap::new()).is_none());
    }

    #[test]
    fn complaints_need_the_minimum_sample_and_name_the_provider() {
        let g = guard();
        let none = HashMap::new();
        assert_eq!(
            g.complaints((5, 199), &none),
            None,
            "under the minimum sample"
        );
        assert_eq!(g.complaints((0, 1000), &none), None);
        assert_eq!(
            g.complaints((3, 1000), &none),
            None,
            "0.3% is not above 0.3%"
        );
        let overall = g.complaints((4, 1000), &none).unwrap();
        assert_eq!((overall.limit, overall.provider), (Limit::Complaint, None));
        let mut per = HashMap::new();
        per.insert(Provider::Google, (2, 300));
        per.insert(Provider::Unknown, (50, 300));
        per.insert(Provider::Yahoo, (0, 700));
        let trip = g.complaints((2, 10_000), &per).unwrap();
        assert_eq!(trip.provider, Some(Provider::Google));
        let text = trip.to_string();
        assert!(
            text.contains("complaint guard tripped at Google: 0.67% (2 of 300)"),
            "{text}"
        );
        assert!(text.contains("max_complaint_rate = 0.3"), "{text}");
    }

    #[test]
    fn the_stop_message_names_the_window_and_what_to_do() {
        let mut g = guard();
        let (_, trip) = feed(&mut g, Provider::Other, &[A, A, A, A, H], 1000).unwrap();
        let text = trip.to_string();
        assert!(
            text.starts_with("the hard-bounce guard tripped: 20.00% (40 of 200), above [guard] max_hard_bounce_rate = 5"),
            "{text}"
        );
        assert!(
            text.contains("last 200 attempts: 160 accepted, 40 bounced hard"),
            "{text}"
        );
        assert!(text.contains("mailroom suppress import"), "{text}");
    }
}
