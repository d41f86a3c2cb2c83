//! The dashboard's relay table: what each `[[relay]]` did for the campaign (attempts, accepted,
//! deferred, bounced, failures, cool-offs), at the top of the providers pane, shown only when
//! the campaign went through more than one relay. Pure rendering of the report, like the rest of
//! `view`.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::widgets::{Block, Cell, Row, Table};

use crate::display::one_line;
use crate::report::CampaignReport;

/// Draws the relay table at the top of `area` and returns what is left below it (all of `area`
/// when there is nothing to show).
pub(super) fn render_relays(report: &CampaignReport, frame: &mut Frame, area: Rect) -> Rect {
    let relays = &report.relays;
    if relays.is_empty() || area.height < 6 {
        return area;
    }
    // Header, borders and the rows, but at most half the pane.
    let wanted = u16::try_from(relays.len())
        .unwrap_or(u16::MAX)
        .saturating_add(3);
    let height = wanted.min(area.height / 2);
    let [top, rest] =
        Layout::vertical([Constraint::Length(height), Constraint::Min(0)]).areas(area);
    let rows: Vec<Row> = relays
        .iter()
        .map(|r| {
            let cooloffs = Cell::from(r.cooloffs.to_string());
            Row::new(vec![
                Cell::from(one_line(&r.name)),
                Cell::from(r.attempts.to_string()),
                Cell::from(r.accepted.to_string()),
                Cell::from(r.deferred.to_string()),
                Cell::from(r.bounced.to_string()),
                Cell::from(r.failures.to_string()),
                if r.cooloffs > 0 {
                    cooloffs.style(Style::new().yellow())
                } else {
                    cooloffs
                },
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Min(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new([
            "Relay",
            "Attempts",
            "Accepted",
            "Deferred",
            "Bounced",
            "Failures",
            "Cool-offs",
        ])
        .bold(),
    )
    .block(
        Block::bordered()
            .title(format!(" Relays ({}) ", relays.len()))
            .border_style(Style::new().dark_gray()),
    );
    frame.render_widget(table, top);
    rest
}
