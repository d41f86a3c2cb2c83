//! `mailroom report`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom report`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom report` is not available in this build yet")
}
