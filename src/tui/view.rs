//! Rendering: a pure function of `App` (its snapshot and UI state) into a frame. No I/O, no
//! clock: times shown come from the snapshot. The provider table, the diagnoses of the reasons
//! pane and the campaigns' trend are drawn by `view/deliverability.rs`.

mod deliverability;
mod relays;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Cell, Clear, LineGauge, Paragraph, Row, Sparkline, Table, TableState, Wrap,
};

use super::app::{App, DomainColumn, Pane, Status};
use crate::report::{
    self, CampaignReport, EntryKind, HistoryEntry, Level, format_rate, format_time,
};

pub(super) const HIGHLIGHT: Style = Style::new().add_modifier(Modifier::REVERSED);

/// Draws the whole dashboard.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    render_title(app, frame, title);
    render_footer(app, frame, footer);
    match &app.status {
        Status::Loading => message(frame, body, "Reading the ledger…", &[]),
        Status::Missing => message(
            frame,
            body,
            "No ledger yet",
            &[
                format!("{} does not exist.", app.ledger.display()),
                "It is created when `mailroom send` starts; this view refreshes by itself."
                    .to_owned(),
                "Press q to quit.".to_owned(),
            ],
        ),
        Status::Failed(error) => message(
            frame,
            body,
            "Cannot read the ledger",
            &[
                error.clone(),
                "Retrying twice a second. Press q to quit.".to_owned(),
            ],
        ),
        Status::Ready(snapshot) => match &snapshot.report {
            None => message(
                frame,
                body,
                "The ledger has no campaign yet",
                &[
                    "A campaign appears here when `mailroom send` imports its contacts.".to_owned(),
                    "Press q to quit.".to_owned(),
                ],
            ),
            Some(report) => render_campaign(app, report, frame, body),
        },
    }
    if app.help {
        render_help(frame, area);
    }
}

fn message(frame: &mut Frame, area: Rect, title: &str, lines: &[String]) {
    let mut text = vec![Line::from(title.bold()), Line::default()];
    text.extend(lines.iter().map(|l| Line::from(l.as_str())));
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(Block::bordered()),
        area,
    );
}

fn render_title(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = vec![" mailroom dashboard ".bold().reversed()];
    if let Some(name) = &app.campaign {
        spans.push(Span::raw(format!(" {name} ")));
    }
    if let Some(snapshot) = app.snapshot() {
        spans.push(Span::raw(format!(
            " updated {} UTC",
            format_time(snapshot.taken_at)
        )));
        if snapshot
            .campaigns
            .iter()
            .any(|c| Some(&c.name) == app.campaign.as_ref() && c.open_runs > 0)
        {
            spans.push(" ● sending".green().bold());
        }
    }
    frame.render_widget(Line::from(spans), area);
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let line = if app.editing_filter {
        Line::from(vec![
            "/".bold(),
            Span::raw(app.filter.clone()),
            "▏".slow_blink(),
            "  Enter apply (an address opens it) · Esc clear".dark_gray(),
        ])
    } else if app.drill.is_some() {
        Line::from("↑↓/jk scroll · Esc back · ? help · q quit".dark_gray())
    } else {
        let mut spans = vec![
            Span::from("Tab pane · ↑↓/jk move · Enter drill down · / filter · ? help · q quit")
                .dark_gray(),
        ];
        if !app.filter.is_empty() {
            spans.push(format!("  filter: {}", app.filter).yellow());
        }
        Line::from(spans)
    };
    frame.render_widget(line, area);
}

