//! The one query module behind `mailroom report` and `mailroom dashboard`: both read the ledger
//! through these functions, so the numbers they show cannot disagree.
//!
//! Everything here takes a read-only connection (`store::open_read_only`) and returns owned
//! snapshot structs; nothing writes, nothing prints, nothing knows about terminals. Formatting
//! lives in `report/format.rs` (text, JSON, CSV, Markdown) and `report/html.rs`.
//!
//! Counts come from the trigger-maintained counter tables of `migrations/0004_report.sql`, so a
//! refresh reads a few hundred rows even when the ledger holds a million recipients. Drill-down
//! queries read the `attempts` and `events` tables themselves, always with a row limit.
//!
//! Wording: a 250 after DATA is "accepted by the relay", never "delivered".

mod format;
mod html;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use format::{dense_series, write_csv, write_json, write_markdown, write_text};
pub use html::write_html;

use crate::model::DeliveryState;
use crate::store;

/// How many recent attempts/events a snapshot carries.
pub const RECENT_LIMIT: usize = 50;
/// How many rows a drill-down returns at most (newest first).
pub const DRILL_LIMIT: usize = 300;
/// Under this many recipients a domain drill-down walks the domain's recipients; above it, the
/// newest attempts (see `domain_history`).
const SMALL_DOMAIN: u64 = 5_000;

/// Errors reading a ledger for a report or the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot read ledger {path}")]
    Query {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot write the report of ledger {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "ledger {path} has no campaign yet\n\nRun `mailroom send CAMPAIGN` first; the ledger \
         records a campaign when its first send starts."
    )]
    NoCampaigns { path: PathBuf },
    #[error(
        "ledger {path} has no campaign named `{name}` yet (it has: {known})\n\nIf `{name}` has \
         not been sent, run `mailroom send` first; otherwise pass one of those names."
    )]
    UnknownCampaign {
        path: PathBuf,
        name: String,
        known: String,
    },
    #[error(
        "ledger {path} holds several campaigns ({known})\n\nSay which one with --campaign NAME."
    )]
    Ambiguous { path: PathBuf, known: String },
}

