//! Text, JSON, CSV and Markdown renderings of a `CampaignReport`. Pure formatting over the
//! snapshot (CSV streams recipients from the ledger): no queries of its own beyond that.

use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::{
    CampaignReport, DomainRow, Ledger, Level, MinutePoint, RecipientRef, Thresholds, format_rate,
    format_time,
};
use crate::model::DeliveryState;

/// How many domains the text and Markdown reports list; JSON has them all.
pub(super) const TOP_DOMAINS: usize = 25;
/// How many reasons the text and Markdown reports list; JSON has them all.
pub(super) const TOP_REASONS: usize = 25;
/// How many providers the text and Markdown reports list; JSON has them all.
pub(super) const TOP_PROVIDERS: usize = 15;

/// The label of each state as the user reads it: "accepted" always says by whom.
pub(super) fn state_label(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending (not tried yet)",
        DeliveryState::Sending => "sending now",
        DeliveryState::Accepted => "accepted by the relay",
        DeliveryState::Delivered => "delivery confirmed (DSN)",
        DeliveryState::Deferred => "deferred (will retry)",
        DeliveryState::BouncedHard => "bounced hard",
        DeliveryState::BouncedSoft => "bounced soft",
        DeliveryState::Complained => "complained (spam report)",
        DeliveryState::Suppressed => "suppressed (not sent)",
        DeliveryState::Failed => "failed (gave up)",
        DeliveryState::Unknown => "unknown (no reply after data)",
    }
}

/// Writes the human-readable report.
///
/// # Errors
/// When writing fails.
pub fn write_text(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    let t = &report.totals;
    let c = &report.campaign;
    writeln!(out, "Campaign {}", one_line(&c.name))?;
    match c.started_at {
        Some(at) => writeln!(
            out,
            "First send {} UTC, latest run {} UTC{}",
            format_time(at),
            format_time(c.last_run_at.unwrap_or(at)),
            if c.open_runs > 0 {
                " (a run has not finished: a send may be in progress)"
            } else {
                ""
            }
        )?,
        None => writeln!(out, "Not sent yet: every recipient is pending.")?,
    }
    if let Some(a) = &report.allowance {
        writeln!(out, "{}", one_line(&capitalized(&a.to_string())))?;
    }
    writeln!(out)?;
    writeln!(out, "{:<34}{:>10}", "Recipients", t.recipients)?;
    for state in DeliveryState::ALL {
        writeln!(
            out,
            "  {:<32}{:>10}{}",
            state_label(state),
            t.get(state),
            percent_of(t.get(state), t.recipients)
        )?;
    }
    writeln!(
        out,
        "{:<34}{:>10}{}",
        "Ever accepted by the relay",
        t.relay_accepted,
        percent_of(t.relay_accepted, t.recipients)
    )?;
    writeln!(
        out,
        "  {:<32}{:>10}",
        "of which bounced/complained later",
        t.bounced_later()
    )?;
    writeln!(
        out,
        "  {:<32}{:>10}",
        "of which delivery confirmed (DSN)", report.funnel.delivered
    )?;
    writeln!(
        out,
        "  {:<32}{:>10}",
        "of which no news yet", report.funnel.no_news
    )?;
    writeln!(out)?;
    let th = Thresholds::default();
    writeln!(
        out,
        "Acceptance rate   {:>8}  (accepted by the relay / attempted)",
        format_rate(report.rates.acceptance)
    )?;
    writeln!(
        out,
        "Hard-bounce rate  {:>8}{}  (/ attempted; warn at {}, alarm at {})",
        format_rate(report.rates.hard_bounce),
        level_mark(th.bounce(report.rates.hard_bounce)),
        format_rate(Some(th.bounce_warn)),
        format_rate(Some(th.bounce_alarm))
    )?;
    writeln!(
        out,
        "Complaint rate    {:>8}{}  (/ accepted by the relay; warn at {}, alarm at {})",
        format_rate(report.rates.complaint),
        level_mark(th.complaint(report.rates.complaint)),
        format_rate(Some(th.complaint_warn)),
        format_rate(Some(th.complaint_alarm))
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        heading_count("Domains", report.domains.len(), TOP_DOMAINS)
    )?;
    writeln!(
        out,
        "  {:<28}{:>10}{:>10}{:>9}{:>7}{:>7}{:>7}{:>9}",
        "domain", "recipients", "accepted", "deferred", "hard", "soft", "compl.", "accept%"
    )?;
    for d in report.domains.iter().take(TOP_DOMAINS) {
        writeln!(
            out,
            "  {:<28}{:>10}{:>10}{:>9}{:>7}{:>7}{:>7}{:>9}",
            truncate(&one_line(&d.domain), 27),
            d.totals.recipients,
            d.totals.relay_accepted,
            d.totals.deferred,
            d.totals.bounced_hard,
            d.totals.bounced_soft,
            d.totals.complained,
            format_rate(d.acceptance)
        )?;
    }
    writeln!(out, "  (accepted = ever accepted by the relay)")?;

    writeln!(out)?;
    write_providers_text(report, out)?;
    writeln!(out)?;
    write_diagnoses_text(report, out)?;

    writeln!(out)?;
    writeln!(
        out,
        "{}",
        heading_count("Reasons", report.reasons.len(), TOP_REASONS)
    )?;
    if report.reasons.is_empty() {
        writeln!(
            out,
            "  none: no rejection, deferral or negative feedback recorded"
        )?;
    }
    for r in report.reasons.iter().take(TOP_REASONS) {
        writeln!(
            out,
            "  {:<11}{:<8}{:<14}{:>8}  {}",
            one_line(r.status_label()),
            r.source.as_str(),
            one_line(&r.outcome),
            r.count,
            truncate(&one_line(r.example.as_deref().unwrap_or("")), 60)
        )?;
    }

    writeln!(out)?;
    write_series_text(&report.series, out)?;
    super::relays::write_text(&report.relays, out)?;
    write_test_sends_text(report, out)?;
    Ok(())
}

