//! mailroom: send newsletter campaigns from a terminal and know what happened to every message.
//!
//! # Architecture
//!
//! ```text
//!  campaign.toml + contacts.csv + templates
//!        │  campaign: load, validate, stream rows, render RFC 5322 messages (no I/O beyond files)
//!        ▼
//!  store (SQLite ledger) ◄── send imports valid contacts first; from then on the ledger is the truth
//!        │  pipeline: claims due rows, renders, rate-limits, hands each to a worker
//!        ▼
//!  transport: one owned SMTP connection per worker, a timeout on every command, replies classified
//!        │
//!        ▼  relay (Postfix, a provider, or our `sandbox`)
//!  bounce: parse DSNs / ARF / auto-replies from a mailbox, match them to sends, suppress
//!  provider: who hosts a domain's mail (tables; MX lookups behind a trait, cached in the ledger)
//!  diagnose: what providers' replies and DSN texts mean, with the fix (a table)
//!  report + tui: read-only views of the ledger; the same queries feed both
//!  doctor: probes a server's ports, TLS and AUTH before a campaign
//! ```
//!
//! `model` holds the shared vocabulary and depends on nothing else in the crate; `bounded`
//! reads the files a user names whole, up to a cap. The binary in
//! `src/bin/mailroom` is the composition root and the only code that uses `anyhow`.

pub mod bounce;
pub mod bounded;
pub mod campaign;
pub mod clock;
pub mod diagnose;
pub mod display;
pub mod dkim;
pub mod dns;
pub mod doctor;
pub mod model;
pub mod oauth;
pub mod pipeline;
pub mod provider;
pub mod report;
pub mod sandbox;
pub mod schedule;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod transport;
pub mod tui;
