//! The decision: which [`Reason`] one report's [`Evidence`] points to, weighing the evidence in a
//! fixed order (docs/bounces.md has the order and the table of what each reason means). Reads the
//! tables in `keywords` and the provider rules in `rhost`; parses nothing, does no I/O.

use std::cell::OnceCell;

use super::Action;
use super::keywords::{self, gmail_state, match_keywords, mta_label};
use super::reason::{Evidence, Reason, Stage, stage_of};
use super::rhost;

/// Decides the reason for one recipient.
pub fn classify(e: &Evidence<'_>) -> Reason {
    let texts = Lowered::new(e);
    if let Some(reason) = labelled(e, &texts) {
        return reason;
    }
    let reason = from_codes_and_words(e, &texts);
    // A code that names its cause outranks the stage, as it outranks the words.
    if e.status.and_then(specific_status).is_some() {
        return reason;
    }
    at_stage(&texts, reason)
}

/// The evidence's texts lowercased once, and the SMTP stage read once, for every step that
/// needs them (the keyword tables are lowercase).
struct Lowered<'e> {
    diagnostic: String,
    context: String,
    original: &'e Evidence<'e>,
    stage: OnceCell<Option<Stage>>,
}

impl<'e> Lowered<'e> {
    fn new(e: &'e Evidence<'e>) -> Self {
        Lowered {
            diagnostic: e.diagnostic.to_lowercase(),
            context: e.context.to_lowercase(),
            original: e,
            stage: OnceCell::new(),
        }
    }

    fn stage(&self) -> Option<Stage> {
        *self.stage.get_or_init(|| {
            stage_of(
                &self.diagnostic,
                &self.context,
                self.original.diagnostic,
                self.original.context,
            )
        })
    }
}

/// Wordings in which the reporting system states that the recipient itself is unknown (a
/// gateway's "no valid recipients", a scanner's "check if address is correct"): the address is
/// refused, not the content, whenever the text names no later stage.
const RECIPIENT_UNKNOWN: &[&str] = &[
    "unknown recipient",
    "recipient unknown",
    "recipient not found",
    "no such recipient",
    "recipient does not exist",
    "invalid recipient",
    "no valid recipients",
    "recipient name is not recognized",
    "address couldn't be found",
    "address not found",
    "check if address is correct",
];

/// sisimai's convention, kept so numbers compare: "no such user" said at RCPT, or with an
/// addressing code (X.1.y, except the sender's X.1.7 and X.1.8), is `userunknown`, a hard
/// bounce; said after DATA or MAIL it is the content-stage refusal sisimai calls `filtered`, a
/// soft one. At an unknown stage, only wordings that name the recipient itself are unknown.
fn user_or_filtered(e: &Evidence<'_>, texts: &Lowered<'_>, lower: &str) -> Reason {
    let addressing_code = e
        .status
        .is_some_and(|s| s.get(1..3) == Some(".1") && !matches!(s.get(3..), Some(".7" | ".8")));
    let unknown = match texts.stage() {
        Some(Stage::Rcpt) => true,
        Some(_) => false,
        None => RECIPIENT_UNKNOWN.iter().any(|p| lower.contains(p)),
    };
    if addressing_code || unknown {
        Reason::UserUnknown
    } else {
        Reason::Filtered
    }
}

/// "example.org does not exist": the thing said not to exist is a domain name (dotted, no `@`),
/// so the host is unknown, not the user.
fn names_missing_domain(lower: &str) -> bool {
    lower.match_indices(" does not exist").any(|(at, _)| {
        let word = lower[..at]
            .rsplit(|c: char| c.is_whitespace() || matches!(c, '<' | '(' | '"' | '\''))
            .next()
            .unwrap_or("")
            .trim_end_matches(['>', ')', '"', '\'', ':', '.']);
        word.contains('.')
            && !word.contains('@')
            && word.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && word
                .rsplit('.')
                .next()
                .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
    })
}

