//! The delivery pipeline of one `send` run: import → dispatcher → workers.
//!
//! The dispatcher reads due rows from the ledger in id order (keyset pages), claims them in
//! blocks (`sending`, one commit per block) and hands them to a bounded queue. `connections`
//! workers each own one SMTP session; every worker renders its row into a message, waits for
//! the shared rate limiter (and the recipient domain's), notes in the in-flight journal that the
//! transaction starts (see `store::journal`), runs it and queues the outcome for the ledger
//! writer. A claimed row is always sent, charged, or given back uncharged. "Slow down" replies
//! give the claim back and slow the whole run; sender/relay problems pause it; auth/TLS failures
//! abort it; in both cases the recipients not yet sent stay exactly as they were.
//!
//! This module must not parse campaigns or SMTP replies itself: rendering comes through
//! [`Render`], reply meaning from `transport::classify`.

pub mod pace;
pub mod setup;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use lettre::Address;
use tokio::sync::{Mutex, Notify, mpsc};

use crate::model::DeliveryState;
use crate::shutdown::Shutdown;
use crate::store::{
    self, AttemptRecord, Claim, ClaimResult, DueRow, Outcome, Release, Writer, ledger,
};
use crate::transport::{ConnectFailure, Reply, Session, Step, Transport, TxOutcome, Verdict};

pub use pace::{Limits, Pacer, RateOptions, RetryOptions};

/// Rows read from the ledger per dispatcher page.
const PAGE: usize = 256;
/// Most rows claimed in one commit. Claiming is the ledger write every message waits for, so the
/// dispatcher claims rows in blocks (the in-flight journal keeps crash recovery exact, see
/// `store::journal`); a block is sized to about [`CLAIM_AHEAD`] of sending at the configured
/// rate, so that at slow rates rows are not held `sending` long before they go out.
const CLAIM_BLOCK: usize = 128;
/// How much sending, at the configured rate, one claimed block covers.
const CLAIM_AHEAD: Duration = Duration::from_millis(50);
/// Times one message is retried in the same run after a "slow down" or a stale connection
/// before it is left for a later pass or run.
const RETRIES_IN_RUN: u32 = 3;
/// Consecutive failed reconnects after which the run pauses.
const MAX_RECONNECT_FAILURES: u32 = 5;

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
}

/// Errors that stop a run before or outside SMTP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(
        "in-flight journal {path}: {source}\n\nmailroom keeps this file next to the ledger; make \
         sure the ledger's folder is writable (and not full), then run `mailroom send` again."
    )]
    Journal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
        }
    }
}

/// Live counters of this run (read by progress displays while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    pub planned: AtomicU64,
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing left that is due (or, with `wait`, every recipient is final).
    Finished,
    /// Ctrl-C: in-flight transactions finished, nothing new claimed.
    Interrupted,
    /// The relay refused us (auth, TLS, relaying) or the ledger failed; the message says why.
    Aborted(String),
    /// The relay refused the sender or a quota was hit; re-run later.
    Paused(String),
    /// `--limit` reached.
    Limit,
    /// `[rate] daily_cap` reached.
    DailyCap,
    /// Nothing else is due, but this many recipients were given back after repeated "slow
    /// down" replies and are still pending: not finished, run again later (or use `wait`).
    Throttled(u64),
}

impl End {
    /// The `runs.outcome` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            End::Finished => "finished",
            End::Interrupted => "interrupted",
            End::Aborted(_) => "aborted",
            End::Paused(_) => "paused",
            End::Limit => "limit",
            End::DailyCap => "daily_cap",
            End::Throttled(_) => "throttled",
        }
    }
}

/// What a run did and what is left.
#[derive(Debug, Clone)]
pub struct Summary {
    pub end: End,
    /// The port of the first successful session (after fallback), if any.
    pub port: Option<u16>,
    pub accepted: u64,
    pub deferred: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub failed: u64,
    pub unknown: u64,
    pub suppressed: u64,
    /// Whole-ledger figures for the campaign after the run.
    pub states: Vec<(DeliveryState, u64)>,
    pub deferred_total: u64,
    pub next_retry_at: Option<i64>,
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
    pub campaign_id: i64,
    pub run_id: i64,
    pub imported: store::ImportCount,
    pub recovered: ledger::Recovered,
}

