//! Where a run sends: one relay (`[smtp]`, exactly as before) or several (`[[relay]]`) with
//! failover. This module owns the choice of relay for each message (smooth weighted
//! round-robin, deterministic), each relay's own pace and daily cap, and cool-offs: a relay that
//! cannot be connected to, fails TLS or AUTH, or answers "slow down" / "service unavailable"
//! [`FAULTS_IN_A_ROW`] times in a row is left out for its `cooloff`, and the run goes on
//! through the others. Workers give the claim back uncharged when a relay fails them (see
//! `worker`); when every relay is cooling off, the run pauses.
//!
//! With one relay nothing here changes what a run does: it is always picked, never cooled off,
//! and the worker keeps the single-relay rules (pause on repeated "slow down", reconnects).
//!
//! It must not open sessions or decide what a reply means (`worker` and `decide` do), nor
//! touch the ledger (cool-offs are recorded by the worker through the writer).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::pace::{Limits, RateOptions};
use crate::model::RelayId;
use crate::transport::Transport;

/// Relay faults in a row ("slow down", "service unavailable" replies) after which a relay is
/// left out for its cool-off. A failed connection (refused, TLS, AUTH) cools it off at once.
pub const FAULTS_IN_A_ROW: u32 = 3;
/// `[[relay]] cooloff` when not set.
pub const DEFAULT_COOLOFF: Duration = Duration::from_secs(300);

/// One `[[relay]]` of a run, as configured.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Its name in the ledger and the reports.
    pub name: String,
    /// Its share of the messages (at least 1).
    pub weight: u32,
    /// Its own pace (`per_second`, `per_minute`), on top of the run's `[rate]`.
    pub rate: RateOptions,
    /// Most messages handed to it in any 24 hours, counted from the ledger.
    pub daily_cap: Option<u64>,
    /// How long it is left out after it failed.
    pub cooloff: Duration,
    pub transport: Arc<Transport>,
}

/// The relays of a run: one, or several with failover. Never empty.
#[derive(Debug, Clone)]
pub struct Relays {
    specs: Vec<RelaySpec>,
    failover: bool,
}

impl From<Arc<Transport>> for Relays {
    /// The one relay of `[smtp]`: no name in the ledger, no pace or cap of its own, no cool-off.
    fn from(transport: Arc<Transport>) -> Relays {
        let name = transport.settings().host.clone();
        Relays {
            specs: vec![RelaySpec {
                name,
                weight: 1,
                rate: no_rate(),
                daily_cap: None,
                cooloff: DEFAULT_COOLOFF,
                transport,
            }],
            failover: false,
        }
    }
}

impl Relays {
    /// Several relays with failover (`[[relay]]`), even when only `first` is given: each
    /// attempt records its relay, and a failing relay cools off instead of stopping the run.
    pub fn several(first: RelaySpec, rest: Vec<RelaySpec>) -> Relays {
        let mut specs = vec![first];
        specs.extend(rest);
        Relays {
            specs,
            failover: true,
        }
    }

    /// The first relay's transport (test sends and seed copies go through it).
    pub fn first(&self) -> &Arc<Transport> {
        // `Relays` is never empty: both constructors put a relay in.
        &self.specs[0].transport
    }

    /// Whether these are `[[relay]]` relays (failover, per-relay records).
    pub fn is_several(&self) -> bool {
        self.failover
    }

    /// The relays' names, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.specs.iter().map(|s| s.name.clone()).collect()
    }

    /// The relays' daily caps, in configuration order.
    pub fn daily_caps(&self) -> Vec<Option<u64>> {
        self.specs.iter().map(|s| s.daily_cap).collect()
    }
}

/// A pace that never binds: the relay's own limiter is skipped.
fn no_rate() -> RateOptions {
    RateOptions {
        per_second: None,
        per_minute: None,
        per_hour: None,
        burst: 1,
        per_domain: std::collections::BTreeMap::new(),
        daily_cap: None,
        warmup: Vec::new(),
    }
}

/// What one relay did in a run (for the run's summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayReport {
    pub name: String,
    /// SMTP transactions started through it.
    pub transactions: u64,
    /// Messages it accepted.
    pub accepted: u64,
    /// Times it was left out for its cool-off.
    pub cooloffs: u64,
    /// Why it was left out last.
    pub last_failure: Option<String>,
}

impl RelayReport {
    /// It failed and never took a message in this run.
    pub fn is_dead(&self) -> bool {
        self.transactions == 0 && self.cooloffs > 0
    }
}

