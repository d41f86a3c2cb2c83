//! `mailroom check`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom check`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom check` is not available in this build yet")
}
