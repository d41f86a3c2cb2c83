//! The single ledger writer: a `std::thread` that owns the write `Connection` and applies
//! operations sent over a bounded tokio channel, batching whatever has queued up (at most
//! [`MAX_BATCH`] operations, or about [`MAX_BATCH_WAIT`]) into one transaction. Beside it, a
//! checkpointer thread copies the WAL back into the database while the writer goes on.
//!
//! Acknowledgements (claims, syncs) are sent only after the batch that holds them has committed,
//! so a worker that got `Claimed` back knows the `sending` mark is on disk before it starts the
//! SMTP transaction. Outcomes are fire-and-forget: if the process dies before their batch
//! commits, the row is still `sending` and recovery makes it `unknown`, never pending again.
//! This module must not do I/O other than SQLite, nor hold the connection across an `.await`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::ledger::{self, Claim, ClaimResult, Outcome, Release};
use super::{Error, Ledger};
use crate::model::{RelayId, RunId, RunOutcome};

/// Most operations committed in one transaction.
pub const MAX_BATCH: usize = 256;
/// How long a batch keeps gathering operations after its first one when no acknowledgement is
/// waiting on it (outcome records only).
pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(3);

/// The writer connection's page cache, in KiB (as `PRAGMA cache_size` takes it, negative).
const WRITER_CACHE_KIB: i64 = -2_000;

/// How often a batch is tried again after the ledger was busy (another process writing, e.g.
/// `mailroom suppress add` or `bounces import`), on top of SQLite's own busy timeout.
const BUSY_RETRIES: u32 = 8;
/// First pause before trying a busy batch again; doubled each time, capped at 2 s.
const BUSY_BACKOFF: Duration = Duration::from_millis(25);

enum Op {
    ClaimMany(
        Vec<Claim>,
        oneshot::Sender<Result<Vec<ClaimResult>, String>>,
    ),
    Record(Box<Outcome>),
    Release(Release),
    /// The port a run ended up using (after fallback).
    RunPort(RunId, u16),
    /// Closes a run with its outcome.
    FinishRun(RunId, RunOutcome),
    /// Resolved providers for the cache (background MX lookups during the run).
    Providers(Vec<super::ProviderRecord>),
    /// A seed copy sent during the run (see `store::test_sends`).
    TestSend(Box<super::TestSend>),
    /// The ids of a run's `[[relay]]` names, created as needed; answered after the commit.
    Relays(Vec<String>, oneshot::Sender<Result<Vec<RelayId>, String>>),
    /// A relay taken out of the run for its cool-off.
    Cooloff(Box<super::Cooloff>),
    Sync(oneshot::Sender<Result<(), String>>),
}

impl Op {
    fn wants_ack(&self) -> bool {
        matches!(self, Op::ClaimMany(..) | Op::Relays(..) | Op::Sync(_))
    }
}

/// Handle to the writer thread; clone it freely (every clone feeds the same thread).
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    path: PathBuf,
    /// Why the thread stopped writing, once it has: outcomes are queued without waiting for
    /// their commit, so this is how a worker learns, before its next transaction, that nothing
    /// it learns from now on could be recorded.
    failure: Arc<OnceLock<String>>,
    /// The writer thread, unparked after sending an operation someone waits on.
    thread: Thread,
}

/// Joins the writer thread once every [`Writer`] clone is dropped.
pub struct WriterThread {
    handle: JoinHandle<Result<(), String>>,
    path: PathBuf,
}

