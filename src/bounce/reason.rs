//! The vocabulary the bounce classifier reads and speaks: the reasons (sisimai's names, defined in
//! `model` so that send-time classification shares them), the [`Evidence`] one report carries,
//! and the SMTP [`Stage`] a refusal came at.
//!
//! This module holds types and the stage reader only. The phrase tables are in `keywords`,
//! provider rules in `rhost`, and the decision itself in `classify`; all of them use this module
//! and this module uses none of them, so the classifier's parts form no import circle.

use super::Action;
use super::text;

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

/// How MTAs name the command a reply answered, lowercase, most explicit first: Postfix's "in
/// reply to X command", Exim's "after X", DragonFly's "did not like our X", qmail's sentences,
/// then looser wordings.
const STAGE_PHRASES: &[(Stage, &[&str])] = &[
    (
        Stage::Rcpt,
        &[
            "in reply to rcpt to command",
            "after rcpt to",
            "after pipelined rcpt to",
            "did not like our rcpt to",
            "does not like recipient",
            "rcpt to:",
            "rcpt to command",
            ">>> rcpt",
        ],
    ),
    (
        Stage::Data,
        &[
            "in reply to end of data command",
            "in reply to data command",
            "after end of data",
            "after data",
            "did not like our data",
            "did not like our final data",
            "failed after i sent the message",
            ">>> data",
            "end of data",
            "data command",
            "reply to data",
        ],
    ),
    (
        Stage::Mail,
        &[
            "in reply to mail from command",
            "after mail from",
            "did not like our mail from",
            "but sender was rejected",
            ">>> mail",
            "mail from:",
            "mail from command",
        ],
    ),
    (
        Stage::Helo,
        &[
            "in reply to ehlo command",
            "in reply to helo command",
            "after ehlo",
            "after helo",
            "but my name was rejected",
            ">>> ehlo",
            ">>> helo",
        ],
    ),
    (
        Stage::Connect,
        &[
            "after initial connection",
            // Postfix: the server's greeting was a refusal.
            "refused to talk to me",
            // qmail: "Connected to 192.0.2.1 but greeting failed."
            "greeting failed",
        ],
    ),
];

/// The stage named in `lower` (lowercased text), if any: the command a transcript sent before
/// its first refusal, else the first table row with a phrase in the text.
pub fn stage(lower: &str) -> Option<Stage> {
    transcript_stage(lower).or_else(|| phrase_stage(lower))
}

/// The stage of a refusal said in `diagnostic`, with `context` (the text around it) as the
/// fallback; both as written (not lowercased). A transcript anywhere decides; then the MTAs'
/// wordings in the diagnostic, then in the context (whitespace squeezed: "in reply to RCPT TO\n
/// command" is folded); last, the protocol's own command words standing alone.
pub fn stage_in(diagnostic: &str, context: &str) -> Option<Stage> {
    stage_of(
        &diagnostic.to_lowercase(),
        &context.to_lowercase(),
        diagnostic,
        context,
    )
}

/// [`stage_in`] for texts the caller has lowercased already.
pub(crate) fn stage_of(
    lower_diagnostic: &str,
    lower_context: &str,
    diagnostic: &str,
    context: &str,
) -> Option<Stage> {
    transcript_stage(lower_context)
        .or_else(|| transcript_stage(lower_diagnostic))
        .or_else(|| phrase_stage(&text::squeeze(lower_diagnostic)))
        .or_else(|| phrase_stage(&text::squeeze(lower_context)))
        .or_else(|| command_word_stage(diagnostic))
        .or_else(|| command_word_stage(context))
}

fn phrase_stage(lower: &str) -> Option<Stage> {
    STAGE_PHRASES
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| lower.contains(p)))
        .map(|(stage, _)| *stage)
}

