//! Bounce, complaint and auto-reply parsing, and the import of what they say into the ledger.
//!
//! [`parse`] turns one raw message into zero or more [`Report`]s, one per recipient it is about.
//! It does no I/O and never panics on input: a message it does not understand yields no reports.
//! What it reads, in order of trust:
//!
//! 1. an RFC 5965 ARF report (`message/feedback-report`): one `complaint` per complaining address;
//! 2. an RFC 3464 DSN (`message/delivery-status`): one report per recipient group;
//! 3. an RFC 3834 auto-reply (vacation notice): one `auto_reply`, never a bounce;
//! 4. the human-readable text non-standard MTAs send (qmail, Exim, old Sendmail, Exchange,
//!    Japanese carriers, ...): recipients found next to the error text, each with its segment.
//!
//! The reason vocabulary follows sisimai's (`reason`, defined in `model`); `classify` weighs the
//! evidence (provider rules, specific status codes, the phrase tables in `keywords`, the SMTP
//! stage), and the one hard/soft policy, `model::bounce_kind`, turns the reason into a kind.
//! Every message costs work linear in its size and yields at most [`MAX_REPORTS`] reports.
//!
//! The ledger side (matching reports to sends, events, suppressions) lives in `import` and
//! `suppress`; reading mailboxes (Maildir, mbox, IMAP) in `mailbox` and `imap`. This module must
//! not know about SMTP sending or campaigns' templates.

mod classify;
pub mod envelope;
pub mod imap;
pub mod import;
mod keywords;
pub mod mailbox;
pub(crate) mod mime;
pub mod reason;
mod rhost;
mod ses;
pub mod suppress;
mod text;

use std::collections::{HashMap, HashSet};

use crate::model::{self, FeedbackKind, Permanence};

pub use reason::Reason;

/// The most reports one message yields. A DSN lists one group per recipient of one SMTP
/// transaction, and servers cap those (RFC 5321 §4.5.3.1.8 asks for at least 100; Postfix
/// accepts 1,000 by default): a message naming more is hostile or broken, and the rest of it is
/// ignored. This bounds the work and the output of one message.
pub const MAX_REPORTS: usize = 1000;

/// The longest `diagnostic` a report carries, in bytes (cut on a character boundary): a server's
/// reply is a few lines; more is a runaway field.
pub const MAX_DIAGNOSTIC: usize = 2048;

/// How much of the text around a recipient the classifier reads, in bytes: the explanation next
/// to the address, not a whole mailbox's worth of quoted text.
const MAX_CONTEXT: usize = 32 * 1024;

/// What the reporting MTA did with the message for this recipient (RFC 3464 §2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    /// The RFC 3464 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// Reads an `Action:` value, including the non-standard spellings real MTAs write
    /// (`failure`, `deliverable`, `expired`...). `None` for anything else.
    pub fn parse(value: &str) -> Option<Action> {
        let v = value.trim().to_ascii_lowercase();
        let v = v.split([' ', '(', ';']).next().unwrap_or("");
        match v {
            "failed" | "failure" | "fail" => Some(Action::Failed),
            // An expired message is one the MTA was still retrying: sisimai and most senders
            // treat it as a delay that ran out, not a refusal.
            "delayed" | "expired" | "delay" => Some(Action::Delayed),
            "delivered" | "deliverable" | "success" => Some(Action::Delivered),
            "relayed" => Some(Action::Relayed),
            "expanded" => Some(Action::Expanded),
            _ => None,
        }
    }
}

/// Headers of the message that bounced, as returned inside the bounce; used for matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// `X-Mailroom-Token`: the recipient's VERP token.
    pub token: Option<String>,
    /// `X-Mailroom-Campaign`.
    pub campaign: Option<String>,
    /// The first address of `To:`.
    pub to: Option<String>,
    /// The first address of `From:`.
    pub from: Option<String>,
    /// The DSN's `Original-Envelope-Id`: the `ENVID` mailroom sent on MAIL (the recipient's
    /// token), when it has that shape (RFC 3461 §4.4).
    pub envelope_id: Option<String>,
}

