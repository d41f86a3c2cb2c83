//! What an SMTP reply means for the recipient and for the run, as a data table.
//!
//! Each [`Rule`] matches the step the reply answered, the basic code (exact or by class), the
//! enhanced status code (RFC 3463, exact or by prefix) and a keyword in the text
//! (case-insensitive substring; no regexes). The first matching rule wins, so specific rules come
//! before general ones. This module must not do I/O: it only reads replies.
//!
//! The table decides *whether* a permanent reply bounces the recipient; *hard or soft* is not the
//! table's to decide. [`classify`] hands every bounce verdict to the one hard/soft policy,
//! [`model::bounce_kind`], which the DSN parser (`bounce`) uses as well, so that a 5xx at send
//! time and a DSN that arrives later never disagree about suppressing an address. That policy is
//! in `model` because this module must not depend on `bounce`.

use std::fmt;

use crate::model::{self, FeedbackKind, Permanence, Reason};

/// The protocol step a reply answered (stored in `attempts.step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// The reply after the final ".".
    Message,
}

impl Step {
    /// The ledger's name for the step.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Greeting => "greeting",
            Step::Ehlo => "ehlo",
            Step::StartTls => "starttls",
            Step::Auth => "auth",
            Step::Mail => "mail",
            Step::Rcpt => "rcpt",
            Step::Data => "data",
            Step::Message => "message",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 250 after DATA: accepted by the relay.
    Accepted,
    /// Temporary problem with this recipient: retry after the backoff.
    Deferred,
    /// The relay asks us to slow down: slow the whole run and retry; the recipient is not charged.
    Throttle,
    /// Permanent, about the address (5.1.1 and friends).
    BouncedHard,
    /// Permanent, not about the address (mailbox full, content or policy).
    BouncedSoft,
    /// Permanent, about the sender or the relay (quota, sender refused): stop the run and leave
    /// the recipient untouched.
    Pause,
    /// The relay refuses us (auth, TLS, relaying): stop the whole run, nothing charged.
    Abort,
    /// The relay refused relaying for us: an abort on the first message of a run, a pause later.
    RelayDenied,
}

/// Which steps a rule applies to.
#[derive(Debug, Clone, Copy)]
pub enum Steps {
    Any,
    One(Step),
    /// RCPT, DATA and the end-of-data reply: replies about the recipient or the message.
    Recipient,
    /// Everything before MAIL.
    Session,
}

impl Steps {
    fn matches(self, step: Step) -> bool {
        match self {
            Steps::Any => true,
            Steps::One(s) => s == step,
            Steps::Recipient => matches!(step, Step::Rcpt | Step::Data | Step::Message),
            Steps::Session => matches!(
                step,
                Step::Connect | Step::Greeting | Step::Ehlo | Step::StartTls | Step::Auth
            ),
        }
    }
}

/// One row of the table. `code` is an exact code ("550") or a class with `x` ("5xx", "45x");
/// `enhanced` is an exact code ("5.1.1") or a prefix ending in "." ("4.7."); `keywords` match
/// if any of them occurs in the lower-cased text (empty = no text condition).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub steps: Steps,
    pub code: &'static str,
    pub enhanced: Option<&'static str>,
    pub keywords: &'static [&'static str],
    pub verdict: Verdict,
}

const RATE_WORDS: &[&str] = &[
    "rate limit",
    "ratelimit",
    "rate-limit",
    "too many messages",
    "too many connections",
    "too many recipients",
    "throttl",
    "slow down",
    "sending rate",
    "message rate",
    "try again later, closing",
];

const USER_UNKNOWN_WORDS: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "no such recipient",
    "unknown recipient",
    "recipient unknown",
    "does not exist",
    "mailbox not found",
    "no mailbox",
    "invalid recipient",
    "recipient not found",
    "address rejected: user",
];

const SENDER_QUOTA_WORDS: &[&str] = &[
    "sending limit",
    "sending quota",
    "daily limit",
    "daily quota",
    "daily user sending",
    "message limit exceeded",
    "unusual rate",
    "account has been suspended",
    "account suspended",
];

const RELAY_WORDS: &[&str] = &[
    "relay access denied",
    "relaying denied",
    "not permitted to relay",
    "relay not permitted",
    "unable to relay",
];

use Step as S;
use Verdict as V;