/// The test sends and seed copies, apart from everything above (they count in no total).
fn write_test_sends_text(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    if report.test_sends.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} (copies for test addresses and seeds: in no number above)",
        heading_count(
            "Test sends",
            usize::try_from(report.test_send_count).unwrap_or(usize::MAX),
            report.test_sends.len()
        )
    )?;
    for t in &report.test_sends {
        writeln!(
            out,
            "  {} UTC  {:<5} {:<32} {:<9} from line {}  {}",
            format_time(t.at),
            t.kind,
            truncate(&one_line(&t.address), 32),
            one_line(&t.outcome),
            t.source_line
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            truncate(&one_line(t.reply.as_deref().unwrap_or("")), 50)
        )?;
    }
    Ok(())
}

fn write_providers_text(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{}",
        heading_count("Providers", report.providers.len(), TOP_PROVIDERS)
    )?;
    writeln!(
        out,
        "  {:<16}{:>8}{:>11}{:>10}{:>10}{:>9}{:>9}",
        "provider", "domains", "recipients", "accepted", "confirmed", "hard", "compl."
    )?;
    for p in report.providers.iter().take(TOP_PROVIDERS) {
        writeln!(
            out,
            "  {:<16}{:>8}{:>11}{:>10}{:>10}{:>9}{:>9}{}{}",
            p.label,
            p.domains,
            p.totals.recipients,
            p.totals.relay_accepted,
            p.totals.delivered,
            format_rate(p.rates.hard_bounce),
            format_rate(p.rates.complaint),
            level_mark(p.levels.bounce).replace(' ', " bounce "),
            level_mark(p.levels.complaint).replace(' ', " complaints "),
        )?;
    }
    writeln!(
        out,
        "  (hard = / attempted, compl. = / accepted; WARN and ALARM at each provider's own \
         thresholds; `unknown` = not resolved yet)"
    )
}

fn write_diagnoses_text(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "What the providers are telling you ({})",
        report.diagnoses.len()
    )?;
    if report.diagnoses.is_empty() {
        return writeln!(
            out,
            "  nothing: no reply or report matched a known provider message"
        );
    }
    for d in &report.diagnoses {
        writeln!(out, "  {} ({}x)", one_line(&d.title), d.count)?;
        if !d.meaning.is_empty() {
            writeln!(out, "    means: {}", d.meaning)?;
            writeln!(out, "    fix:   {}", d.fix)?;
        }
        if let Some(example) = &d.example {
            writeln!(out, "    e.g.:  {}", truncate(&one_line(example), 100))?;
        }
    }
    Ok(())
}

