//! `mailroom init`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom init`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom init` is not available in this build yet")
}