fn render_campaign(app: &App, report: &CampaignReport, frame: &mut Frame, area: Rect) {
    let wide = area.width >= 120 && area.height >= 34;
    let top_height = if area.height >= 20 { 9 } else { 8 };
    let [top, spark, bottom] = Layout::vertical([
        Constraint::Length(top_height),
        Constraint::Length(if area.height >= 20 { 3 } else { 0 }),
        Constraint::Min(0),
    ])
    .areas(area);

    let [campaigns, funnel, gauges] = Layout::horizontal([
        Constraint::Percentage(if wide { 40 } else { 30 }),
        Constraint::Percentage(if wide { 30 } else { 35 }),
        Constraint::Min(0),
    ])
    .areas(top);
    render_campaigns(app, frame, campaigns);
    render_funnel(report, frame, funnel);
    render_gauges(app, report, frame, gauges);
    render_sparkline(report, frame, spark);

    if let Some(snapshot) = app.snapshot()
        && let Some(drill) = &app.drill
    {
        render_drill(snapshot.drill.as_ref(), drill, frame, bottom);
        return;
    }
    if wide {
        // Domains with the providers beside them; reasons (diagnoses first) beside the recent
        // events.
        let [tables, lower] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Min(0)]).areas(bottom);
        let [domains, providers] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Min(0)]).areas(tables);
        let [reasons, events] =
            Layout::horizontal([Constraint::Percentage(55), Constraint::Min(0)]).areas(lower);
        render_domains(app, frame, domains);
        let providers = relays::render_relays(report, frame, providers);
        deliverability::render_providers(app, frame, providers);
        render_reasons(app, frame, reasons);
        render_events(app, frame, events);
    } else {
        // One table at a time on small terminals: the focused one (domains by default).
        match app.pane {
            Pane::Reasons => render_reasons(app, frame, bottom),
            Pane::Events => render_events(app, frame, bottom),
            Pane::Providers => {
                let rest = relays::render_relays(report, frame, bottom);
                deliverability::render_providers(app, frame, rest);
            }
            Pane::Campaigns | Pane::Domains => render_domains(app, frame, bottom),
        }
    }
}

pub(super) fn pane_block(app: &App, pane: Pane, extra: String) -> Block<'static> {
    let focused = app.pane == pane && app.drill.is_none();
    let title = format!(" {}{extra} ", pane.title());
    let block = Block::bordered().title(title);
    if focused {
        block
            .border_style(Style::new().cyan())
            .title_style(Style::new().bold())
    } else {
        block.border_style(Style::new().dark_gray())
    }
}

fn render_campaigns(app: &App, frame: &mut Frame, area: Rect) {
    let Some(snapshot) = app.snapshot() else {
        return;
    };
    // The start time needs 11 columns; narrow panes show it in the funnel's title instead.
    let with_started = area.width >= 38;
    // Wide panes show each campaign's rates: the trend across campaigns, newest on top.
    let with_rates = area.width >= 60;
    let rows = snapshot.campaigns.iter().map(|c| {
        let mut cells = vec![Cell::from(c.name.clone())];
        if with_started {
            cells.push(Cell::from(short_time(c.started_at)));
        }
        cells.push(Cell::from(format!("{}", c.recipients)));
        cells.push(Cell::from(format!("{:>3.0}%", c.progress() * 100.0)));
        if with_rates {
            cells.extend(deliverability::campaign_rate_cells(app, c));
        }
        Row::new(cells)
    });
    let (header, widths) = if with_rates {
        (
            vec!["Name", "Started", "Rcpts", "Done", "Deliv", "Hard", "Compl"],
            vec![
                Constraint::Min(6),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
            ],
        )
    } else if with_started {
        (
            vec!["Name", "Started", "Rcpts", "Done"],
            vec![
                Constraint::Min(6),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(4),
            ],
        )
    } else {
        (
            vec!["Name", "Rcpts", "Done"],
            vec![
                Constraint::Min(6),
                Constraint::Length(8),
                Constraint::Length(4),
            ],
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).bold())
        .block(pane_block(
            app,
            Pane::Campaigns,
            deliverability::bounce_trend(&snapshot.campaigns, area.width),
        ))
        .row_highlight_style(HIGHLIGHT);
    let mut state = TableState::default().with_selected(Some(app.selection(Pane::Campaigns)));
    frame.render_stateful_widget(table, area, &mut state);
}

/// "MM-DD HH:MM" (UTC) of a first send, or "not sent".
fn short_time(millis: Option<i64>) -> String {
    match millis {
        // "YYYY-MM-DD HH:MM:SS" → "MM-DD HH:MM"
        Some(t) => format_time(t).get(5..16).unwrap_or("").to_owned(),
        None => "not sent".to_owned(),
    }
}