/// What one piece of feedback says about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The address the feedback is about (the failed recipient; the complaining address).
    pub recipient: String,
    pub action: Option<Action>,
    /// RFC 3463 enhanced status code, e.g. `5.1.1`, when the message carries one.
    pub status: Option<String>,
    /// SMTP reply code, e.g. 550, when the message carries one.
    pub reply_code: Option<u16>,
    /// The remote server's words (Diagnostic-Code or the text around the recipient), unfolded.
    pub diagnostic: String,
    /// The server that refused it (`Remote-MTA`), when stated.
    pub remote_mta: Option<String>,
    pub kind: FeedbackKind,
    pub reason: Reason,
    /// ARF `Feedback-Type` (abuse, fraud, opt-out, ...), for complaints.
    pub feedback_type: Option<String>,
    /// The returned original's identifying headers.
    pub original: Original,
    /// The DSN's `Original-Recipient`: the `ORCPT` address mailroom sent on RCPT (RFC 3461
    /// §4.2), decoded; `None` without one (and for every other kind of report).
    pub original_recipient: Option<String>,
}

/// Parses one raw message (RFC 5322 bytes, CRLF or LF) into the reports it carries.
///
/// An empty result means "not feedback we understand": the caller should leave the message
/// alone and count it.
pub fn parse(raw: &[u8]) -> Vec<Report> {
    let Some(flat) = mime::flatten(raw) else {
        return Vec::new();
    };
    let mut original = flat.original();
    original.envelope_id = flat.envelope_id.as_deref().and_then(envelope::envelope_id);
    let mut reports = if let Some(feedback) = &flat.feedback {
        complaints(&flat, feedback)
    } else if let Some((reports, from_json)) = ses::parse(&flat.human_text()) {
        if original == Original::default() {
            original = from_json;
        }
        reports
    } else if let Some(complaint) = provider_complaint(&flat) {
        vec![complaint]
    } else if let Some(request) = unsubscribe_request(&flat) {
        vec![request]
    } else {
        let dsn = dsn_reports(&flat);
        if !dsn.is_empty() {
            dsn
        } else if let Some(reply) = auto_reply(&flat) {
            vec![reply]
        } else {
            text_reports(&flat)
        }
    };
    for report in &mut reports {
        report.original = original.clone();
    }
    reports
}

/// The kind of a report whose reason is decided: the one hard/soft policy
/// ([`model::bounce_kind`]), with the permanence the status class or reply code states.
pub fn kind_for(reason: Reason, status: Option<&str>, reply_code: Option<u16>) -> FeedbackKind {
    model::bounce_kind(reason, Permanence::of(status, reply_code))
}

fn complaints(flat: &mime::Flat, feedback: &[(String, String)]) -> Vec<Report> {
    let field = |name: &str| {
        feedback
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let feedback_type = field("Feedback-Type").map(|v| v.to_ascii_lowercase());
    // Original-Rcpt-To names the complaining address; providers that redact it leave the
    // returned original's To: as the best evidence.
    // Removal-Recipient (RFC 5965's opt-out reports) names it the same way.
    let mut recipients: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (_, v) in feedback.iter().filter(|(k, _)| {
        k.eq_ignore_ascii_case("Original-Rcpt-To") || k.eq_ignore_ascii_case("Removal-Recipient")
    }) {
        if let Some(a) = text::first_address(v)
            && recipients.len() < MAX_REPORTS
            && seen.insert(a.to_ascii_lowercase())
        {
            recipients.push(a);
        }
    }
    if recipients.is_empty() {
        recipients.extend(flat.original_to());
    }
    recipients.truncate(MAX_REPORTS);
    let diagnostic = text::cap(flat.first_text_line(), MAX_DIAGNOSTIC);
    recipients
        .into_iter()
        .map(|recipient| Report {
            recipient,
            action: None,
            status: None,
            reply_code: None,
            diagnostic: diagnostic.clone(),
            remote_mta: field("Reporting-MTA").map(|v| text::cap(strip_type(&v).to_owned(), 255)),
            kind: FeedbackKind::Complaint,
            reason: Reason::Feedback,
            feedback_type: feedback_type.clone(),
            original: Original::default(),
            original_recipient: None,
        })
        .collect()
}

/// `rfc822; user@example.org` → `user@example.org`.
fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((_, rest)) => rest.trim(),
        None => value.trim(),
    }
}

