//! The delivery pipeline of one `send` run: import → dispatcher → workers → ledger writer.
//!
//! ```text
//!  prepare: lock the ledger, recover a crashed run, import the contacts, open a run row
//!  Prepared::send ──► Writer thread (owns the ledger; batches commits)
//!        │
//!  dispatch: due rows in id order (keyset pages) ─► claim a block (`sending`, one commit)
//!        │                                          ─► bounded queue (two blocks)
//!        ▼
//!  worker × connections: render ─► rate limiter ─► in-flight journal ─► SMTP transaction
//!        │                  (one owned session each; transport bounds every read)
//!        ▼
//!  decide: what the outcome means (charge / give back; continue / slow / pause / abort)
//!        ▼
//!  Writer: outcome or release queued; the run ends with a [`Summary`]
//! ```
//!
//! A claimed row is always sent, charged, or given back uncharged. "Slow down" replies give the
//! claim back and slow the whole run; sender/relay problems pause it; auth/TLS failures abort it;
//! in both cases the recipients not yet sent stay exactly as they were. Why a run stopped is a
//! typed [`Stop`].
//!
//! Files: this one holds the types and the wiring of a run; `dispatch` reads and claims,
//! `worker` connects and sends, `decide` is the pure table of what an outcome means, `pace` the
//! rate limits and back-off, `guard` the circuit breaker (`[guard]`: pause before a list burns
//! the domain), `providers` who hosts each recipient domain (and its background MX lookups),
//! `relays` which relay each message goes through (`[[relay]]`: weights, cool-offs, failover),
//! `setup` the glue from a campaign. This module must not parse
//! campaigns or SMTP replies itself: rendering comes through [`Render`], reply meaning from
//! `transport::classify`, and every ledger access goes through `store`.

pub mod copies;
mod decide;
mod dispatch;
mod fields;
pub mod guard;
pub mod pace;
pub mod providers;
pub mod relays;
pub mod secrets;
pub mod setup;
mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::{CampaignId, DeliveryState, RunId, RunOutcome};
use crate::shutdown::Shutdown;
use crate::store::{self, DueRow, Writer};
use crate::transport::{ConnectFailure, Reply, Verdict};

pub use guard::{GuardOptions, Trip};
pub use pace::{Limits, Pacer, RateOptions, RetryOptions};
pub use providers::Lookup;
pub use relays::{RelayReport, RelaySpec, Relays};

use crate::model::DsnNotify;

/// One message ready to go, built from a ledger row.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub envelope_from: String,
    pub envelope_to: String,
    pub message_id: String,
    pub bytes: Vec<u8>,
}

/// Turns a ledger row back into a message (the send command wraps `Campaign::render`).
pub trait Render: Send + Sync + 'static {
    /// # Errors
    /// A description of why the row cannot be rendered (names the CSV line where possible).
    fn render(&self, row: &DueRow) -> Result<Outgoing, String>;

    /// `row`'s message as a copy for `to`, who is not a recipient (a seed), with its own id (see
    /// `Campaign::render_copy`). `None`: this renderer makes no copies, and seeds are skipped.
    fn render_copy(&self, row: &DueRow, to: &str, id: &str) -> Option<Result<Outgoing, String>> {
        let _ = (row, to, id);
        None
    }
}

/// Errors that stop a run before or outside SMTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(
        "in-flight journal {path}: {cause}\n\nmailroom keeps this file next to the ledger; make \
         sure the ledger's folder is writable (and not full), then run `mailroom send` again."
    )]
    Journal {
        path: PathBuf,
        // Shown in the message, before the fix, so not a `#[source]` (it would print twice).
        cause: std::io::Error,
    },
    #[error("a ledger task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Contacts(String),
}

