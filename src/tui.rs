//! The live dashboard: the event loop and nothing else. It owns the terminal, reads the ledger
//! through `report` on a blocking thread about twice a second, feeds keys to `app::App` and
//! draws with `view::render`. It never writes the ledger.
//!
//! ```text
//!  tick (500 ms) ──► spawn_blocking(fetch: report::Ledger → Snapshot) ──► App::apply
//!  crossterm EventStream ──► App::handle_key ──► Action::{Quit, Reload}
//!  every loop turn ──► terminal.draw(view::render(&App))
//! ```
//!
//! The terminal is restored on every way out: normal return, error, the `shutdown` future
//! (Ctrl-C from the embedding `send --dashboard`), and panics (ratatui's `try_init` installs a
//! panic hook that restores it before the panic message prints).

pub mod app;
pub mod view;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

pub use app::{Action, App, Snapshot, Status};

use crate::report::{self, Focus, Ledger, Thresholds};

/// How often the ledger is re-read.
const REFRESH: Duration = Duration::from_millis(500);

/// Runs the dashboard over `db_path` until the user quits or `shutdown` completes.
///
/// # Errors
/// When the terminal cannot be set up or read.
pub async fn run(
    db_path: PathBuf,
    campaign: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with(db_path, campaign, Thresholds::default(), shutdown).await
}

/// `run` with explicit warning thresholds.
///
/// # Errors
/// When the terminal cannot be set up or read.
pub async fn run_with(
    db_path: PathBuf,
    campaign: Option<String>,
    thresholds: Thresholds,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_many(vec![db_path], campaign, thresholds, shutdown).await
}

/// `run_with` over the ledgers of a campaign sent in shards (`report::merge`): the numbers of
/// all of them, shared recipients counted once.
///
/// # Errors
/// When the terminal cannot be set up or read.
pub async fn run_many(
    mut ledgers: Vec<PathBuf>,
    campaign: Option<String>,
    thresholds: Thresholds,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if ledgers.is_empty() {
        return Ok(());
    }
    let first = ledgers.remove(0);
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(first, campaign, thresholds);
    app.more_ledgers = ledgers;
    let result = event_loop(&mut terminal, app, shutdown).await;
    ratatui::restore();
    result
}

type Fetched = (Option<Ledger>, Status);

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    mut app: App,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ledger: Option<Ledger> = None;
    let mut fetching: Option<JoinHandle<Fetched>> = None;
    // A fetch was asked for while one was running: start another when it lands, so a
    // campaign switch or drill-down never shows stale rows for a whole tick.
    let mut again = false;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        terminal.draw(|frame| view::render(&app, frame))?;
        if fetching.is_none() && again {
            again = false;
            fetching = Some(spawn_fetch(&app, ledger.take()));
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = tick.tick() => {
                if fetching.is_none() {
                    fetching = Some(spawn_fetch(&app, ledger.take()));
                }
            }
            done = async {
                match fetching.as_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            } => {
                fetching = None;
                match done {
                    Ok((kept, status)) => {
                        ledger = kept;
                        app.apply(status);
                    }
                    Err(e) => app.apply(Status::Failed(format!("reading the ledger failed: {e}"))),
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => {
                    match app.handle_key(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::Reload) => again = true,
                        None => {}
                    }
                }
                Some(Ok(_)) => {} // resize and others: the next draw adapts
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}

fn spawn_fetch(app: &App, ledger: Option<Ledger>) -> JoinHandle<Fetched> {
    let path = app.ledger.clone();
    let (campaign, focus) = app.request();
    if !app.more_ledgers.is_empty() {
        let mut paths = vec![path];
        paths.extend(app.more_ledgers.iter().cloned());
        return tokio::task::spawn_blocking(move || {
            (
                None,
                fetch_merged(&paths, campaign.as_deref(), focus.as_ref()),
            )
        });
    }
    // SQLite blocks: never on a runtime worker. The connection moves in and back out so that
    // its prepared-statement cache survives between refreshes.
    tokio::task::spawn_blocking(move || fetch(&path, ledger, campaign.as_deref(), focus.as_ref()))
}

/// Reads one snapshot, reusing `ledger` when given. Returns the connection to keep (none after
/// an error, so the next fetch reopens it).
pub fn fetch(
    path: &Path,
    ledger: Option<Ledger>,
    campaign: Option<&str>,
    focus: Option<&Focus>,
) -> Fetched {
    let ledger = match ledger {
        Some(ledger) => ledger,
        None => match Ledger::open(path) {
            Ok(ledger) => ledger,
            Err(report::Error::Store(crate::store::Error::Missing { .. })) => {
                return (None, Status::Missing);
            }
            Err(e) => return (None, Status::Failed(error_text(&e))),
        },
    };
    match snapshot(&ledger, campaign, focus) {
        Ok(snapshot) => (Some(ledger), Status::Ready(Box::new(snapshot))),
        Err(e) => (None, Status::Failed(error_text(&e))),
    }
}

/// One snapshot over several ledgers (opened afresh each time: they may be written by sends
/// on other hosts and copied here).
pub fn fetch_merged(paths: &[PathBuf], campaign: Option<&str>, focus: Option<&Focus>) -> Status {
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        return Status::Failed(format!("ledger {} does not exist", missing.display()));
    }
    match report::merge::overview(paths, campaign, focus) {
        Ok((campaigns, report, drill)) => Status::Ready(Box::new(Snapshot {
            taken_at: chrono::Utc::now().timestamp_millis(),
            campaigns,
            report,
            drill,
        })),
        Err(e) => Status::Failed(error_text(&e)),
    }
}

/// Everything one frame needs, from an open ledger.
///
/// # Errors
/// When a query fails. An unknown campaign name falls back to the newest campaign.
pub fn snapshot(
    ledger: &Ledger,
    campaign: Option<&str>,
    focus: Option<&Focus>,
) -> Result<Snapshot, report::Error> {
    let (campaigns, report) = ledger.overview(campaign)?;
    let drill = match (&report, focus) {
        (Some(r), Some(focus)) => Some(ledger.drill_down(r.campaign.id, focus)?),
        _ => None,
    };
    Ok(Snapshot {
        taken_at: chrono::Utc::now().timestamp_millis(),
        campaigns,
        report,
        drill,
    })
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