/// Opens the ledger, recovers the `sending` leftovers of a crashed run in any campaign
/// (`unknown` if their transaction had started, given back otherwise: see `store::journal`),
/// empties the in-flight journal, imports `contacts` (idempotent), and starts a run row. Takes the ledger's
/// send lock first (see [`store::RunLock`]): recovery is only right when no other send is
/// running.
///
/// # Errors
/// When the ledger cannot be opened or written.
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
    let lock = store::RunLock::acquire(path)?;
    let mut ledger = store::Ledger::open(path)?;
    // The import's pages stay in the WAL (no checkpoint with an fsync right after it): the run
    // that follows rewrites many of them, and one checkpoint at the end copies each page once.
    ledger.defer_checkpoints();
    // Recovery first, for the whole ledger: the journal is the ledger's, not the campaign's, and
    // rows given back to pending must then go through the import like any other (a contact
    // removed from the file meanwhile is marked removed, corrected fields are taken).
    let journal_error = |source| Error::Journal {
        path: store::journal::path_for(path),
        source,
    };
    let started = store::journal::read(path).map_err(journal_error)?;
    let recovered = ledger.recover_interrupted(&started)?;
    // Only now that recovery is committed: what the journal said is in the ledger.
    store::journal::reset(path).map_err(journal_error)?;
    let campaign_id = ledger.ensure_campaign(campaign)?;
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

/// Everything a run needs.
pub struct Run {
    pub ledger: PathBuf,
    pub writer: Writer,
    pub campaign_id: i64,
    pub run_id: i64,
    pub transport: Arc<Transport>,
    pub render: Arc<dyn Render>,
    pub options: Options,
    pub shutdown: Shutdown,
    pub counters: Arc<Counters>,
    pub events: Option<EventSink>,
}

struct Job {
    row: DueRow,
    from: Address,
    to: Address,
    message_id: String,
    bytes: Vec<u8>,
}