/// How a run is paced and bounded.
#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub rate: RateOptions,
    pub retry: RetryOptions,
    /// Most recipients claimed in this run.
    pub limit: Option<u64>,
    pub resend_unknown: bool,
    /// Keep going (sleeping until retry times) until every recipient is final.
    pub wait: bool,
    /// First run-wide back-off after a "slow down" reply, and its cap.
    pub throttle_backoff: Duration,
    pub throttle_max: Duration,
    /// What to ask relays that speak DSN to report (`[bounces] notify`).
    pub notify: DsnNotify,
    /// The circuit breaker (`[guard]`).
    pub guard: GuardOptions,
    /// Background MX lookups of the campaign's domains (`[providers] lookup`): none by default.
    pub providers: Option<Lookup>,
    /// `[smtp] max_message_size`: a larger message fails without being sent, as one larger
    /// than the SIZE the relay advertises does.
    pub max_message_size: Option<u64>,
    /// `[schedule]`: claims happen only while the window is open (see `schedule`).
    pub window: Option<crate::schedule::Window>,
    /// `[contacts] timezone_column`: a recipient's own zone for the window (the stored fields'
    /// column of that name; empty or absent: the window's zone).
    pub timezone_column: Option<String>,
    /// The From domain: the daily cap and the warm-up count this domain's accepted messages
    /// (recorded on the run).
    pub from_domain: Option<String>,
    /// The time the window and the warm-up go by (tests inject a [`crate::clock::ManualClock`]).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// `[seeds]`: they get a copy of the first claimed recipient's message when the run claims
    /// it and when the run finishes (see `copies`).
    pub seeds: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 4,
            rate: RateOptions::default(),
            retry: RetryOptions::default(),
            limit: None,
            resend_unknown: false,
            wait: false,
            throttle_backoff: Duration::from_secs(30),
            throttle_max: Duration::from_secs(600),
            notify: DsnNotify::DEFAULT,
            guard: GuardOptions::default(),
            providers: None,
            max_message_size: None,
            window: None,
            timezone_column: None,
            from_domain: None,
            clock: Arc::new(crate::clock::SystemClock),
            seeds: Vec::new(),
        }
    }
}

/// Live counters of this run (read by progress displays while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    pub planned: AtomicU64,
    /// SMTP transactions started (see [`Summary::transactions`]).
    pub transactions: AtomicU64,
    pub accepted: AtomicU64,
    pub deferred: AtomicU64,
    pub bounced_hard: AtomicU64,
    pub bounced_soft: AtomicU64,
    pub failed: AtomicU64,
    pub unknown: AtomicU64,
    pub suppressed: AtomicU64,
    pub throttled: AtomicU64,
}