impl Writer {
    /// Starts the writer thread, which owns `ledger` until every `Writer` is dropped.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn(ledger: Ledger) -> Result<(Writer, WriterThread), Error> {
        // With one small commit per claim block, the default (a checkpoint, the only fsync,
        // every 1000 pages) would checkpoint every few hundred messages.
        ledger.defer_checkpoints();
        let checkpointer = Checkpointer::spawn(&ledger.path);
        let Ledger { conn, path } = ledger;
        // Room for the multi-row statements of every size (`ledger::record_many` and
        // `ledger::claim_many`: seven sizes of three kinds) beside the rest, so that none is
        // prepared again mid-send.
        conn.set_prepared_statement_cache_capacity(64);
        // SQLite's default page cache (2 MB) rather than the 32 MB the import wanted. A commit
        // after a b-tree page split walks every cached page (balance_nonroot renumbers pages
        // through the locking page's number, and the cache then trims all it holds past the
        // database's end): at 20,000 messages that walk was 1-20% of this thread (four
        // profiles). The writer touches rows in id order and appends; a small cache misses
        // little. Failure costs only speed.
        let _ = conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB);
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                let mut conn = conn;
                let result = run(&mut conn, rx, &failed, checkpointer.as_ref());
                // Before the writer's connection closes: the last connection to close copies
                // what is left of the WAL into the database, and that must be this one.
                if let Some(c) = checkpointer {
                    c.stop();
                }
                drop(conn);
                result
            })
            .map_err(|source| Error::Thread {
                path: path.clone(),
                source,
            })?;
        Ok((
            Writer {
                tx,
                path: path.clone(),
                failure,
                thread: handle.thread().clone(),
            },
            WriterThread { handle, path },
        ))
    }

    fn gone(&self) -> Error {
        Error::Writer {
            path: self.path.clone(),
            reason: "the ledger writer stopped".into(),
        }
    }

    fn failed(&self, reason: String) -> Error {
        Error::Writer {
            path: self.path.clone(),
            reason,
        }
    }

    /// Fails once the writer has failed to commit a batch (cheap: no round trip to the thread).
    ///
    /// # Errors
    /// The reason the writer stopped writing.
    pub fn check(&self) -> Result<(), Error> {
        match self.failure.get() {
            Some(reason) => Err(self.failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Claims a row; returns once the claim is committed.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub async fn claim(&self, claim: Claim) -> Result<ClaimResult, Error> {
        let results = self.claim_many(vec![claim]).await?;
        results
            .into_iter()
            .next()
            .ok_or_else(|| self.failed("the ledger writer answered no claim".into()))
    }

    /// Claims several rows in one commit; returns once it is committed, with one result per
    /// claim, in order.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub async fn claim_many(&self, claims: Vec<Claim>) -> Result<Vec<ClaimResult>, Error> {
        let (ack, wait) = oneshot::channel();
        self.tx
            .send(Op::ClaimMany(claims, ack))
            .await
            .map_err(|_| self.gone())?;
        self.thread.unpark();
        wait.await
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }

    /// Queues a charged outcome (committed with the next batch).
    ///
    /// # Errors
    /// When the writer thread has stopped or failed.
    pub async fn record(&self, outcome: Outcome) -> Result<(), Error> {
        self.check()?;
        self.tx
            .send(Op::Record(Box::new(outcome)))
            .await
            .map_err(|_| self.gone())
    }

    /// Queues the record of a seed copy (fire-and-forget, like an outcome).
    ///
    /// # Errors
    /// When the writer thread has stopped or failed.
    pub async fn record_test_send(&self, t: super::TestSend) -> Result<(), Error> {
        self.check()?;
        self.tx
            .send(Op::TestSend(Box::new(t)))
            .await
            .map_err(|_| self.gone())
    }

    /// Queues the return of a claim, uncharged.
    ///
    /// # Errors
    /// When the writer thread has stopped.
    pub async fn release(&self, release: Release) -> Result<(), Error> {
        self.check()?;
        self.tx
            .send(Op::Release(release))
            .await
            .map_err(|_| self.gone())
    }

    /// Queues the port a run actually used (after fallback).
    ///
    /// # Errors
    /// When the writer thread has stopped.
    pub async fn set_run_port(&self, run_id: RunId, port: u16) -> Result<(), Error> {
        self.tx
            .send(Op::RunPort(run_id, port))
            .await
            .map_err(|_| self.gone())
    }

    /// Queues the end of a run with its outcome (`finished`, `aborted`, ...).
    ///
    /// # Errors
    /// When the writer thread has stopped.
    pub async fn finish_run(&self, run_id: RunId, outcome: RunOutcome) -> Result<(), Error> {
        self.tx
            .send(Op::FinishRun(run_id, outcome))
            .await
            .map_err(|_| self.gone())
    }

    /// Queues resolved providers for the ledger's cache (committed with the next batch).
    ///
    /// # Errors
    /// When the writer thread has stopped or failed.
    pub async fn record_providers(&self, records: Vec<super::ProviderRecord>) -> Result<(), Error> {
        self.check()?;
        self.tx
            .send(Op::Providers(records))
            .await
            .map_err(|_| self.gone())
    }

    /// The ledger ids of a run's relays, by name (rows created as needed); returns once they
    /// are committed.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub async fn relays(&self, names: Vec<String>) -> Result<Vec<RelayId>, Error> {
        let (ack, wait) = oneshot::channel();
        self.tx
            .send(Op::Relays(names, ack))
            .await
            .map_err(|_| self.gone())?;
        self.thread.unpark();
        wait.await
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }

    /// Queues a relay's cool-off (committed with the next batch).
    ///
    /// # Errors
    /// When the writer thread has stopped or failed.
    pub async fn record_cooloff(&self, cooloff: super::Cooloff) -> Result<(), Error> {
        self.check()?;
        self.tx
            .send(Op::Cooloff(Box::new(cooloff)))
            .await
            .map_err(|_| self.gone())
    }

    /// Waits until everything queued before it is committed, and reports any earlier failure.
    ///
    /// # Errors
    /// When any earlier batch failed to commit.
    pub async fn sync(&self) -> Result<(), Error> {
        let (ack, wait) = oneshot::channel();
        self.tx.send(Op::Sync(ack)).await.map_err(|_| self.gone())?;
        self.thread.unpark();
        wait.await
            .map_err(|_| self.gone())?
            .map_err(|e| self.failed(e))
    }
}

