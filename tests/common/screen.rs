//! The dashboard drawn into ratatui's TestBackend, for snapshot tests: an `App` on a ledger file
//! at a fixed clock, rendered at a given size.

use std::path::Path;

use mailroom::report::{Focus, Ledger, Thresholds};
use mailroom::tui::{self, App, Status};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// The screen of `app` at `width` × `height`, as text.
pub fn draw(app: &App, width: u16, height: u16) -> String {
    let backend = TestBackend::new(width, height);
    let mut terminal = Terminal::new(backend).unwrap();
    terminal
        .draw(|frame| tui::view::render(app, frame))
        .unwrap();
    terminal.backend().to_string()
}

/// A dashboard showing `campaign` of the ledger at `path` (with `focus` drilled into), as read
/// at `taken_at` (Unix milliseconds).
pub fn app_on(path: &Path, campaign: &str, focus: Option<Focus>, taken_at: i64) -> App {
    let read = Ledger::open(path).unwrap();
    let mut app = App::new(
        "ledger.db".into(),
        Some(campaign.to_owned()),
        Thresholds::default(),
    );
    let drill = focus.map(|focus| tui::app::Drill { focus, scroll: 0 });
    let snapshot = tui::snapshot(&read, Some(campaign), drill.as_ref().map(|d| &d.focus));
    app.drill = drill;
    let mut snapshot = snapshot.unwrap();
    snapshot.taken_at = taken_at;
    app.apply(Status::Ready(Box::new(snapshot)));
    app
}
