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
    /// Read this ledger instead of the campaign's configured store.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
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
    let target = resolve(
        args.campaign.as_deref(),
        args.db.as_deref(),
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
            Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
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
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.context("writing the report")),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
