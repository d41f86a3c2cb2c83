//! `mailroom doctor`: not written yet.

use std::process::ExitCode;

/// Arguments of `mailroom doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`mailroom doctor` is not available in this build yet")
}
