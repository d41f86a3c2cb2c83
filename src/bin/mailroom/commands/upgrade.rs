//! `mailroom upgrade [CAMPAIGN | --db PATH]`: brings a ledger written by an older mailroom to the
//! current schema. Reading commands (`report`, `dashboard`, `suppress list`) never change a
//! ledger, so they send the user here; every writing command (`send`, `bounces import`,
//! `suppress add`) upgrades on its own as well.

use std::path::PathBuf;
use std::process::ExitCode;

use super::report::resolve;

/// Arguments of `mailroom upgrade`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign folder or its campaign.toml (finds the ledger).
    #[arg(value_name = "CAMPAIGN", required_unless_present = "db")]
    pub campaign: Option<PathBuf>,
    /// Upgrade this ledger instead of the campaign's.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = resolve(args.campaign.as_deref(), args.db.as_deref(), None)?;
    if !target.db.is_file() {
        anyhow::bail!(
            "ledger {} does not exist\n\nPass the ledger of a campaign that was sent (mailroom.db beside campaign.toml by default).",
            target.db.display()
        );
    }
    let ledger = mailroom::store::open(&target.db)?;
    outln!(
        "ledger {} is at schema {} (current)",
        target.db.display(),
        ledger.schema_version()?
    );
    Ok(ExitCode::SUCCESS)
}