/// A ledger open for reading, remembering its path for error messages.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// Opens an existing ledger read-only (upgrading it first, once, if it predates the report
    /// counters).
    ///
    /// # Errors
    /// `Error::Store` with `store::Error::Missing` when the file does not exist.
    pub fn open(path: &Path) -> Result<Ledger, Error> {
        let mut conn = store::open_read_only(path)?;
        let has_counters = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'report_counts'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map_err(|source| Error::Query {
                path: path.to_owned(),
                source,
            })?
            > 0;
        if !has_counters {
            // A ledger written by a mailroom without the report counters: upgrading it is what
            // any writing command would do first, and the only way to read it at scale. The
            // migration backfills the counters in one transaction.
            drop(conn);
            drop(store::open(path)?);
            conn = store::open_read_only(path)?;
        }
        Ok(Ledger {
            conn,
            path: path.to_owned(),
        })
    }

    /// Wraps a connection the caller opened (tests, embedding).
    pub fn from_connection(conn: Connection, path: &Path) -> Ledger {
        Ledger {
            conn,
            path: path.to_owned(),
        }
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Query {
            path: self.path.clone(),
            source,
        }
    }

    /// Every campaign with its progress, newest first.
    ///
    /// # Errors
    /// When a query fails (e.g. a ledger older than the report counters cannot be read
    /// read-only: open it once with a writing command to migrate it).
    pub fn campaigns(&self) -> Result<Vec<CampaignSummary>, Error> {
        let rows = self.campaign_rows()?;
        let (mut counts, _) = self.scan_counts(None)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let totals = counts.remove(&row.id).unwrap_or_default();
                row.summary(totals)
            })
            .collect())
    }

    /// The campaign list and the report of `name` (or of the newest campaign), reading the
    /// counters once: what a dashboard refresh needs. The report is `None` when the ledger has
    /// no campaign; an unknown name falls back to the newest campaign.
    ///
    /// # Errors
    /// When a query fails.
    pub fn overview(
        &self,
        name: Option<&str>,
    ) -> Result<(Vec<CampaignSummary>, Option<CampaignReport>), Error> {
        let rows = self.campaign_rows()?;
        let selected = name
            .and_then(|name| rows.iter().find(|r| r.name == name))
            .or(rows.first())
            .map(|r| r.id);
        let (mut counts, domains) = self.scan_counts(selected)?;
        let summaries: Vec<CampaignSummary> = rows
            .into_iter()
            .map(|row| {
                let totals = counts.remove(&row.id).unwrap_or_default();
                row.summary(totals)
            })
            .collect();
        let report = match summaries.iter().find(|s| Some(s.id) == selected) {
            Some(summary) => Some(self.report_from(summary, domains)?),
            None => None,
        };
        Ok((summaries, report))
    }

    fn campaign_rows(&self) -> Result<Vec<CampaignRow>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.name, c.created_at, \
                   (SELECT min(started_at) FROM runs WHERE campaign_id = c.id), \
                   (SELECT max(started_at) FROM runs WHERE campaign_id = c.id), \
                   (SELECT count(*) FROM runs WHERE campaign_id = c.id AND finished_at IS NULL) \
                 FROM campaigns c ORDER BY c.created_at DESC, c.id DESC",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(CampaignRow {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: row.get(2)?,
                    started_at: row.get(3)?,
                    last_run_at: row.get(4)?,
                    open_runs: row.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// One pass over the counters in primary-key order (no sort): totals per campaign, and
    /// for `domains_of` its per-domain rows. Rows of one domain are consecutive, so each
    /// domain row is built without a map, and strings are borrowed, not copied, per row.
    fn scan_counts(
        &self,
        domains_of: Option<i64>,
    ) -> Result<(BTreeMap<i64, Totals>, Vec<DomainRow>), Error> {
        let fail = self.fail();
        let mut totals: BTreeMap<i64, Totals> = BTreeMap::new();
        let mut domains: Vec<DomainRow> = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT campaign_id, domain, state, relay_accepted, n FROM report_counts \
                 WHERE n > 0 ORDER BY campaign_id, domain, state, relay_accepted",
            )
            .map_err(&fail)?;
        let mut rows = stmt.query([]).map_err(&fail)?;
        while let Some(row) = rows.next().map_err(&fail)? {
            let text = |i| -> Result<&str, Error> {
                row.get_ref(i)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(&fail)
            };
            let campaign = row.get::<_, i64>(0).map_err(&fail)?;
            let state = text(2)?;
            let relay = row.get::<_, i64>(3).map_err(&fail)? != 0;
            let n = row.get::<_, i64>(4).map_err(&fail)?;
            totals.entry(campaign).or_default().add(state, relay, n);
            if Some(campaign) == domains_of {
                let domain = text(1)?;
                match domains.last_mut() {
                    Some(last) if last.domain == domain => last.totals.add(state, relay, n),
                    _ => {
                        let mut row = DomainRow::new(domain.to_owned());
                        row.totals.add(state, relay, n);
                        domains.push(row);
                    }
                }
            }
        }
        Ok((totals, domains))
    }

    /// Picks a campaign by name, or the only one when `name` is `None`.
    ///
    /// # Errors
    /// `NoCampaigns`, `UnknownCampaign` or `Ambiguous`, each with a fix.
    pub fn find_campaign(&self, name: Option<&str>) -> Result<CampaignSummary, Error> {
        let mut all = self.campaigns()?;
        let known = || {
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if all.is_empty() {
            return Err(Error::NoCampaigns {
                path: self.path.clone(),
            });
        }
        match name {
            Some(name) => match all.iter().position(|c| c.name == name) {
                Some(index) => Ok(all.swap_remove(index)),
                None => Err(Error::UnknownCampaign {
                    path: self.path.clone(),
                    name: name.to_owned(),
                    known: known(),
                }),
            },
            None if all.len() == 1 => Ok(all.swap_remove(0)),
            None => Err(Error::Ambiguous {
                path: self.path.clone(),
                known: known(),
            }),
        }
    }

    /// Everything the report and the dashboard show about one campaign.
    ///
    /// # Errors
    /// When a query fails.
    pub fn campaign_report(&self, summary: &CampaignSummary) -> Result<CampaignReport, Error> {
        let fail = self.fail();
        let mut domains: Vec<DomainRow> = Vec::new();
        {
            // As in `scan_counts`, for one campaign only (its primary-key range).
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT domain, state, relay_accepted, n FROM report_counts \
                     WHERE campaign_id = ?1 AND n > 0 ORDER BY campaign_id, domain",
                )
                .map_err(&fail)?;
            let mut rows = stmt.query([summary.id]).map_err(&fail)?;
            while let Some(row) = rows.next().map_err(&fail)? {
                let text = |i| -> Result<&str, Error> {
                    row.get_ref(i)
                        .and_then(|v| v.as_str().map_err(Into::into))
                        .map_err(&fail)
                };
                let domain = text(0)?;
                let state = text(1)?;
                let relay = row.get::<_, i64>(2).map_err(&fail)? != 0;
                let n = row.get::<_, i64>(3).map_err(&fail)?;
                match domains.last_mut() {
                    Some(last) if last.domain == domain => last.totals.add(state, relay, n),
                    _ => {
                        let mut row = DomainRow::new(domain.to_owned());
                        row.totals.add(state, relay, n);
                        domains.push(row);
                    }
                }
            }
        }
        self.report_from(summary, domains)
    }

    /// The rest of a campaign's report, given its domain rows (in any order).
    fn report_from(
        &self,
        summary: &CampaignSummary,
        mut domains: Vec<DomainRow>,
    ) -> Result<CampaignReport, Error> {
        let fail = self.fail();
        let id = summary.id;
        let mut totals = Totals::default();
        for row in &domains {
            totals.absorb(&row.totals);
        }
        for row in &mut domains {
            row.finish();
        }
        domains.sort_by(|a, b| {
            b.totals
                .recipients
                .cmp(&a.totals.recipients)
                .then_with(|| a.domain.cmp(&b.domain))
        });

        let mut reasons = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT source, status, outcome, n, example FROM report_reasons \
                     WHERE campaign_id = ?1 AND n > 0",
                )
                .map_err(&fail)?;
            let rows = stmt
                .query_map([id], |row| {
                    Ok(ReasonRow {
                        source: if row.get::<_, String>(0)? == "event" {
                            Source::Feedback
                        } else {
                            Source::Attempt
                        },
                        status: row.get(1)?,
                        outcome: row.get(2)?,
                        count: row.get::<_, i64>(3)? as u64,
                        example: row.get(4)?,
                    })
                })
                .map_err(&fail)?;
            for row in rows {
                reasons.push(row.map_err(&fail)?);
            }
        }
        reasons.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.status.cmp(&b.status))
                .then_with(|| a.outcome.cmp(&b.outcome))
        });

        let mut series: Vec<MinutePoint> = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT minute, outcome, n FROM report_minutes \
                     WHERE campaign_id = ?1 AND n > 0 ORDER BY minute",
                )
                .map_err(&fail)?;
            let rows = stmt
                .query_map([id], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(&fail)?;
            for row in rows {
                let (minute, outcome, n) = row.map_err(&fail)?;
                let point = match series.last_mut() {
                    Some(last) if last.minute == minute => last,
                    _ => {
                        series.push(MinutePoint {
                            minute,
                            attempts: 0,
                            accepted: 0,
                        });
                        series.last_mut().ok_or_else(|| Error::Query {
                            path: self.path.clone(),
                            source: rusqlite::Error::InvalidQuery,
                        })?
                    }
                };
                point.attempts += n as u64;
                if outcome == DeliveryState::Accepted.as_str() {
                    point.accepted += n as u64;
                }
            }
        }

        let recent = self.recent(id, RECENT_LIMIT)?;
        let rates = Rates::of(&totals);
        Ok(CampaignReport {
            campaign: summary.clone(),
            totals,
            rates,
            domains,
            reasons,
            series,
            recent,
        })
    }

    /// The newest attempts and feedback events of a campaign, newest first.
    fn recent(&self, campaign: i64, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        let mut entries = self.history(
            Some(
                "SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port \
             FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
             WHERE r.campaign_id = ?1 ORDER BY a.id DESC LIMIT ?2",
            ),
            Some(
                "SELECT e.at, r.email, e.kind, e.action, e.status, \
               COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta \
             FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
             WHERE r.campaign_id = ?1 ORDER BY e.at DESC LIMIT ?2",
            ),
            &[&campaign, &(limit as i64)],
        )?;
        entries.truncate(limit);
        Ok(entries)
    }

    fn history(
        &self,
        attempts_sql: Option<&str>,
        events_sql: Option<&str>,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<HistoryEntry>, Error> {
        let fail = self.fail();
        let mut out = Vec::new();
        if let Some(attempts_sql) = attempts_sql {
            let mut stmt = self.conn.prepare_cached(attempts_sql).map_err(&fail)?;
            let rows = stmt
                .query_map(params, |row| {
                    Ok(HistoryEntry {
                        at: row.get(0)?,
                        email: row.get(1)?,
                        kind: EntryKind::Attempt {
                            step: row.get(2)?,
                            port: row.get(7)?,
                        },
                        code: row.get(3)?,
                        status: row.get(4)?,
                        text: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        outcome: row.get(6)?,
                    })
                })
                .map_err(&fail)?;
            for row in rows {
                out.push(row.map_err(&fail)?);
            }
        }
        if let Some(events_sql) = events_sql {
            let mut stmt = self.conn.prepare_cached(events_sql).map_err(&fail)?;
            let rows = stmt
                .query_map(params, |row| {
                    let kind: String = row.get(2)?;
                    Ok(HistoryEntry {
                        at: row.get(0)?,
                        email: row.get(1)?,
                        kind: EntryKind::Feedback {
                            action: row.get(3)?,
                            source: row.get(6)?,
                            remote_mta: row.get(7)?,
                        },
                        code: None,
                        status: row.get(4)?,
                        text: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        outcome: kind,
                    })
                })
                .map_err(&fail)?;
            for row in rows {
                out.push(row.map_err(&fail)?);
            }
        }
        // Newest first; a feedback event and the attempt it answers can share a millisecond,
        // and then the feedback (which came later) goes first.
        out.sort_by(|a, b| {
            b.at.cmp(&a.at).then_with(|| {
                matches!(b.kind, EntryKind::Feedback { .. })
                    .cmp(&matches!(a.kind, EntryKind::Feedback { .. }))
            })
        });
        Ok(out)
    }

    /// Every attempt (full reply) and later feedback for what `focus` names, newest first,
    /// at most `DRILL_LIMIT` rows.
    ///
    /// # Errors
    /// When a query fails.
    pub fn drill_down(&self, campaign: i64, focus: &Focus) -> Result<DrillDown, Error> {
        let limit = DRILL_LIMIT as i64;
        let mut entries = match focus {
            Focus::Recipient(email) => self.history(
                Some("SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port \
                 FROM recipients r JOIN attempts a ON a.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.email = ?2 ORDER BY a.id DESC LIMIT ?3"),
                Some("SELECT e.at, r.email, e.kind, e.action, e.status, \
                   COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta \
                 FROM recipients r JOIN events e ON e.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.email = ?2 ORDER BY e.at DESC LIMIT ?3"),
                &[&campaign, email, &limit],
            )?,
            Focus::Domain(domain) => {
                let size: i64 = self
                    .conn
                    .query_row(
                        "SELECT COALESCE(sum(n), 0) FROM report_counts \
                         WHERE campaign_id = ?1 AND domain = ?2",
                        params![campaign, domain],
                        |row| row.get(0),
                    )
                    .map_err(self.fail())?;
                // A small domain: walk its recipients (index) and their attempts and events. A
                // big one: walk attempts and events newest first and stop at the limit. CROSS
                // JOIN fixes SQLite's join order, which it cannot choose well without ANALYZE.
                let attempts_sql = if (size as u64) < SMALL_DOMAIN {
                    "SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port \
                     FROM recipients r CROSS JOIN attempts a ON a.recipient_id = r.id \
                     WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY a.id DESC LIMIT ?3"
                } else {
                    "SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port \
                     FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                     WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY a.id DESC LIMIT ?3"
                };
                let events_sql = if (size as u64) < SMALL_DOMAIN {
                    "SELECT e.at, r.email, e.kind, e.action, e.status, \
                       COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta \
                     FROM recipients r CROSS JOIN events e ON e.recipient_id = r.id \
                     WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY e.at DESC LIMIT ?3"
                } else {
                    "SELECT e.at, r.email, e.kind, e.action, e.status, \
                       COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta \
                     FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                     WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY e.at DESC LIMIT ?3"
                };
                self.history(
                    Some(attempts_sql),
                    Some(events_sql),
                    &[&campaign, domain, &limit],
                )?
            }
            Focus::Reason { source, status } => match source {
                Source::Attempt => self.history(
                    Some("SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port \
                     FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                     WHERE COALESCE(a.enhanced, CAST(a.code AS TEXT), '') = ?2 \
                       AND a.outcome <> 'accepted' AND r.campaign_id = ?1 \
                     ORDER BY a.id DESC LIMIT ?3"),
                    None,
                    &[&campaign, status, &limit],
                )?,
                // Newest imported first: that is the index's own order, so the limit stops
                // the walk early instead of sorting every event with this status.
                Source::Feedback => self.history(
                    None,
                    Some("SELECT e.at, r.email, e.kind, e.action, e.status, \
                       COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta \
                     FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                     WHERE COALESCE(e.status, '') = ?2 AND r.campaign_id = ?1 \
                       AND e.kind NOT IN ('delivered', 'auto_reply') \
                     ORDER BY e.id DESC LIMIT ?3"),
                    &[&campaign, status, &limit],
                )?,
            },
        };
        let truncated = entries.len() > DRILL_LIMIT;
        entries.truncate(DRILL_LIMIT);
        let recipient = match focus {
            Focus::Recipient(email) => self.recipient(campaign, email)?,
            _ => None,
        };
        Ok(DrillDown {
            focus: focus.clone(),
            recipient,
            entries,
            truncated,
        })
    }

    fn recipient(&self, campaign: i64, email: &str) -> Result<Option<RecipientRow>, Error> {
        self.conn
            .query_row(
                "SELECT email, state, last_code, last_enhanced, last_reply, attempts, \
                   last_attempt_at, relay_accepted \
                 FROM recipients WHERE campaign_id = ?1 AND email = ?2",
                params![campaign, email],
                recipient_row,
            )
            .optional()
            .map_err(self.fail())
    }

    /// Calls `each` for every recipient of a campaign in import order (for CSV). The row is
    /// borrowed from SQLite's buffers: a million-row export allocates nothing per row.
    ///
    /// # Errors
    /// When a query fails, or `each` does (its error is passed through as `Err(Ok(e))`).
    pub fn for_each_recipient<E>(
        &self,
        campaign: i64,
        mut each: impl FnMut(&RecipientRef<'_>) -> Result<(), E>,
    ) -> Result<(), Result<E, Error>> {
        let fail = |source| {
            Err(Error::Query {
                path: self.path.clone(),
                source,
            })
        };
        // Import order is rowid order: a table scan in rowid order (the unary + keeps SQLite off
        // the campaign index) streams rows without sorting them all first.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT email, state, last_code, last_enhanced, last_reply, attempts, \
                   last_attempt_at, relay_accepted \
                 FROM recipients WHERE +campaign_id = ?1 ORDER BY id",
            )
            .map_err(fail)?;
        let mut rows = stmt.query([campaign]).map_err(fail)?;
        while let Some(row) = rows.next().map_err(fail)? {
            let text =
                |i| -> rusqlite::Result<Option<&str>> { Ok(row.get_ref(i)?.as_str_or_null()?) };
            let view = (|| -> rusqlite::Result<RecipientRef<'_>> {
                Ok(RecipientRef {
                    email: text(0)?.unwrap_or(""),
                    state: text(1)?.unwrap_or(""),
                    code: row.get(2)?,
                    enhanced: text(3)?,
                    reply: text(4)?,
                    attempts: row.get::<_, i64>(5)?.max(0) as u64,
                    last_attempt_at: row.get(6)?,
                    relay_accepted: row.get::<_, i64>(7)? != 0,
                })
            })()
            .map_err(fail)?;
            each(&view).map_err(Ok)?;
        }
        Ok(())
    }
}

