//! The one query module behind `mailroom report` and `mailroom dashboard`: both read the ledger
//! through these functions, so the numbers they show cannot disagree.
//!
//! Everything here reads through `store::Reader` (read-only: a report never migrates or writes
//! a ledger) and builds owned snapshot structs; nothing here speaks SQL, prints or knows about
//! terminals. Formatting lives in `report/format.rs` (text, JSON, CSV, Markdown) and
//! `report/html.rs`.
//!
//! Counts come from the trigger-maintained counter tables, so a refresh reads a few hundred rows
//! even when the ledger holds a million recipients; drill-downs are bounded by `DRILL_LIMIT`.
//!
//! Wording: a 250 after DATA is "accepted by the relay", never "delivered".

mod deliverability;
mod format;
mod html;
pub mod merge;
mod relays;
mod trend;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use deliverability::{DiagnosisRow, Levels, ProviderRow};
pub use format::{
    dense_series, write_csv, write_csv_rows, write_json, write_json_merged, write_markdown,
    write_merged_heading, write_text,
};
pub use html::{write_html, write_html_with_trends};
pub use trend::{CampaignTrend, ProviderTrend, TrendFormat, Trends, write_trends};

use crate::model::{CampaignId, DeliveryState};
use crate::provider::Provider;
use crate::store;
pub use crate::store::{EntryKind, HistoryEntry, RecipientRef, RecipientRow};

/// How many recent attempts/events a snapshot carries.
pub const RECENT_LIMIT: usize = 50;
/// How many rows a drill-down returns at most (newest first).
pub const DRILL_LIMIT: usize = 300;

/// Errors reading a ledger for a report or the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
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

/// A ledger open for reading, with the views `report` and the dashboard build from it.
pub struct Ledger {
    reader: store::Reader,
}

impl Ledger {
    /// Opens an existing ledger read-only (never migrating or writing it).
    ///
    /// # Errors
    /// `Error::Store` when the file does not exist, is not a mailroom ledger or needs an
    /// upgrade first.
    pub fn open(path: &Path) -> Result<Ledger, Error> {
        Ok(Ledger {
            reader: store::Reader::open(path)?,
        })
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        self.reader.path()
    }

    /// Every campaign with its progress, newest first.
    ///
    /// # Errors
    /// When a query fails.
    pub fn campaigns(&self) -> Result<Vec<CampaignSummary>, Error> {
        let rows = self.reader.campaigns()?;
        let (mut counts, _) = self.scan_counts(None)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let totals = counts.remove(&row.id).unwrap_or_default();
                CampaignSummary::of(row, totals)
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
        let rows = self.reader.campaigns()?;
        let selected = name
            .and_then(|name| rows.iter().find(|r| r.name == name))
            .or(rows.first())
            .map(|r| r.id);
        let (mut counts, domains) = self.scan_counts(selected)?;
        let summaries: Vec<CampaignSummary> = rows
            .into_iter()
            .map(|row| {
                let totals = counts.remove(&row.id).unwrap_or_default();
                CampaignSummary::of(row, totals)
            })
            .collect();
        let report = match summaries.iter().find(|s| Some(s.id) == selected) {
            Some(summary) => Some(self.report_from(summary, domains)?),
            None => None,
        };
        Ok((summaries, report))
    }

    /// One pass over every campaign's counters: totals per campaign, and for `domains_of` its
    /// per-domain rows. Rows of one domain are consecutive, so each domain row is built without
    /// a map.
    fn scan_counts(
        &self,
        domains_of: Option<CampaignId>,
    ) -> Result<(BTreeMap<CampaignId, Totals>, Vec<DomainRow>), Error> {
        let mut totals: BTreeMap<CampaignId, Totals> = BTreeMap::new();
        let mut domains: Vec<DomainRow> = Vec::new();
        self.reader.for_each_count(None, |row| {
            totals
                .entry(row.campaign)
                .or_default()
                .add(row.state, row.relay_accepted, row.n);
            if Some(row.campaign) == domains_of {
                add_domain_row(&mut domains, row);
            }
        })?;
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
        let path = self.path().to_owned();
        if all.is_empty() {
            return Err(Error::NoCampaigns { path });
        }
        match name {
            Some(name) => match all.iter().position(|c| c.name == name) {
                Some(index) => Ok(all.swap_remove(index)),
                None => Err(Error::UnknownCampaign {
                    path,
                    name: name.to_owned(),
                    known: known(),
                }),
            },
            None if all.len() == 1 => Ok(all.swap_remove(0)),
            None => Err(Error::Ambiguous {
                path,
                known: known(),
            }),
        }
    }

