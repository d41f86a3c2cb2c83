//! The dispatcher of a run: opens the first session (so a wrong password or a missing STARTTLS
//! stops the run before anyone is claimed), starts the workers, then reads due rows page by page
//! in id order, claims them in blocks within the `--limit` budget and the daily cap, and hands
//! them to the workers through a bounded queue. With `wait` it keeps making passes, sleeping
//! until the next retry is due, until nothing is deferred any more. It also feeds the circuit
//! breaker the campaign's complaint figures (from imported ARF reports), before the first
//! connection and every [`COMPLAINT_CHECK`] after.
//!
//! It must not send anything or decide what a reply means: workers do both.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};

use super::{End, Error, Options, Reads, Shared, Stop, pace, worker};
use crate::clock::now_ms;
use crate::model::{CampaignId, DeliveryState};
use crate::schedule::{self, Status};
use crate::store::{Claim, ClaimResult, DueRow};

/// Rows read from the ledger per page.
const PAGE: usize = 256;
/// Most rows claimed in one commit. Claiming is the ledger write every message waits for, so the
/// dispatcher claims rows in blocks (the in-flight journal keeps crash recovery exact, see
/// `store::journal`); a block is sized to about [`CLAIM_AHEAD`] of sending at the configured
/// rate, so that at slow rates rows are not held `sending` long before they go out.
const CLAIM_BLOCK: usize = 128;
/// How much sending, at the configured rate, one claimed block covers.
const CLAIM_AHEAD: Duration = Duration::from_millis(50);
/// The longest single sleep of `--wait` before looking at the ledger again.
const WAIT_SLICE: Duration = Duration::from_secs(3600);
/// How often the campaign's complaint rate is read again during a run (complaints arrive by
/// `bounces import`, from another process).
const COMPLAINT_CHECK: Duration = Duration::from_secs(30);

/// Dispatches the run to its end; the workers are started and joined here.
///
/// # Errors
/// When the ledger cannot be read (the workers are halted and joined first).
pub(super) async fn run(
    shared: &Arc<Shared>,
    reads: &Reads,
    campaign: CampaignId,
    options: &Options,
) -> Result<(), Error> {
    let mut workers = Vec::new();
    let driven = drive(shared, reads, campaign, options, &mut workers).await;
    if driven.is_err() {
        shared.halt.trigger();
    }
    for w in workers {
        if let Err(e) = w.await {
            shared.stop(End::Aborted(Stop::Internal(format!(
                "a worker failed: {e}"
            ))));
        }
    }
    driven
}

async fn drive(
    shared: &Arc<Shared>,
    reads: &Reads,
    campaign: CampaignId,
    options: &Options,
    workers: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), Error> {
    let resend = options.resend_unknown;
    let count_due = || reads.with(move |r| r.count_due(campaign, now_ms(), resend));
    let due_now = count_due().await?;
    // Complaints already past the limit: pause before anyone is claimed.
    if due_now > 0 && options.guard.enabled {
        check_complaints(shared, reads, campaign).await?;
    }
    let mut complaints_checked = tokio::time::Instant::now();
    shared.counters.planned.store(
        options.limit.map_or(due_now, |l| l.min(due_now)),
        Ordering::Relaxed,
    );
    // The send window first: outside it nothing is claimed, charged or even connected.
    let per_row_zones = options.window.is_some() && options.timezone_column.is_some();
    if due_now > 0 && !per_row_zones && !wait_for_window(shared, options).await {
        return Ok(());
    }
    // One session up front: a wrong password or a missing STARTTLS stops the run here, before
    // any recipient is claimed.
    let mut first_session = None;
    if due_now > 0 && !shared.halt.is_triggered() {
        first_session = first_session_of(shared).await?;
    }

    // Claimed rows wait here for a worker. Room for two blocks: one being sent while the next
    // is claimed.
    let block = claim_block(options);
    let (queue_tx, queue_rx) = mpsc::channel::<DueRow>(2 * block);
    let queue_rx = Arc::new(Mutex::new(queue_rx));
    for _ in 0..options.connections.max(1) {
        workers.push(tokio::spawn(worker::run(
            shared.clone(),
            queue_rx.clone(),
            first_session.take(),
        )));
    }

    let mut budget = options.limit;
    let mut daily_left = daily_left(reads, options).await?;

    'passes: loop {
        let mut after = 0i64;
        // Rows left for later because their own window is closed, and when the first opens.
        let mut outside = 0u64;
        let mut opens_at: Option<i64> = None;
        loop {
            if options.guard.enabled && complaints_checked.elapsed() >= COMPLAINT_CHECK {
                complaints_checked = tokio::time::Instant::now();
                check_complaints(shared, reads, campaign).await?;
            }
            if shared.halt.is_triggered() {
                break 'passes;
            }
            let page = reads
                .with(move |r| r.due_rows(campaign, after, now_ms(), resend, PAGE))
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id.0;
            let page: Vec<DueRow> = if per_row_zones {
                let now = options.clock.now_ms();
                page.into_iter()
                    .filter(|row| match row_status(options, now, row) {
                        Status::Open { .. } => true,
                        Status::Closed { opens_at: at } => {
                            outside += 1;
                            opens_at = earliest(opens_at, at);
                            false
                        }
                    })
                    .collect()
            } else {
                page
            };
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
                // The window can close while the run claims: stop claiming at its end.
                if !per_row_zones && !wait_for_window(shared, options).await {
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
                let n = chunk.len();
                // Room in the queue first: a claimed row never waits for the dispatcher.
                let permits = tokio::select! {
                    biased;
                    () = shared.halt.wait() => break 'passes,
                    permits = queue_tx.reserve_many(n) => match permits {
                        Ok(permits) => permits,
                        Err(_) => break 'passes,
                    },
                };
                if !claim_and_queue(shared, chunk, permits).await {
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
            () = shared.halt.wait() => break 'passes,
        }
        if outside > 0 {
            // Recipients whose own window is closed: not finished.
            match opens_at {
                Some(at) if options.wait => {
                    tracing::info!("{outside} recipients wait for their send window");
                    tokio::select! {
                        () = options.clock.sleep_until(at) => {}
                        () = shared.halt.wait() => break 'passes,
                    }
                    continue;
                }
                _ => {
                    shared.set_end(End::Window { opens_at });
                    break;
                }
            }
        }
        if !options.wait {
            break;
        }
        // `--wait`: sleep until the next thing that is due, never through a pause or an abort
        // (both halt the run). Outcomes are queued, not yet committed: make them visible first.
        shared.writer.sync().await.map_err(Error::Store)?;
        if count_due().await? > 0 {
            shared.left.store(0, Ordering::Relaxed);
            continue;
        }
        let (deferred, next) = reads.with(move |r| r.deferred_summary(campaign)).await?;
        if deferred == 0 {
            break;
        }
        let wait_ms = next.unwrap_or(0).saturating_sub(now_ms()).max(0);
        let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0) + 50).min(WAIT_SLICE);
        tracing::info!(
            "waiting {} s for the next deferred recipient",
            wait.as_secs()
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.halt.wait() => break 'passes,
        }
    }
    Ok(())
}