fn dsn_reports(flat: &mime::Flat) -> Vec<Report> {
    let Some(groups) = &flat.delivery_status else {
        return Vec::new();
    };
    let human = flat.human_text();
    let segments = text::segments(&human, &flat.excluded_addresses(), MAX_REPORTS);
    // Each recipient's segment, looked up once per group: a map, not a scan per recipient.
    let segment_of: HashMap<String, &str> = segments
        .iter()
        .map(|(addr, seg)| (addr.to_ascii_lowercase(), seg.as_str()))
        .collect();
    let reporting_mta = flat.reporting_mta.as_deref().map(strip_type);
    let single_recipient_replies = (groups.len() == 1)
        .then(|| transcript_replies(&human))
        .filter(|r| !r.is_empty());
    let mut reports = Vec::new();
    let mut reported: HashSet<String> = HashSet::new();
    for group in groups {
        if reports.len() >= MAX_REPORTS {
            break;
        }
        let field = |name: &str| {
            group
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let recipient = [
            "Final-Recipient",
            "Original-Recipient",
            "X-Actual-Recipient",
        ]
        .iter()
        .filter_map(|name| field(name))
        .find_map(|v| text::first_address(strip_type(v)));
        let Some(recipient) = recipient else {
            continue;
        };
        if !reported.insert(recipient.to_ascii_lowercase()) {
            continue;
        }
        let action = field("Action").and_then(Action::parse);
        let diagnostic_type = field("Diagnostic-Code").and_then(|v| {
            v.split_once(';')
                .map(|(t, _)| t.trim().to_ascii_lowercase())
        });
        let mut diagnostic = field("Diagnostic-Code")
            .map(|v| text::cap(strip_type(v).to_owned(), MAX_DIAGNOSTIC))
            .unwrap_or_default();
        // The human-readable part often says more than a bare code (Exchange, Gmail).
        // With one recipient group, all of the human-readable part is about that recipient,
        // even when it names the address differently (an alias, the address before expansion).
        let segment = segment_of
            .get(&recipient.to_ascii_lowercase())
            .copied()
            .or_else(|| (segments.len() <= 1 || groups.len() == 1).then(|| flat.human_summary()))
            .unwrap_or("");
        let segment = text::prefix(segment, MAX_CONTEXT);
        if diagnostic.is_empty() {
            diagnostic = text::cap(text::squeeze(segment), MAX_DIAGNOSTIC);
        }
        let status_field = field("Status").and_then(text::find_status);
        let status = pick_status(text::find_status_in_text(&diagnostic), status_field)
            .or_else(|| text::find_status_in_text(segment));
        let reply_code =
            text::find_reply_code(&diagnostic).or_else(|| text::find_reply_code(segment));
        // Sendmail keeps only the first line of a multi-line reply ("552-5.7.0 This message
        // was blocked because ..."): the rest is in the human-readable part.
        let truncated = diagnostic.get(3..4) == Some("-")
            && diagnostic.as_bytes()[..3].iter().all(u8::is_ascii_digit);
        let joined;
        let for_reason = if let Some(replies) = single_recipient_replies.as_deref() {
            // Sendmail's transcript holds the remote server's own words ("<<< 550 Unknown
            // user"), whole, where the Diagnostic-Code may carry only its own summary or the
            // first line of a multi-line reply.
            joined = format!("{replies} {diagnostic}");
            joined.as_str()
        } else if truncated {
            joined = format!("{diagnostic} {}", text::squeeze(segment));
            joined.as_str()
        } else {
            diagnostic.as_str()
        };
        let remote_mta = field("Remote-MTA").map(|v| text::cap(strip_type(v).to_owned(), 255));
        let remote_host = remote_mta
            .clone()
            .or_else(|| rhost::remote_host_in(&diagnostic))
            .or_else(|| rhost::remote_host_in(segment));
        let evidence = reason::Evidence {
            status: status.as_deref(),
            reply_code,
            action,
            diagnostic: for_reason,
            context: segment,
            diagnostic_type: diagnostic_type.as_deref(),
            recipient: Some(&recipient),
            remote_host: remote_host.as_deref(),
            reporting_host: reporting_mta,
        };
        let reason = classify::classify(&evidence);
        let action = Some(final_action(action, reason, status.as_deref()));
        reports.push(Report {
            kind: kind_for(reason, status.as_deref(), reply_code),
            recipient,
            action,
            status,
            reply_code,
            diagnostic,
            remote_mta,
            reason,
            feedback_type: None,
            original: Original::default(),
            original_recipient: field("Original-Recipient").and_then(envelope::original_recipient),
        });
    }
    reports
}

/// The cause a session transcript quotes: the first refusal (`<<< 550 ...`, with its `550-`
/// continuation lines) of each session (`... while talking to host:`), once each. Later
/// refusals in a session answer commands sent after the failure ("554 no valid recipients",
/// "503 need RCPT") and say nothing new.
fn transcript_replies(text: &str) -> String {
    /// Bounds the work on a transcript of many sessions.
    const MAX_LEN: usize = 4096;
    let mut out = String::new();
    let mut current: Option<String> = None;
    let mut refused_in_session = false;
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("... while talking to") {
            refused_in_session = false;
            continue;
        }
        let Some(reply) = line.strip_prefix("<<< ") else {
            continue;
        };
        let reply = reply.trim();
        let continues = reply.get(3..4) == Some("-");
        if let Some(mut first) = current.take() {
            // RFC 5321 §4.2.1: every line of a multi-line reply repeats the code; the text is
            // what follows it (and the enhanced code some servers repeat too).
            first.push(' ');
            first.push_str(continuation_text(reply));
            if continues {
                current = Some(first);
            } else if !out.contains(&first) && out.len() < MAX_LEN {
                push_word(&mut out, &first);
            }
            continue;
        }
        // Only refusals: greetings and "250 ok" say nothing about the failure.
        if refused_in_session || !reply.starts_with(['4', '5']) {
            continue;
        }
        refused_in_session = true;
        if continues {
            current = Some(reply.to_owned());
        } else if !out.contains(reply) && out.len() < MAX_LEN {
            push_word(&mut out, reply);
        }
    }
    if let Some(first) = current
        && !out.contains(&first)
    {
        push_word(&mut out, &first);
    }
    out
}

