//! `mailroom report CAMPAIGN [--format text|json|csv|md|html] [--db PATH] [--all]`: prints a
//! campaign's numbers from the ledger, through the same queries as the dashboard
//! (`mailroom::report`); with `--all`, every campaign of the ledger side by side.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use mailroom::report::{self, Ledger};

/// Output formats of `mailroom report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable summary.
    Text,
    /// One JSON object: campaign, totals, rates, funnel, domains, providers, diagnoses,
    /// reasons, series, recent (docs/report.md lists every key).
    Json,
    /// One row per recipient: email, state, code, enhanced code, reply, attempts, last attempt.
    Csv,
    /// Shareable Markdown report.
    Md,
    /// Shareable self-contained HTML report (inline SVG charts).
    Html,
}

/// Arguments of `mailroom report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign folder or its campaign.toml (finds the ledger and the campaign name).
    #[arg(value_name = "CAMPAIGN", required_unless_present = "db")]
    pub campaign: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Read this ledger instead of the campaign's configured store. Repeat it to merge the
    /// ledgers of a campaign sent in shards from several hosts (summed by campaign name; a
    /// recipient in two ledgers is counted once and flagged).
    #[arg(long, value_name = "PATH")]
    pub db: Vec<PathBuf>,
    /// Campaign name inside the ledger (needed with --db when it holds several).
    #[arg(long = "campaign", value_name = "NAME")]
    pub name: Option<String>,
    /// Every campaign of the ledger, oldest first: date, size, accepted, delivered, bounce and
    /// complaint rates, overall and by mailbox provider.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
}

/// Where to read and which campaign, from the arguments.
pub struct Target {
    pub db: PathBuf,
    pub name: Option<String>,
    /// The loaded campaign, when CAMPAIGN was given (for today's allowance).
    pub campaign: Option<mailroom::campaign::Campaign>,
}

/// Resolves CAMPAIGN / --db / --campaign into a ledger path and a campaign name.
pub fn resolve(
    campaign: Option<&Path>,
    db: Option<&Path>,
    name: Option<&str>,
) -> anyhow::Result<Target> {
    let loaded = match campaign {
        Some(path) => Some(
            mailroom::campaign::Campaign::load_without_keys(path)
                .with_context(|| format!("loading campaign {}", path.display()))?,
        ),
        None => None,
    };
    let db = match (db, &loaded) {
        (Some(db), _) => db.to_owned(),
        (None, Some(c)) => c.config().store.path.clone(),
        (None, None) => anyhow::bail!("give a CAMPAIGN folder or --db PATH"),
    };
    let name = name
        .map(str::to_owned)
        .or_else(|| loaded.as_ref().map(|c| c.name().to_owned()));
    Ok(Target {
        db,
        name,
        campaign: loaded,
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.db.len() > 1 {
        return run_merged(&args);
    }
    let target = resolve(
        args.campaign.as_deref(),
        args.db.first().map(PathBuf::as_path),
        args.name.as_deref(),
    )?;
    let ledger = match Ledger::open(&target.db) {
        Ok(ledger) => ledger,
        Err(report::Error::Store(mailroom::store::Error::Missing { path })) => {
            anyhow::bail!(
                "no ledger at {}: this campaign has not been sent yet\n\n\
                 Run `mailroom send {}` first (or `mailroom check` to validate it), or pass \
                 --db PATH if the ledger lives elsewhere.",
                path.display(),
                args.campaign
                    .as_deref()
                    .map_or_else(|| "CAMPAIGN".to_owned(), |p| p.display().to_string())
            )
        }
        Err(e) => return Err(e.into()),
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.all {
        let trends = ledger.trends()?;
        let format = match args.format {
            Format::Text => report::TrendFormat::Text,
            Format::Json => report::TrendFormat::Json,
            Format::Csv => report::TrendFormat::Csv,
            Format::Md => report::TrendFormat::Markdown,
            Format::Html => report::TrendFormat::Html,
        };
        let written = report::write_trends(&trends, format, &mut out)
            .map_err(anyhow::Error::from)
            .and_then(|()| out.flush().map_err(anyhow::Error::from));
        return match written {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if crate::output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e.context("writing the report")),
        };
    }
    let summary = ledger.find_campaign(target.name.as_deref())?;
    let written = match args.format {
        Format::Csv => {
            report::write_csv(&ledger, summary.id, &mut out).map_err(anyhow::Error::from)
        }
        format => {
            let mut data = ledger.campaign_report(&summary)?;
            if let Some(c) = target
                .campaign
                .as_ref()
                .filter(|c| c.name() == summary.name)
            {
                let rate = &c.config().rate;
                data.allowance = ledger.allowance(
                    c.from_domain(),
                    &rate.warmup,
                    rate.daily_cap,
                    mailroom::clock::now_ms(),
                )?;
            }
            match format {
                Format::Text => report::write_text(&data, &mut out),
                Format::Json => report::write_json(&data, &mut out),
                Format::Md => report::write_markdown(&data, &mut out),
                _ => {
                    // The trend across campaigns, when there is one to show.
                    let trends = ledger.trends()?;
                    if trends.campaigns.len() > 1 {
                        report::write_html_with_trends(&data, &trends, &mut out)
                    } else {
                        report::write_html(&data, &mut out)
                    }
                }
            }
            .map_err(anyhow::Error::from)
        }
    };
    let flushed = written.and_then(|()| out.flush().map_err(anyhow::Error::from));
    match flushed {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // `mailroom report | head` closes the pipe early: not an error.
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.context("writing the report")),
    }
}

/// `report --db A --db B ...`: one campaign over several ledgers.
fn run_merged(args: &Args) -> anyhow::Result<ExitCode> {
    if args.all {
        anyhow::bail!(
            "--all reads one ledger\n\nRun `mailroom report --all --db PATH` once per ledger."
        );
    }
    // The campaign name: --campaign, else the one in CAMPAIGN's campaign.toml, else the only
    // campaign of the ledgers.
    let name = match (&args.name, &args.campaign) {
        (Some(n), _) => Some(n.clone()),
        (None, Some(path)) => Some(
            mailroom::campaign::Campaign::load_without_keys(path)
                .with_context(|| format!("loading campaign {}", path.display()))?
                .name()
                .to_owned(),
        ),
        (None, None) => None,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let written = if args.format == Format::Csv {
        csv_merged(&args.db, name.as_deref(), &mut out)
    } else {
        let merged = report::merge::load(&args.db, name.as_deref())?;
        match args.format {
            Format::Json => report::write_json_merged(&merged, &mut out),
            Format::Html => report::write_html(&merged.report, &mut out),
            Format::Md => report::write_merged_heading(&merged, &mut out)
                .and_then(|()| report::write_markdown(&merged.report, &mut out)),
            _ => report::write_merged_heading(&merged, &mut out)
                .and_then(|()| report::write_text(&merged.report, &mut out)),
        }
        .map_err(anyhow::Error::from)
    };
    match written.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if crate::output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.context("writing the report")),
    }
}

/// Every ledger's recipient rows under one header, ledger by ledger (a recipient in two
/// ledgers appears in each, with the state that ledger holds).
fn csv_merged(paths: &[PathBuf], name: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut name = name.map(str::to_owned);
    for (i, path) in paths.iter().enumerate() {
        let ledger = Ledger::open(path)?;
        let summary = ledger.find_campaign(name.as_deref())?;
        name.get_or_insert_with(|| summary.name.clone());
        report::write_csv_rows(&ledger, summary.id, i == 0, out)?;
    }
    Ok(())
}