/// The run's first session, and the index of its relay. With one relay, a failure ends the run
/// (a relay busy right now pauses it; one that refuses us, our TLS or our credentials, or
/// cannot be reached, aborts it). With several, each relay that fails cools off and the next is
/// tried, in configuration order (no message is sent here, so the weighted choice is left
/// alone); the run pauses only when none of them connects.
async fn first_session_of(
    shared: &Shared,
) -> Result<Option<(usize, crate::transport::Session)>, Error> {
    let pool = &shared.relays;
    for i in 0..pool.len() {
        match pool.transport(i).connect().await {
            Ok(session) => {
                let port = session.port();
                shared.port.store(port, Ordering::Relaxed);
                shared
                    .writer
                    .set_run_port(shared.run_id, port)
                    .await
                    .map_err(Error::Store)?;
                return Ok(Some((i, session)));
            }
            Err(failure) if pool.is_failover() => {
                let why = failure.to_string();
                tracing::warn!("relay {}: {why}", pool.name(i));
                if let Some(cooled) = pool.cool_off(i, &why)
                    && let Some(relay) = cooled.id
                {
                    let at = now_ms();
                    let ms = i64::try_from(cooled.cooloff.as_millis()).unwrap_or(i64::MAX);
                    shared
                        .writer
                        .record_cooloff(crate::store::Cooloff {
                            relay,
                            run_id: shared.run_id,
                            at,
                            until: at.saturating_add(ms),
                            reason: why,
                        })
                        .await
                        .map_err(Error::Store)?;
                }
            }
            Err(failure) => {
                let stop = Stop::connect(failure);
                shared.stop(if matches!(stop, Stop::Busy(_)) {
                    End::Paused(stop)
                } else {
                    End::Aborted(stop)
                });
                return Ok(None);
            }
        }
    }
    // Several relays, and every one failed: nothing was claimed; pause.
    shared.stop(End::Paused(Stop::Relays(pool.failures())));
    Ok(None)
}

/// Reads the campaign's complaints and recipients accepted, per provider and overall, and
/// pauses the run when the complaint guard trips.
async fn check_complaints(
    shared: &Shared,
    reads: &Reads,
    campaign: CampaignId,
) -> Result<(), Error> {
    let counts = reads.with(move |r| r.complaint_counts(campaign)).await?;
    let mut overall = (0, 0);
    let mut per_provider = HashMap::new();
    for c in counts {
        overall.0 += c.complained;
        overall.1 += c.relay_accepted;
        let slot: &mut (u64, u64) = per_provider
            .entry(shared.providers.of(&c.domain))
            .or_default();
        slot.0 += c.complained;
        slot.1 += c.relay_accepted;
    }
    let trip = shared
        .guard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .complaints(overall, &per_provider);
    if let Some(trip) = trip {
        shared.stop(End::Paused(Stop::Guard(trip)));
    }
    Ok(())
}

