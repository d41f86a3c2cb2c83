//! Every read of the ledger: the queries behind `report`, the dashboard, the dispatcher of a
//! send and its dry run (those in `sending`), as typed methods of [`Reader`] returning plain
//! values.
//!
//! A `Reader` holds a read-only connection (see `store::open_read_only`): it never migrates and
//! never writes, so pointing `report` at a file cannot change it. Report and dashboard counts
//! come from the trigger-maintained counter tables of `migrations/0004_report.sql`; drill-down
//! queries read `attempts` and `events` themselves, always with a row limit.
//!
//! This module must not format anything for people: `report` turns these rows into views.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{Error, sqlite};

mod sending;
use crate::model::{CampaignId, DeliveryState, Shard};

/// Under this many recipients a domain drill-down walks the domain's recipients; above it, the
/// newest attempts (an index walk that stops at the limit).
const SMALL_DOMAIN: u64 = 5_000;

/// A provider drill-down reads the history of at most this many of its domains (the largest
/// first, as the caller orders them).
const DRILL_DOMAINS: usize = 50;

/// A ledger open for reading.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

/// A `campaigns` row with its runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRecord {
    pub id: CampaignId,
    pub name: String,
    pub created_at: i64,
    /// First run, if any.
    pub started_at: Option<i64>,
    /// Latest run, if any.
    pub last_run_at: Option<i64>,
    /// Runs without a finish time.
    pub open_runs: u64,
}

/// One counter row (`report_counts`), borrowed from SQLite's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRef<'a> {
    pub campaign: CampaignId,
    pub domain: &'a str,
    pub state: &'a str,
    pub relay_accepted: bool,
    pub n: u64,
    /// The domain's cached provider name (`domain_providers`), if it was resolved.
    pub provider: Option<&'a str>,
}

/// Recipients in flight per (campaign, domain): (claimed from, relay accepted, how many).
type InFlight = std::collections::BTreeMap<(CampaignId, String), Vec<(String, bool, u64)>>;

/// One domain's recipients in flight, while [`Reader::for_each_count`] reads its counters.
struct Flight {
    campaign: CampaignId,
    domain: String,
    provider: Option<String>,
    rows: Vec<(String, bool, u64)>,
}

impl Flight {
    /// How many of a counter row's recipients are in fact in flight.
    fn claimed_from(&self, counted: &CountRef<'_>) -> u64 {
        self.rows
            .iter()
            .filter(|(state, accepted, _)| {
                state == counted.state && *accepted == counted.relay_accepted
            })
            .map(|(_, _, n)| n)
            .sum()
    }

    /// The domain's `sending` rows (one per value of `relay_accepted`).
    fn emit(self, each: &mut impl FnMut(CountRef<'_>)) {
        for accepted in [false, true] {
            let n: u64 = self
                .rows
                .iter()
                .filter(|(_, a, _)| *a == accepted)
                .map(|(_, _, n)| n)
                .sum();
            if n > 0 {
                each(CountRef {
                    campaign: self.campaign,
                    domain: &self.domain,
                    state: DeliveryState::Sending.as_str(),
                    relay_accepted: accepted,
                    n,
                    provider: self.provider.as_deref(),
                });
            }
        }
    }
}

/// One row of the diagnosis counters (`report_diagnoses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnosisRecord {
    /// The `crate::diagnose` key.
    pub diagnosis: String,
    pub n: u64,
    /// The latest reply or diagnostic text seen with it.
    pub example: Option<String>,
}

/// One recipient domain's complaint figures (for the circuit breaker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplaintCount {
    pub domain: String,
    pub complained: u64,
    pub relay_accepted: u64,
}

/// One row of the reasons counters (`report_reasons`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonRecord {
    /// From feedback (DSN/ARF) rather than from an SMTP attempt.
    pub feedback: bool,
    pub status: String,
    pub outcome: String,
    pub n: u64,
    pub example: Option<String>,
}

