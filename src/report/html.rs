//! The HTML deliverability report: one self-contained file (inline CSS and SVG, no scripts, no
//! external assets) that can be mailed or archived. Pure formatting over a `CampaignReport`.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::format::{
    TOP_DOMAINS, TOP_PROVIDERS, TOP_REASONS, dense_series, one_line, state_label, truncate,
};
use super::{CampaignReport, Level, Thresholds, Trends, format_rate, format_time};
use crate::model::DeliveryState;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}\
td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:right}\
td:first-child,th:first-child{text-align:left}.ok{color:#1a7f37}.warn{color:#b35900}\
.alarm{color:#c62828;font-weight:bold}.note{color:#666;font-size:.9em}\
.rates{display:flex;gap:2em}.rate{font-size:1.6em}";

/// Writes the HTML report.
///
/// # Errors
/// When writing fails.
pub fn write_html(report: &CampaignReport, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(render(report, &Thresholds::default(), None).as_bytes())
}

/// [`write_html`] with the trend of every campaign in the ledger (`Ledger::trends`): a chart of
/// hard-bounce and complaint rates per provider across campaigns.
///
/// # Errors
/// When writing fails.
pub fn write_html_with_trends(
    report: &CampaignReport,
    trends: &Trends,
    out: &mut dyn Write,
) -> io::Result<()> {
    out.write_all(render(report, &Thresholds::default(), Some(trends)).as_bytes())
}

fn level_class(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Alarm => "alarm",
    }
}

fn render(report: &CampaignReport, th: &Thresholds, trends: Option<&Trends>) -> String {
    let t = &report.totals;
    let c = &report.campaign;
    let mut h = String::new();
    let name = esc(&c.name);
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Deliverability report: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Deliverability report: {name}</h1>\n"
    );
    let _ = match c.started_at {
        Some(at) => writeln!(
            h,
            "<p>First send {} UTC; latest run {} UTC.</p>",
            format_time(at),
            format_time(c.last_run_at.unwrap_or(at))
        ),
        None => writeln!(h, "<p>Not sent yet: every recipient is pending.</p>"),
    };
    let _ = writeln!(
        h,
        "<p class=\"note\">“Accepted” means accepted by the relay (a 250 reply after DATA), \
         not delivered to an inbox; “delivery confirmed” means the receiving system said so in \
         a success DSN.</p>"
    );

    let _ = writeln!(h, "<h2>Rates</h2><div class=\"rates\">");
    let rate = |h: &mut String, label: &str, value: Option<f64>, level: Level, note: &str| {
        let class = level_class(level);
        let _ = writeln!(
            h,
            "<div><div class=\"rate {class}\">{}</div>{label}<div class=\"note\">{note}</div></div>",
            format_rate(value)
        );
    };
    rate(
        &mut h,
        "acceptance",
        report.rates.acceptance,
        Level::Ok,
        "accepted by the relay / attempted",
    );
    rate(
        &mut h,
        "hard bounces",
        report.rates.hard_bounce,
        th.bounce(report.rates.hard_bounce),
        &format!(
            "warn {} · alarm {}",
            format_rate(Some(th.bounce_warn)),
            format_rate(Some(th.bounce_alarm))
        ),
    );
    rate(
        &mut h,
        "complaints",
        report.rates.complaint,
        th.complaint(report.rates.complaint),
        &format!(
            "/ accepted by the relay; warn {} · alarm {}",
            format_rate(Some(th.complaint_warn)),
            format_rate(Some(th.complaint_alarm))
        ),
    );
    let _ = writeln!(h, "</div>");

    let _ = writeln!(h, "<h2>Funnel</h2>");
    h.push_str(&funnel_svg(report));

    let _ = writeln!(
        h,
        "<h2>Recipients by state</h2><table><tr><th>State</th><th>Recipients</th><th>Share</th></tr>"
    );
    let share = |n: u64| format_rate((t.recipients > 0).then(|| n as f64 / t.recipients as f64));
    let _ = writeln!(
        h,
        "<tr><td><b>all recipients</b></td><td>{}</td><td></td></tr>",
        t.recipients
    );
    for state in DeliveryState::ALL {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            state_label(state),
            t.get(state),
            share(t.get(state))
        );
    }
    let _ = writeln!(
        h,
        "<tr><td>ever accepted by the relay (incl. {} bounced or complained later)</td>\
         <td>{}</td><td>{}</td></tr></table>",
        t.bounced_later(),
        t.relay_accepted,
        share(t.relay_accepted)
    );

    let _ = writeln!(h, "<h2>Sends per minute</h2>");
    h.push_str(&series_svg(report));

    let _ = writeln!(
        h,
        "<h2>Domains</h2><table><tr><th>Domain</th><th>Recipients</th><th>Accepted by relay</th>\
         <th>Deferred</th><th>Hard</th><th>Soft</th><th>Complaints</th><th>Acceptance</th></tr>"
    );
    for d in report.domains.iter().take(TOP_DOMAINS) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td></tr>",
            esc(&d.domain),
            d.totals.recipients,
            d.totals.relay_accepted,
            d.totals.deferred,
            d.totals.bounced_hard,
            d.totals.bounced_soft,
            d.totals.complained,
            format_rate(d.acceptance)
        );
    }
    let _ = writeln!(h, "</table>");
    if report.domains.len() > TOP_DOMAINS {
        let _ = writeln!(
            h,
            "<p class=\"note\">Top {TOP_DOMAINS} of {} domains.</p>",
            report.domains.len()
        );
    }

    let _ = writeln!(
        h,
        "<h2>Providers</h2><table><tr><th>Provider</th><th>Domains</th><th>Recipients</th>\
         <th>Accepted by relay</th><th>Delivery confirmed</th><th>Hard bounces</th><th>Complaints</th></tr>"
    );
    for p in report.providers.iter().take(TOP_PROVIDERS) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td class=\"{}\">{}</td></tr>",
            esc(p.label),
            p.domains,
            p.totals.recipients,
            p.totals.relay_accepted,
            p.totals.delivered,
            level_class(p.levels.bounce),
            format_rate(p.rates.hard_bounce),
            level_class(p.levels.complaint),
            format_rate(p.rates.complaint)
        );
    }
    let _ = writeln!(
        h,
        "</table><p class=\"note\">Colours at each provider's own thresholds (Gmail: \
         complaints 0.1% / 0.3%).</p>"
    );

    let _ = writeln!(h, "<h2>What the providers are telling you</h2>");
    if report.diagnoses.is_empty() {
        let _ = writeln!(
            h,
            "<p>No reply or report matched a known provider message.</p>"
        );
    }
    for d in &report.diagnoses {
        let _ = writeln!(
            h,
            "<h3>{} <span class=\"note\">({} times)</span></h3><p>{}</p><p><b>Fix:</b> {}</p>\
             <p class=\"note\">{}</p>",
            esc(&d.title),
            d.count,
            esc(&d.meaning),
            esc(&d.fix),
            esc(&format!(
                "Source: {}. Example: {}",
                d.source,
                truncate(&one_line(d.example.as_deref().unwrap_or("")), 200)
            ))
        );
    }
    if let Some(trends) = trends {
        let _ = writeln!(h, "<h2>Across campaigns</h2>");
        h.push_str(&super::trend::trend_svg(
            trends,
            "hard-bounce rate by provider across campaigns",
            |r| r.hard_bounce,
        ));
        h.push_str(&super::trend::trend_svg(
            trends,
            "complaint rate by provider across campaigns",
            |r| r.complaint,
        ));
    }

    let _ = writeln!(h, "<h2>Reasons</h2>");
    if report.reasons.is_empty() {
        let _ = writeln!(
            h,
            "<p>No rejection, deferral or negative feedback recorded.</p>"
        );
    } else {
        let _ = writeln!(
            h,
            "<table><tr><th>Code</th><th>Seen in</th><th>Outcome</th><th>Count</th>\
             <th>Example reply</th></tr>"
        );
        for r in report.reasons.iter().take(TOP_REASONS) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                esc(r.status_label()),
                r.source.as_str(),
                esc(&r.outcome),
                r.count,
                esc(&truncate(
                    &one_line(r.example.as_deref().unwrap_or("")),
                    160
                ))
            );
        }
        let _ = writeln!(h, "</table>");
    }
    super::relays::write_html(&report.relays, &mut h, esc);
    if !report.test_sends.is_empty() {
        let _ = writeln!(
            h,
            "<h2>Test sends</h2><p class=\"note\">{} copies for test addresses and seeds, in no \
             number above.</p><table><tr><th>Time (UTC)</th><th>Kind</th><th>Address</th>\
             <th>Outcome</th><th>From line</th></tr>",
            report.test_send_count
        );
        for t in &report.test_sends {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&format_time(t.at)),
                esc(&t.kind),
                esc(&one_line(&t.address)),
                esc(&one_line(&t.outcome)),
                t.source_line
                    .map_or_else(|| "-".to_owned(), |l| l.to_string())
            );
        }
        let _ = writeln!(h, "</table>");
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Generated by mailroom.</p></body></html>"
    );
    h
}

