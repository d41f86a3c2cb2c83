//! Pacing for a run: the shared governor limiter built from `[rate]`, per-domain limiters, the
//! run-wide slow-down after "slow down" replies, and the retry schedule for deferred recipients.
//! Pure timing logic on tokio time (testable with paused time); no I/O.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::model::DeliveryState;

/// `[rate]` as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct RateOptions {
    pub per_second: Option<f64>,
    pub per_minute: Option<f64>,
    pub per_hour: Option<f64>,
    /// Cells allowed at once; 1 = smooth pacing.
    pub burst: u32,
    /// Messages per minute, by recipient domain.
    pub per_domain: BTreeMap<String, f64>,
    /// Most messages accepted by the relay in any 24 hours, from this From domain.
    pub daily_cap: Option<u64>,
    /// `[rate] warmup`: the most messages of warm-up day 1, 2, ... (see
    /// `schedule::allowance`); empty for none.
    pub warmup: Vec<u64>,
}

impl Default for RateOptions {
    /// The safe default when `[rate]` is absent: 10 per second, smooth.
    fn default() -> Self {
        RateOptions {
            per_second: Some(10.0),
            per_minute: None,
            per_hour: None,
            burst: 1,
            per_domain: BTreeMap::new(),
            daily_cap: None,
            warmup: Vec::new(),
        }
    }
}

/// `[retry]` as the pipeline needs it.
#[derive(Debug, Clone)]
pub struct RetryOptions {
    pub backoff: Vec<Duration>,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        let h = |n: u64| Duration::from_secs(3600 * n);
        RetryOptions {
            backoff: vec![Duration::from_secs(1800), h(1), h(2), h(4), h(8)],
            max_attempts: 6,
            max_age: h(72),
        }
    }
}

/// The longest period the limiters are given: a rate slower than one message a year is taken as
/// one a year (config validation rejects such rates; the library must still not panic on them).
const MAX_PERIOD: Duration = Duration::from_secs(365 * 24 * 3600);

/// `secs` as a limiter period, clamped to [1 ns, [`MAX_PERIOD`]]. `Duration::from_secs_f64`
/// panics on values it cannot hold (1e300, infinity, NaN); this never does.
fn period(secs: f64) -> Duration {
    if secs.is_nan() {
        return MAX_PERIOD;
    }
    Duration::try_from_secs_f64(secs.max(0.0))
        .unwrap_or(MAX_PERIOD)
        .clamp(Duration::from_nanos(1), MAX_PERIOD)
}

/// The interval between two messages allowed by the strictest of the three rates.
pub fn interval(rate: &RateOptions) -> Option<Duration> {
    [
        rate.per_second.map(|n| 1.0 / n),
        rate.per_minute.map(|n| 60.0 / n),
        rate.per_hour.map(|n| 3600.0 / n),
    ]
    .into_iter()
    .flatten()
    .filter(|secs| secs.is_finite() && *secs > 0.0)
    .fold(None, |acc: Option<f64>, s| {
        Some(acc.map_or(s, |a| a.max(s)))
    })
    .map(period)
}

fn limiter(period: Duration, burst: u32) -> Option<DefaultDirectRateLimiter> {
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
    Some(RateLimiter::direct(quota))
}

/// The run's shared limiters.
pub struct Limits {
    global: Option<DefaultDirectRateLimiter>,
    domains: BTreeMap<String, DefaultDirectRateLimiter>,
}

impl Limits {
    pub fn new(rate: &RateOptions) -> Limits {
        let global = interval(rate).and_then(|period| limiter(period, rate.burst));
        let domains = rate
            .per_domain
            .iter()
            .filter(|(_, per_minute)| per_minute.is_finite() && **per_minute > 0.0)
            .filter_map(|(domain, per_minute)| {
                limiter(period(60.0 / per_minute), 1).map(|l| (domain.to_ascii_lowercase(), l))
            })
            .collect();
        Limits { global, domains }
    }

