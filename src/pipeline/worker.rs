//! A worker of a run: owns one SMTP session, takes claimed rows from the queue, renders each,
//! waits for the rate limiters, notes in the in-flight journal that the transaction starts, runs
//! it, and carries out what `decide` says about the outcome (record or give back; retry, leave,
//! pause, abort). Every row it takes ends charged or given back, never dropped.
//!
//! With several relays (`[[relay]]`) it keeps one session per relay, asks the pool which relay
//! each message goes through, and gives a message that a relay failed back uncharged, to go
//! through another; the relay cools off (see `relays`).
//!
//! When the relay offers PIPELINING and the next claimed row is already queued and may go at
//! once, a worker renders it while its current message goes out and writes its MAIL, RCPT and
//! DATA behind that message's final "." (RFC 2920): a stream of messages costs one round trip
//! each instead of two. The next row is then carried to the worker's next turn with what became
//! of its opening; if the run stops first, the session waiting in DATA for it is cut (so the
//! relay discards nothing it could deliver) and the row is given back.
//!
//! It must not read the ledger or interpret replies: `decide` does the latter, and what it
//! learns goes to the ledger writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lettre::Address;
use tokio::sync::{Mutex, mpsc};

use super::decide::{self, Charge, Context, Decision, ForRun, Next};
use super::relays::{CooledOff, Pick};
use super::{End, Render, Shared, Stop, pace};
use crate::clock::now_ms;
use crate::model::{AttemptOutcome, DeliveryState, RecipientId, RelayId};
use crate::store::{AttemptRecord, Claim, ClaimResult, Cooloff, DueRow, Outcome, Release};
use crate::transport::{
    ConnectFailure, Envelope, Opened, Reply, Session, Step, TxOutcome, Verdict, dsn,
};

/// Consecutive failed reconnects after which the run pauses.
const MAX_RECONNECT_FAILURES: u64 = 5;

/// One message ready for its transaction.
struct Job {
    row: DueRow,
    from: Address,
    to: Address,
    bytes: Vec<u8>,
}

/// A row's job, or the row back with why its message cannot be built.
type Built = Result<Job, Box<(DueRow, String)>>;

/// A row taken from the queue ahead of its turn, while the message before it went out on the
/// same session (see [`finish`]).
struct Carried {
    job: Built,
    /// The relay whose session opened its transaction, and what became of it; `None` when it
    /// was not opened (it then goes the normal way).
    opened: Option<Ahead>,
}

/// A transaction opened behind the previous message's final ".".
struct Ahead {
    relay: usize,
    port: u16,
    opened: Opened,
}

/// The queue the workers share.
type Queue = Arc<Mutex<mpsc::Receiver<DueRow>>>;

/// Takes rows until the queue closes; `first` is the dispatcher's first session (and the
/// index of its relay), if any.
pub(super) async fn run(shared: Arc<Shared>, rx: Queue, first: Option<(usize, Session)>) {
    // One session per relay (one with `[smtp]`).
    let mut sessions: Vec<Option<Session>> = (0..shared.relays.len()).map(|_| None).collect();
    if let Some((i, session)) = first
        && let Some(slot) = sessions.get_mut(i)
    {
        *slot = Some(session);
    }
    let mut carried: Option<Carried> = None;
    loop {
        let (job, opened) = match carried.take() {
            Some(c) => (c.job, c.opened),
            None => {
                let row = { rx.lock().await.recv().await };
                let Some(row) = row else { break };
                // Every queued row is claimed: it is sent, charged, or given back, never
                // dropped.
                if shared.halt.is_triggered() {
                    give_back(&shared, row.id, None).await;
                    shared.finish_job();
                    continue;
                }
                (build_job(shared.render.as_ref(), row), None)
            }
        };
        match job {
            Err(failed) if shared.halt.is_triggered() => {
                give_back(&shared, failed.0.id, None).await;
            }
            Ok(job) => carried = process(&shared, &mut sessions, &job, opened, &rx).await,
            // Only this row's message cannot be built (the import checks every row, so this
            // is rare): charge it alone, with the reason, and let the run go on.
            Err(failed) => {
                let (row, reason) = *failed;
                unrenderable(&shared, &row, reason).await;
            }
        }
        shared.finish_job();
    }
    for session in sessions.into_iter().flatten() {
        session.quit().await;
    }
}