/// One recipient's current row, borrowed (see `Ledger::for_each_recipient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientRef<'a> {
    pub email: &'a str,
    pub state: &'a str,
    pub code: Option<i64>,
    pub enhanced: Option<&'a str>,
    pub reply: Option<&'a str>,
    pub attempts: u64,
    pub last_attempt_at: Option<i64>,
    pub relay_accepted: bool,
}

/// A `campaigns` row with its runs, before its counters are added.
struct CampaignRow {
    id: i64,
    name: String,
    created_at: i64,
    started_at: Option<i64>,
    last_run_at: Option<i64>,
    open_runs: u64,
}

impl CampaignRow {
    fn summary(self, totals: Totals) -> CampaignSummary {
        CampaignSummary {
            id: self.id,
            name: self.name,
            created_at: self.created_at,
            started_at: self.started_at,
            last_run_at: self.last_run_at,
            open_runs: self.open_runs,
            recipients: totals.recipients,
            finished: totals.finished(),
            relay_accepted: totals.relay_accepted,
        }
    }
}

fn recipient_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RecipientRow> {
    Ok(RecipientRow {
        email: row.get(0)?,
        state: row.get(1)?,
        code: row.get(2)?,
        enhanced: row.get(3)?,
        reply: row.get(4)?,
        attempts: row.get::<_, i64>(5)? as u64,
        last_attempt_at: row.get(6)?,
        relay_accepted: row.get::<_, i64>(7)? != 0,
    })
}