/// The outcome of choosing a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pick {
    Relay(usize),
    /// Every relay that could still send is cooling off.
    AllCooling,
    /// Every relay reached its daily cap.
    AllCapped,
}

/// A relay taken out for its cool-off: what the worker records.
#[derive(Debug, Clone)]
pub(super) struct CooledOff {
    pub name: String,
    pub id: Option<RelayId>,
    pub cooloff: Duration,
}

struct Relay {
    name: String,
    weight: i64,
    transport: Arc<Transport>,
    limits: Option<Limits>,
    cooloff: Duration,
    id: Option<RelayId>,
    transactions: AtomicU64,
    accepted: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct RelayState {
    /// Smooth weighted round-robin: this relay's current weight.
    current: i64,
    cooling_until: Option<Instant>,
    faults_in_a_row: u32,
    cooloffs: u64,
    last_failure: Option<String>,
    /// Messages it may still take today (`None`: no cap). Taken when the relay is picked, given
    /// back when no transaction followed.
    cap_left: Option<u64>,
}

/// The relays of a running run.
pub(super) struct Pool {
    relays: Vec<Relay>,
    failover: bool,
    /// Every relay's state. A `std` mutex: held for one pick's arithmetic, never across an
    /// `.await`.
    state: Mutex<Vec<RelayState>>,
}

impl Pool {
    /// `ids` are the relays' ledger ids (empty for one `[smtp]` relay); `sent_today` how many
    /// messages each relay took in the last 24 hours (for its daily cap).
    pub(super) fn new(relays: Relays, ids: &[RelayId], sent_today: &[u64]) -> Pool {
        let failover = relays.failover;
        let state = relays
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| RelayState {
                cap_left: s
                    .daily_cap
                    .map(|cap| cap.saturating_sub(sent_today.get(i).copied().unwrap_or(0))),
                ..RelayState::default()
            })
            .collect();
        let relays = relays
            .specs
            .into_iter()
            .enumerate()
            .map(|(i, s)| Relay {
                limits: super::pace::interval(&s.rate).map(|_| Limits::new(&s.rate)),
                name: s.name,
                weight: i64::from(s.weight.max(1)),
                transport: s.transport,
                cooloff: s.cooloff,
                id: ids.get(i).copied(),
                transactions: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
            })
            .collect();
        Pool {
            relays,
            failover,
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RelayState>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn len(&self) -> usize {
        self.relays.len()
    }

    /// Several relays: failures cool a relay off instead of stopping the run.
    pub(super) fn is_failover(&self) -> bool {
        self.failover
    }

    pub(super) fn transport(&self, i: usize) -> &Transport {
        &self.relays[i].transport
    }

    /// Every relay's transport, in the configured order.
    pub(super) fn transports(&self) -> Vec<&Transport> {
        self.relays.iter().map(|r| r.transport.as_ref()).collect()
    }

    pub(super) fn id(&self, i: usize) -> Option<RelayId> {
        self.relays[i].id
    }

    pub(super) fn name(&self, i: usize) -> &str {
        &self.relays[i].name
    }

    /// Waits for a cell of relay `i`'s own limiter, if it has one.
    pub(super) async fn until_ready(&self, i: usize) {
        if let Some(limits) = &self.relays[i].limits {
            limits.until_ready("").await;
        }
    }

    /// Whether relay `i` is cooling off now.
    pub(super) fn is_cooling(&self, i: usize) -> bool {
        let now = Instant::now();
        self.lock()[i]
            .cooling_until
            .is_some_and(|until| until > now)
    }

    /// Whether relay `i` has a limiter of its own (then its messages wait for it).
    pub(super) fn is_limited(&self, i: usize) -> bool {
        self.relays[i]
            .limits
            .as_ref()
            .is_some_and(|l| !l.is_empty())
    }

    /// The next relay for a message: the smooth weighted round-robin over the relays that are
    /// neither cooling off nor capped. Takes one message of the picked relay's daily cap (see
    /// [`Pool::refund`]).
    pub(super) fn pick(&self) -> Pick {
        let now = Instant::now();
        let mut state = self.lock();
        self.choose(&mut state, now)
    }

    /// Picks relay `i` for the next message only if [`Pool::pick`] would pick it now; otherwise
    /// changes nothing (the round-robin and the caps are left as they were).
    pub(super) fn pick_if(&self, i: usize) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        let mut best: Option<(usize, i64)> = None;
        for (j, s) in state.iter().enumerate() {
            let cooling = s.cooling_until.is_some_and(|until| until > now);
            if cooling || s.cap_left == Some(0) {
                continue;
            }
            let current = s.current + self.relays[j].weight;
            if best.is_none_or(|(_, b)| current > b) {
                best = Some((j, current));
            }
        }
        best.is_some_and(|(j, _)| j == i)
            && matches!(self.choose(&mut state, now), Pick::Relay(j) if j == i)
    }