/// The job for `row`, or the row back with why its message cannot be built.
fn build_job(render: &dyn Render, row: DueRow) -> Built {
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
            bytes: out.bytes,
        }),
        Err(reason) => Err(Box::new((row, reason))),
    }
}

/// Marks a claimed row whose message cannot be built `failed`, with an attempt at step `render`
/// saying why.
async fn unrenderable(shared: &Shared, row: &DueRow, reason: String) {
    let attempt = AttemptRecord {
        at: now_ms(),
        port: None,
        step: "render",
        code: None,
        enhanced: None,
        reply: Some(reason),
        outcome: AttemptOutcome::Failed,
        diagnosis: None,
        relay: None,
    };
    record(shared, row, DeliveryState::Failed, None, attempt).await;
}

/// Sends one claimed job, retrying on a fresh connection (or another relay) or after a
/// back-off where that is safe. Whatever happens, the claim ends charged (an outcome) or given
/// back (uncharged). `ahead` is set when the job's transaction was opened behind the previous
/// message. Returns the next job when it was taken from the queue during this one (see
/// [`finish`]), opened or not.
async fn process(
    shared: &Shared,
    sessions: &mut [Option<Session>],
    job: &Job,
    mut ahead: Option<Ahead>,
    rx: &Queue,
) -> Option<Carried> {
    // The dispatcher claimed the row; a retry gives the claim back first and claims again.
    let mut claimed = true;
    let mut retries = 0;
    let mut carried: Option<Carried> = None;
    loop {
        // A transaction that already ended (refused before its message) is in hand: it is
        // settled even when the run stops.
        let ended = matches!(&ahead, Some(a) if matches!(a.opened, Opened::Ended(_)));
        if shared.halt.is_triggered() && !ended {
            if let Some(a) = ahead.take() {
                abandon(shared, sessions, &a);
            }
            unsent(shared, job, claimed).await;
            return carried;
        }
        let (relay, port, outcome) = match ahead.take() {
            Some(Ahead {
                relay,
                port,
                opened: Opened::Ended(outcome),
            }) => (relay, port, outcome),
            Some(Ahead {
                relay,
                port,
                opened: Opened::Ready,
            }) => {
                // What changed since it was opened: a slow-down or the relay's cool-off (from
                // the message before it) makes it wait like any other, and a ledger that stopped
                // taking outcomes stops it before its message goes out.
                if !shared.pacer.is_free()
                    || shared.relays.is_cooling(relay)
                    || shared.writer.check().is_err()
                {
                    cut(shared, sessions, relay);
                    continue;
                }
                let Some(live) = sessions[relay].as_mut() else {
                    // An opened transaction keeps its session; were it gone, send anew.
                    shared.relays.refund(relay);
                    continue;
                };
                // Its journal line goes before its message, the first byte that could deliver
                // it: a crash while it waited behind the previous message gives it back.
                if !journal_started(shared, job) {
                    cut(shared, sessions, relay);
                    unsent(shared, job, claimed).await;
                    return carried;
                }
                let outcome = finish(shared, live, relay, job, rx, &mut carried).await;
                (relay, port, outcome)
            }
            // Never carried: `finish` gives a job whose opening was not sent no `Ahead`.
            Some(Ahead {
                opened: Opened::NotSent,
                ..
            }) => continue,
            None => match prepare(shared, sessions, job, &mut claimed).await {
                Prepared::Go(relay) => {
                    let Some(live) = sessions[relay].as_mut() else {
                        shared.relays.refund(relay);
                        continue;
                    };
                    let port = live.port();
                    let request = dsn_request(shared, job);
                    let envelope = Envelope {
                        from: &job.from,
                        to: &job.to,
                        dsn: Some(&request),
                    };
                    let outcome = match live.open(&envelope, &job.bytes).await {
                        Some(ended) => ended,
                        None => finish(shared, live, relay, job, rx, &mut carried).await,
                    };
                    (relay, port, outcome)
                }
                Prepared::Again => continue,
                Prepared::Done => return carried,
            },
        };
        match settle(shared, job, relay, port, &outcome, retries).await {
            Next::Done => return carried,
            Next::LeaveForLater => {
                shared.left.fetch_add(1, Ordering::Relaxed);
                return carried;
            }
            Next::Retry => {
                // Every retry gave the claim back. The job goes again before the one opened
                // behind it, whose session waits in DATA: that session is dropped (the server
                // discards a message cut off mid-DATA) and the next job goes anew.
                claimed = false;
                retries += 1;
                if let Some(c) = carried.as_mut()
                    && let Some(a) = c.opened.take_if(|a| matches!(a.opened, Opened::Ready))
                {
                    abandon(shared, sessions, &a);
                }
            }
        }
    }
}

