//! `mailroom suppress list|add|remove|import`: the suppression list of a ledger (shared by every
//! campaign in it), with the reason and source of each entry. The ledger is `--db PATH`, or the
//! `[store] path` of the campaign given with `--campaign`.

use mailroom::display::one_line;
use std::path::PathBuf;
use std::process::ExitCode;

use mailroom::bounce::suppress;

/// Arguments of `mailroom suppress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ledger file.
    #[arg(long, value_name = "PATH", global = true, conflicts_with = "campaign")]
    db: Option<PathBuf>,
    /// A campaign folder (or campaign.toml) whose ledger to use.
    #[arg(long, value_name = "DIR", global = true)]
    campaign: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print every suppressed address with its reason and source.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Suppress addresses.
    Add {
        #[arg(required = true)]
        emails: Vec<String>,
        /// hard_bounce, complaint, unsubscribe or manual.
        #[arg(long, default_value = "manual")]
        reason: String,
    },
    /// Remove addresses from the list (they may be mailed again).
    Remove {
        #[arg(required = true)]
        emails: Vec<String>,
    },
    /// Suppress every address of a file: a CSV with an `email` column, or one per line.
    Import {
        file: PathBuf,
        #[arg(long, default_value = "manual")]
        reason: String,
    },
}

fn ledger(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(db) = &args.db {
        return Ok(db.clone());
    }
    if let Some(dir) = &args.campaign {
        return Ok(super::bounces::target(dir)?.store);
    }
    anyhow::bail!(
        "no ledger given\n\nPass --db PATH, or --campaign DIR to use that campaign's ledger."
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = ledger(&args)?;
    if let Command::List { json } = args.command {
        // Listing reads only: it must not create (or change) a ledger by mistake.
        let entries = mailroom::store::Reader::open(&path)?.suppressions()?;
        return list(&path, &entries, json);
    }
    // Removing needs the list to exist; adding may start one (a ledger shared by campaigns
    // can hold suppressions before its first send), but never silently: a mistyped --db
    // would otherwise take the addresses while the real ledger goes on mailing them.
    let new_ledger = !path.exists();
    if new_ledger && matches!(args.command, Command::Remove { .. }) {
        anyhow::bail!(
            "no ledger at {}: nothing to remove from\n\nCheck the path: the ledger `mailroom \
             send` writes is the [store] path of campaign.toml (mailroom.db beside it by \
             default), or pass --campaign DIR.",
            path.display()
        );
    }
    let mut ledger = mailroom::store::open(&path)?;
    if new_ledger {
        errln!(
            "note: there was no ledger at {}; a new one was created and holds only this \
             suppression list. If you meant an existing ledger, check the path: `mailroom \
             send` reads the [store] path of campaign.toml (mailroom.db beside it by default).",
            path.display()
        );
    }
    match args.command {
        Command::List { .. } => Ok(ExitCode::SUCCESS),
        Command::Add { emails, reason } => {
            let mut problems = 0;
            for email in &emails {
                match suppress::add(&mut ledger, email, &reason, "cli", None) {
                    Ok(true) => outln!("suppressed {email} ({reason})"),
                    Ok(false) => outln!("{email} was already suppressed (kept its first reason)"),
                    Err(e @ suppress::Error::BadAddress(_)) => {
                        errln!("mailroom: {e}");
                        problems += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(exit(problems))
        }
        Command::Remove { emails } => {
            let mut problems = 0;
            for email in &emails {
                match suppress::remove(&ledger, email) {
                    Ok(true) => outln!("removed {email}"),
                    Ok(false) => {
                        errln!("mailroom: {email} is not on the suppression list");
                        problems += 1;
                    }
                    Err(e @ suppress::Error::BadAddress(_)) => {
                        errln!("mailroom: {e}");
                        problems += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(exit(problems))
        }
        Command::Import { file, reason } => {
            let source = format!("file:{}", file.display());
            let s = suppress::import_file(&mut ledger, &file, &reason, &source)?;
            for (line, text, why) in &s.invalid {
                errln!(
                    "mailroom: {}:{line}: skipped `{}`: {}",
                    file.display(),
                    one_line(text),
                    one_line(why.lines().next().unwrap_or(""))
                );
            }
            outln!(
                "{}: {} added, {} already suppressed, {} invalid",
                file.display(),
                s.added,
                s.already,
                s.invalid.len()
            );
            Ok(exit(s.invalid.len()))
        }
    }
}

fn list(
    path: &std::path::Path,
    entries: &[suppress::Entry],
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        for e in entries {
            outln!("{}", serde_json::to_string(e)?);
        }
    } else if entries.is_empty() {
        outln!("the suppression list of {} is empty", path.display());
    } else {
        let w = entries
            .iter()
            .map(|e| e.email.len())
            .max()
            .unwrap_or(5)
            .max(5);
        outln!(
            "{:<w$}  {:<11}  {:<20}  {:<16}  SOURCE",
            "EMAIL",
            "REASON",
            "ADDED (UTC)",
            "CAMPAIGN"
        );
        for e in entries {
            let added = chrono::DateTime::from_timestamp_millis(e.created_at)
                .map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M:%S").to_string());
            outln!(
                "{:<w$}  {:<11}  {:<20}  {:<16}  {}",
                one_line(&e.email),
                e.reason,
                added,
                one_line(e.campaign.as_deref().unwrap_or("-")),
                one_line(&e.source)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exit(problems: usize) -> ExitCode {
    if problems > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