impl Counters {
    /// Messages that reached a result in this run (the progress bar's position).
    pub fn done(&self) -> u64 {
        [
            &self.accepted,
            &self.deferred,
            &self.bounced_hard,
            &self.bounced_soft,
            &self.failed,
            &self.unknown,
            &self.suppressed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn bump(&self, state: DeliveryState) {
        let counter = match state {
            DeliveryState::Accepted => &self.accepted,
            DeliveryState::Deferred => &self.deferred,
            DeliveryState::BouncedHard => &self.bounced_hard,
            DeliveryState::BouncedSoft => &self.bounced_soft,
            DeliveryState::Failed => &self.failed,
            DeliveryState::Unknown => &self.unknown,
            DeliveryState::Suppressed => &self.suppressed,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One per-recipient result, for log lines.
#[derive(Debug, Clone)]
pub struct Event {
    pub email: String,
    /// A `DeliveryState` name, or `throttled`.
    pub outcome: &'static str,
    pub detail: String,
}

/// Callback receiving every [`Event`].
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;

/// Why a run stopped before its end (the payload of [`End::Aborted`] and [`End::Paused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The relay refused the credentials.
    Auth(Reply),
    /// TLS could not be established (refused, failed, an untrusted certificate, or bytes the
    /// relay sent before the handshake).
    Tls(Reply),
    /// No port of the relay accepted a connection.
    Unreachable(String),
    /// The relay refused the session or refuses to relay for us.
    Refused(Reply),
    /// The relay is busy: 421 at the greeting, or it kept answering "slow down".
    Busy(Reply),
    /// The relay refused the sender (a quota, or temporary refusals of MAIL again and again).
    Sender(Reply),
    /// The relay's replies did not match the commands sent, on several connections in a row.
    OutOfStep(Reply),
    /// No usable reply before the message (the connection closed, a deadline passed, or a reply
    /// that is not SMTP) on several transactions in a row: the relay, not the recipients.
    NoReply(Reply),
    /// Reconnecting to the relay failed again and again during the run.
    Reconnect(String),
    /// The ledger could not be written.
    Ledger(String),
    /// The in-flight journal could not be written.
    Journal(String),
    /// A worker task failed (a bug: the message says where).
    Internal(String),
    /// The circuit breaker tripped (`[guard]`): a rate went past its limit.
    Guard(Trip),
    /// Every `[[relay]]` is cooling off (or capped for the day): each relay's name and why it
    /// was left out last.
    Relays(Vec<(String, String)>),
}

impl Stop {
    /// The stop for a failed connection (the first of a run, or a reconnect when `retrying`).
    fn connect(failure: ConnectFailure) -> Stop {
        match failure {
            ConnectFailure::Tls(r) => Stop::Tls(r),
            ConnectFailure::Auth(r) => Stop::Auth(r),
            ConnectFailure::Refused(r) if r.verdict() == Some(Verdict::Throttle) => Stop::Busy(r),
            ConnectFailure::Refused(r) => Stop::Refused(r),
            failure @ ConnectFailure::Unreachable { .. } => Stop::Unreachable(failure.to_string()),
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Auth(r) => write!(f, "authentication failed: {}", r.describe()),
            Stop::Tls(r) => write!(
                f,
                "TLS failed, refusing to continue without encryption: {}",
                r.describe()
            ),
            Stop::Unreachable(why) | Stop::Reconnect(why) => f.write_str(why),
            // No code: a closed connection, a deadline or a line that is not SMTP, not a refusal.
            Stop::Refused(r) if r.code.is_none() => {
                write!(f, "the relay gave no usable reply: {}", r.describe())
            }
            Stop::Refused(r) => write!(f, "the relay refused: {}", r.describe()),
            Stop::Busy(r) => write!(
                f,
                "the relay keeps refusing for now ({}): try later",
                r.describe()
            ),
            Stop::Sender(r) => write!(f, "the relay refused the sender: {}", r.describe()),
            Stop::OutOfStep(r) => write!(
                f,
                "the relay's replies do not match the commands sent, on {} connections in a \
                 row: {}",
                decide::RETRIES_IN_RUN,
                r.describe()
            ),
            Stop::NoReply(r) => write!(
                f,
                "the relay gave no usable reply before the message on {} transactions in a \
                 row: {}",
                decide::LOSSES_IN_A_ROW,
                r.describe()
            ),
            Stop::Ledger(why) | Stop::Journal(why) | Stop::Internal(why) => f.write_str(why),
            Stop::Guard(trip) => trip.fmt(f),
            Stop::Relays(relays) => {
                f.write_str("every relay is cooling off: ")?;
                let parts: Vec<String> = relays
                    .iter()
                    .map(|(name, why)| format!("{name}: {why}"))
                    .collect();
                f.write_str(&parts.join("; "))
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing left that is due (or, with `wait`, every recipient is final).
    Finished,
    /// Ctrl-C: in-flight transactions finished, nothing new claimed.
    Interrupted,
    /// A problem a re-run alone will not fix (credentials, TLS, the relay refusing us, the
    /// ledger): nothing is charged.
    Aborted(Stop),
    /// The relay is busy or refuses the sender for now: run again later; nothing is charged.
    Paused(Stop),
    /// `--limit` reached.
    Limit,
    /// `[rate] daily_cap` (or today's warm-up allowance) reached for this From domain.
    DailyCap,
    /// The send window is closed (`[schedule]`): at the start of the run, or it closed while
    /// the run claimed. Nothing was charged for it; `opens_at` (unix ms) is when it opens
    /// again (`None`: never, no weekday is allowed).
    Window { opens_at: Option<i64> },
    /// Nothing else is due, but this many recipients were given back after repeated "slow
    /// down" replies and are still pending: not finished, run again later (or use `wait`).
    Throttled(u64),
}

impl End {
    /// The `runs.outcome` of this end.
    pub fn outcome(&self) -> RunOutcome {
        match self {
            End::Finished => RunOutcome::Finished,
            End::Interrupted => RunOutcome::Interrupted,
            End::Aborted(_) => RunOutcome::Aborted,
            End::Paused(_) => RunOutcome::Paused,
            End::Limit => RunOutcome::Limit,
            End::DailyCap => RunOutcome::DailyCap,
            End::Window { .. } => RunOutcome::Window,
            End::Throttled(_) => RunOutcome::Throttled,
        }
    }
}

/// What a run did and what is left.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: End,
    /// The port of the first successful session (after fallback), if any.
    pub port: Option<u16>,
    /// SMTP transactions started in this run (MAIL sent), whatever they ended with: a message
    /// given back after a "slow down" and sent again counts each time.
    pub transactions: u64,
    pub accepted: u64,
    pub deferred: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub failed: u64,
    pub unknown: u64,
    pub suppressed: u64,
    /// Transactions given back after a "slow down" reply.
    pub throttled: u64,
    /// Whole-ledger figures for the campaign after the run.
    pub states: Vec<(DeliveryState, u64)>,
    pub deferred_total: u64,
    pub next_retry_at: Option<i64>,
    /// What each `[[relay]]` did in this run (empty with one `[smtp]` relay).
    pub relays: Vec<RelayReport>,
    /// Recipient domains whose mailbox provider lookup had not answered when the run ended
    /// (the next send of the campaign looks them up; 0 without lookups).
    pub providers_left: u64,
}

impl Summary {
    /// Count of one state in the whole campaign after the run.
    pub fn state(&self, state: DeliveryState) -> u64 {
        self.states
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// A ledger prepared for a run: contacts imported, crashed claims recovered, run row created.
pub struct Prepared {
    /// The ledger, for the writer thread.
    pub ledger: store::Ledger,
    /// Held until dropped: no other `send` may use this ledger meanwhile.
    pub lock: store::RunLock,
    pub campaign_id: CampaignId,
    pub run_id: RunId,
    pub imported: store::ImportCount,
    pub recovered: store::Recovered,
}

/// Opens the ledger, recovers the `sending` leftovers of a crashed run in any campaign
/// (`unknown` if their transaction had started, given back otherwise: see `store::journal`),
/// empties the in-flight journal, imports `contacts` (idempotent), and starts a run row. Takes
/// the ledger's send lock first (see [`store::RunLock`]): recovery is only right when no other
/// send is running.
///
/// # Errors
/// When the ledger cannot be opened or written, or `contacts` yields an error.
pub fn prepare<I, E>(
    path: &Path,
    campaign: &str,
    contacts: I,
    host: &str,
    security: &str,
) -> Result<Prepared, Error>
where
    I: IntoIterator<Item = Result<store::NewRecipient, E>>,
    E: std::fmt::Display,
{
    prepare_shard(path, campaign, None, contacts, host, security)
}

/// [`prepare`] for one shard of a campaign (`send --shard K/N`): the ledger records the shard
/// at the campaign's first send and refuses any other afterwards, before anything is imported.
/// `contacts` must already hold only this shard's rows (see `setup::Validated::start`).
///
/// # Errors
/// As [`prepare`], and `store::Error::ShardMismatch`.
pub fn prepare_shard<I, E>(
    path: &Path,
    campaign: &str,
    shard: Option<crate::model::Shard>,
    contacts: I,
    host: &str,
    security: &str,
) -> Result<Prepared, Error>
where
    I: IntoIterator<Item = Result<store::NewRecipient, E>>,
    E: std::fmt::Display,
{
    let lock = store::RunLock::acquire(path)?;
    let mut ledger = store::Ledger::open(path)?;
    // The import's pages stay in the WAL (no checkpoint with an fsync right after it): the run
    // that follows rewrites many of them, and one checkpoint at the end copies each page once.
    ledger.defer_checkpoints();
    // Recovery first, for the whole ledger: the journal is the ledger's, not the campaign's, and
    // rows given back to pending must then go through the import like any other (a contact
    // removed from the file meanwhile is marked removed, corrected fields are taken).
    let journal_error = |cause| Error::Journal {
        path: store::journal::path_for(path),
        cause,
    };
    let started = store::journal::read(path).map_err(journal_error)?;
    let recovered = ledger.recover_interrupted(&started)?;
    // Only now that recovery is committed: what the journal said is in the ledger.
    store::journal::reset(path).map_err(journal_error)?;
    let campaign_id = ledger.ensure_campaign(campaign)?;
    ledger.claim_shard(campaign_id, campaign, shard)?;
    let imported = ledger.import(campaign_id, contacts).map_err(|e| match e {
        store::ImportError::Store(e) => Error::Store(e),
        store::ImportError::Source(e) => Error::Contacts(e.to_string()),
    })?;
    let run_id = ledger.start_run(campaign_id, host, security)?;
    Ok(Prepared {
        ledger,
        lock,
        campaign_id,
        run_id,
        imported,
        recovered,
    })
}

/// What a run sends with, besides the prepared ledger.
pub struct Outbound {
    /// The relay of `[smtp]` (`Arc<Transport>` converts), or the `[[relay]]`s.
    pub relays: Relays,
    pub render: Arc<dyn Render>,
    pub options: Options,
    pub shutdown: Shutdown,
    pub counters: Arc<Counters>,
    pub events: Option<EventSink>,
}

impl Prepared {
    /// How many recipients are due now.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn due(&self, resend_unknown: bool) -> Result<u64, Error> {
        let reader = store::Reader::open(self.ledger.path())?;
        Ok(reader.count_due(self.campaign_id, crate::clock::now_ms(), resend_unknown)?)
    }

    /// Closes the run without sending anything (nothing due, or the user said no).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn close(self, outcome: RunOutcome) -> Result<(), Error> {
        Ok(self.ledger.finish_run(self.run_id, outcome)?)
    }

    /// The library's one way to send: starts the ledger writer, runs the pipeline to its end,
    /// and waits for the writer to commit and stop. Used by `send`, `demo` and the tests.
    ///
    /// # Errors
    /// When the ledger cannot be read or written; SMTP problems end the run with an [`End`]
    /// instead.
    pub async fn send(self, send: Outbound) -> Result<Summary, Error> {
        let Prepared {
            ledger,
            lock,
            campaign_id,
            run_id,
            ..
        } = self;
        let path = ledger.path().to_owned();
        if let Some(domain) = &send.options.from_domain {
            ledger.set_run_from_domain(run_id, domain)?;
        }
        let (writer, thread) = Writer::spawn(ledger)?;
        let summary = run(Run {
            ledger: path.clone(),
            writer,
            campaign_id,
            run_id,
            relays: send.relays,
            render: send.render,
            options: send.options,
            shutdown: send.shutdown,
            counters: send.counters,
            events: send.events,
        })
        .await;
        let joined = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Error::Task(e.to_string()))?;
        let summary = summary?;
        joined?;
        // Every claim of the run ended charged or given back and is committed: the in-flight
        // journal has nothing left to say (recovery would find no `sending` row to ask it
        // about), so it is emptied rather than left at a line per message. Checked, not assumed:
        // a row still claimed keeps the journal that tells what became of it. A writable
        // connection, the last to close, so the WAL and its index are removed as the writer's
        // close left them.
        let ledger = store::Ledger::open(&path)?;
        if ledger.sending_count(campaign_id)? == 0
            && let Err(e) = store::journal::reset(&path)
        {
            tracing::warn!("cannot empty the in-flight journal: {e}");
        }
        drop(ledger);
        drop(lock);
        Ok(summary)
    }
}

/// Everything a run needs, once the ledger writer runs.
pub struct Run {
    pub ledger: PathBuf,
    pub writer: Writer,
    pub campaign_id: CampaignId,
    pub run_id: RunId,
    pub relays: Relays,
    pub render: Arc<dyn Render>,
    pub options: Options,
    pub shutdown: Shutdown,
    pub counters: Arc<Counters>,
    pub events: Option<EventSink>,
}

/// Ledger reads on the blocking pool: SQLite must never block a runtime worker.
#[derive(Clone)]
struct Reads(Arc<std::sync::Mutex<store::Reader>>);

impl Reads {
    async fn with<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&store::Reader) -> Result<T, store::Error> + Send + 'static,
    {
        let reader = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let reader = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&reader)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Store)
    }
}

/// What the dispatcher and the workers share.
struct Shared {
    writer: Writer,
    campaign_id: CampaignId,
    /// See [`Options::seeds`].
    seeds: Vec<String>,
    /// The run's first claimed row: the seeds get its message.
    first_claimed: std::sync::Mutex<Option<DueRow>>,
    /// The seed copies sent when the first row was claimed, awaited before the end ones.
    seed_start: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    journal: store::journal::Journal,
    run_id: RunId,
    /// The relays and their cool-offs.
    relays: relays::Pool,
    render: Arc<dyn Render>,
    limits: Limits,
    pacer: Pacer,
    retry: RetryOptions,
    /// See [`Options::max_message_size`].
    max_message_size: Option<u64>,
    counters: Arc<Counters>,
    events: Option<EventSink>,
    notify: DsnNotify,
    /// The circuit breaker. A `std` mutex: held for one sample's arithmetic, never across an
    /// `.await`.
    guard: std::sync::Mutex<guard::Guard>,
    providers: Arc<providers::ProviderMap>,
    /// Triggered by Ctrl-C or by a worker that aborts/pauses the run.
    halt: Shutdown,
    end: std::sync::Mutex<Option<End>>,
    accepted_any: AtomicBool,
    port: AtomicU16,
    reconnect_failures: AtomicU64,
    /// "Slow down" replies since the last reply that was not one.
    throttles_in_a_row: AtomicU32,
    /// Transactions lost before their message (no usable reply at MAIL, RCPT or DATA) since
    /// the last reply.
    losses_in_a_row: AtomicU32,
    /// Claimed rows not yet finished by a worker.
    outstanding: AtomicU64,
    idle: Notify,
    /// Messages given back in this pass (throttling) and left for later.
    left: AtomicU64,
}

impl Shared {
    /// Ends the run now: workers finish the transaction in hand and skip the rest.
    fn stop(&self, end: End) {
        self.set_end(end);
        self.halt.trigger();
    }

    /// Records why the run ends without halting: what is already queued still goes out.
    fn set_end(&self, end: End) {
        let mut slot = self
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(end);
        }
    }

    fn ended(&self) -> Option<End> {
        self.end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Feeds one charged attempt to the circuit breaker; pauses the run when it trips.
    fn guard_sample(&self, domain: &str, sample: guard::Sample) {
        let provider = self.providers.of(domain);
        let trip = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(provider, sample);
        if let Some(trip) = trip {
            self.stop(End::Paused(Stop::Guard(trip)));
        }
    }

    fn event(&self, email: &str, outcome: &'static str, detail: String) {
        if let Some(sink) = &self.events {
            sink(&Event {
                email: email.to_owned(),
                outcome,
                detail,
            });
        }
    }

    fn finish_job(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Runs the pipeline until nothing is due (or, with `wait`, until every recipient is final),
/// Ctrl-C, an abort, a pause, or a limit.
///
/// # Errors
/// When the ledger cannot be read; SMTP problems end the run with an [`End`] instead.
pub async fn run(run: Run) -> Result<Summary, Error> {
    let Run {
        ledger: ledger_path,
        writer,
        campaign_id,
        run_id,
        relays,
        render,
        options,
        shutdown,
        counters,
        events,
    } = run;
    let opened = store::Reader::open(&ledger_path)
        .map_err(Error::Store)
        .and_then(|reader| {
            let journal =
                store::journal::Journal::open(&ledger_path).map_err(|cause| Error::Journal {
                    path: store::journal::path_for(&ledger_path),
                    cause,
                })?;
            Ok((reader, journal))
        });
    let (reader, journal) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // Nothing started yet: close the run row (best effort) so it is not left open.
            let _ = writer.finish_run(run_id, RunOutcome::Aborted).await;
            let _ = writer.sync().await;
            return Err(e);
        }
    };
    let cache = match reader.cached_providers() {
        Ok(cache) => cache,
        Err(e) => {
            let _ = writer.finish_run(run_id, RunOutcome::Aborted).await;
            let _ = writer.sync().await;
            return Err(Error::Store(e));
        }
    };
    let pool = match relay_pool(relays, &writer, &reader, options.clock.as_ref()).await {
        Ok(pool) => pool,
        Err(e) => {
            let _ = writer.finish_run(run_id, RunOutcome::Aborted).await;
            let _ = writer.sync().await;
            return Err(e);
        }
    };
    let provider_map = Arc::new(providers::ProviderMap::from_cache(cache));
    let reads = Reads(Arc::new(std::sync::Mutex::new(reader)));
    // Never awaited by sending: given `FINISH_GRACE` when the run ends, then stopped; what it
    // resolved is flushed to the ledger either way.
    let pending_providers = providers::Pending::default();
    let progress = Arc::new(providers::Progress::default());
    let resolving = options.providers.clone().and_then(|lookup| {
        providers::spawn(
            lookup,
            ledger_path.clone(),
            campaign_id,
            provider_map.clone(),
            writer.clone(),
            pending_providers.clone(),
            progress.clone(),
        )
    });

    let halt = Shutdown::new();
    {
        let halt = halt.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            halt.trigger();
        });
    }
    let shared = Arc::new(Shared {
        writer: writer.clone(),
        campaign_id,
        seeds: options.seeds.clone(),
        first_claimed: std::sync::Mutex::new(None),
        seed_start: std::sync::Mutex::new(None),
        journal,
        run_id,
        relays: pool,
        render,
        limits: Limits::new(&options.rate),
        pacer: Pacer::new(options.throttle_backoff, options.throttle_max),
        retry: options.retry.clone(),
        max_message_size: options.max_message_size,
        counters: counters.clone(),
        events,
        notify: options.notify,
        guard: std::sync::Mutex::new(guard::Guard::new(&options.guard)),
        providers: provider_map,
        halt,
        end: std::sync::Mutex::new(None),
        accepted_any: AtomicBool::new(false),
        port: AtomicU16::new(0),
        reconnect_failures: AtomicU64::new(0),
        throttles_in_a_row: AtomicU32::new(0),
        losses_in_a_row: AtomicU32::new(0),
        outstanding: AtomicU64::new(0),
        idle: Notify::new(),
        left: AtomicU64::new(0),
    });