/// The text of one line of a multi-line reply: without its `550-` or `550 ` code and the
/// enhanced code that may follow it.
fn continuation_text(line: &str) -> &str {
    let coded = line.len() >= 4
        && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
        && matches!(line.as_bytes()[3], b'-' | b' ');
    if !coded {
        return line;
    }
    let rest = line[4..].trim_start();
    match rest.split_once(' ') {
        Some((word, after)) if text::find_status(word).as_deref() == Some(word) => after,
        _ => rest,
    }
}

fn push_word(out: &mut String, word: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(word);
}

/// The remote server's own code (in the Diagnostic-Code) wins over the reporting MTA's
/// `Status:` summary when it is specific: MTAs often write a canned `5.1.1` or `5.0.0` there.
fn pick_status(diagnostic: Option<String>, field: Option<String>) -> Option<String> {
    match (diagnostic, field) {
        (Some(d), Some(f)) if text::is_generic_status(&d) && !text::is_generic_status(&f) => {
            Some(f)
        }
        (Some(d), _) => Some(d),
        (None, f) => f,
    }
}

/// sisimai's convention, which senders expect too: an expired message is a delay that ran out,
/// and a refusal without an Action field is a failure.
fn final_action(action: Option<Action>, reason: Reason, status: Option<&str>) -> Action {
    if reason == Reason::Expired {
        return Action::Delayed;
    }
    if reason == Reason::Delivered {
        return action.unwrap_or(Action::Delivered);
    }
    match action {
        Some(a) => a,
        None if status.is_some_and(|s| s.starts_with('2')) => Action::Delivered,
        None => Action::Failed,
    }
}

/// Complaints forwarded without a feedback-report part: Hotmail's JMRP and Amazon SES's abuse
/// desk send `Subject: complaint about message from <ip>` with the original attached.
fn provider_complaint(flat: &mime::Flat) -> Option<Report> {
    let from = flat
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("From"))
        .map(|(_, v)| v.to_ascii_lowercase())?;
    let known = ["staff@hotmail.com", "complaints@email-abuse.amazonses.com"]
        .iter()
        .any(|a| from.contains(a));
    if !known
        || !flat
            .subject
            .to_lowercase()
            .contains("complaint about message from ")
    {
        return None;
    }
    Some(Report {
        recipient: flat.original_to().into_iter().next()?,
        action: None,
        status: None,
        reply_code: None,
        diagnostic: text::cap(flat.subject.clone(), MAX_DIAGNOSTIC),
        remote_mta: None,
        kind: FeedbackKind::Complaint,
        reason: Reason::Feedback,
        // The notice carries no Feedback-Type; do not invent one.
        feedback_type: None,
        original: Original::default(),
        original_recipient: None,
    })
}

