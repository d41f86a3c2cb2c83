//! One module per subcommand. Each defines `Args` (clap) and `run(Args) -> anyhow::Result<ExitCode>`,
//! and does nothing but wire library modules together and print.

pub mod bounces;
pub mod check;
pub mod dashboard;
pub mod demo;
pub mod dkim;
pub mod doctor;
pub mod init;
pub mod preview;
pub mod report;
pub mod sandbox;
pub mod send;
pub mod suppress;
pub mod upgrade;