/// A campaign in the list: who, when, how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignSummary {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    /// First `send` run, if any.
    pub started_at: Option<i64>,
    /// Latest `send` run, if any.
    pub last_run_at: Option<i64>,
    /// Runs without a finish time: a send in progress (or one that crashed).
    pub open_runs: u64,
    pub recipients: u64,
    /// Recipients in a final state (not pending, sending or deferred).
    pub finished: u64,
    pub relay_accepted: u64,
}

impl CampaignSummary {
    /// Share of recipients in a final state, 0..=1.
    pub fn progress(&self) -> f64 {
        ratio(self.finished, self.recipients).unwrap_or(0.0)
    }
}

/// Recipients per state (each counted once) plus `relay_accepted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub recipients: u64,
    pub pending: u64,
    pub sending: u64,
    pub accepted: u64,
    pub deferred: u64,
    pub bounced_hard: u64,
    pub bounced_soft: u64,
    pub complained: u64,
    pub suppressed: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Every recipient the relay ever accepted, including those that bounced or complained later.
    pub relay_accepted: u64,
}

impl Totals {
    fn add(&mut self, state: &str, relay_accepted: bool, n: i64) {
        let n = n.max(0) as u64;
        self.recipients += n;
        if relay_accepted {
            self.relay_accepted += n;
        }
        // A state this build does not know is still a recipient: count it as unknown so the
        // state counters keep summing to the recipient count.
        let state = state.parse().unwrap_or(DeliveryState::Unknown);
        *self.slot(state) += n;
    }