struct Shared {
    writer: Writer,
    journal: store::journal::Journal,
    run_id: i64,
    transport: Arc<Transport>,
    limits: Limits,
    pacer: Pacer,
    retry: RetryOptions,
    counters: Arc<Counters>,
    events: Option<EventSink>,
    /// Triggered by Ctrl-C or by a worker that aborts/pauses the run.
    halt: Shutdown,
    end: std::sync::Mutex<Option<End>>,
    accepted_any: AtomicBool,
    port: AtomicU16,
    reconnect_failures: AtomicU64,
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

fn attempt(reply: &Reply, port: Option<u16>, outcome: &'static str) -> AttemptRecord {
    AttemptRecord {
        at: ledger::now_ms(),
        port,
        step: reply.step.as_str(),
        code: reply.code,
        enhanced: reply.enhanced.clone(),
        reply: Some(reply.text.clone()),
        outcome,
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
        transport,
        render,
        options,
        shutdown,
        counters,
        events,
    } = run;
    // Closes the run row when the run cannot start (best effort: the error is what matters).
    let abandon = async |writer: &Writer| {
        let _ = writer.finish_run(run_id, "aborted").await;
        let _ = writer.sync().await;
    };
    let reader = match store::Reader::open(&ledger_path) {
        Ok(reader) => Arc::new(std::sync::Mutex::new(reader)),
        Err(e) => {
            abandon(&writer).await;
            return Err(e.into());
        }
    };
    let journal = match store::journal::Journal::open(&ledger_path) {
        Ok(journal) => journal,
        Err(source) => {
            abandon(&writer).await;
            return Err(Error::Journal {
                path: store::journal::path_for(&ledger_path),
                source,
            });
        }
    };
    // Reads run on the blocking pool: SQLite must not block a runtime worker.
    let read = {
        let reader = reader.clone();
        move |f: ReadFn| {
            let reader = reader.clone();
            async move {
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
    };

    // How many rows are due right now, read on the reader connection.
    let count_due_now = || {
        let resend = options.resend_unknown;
        let read = read.clone();
        async move {
            match read(Box::new(move |r| {
                r.count_due(campaign_id, ledger::now_ms(), resend)
                    .map(ReadResult::Count)
            }))
            .await?
            {
                ReadResult::Count(n) => Ok::<u64, Error>(n),
                _ => Ok(0),
            }
        }
    };

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
        journal,
        run_id,
        transport: transport.clone(),
        limits: Limits::new(&options.rate),
        pacer: Pacer::new(options.throttle_backoff, options.throttle_max),
        retry: options.retry.clone(),
        counters: counters.clone(),
        events,
        halt: halt.clone(),
        end: std::sync::Mutex::new(None),
        accepted_any: AtomicBool::new(false),
        port: AtomicU16::new(0),
        reconnect_failures: AtomicU64::new(0),
        outstanding: AtomicU64::new(0),
        idle: Notify::new(),
        left: AtomicU64::new(0),
    });

    let mut workers = Vec::new();
    // Every early return (`?`) below leaves this block, not the function: the workers are then
    // halted and awaited, and the run row is closed, before the error is returned.
    let driven: Result<(), Error> = async {
        let due_now = count_due_now().await?;
        counters.planned.store(
            options.limit.map_or(due_now, |l| l.min(due_now)),
            Ordering::Relaxed,
        );

        // One session up front: a wrong password or a missing STARTTLS stops the run here, before
        // any recipient is claimed.
        let first_session = if due_now > 0 && !halt.is_triggered() {
            match transport.connect().await {
                Ok(session) => {
                    let port = session.port();
                    shared.port.store(port, Ordering::Relaxed);
                    writer.set_run_port(run_id, port).await?;
                    Some(session)
                }
                Err(failure) => {
                    // A relay that is busy right now ("421 try later") pauses the run; one that
                    // refuses us, our TLS or our credentials, or cannot be reached, aborts it.
                    let busy = matches!(
                        &failure,
                        ConnectFailure::Refused(r) if r.verdict() == Some(Verdict::Throttle)
                    );
                    shared.stop(if busy {
                        End::Paused(failure.to_string())
                    } else {
                        End::Aborted(failure.to_string())
                    });
                    None
                }
            }
        } else {
            None
        };

        // Claimed rows wait here for a worker. Room for two blocks: one being sent while the
        // next is claimed.
        let block = claim_block(&options);
        let (queue_tx, queue_rx) = mpsc::channel::<DueRow>(2 * block);
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let mut first_session = first_session;
        for _ in 0..options.connections.max(1) {
            let shared = shared.clone();
            let rx = queue_rx.clone();
            let session = first_session.take();
            let render = render.clone();
            workers.push(tokio::spawn(worker(shared, render, rx, session)));
        }

        let mut budget = options.limit;
        let mut daily_left = match options.rate.daily_cap {
            Some(cap) => {
                let since = ledger::now_ms() - 24 * 3600 * 1000;
                match read(Box::new(move |r| {
                    r.accepted_since(since).map(ReadResult::Count)
                }))
                .await?
                {
                    ReadResult::Count(n) => Some(cap.saturating_sub(n)),
                    _ => Some(cap),
                }
            }
            None => None,
        };

        'passes: loop {
            let mut after = 0i64;
            loop {
                if halt.is_triggered() {
                    break 'passes;
                }
                let resend = options.resend_unknown;
                let page = match read(Box::new(move |r| {
                    r.due_rows(campaign_id, after, ledger::now_ms(), resend, PAGE)
                        .map(ReadResult::Rows)
                }))
                .await?
                {
                    ReadResult::Rows(rows) => rows,
                    _ => Vec::new(),
                };
                if page.is_empty() {
                    break;
                }
                let mut rows = page.into_iter().peekable();
                while rows.peek().is_some() {
                    if budget == Some(0) {
                        shared.set_end(End::Limit);
                        break 'passes;
                    }
                    if daily_left == Some(0) {
                        shared.set_end(End::DailyCap);
                        break 'passes;
                    }
                    let room = [budget, daily_left]
                        .into_iter()
                        .flatten()
                        .fold(block as u64, u64::min);
                    let chunk: Vec<DueRow> = rows
                        .by_ref()
                        .take(usize::try_from(room).unwrap_or(block))
                        .collect();
                    if let Some(last) = chunk.last() {
                        after = last.id;
                    }
                    let n = chunk.len();
                    // Room in the queue first: a claimed row never waits for the dispatcher.
                    let permits = tokio::select! {
                        biased;
                        () = halt.wait() => break 'passes,
                        permits = queue_tx.reserve_many(n) => match permits {
                            Ok(permits) => permits,
                            Err(_) => break 'passes,
                        },
                    };
                    if !claim_and_queue(&shared, chunk, permits).await {
                        break 'passes;
                    }
                    budget = budget.map(|b| b.saturating_sub(n as u64));
                    daily_left = daily_left.map(|d| d.saturating_sub(n as u64));
                }
            }
            // The pass is dispatched: let the workers finish it before looking again, so a row
            // handed out but not yet claimed is never read twice.
            tokio::select! {
                () = shared.wait_idle() => {}
                () = halt.wait() => break 'passes,
            }
            if !options.wait {
                break;
            }
            // Outcomes are queued, not yet committed: make them visible to the reader first.
            writer.sync().await?;
            let due = count_due_now().await?;
            if due > 0 {
                shared.left.store(0, Ordering::Relaxed);
                continue;
            }
            let next = match read(Box::new(move |r| {
                r.deferred_summary(campaign_id)
                    .map(|(n, at)| ReadResult::Deferred(n, at))
            }))
            .await?
            {
                ReadResult::Deferred(n, at) if n > 0 => at,
                _ => break,
            };
            let wait_ms = next.unwrap_or(0).saturating_sub(ledger::now_ms()).max(0);
            let wake = tokio::time::Instant::now()
                + Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0) + 50);
            tracing::info!(
                "waiting {} s for the next deferred recipient",
                wait_ms / 1000
            );
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = halt.wait() => break 'passes,
            }
        }

        drop(queue_tx);
        Ok(())
    }
    .await;
    if let Err(e) = &driven {
        shared.stop(End::Aborted(e.to_string()));
    }
    for w in workers {
        if let Err(e) = w.await {
            shared.stop(End::Aborted(format!("a worker failed: {e}")));
        }
    }
    let end = {
        let slot = shared
            .end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.clone()
    };
    let end = match end {
        Some(end) => end,
        None if shutdown.is_triggered() => End::Interrupted,
        None => match shared.left.load(Ordering::Relaxed) {
            0 => End::Finished,
            left => End::Throttled(left),
        },
    };
    let outcome = end.as_str();
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

    let (states, (deferred_total, next_retry_at)) = match read(Box::new(move |r| {
        Ok(ReadResult::Final(
            r.state_counts(campaign_id)?,
            r.deferred_summary(campaign_id)?,
        ))
    }))
    .await?
    {
        ReadResult::Final(states, deferred) => (states, deferred),
        _ => (Vec::new(), (0, None)),
    };
    let port = match shared.port.load(Ordering::Relaxed) {
        0 => None,
        p => Some(p),
    };
    let c = &counters;
    Ok(Summary {
        end,
        port,
        accepted: c.accepted.load(Ordering::Relaxed),
        deferred: c.deferred.load(Ordering::Relaxed),
        bounced_hard: c.bounced_hard.load(Ordering::Relaxed),
        bounced_soft: c.bounced_soft.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        unknown: c.unknown.load(Ordering::Relaxed),
        suppressed: c.suppressed.load(Ordering::Relaxed),
        states,
        deferred_total,
        next_retry_at,
    })
}

