//! The vocabulary the bounce classifier reads and speaks: the reasons (sisimai's names, defined in
//! `model` so that send-time classification shares them), the [`Evidence`] one report carries,
//! and the SMTP [`Stage`] a refusal came at.
//!
//! This module holds types and the stage reader only. The phrase tables are in `keywords`,
//! provider rules in `rhost`, and the decision itself in `classify`; all of them use this module
//! and this module uses none of them, so the classifier's parts form no import circle.

use super::Action;

pub use crate::model::Reason;

/// What a bounce says about one recipient.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence<'a> {
    pub status: Option<&'a str>,
    pub reply_code: Option<u16>,
    pub action: Option<Action>,
    /// The remote server's words for this recipient.
    pub diagnostic: &'a str,
    /// Surrounding human-readable text (may repeat the diagnostic).
    pub context: &'a str,
    /// The Diagnostic-Code type (`smtp`, `x-unix`, `x-postfix`), lowercase.
    pub diagnostic_type: Option<&'a str>,
    /// The failed recipient, the server that refused it, and the MTA that wrote the bounce:
    /// they select a provider's own rules (`rhost`).
    pub recipient: Option<&'a str>,
    pub remote_host: Option<&'a str>,
    pub reporting_host: Option<&'a str>,
}

/// The SMTP stage a refusal came at, as far as the text tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Helo,
    Mail,
    Rcpt,
    Data,
}

/// Phrases naming the command a reply answered, lowercase, most specific first.
const STAGE_PHRASES: &[(Stage, &[&str])] = &[
    (Stage::Rcpt, &["rcpt", "does not like recipient"]),
    (
        Stage::Data,
        &[
            ">>> data",
            "end of data",
            "after data",
            "data command",
            "reply to data",
            "message body",
            "failed after i sent the message",
        ],
    ),
    (
        Stage::Mail,
        &[
            "mail from",
            ">>> mail",
            "after mail",
            "mail command",
            "but sender was rejected",
        ],
    ),
    (
        Stage::Helo,
        &[
            "ehlo",
            "helo",
            "but my name was rejected",
            "refused to talk to me",
        ],
    ),
    (Stage::Connect, &["initial connection", "greeting"]),
];

/// The stage named in `lower` (lowercased text), if any.
pub fn stage(lower: &str) -> Option<Stage> {
    STAGE_PHRASES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| lower.contains(p)))
        .map(|(stage, _)| *stage)
}