/// Horizontal bars: recipients → accepted by the relay → delivered (confirmed) / bounced or
/// complained later, and where the rest stands.
fn funnel_svg(report: &CampaignReport) -> String {
    let t = &report.totals;
    let rows: [(&str, u64, &str); 7] = [
        ("recipients", t.recipients, "#607d8b"),
        ("accepted by the relay", t.relay_accepted, "#2e7d32"),
        ("delivery confirmed (DSN)", t.delivered, "#1b5e20"),
        ("bounced or complained later", t.bounced_later(), "#c62828"),
        ("pending", t.pending + t.sending, "#9e9e9e"),
        ("deferred", t.deferred, "#f9a825"),
        ("unknown", t.unknown, "#8d6e63"),
    ];
    let max = t.recipients.max(1) as f64;
    let mut s = String::from(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"182\" \
         role=\"img\" aria-label=\"funnel\">",
    );
    for (i, (label, n, colour)) in rows.iter().enumerate() {
        let y = i * 26;
        let w = (*n as f64 / max * 440.0).round();
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{label}</text>\
             <rect x=\"210\" y=\"{}\" width=\"{w}\" height=\"18\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"13\">{n}</text>",
            y + 15,
            y + 2,
            215.0 + w,
            y + 15
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Bars for the last 120 minutes with attempts; accepted attempts in green over all attempts.
fn series_svg(report: &CampaignReport) -> String {
    let dense = dense_series(&report.series, 120);
    if dense.is_empty() {
        return "<p>No attempts yet.</p>\n".to_owned();
    }
    let accepted: Vec<u64> = {
        let start = report.series.last().map_or(0, |p| p.minute) - dense.len() as i64 + 1;
        let mut v = vec![0; dense.len()];
        for p in report.series.iter().filter(|p| p.minute >= start) {
            v[(p.minute - start) as usize] = p.accepted;
        }
        v
    };
    let peak = dense.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (width, height) = (720.0, 160.0);
    let bar = width / dense.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" \
         aria-label=\"attempts per minute\">",
        height + 20.0
    );
    for (i, (&all, &ok)) in dense.iter().zip(&accepted).enumerate() {
        let x = i as f64 * bar;
        let h_all = all as f64 / peak * height;
        let h_ok = ok as f64 / peak * height;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h_all:.1}\" fill=\"#f9a825\"/>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h_ok:.1}\" fill=\"#2e7d32\"/>",
            height - h_all,
            (bar - 1.0).max(0.5),
            height - h_ok,
            (bar - 1.0).max(0.5)
        );
    }
    let first = report.series.last().map_or(0, |p| p.minute) - dense.len() as i64 + 1;
    let _ = write!(
        s,
        "<text x=\"0\" y=\"{}\" font-size=\"12\">{} UTC</text>\
         <text x=\"{width}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">peak {} / min</text></svg>\n\
         <p class=\"note\">Green: accepted by the relay; amber: other attempts.</p>\n",
        height + 16.0,
        format_time(first * 60_000),
        height + 16.0,
        peak as u64
    );
    s
}

/// Escapes text for HTML element content and attribute values, with control and
/// direction-changing characters shown, not applied.
pub(super) fn esc(text: &str) -> String {
    let text = crate::display::text(text);
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            _ => s.push(ch),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
