//! The delivery engine's reads and writes on the ledger, as plain synchronous functions over a
//! `rusqlite::Connection`/`Transaction`. The writer thread (`store::writer`) calls the mutating
//! ones inside its batched transactions; the send command calls import and recovery before the
//! thread starts. Nothing here knows SMTP: callers hand over what they learnt.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, params};

use super::state::{self, Event};
use crate::model::{
    AttemptOutcome, CampaignId, DeliveryState, RecipientId, RelayId, RunId, RunOutcome,
};

pub use crate::clock::now_ms;

/// One valid contact to import: every field the ledger needs to render and send it later.
#[derive(Debug, Clone)]
pub struct NewRecipient {
    /// Normalised; the ledger computes the recipient's domain from it (after its one `@`).
    pub email: String,
    pub name: Option<String>,
    pub line: u64,
    pub token: String,
    /// The contact's CSV fields as a JSON object (`{"column": "value"}`; the pipeline stores
    /// the address and name as markers, see `pipeline::fields`). The store never reads inside.
    pub fields: String,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCount {
    pub inserted: u64,
    pub already_known: u64,
    /// Known rows, not final yet, whose fields, name or line changed in the contacts file (or
    /// that came back to it after being removed): the ledger now has the file's values.
    pub refreshed: u64,
    /// Rows not final yet that are no longer in the contacts file (this import or an earlier
    /// one): they are never claimed while they stay out of it.
    pub removed: u64,
}

/// A recipient row that is due for an attempt, as the dispatcher reads it.
#[derive(Debug, Clone)]
pub struct DueRow {
    pub id: RecipientId,
    pub email: String,
    pub domain: String,
    pub name: Option<String>,
    pub line: u64,
    pub token: String,
    pub fields: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub first_attempt_at: Option<i64>,
}

/// A worker's request to own one recipient for one transaction.
#[derive(Debug, Clone)]
pub struct Claim {
    pub recipient_id: RecipientId,
    pub run_id: RunId,
    /// The state and attempt count the dispatcher saw: the claim succeeds only if the row still
    /// has them, so a row can never be claimed twice (by this process or another one).
    pub expected_state: DeliveryState,
    pub expected_attempts: u32,
}

/// The answer to a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimResult {
    /// The row is now `sending` (durably) and belongs to the caller.
    Claimed,
    /// The address is on the suppression list; the row is now `suppressed`.
    Suppressed,
    /// Someone else changed the row since it was read; do not send.
    Lost,
}

/// One appended `attempts` row.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub at: i64,
    pub port: Option<u16>,
    /// connect, greeting, ehlo, starttls, auth, mail, rcpt, data, message (or render).
    pub step: &'static str,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    pub outcome: AttemptOutcome,
    /// The key of the diagnosis-table row the reply matched (`crate::diagnose`), if any.
    pub diagnosis: Option<&'static str>,
    /// The `[[relay]]` the attempt went through (`None` for a single `[smtp]` relay).
    pub relay: Option<RelayId>,
}

/// The end of a claimed transaction that the recipient is charged for.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub recipient_id: RecipientId,
    pub run_id: RunId,
    pub state: DeliveryState,
    pub retry_at: Option<i64>,
    pub attempt: AttemptRecord,
}

/// A claim given back without charging the recipient (throttling, pause, abort, shutdown before
/// the transaction began): the row returns to the state it had when claimed.
#[derive(Debug, Clone)]
pub struct Release {
    pub recipient_id: RecipientId,
    pub run_id: RunId,
    pub attempt: Option<AttemptRecord>,
}

/// Returns the campaign's id, creating the row on first use.
pub fn ensure_campaign(conn: &Connection, name: &str) -> rusqlite::Result<CampaignId> {
    conn.execute(
        "INSERT OR IGNORE INTO campaigns (name, created_at) VALUES (?1, ?2)",
        params![name, now_ms()],
    )?;
    conn.query_row(
        "SELECT id FROM campaigns WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
}

/// Reconciles the ledger with the contacts file in one transaction: new recipients are inserted;
/// rows already in the ledger (same campaign and address) that are not final yet (pending or
/// deferred) take the file's fields, name and line, so a corrected CSV is what gets sent; final
/// rows are left exactly as they are. Not-final rows that `rows` no longer contains are marked
/// `removed_at` and never claimed while they stay out (an unsubscribed person removed from the
/// file must not be mailed). Re-running the same import is a no-op. `rows` must be the whole
/// file: the first `Err` from it rolls everything back and is returned.
pub fn import<I, E>(
    conn: &mut Connection,
    campaign_id: CampaignId,
    rows: I,
) -> Result<ImportCount, ImportError<E>>
where
    I: IntoIterator<Item = Result<NewRecipient, E>>,
{
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut count = ImportCount::default();
    // A campaign's first import has no rows that could have left the file: skip tracking them.
    let known_before: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM recipients WHERE campaign_id = ?1)",
        params![campaign_id],
        |r| r.get(0),
    )?;
    // A first import can be a million rows: rather than the per-row counter trigger (migration
    // 0004), count the campaign's rows once at the end. The trigger is dropped and re-created
    // inside this transaction, so no other connection ever sees the ledger without it.
    let counter_trigger: Option<String> = if known_before {
        None
    } else {
        tx.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'report_counts_insert'",
            [],
            |r| r.get(0),
        )
        .optional()?
    };
    if counter_trigger.is_some() {
        tx.execute_batch("DROP TRIGGER report_counts_insert")?;
    }
    // The addresses in the file, to find the rows that left it.
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS import_seen (email TEXT PRIMARY KEY);
         DELETE FROM temp.import_seen;",
    )?;
    {
        let mut insert = tx.prepare(
            "INSERT OR IGNORE INTO recipients
                (campaign_id, email, name, line, token, fields, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending')",
        )?;
        let mut refresh = tx.prepare(
            "UPDATE recipients SET fields = ?3, name = ?4, line = ?5, removed_at = NULL
             WHERE campaign_id = ?1 AND email = ?2 AND state IN ('pending', 'deferred')
               AND (fields IS NOT ?3 OR name IS NOT ?4 OR line IS NOT ?5
                    OR removed_at IS NOT NULL)",
        )?;
        let mut seen = tx.prepare("INSERT OR IGNORE INTO temp.import_seen (email) VALUES (?1)")?;
        for row in rows {
            let row = row.map_err(ImportError::Source)?;
            let line = i64::try_from(row.line).unwrap_or(i64::MAX);
            let changed = insert.execute(params![
                campaign_id,
                row.email,
                row.name,
                line,
                row.token,
                row.fields
            ])?;
            if changed == 1 {
                count.inserted += 1;
            } else {
                count.already_known += 1;
                count.refreshed +=
                    refresh.execute(params![campaign_id, row.email, row.fields, row.name, line])?
                        as u64;
            }
            if known_before {
                seen.execute(params![row.email])?;
            }
        }
    }
    if let Some(trigger) = counter_trigger {
        tx.execute(
            "INSERT INTO report_counts (campaign_id, domain, state, relay_accepted, n)
             SELECT campaign_id, domain, state, relay_accepted, count(*) FROM recipients
             WHERE campaign_id = ?1 GROUP BY campaign_id, domain, state, relay_accepted
             ON CONFLICT DO UPDATE SET n = n + excluded.n",
            params![campaign_id],
        )?;
        tx.execute_batch(&trigger)?;
    }
    if known_before {
        tx.execute(
            "UPDATE recipients SET removed_at = ?2
             WHERE campaign_id = ?1 AND state IN ('pending', 'deferred') AND removed_at IS NULL
               AND email NOT IN (SELECT email FROM temp.import_seen)",
            params![campaign_id, now_ms()],
        )?;
    }
    count.removed = tx.query_row(
        "SELECT count(*) FROM recipients
         WHERE campaign_id = ?1 AND state IN ('pending', 'deferred') AND removed_at IS NOT NULL",
        params![campaign_id],
        |r| r.get::<_, i64>(0),
    )? as u64;
    tx.execute_batch("DELETE FROM temp.import_seen")?;
    tx.commit()?;
    Ok(count)
}

