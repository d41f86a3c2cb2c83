//! The providers a run knows about its recipient domains, and their background resolution.
//!
//! [`ProviderMap`] answers "whose mail is this domain?" for the circuit breaker and the
//! diagnoses: a consumer domain from `provider::of_domain`, any other from the ledger's cache
//! (read once when the run starts), `unknown` otherwise. With a [`Lookup`] in the run's options,
//! [`spawn`] resolves the campaign's uncached domains in the background, at most `concurrency`
//! lookups at a time, on a thread of its own at idle priority, adds each answer to the map at
//! once and writes them to the ledger through the writer thread in batches (every 2 s or 2,048
//! answers, and when the run ends): sending never waits for it, and the writer is not asked for
//! a row per domain while it records the run.
//!
//! It must not decide anything about sending; the resolver itself is the caller's (a
//! `provider::resolve::MxLookup`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::CampaignId;
use crate::provider::resolve::{self, MxLookup, Resolved};
use crate::provider::{self, Provider};
use crate::store::{ProviderRecord, Reader, Writer};

/// How long a run that has sent everything may wait for its lookups before it exits: only when
/// what is left would finish in that time at the pace so far (see [`Progress`]).
pub const FINISH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How far a run's background resolution has got. The run's end asks it whether waiting
/// [`FINISH_GRACE`] would finish the job: a small campaign's few lookups are worth a moment, but
/// a large one's remaining thousands are not worth holding the command (and its throughput) for;
/// they stay uncached and the next run of the campaign resolves them.
#[derive(Debug, Default)]
pub struct Progress {
    /// Domains to look up, once the list is read.
    total: std::sync::OnceLock<usize>,
    done: std::sync::atomic::AtomicUsize,
    started: std::sync::OnceLock<std::time::Instant>,
}

impl Progress {
    /// Whether the lookups left would be done within `grace` at the pace so far. Yes when the
    /// list is not read yet or no answer has come (a short run: nothing to judge the pace by).
    pub fn can_finish_within(&self, grace: std::time::Duration) -> bool {
        let (Some(total), Some(started)) = (self.total.get(), self.started.get()) else {
            return true;
        };
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
        finishes_within(*total, done, started.elapsed(), grace)
    }

    /// Lookups not answered (yet): 0 before the list is read.
    pub fn left(&self) -> u64 {
        let total = self.total.get().copied().unwrap_or(0);
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
        total.saturating_sub(done) as u64
    }
}

/// Whether `total - done` more lookups, at the pace of `done` in `elapsed`, take at most
/// `grace`.
fn finishes_within(
    total: usize,
    done: usize,
    elapsed: std::time::Duration,
    grace: std::time::Duration,
) -> bool {
    let left = total.saturating_sub(done);
    if left == 0 || done == 0 {
        return true;
    }
    // left / (done / elapsed) <= grace, without dividing by a zero elapsed time.
    left as f64 * elapsed.as_secs_f64() <= grace.as_secs_f64() * done as f64
}

/// Background MX resolution for a run: the DNS client and how many lookups may be in flight.
#[derive(Clone)]
pub struct Lookup {
    pub resolver: Arc<dyn MxLookup>,
    pub concurrency: usize,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl Lookup {
    /// Lookups through mailroom's DNS client: the resolver `[dns] resolver` names (`chosen`),
    /// or the system's.
    pub fn dns(resolver: crate::dns::Resolver, chosen: bool) -> Lookup {
        Lookup {
            resolver: Arc::new(DnsMx {
                resolver: crate::dns::BulkMx::new(&resolver),
                chosen,
            }),
            concurrency: resolve::DEFAULT_CONCURRENCY,
        }
    }
}

/// [`MxLookup`] over [`crate::dns::BulkMx`] (the same resolvers as every other lookup, at a
/// fraction of the CPU per lookup): an empty answer is "no MX", a failed lookup is a failure
/// (the domain stays `unknown` until it is tried again).
struct DnsMx {
    resolver: crate::dns::BulkMx,
    /// Whether the user named this resolver; only such a resolver may serve special-use names.
    chosen: bool,
}

/// Names that have no MX on the public DNS (RFC 2606, RFC 6761, RFC 6762): the system's
/// resolver is never asked about them. A resolver the user chose may serve `.test` or
/// `.example` zones of their own, so only `.invalid` and `.localhost` are never asked there.
fn special_use(domain: &str, chosen: bool) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let tld = d.rsplit('.').next().unwrap_or("");
    if matches!(tld, "invalid" | "localhost") {
        return true;
    }
    !chosen
        && (matches!(tld, "test" | "example" | "local" | "onion" | "internal")
            || ["example.com", "example.net", "example.org"]
                .iter()
                .any(|e| d == *e || d.ends_with(&format!(".{e}"))))
}