    fn absorb(&mut self, other: &Totals) {
        self.recipients += other.recipients;
        self.relay_accepted += other.relay_accepted;
        for state in DeliveryState::ALL {
            *self.slot(state) += other.get(state);
        }
    }

    fn slot(&mut self, state: DeliveryState) -> &mut u64 {
        match state {
            DeliveryState::Pending => &mut self.pending,
            DeliveryState::Sending => &mut self.sending,
            DeliveryState::Accepted => &mut self.accepted,
            DeliveryState::Deferred => &mut self.deferred,
            DeliveryState::BouncedHard => &mut self.bounced_hard,
            DeliveryState::BouncedSoft => &mut self.bounced_soft,
            DeliveryState::Complained => &mut self.complained,
            DeliveryState::Suppressed => &mut self.suppressed,
            DeliveryState::Failed => &mut self.failed,
            DeliveryState::Unknown => &mut self.unknown,
        }
    }

    /// The counter for one state.
    pub fn get(&self, state: DeliveryState) -> u64 {
        match state {
            DeliveryState::Pending => self.pending,
            DeliveryState::Sending => self.sending,
            DeliveryState::Accepted => self.accepted,
            DeliveryState::Deferred => self.deferred,
            DeliveryState::BouncedHard => self.bounced_hard,
            DeliveryState::BouncedSoft => self.bounced_soft,
            DeliveryState::Complained => self.complained,
            DeliveryState::Suppressed => self.suppressed,
            DeliveryState::Failed => self.failed,
            DeliveryState::Unknown => self.unknown,
        }
    }