/// What [`prepare`] says about the job's next transaction.
enum Prepared {
    /// Go through relay `i`, whose session is connected; the transaction may start.
    Go(usize),
    /// Nothing was sent; go round again (a failed connection, a claim to renew).
    Again,
    /// The job is settled without a transaction (given back, failed, or the run stopped).
    Done,
}

/// Everything before a transaction's first byte: the rate limits, the relay, its session,
/// the claim, the size check, and the in-flight journal line.
async fn prepare(
    shared: &Shared,
    sessions: &mut [Option<Session>],
    job: &Job,
    claimed: &mut bool,
) -> Prepared {
    tokio::select! {
        biased;
        () = shared.halt.wait() => {
            unsent(shared, job, *claimed).await;
            return Prepared::Done;
        }
        () = async {
            shared.limits.until_ready(&job.row.domain).await;
            shared.pacer.wait().await;
        } => {}
    }
    let Some(relay) = pick(shared) else {
        unsent(shared, job, *claimed).await;
        return Prepared::Done;
    };
    tokio::select! {
        biased;
        () = shared.halt.wait() => {
            shared.relays.refund(relay);
            unsent(shared, job, *claimed).await;
            return Prepared::Done;
        }
        () = shared.relays.until_ready(relay) => {}
    }
    let session = &mut sessions[relay];
    if !session.as_ref().is_some_and(Session::is_usable) {
        if let Some(old) = session.take() {
            old.quit().await;
        }
        match shared.relays.transport(relay).connect().await {
            Ok(s) => {
                shared.reconnect_failures.store(0, Ordering::Relaxed);
                *session = Some(s);
            }
            Err(failure) => {
                shared.relays.refund(relay);
                if shared.relays.is_failover() {
                    // Not this recipient's problem: the relay cools off, the message goes to
                    // another one.
                    let cooled = shared.relays.cool_off(relay, &failure.to_string());
                    record_cooloff(shared, cooled, &failure.to_string()).await;
                    return Prepared::Again;
                }
                if !reconnect_failed(shared, failure) {
                    unsent(shared, job, *claimed).await;
                    return Prepared::Done;
                }
                return Prepared::Again;
            }
        }
    }
    let Some(live) = session.as_ref() else {
        shared.relays.refund(relay);
        return Prepared::Again;
    };
    if !*claimed {
        match claim_again(shared, job).await {
            Some(true) => *claimed = true,
            Some(false) | None => {
                shared.relays.refund(relay);
                return Prepared::Done;
            }
        }
    }
    if shared.halt.is_triggered() {
        // Halted while waiting for the connection or the claim: give it back untouched.
        shared.relays.refund(relay);
        unsent(shared, job, *claimed).await;
        return Prepared::Done;
    }
    if let Some(mut why) = too_large(shared, live, job) {
        // Before MAIL: the relay would refuse it (552) after reading all of it, or cut the
        // connection; no relay is charged with it, and the recipient fails with the reason.
        shared.relays.refund(relay);
        why.relay = shared.relays.id(relay);
        record(shared, &job.row, DeliveryState::Failed, None, why).await;
        return Prepared::Done;
    }
    // Outcomes are queued without waiting for their commit: a ledger that stopped taking them
    // shows here, before another message goes out that could not be recorded.
    if let Err(e) = shared.writer.check() {
        shared.relays.refund(relay);
        shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
        return Prepared::Done;
    }
    if !journal_started(shared, job) {
        shared.relays.refund(relay);
        unsent(shared, job, *claimed).await;
        return Prepared::Done;
    }
    Prepared::Go(relay)
}