type ReadFn = Box<dyn FnOnce(&store::Reader) -> Result<ReadResult, store::Error> + Send>;

enum ReadResult {
    Count(u64),
    Rows(Vec<DueRow>),
    Deferred(u64, Option<i64>),
    Final(Vec<(DeliveryState, u64)>, (u64, Option<i64>)),
}

/// Rows claimed per commit for this run's rate (see [`CLAIM_BLOCK`]): at least one per
/// connection, so that every worker has a row after each claim.
fn claim_block(options: &Options) -> usize {
    let per_second = pace::interval(&options.rate).map_or(f64::INFINITY, |i| 1.0 / i.as_secs_f64());
    let ahead = (per_second * CLAIM_AHEAD.as_secs_f64()).ceil();
    // `as` saturates: infinity and huge rates become usize::MAX, then the cap.
    (ahead as usize).clamp(options.connections.max(1), CLAIM_BLOCK)
}

/// Claims `rows` in one commit and queues the claimed ones for the workers (one permit each,
/// reserved beforehand). Rows on the suppression list are counted; rows changed meanwhile by
/// another process are skipped. False when the run must stop (the ledger cannot be written).
async fn claim_and_queue(
    shared: &Shared,
    rows: Vec<DueRow>,
    mut permits: mpsc::PermitIterator<'_, DueRow>,
) -> bool {
    let claims = rows
        .iter()
        .map(|row| Claim {
            recipient_id: row.id,
            run_id: shared.run_id,
            expected_state: row.state,
            expected_attempts: row.attempts,
        })
        .collect();
    let results = match shared.writer.claim_many(claims).await {
        Ok(results) => results,
        Err(e) => {
            shared.stop(End::Aborted(e.to_string()));
            return false;
        }
    };
    for (row, result) in rows.into_iter().zip(results) {
        match result {
            ClaimResult::Claimed => {
                if let Some(permit) = permits.next() {
                    shared.outstanding.fetch_add(1, Ordering::AcqRel);
                    permit.send(row);
                }
            }
            ClaimResult::Suppressed => {
                shared.counters.bump(DeliveryState::Suppressed);
                shared.event(&row.email, "suppressed", "on the suppression list".into());
            }
            ClaimResult::Lost => {}
        }
    }
    true
}