/// Status codes that name one cause unambiguously: they win over the text.
fn specific_status(status: &str) -> Option<Reason> {
    let (_, detail) = status.split_once('.')?;
    Some(match detail {
        "1.1" => Reason::UserUnknown,
        "1.2" => Reason::HostUnknown,
        "1.6" => Reason::HasMoved,
        "1.8" | "1.7" => Reason::Rejected,
        "1.10" => Reason::NotAccept,
        "2.2" => Reason::MailboxFull,
        "2.3" => Reason::ExceedLimit,
        "3.4" => Reason::MesgTooBig,
        "7.25" => Reason::RequirePtr,
        "7.26" | "7.23" | "7.24" | "7.20" | "7.21" | "7.22" | "7.509" => Reason::AuthFailure,
        "7.27" => Reason::NotAccept,
        "7.13" => Reason::Suspend,
        "7.606" | "7.511" => Reason::Blocked,
        _ => return None,
    })
}

/// Causes whose explicit wording outranks a `X.1.1` code (sisimai's order: the causes it tests
/// before an unknown user, and the ones it checks an `X.1.1` against): MTAs write a canned
/// `5.1.1` for many refusals at RCPT.
const ADDRESSING_OVERRIDES: &[Reason] = &[
    // A local delivery program that failed ("Command output: procmail: ..."): whatever user
    // its output names, the program is what failed.
    Reason::MailerError,
    Reason::MailboxFull,
    Reason::MesgTooBig,
    Reason::ExceedLimit,
    Reason::Suspend,
    Reason::HasMoved,
    Reason::NoRelaying,
    Reason::AuthFailure,
    Reason::Blocked,
    Reason::Rejected,
    Reason::NotAccept,
];

/// The status code when it says more than its class: `X.0.0` says nothing, and in a delay
/// notice an `X.Y.0` ("other or undefined" in its subject, RFC 3463) names no cause either: the
/// delay is what the notice reports.
fn cause_code<'a>(e: &Evidence<'a>) -> Option<&'a str> {
    let delayed = e.action == Some(Action::Delayed);
    e.status
        .filter(|s| !(s.ends_with(".0.0") || delayed && s.ends_with(".0")))
}

/// What the remaining codes suggest when no keyword matched (RFC 3463 §3 subjects, read the way
/// sisimai reads them). The class matters for a few: a temporary routing failure is a network
/// problem, a permanent one an unknown host.
fn generic_status(status: &str) -> Option<Reason> {
    let mut it = status.split('.');
    let class = it.next()?;
    let subject = it.next()?;
    let detail = it.next()?;
    let temporary = class == "4";
    Some(match (subject, detail) {
        ("1", "4") => Reason::Filtered,
        ("1", "9") => Reason::SystemError,
        ("1", _) => Reason::UserUnknown,
        ("2", "1") if temporary => Reason::Blocked,
        ("2", "0") | ("2", "1") | ("2", "4") => Reason::Filtered,
        ("2", _) => Reason::MailboxFull,
        ("3", "1") => Reason::SystemFull,
        ("3", "2") => Reason::NotAccept,
        ("3", _) => Reason::SystemError,
        ("4", "1") if temporary => Reason::Expired,
        ("4", "3") => Reason::SystemError,
        ("4", "4") if temporary => Reason::NetworkError,
        ("4", "4") => Reason::HostUnknown,
        ("4", "5") => Reason::SystemFull,
        ("4", "7") => Reason::Expired,
        ("4", _) => Reason::NetworkError,
        ("5", "3") if temporary => Reason::SystemError,
        ("5", "3") => Reason::TooManyConn,
        ("5", "4") | ("5", "5") => Reason::SystemError,
        ("5", _) => Reason::SyntaxError,
        ("6", _) => Reason::ContentError,
        ("7", "1") | ("7", "2") if temporary => Reason::Blocked,
        ("7", "16") => Reason::MesgTooBig,
        ("7", "17") | ("7", "18") => Reason::HasMoved,
        ("7", "28") => Reason::SpamDetected,
        ("7", "29") => Reason::AuthFailure,
        ("7", _) => Reason::SecurityError,
        _ => return None,
    })
}

/// Causes that a refusal before any command (the greeting) can name about the client or the
/// server itself; any other cause at that stage is the server refusing the client: `blocked`.
const CONNECT_CAUSES: &[Reason] = &[
    Reason::RequirePtr,
    Reason::TooManyConn,
    Reason::Speeding,
    Reason::BadReputation,
    Reason::NetworkError,
    Reason::Expired,
    Reason::NotAccept,
    Reason::SystemFull,
    Reason::SecurityError,
];

