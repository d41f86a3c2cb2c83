//! `mailroom dashboard`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom dashboard`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom dashboard` is not available in this build yet")
}