/// Marks a claimed row whose message cannot be built `failed`, with an attempt at step `render`
/// saying why.
async fn unrenderable(shared: &Shared, row: DueRow, reason: String) {
    let a = AttemptRecord {
        at: ledger::now_ms(),
        port: None,
        step: "render",
        code: None,
        enhanced: None,
        reply: Some(reason),
        outcome: "failed",
    };
    record(shared, &row, DeliveryState::Failed, None, a, None).await;
}

/// The job for `row`, or the row back with why its message cannot be built.
fn build_job(render: &dyn Render, row: DueRow) -> Result<Job, Box<(DueRow, String)>> {
    let built = render
        .render(&row)
        .map_err(|e| {
            format!(
                "cannot render the message for {} (line {}): {e}",
                row.email, row.line
            )
        })
        .and_then(|out| {
            let from = crate::transport::envelope_address(&out.envelope_from)
                .map_err(|e| e.to_string())?;
            let to =
                crate::transport::envelope_address(&out.envelope_to).map_err(|e| e.to_string())?;
            Ok((out, from, to))
        });
    match built {
        Ok((out, from, to)) => Ok(Job {
            row,
            from,
            to,
            message_id: out.message_id,
            bytes: out.bytes,
        }),
        Err(reason) => Err(Box::new((row, reason))),
    }
}

async fn worker(
    shared: Arc<Shared>,
    render: Arc<dyn Render>,
    rx: Arc<Mutex<mpsc::Receiver<DueRow>>>,
    mut session: Option<Session>,
) {
    loop {
        let row = { rx.lock().await.recv().await };
        let Some(row) = row else { break };
        // Every queued row is claimed: it is sent, charged, or given back, never dropped.
        if shared.halt.is_triggered() {
            give_back(&shared, row.id, None).await;
        } else {
            match build_job(render.as_ref(), row) {
                Ok(job) => process(&shared, &mut session, &job).await,
                // Only this row's message cannot be built (the import checks every row, so
                // this is rare): charge it alone, with the reason, and let the run go on.
                Err(failed) => {
                    let (row, reason) = *failed;
                    unrenderable(&shared, row, reason).await;
                }
            }
        }
        shared.finish_job();
    }
    if let Some(session) = session {
        session.quit().await;
    }
}