    /// Recipients in a final state.
    pub fn finished(&self) -> u64 {
        self.recipients - self.pending - self.sending - self.deferred
    }

    /// Recipients mailroom tried to send to and has an answer or a verdict for: everything but
    /// pending, sending and suppressed. The denominator of acceptance and bounce rates.
    pub fn attempted(&self) -> u64 {
        self.recipients - self.pending - self.sending - self.suppressed
    }

    /// Relay-accepted recipients that bounced or complained later.
    pub fn bounced_later(&self) -> u64 {
        // A later DSN moves an accepted recipient to bounced_*/complained and keeps
        // relay_accepted = 1; those are the relay-accepted ones not in `accepted`.
        self.relay_accepted.saturating_sub(self.accepted)
    }
}

/// Rates as fractions (0..=1); `None` when the denominator is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// relay_accepted / attempted.
    pub acceptance: Option<f64>,
    /// bounced_hard / attempted.
    pub hard_bounce: Option<f64>,
    /// complained / relay_accepted.
    pub complaint: Option<f64>,
}

impl Rates {
    /// The rates of a set of totals.
    pub fn of(totals: &Totals) -> Rates {
        Rates {
            acceptance: ratio(totals.relay_accepted, totals.attempted()),
            hard_bounce: ratio(totals.bounced_hard, totals.attempted()),
            complaint: ratio(totals.complained, totals.relay_accepted),
        }
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Warning thresholds for the bounce and complaint gauges (fractions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub bounce_warn: f64,
    pub bounce_alarm: f64,
    pub complaint_warn: f64,
    pub complaint_alarm: f64,
}

impl Default for Thresholds {
    /// Bounces 2 % / 5 %, complaints 0.1 % / 0.3 %: the levels at which large mailbox
    /// providers start throttling or blocking bulk senders.
    fn default() -> Self {
        Thresholds {
            bounce_warn: 0.02,
            bounce_alarm: 0.05,
            complaint_warn: 0.001,
            complaint_alarm: 0.003,
        }
    }
}

/// How worrying a rate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Alarm,
}

impl Thresholds {
    /// The level of a hard-bounce rate.
    pub fn bounce(&self, rate: Option<f64>) -> Level {
        level(rate, self.bounce_warn, self.bounce_alarm)
    }