/// Causes about the recipient or the message, which a refusal at HELO or MAIL FROM cannot be:
/// nothing about either has been sent yet.
const RECIPIENT_CAUSES: &[Reason] = &[
    Reason::UserUnknown,
    Reason::HostUnknown,
    Reason::Filtered,
    Reason::HasMoved,
    Reason::MailboxFull,
    Reason::Suspend,
];

/// What the SMTP stage says about a cause found in codes and words (sisimai's semantics): a
/// refusal of the greeting or of HELO refuses the client (`blocked`); a refusal of MAIL FROM
/// that names no cause of its own, or only "access denied", refuses the sender (`rejected`).
fn at_stage(texts: &Lowered<'_>, reason: Reason) -> Reason {
    let Some(stage) = texts.stage() else {
        return reason;
    };
    match stage {
        Stage::Connect if !CONNECT_CAUSES.contains(&reason) => Reason::Blocked,
        Stage::Helo if RECIPIENT_CAUSES.contains(&reason) || reason == Reason::Undefined => {
            Reason::Blocked
        }
        Stage::Mail
            if RECIPIENT_CAUSES.contains(&reason)
                || reason == Reason::Undefined
                || (matches!(reason, Reason::Blocked | Reason::SecurityError)
                    && texts.diagnostic.contains("access denied")) =>
        {
            Reason::Rejected
        }
        _ => reason,
    }
}

/// The labels one MTA or one provider prints for one cause, which outrank the stage: Exchange's
/// `RESOLVER.ADR.*`, a provider's documented texts, Gmail's `(state N)`.
fn labelled(e: &Evidence<'_>, texts: &Lowered<'_>) -> Option<Reason> {
    if e.status.is_some_and(|s| s.starts_with('2'))
        || matches!(
            e.action,
            Some(Action::Delivered | Action::Relayed | Action::Expanded)
        )
    {
        return Some(Reason::Delivered);
    }
    let (diagnostic, context) = (&texts.diagnostic, &texts.context);
    if let Some(reason) = mta_label(diagnostic).or_else(|| mta_label(context)) {
        return Some(reason);
    }
    // A provider that documents its refusal texts knows best what they mean.
    if let Some(provider) = rhost::provider(e.recipient, e.remote_host, e.reporting_host) {
        // A DSN's Diagnostic-Code is the server's whole reply; a text bounce's diagnostic is
        // one line of it, so the surrounding text may hold the rest.
        let found = rhost::classify(provider, e.status, e.reply_code, e.diagnostic, e.context)
            .or_else(|| {
                e.diagnostic_type.is_none().then(|| {
                    rhost::classify(provider, e.status, e.reply_code, e.context, e.context)
                })?
            });
        if found.is_some() {
            return found;
        }
    }
    if let Some(state) = gmail_state(diagnostic).or_else(|| gmail_state(context)) {
        // A code that names a cause still wins over the state ("5.2.2 ... (state 14)").
        let named = e
            .status
            .filter(|s| !s.contains(".0"))
            .and_then(specific_status);
        return Some(named.unwrap_or(state));
    }
    None
}

