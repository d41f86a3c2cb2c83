//! Resolving recipient domains to providers through their MX records, in the background: at
//! most `concurrency` lookups in flight, each bounded by [`LOOKUP_TIMEOUT`], every answer cached
//! for its DNS TTL (kept between [`MIN_TTL`] and [`MAX_TTL`]), a failure cached briefly as
//! `unknown`. Well-known consumer domains are never looked up (`provider::of_domain`).
//!
//! The DNS client is not chosen here: callers pass an [`MxLookup`] (the `[dns] resolver` of the
//! authentication work plugs in there; tests pass a table). This module must not touch the
//! ledger: it hands each [`Resolved`] to the caller, which stores it (`store::providers`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::Provider;

/// The longest one lookup may take before the domain counts as unresolved.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are cached at least this long, whatever their TTL (a TTL of 0 would look up again on
/// every send).
pub const MIN_TTL: Duration = Duration::from_secs(3600);
/// And at most this long: mail moves between providers.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 86_400);
/// A failed lookup is tried again after this long.
pub const FAILURE_TTL: Duration = Duration::from_secs(3600);
/// Lookups in flight by default.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// What an MX lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxAnswer {
    /// (preference, exchange) pairs, in any order.
    pub exchanges: Vec<(u16, String)>,
    /// The answer's TTL.
    pub ttl: Duration,
}

/// Why an MX lookup gave no exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The domain exists but publishes no MX (or a null MX, RFC 7505): `ttl` from the SOA when
    /// known.
    NoRecords { ttl: Option<Duration> },
    /// The lookup failed (timeout, SERVFAIL, no network).
    Failed(String),
}

/// A boxed lookup future (the trait stays object-safe).
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<MxAnswer, LookupError>> + Send + 'a>>;

/// Looks up a domain's MX records: the seam where a DNS client is plugged in.
pub trait MxLookup: Send + Sync + 'static {
    fn mx<'a>(&'a self, domain: &'a str) -> LookupFuture<'a>;
}

/// One domain's provider, ready for the ledger's cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub domain: String,
    /// The preferred exchange (lowest preference), when there is one.
    pub mx: Option<String>,
    pub provider: Provider,
    /// Unix milliseconds.
    pub checked_at: i64,
    /// Unix milliseconds after which the answer is stale.
    pub expires_at: i64,
}

/// The provider and cache lifetime of a lookup's result (pure).
pub fn interpret(domain: &str, result: Result<MxAnswer, LookupError>, now: i64) -> Resolved {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let (mx, provider, ttl) = match result {
        Ok(answer) => {
            let best = answer
                .exchanges
                .iter()
                .filter(|(_, host)| !host.trim_end_matches('.').is_empty())
                .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
                .map(|(_, host)| host.trim_end_matches('.').to_ascii_lowercase());
            match best {
                Some(host) => {
                    let provider = super::of_mx(domain, &host);
                    (Some(host), provider, answer.ttl.clamp(MIN_TTL, MAX_TTL))
                }
                // Only the null MX "." (RFC 7505): the domain takes no mail at all.
                None => (None, Provider::Unknown, answer.ttl.clamp(MIN_TTL, MAX_TTL)),
            }
        }
        Err(LookupError::NoRecords { ttl }) => (
            None,
            Provider::Unknown,
            ttl.unwrap_or(MIN_TTL).clamp(MIN_TTL, MAX_TTL),
        ),
        Err(LookupError::Failed(_)) => (None, Provider::Unknown, FAILURE_TTL),
    };
    Resolved {
        domain: domain.to_owned(),
        mx,
        provider,
        checked_at: now,
        expires_at: now.saturating_add(millis(ttl)),
    }
}