    /// Everything the report and the dashboard show about one campaign.
    ///
    /// # Errors
    /// When a query fails.
    pub fn campaign_report(&self, summary: &CampaignSummary) -> Result<CampaignReport, Error> {
        let mut domains: Vec<DomainRow> = Vec::new();
        self.reader
            .for_each_count(Some(summary.id), |row| add_domain_row(&mut domains, row))?;
        self.report_from(summary, domains)
    }

    /// The rest of a campaign's report, given its domain rows (in any order).
    fn report_from(
        &self,
        summary: &CampaignSummary,
        mut domains: Vec<DomainRow>,
    ) -> Result<CampaignReport, Error> {
        let id = summary.id;
        let mut totals = Totals::default();
        for row in &domains {
            totals.absorb(&row.totals);
        }
        for row in &mut domains {
            row.finish();
        }
        sort_domains(&mut domains);

        let mut reasons: Vec<ReasonRow> = self
            .reader
            .reasons(id)?
            .into_iter()
            .map(|r| ReasonRow {
                source: if r.feedback {
                    Source::Feedback
                } else {
                    Source::Attempt
                },
                status: r.status,
                outcome: r.outcome,
                count: r.n,
                example: r.example,
            })
            .collect();
        sort_reasons(&mut reasons);

        let mut series: Vec<MinutePoint> = Vec::new();
        for m in self.reader.minutes(id)? {
            if series.last().is_none_or(|last| last.minute != m.minute) {
                series.push(MinutePoint {
                    minute: m.minute,
                    attempts: 0,
                    accepted: 0,
                });
            }
            if let Some(point) = series.last_mut() {
                point.attempts += m.n;
                if m.outcome == DeliveryState::Accepted.as_str() {
                    point.accepted += m.n;
                }
            }
        }

        let recent = self.reader.recent(id, RECENT_LIMIT)?;
        let rates = Rates::of(&totals);
        let providers = deliverability::providers(&domains);
        let diagnoses = deliverability::diagnoses(self.reader.diagnoses(id)?);
        Ok(CampaignReport {
            campaign: summary.clone(),
            totals,
            rates,
            funnel: totals.funnel(),
            domains,
            providers,
            diagnoses,
            reasons,
            series,
            recent,
            test_sends: self.reader.test_sends(id, RECENT_LIMIT)?,
            test_send_count: self.reader.test_send_count(id)?,
            allowance: None,
            relays: self.relays(id)?,
        })
    }

    /// The campaign's per-relay figures when it used more than one relay, else none.
    fn relays(&self, id: CampaignId) -> Result<Vec<store::RelayFigures>, Error> {
        let relays = self.reader.relay_figures(id)?;
        Ok(if relays.len() > 1 { relays } else { Vec::new() })
    }

    /// Today's allowance of `from_domain` under `warmup` and `daily_cap` at `now` (see
    /// `schedule::today`); `None` without either.
    ///
    /// # Errors
    /// When a query fails.
    pub fn allowance(
        &self,
        from_domain: &str,
        warmup: &[u64],
        daily_cap: Option<u64>,
        now: i64,
    ) -> Result<Option<crate::schedule::Allowance>, Error> {
        if warmup.is_empty() && daily_cap.is_none() {
            return Ok(None);
        }
        let sending = self
            .reader
            .domain_sending(from_domain, now - crate::schedule::DAY_MS)?;
        Ok(crate::schedule::today(
            from_domain,
            warmup,
            daily_cap,
            sending,
            now,
        ))
    }