    let driven = dispatch::run(&shared, &reads, campaign_id, &options).await;
    if let Some(mut task) = resolving {
        // A short run ends before its lookups do: let them finish for a moment (they are
        // answers the next report needs) when what is left would finish in it; never hold an
        // interrupted run, nor a large one for lookups the next run can do.
        let finished = !shutdown.is_triggered()
            && progress.can_finish_within(providers::FINISH_GRACE)
            && task.finish_within(providers::FINISH_GRACE).await;
        if !finished {
            task.stop().await;
        }
        // What was resolved since the last batch, stopped or not.
        pending_providers.flush(&writer).await;
    }
    if let Err(e) = &driven {
        shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
    }
    let end = match shared.ended() {
        Some(end) => end,
        None if shutdown.is_triggered() => End::Interrupted,
        None => match shared.left.load(Ordering::Relaxed) {
            0 => End::Finished,
            left => End::Throttled(left),
        },
    };
    // The seeds: the start copies (sent meanwhile), then the end ones, when a recipient was
    // claimed and the run was neither interrupted nor aborted.
    let started = shared
        .seed_start
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(task) = started {
        let _ = task.await;
    }
    let first = shared
        .first_claimed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(row) = first
        && !matches!(end, End::Interrupted | End::Aborted(_))
    {
        copies::seed(shared.clone(), row, "end").await;
    }
    let outcome = end.outcome();
    let closed = async {
        writer.finish_run(run_id, outcome).await?;
        writer.sync().await
    }
    .await;
    if closed.is_err() {
        // The writer failed (that is usually why `driven` failed too): close the run row on a
        // connection of its own instead, so the run is not left open.
        let path = ledger_path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store::Ledger::open(&path).and_then(|l| l.finish_run(run_id, outcome))
        })
        .await;
    }
    driven?;
    closed?;

    let (states, (deferred_total, next_retry_at)) = reads
        .with(move |r| {
            Ok((
                r.state_counts(campaign_id)?,
                r.deferred_summary(campaign_id)?,
            ))
        })
        .await?;
    let port = match shared.port.load(Ordering::Relaxed) {
        0 => None,
        p => Some(p),
    };
    let c = &counters;
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    Ok(Summary {
        end,
        port,
        transactions: load(&c.transactions),
        accepted: load(&c.accepted),
        deferred: load(&c.deferred),
        bounced_hard: load(&c.bounced_hard),
        bounced_soft: load(&c.bounced_soft),
        failed: load(&c.failed),
        unknown: load(&c.unknown),
        suppressed: load(&c.suppressed),
        throttled: load(&c.throttled),
        states,
        deferred_total,
        next_retry_at,
        relays: shared.relays.reports(),
        providers_left: progress.left(),
    })
}