fn write_series_text(series: &[MinutePoint], out: &mut dyn Write) -> io::Result<()> {
    let Some(first) = series.first() else {
        return writeln!(out, "Sends per minute: no attempts yet");
    };
    let peak = series.iter().map(|p| p.attempts).max().unwrap_or(0);
    let total: u64 = series.iter().map(|p| p.attempts).sum();
    let last = series.last().unwrap_or(first);
    let span = (last.minute - first.minute + 1).max(1) as u64;
    writeln!(
        out,
        "Sends per minute: {} attempts over {} min ({} – {} UTC), average {:.1}/min, peak {}/min",
        total,
        span,
        format_time(first.minute * 60_000),
        format_time(last.minute * 60_000 + 59_999),
        total as f64 / span as f64,
        peak
    )?;
    let bars = sparkline(&dense_series(series, 60));
    writeln!(out, "  last {} min: {bars}", bars.chars().count())
}

/// The last `width` minutes ending at the series' last minute, with zeros for idle minutes.
pub fn dense_series(series: &[MinutePoint], width: usize) -> Vec<u64> {
    let Some(last) = series.last() else {
        return Vec::new();
    };
    let first = series.first().map_or(last.minute, |p| p.minute);
    let start = first.max(last.minute - width as i64 + 1);
    let mut out = vec![0; (last.minute - start + 1) as usize];
    for p in series.iter().filter(|p| p.minute >= start) {
        out[(p.minute - start) as usize] = p.attempts;
    }
    out
}

fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let peak = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                BARS[((v * 7) / peak) as usize]
            }
        })
        .collect()
}

fn level_mark(level: Level) -> &'static str {
    match level {
        Level::Ok => "",
        Level::Warn => " WARN",
        Level::Alarm => " ALARM",
    }
}

fn heading_count(what: &str, n: usize, top: usize) -> String {
    if n > top {
        format!("{what} (top {top} of {n}; --format json or csv for all)")
    } else {
        format!("{what} ({n})")
    }
}

fn percent_of(part: u64, whole: u64) -> String {
    if whole == 0 {
        String::new()
    } else {
        format!("  {:>6}", format_rate(Some(part as f64 / whole as f64)))
    }
}

pub(super) use crate::display::one_line;

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

pub(super) fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

#[derive(Serialize)]
struct Json<'a> {
    campaign: &'a str,
    summary: &'a super::CampaignSummary,
    totals: &'a super::Totals,
    /// Recipients the relay accepted and that bounced or complained later.
    bounced_later: u64,
    rates: &'a super::Rates,
    funnel: &'a super::Funnel,
    domains: &'a [DomainRow],
    providers: &'a [super::ProviderRow],
    diagnoses: &'a [super::DiagnosisRow],
    reasons: &'a [super::ReasonRow],
    series: &'a [MinutePoint],
    recent: &'a [super::HistoryEntry],
    /// Test sends and seed copies, newest first (in no other number).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    test_sends: &'a [crate::store::TestSendRow],
    #[serde(skip_serializing_if = "is_zero")]
    test_send_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowance: Option<&'a crate::schedule::Allowance>,
    /// Per-relay figures, when the campaign used more than one `[[relay]]`.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    relays: &'a [crate::store::RelayFigures],
    /// With several ledgers (`report --db A --db B`): each ledger's share.
    #[serde(skip_serializing_if = "Option::is_none")]
    ledgers: Option<&'a [super::merge::LedgerPart]>,
    /// With several ledgers: recipients found in more than one (counted once above).
    #[serde(skip_serializing_if = "Option::is_none")]
    overlap: Option<&'a super::merge::Overlap>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Writes the report as one JSON object (see the module docs of `report` for the keys).
///
/// # Errors
/// When writing fails.
pub fn write_json(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    json_with(report, None, out)
}

/// [`write_json`] of a report over several ledgers, with `ledgers` and `overlap` added.
///
/// # Errors
/// When writing fails.
pub fn write_json_merged(merged: &super::merge::Merged, out: &mut dyn Write) -> io::Result<()> {
    json_with(
        &merged.report,
        Some((&merged.ledgers, &merged.overlap)),
        out,
    )
}