    /// Waits for a cell of the shared limiter and of the recipient domain's limiter (if any).
    pub async fn until_ready(&self, domain: &str) {
        if let Some(global) = &self.global {
            global.until_ready().await;
        }
        if let Some(limiter) = self.domains.get(domain) {
            limiter.until_ready().await;
        }
    }

    /// Takes a cell at once when the shared limiter has one and `domain` has no limiter of its
    /// own; otherwise takes nothing and says no (the caller then waits with
    /// [`Limits::until_ready`]). A message to a limited domain always waits the normal way, so
    /// no cell is ever taken twice for one message.
    pub fn try_now(&self, domain: &str) -> bool {
        if self.domains.contains_key(domain) {
            return false;
        }
        self.global.as_ref().is_none_or(|g| g.check().is_ok())
    }

    /// Whether these limits limit anything at all.
    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.domains.is_empty()
    }
}

/// The run-wide slow-down: after a "slow down" reply every worker waits for a back-off, and the
/// extra spacing between messages doubles; a streak of accepted messages halves it again.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<PacerState>,
    base: Duration,
    max: Duration,
}

#[derive(Debug)]
struct PacerState {
    next_slot: Option<Instant>,
    spacing: Duration,
    streak: u32,
    throttles: u32,
}

/// Accepted messages in a row after which the extra spacing is halved.
const RECOVERY_STREAK: u32 = 50;