/// Resolves every domain of `domains` that is not a well-known consumer domain, with at most
/// `concurrency` lookups in flight, and hands each result to `each` as it arrives (not in
/// order). Never fails: a lookup that errs or takes longer than [`LOOKUP_TIMEOUT`] gives
/// `unknown`. `now` is read once per answer (tests pass a fixed clock).
pub async fn resolve_all(
    lookup: Arc<dyn MxLookup>,
    domains: impl IntoIterator<Item = String>,
    concurrency: usize,
    now: impl Fn() -> i64,
    mut each: impl FnMut(Resolved),
) {
    let lookups = futures_util::stream::iter(
        domains
            .into_iter()
            .filter(|d| super::of_domain(d).is_none()),
    )
    .map(|domain| {
        let lookup = lookup.clone();
        async move {
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.mx(&domain)).await {
                Ok(result) => result,
                Err(_) => Err(LookupError::Failed("timed out".into())),
            };
            (domain, result)
        }
    })
    .buffer_unordered(concurrency.max(1));
    futures_util::pin_mut!(lookups);
    while let Some((domain, result)) = lookups.next().await {
        each(interpret(&domain, result, now()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A lookup answered from a table, counting the lookups in flight.
    struct Table {
        answers: HashMap<String, Result<MxAnswer, LookupError>>,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
        asked: Mutex<Vec<String>>,
    }

    impl MxLookup for Table {
        fn mx<'a>(&'a self, domain: &'a str) -> LookupFuture<'a> {
            Box::pin(async move {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(now, Ordering::SeqCst);
                self.asked.lock().unwrap().push(domain.to_owned());
                // Let the other lookups start, so the bound is what limits them.
                tokio::task::yield_now().await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.answers
                    .get(domain)
                    .cloned()
                    .unwrap_or(Err(LookupError::Failed("no such test domain".into())))
            })
        }
    }

    fn answer(host: &str, ttl: u64) -> Result<MxAnswer, LookupError> {
        Ok(MxAnswer {
            exchanges: vec![(20, "backup.example.net".into()), (10, host.into())],
            ttl: Duration::from_secs(ttl),
        })
    }

    #[test]
    fn lookups_become_providers_with_bounded_lifetimes() {
        let r = interpret(
            "corp.example",
            answer("corp.mail.protection.outlook.com.", 7200),
            0,
        );
        assert_eq!(r.provider, Provider::Microsoft365);
        assert_eq!(r.mx.as_deref(), Some("corp.mail.protection.outlook.com"));
        assert_eq!(r.expires_at, 7_200_000);
        let short = interpret("x.example", answer("aspmx.l.google.com", 5), 0);
        assert_eq!(short.expires_at, 3_600_000, "at least MIN_TTL");
        let long = interpret("x.example", answer("aspmx.l.google.com", 10_000_000), 0);
        assert_eq!(long.expires_at, 7 * 86_400_000, "at most MAX_TTL");
        let failed = interpret("x.example", Err(LookupError::Failed("servfail".into())), 5);
        assert_eq!(
            (failed.provider, failed.mx, failed.expires_at),
            (Provider::Unknown, None, 5 + 3_600_000)
        );
        let none = interpret("x.example", Err(LookupError::NoRecords { ttl: None }), 0);
        assert_eq!(none.provider, Provider::Unknown);
        let null_mx = Ok(MxAnswer {
            exchanges: vec![(0, ".".into())],
            ttl: Duration::from_secs(86_400),
        });
        assert_eq!(
            interpret("x.example", null_mx, 0).provider,
            Provider::Unknown
        );
    }

    #[tokio::test]
    async fn resolution_skips_consumer_domains_and_bounds_concurrency() {
        let mut answers = HashMap::new();
        for i in 0..40 {
            answers.insert(format!("d{i}.example"), answer("aspmx.l.google.com", 3600));
        }
        let table = Arc::new(Table {
            answers,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
        });
        let mut domains: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        domains.push("gmail.com".into());
        domains.push("broken.example".into());
        let mut got = Vec::new();
        resolve_all(table.clone(), domains, 4, || 1, |r| got.push(r)).await;
        assert_eq!(got.len(), 41, "every non-consumer domain, once");
        assert!(table.peak.load(Ordering::SeqCst) <= 4);
        assert!(
            !table
                .asked
                .lock()
                .unwrap()
                .contains(&"gmail.com".to_owned())
        );
        let broken = got.iter().find(|r| r.domain == "broken.example").unwrap();
        assert_eq!(broken.provider, Provider::Unknown);
        assert!(
            got.iter()
                .filter(|r| r.domain != "broken.example")
                .all(|r| r.provider == Provider::Google)
        );
    }
}
