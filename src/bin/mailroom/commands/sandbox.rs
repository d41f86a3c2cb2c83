//! `mailroom sandbox`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom sandbox` is not available in this build yet")
}
