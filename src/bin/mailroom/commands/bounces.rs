//! `mailroom bounces`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom bounces`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom bounces` is not available in this build yet")
}