/// Writes the job's line to the in-flight journal: the last word before the first byte of its
/// transaction (from here on, a crash makes the row `unknown` rather than giving it back).
/// False, with the run stopped, when the journal cannot be written.
fn journal_started(shared: &Shared, job: &Job) -> bool {
    match shared.journal.started(shared.run_id, job.row.id) {
        Ok(()) => true,
        Err(e) => {
            shared.stop(End::Aborted(Stop::Journal(format!(
                "cannot write the in-flight journal {}: {e}; make sure the ledger's folder is \
                 writable and not full, then run `mailroom send` again",
                shared.journal.path().display()
            ))));
            false
        }
    }
}

/// ENVID and ORCPT are the ledger's own token and address: a DSN that echoes them names this
/// recipient for certain (used only when the relay offers DSN).
fn dsn_request<'a>(shared: &Shared, job: &'a Job) -> dsn::Request<'a> {
    dsn::Request {
        envid: &job.row.token,
        orcpt: &job.row.email,
        notify: shared.notify,
    }
}

/// Sends the job's message on `live` (which said 354 to it) and returns the reply to it.
///
/// When the next claimed row is already in the queue and may go at once (no rate limit or
/// slow-down makes it wait, the same relay's turn, room on the session), its message is
/// rendered now and its MAIL, RCPT and DATA go out in the same write as this message's final
/// "." (RFC 2920): one round trip a message instead of two. It is then `carried` to the worker's
/// next turn, with what became of its opening.
async fn finish(
    shared: &Shared,
    live: &mut Session,
    relay: usize,
    job: &Job,
    rx: &Queue,
    carried: &mut Option<Carried>,
) -> TxOutcome {
    let taken = if carried.is_none() {
        take_next(shared, live, relay, rx)
    } else {
        None
    };
    let next_job = match taken {
        None => return live.finish(&job.bytes, None).await.0,
        Some(Taken::Later(built)) => {
            *carried = Some(Carried {
                job: built,
                opened: None,
            });
            return live.finish(&job.bytes, None).await.0;
        }
        Some(Taken::Open(next_job)) => next_job,
    };
    let port = live.port();
    let request = dsn_request(shared, &next_job);
    let envelope = Envelope {
        from: &next_job.from,
        to: &next_job.to,
        dsn: Some(&request),
    };
    let (outcome, opened) = live
        .finish(&job.bytes, Some((&envelope, &next_job.bytes)))
        .await;
    let opened = match opened {
        Some(opened @ (Opened::Ready | Opened::Ended(_))) => Some(Ahead {
            relay,
            port,
            opened,
        }),
        Some(Opened::NotSent) | None => {
            shared.relays.refund(relay);
            None
        }
    };
    *carried = Some(Carried {
        job: Ok(next_job),
        opened,
    });
    outcome
}

/// A row [`take_next`] took from the queue.
enum Taken {
    /// Its transaction may open behind the current message: relay `relay` is picked for it and
    /// a cell of the shared rate limit taken.
    Open(Job),
    /// It goes the normal way, on the worker's next turn.
    Later(Built),
}

/// The next queued row, taken only when its transaction could be opened behind the current
/// message on `live`, rendered.
fn take_next(shared: &Shared, live: &Session, relay: usize, rx: &Queue) -> Option<Taken> {
    if !live.can_open_next()
        || shared.halt.is_triggered()
        || shared.writer.check().is_err()
        || !shared.pacer.is_free()
        || shared.relays.is_limited(relay)
    {
        return None;
    }
    // Another worker waiting for the queue holds its lock: the queue is empty then.
    let row = rx.try_lock().ok()?.try_recv().ok()?;
    let job = match build_job(shared.render.as_ref(), row) {
        Ok(job) => job,
        Err(failed) => return Some(Taken::Later(Err(failed))),
    };
    if too_large(shared, live, &job).is_some() || !shared.relays.pick_if(relay) {
        return Some(Taken::Later(Ok(job)));
    }
    if !shared.limits.try_now(&job.row.domain) {
        shared.relays.refund(relay);
        return Some(Taken::Later(Ok(job)));
    }
    Some(Taken::Open(job))
}

