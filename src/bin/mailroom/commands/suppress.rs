//! `mailroom suppress`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom suppress`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom suppress` is not available in this build yet")
}
