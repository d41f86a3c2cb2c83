//! Across campaigns (`mailroom report --all`): every campaign of the ledger with its date, size,
//! acceptance, confirmed deliveries, and bounce and complaint rates, overall and per mailbox
//! provider, oldest first, so a rise at one provider over the last campaigns shows. Built in one
//! pass over the counter table; rendered as text, JSON, CSV, Markdown or HTML (with an inline
//! SVG chart). No SQL here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::deliverability::provider_of;
use super::format::{one_line, truncate};
use super::{Ledger, Rates, Totals, format_rate, format_time};
use crate::model::CampaignId;
use crate::provider::Provider;

/// How many campaigns the per-provider trend lines show (the latest ones).
pub const TREND_CAMPAIGNS: usize = 5;
/// How many providers (the largest over all campaigns) get a trend line.
const TREND_PROVIDERS: usize = 8;

/// One provider within one campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderTrend {
    pub provider: Provider,
    pub label: &'static str,
    #[serde(flatten)]
    pub totals: Totals,
    pub rates: Rates,
}

/// One campaign in the cross-campaign view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CampaignTrend {
    pub name: String,
    pub created_at: i64,
    /// The first send, if any.
    pub started_at: Option<i64>,
    pub totals: Totals,
    pub rates: Rates,
    /// Largest first.
    pub providers: Vec<ProviderTrend>,
}

impl CampaignTrend {
    /// When it went out (first send), else when it was created.
    pub fn date(&self) -> i64 {
        self.started_at.unwrap_or(self.created_at)
    }

    /// The figures of one provider in this campaign.
    pub fn provider(&self, p: Provider) -> Option<&ProviderTrend> {
        self.providers.iter().find(|t| t.provider == p)
    }
}

/// Every campaign of a ledger, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trends {
    pub campaigns: Vec<CampaignTrend>,
}

impl Trends {
    /// The providers with the most recipients over every campaign, largest first.
    pub fn main_providers(&self) -> Vec<Provider> {
        let mut sizes: BTreeMap<Provider, u64> = BTreeMap::new();
        for c in &self.campaigns {
            for p in &c.providers {
                *sizes.entry(p.provider).or_default() += p.totals.recipients;
            }
        }
        let mut ranked: Vec<(Provider, u64)> = sizes.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked
            .into_iter()
            .take(TREND_PROVIDERS)
            .map(|(p, _)| p)
            .collect()
    }
}

impl Ledger {
    /// Every campaign with its figures overall and per provider, oldest first (one pass over
    /// the counters).
    ///
    /// # Errors
    /// When a query fails.
    pub fn trends(&self) -> Result<Trends, super::Error> {
        let rows = self.reader.campaigns()?;
        let mut totals: BTreeMap<CampaignId, Totals> = BTreeMap::new();
        let mut per: BTreeMap<(CampaignId, Provider), Totals> = BTreeMap::new();
        self.reader.for_each_count(None, |row| {
            totals
                .entry(row.campaign)
                .or_default()
                .add(row.state, row.relay_accepted, row.n);
            per.entry((row.campaign, provider_of(row.domain, row.provider)))
                .or_default()
                .add(row.state, row.relay_accepted, row.n);
        })?;
        let mut campaigns: Vec<CampaignTrend> = rows
            .into_iter()
            .map(|row| {
                let t = totals.remove(&row.id).unwrap_or_default();
                let mut providers: Vec<ProviderTrend> = per
                    .range((row.id, Provider::ALL[0])..=(row.id, Provider::Unknown))
                    .map(|((_, p), t)| ProviderTrend {
                        provider: *p,
                        label: p.label(),
                        totals: *t,
                        rates: Rates::of(t),
                    })
                    .collect();
                providers.sort_by(|a, b| {
                    b.totals
                        .recipients
                        .cmp(&a.totals.recipients)
                        .then_with(|| a.provider.cmp(&b.provider))
                });
                CampaignTrend {
                    name: row.name,
                    created_at: row.created_at,
                    started_at: row.started_at,
                    rates: Rates::of(&t),
                    totals: t,
                    providers,
                }
            })
            .collect();
        campaigns.sort_by(|a, b| a.date().cmp(&b.date()).then_with(|| a.name.cmp(&b.name)));
        Ok(Trends { campaigns })
    }
}

/// Output formats of the cross-campaign view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrendFormat {
    Text,
    Json,
    Csv,
    Markdown,
    Html,
}

/// Writes the cross-campaign view.
///
/// # Errors
/// When writing fails.
pub fn write_trends(trends: &Trends, format: TrendFormat, out: &mut dyn Write) -> io::Result<()> {
    match format {
        TrendFormat::Text => text(trends, out),
        TrendFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, trends).map_err(io::Error::other)?;
            writeln!(out)
        }
        TrendFormat::Csv => csv_rows(trends, out),
        TrendFormat::Markdown => markdown(trends, out),
        TrendFormat::Html => out.write_all(html(trends).as_bytes()),
    }
}

fn day(millis: i64) -> String {
    format_time(millis).get(..10).unwrap_or("").to_owned()
}