/// Drops the session of a transaction opened ahead that will not get its message: the server
/// waits in DATA, and only a cut connection ends that without a message.
/// The relay's daily-cap message goes back too: no message went through it.
fn abandon(shared: &Shared, sessions: &mut [Option<Session>], a: &Ahead) {
    if matches!(a.opened, Opened::Ready) {
        cut(shared, sessions, a.relay);
    }
}

/// Cuts relay `relay`'s session, which waits in DATA for a message that will not go out on it,
/// and gives the relay's daily-cap message back.
fn cut(shared: &Shared, sessions: &mut [Option<Session>], relay: usize) {
    sessions[relay] = None;
    shared.relays.refund(relay);
}

/// What the reply to a transaction means, carried out: relay bookkeeping, the ledger record
/// or give-back, the run-wide effect.
async fn settle(
    shared: &Shared,
    job: &Job,
    relay: usize,
    port: u16,
    outcome: &TxOutcome,
    retries: u32,
) -> Next {
    // Counted here, once it has an outcome: a transaction opened behind a message and then
    // abandoned (the run stopped first) never reached its message and is not one.
    shared.counters.transactions.fetch_add(1, Ordering::Relaxed);
    shared.relays.transaction(relay);
    let reply = outcome.reply().clone();
    let failover = shared.relays.is_failover();
    let throttled = reply.verdict() == Some(Verdict::Throttle);
    // With several relays "slow down" is one relay's business (see `relays`).
    let throttles_in_a_row = if failover {
        0
    } else if throttled {
        shared.throttles_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        if reply.code.is_some() {
            shared.throttles_in_a_row.store(0, Ordering::Relaxed);
        }
        0
    };
    // With several relays a relay that stops answering fails its transactions over to the
    // others (see `relays`): no run-wide count.
    let losses_in_a_row = match outcome {
        _ if failover => 0,
        // After an idle spell several workers meet a closed reused session at once.
        TxOutcome::Lost(r) if decide::is_stale_session(r, retries) => 0,
        TxOutcome::Lost(r) if r.step != Step::Message => {
            shared.losses_in_a_row.fetch_add(1, Ordering::Relaxed) + 1
        }
        _ => {
            if reply.code.is_some() {
                shared.losses_in_a_row.store(0, Ordering::Relaxed);
            }
            0
        }
    };
    let decision = decide::decide(
        outcome,
        Context {
            retries,
            accepted_any: shared.accepted_any.load(Ordering::Relaxed),
            throttles_in_a_row,
            failover,
            losses_in_a_row,
        },
    );
    if decision.relay_fault {
        let cooled = shared.relays.fault(relay, &reply.describe());
        record_cooloff(shared, cooled, &reply.describe()).await;
    } else if reply.code.is_some() {
        shared.relays.answered(relay);
    }
    if decision.charge == Charge::Record(DeliveryState::Accepted) {
        shared.relays.accepted(relay);
    }
    let sent = Sent {
        port: Some(port),
        relay: shared.relays.id(relay),
    };
    carry_out(shared, job, sent, &reply, decision).await
}

/// The relay for the next transaction, or `None` when the run stops: every relay is cooling
/// off (a pause) or has reached its daily cap.
fn pick(shared: &Shared) -> Option<usize> {
    match shared.relays.pick() {
        Pick::Relay(i) => Some(i),
        Pick::AllCooling => {
            shared.stop(End::Paused(Stop::Relays(shared.relays.failures())));
            None
        }
        Pick::AllCapped => {
            shared.stop(End::DailyCap);
            None
        }
    }
}

