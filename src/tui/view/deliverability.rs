//! The dashboard's deliverability views: the provider table (each provider's rates coloured at
//! its own thresholds), the diagnoses at the top of the reasons pane ("what the providers are
//! telling you", with the fix), the explanation at the top of a diagnosis drill-down, and the
//! campaigns' trend (rate columns and a sparkline of hard-bounce rates, oldest to newest).
//! Pure rendering of `App`, like the rest of `view`.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Row, Table, TableState};

use super::super::app::{App, Pane};
use super::{HIGHLIGHT, level_colour, pane_block};
use crate::diagnose;
use crate::report::{CampaignSummary, Level, Thresholds, format_rate};

/// The provider table.
pub(super) fn render_providers(app: &App, frame: &mut Frame, area: Rect) {
    let providers = app.providers();
    let count = providers.len();
    let rate_cell = |rate: Option<f64>, level: Level| {
        let style = match level {
            Level::Ok => Style::new(),
            level => Style::new().fg(level_colour(level)).bold(),
        };
        Cell::from(format_rate(rate)).style(style)
    };
    let rows: Vec<Row> = providers
        .into_iter()
        .map(|p| {
            Row::new(vec![
                Cell::from(p.label),
                Cell::from(p.domains.to_string()),
                Cell::from(p.totals.recipients.to_string()),
                Cell::from(p.totals.delivered.to_string()),
                rate_cell(p.rates.hard_bounce, p.levels.bounce),
                rate_cell(p.rates.complaint, p.levels.complaint),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(10),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["Provider", "Dom", "Rcpts", "Deliv", "Hard", "Compl"]).bold())
    .column_spacing(1)
    .block(pane_block(app, Pane::Providers, format!(" ({count})")))
    .row_highlight_style(HIGHLIGHT);
    let mut state = TableState::default().with_selected(
        (app.pane == Pane::Providers && count > 0).then(|| app.selection(Pane::Providers)),
    );
    frame.render_stateful_widget(table, area, &mut state);
}

/// The diagnoses at the top of the reasons pane (when there are any); returns the area left
/// for the reason table.
pub(super) fn render_diagnoses(app: &App, frame: &mut Frame, area: Rect) -> Rect {
    let diagnoses = app.diagnoses();
    if diagnoses.is_empty() {
        return area;
    }
    // Header, borders and the rows, but at most half the pane.
    let wanted = u16::try_from(diagnoses.len())
        .unwrap_or(u16::MAX)
        .saturating_add(3);
    let height = wanted.min(area.height / 2).max(area.height.min(4));
    let [top, rest] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(area);
    let rows: Vec<Row> = diagnoses
        .iter()
        .map(|d| {
            Row::new(vec![
                Cell::from(d.count.to_string()),
                Cell::from(d.title.clone()).bold(),
                Cell::from(d.fix.clone()),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Percentage(40),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["Count", "Diagnosis", "Fix"]).bold())
    .block(titled_block(
        app,
        format!(" What the providers are telling you ({}) ", diagnoses.len()),
    ))
    .row_highlight_style(HIGHLIGHT);
    let selected = app.selection(Pane::Reasons);
    let mut state = TableState::default().with_selected(
        (app.pane == Pane::Reasons && selected < diagnoses.len()).then_some(selected),
    );
    frame.render_stateful_widget(table, top, &mut state);
    rest
}

/// The reasons pane's border, under another title.
fn titled_block(app: &App, title: String) -> Block<'static> {
    let focused = app.pane == Pane::Reasons && app.drill.is_none();
    let block = Block::bordered().title(title);
    if focused {
        block
            .border_style(Style::new().cyan())
            .title_style(Style::new().bold())
    } else {
        block.border_style(Style::new().dark_gray())
    }
}

/// What a diagnosis means and how to fix it, for the top of its drill-down.
pub(super) fn diagnosis_lines(key: &str) -> Vec<Line<'static>> {
    let Some(d) = diagnose::by_key(key) else {
        return vec![Line::from(format!("diagnosis {key}")).bold()];
    };
    vec![
        Line::from(d.title).bold(),
        Line::from(vec!["means ".dark_gray(), Span::raw(d.meaning)]),
        Line::from(vec!["fix   ".dark_gray(), Span::raw(d.fix).green()]),
        Line::from(vec!["see   ".dark_gray(), Span::raw(d.source).dark_gray()]),
        Line::default(),
    ]
}

/// A campaign's delivered count and rates, coloured at the default thresholds.
pub(super) fn campaign_rate_cells(app: &App, c: &CampaignSummary) -> [Cell<'static>; 3] {
    let th: &Thresholds = &app.thresholds;
    let coloured = |rate: Option<f64>, level: Level| {
        let style = match level {
            Level::Ok => Style::new(),
            level => Style::new().fg(level_colour(level)),
        };
        Cell::from(format_rate(rate)).style(style)
    };
    [
        Cell::from(c.delivered.to_string()),
        coloured(c.hard_bounce_rate(), th.bounce(c.hard_bounce_rate())),
        coloured(c.complaint_rate(), th.complaint(c.complaint_rate())),
    ]
}

/// The title text of the campaign pane: the hard-bounce rate of the latest campaigns, oldest
/// to newest, as a sparkline (when the pane is wide enough and there are two or more).
pub(super) fn bounce_trend(campaigns: &[CampaignSummary], width: u16) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    // The list is newest first; the trend reads left to right, oldest first.
    let room = usize::from(width.saturating_sub(24)).min(12);
    let rates: Vec<f64> = campaigns
        .iter()
        .take(room)
        .rev()
        .filter_map(CampaignSummary::hard_bounce_rate)
        .collect();
    if rates.len() < 2 {
        return String::new();
    }
    let peak = rates.iter().copied().fold(0.0f64, f64::max);
    let bars: String = rates
        .iter()
        .map(|r| {
            if peak <= 0.0 {
                BARS[0]
            } else {
                BARS[((r / peak) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect();
    format!(" · bounce {bars}")
}