impl MxLookup for DnsMx {
    fn mx<'a>(&'a self, domain: &'a str) -> resolve::LookupFuture<'a> {
        Box::pin(async move {
            if special_use(domain, self.chosen) {
                return Err(resolve::LookupError::Failed(
                    "a special-use name (RFC 6761): not looked up".into(),
                ));
            }
            match self.resolver.mx_with_ttl(domain).await {
                // A null MX (RFC 7505, exchange ".") says the domain takes no mail.
                Ok((records, _)) if records.iter().all(|m| m.exchange.is_empty()) => {
                    Err(resolve::LookupError::NoRecords { ttl: None })
                }
                Ok((records, ttl)) => Ok(resolve::MxAnswer {
                    exchanges: records
                        .into_iter()
                        .map(|m| (m.preference, m.exchange))
                        .collect(),
                    ttl: ttl.unwrap_or(resolve::MIN_TTL),
                }),
                Err(e) => Err(resolve::LookupError::Failed(e.to_string())),
            }
        })
    }
}

/// Domain → provider for one run.
#[derive(Debug, Default)]
pub struct ProviderMap {
    /// Resolved domains. A `std` lock: it is held only to read or insert one entry, never
    /// across an `.await`.
    cached: RwLock<HashMap<String, Provider>>,
}

impl ProviderMap {
    /// The map with the ledger's cache (names this build does not know are left out).
    pub fn from_cache(cache: HashMap<String, String>) -> ProviderMap {
        let cached = cache
            .into_iter()
            .filter_map(|(domain, name)| Some((domain, name.parse().ok()?)))
            .collect();
        ProviderMap {
            cached: RwLock::new(cached),
        }
    }

    /// The provider of `domain`.
    pub fn of(&self, domain: &str) -> Provider {
        provider::of_domain(domain)
            .or_else(|| {
                self.cached
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(domain)
                    .copied()
            })
            .unwrap_or(Provider::Unknown)
    }

    fn insert(&self, domain: String, provider: Provider) {
        self.cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(domain, provider);
    }
}

/// How often resolved answers go to the ledger during a run. Each answer is a row the writer
/// thread must insert beside the run's own claims and outcomes: one operation per answer cost a
/// send of 100,000 domains 18% of its throughput, batches cost it almost nothing. Batches go
/// out during the run (every [`FLUSH_EVERY`] or [`FLUSH_AT`] answers, whichever comes first),
/// in the writer's gaps between claim blocks, rather than all at the end, where 100,000 rows
/// in one transaction held the command for most of a second after the last message.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Answers that make a batch without waiting for [`FLUSH_EVERY`].
const FLUSH_AT: usize = 2048;

/// Answers resolved but not yet in the ledger. The run drains it when it ends
/// ([`Pending::flush`]), after the lookup thread has finished or been stopped, so no answer a
/// run paid for is lost.
#[derive(Debug, Default, Clone)]
pub struct Pending(Arc<std::sync::Mutex<Vec<ProviderRecord>>>);

impl Pending {
    /// Adds an answer; returns how many are pending now.
    fn push(&self, record: ProviderRecord) -> usize {
        let mut pending = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.push(record);
        pending.len()
    }

    fn take(&self) -> Vec<ProviderRecord> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Writes what is pending through the run's writer (one batch).
    pub async fn flush(&self, writer: &Writer) {
        let batch = self.take();
        if !batch.is_empty() {
            let _ = writer.record_providers(batch).await;
        }
    }
}