    /// Every attempt (full reply) and later feedback for what `focus` names, newest first,
    /// at most `DRILL_LIMIT` rows.
    ///
    /// # Errors
    /// When a query fails.
    pub fn drill_down(&self, campaign: CampaignId, focus: &Focus) -> Result<DrillDown, Error> {
        // One more than shown, to know whether there are more.
        let limit = DRILL_LIMIT + 1;
        let mut entries = match focus {
            Focus::Recipient(email) => self.reader.recipient_history(campaign, email, limit)?,
            Focus::Domain(domain) => self.reader.domain_history(campaign, domain, limit)?,
            Focus::Reason { source, status } => {
                self.reader
                    .reason_history(campaign, *source == Source::Feedback, status, limit)?
            }
            Focus::Provider(provider) => {
                let mut domains: Vec<(u64, String)> = Vec::new();
                self.reader.for_each_count(Some(campaign), |row| {
                    if deliverability::provider_of(row.domain, row.provider) != *provider {
                        return;
                    }
                    match domains.last_mut() {
                        Some((n, d)) if d == row.domain => *n += row.n,
                        _ => domains.push((row.n, row.domain.to_owned())),
                    }
                })?;
                domains.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
                let domains: Vec<String> = domains.into_iter().map(|(_, d)| d).collect();
                self.reader.domains_history(campaign, &domains, limit)?
            }
            Focus::Diagnosis(key) => self.reader.diagnosis_history(campaign, key, limit)?,
        };
        let truncated = entries.len() > DRILL_LIMIT;
        entries.truncate(DRILL_LIMIT);
        let recipient = match focus {
            Focus::Recipient(email) => self.reader.recipient(campaign, email)?,
            _ => None,
        };
        Ok(DrillDown {
            focus: focus.clone(),
            recipient,
            entries,
            truncated,
        })
    }

    /// Calls `each` for every recipient of a campaign in import order (for CSV). The row is
    /// borrowed: a million-row export allocates nothing per row.
    ///
    /// # Errors
    /// When a query fails, or `each` does (its error is passed through as `Err(Ok(e))`).
    pub fn for_each_recipient<E>(
        &self,
        campaign: CampaignId,
        each: impl FnMut(&RecipientRef<'_>) -> Result<(), E>,
    ) -> Result<(), Result<E, Error>> {
        self.reader
            .for_each_recipient(campaign, each)
            .map_err(|e| e.map_err(Error::Store))
    }
}

/// Largest domain first, then by name: the order of every domain list.
fn sort_domains(domains: &mut [DomainRow]) {
    domains.sort_by(|a, b| {
        b.totals
            .recipients
            .cmp(&a.totals.recipients)
            .then_with(|| a.domain.cmp(&b.domain))
    });
}

/// Most frequent reason first, then by status and outcome.
fn sort_reasons(reasons: &mut [ReasonRow]) {
    reasons.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.status.cmp(&b.status))
            .then_with(|| a.outcome.cmp(&b.outcome))
    });
}

/// Adds one counter row to the domain rows being built (rows of a domain are consecutive).
fn add_domain_row(domains: &mut Vec<DomainRow>, row: store::CountRef<'_>) {
    match domains.last_mut() {
        Some(last) if last.domain == row.domain => {
            last.totals.add(row.state, row.relay_accepted, row.n);
        }
        _ => {
            let mut new = DomainRow::new(
                row.domain.to_owned(),
                deliverability::provider_of(row.domain, row.provider),
            );
            new.totals.add(row.state, row.relay_accepted, row.n);
            domains.push(new);
        }
    }
}

/// A campaign in the list: who, when, how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignSummary {
    #[serde(skip)]
    pub id: CampaignId,
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
    /// Recipients tried (not pending, sending or suppressed): the bounce rate's denominator.
    pub attempted: u64,
    /// Delivery confirmed by a success DSN.
    pub delivered: u64,
    pub bounced_hard: u64,
    pub complained: u64,
}

impl CampaignSummary {
    fn of(row: store::CampaignRecord, totals: Totals) -> CampaignSummary {
        CampaignSummary {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            started_at: row.started_at,
            last_run_at: row.last_run_at,
            open_runs: row.open_runs,
            recipients: totals.recipients,
            finished: totals.finished(),
            relay_accepted: totals.relay_accepted,
            attempted: totals.attempted(),
            delivered: totals.delivered,
            bounced_hard: totals.bounced_hard,
            complained: totals.complained,
        }
    }

    /// Hard bounces / attempted, as in [`Rates`].
    pub fn hard_bounce_rate(&self) -> Option<f64> {
        ratio(self.bounced_hard, self.attempted)
    }

    /// Complaints / recipients accepted by the relay.
    pub fn complaint_rate(&self) -> Option<f64> {
        ratio(self.complained, self.relay_accepted)
    }

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
    /// Accepted by the relay and nothing heard since (falls as success DSNs arrive).
    pub accepted: u64,
    /// Delivery confirmed by the receiving side (a success DSN).
    pub delivered: u64,
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
    fn add(&mut self, state: &str, relay_accepted: bool, n: u64) {
        self.recipients += n;
        if relay_accepted {
            self.relay_accepted += n;
        }
        // A state this build does not know is still a recipient: count it as unknown so the
        // state counters keep summing to the recipient count.
        let state = state.parse().unwrap_or(DeliveryState::Unknown);
        *self.slot(state) += n;
    }

