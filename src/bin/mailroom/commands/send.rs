//! `mailroom send`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom send`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom send` is not available in this build yet")
}