/// The background resolution of a run: its own thread, at idle priority, so that it uses the
/// CPU time the send leaves free and never takes time from the send's own threads (the ledger
/// writer, the SMTP workers). Each lookup is cheap ([`crate::dns::BulkMx`]), but at 100,000
/// domains they add up to a share of two cores the send would feel.
pub struct Background {
    cancel: Arc<tokio::sync::Notify>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Background {
    /// Waits up to `grace` for every lookup to finish; true when they did.
    pub async fn finish_within(&mut self, grace: std::time::Duration) -> bool {
        tokio::time::timeout(grace, &mut self.done).await.is_ok()
    }

    /// Stops the lookups still in flight and waits until the thread has let go of the run's
    /// answers, so that a flush of [`Pending`] afterwards holds every answer it got.
    pub async fn stop(self) {
        self.cancel.notify_one();
        let _ = self.done.await;
    }
}

/// Starts resolving `campaign`'s uncached domains in the background (see [`Background`]). The
/// thread ends when every domain is resolved or the caller stops it. Answers go to `map` at
/// once and to the ledger in batches (see [`FLUSH_EVERY`]); the caller flushes `pending` when
/// the run ends. `None` when no thread could be started (the run goes on without lookups).
pub fn spawn(
    lookup: Lookup,
    reader_path: std::path::PathBuf,
    campaign: CampaignId,
    map: Arc<ProviderMap>,
    writer: Writer,
    pending: Pending,
    progress: Arc<Progress>,
) -> Option<Background> {
    let cancel = Arc::new(tokio::sync::Notify::new());
    let (finished, done) = tokio::sync::oneshot::channel();
    let stop = cancel.clone();
    let work = async move {
        let now = crate::clock::now_ms();
        let domains = tokio::task::spawn_blocking(move || {
            Reader::open(&reader_path).and_then(|r| r.domains_to_resolve(campaign, now))
        })
        .await;
        let mut domains = match domains {
            Ok(Ok(domains)) => domains,
            Ok(Err(e)) => {
                tracing::warn!("provider lookups skipped: {e}");
                return;
            }
            Err(_) => return,
        };
        // Consumer domains need no lookup (`resolve_all` would skip them too): what is left is
        // the work `progress` measures.
        domains.retain(|d| provider::of_domain(d).is_none());
        let _ = progress.total.set(domains.len());
        let _ = progress.started.set(std::time::Instant::now());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Resolved>();
        let resolving = resolve::resolve_all(
            lookup.resolver,
            domains,
            lookup.concurrency,
            crate::clock::now_ms,
            move |r| {
                let _ = tx.send(r);
            },
        );
        let storing = async {
            let mut flushed = tokio::time::Instant::now();
            while let Some(r) = rx.recv().await {
                progress
                    .done
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                map.insert(r.domain.clone(), r.provider);
                if pending.push(record(r)) >= FLUSH_AT || flushed.elapsed() >= FLUSH_EVERY {
                    flushed = tokio::time::Instant::now();
                    pending.flush(&writer).await;
                }
            }
            pending.flush(&writer).await;
        };
        tokio::join!(resolving, storing);
    };
    let spawned = std::thread::Builder::new()
        .name("mx-lookups".into())
        .spawn(move || {
            idle_priority();
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async {
                    tokio::select! {
                        () = work => {}
                        () = stop.notified() => {}
                    }
                }),
                Err(e) => tracing::warn!("provider lookups skipped: no runtime: {e}"),
            }
            let _ = finished.send(());
        });
    match spawned {
        Ok(_) => Some(Background { cancel, done }),
        Err(e) => {
            tracing::warn!("provider lookups skipped: cannot start their thread: {e}");
            None
        }
    }
}

/// Puts the calling thread in Linux's `SCHED_IDLE` class: it runs only when a core would
/// otherwise be idle. Elsewhere, or if the call fails, the thread keeps its normal priority
/// (lookups then compete with the send, as they would on any thread).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads the `sched_param` it is given (a valid local) and
    // changes only the scheduling class of the calling thread (pid 0); it has no other
    // memory-safety preconditions.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if rc != 0 {
        tracing::debug!(
            "provider lookups keep normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn idle_priority() {}

fn record(r: Resolved) -> ProviderRecord {
    ProviderRecord {
        domain: r.domain,
        mx: r.mx,
        provider: r.provider.as_str().to_owned(),
        checked_at: r.checked_at,
        expires_at: r.expires_at,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn special_use_names_are_asked_only_of_a_chosen_resolver() {
        for (domain, system, chosen) in [
            ("acme.com", false, false),
            ("shop.example.com", true, false),
            ("example.org", true, false),
            ("notexample.com", false, false),
            ("pass.test", true, false),
            ("corp.example", true, false),
            ("printer.local", true, false),
            ("x.invalid", true, true),
            ("LOCALHOST", true, true),
        ] {
            assert_eq!(special_use(domain, false), system, "{domain} (system)");
            assert_eq!(special_use(domain, true), chosen, "{domain} (chosen)");
        }
    }

    #[test]
    fn the_end_of_a_run_waits_only_for_lookups_that_would_finish_in_the_grace() {
        let s = std::time::Duration::from_secs;
        let ms = std::time::Duration::from_millis;
        for (total, done, elapsed, waits) in [
            // Nothing left, or no answer yet to judge the pace by: wait (a short run).
            (10, 10, s(1), true),
            (10, 0, ms(5), true),
            // 40 left at 100 a second: 0.4 s.
            (140, 100, s(1), true),
            // Exactly the grace.
            (300, 100, s(1), true),
            // 25,000 left at 6,000 a second: about 4 s, more than the grace.
            (100_000, 75_000, ms(12_500), false),
            (301, 100, s(1), false),
        ] {
            assert_eq!(
                finishes_within(total, done, elapsed, s(2)),
                waits,
                "{total} {done} {elapsed:?}"
            );
        }
        assert!(
            Progress::default().can_finish_within(s(2)),
            "list not read yet"
        );
    }

    #[test]
    fn consumer_domains_then_the_cache_then_unknown() {
        let mut cache = HashMap::new();
        cache.insert("corp.example".to_owned(), "microsoft365".to_owned());
        cache.insert("odd.example".to_owned(), "from_a_newer_build".to_owned());
        let map = ProviderMap::from_cache(cache);
        assert_eq!(map.of("gmail.com"), Provider::Google);
        assert_eq!(map.of("corp.example"), Provider::Microsoft365);
        assert_eq!(map.of("odd.example"), Provider::Unknown);
        assert_eq!(map.of("new.example"), Provider::Unknown);
        map.insert("new.example".into(), Provider::Proofpoint);
        assert_eq!(map.of("new.example"), Provider::Proofpoint);
    }
}