/// Records a relay's cool-off (when this worker started it) and says so in the log.
async fn record_cooloff(shared: &Shared, cooled: Option<CooledOff>, why: &str) {
    let Some(cooled) = cooled else { return };
    tracing::warn!(
        "relay {} is left out for {} s: {why}",
        cooled.name,
        cooled.cooloff.as_secs()
    );
    let Some(relay) = cooled.id else { return };
    let at = now_ms();
    let until = at.saturating_add(i64::try_from(cooled.cooloff.as_millis()).unwrap_or(i64::MAX));
    let c = Cooloff {
        relay,
        run_id: shared.run_id,
        at,
        until,
        reason: why.to_owned(),
    };
    if let Err(e) = shared.writer.record_cooloff(c).await {
        shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
    }
}

/// Where a transaction went: the port and the `[[relay]]`, for its attempt record.
#[derive(Debug, Clone, Copy)]
struct Sent {
    port: Option<u16>,
    relay: Option<RelayId>,
}

/// The failed attempt for a message larger than the relay's EHLO SIZE or `[smtp]
/// max_message_size`, if it is.
fn too_large(shared: &Shared, session: &Session, job: &Job) -> Option<AttemptRecord> {
    let size = job.bytes.len() as u64;
    let advertised = session.extensions().size.flatten();
    let (limit, source) = match (advertised, shared.max_message_size) {
        (Some(a), Some(m)) if m < a => (m, "[smtp] max_message_size"),
        (Some(a), _) => (a, "the SIZE the relay advertises"),
        (None, Some(m)) => (m, "[smtp] max_message_size"),
        (None, None) => return None,
    };
    (size > limit).then(|| AttemptRecord {
        at: now_ms(),
        port: Some(session.port()),
        step: "size",
        code: None,
        enhanced: None,
        reply: Some(format!(
            "not sent: the message is {size} bytes, more than {source} ({limit} bytes); make \
             the attachments smaller"
        )),
        outcome: AttemptOutcome::Failed,
        diagnosis: None,
        relay: None,
    })
}

/// A reconnect failed: abort or pause the run when that is what it means (false), or back off
/// and let the caller try again (true).
fn reconnect_failed(shared: &Shared, failure: ConnectFailure) -> bool {
    match failure {
        failure @ (ConnectFailure::Tls(_) | ConnectFailure::Auth(_)) => {
            shared.stop(End::Aborted(Stop::connect(failure)));
            false
        }
        ConnectFailure::Refused(r) if r.verdict() == Some(Verdict::Abort) => {
            shared.stop(End::Aborted(Stop::Refused(r)));
            false
        }
        failure => {
            let n = shared.reconnect_failures.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= MAX_RECONNECT_FAILURES {
                shared.stop(End::Paused(Stop::Reconnect(format!(
                    "{failure} ({n} reconnects in a row failed)"
                ))));
                return false;
            }
            let backoff = shared.pacer.throttle();
            tracing::warn!("{failure}; retrying in {} s", backoff.as_secs());
            true
        }
    }
}

/// Claims a job's row again after it was given back. `Some(true)`: claimed; `Some(false)`:
/// someone else has it or it is suppressed now (nothing to do); `None`: the run stopped.
async fn claim_again(shared: &Shared, job: &Job) -> Option<bool> {
    let claim = Claim {
        recipient_id: job.row.id,
        run_id: shared.run_id,
        expected_state: job.row.state,
        expected_attempts: job.row.attempts,
    };
    match shared.writer.claim(claim).await {
        Err(e) => {
            shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
            None
        }
        Ok(ClaimResult::Lost) => Some(false),
        Ok(ClaimResult::Suppressed) => {
            shared.counters.bump(DeliveryState::Suppressed);
            shared.event(
                &job.row.email,
                "suppressed",
                "on the suppression list".into(),
            );
            Some(false)
        }
        Ok(ClaimResult::Claimed) => Some(true),
    }
}