/// The merged heading of the text and Markdown reports: which ledgers, and who is in several.
///
/// # Errors
/// When writing fails.
pub fn write_merged_heading(merged: &super::merge::Merged, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "Merged from {}", merged.describe())?;
    let o = &merged.overlap;
    if o.recipients > 0 {
        let list: Vec<String> = o
            .examples
            .iter()
            .map(|e| {
                let at: Vec<String> = e.ledgers.iter().map(|i| (i + 1).to_string()).collect();
                format!("{} (ledgers {})", one_line(&e.email), at.join(", "))
            })
            .collect();
        writeln!(
            out,
            "warning: {} recipients are in more than one ledger, counted once (their most advanced \
             state): {}{}",
            o.recipients,
            list.join(", "),
            if o.recipients as usize > o.examples.len() {
                ", ..."
            } else {
                ""
            }
        )?;
    }
    writeln!(out)
}

fn json_with(
    report: &CampaignReport,
    merged: Option<(&[super::merge::LedgerPart], &super::merge::Overlap)>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let json = Json {
        ledgers: merged.map(|m| m.0),
        overlap: merged.map(|m| m.1),
        campaign: &report.campaign.name,
        summary: &report.campaign,
        totals: &report.totals,
        bounced_later: report.totals.bounced_later(),
        rates: &report.rates,
        funnel: &report.funnel,
        domains: &report.domains,
        providers: &report.providers,
        diagnoses: &report.diagnoses,
        reasons: &report.reasons,
        series: &report.series,
        recent: &report.recent,
        test_sends: &report.test_sends,
        test_send_count: report.test_send_count,
        allowance: report.allowance.as_ref(),
        relays: &report.relays,
    };
    serde_json::to_writer_pretty(&mut *out, &json).map_err(io::Error::other)?;
    writeln!(out)
}

/// Writes one CSV row per recipient, in import order.
///
/// # Errors
/// When a query or a write fails.
pub fn write_csv(
    ledger: &Ledger,
    campaign: crate::model::CampaignId,
    out: &mut dyn Write,
) -> Result<(), super::Error> {
    write_csv_rows(ledger, campaign, true, out)
}

/// [`write_csv`], with or without the header line (the ledgers after the first of a merged
/// export add their rows under the first one's header).
///
/// # Errors
/// When a query or a write fails.
pub fn write_csv_rows(
    ledger: &Ledger,
    campaign: crate::model::CampaignId,
    header: bool,
    out: &mut dyn Write,
) -> Result<(), super::Error> {
    let io_error = |e: io::Error| super::Error::Write {
        path: ledger.path().to_owned(),
        source: e,
    };
    let mut csv = csv::Writer::from_writer(out);
    if header {
        csv.write_record([
            "email",
            "state",
            "code",
            "enhanced_code",
            "reply",
            "attempts",
            "last_attempt_at",
            "relay_accepted",
        ])
        .map_err(|e| io_error(csv_io(e)))?;
    }
    // Reused buffers: the export formats a million numbers and times without allocating.
    let (mut code, mut attempts, mut at) = (String::new(), String::new(), String::new());
    let result = ledger.for_each_recipient(campaign, |r: &RecipientRef<'_>| {
        code.clear();
        attempts.clear();
        at.clear();
        if let Some(c) = r.code {
            let _ = write!(code, "{c}");
        }
        let _ = write!(attempts, "{}", r.attempts);
        if let Some(t) = r.last_attempt_at {
            iso_time(t, &mut at);
        }
        csv.write_record([
            &*inert_cell(r.email),
            r.state,
            &code,
            &inert_cell(r.enhanced.unwrap_or("")),
            &inert_cell(r.reply.unwrap_or("")),
            &attempts,
            &at,
            if r.relay_accepted { "1" } else { "0" },
        ])
    });
    match result {
        Ok(()) => {}
        Err(Ok(e)) => return Err(io_error(csv_io(e))),
        Err(Err(e)) => return Err(e),
    }
    csv.flush().map_err(io_error)
}