/// Why an import failed: the ledger, or the source of the rows.
#[derive(Debug)]
pub enum ImportError<E> {
    Sqlite(rusqlite::Error),
    Source(E),
}

impl<E> From<rusqlite::Error> for ImportError<E> {
    fn from(e: rusqlite::Error) -> Self {
        ImportError::Sqlite(e)
    }
}

/// What crash recovery did with the rows a finished-badly run left `sending`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Their transaction had started: the relay may or may not have the message (`unknown`).
    pub unknown: u64,
    /// Claimed but never started (the journal says so): back to the state they had, uncharged.
    pub returned: u64,
}

/// Crash recovery: rows left `sending` by a run that did not finish, in every campaign of the
/// ledger (the journal is one per ledger, and so is the send lock the caller must hold: no
/// `sending` row can belong to a live run). Those whose transaction may have started (per the
/// in-flight journal, see `store::journal`) cannot be known to have been sent or not, so they
/// become `unknown` (with an attempt saying why); those the journal shows were never started go
/// back to the state they were claimed from, uncharged. Runs left open are closed as `crashed`.
pub fn recover_interrupted(
    conn: &mut Connection,
    started: &super::journal::Started,
) -> rusqlite::Result<Recovered> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    let left: Vec<(i64, Option<i64>)> = {
        let mut stmt =
            tx.prepare("SELECT id, claimed_run FROM recipients WHERE state = 'sending'")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut recovered = Recovered::default();
    {
        let mut evidence = tx.prepare(
            "INSERT INTO attempts (recipient_id, run_id, at, port, step, code, enhanced, reply, outcome)
             VALUES (?1, ?2, ?3, NULL, 'message', NULL, NULL,
                'a previous run ended while this message was in flight; the relay may or may not have it',
                'unknown')",
        )?;
        let mut unknown = tx.prepare(
            "UPDATE recipients SET state = 'unknown', claimed_from = NULL, claimed_run = NULL
             WHERE id = ?1",
        )?;
        let mut give_back = tx.prepare(
            "UPDATE recipients SET state = coalesce(claimed_from, 'pending'),
                claimed_from = NULL, claimed_run = NULL
             WHERE id = ?1",
        )?;
        for (id, run) in left {
            if started.may_have_started(run, id) {
                evidence.execute(params![id, run, now])?;
                unknown.execute(params![id])?;
                recovered.unknown += 1;
            } else {
                give_back.execute(params![id])?;
                recovered.returned += 1;
            }
        }
    }
    tx.execute(
        "UPDATE runs SET finished_at = ?1, outcome = 'crashed' WHERE finished_at IS NULL",
        params![now],
    )?;
    tx.commit()?;
    Ok(recovered)
}

/// The addresses of a campaign that are final in the ledger (neither pending nor deferred, nor
/// `sending`: crash recovery may give those back): they are never sent again, so the import
/// need not validate them. Empty for a new campaign.
pub fn final_addresses(
    conn: &Connection,
    campaign: &str,
) -> rusqlite::Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare(
        "SELECT r.email FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
         WHERE c.name = ?1 AND r.state NOT IN ('pending', 'deferred', 'sending')",
    )?;
    let rows = stmt.query_map(params![campaign], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Starts a run row; the port is filled in once a connection succeeds.
pub fn start_run(
    conn: &Connection,
    campaign_id: CampaignId,
    host: &str,
    security: &str,
) -> rusqlite::Result<RunId> {
    conn.execute(
        "INSERT INTO runs (campaign_id, started_at, host, security, first_attempt)
         VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(id), 0) + 1 FROM attempts))",
        params![campaign_id, now_ms(), host, security],
    )?;
    Ok(RunId(conn.last_insert_rowid()))
}

/// Records the port a run actually used (after fallback).
pub fn set_run_port(conn: &Connection, run_id: RunId, port: u16) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET port = ?2 WHERE id = ?1",
        params![run_id, port],
    )?;
    Ok(())
}

/// Closes a run with its outcome (`finished`, `interrupted`, `aborted`, `paused`, ...).
/// The run's `claimed` (charged attempts) and `accepted` counts are computed here, once, rather
/// than updated with every message (one page fewer in every commit of the hot path), over the
/// attempts from the run's `first_attempt` on (a range of rowids: attempts have no run index).
pub fn finish_run(conn: &Connection, run_id: RunId, outcome: RunOutcome) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET finished_at = ?2, outcome = ?3,
            claimed = (SELECT count(*) FROM attempts
                       WHERE id >= coalesce(runs.first_attempt, 0) AND run_id = ?1
                         AND outcome NOT IN ('throttled', 'aborted')),
            accepted = (SELECT count(*) FROM attempts
                        WHERE id >= coalesce(runs.first_attempt, 0) AND run_id = ?1
                          AND outcome = 'accepted')
         WHERE id = ?1",
        params![run_id, now_ms(), outcome.as_str()],
    )?;
    Ok(())
}

/// The one rule for "is this row due for an attempt?" by its state: pending rows, deferred rows
/// whose retry time has come (`:now`), and unknown rows only when the user opted in
/// (`:resend`). Every query that selects due rows uses it (with `removed_at IS NULL` for rows
/// that must still be in the contacts file).
macro_rules! due_state {
    () => {
        "(state = 'pending' \
          OR (state = 'deferred' AND coalesce(retry_at, 0) <= :now) \
          OR (:resend AND state = 'unknown'))"
    };
}
pub(super) use due_state;