impl Pacer {
    /// `base` is the first back-off after a throttle; `max` caps back-off and spacing.
    pub fn new(base: Duration, max: Duration) -> Pacer {
        Pacer {
            state: Mutex::new(PacerState {
                next_slot: None,
                spacing: Duration::ZERO,
                streak: 0,
                throttles: 0,
            }),
            base,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for this worker's slot: immediately while the run is not throttled.
    pub async fn wait(&self) {
        let slot = {
            let mut s = self.lock();
            let now = Instant::now();
            match s.next_slot {
                None if s.spacing.is_zero() => return,
                next => {
                    let slot = next.map_or(now, |n| n.max(now));
                    s.next_slot = Some(slot + s.spacing);
                    slot
                }
            }
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Whether [`Pacer::wait`] would return at once, with nothing to take (not throttled).
    pub fn is_free(&self) -> bool {
        let s = self.lock();
        s.next_slot.is_none() && s.spacing.is_zero()
    }

    /// A "slow down" reply: everyone pauses for a growing back-off and then goes slower.
    pub fn throttle(&self) -> Duration {
        let mut s = self.lock();
        s.throttles = s.throttles.saturating_add(1);
        s.streak = 0;
        let backoff = self
            .base
            .checked_mul(2u32.saturating_pow(s.throttles.min(16) - 1))
            .unwrap_or(self.max)
            .min(self.max);
        s.spacing = if s.spacing.is_zero() {
            self.base / 4
        } else {
            s.spacing.saturating_mul(2).min(self.max)
        };
        let now = Instant::now();
        // An absurd `max` must not overflow the clock: fall back to a far but valid instant.
        let resume = now
            .checked_add(backoff)
            .or_else(|| now.checked_add(MAX_PERIOD))
            .unwrap_or(now);
        s.next_slot = Some(s.next_slot.map_or(resume, |n| n.max(resume)));
        backoff
    }

    /// An accepted message: after a streak, slow-down is relaxed.
    pub fn success(&self) {
        let mut s = self.lock();
        s.streak += 1;
        if s.streak >= RECOVERY_STREAK && !s.spacing.is_zero() {
            s.streak = 0;
            s.spacing /= 2;
            if s.spacing < Duration::from_millis(1) {
                s.spacing = Duration::ZERO;
                s.next_slot = None;
                s.throttles = 0;
            }
        }
    }

    /// The current extra spacing between messages.
    pub fn spacing(&self) -> Duration {
        self.lock().spacing
    }
}

/// The state and retry time for a recipient after a temporary failure: `deferred` with the
/// backoff for this attempt, or `failed` once out of attempts or too old.
pub fn after_temporary_failure(
    retry: &RetryOptions,
    attempts_before: u32,
    first_attempt_at: Option<i64>,
    now_ms: i64,
) -> (DeliveryState, Option<i64>) {
    let attempts = attempts_before.saturating_add(1);
    let first = first_attempt_at.unwrap_or(now_ms);
    let age = Duration::from_millis(u64::try_from(now_ms - first).unwrap_or(0));
    if attempts >= retry.max_attempts || age >= retry.max_age {
        return (DeliveryState::Failed, None);
    }
    let index = usize::try_from(attempts - 1).unwrap_or(usize::MAX);
    let delay = retry
        .backoff
        .get(index)
        .or(retry.backoff.last())
        .copied()
        .unwrap_or(Duration::from_secs(1800));
    let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
    // `max_age` caps every retry: no retry is scheduled after the recipient's time is up (the
    // attempt then fails it), whatever the back-off says.
    let max_age_ms = i64::try_from(retry.max_age.as_millis()).unwrap_or(i64::MAX);
    let retry_at = now_ms
        .saturating_add(delay_ms)
        .min(first.saturating_add(max_age_ms));
    (DeliveryState::Deferred, Some(retry_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_retry_is_scheduled_past_max_age() {
        let retry = RetryOptions {
            backoff: vec![Duration::from_secs(u64::MAX / 4)],
            max_attempts: 10,
            max_age: Duration::from_secs(3 * 86_400),
        };
        let first = 1_000_000;
        let (state, at) = after_temporary_failure(&retry, 0, Some(first), first + 60_000);
        assert_eq!(state, DeliveryState::Deferred);
        assert_eq!(at, Some(first + 3 * 86_400_000));
        // At (or past) max_age, the next temporary failure fails the recipient.
        let (state, at) = after_temporary_failure(&retry, 1, Some(first), first + 3 * 86_400_000);
        assert_eq!((state, at), (DeliveryState::Failed, None));
    }

    #[test]
    fn extreme_rates_never_panic_and_are_clamped() {
        for per_second in [1e-300, 1e300, f64::MIN_POSITIVE, f64::MAX, f64::INFINITY] {
            let rate = RateOptions {
                per_second: Some(per_second),
                per_domain: [("example.org".to_owned(), per_second)].into(),
                ..RateOptions::default()
            };
            if let Some(every) = interval(&rate) {
                assert!(
                    every >= Duration::from_nanos(1) && every <= MAX_PERIOD,
                    "{every:?}"
                );
            }
            let _ = Limits::new(&rate);
        }
        let slow = RateOptions {
            per_hour: Some(1e-300),
            ..RateOptions::default()
        };
        assert_eq!(interval(&slow), Some(MAX_PERIOD));
        assert_eq!(period(f64::NAN), MAX_PERIOD);
        let pacer = Pacer::new(Duration::MAX, Duration::MAX);
        assert_eq!(pacer.throttle(), Duration::MAX);
        assert_eq!(pacer.throttle(), Duration::MAX);
    }

    #[test]
    fn only_a_message_that_may_go_now_takes_a_cell_at_once() {
        // One message a minute overall, and one a minute to example.org.
        let rate = RateOptions {
            per_minute: Some(1.0),
            burst: 1,
            per_domain: [("example.org".to_owned(), 1.0)].into(),
            ..RateOptions::default()
        };
        let limits = Limits::new(&rate);
        assert!(!limits.is_empty());
        // A limited domain always waits the normal way, and takes nothing here...
        assert!(!limits.try_now("example.org"));
        // ...so the shared cell is still there for another domain, once.
        assert!(limits.try_now("example.net"));
        assert!(!limits.try_now("example.net"));
        // No limit at all: always at once.
        let unlimited = Limits::new(&RateOptions {
            per_second: None,
            ..RateOptions::default()
        });
        assert!(unlimited.is_empty());
        assert!(unlimited.try_now("example.net") && unlimited.try_now("example.net"));

        let pacer = Pacer::new(Duration::from_millis(100), Duration::from_secs(1));
        assert!(pacer.is_free());
        pacer.throttle();
        assert!(!pacer.is_free());
    }

    #[test]
    fn strictest_rate_wins() {
        let rate = RateOptions {
            per_second: Some(10.0),
            per_minute: Some(60.0),
            per_hour: None,
            ..RateOptions::default()
        };
        assert_eq!(interval(&rate), Some(Duration::from_secs(1)));
        let none = RateOptions {
            per_second: None,
            ..RateOptions::default()
        };
        assert_eq!(interval(&none), None);
    }

    #[tokio::test]
    async fn shared_limiter_paces_smoothly_without_a_burst() {
        // governor sleeps on its own timer, not tokio's, so paused time cannot drive it: check a
        // lower bound on real spacing at a fast rate (it cannot pass by luck on a slow machine).
        let limits = Limits::new(&RateOptions {
            per_second: Some(200.0),
            ..RateOptions::default()
        });
        let started = std::time::Instant::now();
        for _ in 0..11 {
            limits.until_ready("x.test").await;
        }
        // 11 cells at 200/s with burst 1: at least 10 intervals of 5 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(49),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn per_domain_limit_paces_only_its_domain() {
        let mut per_domain = BTreeMap::new();
        per_domain.insert("Slow.test".to_owned(), 1200.0); // 20 per second
        let limits = Limits::new(&RateOptions {
            per_second: None,
            per_domain,
            ..RateOptions::default()
        });
        let started = std::time::Instant::now();
        for _ in 0..200 {
            limits.until_ready("fast.test").await;
        }
        let fast = started.elapsed();
        let started = std::time::Instant::now();
        for _ in 0..6 {
            limits.until_ready("slow.test").await;
        }
        // 6 cells at 20/s with burst 1: at least 5 intervals of 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(245),
            "{:?}",
            started.elapsed()
        );
        assert!(fast < started.elapsed(), "an unlisted domain is not paced");
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_pauses_everyone_then_slows_and_recovers() {
        let pacer = Pacer::new(Duration::from_secs(4), Duration::from_secs(60));
        let t0 = Instant::now();
        pacer.wait().await;
        assert_eq!(Instant::now(), t0, "no wait before any throttle");
        assert_eq!(pacer.throttle(), Duration::from_secs(4));
        pacer.wait().await;
        assert_eq!(Instant::now() - t0, Duration::from_secs(4));
        pacer.wait().await;
        assert_eq!(
            Instant::now() - t0,
            Duration::from_secs(5),
            "spacing base/4"
        );
        // A second throttle doubles the back-off and the spacing.
        assert_eq!(pacer.throttle(), Duration::from_secs(8));
        assert_eq!(pacer.spacing(), Duration::from_secs(2));
        for _ in 0..RECOVERY_STREAK {
            pacer.success();
        }
        assert_eq!(pacer.spacing(), Duration::from_secs(1));
    }

    #[test]
    fn backoff_schedule_then_failed() {
        let retry = RetryOptions {
            backoff: vec![Duration::from_secs(60), Duration::from_secs(120)],
            max_attempts: 4,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(
            after_temporary_failure(&retry, 0, None, 1_000),
            (DeliveryState::Deferred, Some(61_000))
        );
        assert_eq!(
            after_temporary_failure(&retry, 1, Some(1_000), 100_000),
            (DeliveryState::Deferred, Some(220_000))
        );
        // Past the schedule: the last step repeats.
        assert_eq!(
            after_temporary_failure(&retry, 2, Some(1_000), 200_000),
            (DeliveryState::Deferred, Some(320_000))
        );
        assert_eq!(
            after_temporary_failure(&retry, 3, Some(1_000), 300_000),
            (DeliveryState::Failed, None)
        );
        // Too old, even with attempts left.
        assert_eq!(
            after_temporary_failure(&retry, 1, Some(0), 3_600_000),
            (DeliveryState::Failed, None)
        );
    }
}