/// Applies a decision: the ledger write, the counters and events, the run-wide effect.
async fn carry_out(shared: &Shared, job: &Job, sent: Sent, reply: &Reply, d: Decision) -> Next {
    let backoff = d.slow_down.then(|| shared.pacer.throttle());
    let diagnosis = decide::diagnosis(reply, || shared.providers.of(&job.row.domain));
    let attempt = |outcome: AttemptOutcome| {
        let mut a = attempt(reply, sent.port, outcome);
        a.relay = sent.relay;
        if let Some(note) = d.note {
            a.reply = Some(format!("{note}{}", reply.text));
        }
        a.diagnosis = diagnosis;
        a
    };
    match &d.charge {
        Charge::Record(state) => {
            let outcome = AttemptOutcome::charged(*state).unwrap_or(AttemptOutcome::Unknown);
            record(shared, &job.row, *state, None, attempt(outcome)).await;
        }
        Charge::Temporary => {
            let (state, retry_at) = pace::after_temporary_failure(
                &shared.retry,
                job.row.attempts,
                job.row.first_attempt_at,
                now_ms(),
            );
            let outcome = AttemptOutcome::charged(state).unwrap_or(AttemptOutcome::Deferred);
            record(shared, &job.row, state, retry_at, attempt(outcome)).await;
        }
        Charge::GiveBack(evidence) => {
            give_back(shared, job.row.id, evidence.map(attempt)).await;
            match evidence {
                Some(AttemptOutcome::Throttled) => {
                    shared.counters.throttled.fetch_add(1, Ordering::Relaxed);
                    let why = if reply.step == crate::transport::Step::Mail {
                        "the relay refused the sender for now, slowing down"
                    } else {
                        "slowing down"
                    };
                    let secs = backoff.unwrap_or_default().as_secs();
                    shared.event(
                        &job.row.email,
                        "throttled",
                        format!("{}; {why} for {secs} s", reply.describe()),
                    );
                }
                Some(AttemptOutcome::OutOfStep) => shared.event(
                    &job.row.email,
                    "out_of_step",
                    format!("{}; reconnecting", reply.describe()),
                ),
                _ => {}
            }
        }
    }
    if let Some(sample) = decide::guard_sample(&d.charge) {
        shared.guard_sample(&job.row.domain, sample);
    }
    match d.run {
        ForRun::Continue => {}
        ForRun::Succeeded => {
            shared.accepted_any.store(true, Ordering::Relaxed);
            shared.pacer.success();
        }
        ForRun::Pause(stop) => shared.stop(End::Paused(stop)),
        ForRun::Abort(stop) => shared.stop(End::Aborted(stop)),
    }
    d.next
}

fn attempt(reply: &Reply, port: Option<u16>, outcome: AttemptOutcome) -> AttemptRecord {
    AttemptRecord {
        at: now_ms(),
        port,
        step: reply.step.as_str(),
        code: reply.code,
        enhanced: reply.enhanced.clone(),
        reply: Some(reply.text.clone()),
        outcome,
        diagnosis: None,
        relay: None,
    }
}

/// The job was not sent: give its claim back, uncharged, if it still holds one.
async fn unsent(shared: &Shared, job: &Job, claimed: bool) {
    if claimed {
        give_back(shared, job.row.id, None).await;
    }
}

/// Gives the claim on `recipient_id` back, uncharged (with the evidence, if any).
async fn give_back(shared: &Shared, recipient_id: RecipientId, attempt: Option<AttemptRecord>) {
    let r = Release {
        recipient_id,
        run_id: shared.run_id,
        attempt,
    };
    if let Err(e) = shared.writer.release(r).await {
        shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
    }
}

async fn record(
    shared: &Shared,
    row: &DueRow,
    state: DeliveryState,
    retry_at: Option<i64>,
    a: AttemptRecord,
) {
    let detail = a.reply.clone().unwrap_or_default();
    let o = Outcome {
        recipient_id: row.id,
        run_id: shared.run_id,
        state,
        retry_at,
        attempt: a,
    };
    if let Err(e) = shared.writer.record(o).await {
        shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
        return;
    }
    shared.counters.bump(state);
    shared.event(&row.email, state.as_str(), detail);
}