/// The cause the status code and the words name, in the documented order.
fn from_codes_and_words(e: &Evidence<'_>, texts: &Lowered<'_>) -> Reason {
    let (diagnostic, context) = (&texts.diagnostic, &texts.context);
    // RFC 3464's `X-Unix` diagnostic is a local delivery program's exit: when its output says
    // the program failed, that is the cause, whatever user or code it mentions.
    if e.diagnostic_type == Some("x-unix") && keywords::names(diagnostic, Reason::MailerError) {
        return Reason::MailerError;
    }
    if let Some(reason) = e.status.and_then(specific_status) {
        // A canned addressing code (MTAs often write 5.1.1 for any refusal at RCPT) yields to
        // words that name another cause: a full mailbox, a block, a moved user, the sender.
        if reason == Reason::UserUnknown {
            let words = match_keywords(diagnostic);
            if let Some(other) = words.filter(|r| ADDRESSING_OVERRIDES.contains(r)) {
                return other;
            }
        }
        return reason;
    }
    let temporary = e.status.map_or(e.reply_code.is_some_and(|c| c < 500), |s| {
        s.starts_with('4')
    });
    let mut found = match_keywords(diagnostic).map(|r| (r, diagnostic));
    // RFC 5321 §4.2.3's bare text for 554, "Transaction failed", with no cause after it: the
    // remote system failed the transaction.
    if found.is_none()
        && diagnostic
            .trim_end_matches(|c: char| c.is_whitespace() || c == '.')
            .ends_with("transaction failed")
    {
        found = Some((Reason::SystemError, diagnostic));
    }
    if found.is_none() {
        // A local delivery program's exit status says more than the prose around it: the
        // program failed, unless the code puts the failure in the mail system itself (X.3.y).
        if matches!(e.diagnostic_type, Some("x-unix")) {
            return if e.status.and_then(|s| s.get(1..3)) == Some(".3") {
                Reason::SystemError
            } else {
                Reason::MailerError
            };
        }
        // So does a code that names a cause; surrounding prose is often boilerplate
        // ("I'm not going to try again; this message has been in the queue too long").
        if let Some(reason) = cause_code(e).and_then(generic_status) {
            return reason;
        }
        found = match_keywords(context).map(|r| (r, context));
    }
    match found {
        Some((Reason::UserUnknown, text)) if names_missing_domain(text) => {
            return if temporary {
                Reason::NetworkError
            } else {
                Reason::HostUnknown
            };
        }
        Some((Reason::UserUnknown, text)) => return user_or_filtered(e, texts, text),
        // A host that cannot be found *yet* (a 4xx DNS failure) is a network problem.
        Some((Reason::HostUnknown, _)) if temporary => return Reason::NetworkError,
        Some((reason, _)) => return reason,
        None => {}
    }
    if let Some(reason) = cause_code(e).and_then(generic_status) {
        return reason;
    }
    if e.action == Some(Action::Delayed) || e.status.is_some_and(|s| s.starts_with('4')) {
        return Reason::Expired;
    }
    match e.reply_code {
        // Replies about the command itself (RFC 5321 §4.2.2: syntax, parameters, sequence).
        Some(401..=407 | 500..=507) => Reason::SyntaxError,
        Some(400..=499) => Reason::Expired,
        Some(556) => Reason::NotAccept,
        Some(552) => Reason::MailboxFull,
        Some(554 | 571) => Reason::Blocked,
        Some(521) => Reason::NotAccept,
        Some(525) => Reason::Suspend,
        Some(_) | None => Reason::Undefined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: Option<&str>, diagnostic: &str) -> Reason {
        classify(&Evidence {
            status,
            diagnostic,
            ..Evidence::default()
        })
    }

    #[test]
    fn specific_status_codes_decide() {
        assert_eq!(reason(Some("5.1.1"), "whatever"), Reason::UserUnknown);
        assert_eq!(reason(Some("5.1.2"), ""), Reason::HostUnknown);
        assert_eq!(reason(Some("4.2.2"), ""), Reason::MailboxFull);
        assert_eq!(reason(Some("5.1.10"), ""), Reason::NotAccept);
        assert_eq!(
            reason(Some("5.7.26"), "unauthenticated"),
            Reason::AuthFailure
        );
        assert_eq!(reason(Some("2.0.0"), ""), Reason::Delivered);
    }

    #[test]
    fn keyword_tables_decide_generic_codes() {
        assert_eq!(
            reason(
                Some("5.0.0"),
                ">>> RCPT To:<a@b.example> <<< 550 Unknown user"
            ),
            Reason::UserUnknown
        );
        // sisimai's convention: the same words after DATA (or at an unknown stage) are a
        // content-stage refusal.
        assert_eq!(reason(Some("5.0.0"), "550 Unknown user"), Reason::Filtered);
        assert_eq!(
            reason(Some("5.7.1"), "Relay access denied"),
            Reason::NoRelaying
        );
        assert_eq!(
            reason(
                Some("5.7.1"),
                "Client host rejected: listed in zen.spamhaus.org"
            ),
            Reason::Blocked
        );
        assert_eq!(
            reason(Some("5.7.1"), "Message content rejected, UBE"),
            Reason::SpamDetected
        );
        assert_eq!(reason(None, "Mailbox full"), Reason::MailboxFull);
        assert_eq!(
            reason(None, "message size exceeds fixed limit"),
            Reason::MesgTooBig
        );
        assert_eq!(
            reason(None, "Sender address rejected: Domain not found"),
            Reason::Rejected
        );
        assert_eq!(
            reason(None, "Host or domain name not found"),
            Reason::HostUnknown
        );
        assert_eq!(reason(None, "no route to host"), Reason::NetworkError);
        // A connection that kept timing out until the queue gave up: the delay expired.
        assert_eq!(reason(None, "connection timed out"), Reason::Expired);
        assert_eq!(reason(None, "account has been disabled"), Reason::Suspend);
        assert_eq!(
            reason(None, "virus found in message"),
            Reason::VirusDetected
        );
    }

    #[test]
    fn fallbacks_use_code_classes_action_and_reply_code() {
        assert_eq!(
            reason(Some("5.6.0"), "nothing useful"),
            Reason::ContentError
        );
        assert_eq!(
            reason(Some("4.4.2"), "nothing useful"),
            Reason::NetworkError
        );
        // No answer from the host, retried until the queue gave up.
        assert_eq!(reason(Some("4.4.1"), "nothing useful"), Reason::Expired);
        // Routing: temporary is the network, permanent is the host.
        assert_eq!(
            reason(Some("4.4.4"), "nothing useful"),
            Reason::NetworkError
        );
        assert_eq!(reason(Some("5.4.4"), "nothing useful"), Reason::HostUnknown);
        assert_eq!(reason(Some("5.5.3"), "nothing useful"), Reason::TooManyConn);
        let delayed = classify(&Evidence {
            action: Some(Action::Delayed),
            diagnostic: "nothing useful",
            ..Evidence::default()
        });
        assert_eq!(delayed, Reason::Expired);
        let e = Evidence {
            reply_code: Some(556),
            diagnostic: "nothing useful",
            ..Evidence::default()
        };
        assert_eq!(classify(&e), Reason::NotAccept);
        assert_eq!(reason(None, "nothing useful"), Reason::Undefined);
    }

    #[test]
    fn gmail_states_name_the_stage_unless_a_code_names_the_cause() {
        assert_eq!(
            reason(
                Some("5.7.1"),
                "554 554 5.7.1 Service unavailable; client host blocked (state 13)."
            ),
            Reason::Blocked
        );
        assert_eq!(
            reason(
                Some("5.2.2"),
                "550 550 5.2.2 <a@b.example>... Mailbox Full (state 14)."
            ),
            Reason::MailboxFull
        );
        assert_eq!(
            reason(None, "550 550 Unknown user a@b.example (state 18)."),
            Reason::Filtered
        );
    }

    #[test]
    fn a_missing_domain_is_an_unknown_host() {
        assert_eq!(
            reason(None, "553 mx.example.com does not exist"),
            Reason::HostUnknown
        );
        assert_eq!(reason(None, "Domain does not exist"), Reason::HostUnknown);
        assert_ne!(
            reason(None, "553 user kijitora does not exist"),
            Reason::HostUnknown
        );
        assert!(!names_missing_domain(
            "mailbox a@example.com does not exist"
        ));
        assert!(!names_missing_domain("version 1.2 does not exist"));
    }

    #[test]
    fn mta_labels_outrank_the_status_code() {
        assert_eq!(
            reason(
                Some("5.1.0"),
                "550 5.1.0 RESOLVER.ADR.InvalidInSmtp; invalid"
            ),
            Reason::SystemError
        );
        assert_eq!(
            reason(None, "MSEXCH:IMS:EXAMPLE 0 (000C05A6) Unknown Recipient"),
            Reason::UserUnknown
        );
    }

    #[test]
    fn provider_rules_apply_only_to_their_hosts() {
        let yahoo = |remote_host| {
            classify(&Evidence {
                status: Some("4.7.0"),
                diagnostic: "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred \
                             due to unexpected volume or user complaints",
                recipient: Some("a@example.org"),
                remote_host,
                ..Evidence::default()
            })
        };
        assert_eq!(yahoo(Some("mta7.am0.yahoodns.net")), Reason::Rejected);
        assert_eq!(yahoo(Some("mx.example.org")), Reason::BadReputation);
    }
}