/// Attempts of one outcome started in one minute (`report_minutes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    pub minute: i64,
    pub outcome: String,
    pub n: u64,
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

/// One recipient's current row, borrowed (see [`Reader::for_each_recipient`]).
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

const ATTEMPT_COLUMNS: &str =
    "SELECT a.at, r.email, a.step, a.code, a.enhanced, a.reply, a.outcome, a.port";
const EVENT_COLUMNS: &str = "SELECT e.at, r.email, e.kind, e.action, e.status, \
     COALESCE(e.diagnostic, e.reason), e.source, e.remote_mta";
const RECIPIENT_COLUMNS: &str = "SELECT email, state, last_code, last_enhanced, last_reply, \
     attempts, last_attempt_at, relay_accepted FROM recipients";

impl Reader {
    /// Opens an existing ledger for reading only.
    ///
    /// # Errors
    /// When the file is missing, is not a mailroom ledger, needs an upgrade, or comes from a
    /// newer mailroom.
    pub fn open(path: &Path) -> Result<Reader, Error> {
        Ok(Reader {
            conn: super::open_read_only(path)?,
            path: path.to_owned(),
        })
    }

    /// [`Reader::open`], or `None` when there is no ledger yet: no file, or an empty database
    /// (a file created and never written, as `touch` or a crash at the very start of a first
    /// send leaves it), which the next `mailroom send` makes a ledger.
    ///
    /// # Errors
    /// As [`Reader::open`], but for those two.
    pub fn open_if_any(path: &Path) -> Result<Option<Reader>, Error> {
        match Reader::open(path) {
            Ok(reader) => Ok(Some(reader)),
            Err(Error::Missing { .. }) => Ok(None),
            Err(Error::NotALedger { why, .. }) if why == super::EMPTY_DATABASE => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }

    fn fail(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sqlite(&self.path)
    }

    /// Every campaign with its runs, newest first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn campaigns(&self) -> Result<Vec<CampaignRecord>, Error> {
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
                Ok(CampaignRecord {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    created_at: row.get(2)?,
                    started_at: row.get(3)?,
                    last_run_at: row.get(4)?,
                    open_runs: count(row.get(5)?),
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// Calls `each` for every non-zero counter row, of one campaign or of all, in primary-key
    /// order (campaign, domain, state), except that a domain's `sending` rows come after its
    /// other rows: rows of one domain are consecutive. Rows are borrowed, so a scan over many
    /// domains allocates nothing per row while no recipient is in flight.
    ///
    /// The counters hold a row being sent under the state it was claimed from (migration
    /// 0014, so that claims write no counter); the rows in flight are counted here and moved
    /// back under `sending`, so every state's figure is what the rows say.
    ///
    /// # Errors
    /// When a query fails.
    pub fn for_each_count(
        &self,
        campaign: Option<CampaignId>,
        mut each: impl FnMut(CountRef<'_>),
    ) -> Result<(), Error> {
        let fail = self.fail();
        // One snapshot for both queries: a send committing an outcome between them would
        // otherwise be counted in flight and under its outcome at once.
        let snapshot = self.conn.unchecked_transaction().map_err(&fail)?;
        let mut in_flight = self.in_flight(campaign)?;
        // The provider cache is joined by its primary key: one lookup per counter row.
        let mut stmt = match campaign {
            None => self.conn.prepare_cached(
                "SELECT c.campaign_id, c.domain, c.state, c.relay_accepted, c.n, p.provider \
                 FROM report_counts c LEFT JOIN domain_providers p ON p.domain = c.domain \
                 WHERE c.n > 0 ORDER BY c.campaign_id, c.domain, c.state, c.relay_accepted",
            ),
            // Its primary-key range only.
            Some(_) => self.conn.prepare_cached(
                "SELECT c.campaign_id, c.domain, c.state, c.relay_accepted, c.n, p.provider \
                 FROM report_counts c LEFT JOIN domain_providers p ON p.domain = c.domain \
                 WHERE c.campaign_id = ?1 AND c.n > 0 ORDER BY c.campaign_id, c.domain",
            ),
        }
        .map_err(&fail)?;
        let mut rows = match campaign {
            None => stmt.query([]),
            Some(id) => stmt.query([id]),
        }
        .map_err(&fail)?;
        // The domain whose rows are being read, when some of its recipients are in flight.
        let mut open: Option<Flight> = None;
        while let Some(row) = rows.next().map_err(&fail)? {
            let text = |i| -> rusqlite::Result<&str> { Ok(row.get_ref(i)?.as_str()?) };
            let mut counted = (|| {
                Ok::<_, rusqlite::Error>(CountRef {
                    campaign: row.get(0)?,
                    domain: text(1)?,
                    state: text(2)?,
                    relay_accepted: row.get::<_, i64>(3)? != 0,
                    n: count(row.get(4)?),
                    provider: row.get_ref(5)?.as_str_or_null()?,
                })
            })()
            .map_err(&fail)?;
            if open.as_ref().is_some_and(|f| {
                (f.campaign, f.domain.as_str()) != (counted.campaign, counted.domain)
            }) && let Some(done) = open.take()
            {
                done.emit(&mut each);
            }
            if open.is_none()
                && !in_flight.is_empty()
                && let Some(rows) = in_flight.remove(&(counted.campaign, counted.domain.to_owned()))
            {
                open = Some(Flight {
                    campaign: counted.campaign,
                    domain: counted.domain.to_owned(),
                    provider: counted.provider.map(str::to_owned),
                    rows,
                });
            }
            if let Some(flight) = &open {
                counted.n = counted.n.saturating_sub(flight.claimed_from(&counted));
            }
            if counted.n > 0 {
                each(counted);
            }
        }
        if let Some(done) = open {
            done.emit(&mut each);
        }
        // Only a counter table out of step with its rows leaves any: show them all the same.
        for ((campaign, domain), rows) in in_flight {
            let flight = Flight {
                campaign,
                domain,
                provider: None,
                rows,
            };
            flight.emit(&mut each);
        }
        drop(rows);
        drop(stmt);
        snapshot.finish().map_err(&fail)?;
        Ok(())
    }

    /// The recipients in flight (`sending`) of one campaign or of all, per campaign and domain:
    /// (the state each was claimed from, relay accepted, how many). A handful of rows during a
    /// run, found through the index on (campaign, state).
    fn in_flight(&self, campaign: Option<CampaignId>) -> Result<InFlight, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.campaign_id, r.domain, coalesce(r.claimed_from, 'pending'), \
                   r.relay_accepted, count(*) \
                 FROM campaigns c CROSS JOIN recipients r \
                 WHERE (?1 IS NULL OR c.id = ?1) AND r.campaign_id = c.id \
                   AND r.state = 'sending' \
                 GROUP BY 1, 2, 3, 4",
            )
            .map_err(&fail)?;
        let mut rows = stmt.query([campaign]).map_err(&fail)?;
        let mut out = InFlight::new();
        while let Some(row) = rows.next().map_err(&fail)? {
            let read = (|| {
                Ok::<_, rusqlite::Error>((
                    (row.get::<_, CampaignId>(0)?, row.get::<_, String>(1)?),
                    (
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)? != 0,
                        count(row.get(4)?),
                    ),
                ))
            })()
            .map_err(&fail)?;
            out.entry(read.0).or_default().push(read.1);
        }
        Ok(out)
    }

    /// How many recipients a campaign has in one domain.
    ///
    /// # Errors
    /// When the query fails.
    pub fn domain_size(&self, campaign: CampaignId, domain: &str) -> Result<u64, Error> {
        self.conn
            .query_row(
                "SELECT COALESCE(sum(n), 0) FROM report_counts \
                 WHERE campaign_id = ?1 AND domain = ?2",
                params![campaign, domain],
                |row| row.get(0),
            )
            .map(count)
            .map_err(self.fail())
    }

    /// The reasons counters of a campaign (any order).
    ///
    /// # Errors
    /// When the query fails.
    pub fn reasons(&self, campaign: CampaignId) -> Result<Vec<ReasonRecord>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT source, status, outcome, n, example FROM report_reasons \
                 WHERE campaign_id = ?1 AND n > 0",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([campaign], |row| {
                Ok(ReasonRecord {
                    feedback: row.get::<_, String>(0)? == "event",
                    status: row.get(1)?,
                    outcome: row.get(2)?,
                    n: count(row.get(3)?),
                    example: row.get(4)?,
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// The diagnosis counters of a campaign (any order).
    ///
    /// # Errors
    /// When the query fails.
    pub fn diagnoses(&self, campaign: CampaignId) -> Result<Vec<DiagnosisRecord>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT diagnosis, n, example FROM report_diagnoses \
                 WHERE campaign_id = ?1 AND n > 0",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([campaign], |row| {
                Ok(DiagnosisRecord {
                    diagnosis: row.get(0)?,
                    n: count(row.get(1)?),
                    example: row.get(2)?,
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// Per recipient domain of a campaign: complaints and recipients the relay accepted (the
    /// domains with neither are left out).
    ///
    /// # Errors
    /// When the query fails.
    pub fn complaint_counts(&self, campaign: CampaignId) -> Result<Vec<ComplaintCount>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT domain, \
                   COALESCE(sum(CASE WHEN state = 'complained' THEN n END), 0), \
                   COALESCE(sum(CASE WHEN relay_accepted THEN n END), 0) \
                 FROM report_counts WHERE campaign_id = ?1 AND n > 0 \
                 GROUP BY domain HAVING sum(CASE WHEN relay_accepted THEN n END) > 0",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([campaign], |row| {
                Ok(ComplaintCount {
                    domain: row.get(0)?,
                    complained: count(row.get(1)?),
                    relay_accepted: count(row.get(2)?),
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// Attempts and feedback events with one diagnosis, newest first, at most `limit` of each.
    ///
    /// # Errors
    /// When a query fails.
    pub fn diagnosis_history(
        &self,
        campaign: CampaignId,
        diagnosis: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        self.history(
            Some(
                "FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                 WHERE a.diagnosis = ?2 AND r.campaign_id = ?1 ORDER BY a.id DESC LIMIT ?3",
            ),
            Some(
                "FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                 WHERE e.diagnosis = ?2 AND r.campaign_id = ?1 ORDER BY e.id DESC LIMIT ?3",
            ),
            &[&campaign, &diagnosis, &limit_param(limit)],
        )
    }

    /// Attempts and feedback of every recipient domain in `domains`, newest first, at most
    /// `limit` of each (a provider's drill-down: its domains are known to the caller).
    ///
    /// # Errors
    /// When a query fails.
    pub fn domains_history(
        &self,
        campaign: CampaignId,
        domains: &[String],
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        let mut entries = Vec::new();
        // Small provider groups: each domain's own history, merged. The limit bounds each
        // domain's share, and the whole.
        for domain in domains.iter().take(DRILL_DOMAINS) {
            entries.extend(self.domain_history(campaign, domain, limit)?);
        }
        entries.sort_by(|a, b| {
            b.at.cmp(&a.at)
                .then_with(|| b.is_feedback().cmp(&a.is_feedback()))
        });
        entries.truncate(2 * limit);
        Ok(entries)
    }

    /// Attempts per minute and outcome of a campaign, oldest minute first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn minutes(&self, campaign: CampaignId) -> Result<Vec<MinuteCount>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT minute, outcome, n FROM report_minutes \
                 WHERE campaign_id = ?1 AND n > 0 ORDER BY minute",
            )
            .map_err(&fail)?;
        let rows = stmt
            .query_map([campaign], |row| {
                Ok(MinuteCount {
                    minute: row.get(0)?,
                    outcome: row.get(1)?,
                    n: count(row.get(2)?),
                })
            })
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// The newest attempts and feedback events of a campaign, newest first, at most `limit`.
    ///
    /// # Errors
    /// When a query fails.
    pub fn recent(&self, campaign: CampaignId, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        let mut entries = self.history(
            Some(
                "FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                 WHERE r.campaign_id = ?1 ORDER BY a.id DESC LIMIT ?2",
            ),
            Some(
                "FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                 WHERE r.campaign_id = ?1 ORDER BY e.at DESC LIMIT ?2",
            ),
            &[&campaign, &limit_param(limit)],
        )?;
        entries.truncate(limit);
        Ok(entries)
    }

    /// Every attempt and feedback event of one recipient, newest first, at most `limit` of each.
    ///
    /// # Errors
    /// When a query fails.
    pub fn recipient_history(
        &self,
        campaign: CampaignId,
        email: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        self.history(
            Some(
                "FROM recipients r JOIN attempts a ON a.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.email = ?2 ORDER BY a.id DESC LIMIT ?3",
            ),
            Some(
                "FROM recipients r JOIN events e ON e.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.email = ?2 ORDER BY e.at DESC LIMIT ?3",
            ),
            &[&campaign, &email, &limit_param(limit)],
        )
    }

    /// Attempts and feedback of one recipient domain, newest first, at most `limit` of each.
    ///
    /// # Errors
    /// When a query fails.
    pub fn domain_history(
        &self,
        campaign: CampaignId,
        domain: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        // A small domain: walk its recipients (index) and their attempts and events. A big one:
        // walk attempts and events newest first and stop at the limit. CROSS JOIN fixes
        // SQLite's join order, which it cannot choose well without ANALYZE.
        let small = self.domain_size(campaign, domain)? < SMALL_DOMAIN;
        let (attempts, events) = if small {
            (
                "FROM recipients r CROSS JOIN attempts a ON a.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY a.id DESC LIMIT ?3",
                "FROM recipients r CROSS JOIN events e ON e.recipient_id = r.id \
                 WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY e.at DESC LIMIT ?3",
            )
        } else {
            (
                "FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                 WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY a.id DESC LIMIT ?3",
                "FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                 WHERE r.campaign_id = ?1 AND r.domain = ?2 ORDER BY e.at DESC LIMIT ?3",
            )
        };
        self.history(
            Some(attempts),
            Some(events),
            &[&campaign, &domain, &limit_param(limit)],
        )
    }

    /// Attempts not accepted (or, with `feedback`, feedback events) with one status code,
    /// newest first, at most `limit`.
    ///
    /// # Errors
    /// When a query fails.
    pub fn reason_history(
        &self,
        campaign: CampaignId,
        feedback: bool,
        status: &str,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        let limit = limit_param(limit);
        let params: [&dyn rusqlite::ToSql; 3] = [&campaign, &status, &limit];
        if feedback {
            // Newest imported first: that is the index's own order, so the limit stops the walk
            // early instead of sorting every event with this status.
            self.history(
                None,
                Some(
                    "FROM events e CROSS JOIN recipients r ON r.id = e.recipient_id \
                     WHERE COALESCE(e.status, '') = ?2 AND r.campaign_id = ?1 \
                       AND e.kind NOT IN ('delivered', 'relayed', 'auto_reply') \
                     ORDER BY e.id DESC LIMIT ?3",
                ),
                &params,
            )
        } else {
            self.history(
                Some(
                    "FROM attempts a CROSS JOIN recipients r ON r.id = a.recipient_id \
                     WHERE COALESCE(a.enhanced, CAST(a.code AS TEXT), '') = ?2 \
                       AND a.outcome <> 'accepted' AND r.campaign_id = ?1 \
                     ORDER BY a.id DESC LIMIT ?3",
                ),
                None,
                &params,
            )
        }
    }

    /// Attempts (`attempts_from`: the FROM/WHERE/ORDER part of a query over `a` and `r`) and
    /// events (over `e` and `r`), merged newest first.
    fn history(
        &self,
        attempts_from: Option<&str>,
        events_from: Option<&str>,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<HistoryEntry>, Error> {
        let fail = self.fail();
        let mut out = Vec::new();
        if let Some(from) = attempts_from {
            let sql = format!("{ATTEMPT_COLUMNS} {from}");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(&fail)?;
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
        if let Some(from) = events_from {
            let sql = format!("{EVENT_COLUMNS} {from}");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(&fail)?;
            let rows = stmt
                .query_map(params, |row| {
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
                        outcome: row.get(2)?,
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
            b.at.cmp(&a.at)
                .then_with(|| b.is_feedback().cmp(&a.is_feedback()))
        });
        Ok(out)
    }

    /// One recipient's current row.
    ///
    /// # Errors
    /// When the query fails.
    pub fn recipient(
        &self,
        campaign: CampaignId,
        email: &str,
    ) -> Result<Option<RecipientRow>, Error> {
        self.conn
            .query_row(
                &format!("{RECIPIENT_COLUMNS} WHERE campaign_id = ?1 AND email = ?2"),
                params![campaign, email],
                |row| {
                    Ok(RecipientRow {
                        email: row.get(0)?,
                        state: row.get(1)?,
                        code: row.get(2)?,
                        enhanced: row.get(3)?,
                        reply: row.get(4)?,
                        attempts: count(row.get(5)?),
                        last_attempt_at: row.get(6)?,
                        relay_accepted: row.get::<_, i64>(7)? != 0,
                    })
                },
            )
            .optional()
            .map_err(self.fail())
    }

    /// Calls `each` for every recipient of a campaign in import order. The row is borrowed from
    /// SQLite's buffers: a million-row export allocates nothing per row.
    ///
    /// # Errors
    /// When a query fails (`Err(Err(_))`), or `each` does (its error is passed through as
    /// `Err(Ok(e))`).
    pub fn for_each_recipient<E>(
        &self,
        campaign: CampaignId,
        mut each: impl FnMut(&RecipientRef<'_>) -> Result<(), E>,
    ) -> Result<(), Result<E, Error>> {
        let fail = |source| Err(sqlite(&self.path)(source));
        // Import order is rowid order: a table scan in rowid order (the unary + keeps SQLite off
        // the campaign index) streams rows without sorting them all first.
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{RECIPIENT_COLUMNS} WHERE +campaign_id = ?1 ORDER BY id"
            ))
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
                    attempts: count(row.get(5)?),
                    last_attempt_at: row.get(6)?,
                    relay_accepted: row.get::<_, i64>(7)? != 0,
                })
            })()
            .map_err(fail)?;
            each(&view).map_err(Ok)?;
        }
        Ok(())
    }

    /// The id of a campaign by name, if the ledger has it.
    ///
    /// # Errors
    /// When the query fails.
    pub fn campaign_id(&self, name: &str) -> Result<Option<CampaignId>, Error> {
        self.conn
            .query_row(
                "SELECT id FROM campaigns WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.fail())
    }

    /// The shard of the campaign this ledger sends (`send --shard`), `None` for the whole
    /// campaign. A shard is recorded before the ledger holds any of the campaign's recipients,
    /// so every recipient in it belongs to that shard.
    ///
    /// # Errors
    /// When the query fails.
    pub fn campaign_shard(&self, campaign: CampaignId) -> Result<Option<Shard>, Error> {
        let recorded: Option<String> = self
            .conn
            .query_row(
                "SELECT shard FROM campaigns WHERE id = ?1",
                params![campaign],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.fail())?
            .flatten();
        // A value this build cannot read is treated as no shard: the caller then checks.
        Ok(recorded.and_then(|s| s.parse().ok()))
    }
}

/// A count read from SQLite (never negative in the ledger).
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