fn render_funnel(report: &CampaignReport, frame: &mut Frame, area: Rect) {
    let t = &report.totals;
    // Label, count and (when there is room) share of recipients, fitted to the pane.
    let inner = area.width.saturating_sub(2) as usize;
    let show_pct = inner >= 36 && t.recipients > 0;
    let number = 8;
    let label_width = inner
        .saturating_sub(number + if show_pct { 7 } else { 0 })
        .min(22);
    let row = |label: &str, n: u64, style: Style| {
        let mut spans = vec![
            Span::styled(
                format!("{:<label_width$}", truncate(label, label_width)),
                style,
            ),
            Span::styled(format!("{n:>number$}"), style),
        ];
        if show_pct {
            spans.push(Span::raw(format!(
                " {:>6}",
                format_rate(Some(n as f64 / t.recipients as f64))
            )));
        }
        Line::from(spans)
    };
    let rejected = t.bounced_hard + t.bounced_soft + t.failed + t.complained;
    let f = t.funnel();
    // What the relay accepted splits into confirmed, bounced later and no news yet.
    let lines = vec![
        row("Recipients", t.recipients, Style::new().bold()),
        row("├ relay accepted", f.relay_accepted, Style::new().green()),
        row(
            "│├ confirmed (DSN)",
            f.delivered,
            Style::new().green().bold(),
        ),
        row("│├ bounced later", f.bounced_later, Style::new().red()),
        row("│└ no news yet", f.no_news, Style::new()),
        row(
            "├ pending/deferred",
            t.pending + t.sending + t.deferred,
            Style::new().yellow(),
        ),
        Line::from(if inner >= 36 {
            format!(
                "└ unknown {} · bounced/failed {rejected} · supp {}",
                t.unknown, t.suppressed
            )
        } else {
            format!(
                "└ unk {} · bnc {rejected} · sup {}",
                t.unknown, t.suppressed
            )
        })
        .dark_gray(),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(
            " Funnel · sent {} ",
            short_time(report.campaign.started_at)
        ))),
        area,
    );
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        text.chars().take(width).collect()
    }
}

pub(super) fn level_colour(level: Level) -> Color {
    match level {
        Level::Ok => Color::Green,
        Level::Warn => Color::Yellow,
        Level::Alarm => Color::Red,
    }
}

fn render_gauges(app: &App, report: &CampaignReport, frame: &mut Frame, area: Rect) {
    let th = &app.thresholds;
    let block = Block::bordered().title(" Rates ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let rows = Layout::vertical([Constraint::Length(2); 3]).split(inner);
    let gauge = |label: String, ratio: f64, level: Level| {
        // The level is spelled out too, for terminals without colour.
        let label = match level {
            Level::Ok => label,
            Level::Warn => format!("{label} warn"),
            Level::Alarm => format!("{label} ALARM"),
        };
        LineGauge::default()
            .label(label)
            .ratio(ratio.clamp(0.0, 1.0))
            .filled_style(Style::new().fg(level_colour(level)))
            .unfilled_style(Style::new().dark_gray())
    };
    let rates = &report.rates;
    // Bounce and complaint gauges fill at twice the alarm level, so the warn and alarm
    // thresholds sit at visible positions instead of in the first pixel.
    let items = [
        (
            format!("accept {:>6}", format_rate(rates.acceptance)),
            rates.acceptance.unwrap_or(0.0),
            Level::Ok,
        ),
        (
            format!("bounce {:>6}", format_rate(rates.hard_bounce)),
            rates.hard_bounce.unwrap_or(0.0) / (2.0 * th.bounce_alarm),
            th.bounce(rates.hard_bounce),
        ),
        (
            format!("compl. {:>6}", format_rate(rates.complaint)),
            rates.complaint.unwrap_or(0.0) / (2.0 * th.complaint_alarm),
            th.complaint(rates.complaint),
        ),
    ];
    for (row, (label, ratio, level)) in rows.iter().zip(items) {
        frame.render_widget(gauge(label, ratio, level), *row);
    }
}

fn render_sparkline(report: &CampaignReport, frame: &mut Frame, area: Rect) {
    if area.height == 0 {
        return;
    }
    let width = area.width.saturating_sub(2) as usize;
    let data = report::dense_series(&report.series, width);
    let peak = data.iter().copied().max().unwrap_or(0);
    let title = format!(" Attempts/min (last {} min, peak {peak}) ", data.len());
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(&data)
            .style(Style::new().cyan()),
        area,
    );
}