/// Up to `limit` due rows with `id > after`, in id order (keyset pagination).
///
/// The query walks the table in rowid order from `after` (`NOT INDEXED`): left to itself,
/// SQLite (without ANALYZE statistics) picks an index on `campaign_id` and sorts every row of
/// the campaign for each page, so a pass over N rows cost O(N²) instead of O(N).
pub fn due_rows(
    conn: &Connection,
    campaign_id: CampaignId,
    after: i64,
    now: i64,
    resend_unknown: bool,
    limit: usize,
) -> rusqlite::Result<Vec<DueRow>> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT id, email, domain, name, line, token, fields, state, attempts, first_attempt_at
         FROM recipients NOT INDEXED
         WHERE campaign_id = :campaign AND id > :after AND removed_at IS NULL AND ",
        due_state!(),
        " ORDER BY id LIMIT :limit"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        rusqlite::named_params! {
            ":campaign": campaign_id,
            ":after": after,
            ":now": now,
            ":resend": resend_unknown,
            ":limit": limit,
        },
        |r| {
            let state: String = r.get(7)?;
            let line: i64 = r.get(4)?;
            let attempts: i64 = r.get(8)?;
            Ok(DueRow {
                id: r.get(0)?,
                email: r.get(1)?,
                domain: r.get(2)?,
                name: r.get(3)?,
                line: u64::try_from(line).unwrap_or(0),
                token: r.get(5)?,
                fields: r.get(6)?,
                state: state.parse().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        7,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                first_attempt_at: r.get(9)?,
            })
        },
    )?;
    rows.collect()
}

/// How many rows are due at `now` (the rows [`due_rows`] would return, all pages together).
pub fn count_due(
    conn: &Connection,
    campaign_id: CampaignId,
    now: i64,
    resend_unknown: bool,
) -> rusqlite::Result<u64> {
    conn.prepare_cached(concat!(
        "SELECT count(*) FROM recipients
         WHERE campaign_id = :campaign AND removed_at IS NULL AND ",
        due_state!()
    ))?
    .query_row(
        rusqlite::named_params! {
            ":campaign": campaign_id,
            ":now": now,
            ":resend": resend_unknown,
        },
        |r| r.get::<_, i64>(0),
    )
    .map(|n| u64::try_from(n).unwrap_or(0))
}

/// Deferred rows not yet due: how many, and the earliest retry time.
pub fn deferred_summary(
    conn: &Connection,
    campaign_id: CampaignId,
) -> rusqlite::Result<(u64, Option<i64>)> {
    conn.query_row(
        "SELECT count(*), min(retry_at) FROM recipients
         WHERE campaign_id = ?1 AND state = 'deferred' AND removed_at IS NULL",
        params![campaign_id],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
}

/// Per-state counts for one campaign, in `DeliveryState::ALL` order.
pub fn state_counts(
    conn: &Connection,
    campaign_id: CampaignId,
) -> rusqlite::Result<Vec<(DeliveryState, u64)>> {
    let mut stmt = conn
        .prepare("SELECT state, count(*) FROM recipients WHERE campaign_id = ?1 GROUP BY state")?;
    let mut counts: Vec<(DeliveryState, u64)> =
        DeliveryState::ALL.iter().map(|s| (*s, 0)).collect();
    let rows = stmt.query_map(params![campaign_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, n) = row?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
            slot.1 = n as u64;
        }
    }
    Ok(counts)
}

/// How many of a campaign's rows are claimed (`sending`): a range of the state index.
pub fn sending_count(conn: &Connection, campaign_id: CampaignId) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM recipients WHERE campaign_id = ?1 AND state = 'sending'",
        params![campaign_id],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Messages the relay accepted since `since` (any campaign in this ledger), for the daily cap.
pub fn accepted_since(conn: &Connection, since: i64) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM attempts WHERE outcome = 'accepted' AND at >= ?1",
        params![since],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
}

/// Records the From domain of a run.
pub fn set_run_from_domain(conn: &Connection, run_id: RunId, domain: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE runs SET from_domain = ?2 WHERE id = ?1",
        params![run_id, domain],
    )?;
    Ok(())
}

/// What the daily cap and the warm-up of one From domain need: when the domain's first message
/// was accepted (runs of that domain only), and how many were accepted since `since` (its runs,
/// and runs from before domains were recorded, taken as every domain's).
pub fn domain_sending(
    conn: &Connection,
    domain: &str,
    since: i64,
) -> rusqlite::Result<(Option<i64>, u64)> {
    // Per run of the domain, its first accepted attempt: a search of the run's own attempts
    // from `first_attempt` that stops at the first one (attempts have no run index).
    let first: Option<i64> = conn.query_row(
        "SELECT min((SELECT a.at FROM attempts a
                     WHERE a.id >= coalesce(r.first_attempt, 0) AND a.run_id = r.id
                       AND a.outcome = 'accepted'
                     ORDER BY a.id LIMIT 1))
         FROM runs r WHERE r.from_domain = ?1",
        params![domain],
        |r| r.get(0),
    )?;
    let recent: i64 = conn.query_row(
        "SELECT count(*) FROM attempts a JOIN runs r ON r.id = a.run_id
         WHERE a.outcome = 'accepted' AND a.at >= ?2
           AND (r.from_domain = ?1 OR r.from_domain IS NULL)",
        params![domain, since],
        |r| r.get(0),
    )?;
    Ok((first, u64::try_from(recent).unwrap_or(0)))
}

/// The suppression reason of a recipient's address, if any. A subquery, not a join: SQLite
/// re-prepared the join form (`suppressions JOIN recipients ON email`) on every execution, one
/// re-prepare per claim, 8% of a 20,000-message send's CPU samples in `perf`.
const SUPPRESSION_OF_RECIPIENT: &str = "SELECT reason FROM suppressions
     WHERE email = (SELECT email FROM recipients WHERE id = ?1)";

/// Whether the suppression list has any address at all. Asked once per writer transaction:
/// the transaction holds the write lock, so no suppression can appear until it commits, and
/// with an empty list (most sends) every claim skips its two-lookup suppression query.
pub fn any_suppressions(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM suppressions)")?
        .query_row([], |r| r.get(0))
}

/// Applies a claim (inside the writer's transaction). `suppressions` is
/// [`any_suppressions`] in the same transaction.
pub fn claim(conn: &Connection, c: &Claim, suppressions: bool) -> rusqlite::Result<ClaimResult> {
    // Hot path (one claim per message): cached statements, no re-parsing.
    let suppressed: Option<String> = if suppressions {
        conn.prepare_cached(SUPPRESSION_OF_RECIPIENT)?
            .query_row(params![c.recipient_id], |r| r.get(0))
            .optional()?
    } else {
        None
    };
    let expected_state = c.expected_state.as_str();
    if let Some(reason) = suppressed {
        if state::next(c.expected_state, Event::Suppress).is_none() {
            return Ok(ClaimResult::Lost);
        }
        let n = conn.execute(
            "UPDATE recipients SET state = 'suppressed'
             WHERE id = ?1 AND state = ?2 AND attempts = ?3 AND removed_at IS NULL",
            params![c.recipient_id, expected_state, c.expected_attempts],
        )?;
        if n == 0 {
            return Ok(ClaimResult::Lost);
        }
        conn.execute(
            "INSERT INTO attempts (recipient_id, run_id, at, step, reply, outcome)
             VALUES (?1, ?2, ?3, 'rcpt', ?4, 'suppressed')",
            params![
                c.recipient_id,
                c.run_id,
                now_ms(),
                format!("not sent: address is on the suppression list ({reason})")
            ],
        )?;
        return Ok(ClaimResult::Suppressed);
    }
    if state::next(c.expected_state, Event::Claim).is_none() {
        return Ok(ClaimResult::Lost);
    }
    let n = conn
        .prepare_cached(
            "UPDATE recipients
             SET state = 'sending', claimed_from = state, claimed_run = ?4
             WHERE id = ?1 AND state = ?2 AND attempts = ?3 AND removed_at IS NULL",
        )?
        .execute(params![
            c.recipient_id,
            expected_state,
            c.expected_attempts,
            c.run_id
        ])?;
    if n == 0 {
        return Ok(ClaimResult::Lost);
    }
    Ok(ClaimResult::Claimed)
}