/// What happened to a claimed transaction, from the worker's point of view.
enum Next {
    Done,
    Retry,
}

/// Sends one claimed job (retrying on a fresh connection or after a back-off where that is
/// safe). Whatever happens, the claim ends charged (an outcome) or given back (uncharged).
async fn process(shared: &Shared, session: &mut Option<Session>, job: &Job) {
    // The dispatcher claimed the row; a retry gives the claim back first and claims again.
    let mut claimed = true;
    let mut retries = 0;
    loop {
        if shared.halt.is_triggered() {
            return unsent(shared, job, claimed).await;
        }
        tokio::select! {
            biased;
            () = shared.halt.wait() => return unsent(shared, job, claimed).await,
            () = async {
                shared.limits.until_ready(&job.row.domain).await;
                shared.pacer.wait().await;
            } => {}
        }
        if !session.as_ref().is_some_and(Session::is_usable) {
            if let Some(old) = session.take() {
                old.quit().await;
            }
            match shared.transport.connect().await {
                Ok(s) => {
                    shared.reconnect_failures.store(0, Ordering::Relaxed);
                    *session = Some(s);
                }
                Err(failure @ (ConnectFailure::Tls(_) | ConnectFailure::Auth(_))) => {
                    shared.stop(End::Aborted(failure.to_string()));
                    return unsent(shared, job, claimed).await;
                }
                Err(failure) => {
                    let refused_for_good = matches!(
                        &failure,
                        ConnectFailure::Refused(r) if r.verdict() == Some(Verdict::Abort)
                    );
                    let n = shared.reconnect_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if refused_for_good {
                        shared.stop(End::Aborted(failure.to_string()));
                        return unsent(shared, job, claimed).await;
                    }
                    if n >= u64::from(MAX_RECONNECT_FAILURES) {
                        shared.stop(End::Paused(failure.to_string()));
                        return unsent(shared, job, claimed).await;
                    }
                    let backoff = shared.pacer.throttle();
                    tracing::warn!("{failure}; retrying in {} s", backoff.as_secs());
                    continue;
                }
            }
        }
        let Some(live) = session.as_mut() else {
            continue;
        };
        if !claimed {
            let claim = Claim {
                recipient_id: job.row.id,
                run_id: shared.run_id,
                expected_state: job.row.state,
                expected_attempts: job.row.attempts,
            };
            match shared.writer.claim(claim).await {
                Err(e) => {
                    shared.stop(End::Aborted(e.to_string()));
                    return;
                }
                Ok(ClaimResult::Lost) => return,
                Ok(ClaimResult::Suppressed) => {
                    shared.counters.bump(DeliveryState::Suppressed);
                    shared.event(
                        &job.row.email,
                        "suppressed",
                        "on the suppression list".into(),
                    );
                    return;
                }
                Ok(ClaimResult::Claimed) => claimed = true,
            }
        }
        if shared.halt.is_triggered() {
            // Halted while waiting for the connection or the claim: give it back untouched.
            return unsent(shared, job, claimed).await;
        }
        // Outcomes are queued without waiting for their commit: a ledger that stopped taking
        // them shows here, before another message goes out that could not be recorded.
        if let Err(e) = shared.writer.check() {
            shared.stop(End::Aborted(e.to_string()));
            return;
        }
        // The last word before the first byte of the transaction: from here on, a crash makes
        // this row `unknown` rather than giving it back.
        if let Err(e) = shared.journal.started(shared.run_id, job.row.id) {
            shared.stop(End::Aborted(format!(
                "cannot write the in-flight journal {}: {e}; make sure the ledger's folder is \
                 writable and not full, then run `mailroom send` again",
                shared.journal.path().display()
            )));
            return unsent(shared, job, claimed).await;
        }
        let port = Some(live.port());
        let outcome = live.send(&job.from, &job.to, &job.bytes).await;
        match settle(shared, job, port, outcome, retries).await {
            Next::Done => return,
            Next::Retry => {
                // Every retry path gave the claim back.
                claimed = false;
                retries += 1;
            }
        }
    }
}