impl WriterThread {
    /// Waits for the thread to commit what is left and stop. Call after dropping every `Writer`
    /// (blocking: from a blocking context or after the async work is done).
    ///
    /// # Errors
    /// When a batch failed to commit or the thread panicked.
    pub fn join(self) -> Result<(), Error> {
        match self.handle.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::Writer {
                path: self.path,
                reason,
            }),
            Err(_) => Err(Error::Writer {
                path: self.path,
                reason: "the ledger writer panicked".into(),
            }),
        }
    }
}

fn run(
    conn: &mut Connection,
    mut rx: mpsc::Receiver<Op>,
    shared_failure: &OnceLock<String>,
    checkpointer: Option<&Checkpointer>,
) -> Result<(), String> {
    // Once a batch fails, every later operation is refused: the caller must not believe a claim
    // or an outcome was stored when it was not.
    let mut failure: Option<String> = None;
    let mut batch: Vec<Op> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let deadline = Instant::now() + MAX_BATCH_WAIT;
        let mut urgent = first.wants_ack();
        batch.push(first);
        // Gather more: take whatever is queued; when nobody waits on an ack, linger (up to the
        // deadline) so that outcomes share one commit. Lingering parks the thread: senders of
        // outcomes do not wake it (thousands of wake-ups a second otherwise), senders of
        // acknowledged operations unpark it, so a claim is committed at once.
        loop {
            let mut closed = false;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => {
                        urgent |= op.wants_ack();
                        batch.push(op);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            let now = Instant::now();
            if urgent || closed || batch.len() >= MAX_BATCH || now >= deadline {
                break;
            }
            // May return early (unpark, or spuriously): the loop looks again either way.
            std::thread::park_timeout(deadline - now);
        }
        if failure.is_none()
            && let Err(e) = apply_patiently(conn, &mut batch)
        {
            let reason = batch_failure(&e);
            let _ = shared_failure.set(reason.clone());
            failure = Some(reason);
        }
        if let Some(c) = checkpointer {
            c.committed();
        }
        for op in batch.drain(..) {
            match op {
                Op::ClaimMany(_, ack) => {
                    let _ = ack.send(Err(failure.clone().unwrap_or_default()));
                }
                Op::Relays(_, ack) => {
                    let _ = ack.send(Err(failure.clone().unwrap_or_default()));
                }
                Op::Sync(ack) => {
                    let _ = ack.send(match &failure {
                        Some(f) => Err(f.clone()),
                        None => Ok(()),
                    });
                }
                Op::Record(_)
                | Op::Release(_)
                | Op::RunPort(..)
                | Op::FinishRun(..)
                | Op::Providers(_)
                | Op::TestSend(_)
                | Op::Cooloff(_) => {}
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// How often, while the writer commits, the checkpointer copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Copies the WAL back into the database on a thread and connection of its own while the
/// writer goes on (a passive checkpoint never blocks a writer). A checkpoint is where WAL +
/// synchronous=NORMAL flushes to disk; done only when the writer's connection closes, a
/// 20,000-message send ended with about 0.2 s of waiting for 40 MB of WAL to reach the disk.
/// Done along the way, that flush overlaps sending, and the writer's own checkpoints (every
/// [`Ledger::defer_checkpoints`] pages, and at close) find little left to copy and flush.
struct Checkpointer {
    tx: std::sync::mpsc::SyncSender<()>,
    last: std::cell::Cell<Instant>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    /// `None` when the ledger cannot be opened a second time or the thread cannot start: the
    /// writer then checkpoints alone, as SQLite does by default.
    fn spawn(path: &std::path::Path) -> Option<Checkpointer> {
        // The writer's ledger exists: never create a file here.
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // A failed or busy checkpoint only leaves more for the next one.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok()?;
        Some(Checkpointer {
            tx,
            last: std::cell::Cell::new(Instant::now()),
            handle,
        })
    }

    /// After a commit: asks for a checkpoint when the last one was asked for long enough ago.
    fn committed(&self) {
        if self.last.get().elapsed() >= CHECKPOINT_EVERY {
            self.last.set(Instant::now());
            // Full: one is running or asked for already.
            let _ = self.tx.try_send(());
        }
    }

    fn stop(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

/// True for the errors that mean "someone else holds the ledger right now", which pass.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Why a batch could not be committed, as the run reports it after "ledger PATH: ". A ledger
/// SQLite finds corrupt mid-send gets [`Error::Corrupt`]'s words and fix, as at open.
fn batch_failure(e: &rusqlite::Error) -> String {
    if super::is_corrupt(e) {
        format!("it {}", super::DAMAGED)
    } else {
        format!("cannot write the ledger: {e}")
    }
}

/// [`apply`], tried again with a growing pause while the ledger is busy: another writer is not
/// a reason to fail a run (and with it every later claim and outcome). The transaction rolled
/// back, so applying the whole batch again is exact.
fn apply_patiently(conn: &mut Connection, batch: &mut Vec<Op>) -> rusqlite::Result<()> {
    let mut pause = BUSY_BACKOFF;
    let mut tries = 0;
    loop {
        match apply(conn, batch) {
            Err(e) if is_busy(&e) && tries < BUSY_RETRIES => {
                tries += 1;
                tracing::debug!("ledger busy ({e}); trying the batch again in {pause:?}");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Applies a batch in one transaction. Claim acks are answered here, after the commit; on
/// success they are replaced by a no-op marker so the caller's error loop skips them.
fn apply(conn: &mut Connection, batch: &mut Vec<Op>) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock at BEGIN, where the busy timeout applies. A DEFERRED
    // transaction that reads first (claim: SELECT, then UPDATE) gets SQLITE_BUSY at once,
    // without waiting, when another connection committed in between (WAL snapshot upgrade).
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut claim_results = Vec::new();
    let mut relay_ids = Vec::new();
    // Asked at the first claim of the batch; nothing in a batch adds a suppression.
    let mut suppressions: Option<bool> = None;
    // Outcomes in a row are applied together (`ledger::record_many`), in their place in the
    // batch: a claim queued after an outcome may be for the same recipient's next attempt.
    let mut outcomes: Vec<&ledger::Outcome> = Vec::new();
    for op in batch.iter() {
        if let Op::Record(outcome) = op {
            outcomes.push(outcome);
            continue;
        }
        ledger::record_many(&tx, &outcomes)?;
        outcomes.clear();
        match op {
            Op::ClaimMany(claims, _) => claim_results.push({
                let any = match suppressions {
                    Some(any) => any,
                    None => *suppressions.insert(ledger::any_suppressions(&tx)?),
                };
                ledger::claim_many(&tx, claims, any)?
            }),
            // Gathered above.
            Op::Record(_) => {}
            Op::Release(release) => ledger::release(&tx, release)?,
            Op::RunPort(run, port) => ledger::set_run_port(&tx, *run, *port)?,
            Op::FinishRun(run, outcome) => ledger::finish_run(&tx, *run, *outcome)?,
            Op::Providers(records) => super::providers::upsert(&tx, records)?,
            Op::TestSend(t) => super::test_sends::insert(&tx, t)?,
            Op::Relays(names, _) => relay_ids.push(super::relays::ensure(&tx, names)?),
            Op::Cooloff(c) => super::relays::insert_cooloff(&tx, c)?,
            Op::Sync(_) => {}
        }
    }
    ledger::record_many(&tx, &outcomes)?;
    drop(outcomes);
    tx.commit()?;
    // Committed: answer every ack now and drop the ops so the failure loop sees nothing.
    let mut results = claim_results.into_iter();
    let mut relay_ids = relay_ids.into_iter();
    for op in batch.drain(..) {
        match op {
            Op::Relays(_, ack) => {
                if let Some(ids) = relay_ids.next() {
                    let _ = ack.send(Ok(ids));
                }
            }
            Op::ClaimMany(_, ack) => {
                if let Some(result) = results.next() {
                    let _ = ack.send(Ok(result));
                }
            }
            Op::Sync(ack) => {
                let _ = ack.send(Ok(()));
            }
            Op::Record(_)
            | Op::Release(_)
            | Op::RunPort(..)
            | Op::FinishRun(..)
            | Op::Providers(_)
            | Op::TestSend(_)
            | Op::Cooloff(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{AttemptOutcome, DeliveryState};
    use crate::store::ledger::{AttemptRecord, NewRecipient};

    #[test]
    fn a_batch_that_meets_a_corrupt_ledger_says_so_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some("database disk image is malformed".into()),
        );
        let reason = batch_failure(&corrupt);
        assert!(
            reason.starts_with("it is damaged: SQLite finds part of it corrupt"),
            "{reason}"
        );
        assert!(reason.contains("latest backup"), "{reason}");
        let writer_error = Error::Writer {
            path: path.clone(),
            reason,
        };
        assert!(
            writer_error
                .to_string()
                .starts_with(&format!("ledger {}: it is damaged", path.display())),
            "{writer_error}"
        );
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("database or disk is full".into()),
        );
        assert_eq!(
            batch_failure(&full),
            "cannot write the ledger: database or disk is full"
        );
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database_while_the_writer_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let ledger = crate::store::open(&path).unwrap();
        // The schema in the database file, then nothing copied back but by the checkpointer.
        ledger
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        ledger.defer_checkpoints();
        let checkpointer = Checkpointer::spawn(&path).unwrap();
        let c = ledger.ensure_campaign("in-the-wal").unwrap();
        // `immutable=1` reads the database file alone, never the WAL.
        let in_file = || {
            let uri = format!("file:{}?immutable=1", path.display());
            let flags =
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            let conn = Connection::open_with_flags(&uri, flags).unwrap();
            conn.query_row("SELECT count(*) FROM campaigns WHERE id = ?1", [c], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        };
        assert_eq!(in_file(), 0, "the campaign row is still only in the WAL");
        checkpointer
            .last
            .set(Instant::now().checked_sub(CHECKPOINT_EVERY).unwrap());
        checkpointer.committed();
        // Stopping waits for the checkpoint that was asked for.
        checkpointer.stop();
        assert_eq!(in_file(), 1);
        // The writer's connection is still open: the WAL was not removed under it.
        assert!(dir.path().join("w.db-wal").exists());
        drop(ledger);
    }

    /// A transaction's end for `id`: `state`, with an attempt at the message step.
    fn ended(
        id: crate::model::RecipientId,
        run: crate::model::RunId,
        state: DeliveryState,
        outcome: AttemptOutcome,
    ) -> Outcome {
        Outcome {
            recipient_id: id,
            run_id: run,
            state,
            retry_at: None,
            attempt: AttemptRecord {
                at: 1,
                port: Some(25),
                step: "message",
                code: Some(250),
                enhanced: Some("2.0.0".into()),
                reply: Some("ok".into()),
                outcome,
                diagnosis: None,
                relay: None,
            },
        }
    }

    /// A new ledger at `path` with a campaign of `n` contacts.
    fn with_contacts(path: &std::path::Path, n: u64) -> (Ledger, crate::model::CampaignId) {
        let mut ledger = crate::store::open(path).unwrap();
        let c = ledger.ensure_campaign("c").unwrap();
        let contacts = (0..n).map(|i| {
            Ok::<_, ()>(NewRecipient {
                email: format!("u{i}@x.test"),
                name: None,
                line: i + 2,
                token: format!("t{i}"),
                fields: "{}".into(),
            })
        });
        ledger.import(c, contacts).unwrap();
        (ledger, c)
    }

    #[test]
    fn outcomes_and_claims_of_one_batch_apply_in_the_order_they_came() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, c) = with_contacts(&dir.path().join("o.db"), 3);
        let run = ledger.start_run(c, "h", "none").unwrap();
        let claim = |id, expected_state, expected_attempts| Claim {
            recipient_id: crate::model::RecipientId(id),
            run_id: run,
            expected_state,
            expected_attempts,
        };
        let outcome = |id, state, outcome| {
            Op::Record(Box::new(ended(
                crate::model::RecipientId(id),
                run,
                state,
                outcome,
            )))
        };
        let (first, first_answer) = oneshot::channel();
        let (retry, retry_answer) = oneshot::channel();
        // Recipient 1 is deferred, claimed again and accepted, all in one batch; recipient 2's
        // outcome sits between two claims. Grouping outcomes across a claim would record 1's
        // second outcome before its second claim, and drop it.
        let mut batch = vec![
            Op::ClaimMany(
                vec![
                    claim(1, DeliveryState::Pending, 0),
                    claim(2, DeliveryState::Pending, 0),
                ],
                first,
            ),
            outcome(1, DeliveryState::Deferred, AttemptOutcome::Deferred),
            outcome(2, DeliveryState::Accepted, AttemptOutcome::Accepted),
            Op::ClaimMany(vec![claim(1, DeliveryState::Deferred, 1)], retry),
            outcome(1, DeliveryState::Accepted, AttemptOutcome::Accepted),
        ];
        apply(&mut ledger.conn, &mut batch).unwrap();
        assert!(batch.is_empty());
        let claimed = vec![ClaimResult::Claimed, ClaimResult::Claimed];
        assert_eq!(first_answer.blocking_recv().unwrap().unwrap(), claimed);
        let answer = retry_answer.blocking_recv().unwrap().unwrap();
        assert_eq!(answer, [ClaimResult::Claimed]);
        let rows: Vec<(String, i64)> = ledger
            .conn
            .prepare("SELECT state, attempts FROM recipients ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expected = [("accepted", 2), ("accepted", 1), ("pending", 0)];
        let expected: Vec<(String, i64)> = expected
            .iter()
            .map(|(s, n)| ((*s).to_owned(), *n))
            .collect();
        assert_eq!(rows, expected);
        let outcomes: Vec<String> = ledger
            .conn
            .prepare("SELECT recipient_id || ':' || outcome FROM attempts ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(outcomes, ["1:deferred", "2:accepted", "1:accepted"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_are_committed_before_ack_and_never_doubled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (ledger, c) = with_contacts(&path, 50);
        let run = ledger.start_run(c, "h", "none").unwrap();
        let due = crate::store::Reader::open(&path)
            .unwrap()
            .due_rows(c, 0, ledger::now_ms(), false, 100)
            .unwrap();
        let (writer, thread) = Writer::spawn(ledger).unwrap();
        let reader = Connection::open(&path).unwrap();
        // Every row claimed twice, concurrently: exactly one claim per row may win.
        let mut tasks = Vec::new();
        for row in due.iter().chain(due.iter()) {
            let w = writer.clone();
            let claim = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: 0,
            };
            tasks.push(tokio::spawn(async move {
                (claim.recipient_id, w.claim(claim).await.unwrap())
            }));
        }
        let mut won = 0;
        for t in tasks {
            let (id, result) = t.await.unwrap();
            if result == ClaimResult::Claimed {
                won += 1;
                // Acknowledged means committed: a separate connection already sees it.
                let state: String = reader
                    .query_row("SELECT state FROM recipients WHERE id = ?1", [id], |r| {
                        r.get(0)
                    })
                    .unwrap();
                assert_eq!(state, "sending");
                writer
                    .record(ended(
                        id,
                        run,
                        DeliveryState::Accepted,
                        AttemptOutcome::Accepted,
                    ))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(won, 50);
        writer.sync().await.unwrap();
        drop(writer);
        thread.join().unwrap();
        let accepted: i64 = reader
            .query_row(
                "SELECT count(*) FROM recipients WHERE state = 'accepted' AND relay_accepted = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(accepted, 50);
    }
}