    fn choose(&self, state: &mut [RelayState], now: Instant) -> Pick {
        let mut cooling = false;
        let mut total = 0;
        let mut best: Option<usize> = None;
        for i in 0..state.len() {
            let s = &mut state[i];
            if s.cooling_until.is_some_and(|until| until > now) {
                cooling = true;
                continue;
            }
            if s.cooling_until.take().is_some() {
                // Back from its cool-off: a fresh start.
                s.faults_in_a_row = 0;
            }
            if s.cap_left == Some(0) {
                continue;
            }
            s.current += self.relays[i].weight;
            total += self.relays[i].weight;
            let current = s.current;
            if best.is_none_or(|b| current > state[b].current) {
                best = Some(i);
            }
        }
        match best {
            Some(i) => {
                let s = &mut state[i];
                s.current -= total;
                if let Some(left) = &mut s.cap_left {
                    *left -= 1;
                }
                Pick::Relay(i)
            }
            None if cooling => Pick::AllCooling,
            None => Pick::AllCapped,
        }
    }

    /// Gives back the daily-cap message [`Pool::pick`] took: no transaction went through `i`.
    pub(super) fn refund(&self, i: usize) {
        if let Some(left) = &mut self.lock()[i].cap_left {
            *left += 1;
        }
    }

    /// A transaction went through relay `i`.
    pub(super) fn transaction(&self, i: usize) {
        self.relays[i].transactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Relay `i` accepted a message.
    pub(super) fn accepted(&self, i: usize) {
        self.relays[i].accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Relay `i` answered normally: its streak of faults ends.
    pub(super) fn answered(&self, i: usize) {
        self.lock()[i].faults_in_a_row = 0;
    }

    /// Relay `i` answered "slow down" / "service unavailable": after [`FAULTS_IN_A_ROW`] in a
    /// row it cools off (`Some`, for the record).
    pub(super) fn fault(&self, i: usize, why: &str) -> Option<CooledOff> {
        let faults = {
            let mut state = self.lock();
            state[i].faults_in_a_row += 1;
            state[i].faults_in_a_row
        };
        (faults >= FAULTS_IN_A_ROW)
            .then(|| self.cool_off(i, why))
            .flatten()
    }

    /// Leaves relay `i` out for its cool-off, unless it already is (another worker saw the same
    /// failure first): `Some` when this call started the cool-off.
    pub(super) fn cool_off(&self, i: usize, why: &str) -> Option<CooledOff> {
        let now = Instant::now();
        let relay = &self.relays[i];
        let mut state = self.lock();
        let s = &mut state[i];
        if s.cooling_until.is_some_and(|until| until > now) {
            return None;
        }
        s.cooling_until = Some(now + relay.cooloff);
        s.faults_in_a_row = 0;
        s.cooloffs += 1;
        s.last_failure = Some(why.to_owned());
        Some(CooledOff {
            name: relay.name.clone(),
            id: relay.id,
            cooloff: relay.cooloff,
        })
    }

    /// Why each relay was last left out, for the stop when all of them are.
    pub(super) fn failures(&self) -> Vec<(String, String)> {
        let state = self.lock();
        self.relays
            .iter()
            .zip(state.iter())
            .map(|(r, s)| {
                (
                    r.name.clone(),
                    s.last_failure
                        .clone()
                        .unwrap_or_else(|| "daily cap reached".into()),
                )
            })
            .collect()
    }

    /// What each relay did in this run (empty for one `[smtp]` relay).
    pub(super) fn reports(&self) -> Vec<RelayReport> {
        if !self.failover {
            return Vec::new();
        }
        let state = self.lock();
        self.relays
            .iter()
            .zip(state.iter())
            .map(|(r, s)| RelayReport {
                name: r.name.clone(),
                transactions: r.transactions.load(Ordering::Relaxed),
                accepted: r.accepted.load(Ordering::Relaxed),
                cooloffs: s.cooloffs,
                last_failure: s.last_failure.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn spec(name: &str, weight: u32, daily_cap: Option<u64>) -> RelaySpec {
        let settings = crate::transport::Settings {
            host: "127.0.0.1".into(),
            port: 2525,
            security: crate::transport::Security::None,
            username: None,
            password: None,
            oauth: None,
            ca_file: None,
            hello_name: None,
            fallback_ports: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(1),
            data_timeout: Duration::from_secs(1),
            messages_per_connection: 10,
        };
        RelaySpec {
            name: name.into(),
            weight,
            rate: no_rate(),
            daily_cap,
            cooloff: Duration::from_secs(60),
            transport: Transport::new(settings).await.unwrap(),
        }
    }

    fn picks(pool: &Pool, n: usize) -> String {
        (0..n)
            .map(|_| match pool.pick() {
                Pick::Relay(i) => pool.name(i).to_owned(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[tokio::test(start_paused = true)]
    async fn smooth_round_robin_follows_the_weights_and_skips_relays_cooling_off() {
        let relays = Relays::several(spec("a", 3, None).await, vec![spec("b", 1, None).await]);
        let pool = Pool::new(relays, &[RelayId(1), RelayId(2)], &[0, 0]);
        assert_eq!(picks(&pool, 8), "a a b a a a b a");
        // Two faults are not enough; the third in a row cools `a` off.
        assert!(pool.fault(0, "421").is_none());
        pool.answered(0);
        assert!(pool.fault(0, "421").is_none());
        assert!(pool.fault(0, "421").is_none());
        let cooled = pool.fault(0, "421 again").unwrap();
        assert_eq!((cooled.name.as_str(), cooled.id), ("a", Some(RelayId(1))));
        // Already cooling: a second report of the same failure starts nothing.
        assert!(pool.cool_off(0, "refused").is_none());
        assert_eq!(picks(&pool, 3), "b b b");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(picks(&pool, 8).matches('a').count() >= 5);
        assert!(pool.cool_off(0, "refused").is_some());
        assert!(pool.cool_off(1, "refused").is_some());
        assert_eq!(pool.pick(), Pick::AllCooling);
        let failures = pool.failures();
        assert_eq!(failures[0], ("a".into(), "refused".into()));
        let reports = pool.reports();
        assert_eq!(reports[0].cooloffs, 2);
        assert!(reports[0].is_dead(), "no transaction went through it");
    }

    #[tokio::test]
    async fn pick_if_takes_only_the_turn_the_round_robin_would_give() {
        let relays = Relays::several(spec("a", 3, None).await, vec![spec("b", 1, None).await]);
        let pool = Pool::new(relays, &[RelayId(1), RelayId(2)], &[0, 0]);
        // The rotation is "a a b a a a b a" (as above). Asking for the wrong relay changes
        // nothing; asking for the right one takes its turn, as `pick` would.
        assert!(!pool.pick_if(1));
        assert!(pool.pick_if(0));
        assert!(!pool.pick_if(1));
        assert_eq!(picks(&pool, 1), "a");
        assert!(pool.pick_if(1));
        assert_eq!(picks(&pool, 5), "a a a b a");
        // A capped relay is never taken.
        let capped = Relays::several(spec("a", 1, Some(0)).await, vec![spec("b", 1, None).await]);
        let pool = Pool::new(capped, &[RelayId(1), RelayId(2)], &[0, 0]);
        assert!(!pool.pick_if(0));
        assert!(pool.pick_if(1));
    }

    #[tokio::test]
    async fn daily_caps_are_taken_when_picked_and_refunded_when_nothing_was_sent() {
        let relays = Relays::several(
            spec("a", 1, Some(3)).await,
            vec![spec("b", 1, Some(1)).await],
        );
        // `a` already took 2 of its 3 today.
        let pool = Pool::new(relays, &[RelayId(1), RelayId(2)], &[2, 0]);
        assert_eq!(picks(&pool, 2), "a b");
        assert_eq!(pool.pick(), Pick::AllCapped);
        pool.refund(1);
        assert_eq!(picks(&pool, 2), "b AllCapped");
    }

    #[tokio::test]
    async fn one_smtp_relay_is_always_picked_and_reports_nothing() {
        let one: Relays = spec("smtp", 1, None).await.transport.into();
        assert!(!one.is_several());
        let pool = Pool::new(one, &[], &[]);
        assert_eq!(picks(&pool, 3), "127.0.0.1 127.0.0.1 127.0.0.1");
        assert!(!pool.is_failover());
        assert_eq!(pool.id(0), None);
        assert!(pool.reports().is_empty());
    }
}