fn insert_attempt(
    conn: &Connection,
    recipient_id: RecipientId,
    run_id: RunId,
    a: &AttemptRecord,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO attempts (recipient_id, run_id, at, port, step, code, enhanced, reply, outcome,
                               diagnosis, relay_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    stmt.execute(params![
        recipient_id,
        run_id,
        a.at,
        a.port,
        a.step,
        a.code,
        a.enhanced,
        a.reply,
        a.outcome.as_str(),
        a.diagnosis,
        a.relay
    ])?;
    Ok(())
}

/// Applies a charged outcome: the row leaves `sending` and the attempt is appended. A row that
/// is no longer `sending` (another process recovered it meanwhile) is left alone and gets no
/// attempt, so attempts, run counts and states never disagree.
pub fn record(conn: &Connection, o: &Outcome) -> rusqlite::Result<()> {
    check_outcome(o)?;
    let accepted = o.state == DeliveryState::Accepted;
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET
            state = ?2,
            attempts = attempts + 1,
            retry_at = ?3,
            first_attempt_at = coalesce(first_attempt_at, ?4),
            last_attempt_at = ?4,
            last_code = ?5,
            last_enhanced = ?6,
            last_reply = ?7,
            relay_accepted = CASE WHEN ?8 THEN 1 ELSE relay_accepted END,
            claimed_from = NULL,
            claimed_run = NULL
         WHERE id = ?1 AND state = 'sending'",
    )?;
    let changed = stmt.execute(params![
        o.recipient_id,
        o.state.as_str(),
        o.retry_at,
        o.attempt.at,
        o.attempt.code,
        o.attempt.enhanced,
        o.attempt.reply,
        accepted
    ])?;
    if changed == 1 {
        insert_attempt(conn, o.recipient_id, o.run_id, &o.attempt)?;
    }
    Ok(())
}

/// [`record`] for several outcomes at once, in a few multi-row statements: the ledger ends
/// exactly as it would after `record` of each, in order (the attempts get their ids in that
/// order). A statement keeps a statement journal, a copy of every page it touches; one per
/// outcome, and another per attempt, was a quarter of the ledger writer's time in a send.
///
/// A group that holds two outcomes for one recipient goes one at a time, whole: a join updates
/// that row once.
pub fn record_many(conn: &Connection, outcomes: &[&Outcome]) -> rusqlite::Result<()> {
    if outcomes.len() < 2 || !distinct(outcomes.iter().map(|o| o.recipient_id.0)) {
        return outcomes.iter().try_for_each(|o| record(conn, o));
    }
    outcomes.iter().try_for_each(|o| check_outcome(o))?;
    let mut changed = HashSet::with_capacity(outcomes.len());
    for rows in statement_sized(outcomes) {
        let sql = format!(
            "WITH o (id, state, retry_at, at, code, enhanced, reply, accepted) AS (VALUES {})
             UPDATE recipients SET
                state = o.state,
                attempts = attempts + 1,
                retry_at = o.retry_at,
                first_attempt_at = coalesce(first_attempt_at, o.at),
                last_attempt_at = o.at,
                last_code = o.code,
                last_enhanced = o.enhanced,
                last_reply = o.reply,
                relay_accepted = CASE WHEN o.accepted THEN 1 ELSE relay_accepted END,
                claimed_from = NULL,
                claimed_run = NULL
             FROM o WHERE recipients.id = o.id AND recipients.state = 'sending'
             RETURNING recipients.id",
            placeholders(rows.len(), 8)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut next = 0;
        for o in rows {
            let a = &o.attempt;
            bind(&mut stmt, &mut next, &o.recipient_id)?;
            bind(&mut stmt, &mut next, &o.state.as_str())?;
            bind(&mut stmt, &mut next, &o.retry_at)?;
            bind(&mut stmt, &mut next, &a.at)?;
            bind(&mut stmt, &mut next, &a.code)?;
            bind(&mut stmt, &mut next, &a.enhanced)?;
            bind(&mut stmt, &mut next, &a.reply)?;
            bind(&mut stmt, &mut next, &(o.state == DeliveryState::Accepted))?;
        }
        debug_assert_eq!(next, stmt.parameter_count(), "every placeholder bound");
        returned_ids(&mut stmt, &mut changed)?;
    }
    let attempts: Vec<&Outcome> = outcomes
        .iter()
        .copied()
        .filter(|o| changed.contains(&o.recipient_id.0))
        .collect();
    for rows in statement_sized(&attempts) {
        let sql = format!(
            "INSERT INTO attempts (recipient_id, run_id, at, port, step, code, enhanced, reply,
                                   outcome, diagnosis, relay_id)
             VALUES {}",
            placeholders(rows.len(), 11)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut next = 0;
        for o in rows {
            let a = &o.attempt;
            bind(&mut stmt, &mut next, &o.recipient_id)?;
            bind(&mut stmt, &mut next, &o.run_id)?;
            bind(&mut stmt, &mut next, &a.at)?;
            bind(&mut stmt, &mut next, &a.port)?;
            bind(&mut stmt, &mut next, &a.step)?;
            bind(&mut stmt, &mut next, &a.code)?;
            bind(&mut stmt, &mut next, &a.enhanced)?;
            bind(&mut stmt, &mut next, &a.reply)?;
            bind(&mut stmt, &mut next, &a.outcome.as_str())?;
            bind(&mut stmt, &mut next, &a.diagnosis)?;
            bind(&mut stmt, &mut next, &a.relay)?;
        }
        debug_assert_eq!(next, stmt.parameter_count(), "every placeholder bound");
        stmt.raw_execute()?;
    }
    Ok(())
}

/// [`claim`] for a block of claims, in a few multi-row statements when no address is suppressed
/// (see [`record_many`]); one result per claim, in order, as `claim` of each in turn gives.
pub fn claim_many(
    conn: &Connection,
    claims: &[Claim],
    suppressions: bool,
) -> rusqlite::Result<Vec<ClaimResult>> {
    // A suppressed address takes statements of its own. Of two claims of one recipient in a
    // block at most one succeeds, and which one depends on their order: only one claim at a
    // time tells them apart.
    if suppressions || claims.len() < 2 || !distinct(claims.iter().map(|c| c.recipient_id.0)) {
        return claims
            .iter()
            .map(|c| claim(conn, c, suppressions))
            .collect();
    }
    let allowed: Vec<&Claim> = claims
        .iter()
        .filter(|c| state::next(c.expected_state, Event::Claim).is_some())
        .collect();
    let mut claimed = HashSet::with_capacity(allowed.len());
    for rows in statement_sized(&allowed) {
        let sql = format!(
            "WITH c (id, state, attempts, run) AS (VALUES {})
             UPDATE recipients SET state = 'sending', claimed_from = recipients.state,
                claimed_run = c.run
             FROM c
             WHERE recipients.id = c.id AND recipients.state = c.state
                AND recipients.attempts = c.attempts AND recipients.removed_at IS NULL
             RETURNING recipients.id",
            placeholders(rows.len(), 4)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut next = 0;
        for c in rows {
            bind(&mut stmt, &mut next, &c.recipient_id)?;
            bind(&mut stmt, &mut next, &c.expected_state.as_str())?;
            bind(&mut stmt, &mut next, &c.expected_attempts)?;
            bind(&mut stmt, &mut next, &c.run_id)?;
        }
        debug_assert_eq!(next, stmt.parameter_count(), "every placeholder bound");
        returned_ids(&mut stmt, &mut claimed)?;
    }
    Ok(claims
        .iter()
        .map(|c| {
            if claimed.contains(&c.recipient_id.0) {
                ClaimResult::Claimed
            } else {
                ClaimResult::Lost
            }
        })
        .collect())
}

/// Runs `stmt` (bound, `RETURNING` one id) and adds the ids it returns to `into`.
fn returned_ids(
    stmt: &mut rusqlite::CachedStatement<'_>,
    into: &mut HashSet<i64>,
) -> rusqlite::Result<()> {
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        into.insert(row.get(0)?);
    }
    Ok(())
}

/// Whether no id comes twice.
fn distinct(ids: impl ExactSizeIterator<Item = i64>) -> bool {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.into_iter().all(|id| seen.insert(id))
}

/// Most rows in one multi-row statement (`MAX_ROWS` × 11 parameters stays far below SQLite's
/// limit of 32,766).
pub const MAX_ROWS: usize = 64;

/// `rows` cut into pieces whose lengths are powers of two, largest first, at most [`MAX_ROWS`]:
/// seven statement texts per kind serve every count, so each stays prepared in the writer's
/// statement cache (`store::writer` makes room for them).
fn statement_sized<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = MAX_ROWS.min(1 << rest.len().ilog2());
        let (piece, tail) = rest.split_at(len);
        rest = tail;
        Some(piece)
    })
}

