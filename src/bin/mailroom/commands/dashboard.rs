//! `mailroom dashboard [CAMPAIGN | --db PATH]`: the live deliverability dashboard
//! (`mailroom::tui`) over a campaign's ledger, read-only, while a send may run elsewhere.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use mailroom::report::Thresholds;

use super::report::resolve;

/// Arguments of `mailroom dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign folder or its campaign.toml (finds the ledger and the campaign name).
    #[arg(value_name = "CAMPAIGN", required_unless_present = "db")]
    pub campaign: Option<PathBuf>,
    /// Read this ledger instead of the campaign's configured store. Repeat it to watch the
    /// ledgers of a campaign sent in shards as one (shared recipients counted once).
    #[arg(long, value_name = "PATH")]
    pub db: Vec<PathBuf>,
    /// Campaign to show first (default: the campaign given, else the newest in the ledger).
    #[arg(long = "campaign", value_name = "NAME")]
    pub name: Option<String>,
    /// Hard-bounce rate (percent) at which the gauge turns yellow.
    #[arg(long, value_name = "PERCENT", default_value_t = 2.0)]
    pub bounce_warn: f64,
    /// Hard-bounce rate (percent) at which the gauge turns red.
    #[arg(long, value_name = "PERCENT", default_value_t = 5.0)]
    pub bounce_alarm: f64,
    /// Complaint rate (percent) at which the gauge turns yellow.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.1)]
    pub complaint_warn: f64,
    /// Complaint rate (percent) at which the gauge turns red.
    #[arg(long, value_name = "PERCENT", default_value_t = 0.3)]
    pub complaint_alarm: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = resolve(
        args.campaign.as_deref(),
        args.db.first().map(PathBuf::as_path),
        args.name.as_deref(),
    )?;
    let mut ledgers = vec![target.db.clone()];
    ledgers.extend(args.db.iter().skip(1).cloned());
    for (flag, value) in [
        ("--bounce-warn", args.bounce_warn),
        ("--bounce-alarm", args.bounce_alarm),
        ("--complaint-warn", args.complaint_warn),
        ("--complaint-alarm", args.complaint_alarm),
    ] {
        if !(0.0..=100.0).contains(&value) {
            anyhow::bail!("{flag} {value} is not a percentage\n\nGive a number from 0 to 100.");
        }
    }
    let thresholds = Thresholds {
        bounce_warn: args.bounce_warn / 100.0,
        bounce_alarm: args.bounce_alarm / 100.0,
        complaint_warn: args.complaint_warn / 100.0,
        complaint_alarm: args.complaint_alarm / 100.0,
    };
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        let ledger = if target.db.exists() {
            String::new()
        } else {
            format!(
                " (and the ledger {} does not exist yet: run `mailroom send` first)",
                target.db.display()
            )
        };
        anyhow::bail!(
            "the dashboard needs a terminal{ledger}\n\n\
             Run it in a terminal, or use `mailroom report` for the same numbers as text, JSON, \
             CSV, Markdown or HTML."
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let interrupted = AtomicBool::new(false);
    runtime
        .block_on(mailroom::tui::run_many(
            ledgers,
            target.name,
            thresholds,
            async {
                // Raw mode turns a typed Ctrl-C into a key (handled by the app); this catches a
                // SIGINT sent from elsewhere. If the handler cannot be installed, only keys quit.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
                interrupted.store(true, Ordering::Relaxed);
            },
        ))
        .context("running the dashboard (is stdout a terminal?)")?;
    if interrupted.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}
