//! `mailroom preview`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom preview`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom preview` is not available in this build yet")
}