/// `(?, ?), (?, ?)` for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}

/// Binds the next positional parameter of `stmt` (`next` counts them, from 0).
fn bind(
    stmt: &mut rusqlite::CachedStatement<'_>,
    next: &mut usize,
    value: &dyn rusqlite::ToSql,
) -> rusqlite::Result<()> {
    *next += 1;
    stmt.raw_bind_parameter(*next, value)
}

/// Refuses an outcome the state machine does not allow after `sending`: a bug in the caller, not
/// a condition of the ledger, refused loudly (the writer then stops the run) rather than stored.
fn check_outcome(o: &Outcome) -> rusqlite::Result<()> {
    if state::next(DeliveryState::Sending, Event::Outcome(o.state)).is_none() {
        return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
            std::io::Error::other(format!("{} is not the outcome of a transaction", o.state)),
        )));
    }
    Ok(())
}

/// Gives a claim back: the row returns to the state it had before the claim, uncharged.
pub fn release(conn: &Connection, r: &Release) -> rusqlite::Result<()> {
    if let Some(a) = &r.attempt {
        insert_attempt(conn, r.recipient_id, r.run_id, a)?;
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE recipients SET state = coalesce(claimed_from, 'pending'),
            claimed_from = NULL, claimed_run = NULL
         WHERE id = ?1 AND state = 'sending'",
    )?;
    stmt.execute(params![r.recipient_id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::journal::Started;
    use super::*;

    fn ledger() -> (tempfile::TempDir, Connection, CampaignId) {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open(&dir.path().join("l.db")).unwrap().conn;
        let id = ensure_campaign(&conn, "spring").unwrap();
        (dir, conn, id)
    }

    fn contact(i: u32) -> NewRecipient {
        NewRecipient {
            email: format!("user{i}@example.test"),
            name: None,
            line: u64::from(i) + 1,
            token: format!("tok{i:013}"),
            fields: "{}".into(),
        }
    }

    fn ok(i: u32) -> Result<NewRecipient, ()> {
        Ok(contact(i))
    }

    fn state_of(conn: &Connection, id: RecipientId) -> String {
        conn.query_row("SELECT state FROM recipients WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
    }

    #[test]
    fn the_domain_is_what_follows_the_at_sign_as_the_loader_splits_it() {
        let (_d, mut conn, c) = ledger();
        // The loader refuses quoted local parts: a stored address has exactly one `@`.
        assert!(crate::campaign::normalize_address("\"odd@local\"@example.test").is_err());
        let emails = [
            "ann@example.test",
            "x@xn--bcher-kva.example",
            "a.b+c@sub.example.co.uk",
        ];
        let rows = emails.iter().enumerate().map(|(i, e)| {
            Ok::<_, ()>(NewRecipient {
                email: (*e).to_owned(),
                token: format!("t{i}"),
                ..contact(0)
            })
        });
        import(&mut conn, c, rows).unwrap();
        for email in emails {
            let domain: String = conn
                .query_row(
                    "SELECT domain FROM recipients WHERE email = ?1",
                    [email],
                    |r| r.get(0),
                )
                .unwrap();
            let loader = crate::campaign::normalize_address(email).unwrap();
            assert_eq!(loader, email, "already normalised");
            assert_eq!(Some(domain.as_str()), email.rsplit_once('@').map(|p| p.1));
        }
        // The per-domain counters are keyed by the same computed domain.
        let counted: i64 = conn
            .query_row(
                "SELECT n FROM report_counts WHERE domain = 'xn--bcher-kva.example'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counted, 1);
    }

    #[test]
    fn import_is_idempotent() {
        let (_d, mut conn, c) = ledger();
        let first = import(&mut conn, c, (0..5).map(ok)).unwrap();
        assert_eq!(first.inserted, 5);
        let again = import(&mut conn, c, (0..7).map(ok)).unwrap();
        assert_eq!(
            again,
            ImportCount {
                inserted: 2,
                already_known: 5,
                refreshed: 0,
                removed: 0,
            }
        );
        assert_eq!(ensure_campaign(&conn, "spring").unwrap(), c);
    }

    #[test]
    fn first_import_counts_in_bulk_and_keeps_the_counter_trigger() {
        let (_d, mut conn, c) = ledger();
        let counted = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT coalesce(sum(n), 0) FROM report_counts WHERE campaign_id = ?1",
                [c],
                |r| r.get(0),
            )
            .unwrap()
        };
        let trigger = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT count(*) FROM sqlite_master
                 WHERE type = 'trigger' AND name = 'report_counts_insert'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        import(&mut conn, c, (0..5).map(ok)).unwrap();
        assert_eq!((counted(&conn), trigger(&conn)), (5, 1));
        // A later import adds through the trigger again.
        import(&mut conn, c, (0..8).map(ok)).unwrap();
        assert_eq!((counted(&conn), trigger(&conn)), (8, 1));
        // A failed first import of another campaign rolls back with the trigger in place.
        let other = ensure_campaign(&conn, "autumn").unwrap();
        let failing = (100..103).map(|i| if i == 102 { Err(()) } else { ok(i) });
        assert!(import(&mut conn, other, failing).is_err());
        assert_eq!(trigger(&conn), 1);
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM recipients WHERE campaign_id = ?1",
                [other],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 0);
    }

    /// The raw counters, sorted: (domain, state, relay_accepted, n).
    fn raw_counts(conn: &Connection) -> Vec<(String, String, bool, i64)> {
        conn.prepare("SELECT domain, state, relay_accepted, n FROM report_counts WHERE n <> 0 ORDER BY 1, 2, 3")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// What a report reads: (state, relay_accepted, n) summed over domains, sorted.
    fn read_counts(path: &std::path::Path) -> Vec<(String, bool, u64)> {
        let mut out: std::collections::BTreeMap<(String, bool), u64> = Default::default();
        crate::store::Reader::open(path)
            .unwrap()
            .for_each_count(None, |row| {
                *out.entry((row.state.to_owned(), row.relay_accepted))
                    .or_default() += row.n;
            })
            .unwrap();
        out.into_iter().map(|((s, a), n)| (s, a, n)).collect()
    }

    #[test]
    fn claims_and_releases_write_no_counter_and_reports_still_count_rows_in_flight() {
        let (dir, mut conn, c) = ledger();
        let path = dir.path().join("l.db");
        import(&mut conn, c, (0..3).map(ok)).unwrap();
        let run = start_run(&conn, c, "localhost", "none").unwrap();
        let due = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        let before = raw_counts(&conn);
        for row in &due[..2] {
            let claimed = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: row.attempts,
            };
            assert_eq!(claim(&conn, &claimed, false).unwrap(), ClaimResult::Claimed);
        }
        assert_eq!(raw_counts(&conn), before, "a claim moves no counter");
        let pending = |n| ("pending".to_owned(), false, n);
        let sending = |n| ("sending".to_owned(), false, n);
        assert_eq!(read_counts(&path), [pending(1), sending(2)]);
        let outcome = Outcome {
            recipient_id: due[0].id,
            run_id: run,
            state: DeliveryState::Accepted,
            retry_at: None,
            attempt: AttemptRecord {
                at: now_ms(),
                port: Some(25),
                step: "message",
                code: Some(250),
                enhanced: Some("2.0.0".into()),
                reply: Some("ok".into()),
                outcome: AttemptOutcome::Accepted,
                diagnosis: None,
                relay: None,
            },
        };
        record(&conn, &outcome).unwrap();
        let accepted = ("accepted".to_owned(), true, 1);
        assert_eq!(
            read_counts(&path),
            [accepted.clone(), pending(1), sending(1)]
        );
        let given_back = raw_counts(&conn);
        release(
            &conn,
            &Release {
                recipient_id: due[1].id,
                run_id: run,
                attempt: None,
            },
        )
        .unwrap();
        assert_eq!(raw_counts(&conn), given_back, "a release moves no counter");
        assert_eq!(read_counts(&path), [accepted, pending(2)]);
    }

    #[test]
    fn a_row_is_claimed_once_and_release_restores_previous_state() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..2).map(ok)).unwrap();
        let run = start_run(&conn, c, "localhost", "none").unwrap();
        let due = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        assert_eq!(due.len(), 2);
        let claim_of = |row: &DueRow| Claim {
            recipient_id: row.id,
            run_id: run,
            expected_state: row.state,
            expected_attempts: row.attempts,
        };
        assert_eq!(
            claim(&conn, &claim_of(&due[0]), any_suppressions(&conn).unwrap()).unwrap(),
            ClaimResult::Claimed
        );
        assert_eq!(
            claim(&conn, &claim_of(&due[0]), any_suppressions(&conn).unwrap()).unwrap(),
            ClaimResult::Lost
        );
        assert_eq!(state_of(&conn, due[0].id), "sending");
        // A claimed row is not due any more.
        let due_now = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        assert_eq!(due_now.len(), 1);
        release(
            &conn,
            &Release {
                recipient_id: due[0].id,
                run_id: run,
                attempt: None,
            },
        )
        .unwrap();
        assert_eq!(state_of(&conn, due[0].id), "pending");
    }

    #[test]
    fn an_outcome_for_a_row_no_longer_sending_changes_nothing() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..1).map(ok)).unwrap();
        let run = start_run(&conn, c, "h", "none").unwrap();
        let row = &due_rows(&conn, c, 0, now_ms(), false, 10).unwrap()[0];
        // Never claimed (or recovered as unknown by another process meanwhile).
        record(
            &conn,
            &Outcome {
                recipient_id: row.id,
                run_id: run,
                state: DeliveryState::Accepted,
                retry_at: None,
                attempt: AttemptRecord {
                    at: 1_000,
                    port: Some(25),
                    step: "message",
                    code: Some(250),
                    enhanced: None,
                    reply: Some("ok".into()),
                    outcome: AttemptOutcome::Accepted,
                    diagnosis: None,
                    relay: None,
                },
            },
        )
        .unwrap();
        assert_eq!(state_of(&conn, row.id), "pending");
        let attempts: i64 = conn
            .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 0);
    }

    #[test]
    fn deferred_rows_wait_for_retry_time_and_unknown_needs_opt_in() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..2).map(ok)).unwrap();
        let run = start_run(&conn, c, "h", "none").unwrap();
        let due = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        for (row, state) in due
            .iter()
            .zip([DeliveryState::Deferred, DeliveryState::Unknown])
        {
            let cl = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: 0,
            };
            assert_eq!(
                claim(&conn, &cl, any_suppressions(&conn).unwrap()).unwrap(),
                ClaimResult::Claimed
            );
            record(
                &conn,
                &Outcome {
                    recipient_id: row.id,
                    run_id: run,
                    state,
                    retry_at: Some(5_000),
                    attempt: AttemptRecord {
                        at: 1_000,
                        port: Some(25),
                        step: "rcpt",
                        code: Some(451),
                        enhanced: Some("4.3.0".into()),
                        reply: Some("try later".into()),
                        outcome: AttemptOutcome::charged(state).unwrap(),
                        diagnosis: None,
                        relay: None,
                    },
                },
            )
            .unwrap();
        }
        assert!(due_rows(&conn, c, 0, 4_999, false, 10).unwrap().is_empty());
        let at_retry = due_rows(&conn, c, 0, 5_000, false, 10).unwrap();
        assert_eq!(at_retry.len(), 1);
        assert_eq!(at_retry[0].attempts, 1);
        assert_eq!(at_retry[0].first_attempt_at, Some(1_000));
        assert_eq!(due_rows(&conn, c, 0, 5_000, true, 10).unwrap().len(), 2);
        assert_eq!(deferred_summary(&conn, c).unwrap(), (1, Some(5_000)));
    }

    /// The claim path's statements are prepared once per connection, not once per claim.
    #[test]
    fn claims_never_re_prepare_their_statements() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..20).map(ok)).unwrap();
        let run = start_run(&conn, c, "localhost", "none").unwrap();
        for row in due_rows(&conn, c, 0, now_ms(), false, 100).unwrap() {
            let claimed = claim(
                &conn,
                &Claim {
                    recipient_id: row.id,
                    run_id: run,
                    expected_state: row.state,
                    expected_attempts: row.attempts,
                },
                false,
            )
            .unwrap();
            assert_eq!(claimed, ClaimResult::Claimed);
        }
        let stmt = conn.prepare_cached(SUPPRESSION_OF_RECIPIENT).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn suppressed_address_is_never_claimed() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..1).map(ok)).unwrap();
        conn.execute(
            "INSERT INTO suppressions (email, reason, source, created_at)
             VALUES ('user0@example.test', 'complaint', 'test', 0)",
            [],
        )
        .unwrap();
        let run = start_run(&conn, c, "h", "none").unwrap();
        let row = &due_rows(&conn, c, 0, now_ms(), false, 10).unwrap()[0];
        let cl = Claim {
            recipient_id: row.id,
            run_id: run,
            expected_state: row.state,
            expected_attempts: 0,
        };
        assert_eq!(
            claim(&conn, &cl, any_suppressions(&conn).unwrap()).unwrap(),
            ClaimResult::Suppressed
        );
        assert_eq!(state_of(&conn, row.id), "suppressed");
    }

    #[test]
    fn recovery_turns_sending_into_unknown_with_evidence() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..3).map(ok)).unwrap();
        let run = start_run(&conn, c, "h", "none").unwrap();
        let due = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        for row in &due[..2] {
            let cl = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: 0,
            };
            claim(&conn, &cl, any_suppressions(&conn).unwrap()).unwrap();
        }
        // No journal: either claim may have gone out.
        let recovered = recover_interrupted(&mut conn, &Started::Unknown).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                unknown: 2,
                returned: 0
            }
        );
        assert_eq!(state_of(&conn, due[0].id), "unknown");
        assert_eq!(state_of(&conn, due[2].id), "pending");
        let evidence: i64 = conn
            .query_row(
                "SELECT count(*) FROM attempts WHERE outcome = 'unknown' AND run_id = ?1",
                [run],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(evidence, 2);
        let outcome: String = conn
            .query_row("SELECT outcome FROM runs WHERE id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(outcome, "crashed");
    }

    #[test]
    fn recovery_gives_back_claims_the_journal_shows_never_started() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..4).map(ok)).unwrap();
        // A deferred row claimed and never started must go back to deferred, attempts kept.
        let run0 = start_run(&conn, c, "h", "none").unwrap();
        let first = &due_rows(&conn, c, 0, now_ms(), false, 10).unwrap()[3];
        let cl = Claim {
            recipient_id: first.id,
            run_id: run0,
            expected_state: first.state,
            expected_attempts: 0,
        };
        claim(&conn, &cl, any_suppressions(&conn).unwrap()).unwrap();
        record(
            &conn,
            &Outcome {
                recipient_id: first.id,
                run_id: run0,
                state: DeliveryState::Deferred,
                retry_at: Some(0),
                attempt: AttemptRecord {
                    at: 1,
                    port: Some(25),
                    step: "rcpt",
                    code: Some(451),
                    enhanced: None,
                    reply: Some("later".into()),
                    outcome: AttemptOutcome::Deferred,
                    diagnosis: None,
                    relay: None,
                },
            },
        )
        .unwrap();
        let run = start_run(&conn, c, "h", "none").unwrap();
        let due = due_rows(&conn, c, 0, now_ms(), false, 10).unwrap();
        assert_eq!(due.len(), 4);
        for row in &due {
            let cl = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: row.attempts,
            };
            assert_eq!(
                claim(&conn, &cl, any_suppressions(&conn).unwrap()).unwrap(),
                ClaimResult::Claimed
            );
        }
        // Row 0's transaction started in this run; row 1 was started by an earlier run only.
        let started = Started::These([(run.0, due[0].id.0), (run0.0, due[1].id.0)].into());
        let recovered = recover_interrupted(&mut conn, &started).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                unknown: 1,
                returned: 3
            }
        );
        assert_eq!(state_of(&conn, due[0].id), "unknown");
        assert_eq!(state_of(&conn, due[1].id), "pending");
        assert_eq!(state_of(&conn, due[2].id), "pending");
        assert_eq!(state_of(&conn, due[3].id), "deferred");
        // Only the started one gets an attempt; the returned ones are not charged.
        let (attempts, charged): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM attempts WHERE run_id = ?1),
                        (SELECT sum(attempts) FROM recipients)",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((attempts, charged), (1, 1));
    }

    /// Every row of the tables a claim or an outcome writes (counters included), as text.
    fn dump(conn: &Connection) -> Vec<String> {
        [
            "recipients",
            "attempts",
            "report_counts",
            "report_minutes",
            "report_reasons",
            "report_diagnoses",
        ]
        .iter()
        .map(|table| {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    Ok((0..columns)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join(" | "))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows.sort();
            format!("{table}:\n{}", rows.join("\n"))
        })
        .collect()
    }

    /// A ledger of `n` contacts and a run, two relays named, every row claimed but `skip`.
    fn claimed(n: u32, skip: &[u32]) -> (tempfile::TempDir, Connection, RunId, Vec<RelayId>) {
        let (dir, mut conn, c) = ledger();
        import(&mut conn, c, (0..n).map(ok)).unwrap();
        let run = start_run(&conn, c, "localhost", "none").unwrap();
        let relays =
            super::super::relays::ensure(&conn, &["a".to_owned(), "b".to_owned()]).unwrap();
        for row in due_rows(&conn, c, 0, now_ms(), false, 10_000).unwrap() {
            if skip.contains(&u32::try_from(row.id.0 - 1).unwrap()) {
                continue;
            }
            let claim_of = Claim {
                recipient_id: row.id,
                run_id: run,
                expected_state: row.state,
                expected_attempts: row.attempts,
            };
            assert_eq!(
                claim(&conn, &claim_of, false).unwrap(),
                ClaimResult::Claimed
            );
        }
        (dir, conn, run, relays)
    }

    /// Outcomes of every kind a transaction ends with, replies with quotes, non-ASCII text and
    /// NULLs, diagnoses and relays, for recipients 1..=n.
    fn outcomes(n: u32, run: RunId, relays: &[RelayId]) -> Vec<Outcome> {
        (0..n)
            .map(|i| {
                let (state, outcome, code, enhanced) = match i % 5 {
                    0 | 1 => (
                        DeliveryState::Accepted,
                        AttemptOutcome::Accepted,
                        250,
                        "2.0.0",
                    ),
                    2 => (
                        DeliveryState::Deferred,
                        AttemptOutcome::Deferred,
                        451,
                        "4.7.1",
                    ),
                    3 => (
                        DeliveryState::BouncedHard,
                        AttemptOutcome::BouncedHard,
                        550,
                        "5.1.1",
                    ),
                    _ => (DeliveryState::Unknown, AttemptOutcome::Unknown, 0, ""),
                };
                let answered = state != DeliveryState::Unknown;
                Outcome {
                    recipient_id: RecipientId(i64::from(i) + 1),
                    run_id: run,
                    state,
                    retry_at: (state == DeliveryState::Deferred)
                        .then_some(9_000_000 + i64::from(i)),
                    attempt: AttemptRecord {
                        // Two minutes: the per-minute counters get two rows.
                        at: 1_780_000_000_000 + i64::from(i) * 1_000,
                        port: (i % 7 != 0).then_some(587),
                        step: if answered { "message" } else { "data" },
                        code: answered.then_some(code),
                        enhanced: answered.then(|| enhanced.to_owned()),
                        reply: answered.then(|| format!("{enhanced} it's \"ok\" für #{i}")),
                        outcome,
                        diagnosis: (i % 5 == 2).then_some("rate-limited"),
                        relay: (i % 3 != 0).then(|| relays[(i % 2) as usize]),
                    },
                }
            })
            .collect()
    }

    #[test]
    fn outcomes_recorded_together_leave_the_ledger_that_one_at_a_time_leaves() {
        // 255 = 3 × 64 + 32 + 16 + 8 + 4 + 2 + 1 rows: every statement size, and 64 repeats.
        // Recipient 10 was never claimed: neither path may charge it or give it an attempt,
        // which leaves 254 attempts, every size but 1 for the INSERT.
        let (_a, one, run, relays) = claimed(255, &[9]);
        let (_b, many, run_b, relays_b) = claimed(255, &[9]);
        assert_eq!((run, &relays), (run_b, &relays_b));
        let all = outcomes(255, run, &relays);
        for o in &all {
            record(&one, o).unwrap();
        }
        let refs: Vec<&Outcome> = all.iter().collect();
        record_many(&many, &refs).unwrap();
        let expected = dump(&one);
        assert_eq!(dump(&many), expected);
        let attempts: i64 = many
            .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(attempts, 254, "one attempt per claimed recipient");
        assert_eq!(state_of(&many, RecipientId(10)), "pending");
    }

    #[test]
    fn a_recipient_twice_among_outcomes_is_charged_once_as_in_order() {
        let (_a, one, run, relays) = claimed(6, &[]);
        let (_b, many, ..) = claimed(6, &[]);
        let mut all = outcomes(6, run, &relays);
        // Recipient 3 again, as a later answer: the first outcome moved it out of `sending`.
        let mut again = all[2].clone();
        again.state = DeliveryState::Accepted;
        again.attempt.outcome = AttemptOutcome::Accepted;
        all.insert(4, again);
        for o in &all {
            record(&one, o).unwrap();
        }
        record_many(&many, &all.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(dump(&many), dump(&one));
        assert_eq!(state_of(&many, RecipientId(3)), "deferred");
    }

    #[test]
    fn an_outcome_that_is_not_one_stops_the_whole_group() {
        let (_d, conn, run, relays) = claimed(3, &[]);
        let mut all = outcomes(3, run, &relays);
        all[1].state = DeliveryState::Pending;
        let before = dump(&conn);
        let err = record_many(&conn, &all.iter().collect::<Vec<_>>()).unwrap_err();
        assert!(err.to_string().contains("not the outcome"), "{err}");
        assert_eq!(dump(&conn), before, "nothing of the group was written");
    }

    #[test]
    fn claims_made_together_answer_as_claims_made_one_at_a_time() {
        let setup = || {
            let (dir, mut conn, c) = ledger();
            import(&mut conn, c, (0..100).map(ok)).unwrap();
            let run = start_run(&conn, c, "localhost", "none").unwrap();
            // Recipient 7 is `sending` (another worker has it), 8 was deferred once, 9 was
            // removed from the contacts file.
            conn.execute_batch(
                "UPDATE recipients SET state = 'sending', claimed_from = 'pending' WHERE id = 7;
                 UPDATE recipients SET state = 'deferred', attempts = 1 WHERE id = 8;
                 UPDATE recipients SET removed_at = 1 WHERE id = 9;",
            )
            .unwrap();
            (dir, conn, run)
        };
        let (_a, one, run) = setup();
        let (_b, many, _) = setup();
        let claims: Vec<Claim> = (1..=100)
            .map(|id| Claim {
                recipient_id: RecipientId(id),
                run_id: run,
                expected_state: match id {
                    8 => DeliveryState::Deferred,
                    // Stale: the dispatcher saw a row that has moved since.
                    11 => DeliveryState::Deferred,
                    // Not a state a claim may start from.
                    12 => DeliveryState::Accepted,
                    _ => DeliveryState::Pending,
                },
                expected_attempts: u32::from(id == 8 || id == 13),
            })
            .collect();
        let answers: Vec<ClaimResult> = claims
            .iter()
            .map(|c| claim(&one, c, false).unwrap())
            .collect();
        assert_eq!(claim_many(&many, &claims, false).unwrap(), answers);
        assert_eq!(dump(&many), dump(&one));
        let lost: Vec<i64> = claims
            .iter()
            .zip(&answers)
            .filter(|(_, a)| **a == ClaimResult::Lost)
            .map(|(c, _)| c.recipient_id.0)
            .collect();
        assert_eq!(lost, [7, 9, 11, 12, 13]);
    }

    #[test]
    fn a_recipient_twice_in_a_claim_block_is_claimed_once() {
        let (_d, mut conn, c) = ledger();
        import(&mut conn, c, (0..3).map(ok)).unwrap();
        let run = start_run(&conn, c, "localhost", "none").unwrap();
        let claim_of = |id| Claim {
            recipient_id: RecipientId(id),
            run_id: run,
            expected_state: DeliveryState::Pending,
            expected_attempts: 0,
        };
        let answers = claim_many(&conn, &[claim_of(1), claim_of(2), claim_of(1)], false).unwrap();
        assert_eq!(
            answers,
            [
                ClaimResult::Claimed,
                ClaimResult::Claimed,
                ClaimResult::Lost
            ]
        );
    }

    #[test]
    fn rows_are_cut_into_a_few_statement_sizes_in_order() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..=300usize {
            let rows: Vec<usize> = (0..n).collect();
            let pieces: Vec<&[usize]> = statement_sized(&rows).collect();
            assert_eq!(pieces.concat(), rows, "every row once, in order");
            for piece in &pieces {
                assert!(piece.len().is_power_of_two() && piece.len() <= MAX_ROWS);
                sizes.insert(piece.len());
            }
            assert!(pieces.windows(2).all(|w| w[0].len() >= w[1].len()));
        }
        assert_eq!(sizes.len(), 7, "1, 2, 4, ... 64: {sizes:?}");
    }
}