/// The furthest stage whose SMTP command word stands alone, upper-case as the protocol writes
/// it (`RCPT`, `[RCPT_TO]`, `DATA`, `MAIL FROM`, `EHLO`): MTAs that name no stage in a sentence
/// still name the command ("most progress was RCPT TO response").
fn command_word_stage(text: &str) -> Option<Stage> {
    const WORDS: &[(&str, Stage)] = &[
        ("DATA", Stage::Data),
        ("RCPT", Stage::Rcpt),
        ("MAIL FROM", Stage::Mail),
        ("EHLO", Stage::Helo),
        ("HELO", Stage::Helo),
    ];
    let bytes = text.as_bytes();
    // "(EHLO host)" and "(HELO host)" are a Received field's trace, not a command.
    let alone = |at: usize, len: usize| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + len).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'(')
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    };
    WORDS
        .iter()
        .find(|(word, _)| {
            text.match_indices(word)
                .any(|(at, _)| alone(at, word.len()))
        })
        .map(|(_, stage)| *stage)
}

/// Sendmail-style transcripts write each command sent (`>>> RCPT To:<a@b>`) and each reply
/// received (`<<< 550 ...`): a refusal answers the last command sent before it. Words inside a
/// reply ("503 Need RCPT") name nothing. Of several sessions (`... while talking to host:`, one
/// per MX host tried) the last one's first refusal is what the bounce reports; a refusal before
/// any command of a session is the server's greeting: the connection stage.
fn transcript_stage(lower: &str) -> Option<Stage> {
    let mut found = None;
    let mut sent = None;
    let mut in_session = false;
    let mut refused = false;
    for line in lower.lines() {
        let line = line.trim_start();
        if line.starts_with("... while talking to") {
            in_session = true;
            sent = None;
            refused = false;
        } else if let Some(command) = line.strip_prefix(">>> ") {
            sent = command_stage(command.trim_start());
        } else if let Some(reply) = line.strip_prefix("<<< ")
            && reply.starts_with(['4', '5'])
            && !refused
        {
            match sent {
                Some(stage) => found = Some(stage),
                None if in_session => found = Some(Stage::Connect),
                None => continue,
            }
            refused = true;
        }
    }
    found
}

fn command_stage(command: &str) -> Option<Stage> {
    let word: String = command
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    Some(match word.as_str() {
        "rcpt" => Stage::Rcpt,
        "data" | "bdat" => Stage::Data,
        "mail" => Stage::Mail,
        "ehlo" | "helo" | "starttls" => Stage::Helo,
        _ if command.starts_with('.') => Stage::Data,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_names_the_command_before_the_first_refusal() {
        let t = ">>> mail from:<a@b.example>\n<<< 250 ok\n>>> data\n<<< 550 5.0.0 user unknown\n\
                 <<< 503 5.0.0 need rcpt (recipient)";
        assert_eq!(stage(t), Some(Stage::Data));
        assert_eq!(
            stage(">>> rcpt to:<a@b.example>\n<<< 550 no"),
            Some(Stage::Rcpt)
        );
        // Words inside a reply are not the command.
        assert_eq!(stage("503 need rcpt (recipient)"), None);
    }

    #[test]
    fn mta_wordings_name_the_stage() {
        let cases = [
            ("said: 550 no (in reply to rcpt to command)", Stage::Rcpt),
            (
                "smtp error from remote mail server after end of data:",
                Stage::Data,
            ),
            ("did not like our mail from:", Stage::Mail),
            (
                "connected to 192.0.2.1 but my name was rejected.",
                Stage::Helo,
            ),
            (
                "smtp error from remote mail server after initial connection:",
                Stage::Connect,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(stage(text), Some(want), "{text}");
        }
        assert_eq!(
            stage_in("550 no", ">>> DATA\n<<< 550 no"),
            Some(Stage::Data)
        );
        assert_eq!(
            stage_in("x", "said: 550 no (in reply to RCPT TO\n    command)"),
            Some(Stage::Rcpt)
        );
        assert_eq!(
            stage_in("550 User Unknown\n[RCPT_TO]", ""),
            Some(Stage::Rcpt)
        );
        assert_eq!(stage_in("too much mail data", ""), None);
        assert_eq!(stage_in("x", "Received: from a (EHLO b) by c"), None);
    }
}