/// A CSV write error as an I/O error of the same kind as the one inside it, so that a reader
/// that went away (`report --format csv | head`) is told from a failed disk.
fn csv_io(e: csv::Error) -> io::Error {
    let kind = match e.kind() {
        csv::ErrorKind::Io(inner) => inner.kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// A CSV cell that a spreadsheet will not run as a formula (OWASP's advice on CSV injection):
/// text starting with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, which
/// spreadsheets show as text and hide. Addresses like `=cmd|'/C calc'!A0@example.com` are valid,
/// and replies come from relays, so both pass through here.
fn inert_cell(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Appends a unix-millisecond time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn iso_time(millis: i64, out: &mut String) {
    use chrono::{Datelike as _, Timelike as _};
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        }
        None => {
            let _ = write!(out, "{millis}");
        }
    }
}

/// Writes a shareable Markdown deliverability report.
///
/// # Errors
/// When writing fails.
pub fn write_markdown(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    let t = &report.totals;
    let c = &report.campaign;
    writeln!(out, "# Deliverability report: {}", md(&c.name))?;
    writeln!(out)?;
    match c.started_at {
        Some(at) => writeln!(
            out,
            "First send {} UTC; latest run {} UTC.",
            format_time(at),
            format_time(c.last_run_at.unwrap_or(at))
        )?,
        None => writeln!(out, "Not sent yet: every recipient is pending.")?,
    }
    if let Some(a) = &report.allowance {
        writeln!(out)?;
        writeln!(out, "{}", md(&capitalized(&a.to_string())))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "\"Accepted\" means accepted by the relay (a 250 reply after DATA), not delivered to \
         an inbox; \"delivery confirmed\" means the receiving system said so in a success DSN."
    )?;
    writeln!(out)?;
    writeln!(out, "## Summary")?;
    writeln!(out)?;
    writeln!(out, "| Rate | Value |")?;
    writeln!(out, "|---|---:|")?;
    writeln!(
        out,
        "| Acceptance (accepted by the relay / attempted) | {} |",
        format_rate(report.rates.acceptance)
    )?;
    writeln!(
        out,
        "| Hard bounces (/ attempted) | {} |",
        format_rate(report.rates.hard_bounce)
    )?;
    writeln!(
        out,
        "| Complaints (/ accepted by the relay) | {} |",
        format_rate(report.rates.complaint)
    )?;
    writeln!(out)?;
    writeln!(out, "| State | Recipients | Share |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(out, "| **All recipients** | {} | |", t.recipients)?;
    for state in DeliveryState::ALL {
        writeln!(
            out,
            "| {} | {} | {} |",
            state_label(state),
            t.get(state),
            format_rate((t.recipients > 0).then(|| t.get(state) as f64 / t.recipients as f64))
        )?;
    }
    writeln!(
        out,
        "| ever accepted by the relay (incl. {} bounced or complained later) | {} | {} |",
        t.bounced_later(),
        t.relay_accepted,
        format_rate((t.recipients > 0).then(|| t.relay_accepted as f64 / t.recipients as f64))
    )?;
    writeln!(out)?;
    let f = &report.funnel;
    writeln!(
        out,
        "Of the {} accepted by the relay: delivery confirmed for {}, {} bounced or complained \
         later, {} no news yet.",
        f.relay_accepted, f.delivered, f.bounced_later, f.no_news
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "## {}",
        heading_count("Domains", report.domains.len(), TOP_DOMAINS)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| Domain | Recipients | Accepted by relay | Deferred | Hard | Soft | Complaints | Acceptance |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for d in report.domains.iter().take(TOP_DOMAINS) {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&d.domain),
            d.totals.recipients,
            d.totals.relay_accepted,
            d.totals.deferred,
            d.totals.bounced_hard,
            d.totals.bounced_soft,
            d.totals.complained,
            format_rate(d.acceptance)
        )?;
    }
    writeln!(out)?;
    write_providers_markdown(report, out)?;
    writeln!(out)?;
    writeln!(out, "## What the providers are telling you")?;
    writeln!(out)?;
    if report.diagnoses.is_empty() {
        writeln!(out, "No reply or report matched a known provider message.")?;
    }
    for d in &report.diagnoses {
        writeln!(out, "- **{}** ({} times)", md(&d.title), d.count)?;
        if !d.meaning.is_empty() {
            writeln!(out, "  - Means: {}", md(&d.meaning))?;
            writeln!(out, "  - Fix: {}", md(&d.fix))?;
            writeln!(out, "  - Source: {}", md(&d.source))?;
        }
        if let Some(example) = &d.example {
            writeln!(
                out,
                "  - Example: {}",
                md(&truncate(&one_line(example), 160))
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "## {}",
        heading_count("Reasons", report.reasons.len(), TOP_REASONS)
    )?;
    writeln!(out)?;
    if report.reasons.is_empty() {
        writeln!(out, "No rejection, deferral or negative feedback recorded.")?;
    } else {
        writeln!(out, "| Code | Seen in | Outcome | Count | Example reply |")?;
        writeln!(out, "|---|---|---|---:|---|")?;
        for r in report.reasons.iter().take(TOP_REASONS) {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md(r.status_label()),
                r.source.as_str(),
                md(&r.outcome),
                r.count,
                md(&truncate(
                    &one_line(r.example.as_deref().unwrap_or("")),
                    120
                ))
            )?;
        }
    }
    writeln!(out)?;
    writeln!(out, "## Sends per minute")?;
    writeln!(out)?;
    if report.series.is_empty() {
        writeln!(out, "No attempts yet.")?;
    } else {
        write!(out, "    ")?;
        write_series_text(&report.series, out)?;
    }
    super::relays::write_markdown(&report.relays, out, md)?;
    if !report.test_sends.is_empty() {
        writeln!(out)?;
        writeln!(out, "## Test sends")?;
        writeln!(out)?;
        writeln!(
            out,
            "{} copies for test addresses and seeds, in no number above.",
            report.test_send_count
        )?;
        writeln!(out)?;
        writeln!(out, "| time (UTC) | kind | address | outcome | from line |")?;
        writeln!(out, "|---|---|---|---|---:|")?;
        for t in &report.test_sends {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                format_time(t.at),
                t.kind,
                md(&t.address),
                md(&t.outcome),
                t.source_line
                    .map_or_else(|| "-".to_owned(), |l| l.to_string())
            )?;
        }
    }
    Ok(())
}

fn write_providers_markdown(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "## {}",
        heading_count("Providers", report.providers.len(), TOP_PROVIDERS)
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| Provider | Domains | Recipients | Accepted by relay | Delivery confirmed | Hard bounces | Complaints |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    for p in report.providers.iter().take(TOP_PROVIDERS) {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}{} | {}{} |",
            p.label,
            p.domains,
            p.totals.recipients,
            p.totals.relay_accepted,
            p.totals.delivered,
            format_rate(p.rates.hard_bounce),
            level_mark(p.levels.bounce),
            format_rate(p.rates.complaint),
            level_mark(p.levels.complaint),
        )?;
    }
    Ok(())
}