fn render_domains(app: &App, frame: &mut Frame, area: Rect) {
    let rows: Vec<Row> = app
        .domains()
        .into_iter()
        .map(|d| {
            let t = &d.totals;
            let hard_style = match app
                .thresholds
                .bounce((t.recipients > 0).then(|| t.bounced_hard as f64 / t.recipients as f64))
            {
                Level::Ok => Style::new(),
                level => Style::new().fg(level_colour(level)),
            };
            Row::new(vec![
                Cell::from(d.domain.clone()),
                Cell::from(t.recipients.to_string()),
                Cell::from(t.relay_accepted.to_string()),
                Cell::from(t.deferred.to_string()),
                Cell::from(t.bounced_hard.to_string()).style(hard_style),
                Cell::from(t.bounced_soft.to_string()),
                Cell::from(t.complained.to_string()),
                Cell::from(format_rate(d.acceptance)),
            ])
        })
        .collect();
    let header = Row::new(DomainColumn::ALL.map(|c| {
        if c == app.sort {
            Cell::from(format!(
                "{}{}",
                c.header(),
                if app.descending == (c != DomainColumn::Domain) {
                    "▼"
                } else {
                    "▲"
                }
            ))
            .style(Style::new().bold().underlined())
        } else {
            Cell::from(c.header()).style(Style::new().bold())
        }
    }));
    let count = rows.len();
    let table = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(header)
    .column_spacing(1)
    .block(pane_block(
        app,
        Pane::Domains,
        format!(" ({count}) s/←→ sort r reverse"),
    ))
    .row_highlight_style(HIGHLIGHT);
    let mut state = TableState::default().with_selected(
        (app.pane == Pane::Domains && count > 0).then(|| app.selection(Pane::Domains)),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_reasons(app: &App, frame: &mut Frame, area: Rect) {
    let area = deliverability::render_diagnoses(app, frame, area);
    if area.height == 0 {
        return;
    }
    let reasons = app.reasons();
    let count = reasons.len();
    let rows: Vec<Row> = reasons
        .into_iter()
        .map(|r| {
            Row::new(vec![
                Cell::from(r.status_label().to_owned()),
                Cell::from(r.source.as_str()),
                Cell::from(r.outcome.clone()),
                Cell::from(r.count.to_string()),
                Cell::from(one_line(r.example.as_deref().unwrap_or(""))),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["Code", "Seen in", "Outcome", "Count", "Example reply"]).bold())
    .block(pane_block(app, Pane::Reasons, format!(" ({count})")))
    .row_highlight_style(HIGHLIGHT);
    let diagnosed = app.diagnoses().len();
    let mut state = TableState::default().with_selected(
        (app.pane == Pane::Reasons && count > 0)
            .then(|| app.selection(Pane::Reasons))
            .and_then(|at| at.checked_sub(diagnosed)),
    );
    if count == 0 {
        frame.render_widget(
            Paragraph::new("No rejection, deferral or negative feedback recorded.")
                .block(pane_block(app, Pane::Reasons, String::new())),
            area,
        );
        return;
    }
    frame.render_stateful_widget(table, area, &mut state);
}

fn entry_style(entry: &HistoryEntry) -> Style {
    match entry.outcome.as_str() {
        "accepted" | "delivered" => Style::new().green(),
        "deferred" | "throttled" | "delayed" => Style::new().yellow(),
        "unknown" | "aborted" => Style::new().magenta(),
        _ => Style::new().red(),
    }
}

fn entry_what(entry: &HistoryEntry) -> String {
    match &entry.kind {
        EntryKind::Attempt { step, .. } => format!("smtp {step}"),
        EntryKind::Feedback { source, .. } => format!("later {source}"),
    }
}

fn render_events(app: &App, frame: &mut Frame, area: Rect) {
    let events = app.events();
    let count = events.len();
    let rows: Vec<Row> = events
        .into_iter()
        .map(|e| {
            Row::new(vec![
                Cell::from(format_time(e.at).get(11..).unwrap_or("").to_owned()),
                Cell::from(e.email.clone()),
                Cell::from(e.outcome.clone()).style(entry_style(e)),
                Cell::from(one_line(&e.text)),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Percentage(30),
            Constraint::Length(12),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["Time", "Recipient", "Outcome", "Reply"]).bold())
    .block(pane_block(app, Pane::Events, format!(" ({count})")))
    .row_highlight_style(HIGHLIGHT);
    let mut state = TableState::default().with_selected(
        (app.pane == Pane::Events && count > 0).then(|| app.selection(Pane::Events)),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

fn render_drill(
    data: Option<&report::DrillDown>,
    drill: &super::app::Drill,
    frame: &mut Frame,
    area: Rect,
) {
    let mut lines: Vec<Line> = Vec::new();
    // The data may still be for the previous focus until the next fetch lands.
    let data = data.filter(|d| d.focus == drill.focus);
    match data {
        None => lines.push(Line::from("Loading…")),
        Some(d) => {
            if let report::Focus::Diagnosis(key) = &d.focus {
                lines.extend(deliverability::diagnosis_lines(key));
            }
            if let Some(r) = &d.recipient {
                lines.push(Line::from(vec![
                    "state ".dark_gray(),
                    Span::raw(r.state.clone()).bold(),
                    format!(
                        "  attempts {}  relay accepted {}",
                        r.attempts,
                        if r.relay_accepted { "yes" } else { "no" }
                    )
                    .dark_gray(),
                ]));
            }
            if d.entries.is_empty() {
                lines.push(Line::from("No attempts or feedback recorded."));
            }
            for e in &d.entries {
                let code = match (e.code, &e.status) {
                    (Some(c), Some(s)) => format!("{c} {s}"),
                    (Some(c), None) => c.to_string(),
                    (None, Some(s)) => s.clone(),
                    (None, None) => String::new(),
                };
                lines.push(Line::from(vec![
                    Span::raw(format_time(e.at)).dark_gray(),
                    Span::raw(format!(" {:<14}", entry_what(e))),
                    Span::styled(format!("{:<13}", e.outcome), entry_style(e)),
                    Span::raw(format!(" {code}  ")).bold(),
                    Span::raw(e.email.clone()),
                ]));
                for text in e.text.lines() {
                    lines.push(Line::from(format!("    {text}")));
                }
            }
            if d.truncated {
                lines.push(Line::from(
                    format!("(newest {} shown)", report::DRILL_LIMIT).dark_gray(),
                ));
            }
        }
    }
    let title = format!(" {} · Esc back ", drill.focus.title());
    frame.render_widget(
        Paragraph::new(Text::from(lines))
            .wrap(Wrap { trim: false })
            .scroll((drill.scroll, 0))
            .block(
                Block::bordered()
                    .title(title)
                    .border_style(Style::new().cyan()),
            ),
        area,
    );
}

fn render_help(frame: &mut Frame, area: Rect) {
    let lines = [
        "Tab / Shift-Tab   next / previous pane",
        "↑↓ or j k         move (in Campaigns: switch campaign)",
        "PgUp PgDn g G     page, first, last",
        "Enter             drill into domain, provider, diagnosis,",
        "                  reason or recipient",
        "Esc               back / clear filter",
        "/                 filter lists (type an address + Enter",
        "                  to open that recipient)",
        "s ← → h l         domain sort column, r reverse",
        "?                 this help        q / Ctrl-C  quit",
        "",
        "Accepted = accepted by the relay (250 after DATA);",
        "confirmed = a success DSN came back. Gauges and",
        "provider rates turn yellow/red at the warn/alarm",
        "thresholds (each provider's own).",
    ];
    let width = 60.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines.map(Line::from).to_vec())
            .block(Block::bordered().title(" Keys (any key closes) ")),
        popup,
    );
}

use crate::display::one_line;