/// Which way a series went: up, down, flat or mixed (for the last campaigns).
pub fn direction(values: &[Option<f64>]) -> &'static str {
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    let (Some(first), Some(last)) = (known.first(), known.last()) else {
        return "";
    };
    if known.len() < 2 {
        return "";
    }
    if known.windows(2).all(|w| w[1] >= w[0]) && last > first {
        "rising"
    } else if known.windows(2).all(|w| w[1] <= w[0]) && last < first {
        "falling"
    } else if known.iter().all(|v| (v - first).abs() < f64::EPSILON) {
        "flat"
    } else {
        "mixed"
    }
}

/// The rate series of each main provider over the latest campaigns, with the direction.
fn provider_lines<'a>(
    trends: &'a Trends,
    rate: impl Fn(&Rates) -> Option<f64> + 'a,
) -> Vec<(Provider, Vec<Option<f64>>, &'static str)> {
    let latest = &trends.campaigns[trends.campaigns.len().saturating_sub(TREND_CAMPAIGNS)..];
    trends
        .main_providers()
        .into_iter()
        .map(|p| {
            let series: Vec<Option<f64>> = latest
                .iter()
                .map(|c| c.provider(p).and_then(|t| rate(&t.rates)))
                .collect();
            let dir = direction(&series);
            (p, series, dir)
        })
        .collect()
}

fn text(trends: &Trends, out: &mut dyn Write) -> io::Result<()> {
    let n = trends.campaigns.len();
    writeln!(out, "Campaigns ({n}), oldest first")?;
    if n == 0 {
        return writeln!(out, "  none yet: run `mailroom send` first");
    }
    writeln!(
        out,
        "  {:<11}{:<26}{:>10}{:>10}{:>10}{:>8}{:>9}",
        "date", "campaign", "recipients", "accepted", "confirmed", "hard", "compl."
    )?;
    for c in &trends.campaigns {
        writeln!(
            out,
            "  {:<11}{:<26}{:>10}{:>10}{:>10}{:>8}{:>9}",
            day(c.date()),
            truncate(&one_line(&c.name), 25),
            c.totals.recipients,
            c.totals.relay_accepted,
            c.totals.delivered,
            format_rate(c.rates.hard_bounce),
            format_rate(c.rates.complaint)
        )?;
    }
    writeln!(
        out,
        "  (accepted = ever accepted by the relay; confirmed = delivery confirmed by a DSN)"
    )?;
    let shown = n.min(TREND_CAMPAIGNS);
    for (title, rate) in [
        (
            "hard-bounce rate",
            (|r: &Rates| r.hard_bounce) as fn(&Rates) -> Option<f64>,
        ),
        ("complaint rate", |r: &Rates| r.complaint),
    ] {
        writeln!(out)?;
        writeln!(
            out,
            "By provider: {title} over the last {shown} campaigns, oldest first"
        )?;
        for (p, series, dir) in provider_lines(trends, rate) {
            let cells: Vec<String> = series
                .iter()
                .map(|r| format!("{:>7}", format_rate(*r)))
                .collect();
            writeln!(out, "  {:<15}{}  {dir}", p.label(), cells.join(" "))?;
        }
    }
    Ok(())
}

fn csv_rows(trends: &Trends, out: &mut dyn Write) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    let header = [
        "campaign",
        "date",
        "provider",
        "recipients",
        "relay_accepted",
        "delivered",
        "bounced_hard",
        "complained",
        "hard_bounce_rate",
        "complaint_rate",
    ];
    csv.write_record(header)?;
    let rate = |r: Option<f64>| r.map(|r| format!("{r:.6}")).unwrap_or_default();
    for c in &trends.campaigns {
        let rows = std::iter::once(("all", &c.totals, &c.rates)).chain(
            c.providers
                .iter()
                .map(|p| (p.provider.as_str(), &p.totals, &p.rates)),
        );
        for (provider, t, r) in rows {
            // A campaign name is the user's: never a spreadsheet formula.
            let name = if c.name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{}", c.name)
            } else {
                c.name.clone()
            };
            csv.write_record([
                name,
                day(c.date()),
                provider.to_owned(),
                t.recipients.to_string(),
                t.relay_accepted.to_string(),
                t.delivered.to_string(),
                t.bounced_hard.to_string(),
                t.complained.to_string(),
                rate(r.hard_bounce),
                rate(r.complaint),
            ])?;
        }
    }
    csv.flush()
}