/// A mail client's one-click unsubscribe sent to our List-Unsubscribe mailto (Apple Mail marks
/// it `X-Apple-Unsubscribe: true`): feedback of type `opt-out`, handled like a complaint.
fn unsubscribe_request(flat: &mime::Flat) -> Option<Report> {
    let marked = flat.headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("X-Apple-Unsubscribe") && v.trim().eq_ignore_ascii_case("true")
    });
    if !marked {
        return None;
    }
    Some(Report {
        recipient: flat.sender_address()?,
        action: None,
        status: None,
        reply_code: None,
        diagnostic: text::cap(flat.subject.clone(), MAX_DIAGNOSTIC),
        remote_mta: None,
        kind: FeedbackKind::Complaint,
        reason: Reason::Feedback,
        feedback_type: Some("opt-out".to_owned()),
        original: Original::default(),
        original_recipient: None,
    })
}

fn auto_reply(flat: &mime::Flat) -> Option<Report> {
    if !flat.looks_like_auto_reply() {
        return None;
    }
    let recipient = flat.sender_address()?;
    Some(Report {
        recipient,
        action: None,
        status: None,
        reply_code: None,
        diagnostic: text::cap(flat.subject.clone(), MAX_DIAGNOSTIC),
        remote_mta: None,
        kind: FeedbackKind::AutoReply,
        reason: Reason::Vacation,
        feedback_type: None,
        original: Original::default(),
        original_recipient: None,
    })
}

