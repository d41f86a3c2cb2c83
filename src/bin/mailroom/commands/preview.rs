//! `mailroom preview CAMPAIGN [--to ADDRESS | --line N] [--limit K] [--out DIR]`: renders
//! messages exactly as `send` would and prints their bytes to stdout. No network.
//!
//! Separation: stdout carries only message bytes; the line
//! `==> message I of K: to <ADDR> (line N) <==` goes to stderr before each message, so
//! `mailroom preview C > one.eml` with the default `--limit 1` yields a sendable .eml file.
//! With `--out DIR` each message is written to `DIR/line-N.eml` instead.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use mailroom::campaign::{Campaign, ContactEntry, normalize_address};

/// Arguments of `mailroom preview`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign folder (holding campaign.toml) or the toml file itself.
    pub campaign: PathBuf,
    /// Preview the message for this address.
    #[arg(long, conflicts_with = "line")]
    pub to: Option<String>,
    /// Preview the message for the CSV record starting at this line (header = line 1).
    #[arg(long)]
    pub line: Option<u64>,
    /// How many messages to print.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Write each message to DIR/line-N.eml instead of stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let campaign = Campaign::load(&args.campaign)
        .with_context(|| format!("cannot preview the campaign {}", args.campaign.display()))?;
    let want_to = match args.to.as_deref() {
        Some(t) => Some(
            normalize_address(t)
                .map_err(|reason| anyhow::anyhow!("--to {t:?} is not a valid address: {reason}"))?
                .to_lowercase(),
        ),
        None => None,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut shown = 0u64;
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for entry in campaign.contacts()? {
        if shown >= args.limit {
            break;
        }
        let entry = entry?;
        let contact = match entry {
            ContactEntry::Valid(c) => c,
            ContactEntry::Invalid { line, reason, .. } if args.line == Some(line) => {
                errln!("mailroom: line {line} is not a valid contact: {reason}");
                return Ok(ExitCode::from(1));
            }
            ContactEntry::Duplicate {
                line, first_line, ..
            } if args.line == Some(line) => {
                errln!(
                    "mailroom: line {line} duplicates line {first_line}, so `send` skips it; preview line {first_line} instead"
                );
                return Ok(ExitCode::from(1));
            }
            _ => continue,
        };
        if args.line.is_some_and(|l| l != contact.line) {
            continue;
        }
        if let Some(t) = &want_to
            && contact.email.to_lowercase() != *t
        {
            continue;
        }
        shown += 1;
        let total = if args.to.is_some() || args.line.is_some() {
            1
        } else {
            args.limit
        };
        match campaign.render(&contact) {
            Ok(r) => {
                errln!(
                    "==> message {shown} of {total}: to <{}> (line {}) <==",
                    r.envelope_to,
                    contact.line
                );
                if let Some(dir) = &args.out {
                    let path = dir.join(format!("line-{}.eml", contact.line));
                    std::fs::write(&path, &r.bytes)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    errln!("wrote {}", path.display());
                } else if let Err(e) = out.write_all(&r.bytes) {
                    // The reader went away (`| head`): what it wanted is shown; stop here.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e.into());
                }
            }
            Err(e) => {
                failed = true;
                errln!("mailroom: {e}");
            }
        }
        if args.to.is_some() || args.line.is_some() {
            break;
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        flushed => flushed?,
    }
    if shown == 0 {
        let what = match (&args.to, args.line) {
            (Some(t), _) => format!("no valid contact has the address {t}"),
            (None, Some(l)) => format!("no CSV record starts at line {l}"),
            _ => "the contacts file has no valid contact".to_owned(),
        };
        errln!(
            "mailroom: {what} in {}",
            campaign.config().contacts.path.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
