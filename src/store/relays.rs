//! The relays of runs that send through several `[[relay]]` entries: their rows (one per name,
//! shared by every campaign of the ledger), the cool-offs a run gave them, and the per-relay
//! figures behind `report` and the dashboard. Attempts carry their relay in `attempts.relay_id`
//! (written by `ledger::insert_attempt`); single-`[smtp]` runs leave it NULL.
//!
//! It must not decide when a relay cools off (that is `pipeline::relays`).

use rusqlite::{Connection, OptionalExtension, params};

use super::{Error, Reader};
use crate::model::{CampaignId, RelayId, RunId};

/// One time a run took a relay out until `until` (unix ms); nobody was charged for it.
#[derive(Debug, Clone)]
pub struct Cooloff {
    pub relay: RelayId,
    pub run_id: RunId,
    pub at: i64,
    pub until: i64,
    /// What the relay did (refused the connection, TLS, AUTH, "service unavailable").
    pub reason: String,
}

/// What one relay did for a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayFigures {
    pub name: String,
    /// Attempts through this relay, charged or given back.
    pub attempts: u64,
    pub accepted: u64,
    pub deferred: u64,
    /// Hard and soft bounces at send time.
    pub bounced: u64,
    /// Attempts given back uncharged because of the relay ("slow down", out of step, refusals).
    pub failures: u64,
    /// Times a run took the relay out for its cool-off.
    pub cooloffs: u64,
    /// Why it was taken out last, if it ever was.
    pub last_cooloff: Option<String>,
}

/// The ids of `names`, creating the rows that do not exist yet (in order).
pub(super) fn ensure(conn: &Connection, names: &[String]) -> rusqlite::Result<Vec<RelayId>> {
    let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO relays (name) VALUES (?1)")?;
    let mut select = conn.prepare_cached("SELECT id FROM relays WHERE name = ?1")?;
    names
        .iter()
        .map(|name| {
            insert.execute([name])?;
            select.query_row([name], |r| r.get(0))
        })
        .collect()
}

pub(super) fn insert_cooloff(conn: &Connection, c: &Cooloff) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO relay_cooloffs (relay_id, run_id, at, until, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![c.relay, c.run_id, c.at, c.until, c.reason])?;
    Ok(())
}

impl Reader {
    /// Per-relay figures of a campaign (its attempts and its runs' cool-offs), by relay name.
    /// Empty when the campaign never sent through `[[relay]]`.
    ///
    /// # Errors
    /// When the query fails.
    pub fn relay_figures(&self, campaign: CampaignId) -> Result<Vec<RelayFigures>, Error> {
        let conn = self.connection();
        let fail = super::sqlite(self.path());
        // One pass over the campaign's relay attempts (the partial index holds only those:
        // a single-`[smtp]` campaign reads nothing), then the cool-offs of its runs.
        let mut stmt = conn
            .prepare_cached(
                "SELECT l.name, count(a.id), \
                   coalesce(sum(a.outcome = 'accepted'), 0), \
                   coalesce(sum(a.outcome = 'deferred'), 0), \
                   coalesce(sum(a.outcome IN ('bounced_hard', 'bounced_soft')), 0), \
                   coalesce(sum(a.outcome IN ('throttled', 'out_of_step', 'aborted')), 0) \
                 FROM relays l \
                 JOIN attempts a ON a.relay_id = l.id \
                 JOIN recipients r ON r.id = a.recipient_id AND r.campaign_id = ?1 \
                 GROUP BY l.id",
            )
            .map_err(&fail)?;
        let mut figures: std::collections::BTreeMap<String, RelayFigures> = stmt
            .query_map([campaign], |row| {
                let n = |i| row.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                let name: String = row.get(0)?;
                Ok((
                    name.clone(),
                    RelayFigures {
                        name,
                        attempts: n(1)?,
                        accepted: n(2)?,
                        deferred: n(3)?,
                        bounced: n(4)?,
                        failures: n(5)?,
                        ..RelayFigures::default()
                    },
                ))
            })
            .map_err(&fail)?
            .collect::<Result<_, _>>()
            .map_err(&fail)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT l.name, c.reason FROM relay_cooloffs c \
                 JOIN relays l ON l.id = c.relay_id \
                 JOIN runs u ON u.id = c.run_id AND u.campaign_id = ?1 \
                 ORDER BY c.at, c.id",
            )
            .map_err(&fail)?;
        let cooloffs = stmt
            .query_map([campaign], |row| {
                Ok((row.get::<_, String>(0)?, row.get(1)?))
            })
            .map_err(&fail)?;
        for cooloff in cooloffs {
            let (name, reason): (String, String) = cooloff.map_err(&fail)?;
            let f = figures.entry(name.clone()).or_insert_with(|| RelayFigures {
                name,
                ..RelayFigures::default()
            });
            f.cooloffs += 1;
            f.last_cooloff = Some(reason);
        }
        Ok(figures.into_values().collect())
    }

    /// Messages a relay took on since `since` (unix ms), in any campaign: the transactions it
    /// answered, whatever the answer (`[[relay]] daily_cap`).
    ///
    /// # Errors
    /// When the query fails.
    pub fn relay_sent_since(&self, name: &str, since: i64) -> Result<u64, Error> {
        let conn = self.connection();
        let fail = super::sqlite(self.path());
        let id: Option<RelayId> = conn
            .prepare_cached("SELECT id FROM relays WHERE name = ?1")
            .map_err(&fail)?
            .query_row([name], |r| r.get(0))
            .optional()
            .map_err(&fail)?;
        let Some(id) = id else { return Ok(0) };
        let n: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM attempts WHERE relay_id = ?1 AND at >= ?2 \
                 AND outcome IN ('accepted', 'deferred', 'bounced_hard', 'bounced_soft', \
                                 'failed', 'unknown')",
            )
            .map_err(&fail)?
            .query_row(params![id, since], |r| r.get(0))
            .map_err(&fail)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