/// The classification table, first match wins.
pub const RULES: &[Rule] = &[
    // Success.
    Rule {
        steps: Steps::One(S::Message),
        code: "2xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Accepted,
    },
    // TLS: a refused or failed STARTTLS never falls back to plaintext.
    Rule {
        steps: Steps::One(S::StartTls),
        code: "xxx",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    // Authentication.
    Rule {
        steps: Steps::Any,
        code: "535",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::Any,
        code: "534",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::Any,
        code: "538",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::Any,
        code: "530",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::One(S::Auth),
        code: "5xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::One(S::Auth),
        code: "4xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Throttle,
    },
    // Slow down: never charged to the recipient.
    Rule {
        steps: Steps::Any,
        code: "421",
        enhanced: None,
        keywords: &[],
        verdict: V::Throttle,
    },
    Rule {
        steps: Steps::Any,
        code: "432",
        enhanced: Some("4.3.2"),
        keywords: &[],
        verdict: V::Throttle,
    },
    Rule {
        steps: Steps::Any,
        code: "45x",
        enhanced: Some("4.7."),
        keywords: &[],
        verdict: V::Throttle,
    },
    Rule {
        steps: Steps::Any,
        code: "45x",
        enhanced: None,
        keywords: RATE_WORDS,
        verdict: V::Throttle,
    },
    Rule {
        steps: Steps::Any,
        code: "4xx",
        enhanced: Some("4.4.5"),
        keywords: &[],
        verdict: V::Throttle,
    },
    // Relay refuses to relay for us.
    Rule {
        steps: Steps::Any,
        code: "5xx",
        enhanced: None,
        keywords: RELAY_WORDS,
        verdict: V::RelayDenied,
    },
    // Sender, relay or account problems: pause the run.
    Rule {
        steps: Steps::Any,
        code: "5xx",
        enhanced: Some("5.4.5"),
        keywords: &[],
        verdict: V::Pause,
    },
    Rule {
        steps: Steps::Any,
        code: "5xx",
        enhanced: Some("5.7.28"),
        keywords: &[],
        verdict: V::Pause,
    },
    Rule {
        steps: Steps::Any,
        code: "5xx",
        enhanced: None,
        keywords: SENDER_QUOTA_WORDS,
        verdict: V::Pause,
    },
    Rule {
        steps: Steps::One(S::Mail),
        code: "5xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Pause,
    },
    Rule {
        steps: Steps::Session,
        code: "5xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Abort,
    },
    Rule {
        steps: Steps::Session,
        code: "4xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Throttle,
    },
    // Permanent replies about the recipient or message bounce it; `classify` asks the hard/soft
    // policy which kind of bounce it is.
    Rule {
        steps: Steps::Recipient,
        code: "5xx",
        enhanced: None,
        keywords: &[],
        verdict: V::BouncedSoft,
    },
    // Any other temporary reply: the recipient waits for the backoff.
    Rule {
        steps: Steps::Any,
        code: "4xx",
        enhanced: None,
        keywords: &[],
        verdict: V::Deferred,
    },
    // Anything else (a 2xx/3xx where a rejection was expected, or a 5xx at an odd step).
    Rule {
        steps: Steps::Any,
        code: "5xx",
        enhanced: None,
        keywords: &[],
        verdict: V::BouncedSoft,
    },
];

/// The enhanced status code at the start of `text`, if its class matches `code`'s class
/// (RFC 3463: "class.subject.detail", subject and detail 1-3 digits).
pub fn enhanced_code(code: u16, text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    let mut parts = word.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if class.len() != 1 || !digits(subject) || !digits(detail) {
        return None;
    }
    let expected = char::from(b'0' + u8::try_from(code / 100).ok()?);
    if !matches!(class, "2" | "4" | "5") || !class.starts_with(expected) {
        return None;
    }
    Some(word.to_owned())
}

fn code_matches(pattern: &str, code: u16) -> bool {
    let digits = code.to_string();
    pattern.len() == 3
        && digits.len() == 3
        && pattern
            .bytes()
            .zip(digits.bytes())
            .all(|(p, d)| p == b'x' || p == d)
}

fn enhanced_matches(pattern: Option<&str>, enhanced: Option<&str>) -> bool {
    match (pattern, enhanced) {
        (None, _) => true,
        // `Some("")` = the reply must have no enhanced code.
        (Some(""), e) => e.is_none(),
        (Some(_), None) => false,
        (Some(p), Some(e)) if p.ends_with('.') => e.starts_with(p),
        (Some(p), Some(e)) => p == e,
    }
}

/// Classifies one reply with [`RULES`]; a bounce is hard or soft by [`model::bounce_kind`].
pub fn classify(step: Step, code: u16, enhanced: Option<&str>, text: &str) -> Verdict {
    match classify_with(RULES, step, code, enhanced, text) {
        Verdict::BouncedHard | Verdict::BouncedSoft => bounce_verdict(code, enhanced, text),
        verdict => verdict,
    }
}

/// A permanent refusal of the recipient, hard or soft by the policy. The reply names an address
/// cause through its enhanced code ([`model::addressing_reason`]); a reply without one (RFC 5321
/// alone) names it only in words.
fn bounce_verdict(code: u16, enhanced: Option<&str>, text: &str) -> Verdict {
    let reason = match enhanced {
        Some(e) => model::addressing_reason(e),
        None => {
            let lower = text.to_ascii_lowercase();
            USER_UNKNOWN_WORDS
                .iter()
                .any(|w| lower.contains(w))
                .then_some(Reason::UserUnknown)
        }
    };
    let permanence = if code >= 500 {
        Permanence::Permanent
    } else {
        Permanence::Temporary
    };
    match reason.map(|r| model::bounce_kind(r, permanence)) {
        Some(FeedbackKind::Hard) => Verdict::BouncedHard,
        _ => Verdict::BouncedSoft,
    }
}

/// Classifies with a given table (the default is [`RULES`]).
pub fn classify_with(
    rules: &[Rule],
    step: Step,
    code: u16,
    enhanced: Option<&str>,
    text: &str,
) -> Verdict {
    let lower = text.to_ascii_lowercase();
    rules
        .iter()
        .find(|rule| {
            rule.steps.matches(step)
                && code_matches(rule.code, code)
                && enhanced_matches(rule.enhanced, enhanced)
                && (rule.keywords.is_empty() || rule.keywords.iter().any(|k| lower.contains(k)))
        })
        .map_or(
            if code < 400 {
                Verdict::Deferred
            } else {
                Verdict::BouncedSoft
            },
            |rule| rule.verdict,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(step: Step, code: u16, text: &str) -> Verdict {
        let enhanced = enhanced_code(code, text);
        classify(step, code, enhanced.as_deref(), text)
    }

    #[test]
    fn enhanced_code_is_parsed_only_when_its_class_matches() {
        assert_eq!(
            enhanced_code(550, "5.1.1 <a@b>: User unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            enhanced_code(250, "2.0.0 Ok: queued as 54509").as_deref(),
            Some("2.0.0")
        );
        assert_eq!(
            enhanced_code(550, "5.1.10 null MX").as_deref(),
            Some("5.1.10")
        );
        assert_eq!(enhanced_code(451, "5.1.1 mismatched class"), None);
        assert_eq!(enhanced_code(550, "User unknown"), None);
        assert_eq!(enhanced_code(550, "5.1 short"), None);
        assert_eq!(enhanced_code(550, "5.1.1.1 long"), None);
        assert_eq!(enhanced_code(550, "5.1234.1 wide"), None);
        assert_eq!(enhanced_code(550, ""), None);
    }

    #[test]
    fn accepted_only_after_the_final_dot() {
        assert_eq!(
            c(S::Message, 250, "2.0.0 Ok: queued as 54509DE2D1"),
            V::Accepted
        );
        assert_eq!(c(S::Message, 251, "ok"), V::Accepted);
    }

    #[test]
    fn addressing_failures_are_hard_bounces() {
        for text in [
            "5.1.1 <nobody@inbox.test>: Recipient address rejected: User unknown in virtual mailbox table",
            "5.1.2 bad destination system",
            "5.1.3 bad destination mailbox address syntax",
            "5.1.10 recipient address has null MX",
        ] {
            assert_eq!(c(S::Rcpt, 550, text), V::BouncedHard, "{text}");
            assert_eq!(c(S::Message, 550, text), V::BouncedHard, "{text}");
        }
        assert_eq!(c(S::Rcpt, 550, "User unknown"), V::BouncedHard);
        assert_eq!(
            c(
                S::Rcpt,
                550,
                "Requested action not taken: mailbox unavailable"
            ),
            V::BouncedSoft
        );
    }

    #[test]
    fn other_recipient_failures_are_soft_bounces() {
        assert_eq!(c(S::Rcpt, 552, "5.2.2 mailbox full"), V::BouncedSoft);
        assert_eq!(
            c(S::Message, 554, "5.7.1 message content rejected"),
            V::BouncedSoft
        );
        // An enhanced 5.1.1 cannot be overridden by a "user unknown" text, and vice versa a
        // 5.7.1 with such words stays soft: the enhanced code is the better signal.
        assert_eq!(
            c(S::Rcpt, 550, "5.7.1 user unknown to policy"),
            V::BouncedSoft
        );
    }

    #[test]
    fn temporary_failures_are_deferred() {
        for (step, code, text, want) in [
            (
                S::Rcpt,
                451,
                "4.3.0 <x@defer.test>: Recipient address rejected: try again",
                V::Deferred,
            ),
            (S::Rcpt, 450, "4.2.1 mailbox busy", V::Deferred),
            (S::Message, 451, "4.3.0 local error", V::Deferred),
            (S::Mail, 451, "4.3.0 try later", V::Deferred),
        ] {
            assert_eq!(c(step, code, text), want, "{step} {code} {text}");
        }
    }

    #[test]
    fn slow_down_replies_throttle_the_run() {
        for (step, code, text, want) in [
            (
                S::Rcpt,
                421,
                "4.7.0 Too many connections, closing",
                V::Throttle,
            ),
            (S::Greeting, 421, "service not available", V::Throttle),
            (S::Rcpt, 450, "4.7.1 rate exceeded", V::Throttle),
            (
                S::Rcpt,
                451,
                "4.7.650 The mail server has been temporarily rate limited",
                V::Throttle,
            ),
            (
                S::Rcpt,
                452,
                "Too many recipients received this hour",
                V::Throttle,
            ),
            (
                S::Mail,
                454,
                "Throttling failure: Maximum sending rate exceeded.",
                V::Throttle,
            ),
            (
                S::Mail,
                432,
                "4.3.2 System not accepting network messages",
                V::Throttle,
            ),
        ] {
            assert_eq!(c(step, code, text), want, "{step} {code} {text}");
        }
    }

    #[test]
    fn sender_and_quota_problems_pause_the_run() {
        for (step, code, text, want) in [
            (
                S::Message,
                550,
                "5.4.5 Daily user sending limit exceeded",
                V::Pause,
            ),
            (
                S::Rcpt,
                550,
                "5.7.28 unusual rate of unsolicited mail",
                V::Pause,
            ),
            (
                S::Mail,
                553,
                "5.7.1 Sender address rejected: not owned by user",
                V::Pause,
            ),
            (S::Rcpt, 554, "Your daily quota has been reached", V::Pause),
        ] {
            assert_eq!(c(step, code, text), want, "{step} {code} {text}");
        }
    }

    #[test]
    fn auth_tls_and_relay_refusals_abort() {
        for (step, code, text, want) in [
            (S::Auth, 535, "5.7.8 Error: authentication failed", V::Abort),
            (
                S::Mail,
                530,
                "5.7.0 Must issue a STARTTLS command first",
                V::Abort,
            ),
            (
                S::Auth,
                534,
                "5.7.9 Please log in with your web browser",
                V::Abort,
            ),
            (S::Auth, 538, "5.7.11 Encryption required", V::Abort),
            (
                S::StartTls,
                454,
                "4.7.0 TLS not available due to local problem",
                V::Abort,
            ),
            (S::Greeting, 554, "5.3.2 no service", V::Abort),
            (
                S::Rcpt,
                554,
                "5.7.1 <x@y>: Relay access denied",
                V::RelayDenied,
            ),
        ] {
            assert_eq!(c(step, code, text), want, "{step} {code} {text}");
        }
    }

    #[test]
    fn bounces_are_hard_or_soft_by_the_shared_policy() {
        // (step, code, text, verdict): the reply's cause through the policy of `model`.
        let table = [
            (S::Rcpt, 550, "5.1.1 no such user", V::BouncedHard),
            (S::Rcpt, 550, "5.1.2 no such domain", V::BouncedHard),
            (S::Rcpt, 553, "5.1.3 bad address syntax", V::BouncedHard),
            (S::Rcpt, 550, "5.1.6 mailbox has moved", V::BouncedHard),
            (S::Message, 550, "5.1.10 null MX", V::BouncedHard),
            (S::Rcpt, 550, "no such user here", V::BouncedHard),
            (S::Rcpt, 551, "user unknown", V::BouncedHard),
            // A full mailbox is soft even as a 5xx; so are blocks, content and other causes.
            (S::Rcpt, 552, "5.2.2 mailbox full", V::BouncedSoft),
            (S::Message, 550, "5.7.1 message refused", V::BouncedSoft),
            (S::Rcpt, 550, "5.1.0 address rejected", V::BouncedSoft),
            (S::Rcpt, 554, "transaction failed", V::BouncedSoft),
            // An enhanced code outranks the words.
            (S::Rcpt, 550, "5.7.1 user unknown to policy", V::BouncedSoft),
        ];
        for (step, code, text, verdict) in table {
            assert_eq!(c(step, code, text), verdict, "{step} {code} {text}");
        }
    }

    #[test]
    fn code_patterns_match_by_position() {
        assert!(code_matches("5xx", 550));
        assert!(code_matches("45x", 452));
        assert!(!code_matches("45x", 421));
        assert!(!code_matches("550", 551));
        assert!(code_matches("xxx", 220));
    }
}