    /// The level of a complaint rate.
    pub fn complaint(&self, rate: Option<f64>) -> Level {
        level(rate, self.complaint_warn, self.complaint_alarm)
    }
}

fn level(rate: Option<f64>, warn: f64, alarm: f64) -> Level {
    match rate {
        Some(r) if r >= alarm => Level::Alarm,
        Some(r) if r >= warn => Level::Warn,
        _ => Level::Ok,
    }
}

/// One row of the per-domain table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainRow {
    pub domain: String,
    #[serde(flatten)]
    pub totals: Totals,
    /// relay_accepted / attempted within the domain.
    pub acceptance: Option<f64>,
}

impl DomainRow {
    fn new(domain: String) -> DomainRow {
        DomainRow {
            domain,
            totals: Totals::default(),
            acceptance: None,
        }
    }

    fn finish(&mut self) {
        self.acceptance = Rates::of(&self.totals).acceptance;
    }
}

/// Where a reason was seen: an SMTP reply during the send, or feedback that came back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Attempt,
    Feedback,
}

impl Source {
    /// Short name for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Attempt => "smtp",
            Source::Feedback => "dsn/arf",
        }
    }
}

/// One row of the reasons table: a status code with what it led to and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonRow {
    pub source: Source,
    /// Enhanced status code (RFC 3463), else the basic reply code, else "" (no reply at all).
    pub status: String,
    /// Attempt outcome (deferred, bounced_hard, throttled, ...) or feedback kind (hard, soft,
    /// complaint, delayed).
    pub outcome: String,
    pub count: u64,
    /// The latest reply or diagnostic text seen with this code.
    pub example: Option<String>,
}

impl ReasonRow {
    /// The status for display: "(no reply)" when the server never answered.
    pub fn status_label(&self) -> &str {
        if self.status.is_empty() {
            "(no reply)"
        } else {
            &self.status
        }
    }
}

/// Attempts started in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinutePoint {
    /// Unix time in minutes.
    pub minute: i64,
    pub attempts: u64,
    /// Attempts the relay accepted (250 after DATA).
    pub accepted: u64,
}

/// One attempt or one piece of later feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at: i64,
    pub email: String,
    #[serde(flatten)]
    pub kind: EntryKind,
    pub code: Option<i64>,
    /// Enhanced status code of the reply or of the DSN.
    pub status: Option<String>,
    /// The full SMTP reply, or the DSN diagnostic / complaint text.
    pub text: String,
    /// Attempt outcome or feedback kind.
    pub outcome: String,
}