/// The job was not sent: give its claim back, uncharged, if it still holds one.
async fn unsent(shared: &Shared, job: &Job, claimed: bool) {
    if claimed {
        release(shared, job, None).await;
    }
}

/// Gives the claim on `recipient_id` back, uncharged (with the evidence, if any).
async fn give_back(shared: &Shared, recipient_id: i64, attempt: Option<AttemptRecord>) {
    let r = Release {
        recipient_id,
        run_id: shared.run_id,
        attempt,
    };
    if let Err(e) = shared.writer.release(r).await {
        shared.stop(End::Aborted(e.to_string()));
    }
}

async fn release(shared: &Shared, job: &Job, attempt: Option<AttemptRecord>) {
    give_back(shared, job.row.id, attempt).await;
}

async fn record(
    shared: &Shared,
    row: &DueRow,
    state: DeliveryState,
    retry_at: Option<i64>,
    a: AttemptRecord,
    message_id: Option<String>,
) {
    let detail = a.reply.clone().unwrap_or_default();
    let o = Outcome {
        recipient_id: row.id,
        run_id: shared.run_id,
        state,
        retry_at,
        attempt: a,
        message_id,
    };
    if let Err(e) = shared.writer.record(o).await {
        shared.stop(End::Aborted(e.to_string()));
        return;
    }
    shared.counters.bump(state);
    shared.event(&row.email, state.as_str(), detail);
}

/// The Message-ID the job's message carries, when the ledger has another one for the row.
fn sent_id(job: &Job) -> Option<String> {
    (job.message_id != job.row.message_id).then(|| job.message_id.clone())
}

async fn temporary(shared: &Shared, job: &Job, reply: &Reply, port: Option<u16>) {
    let now = ledger::now_ms();
    let (state, retry_at) = pace::after_temporary_failure(
        &shared.retry,
        job.row.attempts,
        job.row.first_attempt_at,
        now,
    );
    record(
        shared,
        &job.row,
        state,
        retry_at,
        attempt(reply, port, state.as_str()),
        sent_id(job),
    )
    .await;
}