fn md(text: &str) -> String {
    one_line(text)
        .chars()
        .flat_map(|c| match c {
            '|' | '\\' | '*' | '_' | '`' | '<' | '>' | '[' | ']' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

fn markdown(trends: &Trends, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "# Campaigns over time")?;
    writeln!(out)?;
    writeln!(
        out,
        "| Date | Campaign | Recipients | Accepted by relay | Delivery confirmed | Hard bounces | Complaints |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|")?;
    for c in &trends.campaigns {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            day(c.date()),
            md(&c.name),
            c.totals.recipients,
            c.totals.relay_accepted,
            c.totals.delivered,
            format_rate(c.rates.hard_bounce),
            format_rate(c.rates.complaint)
        )?;
    }
    let latest = &trends.campaigns[trends.campaigns.len().saturating_sub(TREND_CAMPAIGNS)..];
    let heads: Vec<String> = latest.iter().map(|c| md(&c.name)).collect();
    for (title, rate) in [
        (
            "Hard-bounce rate by provider",
            (|r: &Rates| r.hard_bounce) as fn(&Rates) -> Option<f64>,
        ),
        ("Complaint rate by provider", |r: &Rates| r.complaint),
    ] {
        writeln!(out)?;
        writeln!(out, "## {title}")?;
        writeln!(out)?;
        writeln!(out, "| Provider | {} | Trend |", heads.join(" | "))?;
        writeln!(out, "|---|{}---|", "---:|".repeat(heads.len()))?;
        for (p, series, dir) in provider_lines(trends, rate) {
            let cells: Vec<String> = series.iter().map(|r| format_rate(*r)).collect();
            writeln!(out, "| {} | {} | {dir} |", p.label(), cells.join(" | "))?;
        }
    }
    Ok(())
}

const COLOURS: [&str; 8] = [
    "#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#5d4037", "#546e7a",
];

/// An inline SVG line chart of one rate per main provider (and overall) across campaigns.
pub(super) fn trend_svg(trends: &Trends, title: &str, rate: fn(&Rates) -> Option<f64>) -> String {
    let campaigns = &trends.campaigns;
    if campaigns.len() < 2 {
        return "<p>The trend needs two campaigns or more.</p>\n".to_owned();
    }
    let (width, height, left, bottom) = (720.0, 200.0, 50.0, 30.0);
    let mut lines: Vec<(String, Vec<Option<f64>>)> = vec![(
        "all".into(),
        campaigns.iter().map(|c| rate(&c.rates)).collect(),
    )];
    for p in trends.main_providers() {
        lines.push((
            p.label().to_owned(),
            campaigns
                .iter()
                .map(|c| c.provider(p).and_then(|t| rate(&t.rates)))
                .collect(),
        ));
    }
    let peak = lines
        .iter()
        .flat_map(|(_, s)| s.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(0.001);
    let x = |i: usize| left + (width - left - 10.0) * i as f64 / (campaigns.len() - 1) as f64;
    let y = |v: f64| (height - bottom) * (1.0 - v / peak) + 5.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" role=\"img\" \
         aria-label=\"{title}\"><text x=\"0\" y=\"12\" font-size=\"12\">{peak}</text>\
         <text x=\"0\" y=\"{zero}\" font-size=\"12\">0%</text>",
        h = height + 20.0 * ((lines.len() as f64 / 4.0).ceil()),
        peak = format_rate(Some(peak)),
        zero = y(0.0),
    );
    for (n, (label, series)) in lines.iter().enumerate() {
        let colour = if n == 0 {
            "#000"
        } else {
            COLOURS[(n - 1) % COLOURS.len()]
        };
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v))))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\" points=\"{}\"/>",
            if n == 0 { 3 } else { 2 },
            points.join(" ")
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{colour}\">■ {}</text>",
            left + 170.0 * (n % 4) as f64,
            height + 14.0 + 20.0 * (n / 4) as f64,
            super::html::esc(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn html(trends: &Trends) -> String {
    let mut h = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Campaigns over time</title><style>body{font-family:system-ui,sans-serif;\
         max-width:960px;margin:2em auto;padding:0 1em}table{border-collapse:collapse}\
         td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:right}\
         td:first-child,th:first-child,td:nth-child(2){text-align:left}</style></head><body>\n\
         <h1>Campaigns over time</h1>\n<table><tr><th>Date</th><th>Campaign</th>\
         <th>Recipients</th><th>Accepted by relay</th><th>Delivery confirmed</th>\
         <th>Hard bounces</th><th>Complaints</th></tr>\n",
    );
    for c in &trends.campaigns {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            day(c.date()),
            super::html::esc(&c.name),
            c.totals.recipients,
            c.totals.relay_accepted,
            c.totals.delivered,
            format_rate(c.rates.hard_bounce),
            format_rate(c.rates.complaint)
        );
    }
    h.push_str("</table>\n<h2>Hard-bounce rate by provider</h2>\n");
    h.push_str(&trend_svg(trends, "hard-bounce rate by provider", |r| {
        r.hard_bounce
    }));
    h.push_str("<h2>Complaint rate by provider</h2>\n");
    h.push_str(&trend_svg(trends, "complaint rate by provider", |r| {
        r.complaint
    }));
    h.push_str("<p style=\"color:#666\">Generated by mailroom.</p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn directions() {
        let s = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        assert_eq!(direction(&s(&[0.01, 0.02, 0.02, 0.04])), "rising");
        assert_eq!(direction(&s(&[0.04, 0.02, 0.01])), "falling");
        assert_eq!(direction(&s(&[0.02, 0.02])), "flat");
        assert_eq!(direction(&s(&[0.01, 0.03, 0.02])), "mixed");
        assert_eq!(direction(&[None, Some(0.01), None, Some(0.03)]), "rising");
        assert_eq!(direction(&s(&[0.01])), "");
        assert_eq!(direction(&[]), "");
    }
}