/// Notes the run's first claimed row and starts the seeds' start copies of its message.
fn first_claim(shared: &Arc<Shared>, row: &DueRow) {
    let mut first = shared
        .first_claimed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if first.is_some() {
        return;
    }
    *first = Some(row.clone());
    let task = tokio::spawn(super::copies::seed(shared.clone(), row.clone(), "start"));
    *shared
        .seed_start
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
}

/// Whether the campaign's send window is open now (`[schedule]`, by the run's clock). When it
/// is closed: with `wait`, sleeps (by that clock) until it opens and says yes; otherwise ends
/// the run with [`End::Window`] and says no. Always yes without a window.
async fn wait_for_window(shared: &Shared, options: &Options) -> bool {
    let Some(window) = &options.window else {
        return true;
    };
    loop {
        match window.status(options.clock.now_ms(), None) {
            Status::Open { .. } => return true,
            Status::Closed { opens_at: Some(at) } if options.wait => {
                tracing::info!("waiting for the send window");
                tokio::select! {
                    () = options.clock.sleep_until(at) => {}
                    () = shared.halt.wait() => return false,
                }
            }
            Status::Closed { opens_at } => {
                shared.set_end(End::Window { opens_at });
                return false;
            }
        }
    }
}

/// The window of one recipient: the campaign's window in the recipient's own zone (the
/// `timezone_column` field of its stored fields), or in the campaign's zone when it has none.
fn row_status(options: &Options, now: i64, row: &DueRow) -> Status {
    let Some(window) = &options.window else {
        return Status::Open {
            closes_at: i64::MAX,
        };
    };
    let zone = options.timezone_column.as_deref().and_then(|column| {
        let fields = super::fields::decode(&row.fields, &row.email, row.name.as_deref()).ok()?;
        let name = fields.get(column)?.trim();
        // Checked at import: a zone that does not resolve cannot be here; the campaign's
        // zone is the safe reading if it ever is.
        (!name.is_empty())
            .then(|| schedule::zone(name).ok())
            .flatten()
    });
    window.status(now, zone.as_ref())
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What this run may still send today under `[rate] daily_cap` and `warmup`, for its From
/// domain (see `schedule::allowance`): `None` without either.
async fn daily_left(reads: &Reads, options: &Options) -> Result<Option<u64>, Error> {
    let rate = &options.rate;
    if rate.daily_cap.is_none() && rate.warmup.is_empty() {
        return Ok(None);
    }
    let now = options.clock.now_ms();
    let since = now - schedule::DAY_MS;
    let domain = options.from_domain.clone();
    let sending = match domain.clone() {
        Some(domain) => {
            reads
                .with(move |r| r.domain_sending(&domain, since))
                .await?
        }
        None => (None, reads.with(move |r| r.accepted_since(since)).await?),
    };
    let today = schedule::today(
        domain.as_deref().unwrap_or(""),
        &rate.warmup,
        rate.daily_cap,
        sending,
        now,
    );
    Ok(today.map(|a| a.left))
}

/// Rows claimed per commit for this run's rate (see [`CLAIM_BLOCK`]): at least one per
/// connection, so that every worker has a row after each claim, even past the usual cap when
/// the run has more connections than it (several relays add theirs up).
fn claim_block(options: &Options) -> usize {
    let per_second = pace::interval(&options.rate).map_or(f64::INFINITY, |i| 1.0 / i.as_secs_f64());
    let ahead = (per_second * CLAIM_AHEAD.as_secs_f64()).ceil();
    let least = options.connections.max(1);
    // `as` saturates: infinity and huge rates become usize::MAX, then the cap.
    (ahead as usize).clamp(least, CLAIM_BLOCK.max(least))
}

/// Claims `rows` in one commit and queues the claimed ones for the workers (one permit each,
/// reserved beforehand). Rows on the suppression list are counted; rows changed meanwhile by
/// another process are skipped. False when the run must stop (the ledger cannot be written).
async fn claim_and_queue(
    shared: &Arc<Shared>,
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
            shared.stop(End::Aborted(Stop::Ledger(e.to_string())));
            return false;
        }
    };
    for (row, result) in rows.into_iter().zip(results) {
        match result {
            ClaimResult::Claimed => {
                if !shared.seeds.is_empty() {
                    first_claim(shared, &row);
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RateOptions;

    #[test]
    fn claim_blocks_follow_the_rate_within_bounds() {
        let options = |per_second: f64, connections: usize| Options {
            connections,
            rate: RateOptions {
                per_second: Some(per_second),
                ..RateOptions::default()
            },
            ..Options::default()
        };
        // 50 ms of sending: 1 at 10/s, but never fewer than one row per connection.
        assert_eq!(claim_block(&options(10.0, 4)), 4);
        assert_eq!(claim_block(&options(1000.0, 4)), 50);
        assert_eq!(claim_block(&options(1e9, 4)), CLAIM_BLOCK);
        assert_eq!(claim_block(&options(f64::INFINITY, 1)), CLAIM_BLOCK);
        // More connections than the cap (200 over two relays): one row each, at any rate.
        assert_eq!(claim_block(&options(10.0, 200)), 200);
        assert_eq!(claim_block(&options(f64::INFINITY, 200)), 200);
        assert_eq!(claim_block(&options(1000.0, 0)), 50);
    }
}