async fn settle(
    shared: &Shared,
    job: &Job,
    port: Option<u16>,
    outcome: TxOutcome,
    retries: u32,
) -> Next {
    match outcome {
        TxOutcome::Lost(reply) if reply.step == Step::Message => {
            // The final "." went out and no reply came back: the relay may have the message.
            record(
                shared,
                &job.row,
                DeliveryState::Unknown,
                None,
                attempt(&reply, port, "unknown"),
                sent_id(job),
            )
            .await;
            Next::Done
        }
        TxOutcome::Lost(reply)
            if reply.step == Step::Mail && !reply.timed_out && retries < RETRIES_IN_RUN =>
        {
            // A reused connection the server had already closed: nothing of this message was
            // sent, so reconnect and try again uncharged.
            release(shared, job, None).await;
            Next::Retry
        }
        TxOutcome::Lost(reply) => {
            temporary(shared, job, &reply, port).await;
            Next::Done
        }
        TxOutcome::OutOfStep(reply) if reply.step == Step::Message => {
            // The body went out and the reply we read is not the answer to it: the relay may
            // well have accepted the message, so it must not be sent again without opt-in.
            let mut a = attempt(&reply, port, "unknown");
            a.reply = Some(format!(
                "reply out of step after the message: {}",
                reply.text
            ));
            record(
                shared,
                &job.row,
                DeliveryState::Unknown,
                None,
                a,
                sent_id(job),
            )
            .await;
            Next::Done
        }
        TxOutcome::OutOfStep(reply) => {
            // Nothing of the message was sent (the body is only sent after a 354): give the
            // claim back uncharged, with the evidence, and try again on a fresh connection.
            let mut a = attempt(&reply, port, "out_of_step");
            a.reply = Some(format!(
                "reply out of step, connection dropped before the message: {}",
                reply.text
            ));
            release(shared, job, Some(a)).await;
            shared.event(
                &job.row.email,
                "out_of_step",
                format!("{}; reconnecting", reply.describe()),
            );
            if retries + 1 >= RETRIES_IN_RUN {
                // Every fresh connection goes out of step: the relay (or something between
                // us) is broken. Stop; nobody is charged.
                shared.stop(End::Paused(format!(
                    "the relay's replies do not match the commands sent, on {RETRIES_IN_RUN} \
                     connections in a row: {}",
                    reply.describe()
                )));
                Next::Done
            } else {
                Next::Retry
            }
        }
        TxOutcome::Replied(reply) => {
            let verdict = reply.verdict().unwrap_or(Verdict::Deferred);
            match verdict {
                Verdict::Accepted => {
                    shared.accepted_any.store(true, Ordering::Relaxed);
                    shared.pacer.success();
                    record(
                        shared,
                        &job.row,
                        DeliveryState::Accepted,
                        None,
                        attempt(&reply, port, "accepted"),
                        sent_id(job),
                    )
                    .await;
                    Next::Done
                }
                Verdict::Deferred if reply.step == Step::Mail => {
                    // A temporary refusal of MAIL FROM (451 local problem, 452 insufficient
                    // storage) is about the sender or the relay, not this recipient: give the
                    // claim back uncharged, slow the run down, and pause it if it persists.
                    release(shared, job, Some(attempt(&reply, port, "throttled"))).await;
                    let backoff = shared.pacer.throttle();
                    shared.event(
                        &job.row.email,
                        "throttled",
                        format!(
                            "{}; the relay refused the sender for now, slowing down for {} s",
                            reply.describe(),
                            backoff.as_secs()
                        ),
                    );
                    if retries + 1 >= RETRIES_IN_RUN {
                        shared.stop(End::Paused(reply.describe()));
                        Next::Done
                    } else {
                        Next::Retry
                    }
                }
                Verdict::Deferred => {
                    temporary(shared, job, &reply, port).await;
                    Next::Done
                }
                Verdict::BouncedHard => {
                    record(
                        shared,
                        &job.row,
                        DeliveryState::BouncedHard,
                        None,
                        attempt(&reply, port, "bounced_hard"),
                        sent_id(job),
                    )
                    .await;
                    Next::Done
                }
                Verdict::BouncedSoft => {
                    record(
                        shared,
                        &job.row,
                        DeliveryState::BouncedSoft,
                        None,
                        attempt(&reply, port, "bounced_soft"),
                        sent_id(job),
                    )
                    .await;
                    Next::Done
                }
                Verdict::Throttle => {
                    release(shared, job, Some(attempt(&reply, port, "throttled"))).await;
                    shared.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    let backoff = shared.pacer.throttle();
                    shared.event(
                        &job.row.email,
                        "throttled",
                        format!(
                            "{}; slowing down for {} s",
                            reply.describe(),
                            backoff.as_secs()
                        ),
                    );
                    if retries + 1 >= RETRIES_IN_RUN {
                        shared.left.fetch_add(1, Ordering::Relaxed);
                        Next::Done
                    } else {
                        Next::Retry
                    }
                }
                Verdict::Pause => {
                    release(shared, job, Some(attempt(&reply, port, "aborted"))).await;
                    shared.stop(End::Paused(reply.describe()));
                    Next::Done
                }
                Verdict::RelayDenied if shared.accepted_any.load(Ordering::Relaxed) => {
                    release(shared, job, Some(attempt(&reply, port, "aborted"))).await;
                    shared.stop(End::Paused(reply.describe()));
                    Next::Done
                }
                Verdict::Abort | Verdict::RelayDenied => {
                    release(shared, job, Some(attempt(&reply, port, "aborted"))).await;
                    shared.stop(End::Aborted(reply.describe()));
                    Next::Done
                }
            }
        }
    }
}