/// Escapes text for a Markdown table cell (control characters first: the file is meant to be
/// shared and read in terminals too).
fn md(text: &str) -> String {
    let text = one_line(text);
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '|' | '\\' | '*' | '_' | '`' | '<' | '>' | '[' | ']' => {
                s.push('\\');
                s.push(ch);
            }
            '\r' | '\n' => s.push(' '),
            _ => s.push(ch),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_series_fills_idle_minutes_and_keeps_the_tail() {
        let p = |minute, attempts| MinutePoint {
            minute,
            attempts,
            accepted: 0,
        };
        assert_eq!(dense_series(&[p(10, 1), p(13, 4)], 60), vec![1, 0, 0, 4]);
        assert_eq!(dense_series(&[p(10, 1), p(13, 4)], 2), vec![0, 4]);
        assert!(dense_series(&[], 5).is_empty());
    }

    #[test]
    fn markdown_cells_cannot_break_the_table() {
        assert_eq!(md("a|b\nc <x>"), "a\\|b c \\<x\\>");
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        for (cell, shown) in [
            (
                "=cmd|'/Ccalc.exe'!A0@example.com",
                "'=cmd|'/Ccalc.exe'!A0@example.com",
            ),
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1 2", "'+1 2"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("ann@example.com", "ann@example.com"),
            ("550 5.1.1 no such user", "550 5.1.1 no such user"),
            ("", ""),
        ] {
            assert_eq!(inert_cell(cell), shown, "{cell:?}");
        }
    }

    #[test]
    fn terminal_escapes_from_a_relay_reach_no_report_as_they_are() {
        let hostile = "550 5.1.1 \x1b]0;pwned\x07\x1b[2J";
        assert!(!md(hostile).contains('\x1b'));
        assert!(!one_line(hostile).contains('\x07'));
    }
}