fn text_reports(flat: &mime::Flat) -> Vec<Report> {
    if !flat.looks_like_bounce() {
        return Vec::new();
    }
    let human = flat.human_text();
    let excluded = flat.excluded_addresses();
    let mut segments = text::segments(&human, &excluded, MAX_REPORTS);
    let mut failed = flat.failed_recipients();
    failed.truncate(MAX_REPORTS);
    // When the text names recipients but none of the header's, the header disagrees with the
    // text that the MTA wrote for the same failure; the text is what the bounce explains.
    let named: HashSet<String> = text::addresses(&human)
        .into_iter()
        .map(|(_, a)| a.to_ascii_lowercase())
        .collect();
    let header_unexplained = !segments.is_empty()
        && segments.len() == failed.len()
        && failed
            .iter()
            .all(|a| !named.contains(&a.to_ascii_lowercase()));
    if !failed.is_empty() && !header_unexplained {
        // X-Failed-Recipients (Exim, Gmail) is authoritative for who failed; keep the text
        // segments only as diagnostics. A recipient the text does not name gets the whole
        // text (an empty segment stands for it).
        let mut segment_of: HashMap<String, String> = segments
            .into_iter()
            .map(|(a, seg)| (a.to_ascii_lowercase(), seg))
            .collect();
        segments = failed
            .into_iter()
            .map(|addr| {
                let seg = segment_of
                    .remove(&addr.to_ascii_lowercase())
                    .unwrap_or_default();
                (addr, seg)
            })
            .collect();
    }
    // Google Workspace's "** Message not delivered **" notice (no DSN part) names the sender's
    // alias or group in its text and in X-Failed-Recipients; the recipient is the returned
    // original's To.
    let workspace_notice = human
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.eq_ignore_ascii_case("** message not delivered **"));
    if workspace_notice {
        let to = flat.original_to();
        if !to.is_empty() {
            segments = to
                .into_iter()
                .take(MAX_REPORTS)
                .map(|a| (a, String::new()))
                .collect();
        }
    }
    if segments.is_empty() {
        // A bounce that names nobody in its text: the returned original's To: is the address
        // it is about (Verizon, some carriers).
        if let Some(to) = flat.original_to().into_iter().next() {
            segments.push((to, String::new()));
        }
    }
    if segments.is_empty() {
        // Mail sent to oneself bounces back to the address that failed: the text names only
        // the bounce's own recipient. Only the daemon's addresses are never the recipient.
        segments = text::segments(&human, &flat.daemon_addresses(), MAX_REPORTS);
    }
    let human = text::prefix(&human, MAX_CONTEXT);
    // au (EZweb) marks a bounce caused by the recipient's own filter with `X-SPASIGN: NG`.
    let filtered_by_recipient = flat
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("X-SPASIGN") && v.trim().eq_ignore_ascii_case("NG"));
    let whole = segments.len() == 1;
    segments
        .into_iter()
        .map(|(recipient, segment)| {
            let scope = if whole || segment.is_empty() {
                human
            } else {
                text::prefix(&segment, MAX_CONTEXT)
            };
            let diagnostic = text::diagnostic_line(scope);
            let status = text::find_status_in_text(scope);
            let reply_code =
                text::find_reply_code(&diagnostic).or_else(|| text::find_reply_code(scope));
            let remote_host = rhost::remote_host_in(scope);
            let evidence = reason::Evidence {
                status: status.as_deref(),
                reply_code,
                action: None,
                diagnostic: &diagnostic,
                context: scope,
                diagnostic_type: None,
                recipient: Some(&recipient),
                remote_host: remote_host.as_deref(),
                reporting_host: None,
            };
            let reason = if filtered_by_recipient {
                Reason::Filtered
            } else {
                classify::classify(&evidence)
            };
            // Mailing-list servers state the cause only in the subject ("Loop Alert: ...",
            // "NOT MEMBER article from ..."). Read it last: other subjects quote the original's.
            let reason = match reason {
                Reason::Undefined => {
                    keywords::match_keywords(&flat.subject.to_lowercase()).unwrap_or(reason)
                }
                r => r,
            };
            Report {
                kind: kind_for(reason, status.as_deref(), reply_code),
                action: Some(final_action(None, reason, status.as_deref())),
                recipient,
                status,
                reply_code,
                diagnostic,
                remote_mta: remote_host,
                reason,
                feedback_type: None,
                original: Original::default(),
                original_recipient: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example.org\r\n\
To: bounces+abc123@news.example.com\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
\r\n\
--B\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.org\r\n\
\r\n\
Final-Recipient: rfc822; nobody@example.net\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Remote-MTA: dns; in.example.net\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address\r\n\
\x20   rejected: User unknown in virtual mailbox table\r\n\
\r\n\
Final-Recipient: rfc822; full@example.net\r\n\
Action: delayed\r\n\
Status: 4.2.2\r\n\
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\r\n\
\r\n\
--B\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: news@example.com\r\n\
To: nobody@example.net\r\n\
Message-ID: <m1@example.com>\r\n\
X-Mailroom-Token: abc123\r\n\
X-Mailroom-Campaign: spring\r\n\
\r\n\
--B--\r\n";

    #[test]
    fn rfc3464_report_gives_one_report_per_recipient_with_unfolded_diagnostic() {
        let reports = parse(DSN.as_bytes());
        assert_eq!(reports.len(), 2);
        let r = &reports[0];
        assert_eq!(r.recipient, "nobody@example.net");
        assert_eq!(r.action, Some(Action::Failed));
        assert_eq!(r.status.as_deref(), Some("5.1.1"));
        assert_eq!(r.reply_code, Some(550));
        assert_eq!(r.kind, FeedbackKind::Hard);
        assert_eq!(r.reason, Reason::UserUnknown);
        assert_eq!(r.remote_mta.as_deref(), Some("in.example.net"));
        assert!(
            r.diagnostic
                .ends_with("Recipient address rejected: User unknown in virtual mailbox table"),
            "{}",
            r.diagnostic
        );
        assert_eq!(r.original.message_id.as_deref(), Some("m1@example.com"));
        assert_eq!(r.original.token.as_deref(), Some("abc123"));
        assert_eq!(r.original.campaign.as_deref(), Some("spring"));
        let r = &reports[1];
        assert_eq!(r.recipient, "full@example.net");
        assert_eq!(r.action, Some(Action::Delayed));
        assert_eq!(r.reason, Reason::MailboxFull);
        assert_eq!(r.kind, FeedbackKind::Soft);
    }

    #[test]
    fn arf_report_is_a_complaint_never_a_bounce() {
        let raw = "From: feedback@isp.example\r\n\
To: abuse@news.example.com\r\n\
Subject: FW: newsletter\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\r\n\
\r\n\
--F\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an email abuse report.\r\n\
--F\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: Example-FBL/1.0\r\n\
Version: 1\r\n\
Original-Rcpt-To: <reader@isp.example>\r\n\
\r\n\
--F\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: news@example.com\r\n\
To: reader@isp.example\r\n\
Message-ID: <m2@example.com>\r\n\
Subject: hello\r\n\
\r\n\
body\r\n\
--F--\r\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].recipient, "reader@isp.example");
        assert_eq!(reports[0].kind, FeedbackKind::Complaint);
        assert_eq!(reports[0].feedback_type.as_deref(), Some("abuse"));
        assert_eq!(
            reports[0].original.message_id.as_deref(),
            Some("m2@example.com")
        );
    }

    #[test]
    fn vacation_notice_is_an_auto_reply() {
        let raw = "From: Reader <reader@example.net>\r\n\
To: news@example.com\r\n\
Subject: Out of office: back on Monday\r\n\
Auto-Submitted: auto-replied\r\n\
\r\n\
I am away until Monday.\r\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].recipient, "reader@example.net");
        assert_eq!(reports[0].kind, FeedbackKind::AutoReply);
        assert_eq!(reports[0].reason, Reason::Vacation);
    }

    #[test]
    fn qmail_style_text_bounce_is_parsed_from_its_words() {
        let raw = "From: MAILER-DAEMON@mail.example.com\n\
To: news@example.com\n\
Subject: failure notice\n\
\n\
Hi. This is the qmail-send program at mail.example.com.\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\
\n\
<gone@example.org>:\n\
192.0.2.1 does not like recipient.\n\
Remote host said: 550 5.1.1 <gone@example.org>... No such user\n\
Giving up on 192.0.2.1.\n\
\n\
--- Below this line is a copy of the message.\n\
\n\
From: news@example.com\n\
To: gone@example.org\n\
Message-ID: <m3@example.com>\n\
\n\
hello\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].recipient, "gone@example.org");
        assert_eq!(reports[0].status.as_deref(), Some("5.1.1"));
        assert_eq!(reports[0].kind, FeedbackKind::Hard);
        assert_eq!(
            reports[0].original.message_id.as_deref(),
            Some("m3@example.com")
        );
    }

    #[test]
    fn ordinary_mail_and_garbage_give_no_reports() {
        assert!(
            parse(b"From: a@example.com\r\nSubject: hi\r\n\r\nhello a@example.org\r\n").is_empty()
        );
        assert!(parse(b"").is_empty());
        assert!(parse(&[0xff, 0xfe, 0x00, 0x0a]).is_empty());
    }

    #[test]
    fn a_readers_reply_about_an_error_bounces_nobody() {
        let raw = "From: Reader <reader@example.net>\r\n\
To: news@news.example.com\r\n\
Subject: Re: error in your newsletter\r\n\
\r\n\
The link failed for me, and for my colleague bob@example.org too.\r\n";
        assert!(parse(raw.as_bytes()).is_empty());
    }

    #[test]
    fn a_bounce_whose_mime_structure_is_damaged_is_read_from_its_raw_text() {
        // The nested part's boundary parameter lost its folding whitespace.
        let raw = "From: MAILER-DAEMON@mx.example.org\r\n\
Subject: Undeliverable\r\n\
Content-Type: multipart/mixed; boundary=\"A\"\r\n\
\r\n\
--A\r\n\
Content-Type: multipart/alternative;\r\n\
boundary=\"B\"\r\n\
\r\n\
--B\r\n\
Content-Type: text/plain\r\n\
\r\n\
<gone@example.net>: 550 5.1.1 no such user here\r\n\
--B--\r\n\
--A--\r\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].recipient, "gone@example.net");
        assert_eq!(reports[0].reason, Reason::UserUnknown);
    }

    #[test]
    fn workspace_notice_reports_the_original_recipient_not_the_alias() {
        let raw = "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\r\n\
To: sender@example.com\r\n\
Subject: Delivery Status Notification (Failure)\r\n\
X-Failed-Recipients: alias@groups.example.com\r\n\
Content-Type: multipart/mixed; boundary=\"A\"\r\n\
\r\n\
--A\r\n\
Content-Type: text/plain\r\n\
\r\n\
** Message not delivered **\r\n\
You're sending this from a different address or alias using the 'Send mail as'\r\n\
feature (alias@groups.example.com).\r\n\
--A\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: sender@example.com\r\n\
To: <reader@example.org>\r\n\
Subject: hello\r\n\
\r\n\
hi\r\n\
--A--\r\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].recipient, "reader@example.org");
        assert_eq!(reports[0].reason, Reason::Rejected);
    }

    #[test]
    fn hotmail_complaint_notice_without_a_report_part_is_a_complaint() {
        let raw = "From: staff@hotmail.com\r\n\
To: abuse@news.example.com\r\n\
Subject: complaint about message from 192.0.2.1\r\n\
Content-Type: multipart/mixed; boundary=\"A\"\r\n\
\r\n\
--A\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an email abuse report.\r\n\
--A\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: news@example.com\r\n\
To: reader@hotmail.example\r\n\
Subject: hello\r\n\
\r\n\
hi\r\n\
--A--\r\n";
        let reports = parse(raw.as_bytes());
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].recipient, "reader@hotmail.example");
        assert_eq!(reports[0].kind, FeedbackKind::Complaint);
        // The same subject from anyone else is not a complaint.
        let other = raw.replace("staff@hotmail.com", "someone@example.org");
        assert!(
            parse(other.as_bytes())
                .iter()
                .all(|r| r.kind != FeedbackKind::Complaint)
        );
    }

    #[test]
    fn failed_recipients_header_wins_unless_the_text_never_names_it() {
        let bounce = |header: &str| {
            format!(
                "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\r\n\
To: sender@example.com\r\n\
Subject: Mail delivery failed: returning message to sender\r\n\
X-Failed-Recipients: {header}\r\n\
\r\n\
This message was created automatically by mail delivery software.\r\n\
\r\n\
A message that you sent could not be delivered to one or more of its\r\n\
recipients. This is a permanent error. The following address(es) failed:\r\n\
\r\n\
  named@example.net\r\n\
    SMTP error from remote mail server after RCPT TO:<named@example.net>:\r\n\
    host mx.example.net [192.0.2.1]: 550 5.1.1 unknown user\r\n"
            )
        };
        let agree = parse(bounce("named@example.net").as_bytes());
        assert_eq!(agree[0].recipient, "named@example.net");
        let disagree = parse(bounce("other@example.net").as_bytes());
        assert_eq!(disagree.len(), 1, "{disagree:?}");
        assert_eq!(disagree[0].recipient, "named@example.net");
        assert_eq!(disagree[0].reason, Reason::UserUnknown);
    }

    #[test]
    fn a_transcript_gives_each_sessions_first_refusal_whole() {
        let t = "... while talking to mx1.example.org.:\n>>> DATA\n\
                 <<< 550-5.7.1 This message fails to pass\n\
                 <<< 550-5.7.1 authentication checks.\n\
                 <<< 550 5.7.1 See the help page.\n\
                 <<< 503 5.0.0 Need RCPT (recipient)\n\
                 ... while talking to mx2.example.org.:\n<<< 421 busy\n>>> QUIT\n<<< 421 bye\n";
        assert_eq!(
            transcript_replies(t),
            "550-5.7.1 This message fails to pass authentication checks. See the help page. \
             421 busy"
        );
        assert_eq!(continuation_text("550-5.7.1 more words"), "more words");
        assert_eq!(continuation_text("550 last words"), "last words");
        assert_eq!(continuation_text("no code here"), "no code here");
    }

    #[test]
    fn notaccept_is_hard_only_when_permanent() {
        assert_eq!(
            kind_for(Reason::NotAccept, Some("5.1.10"), None),
            FeedbackKind::Hard
        );
        assert_eq!(
            kind_for(Reason::NotAccept, Some("4.3.2"), Some(450)),
            FeedbackKind::Soft
        );
        assert_eq!(
            kind_for(Reason::Blocked, Some("5.7.1"), None),
            FeedbackKind::Soft
        );
    }
}