/// What a history entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// An SMTP attempt; `step` is where it ended.
    Attempt { step: String, port: Option<i64> },
    /// A DSN, complaint or other feedback imported later.
    Feedback {
        action: Option<String>,
        source: String,
        remote_mta: Option<String>,
    },
}

impl HistoryEntry {
    /// True for later feedback (DSN, complaint) rather than an SMTP attempt.
    pub fn is_feedback(&self) -> bool {
        matches!(self.kind, EntryKind::Feedback { .. })
    }
}

/// What a drill-down is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    Recipient(String),
    Domain(String),
    Reason { source: Source, status: String },
}

impl Focus {
    /// A heading for the drill-down.
    pub fn title(&self) -> String {
        match self {
            Focus::Recipient(email) => format!("recipient {email}"),
            Focus::Domain(domain) => format!("domain {domain}"),
            Focus::Reason { source, status } => {
                let status = if status.is_empty() {
                    "(no reply)"
                } else {
                    status
                };
                format!("reason {status} ({})", source.as_str())
            }
        }
    }
}

/// The history behind a domain, a reason or a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillDown {
    pub focus: Focus,
    /// The recipient's current row, for a recipient drill-down that found one.
    pub recipient: Option<RecipientRow>,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// More rows exist than `DRILL_LIMIT`.
    pub truncated: bool,
}

/// One recipient's current row (CSV export, recipient drill-down).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientRow {
    pub email: String,
    pub state: String,
    pub code: Option<i64>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    pub attempts: u64,
    pub last_attempt_at: Option<i64>,
    pub relay_accepted: bool,
}

/// Everything shown about one campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignReport {
    pub campaign: CampaignSummary,
    pub totals: Totals,
    pub rates: Rates,
    /// Largest first.
    pub domains: Vec<DomainRow>,
    /// Most frequent first.
    pub reasons: Vec<ReasonRow>,
    /// Oldest minute first; minutes without attempts are absent.
    pub series: Vec<MinutePoint>,
    /// Newest first.
    pub recent: Vec<HistoryEntry>,
}

/// Loads the report of one campaign (by name, or the only one) from a ledger file.
///
/// # Errors
/// Missing ledger, no or unknown campaign, or a failed query.
pub fn load(path: &Path, campaign: Option<&str>) -> Result<CampaignReport, Error> {
    let ledger = Ledger::open(path)?;
    let summary = ledger.find_campaign(campaign)?;
    ledger.campaign_report(&summary)
}

/// Formats a unix-millisecond time as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn format_time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| millis.to_string())
}

/// Formats a fraction as a percentage with two decimals under 10 % ("0.12%", "4.98%"), so a rate
/// just under a threshold never prints as the threshold itself, and one decimal above.
pub fn format_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if r > 0.0 && r < 0.1 => format!("{:.2}%", r * 100.0),
        Some(r) => format!("{:.1}%", r * 100.0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_state_names_still_count_once() {
        let mut totals = Totals::default();
        totals.add("accepted", true, 3);
        totals.add("from_the_future", false, 2);
        totals.add("bounced_hard", true, 1);
        assert_eq!(totals.recipients, 6);
        assert_eq!(totals.unknown, 2);
        assert_eq!(totals.relay_accepted, 4);
        assert_eq!(totals.bounced_later(), 1);
        let sum: u64 = DeliveryState::ALL.iter().map(|s| totals.get(*s)).sum();
        assert_eq!(sum, totals.recipients);
    }

    #[test]
    fn thresholds_levels_and_rate_formatting() {
        let t = Thresholds::default();
        assert_eq!(t.bounce(Some(0.019)), Level::Ok);
        assert_eq!(t.bounce(Some(0.02)), Level::Warn);
        assert_eq!(t.bounce(Some(0.051)), Level::Alarm);
        assert_eq!(t.complaint(Some(0.0015)), Level::Warn);
        assert_eq!(t.complaint(None), Level::Ok);
        assert_eq!(format_rate(Some(0.0012)), "0.12%");
        assert_eq!(format_rate(Some(0.5)), "50.0%");
        assert_eq!(format_rate(Some(0.0498)), "4.98%");
        assert_eq!(format_rate(Some(0.0)), "0.0%");
        assert_eq!(format_rate(None), "-");
    }
}
