//! `mailroom demo`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom demo` is not available in this build yet")
}
