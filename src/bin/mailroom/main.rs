//! The `mailroom` binary: parses the command line, sets up logging, runs one subcommand and turns
//! its result into an exit code. Every subcommand lives in `commands/<name>.rs` and only wires
//! library modules together.
//!
//! Exit codes: 0 success, 1 finished with problems (invalid contacts, failures), 2 error (the job
//! could not be done at all), 130 interrupted.

// First: its macros (`out!`, `outln!`, `err!`, `errln!`) are used by the modules after it.
#[macro_use]
mod output;
mod commands;
mod counted;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Send newsletter campaigns from a terminal and know what happened to every message.
#[derive(Debug, Parser)]
#[command(name = "mailroom", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug); MAILROOM_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a working example campaign folder.
    Init(commands::init::Args),
    /// Validate a campaign (config, contacts, templates) without sending anything.
    Check(commands::check::Args),
    /// Print messages exactly as they would be sent.
    Preview(commands::preview::Args),
    /// Send a campaign through the configured relay, exactly once per recipient.
    Send(commands::send::Args),
    /// Print a campaign's numbers from the ledger.
    Report(commands::report::Args),
    /// Live deliverability dashboard over the ledger.
    Dashboard(commands::dashboard::Args),
    /// Run the embedded SMTP test server.
    Sandbox(commands::sandbox::Args),
    /// Run the whole flow against the embedded sandbox, with no account anywhere.
    Demo(commands::demo::Args),
    /// Parse and import bounces and complaints.
    Bounces(commands::bounces::Args),
    /// Manage the suppression list shared by all campaigns.
    Suppress(commands::suppress::Args),
    /// Probe an SMTP server's ports, TLS and AUTH (or, with --dns, check SPF, DKIM and DMARC).
    Doctor(commands::doctor::Args),
    /// DKIM keys: make a key pair and print the TXT record to publish.
    Dkim(commands::dkim::Args),
    /// Upgrade a ledger written by an older mailroom (reading commands never change one).
    Upgrade(commands::upgrade::Args),
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    large_buffers_return_to_the_system();
    let cli = Cli::parse();
    // The embedded dashboard owns the terminal: log lines on stderr would be drawn over it.
    let screen_owned = matches!(&cli.command, Command::Send(a) if a.dashboard);
    init_tracing(if screen_owned {
        None
    } else {
        Some(cli.verbose)
    });
    // One rustls crypto provider for the whole process (see notes on aws-lc vs ring): installing
    // it twice is harmless, so the result is ignored.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();

    let result = match cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Preview(args) => commands::preview::run(args),
        Command::Send(args) => commands::send::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Dashboard(args) => commands::dashboard::run(args),
        Command::Sandbox(args) => commands::sandbox::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Bounces(args) => commands::bounces::run(args),
        Command::Suppress(args) => commands::suppress::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Dkim(args) => commands::dkim::run(args),
        Command::Upgrade(args) => commands::upgrade::run(args),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            errln!("mailroom: {err:#}");
            ExitCode::from(2)
        }
    };
    output::finish(code)
}

/// Logs go to stderr so that stdout stays clean for reports and JSON.
///
/// lettre logs every line it writes at debug level, AUTH payloads included (base64 of the
/// password) and whole message bodies (recipients' personal data). No verbosity setting, not
/// even `MAILROOM_LOG=trace`, may show those, so a global filter caps lettre at info whatever
/// the env filter says.
fn init_tracing(verbose: Option<u8>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = match verbose {
        None => "off",
        Some(0) => "warn",
        Some(1) => "info",
        Some(_) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let no_wire_secrets = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.target().starts_with("lettre") && *meta.level() > tracing::Level::INFO)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .finish()
        .with(no_wire_secrets)
        .init();
}

/// glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB); after the
/// first message with a 10 MB attachment is dropped, later ones are carved from per-thread arenas
/// that keep the freed space, and peak RSS with 4 connections grew to 150–165 MiB instead of
/// about 85 (`scripts/bench-attachment-memory.sh`). A fixed threshold keeps every buffer of 1 MiB
/// or more mapped on its own and returned to the system when it is dropped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn large_buffers_return_to_the_system() {
    // SAFETY: `mallopt` only sets an allocator parameter and has no memory-safety
    // preconditions; it runs first thing in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