/// The run's relay pool: with `[[relay]]`s, their ledger ids (rows created as needed) and what
/// each took in the last 24 hours (for its daily cap).
async fn relay_pool(
    relays: Relays,
    writer: &Writer,
    reader: &store::Reader,
    clock: &dyn crate::clock::Clock,
) -> Result<relays::Pool, Error> {
    if !relays.is_several() {
        // Not even the clock is read: a one-relay run is exactly what it always was.
        return Ok(relays::Pool::new(relays, &[], &[]));
    }
    let ids = writer.relays(relays.names()).await?;
    let since = clock.now_ms() - crate::schedule::DAY_MS;
    let mut sent = Vec::new();
    for (name, cap) in relays.names().iter().zip(relays.daily_caps()) {
        // Reads only for a capped relay: they scan its attempts of the day.
        sent.push(match cap {
            Some(_) => reader.relay_sent_since(name, since)?,
            None => 0,
        });
    }
    Ok(relays::Pool::new(relays, &ids, &sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Step;

    #[test]
    fn a_stop_without_a_reply_code_is_not_called_a_refusal() {
        let reply = |code: Option<u16>, text: &str| Reply {
            step: Step::Greeting,
            code,
            enhanced: None,
            text: text.into(),
            timed_out: false,
        };
        let closed = Stop::Refused(reply(None, "connection closed by the server"));
        assert_eq!(
            closed.to_string(),
            "the relay gave no usable reply: connection closed by the server (at greeting)"
        );
        let refused = Stop::Refused(reply(Some(554), "no SMTP service here"));
        assert_eq!(
            refused.to_string(),
            "the relay refused: 554 no SMTP service here (at greeting)"
        );
    }
}