    /// Takes one recipient in `state` away (a second copy of a person, see `merge`).
    fn remove(&mut self, state: DeliveryState, relay_accepted: bool) {
        self.recipients = self.recipients.saturating_sub(1);
        if relay_accepted {
            self.relay_accepted = self.relay_accepted.saturating_sub(1);
        }
        let slot = self.slot(state);
        *slot = slot.saturating_sub(1);
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
            DeliveryState::Delivered => &mut self.delivered,
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
            DeliveryState::Delivered => self.delivered,
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
        // relay_accepted = 1; those are the relay-accepted ones neither still `accepted` nor
        // `delivered` (a success DSN sets relay_accepted too, even after `unknown`).
        self.relay_accepted
            .saturating_sub(self.accepted)
            .saturating_sub(self.delivered)
    }

    /// The funnel of what the relay accepted: confirmed delivered, bounced or complained later,
    /// and no news yet.
    pub fn funnel(&self) -> Funnel {
        Funnel {
            relay_accepted: self.relay_accepted,
            delivered: self.delivered,
            bounced_later: self.bounced_later(),
            no_news: self.accepted,
        }
    }
}

/// What became of the messages the relay accepted: `delivered + bounced_later + no_news ==
/// relay_accepted`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Funnel {
    pub relay_accepted: u64,
    /// Confirmed by a success DSN.
    pub delivered: u64,
    /// A DSN or complaint came back after the relay's 250.
    pub bounced_later: u64,
    /// Still only accepted: no DSN either way (most relays send success DSNs only on request,
    /// and many receivers never send one).
    pub no_news: u64,
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Alarm,
}

impl Thresholds {
    /// The levels a mailbox provider publishes (`provider::thresholds`).
    pub fn for_provider(provider: Provider) -> Thresholds {
        let t = crate::provider::thresholds(provider);
        Thresholds {
            bounce_warn: t.bounce_warn,
            bounce_alarm: t.bounce_alarm,
            complaint_warn: t.complaint_warn,
            complaint_alarm: t.complaint_alarm,
        }
    }

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
    /// Who hosts the domain's mail (`unknown` until its MX is resolved, unless it is a
    /// well-known consumer domain).
    pub provider: Provider,
    #[serde(flatten)]
    pub totals: Totals,
    /// relay_accepted / attempted within the domain.
    pub acceptance: Option<f64>,
}

impl DomainRow {
    fn new(domain: String, provider: Provider) -> DomainRow {
        DomainRow {
            domain,
            provider,
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

/// What a drill-down is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Focus {
    Recipient(String),
    Domain(String),
    Reason {
        source: Source,
        status: String,
    },
    /// Every domain a mailbox provider hosts in the campaign.
    Provider(Provider),
    /// Every reply and report with one diagnosis (its `crate::diagnose` key).
    Diagnosis(String),
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
            Focus::Provider(p) => format!("provider {}", p.label()),
            Focus::Diagnosis(key) => match crate::diagnose::by_key(key) {
                Some(d) => format!("diagnosis: {}", d.title),
                None => format!("diagnosis {key}"),
            },
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

/// Everything shown about one campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignReport {
    pub campaign: CampaignSummary,
    pub totals: Totals,
    pub rates: Rates,
    /// What became of the messages the relay accepted.
    pub funnel: Funnel,
    /// Largest first.
    pub domains: Vec<DomainRow>,
    /// The domains added up per mailbox provider, largest first.
    pub providers: Vec<ProviderRow>,
    /// What the providers' replies and reports mean, most frequent first.
    pub diagnoses: Vec<DiagnosisRow>,
    /// Most frequent first.
    pub reasons: Vec<ReasonRow>,
    /// Oldest minute first; minutes without attempts are absent.
    pub series: Vec<MinutePoint>,
    /// Newest first.
    pub recent: Vec<HistoryEntry>,
    /// Test sends and seed copies, newest first, at most `RECENT_LIMIT`: listed apart, they
    /// count in none of the numbers above.
    pub test_sends: Vec<store::TestSendRow>,
    pub test_send_count: u64,
    /// Today's allowance of the campaign's From domain, when the caller knows `[rate]` (see
    /// [`Ledger::allowance`]).
    pub allowance: Option<crate::schedule::Allowance>,
    /// What each relay did, when the campaign went through more than one `[[relay]]` (empty
    /// otherwise), by name.
    pub relays: Vec<store::RelayFigures>,
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
