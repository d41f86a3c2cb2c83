//! Records parsed feedback in the ledger: matches each report to a send of one campaign, appends
//! an `events` row (its fingerprint makes a second import of the same message a no-op), moves
//! the recipient's state and fills the suppression list. The writes go through the store's
//! typed feedback functions (`store::FeedbackTx`); this module speaks no SQL.
//!
//! Matching, most to least certain: the DSN's `Original-Envelope-Id` (the `ENVID` mailroom sent:
//! the recipient's token) and `Original-Recipient` (the `ORCPT` address mailroom sent), both
//! chosen by mailroom itself (RFC 3461); the VERP token in the address the bounce was delivered
//! to (`[bounces] return_path` with `{token}`); the `X-Mailroom-Token` or `Message-ID` of the
//! returned original; the failed address itself within the campaign, but only for a message that
//! carries none of mailroom's identifiers (one that does, naming no send of this campaign, is
//! another campaign's or another ledger's). A message that matches nothing is left alone and
//! counted, never guessed.
//!
//! What a report does (the state moves are the store's state machine, `store::state`):
//! - hard bounce → `bounced_hard` + suppression `hard_bounce`;
//! - complaint → `complained` + suppression `complaint`;
//! - soft failure → `bounced_soft` (the relay accepted it, but it was not delivered), unless the
//!   recipient is already `bounced_hard`, `complained` or `suppressed`;
//! - success DSN (`Action: delivered`) → `delivered`, for a recipient still `accepted` (or
//!   `unknown`): the receiving side confirmed it; a later failure or complaint still counts;
//! - `relayed`/`expanded` DSNs (event kind `relayed`: handed on to a system that sends no further
//!   notice), `delayed` ("delayed at the relay, still trying") and auto-replies → an event only.
//!
//! Each negative event is diagnosed (`crate::diagnose`) with the recipient's provider, so the
//! report can say what the provider meant.

use std::collections::BTreeMap;

use super::{Action, Report, parse};
use crate::diagnose;
use crate::model::FeedbackKind;
use crate::provider::{self, Provider};
use crate::store::{self, Evidence, FeedbackTarget, FeedbackTx, Ledger, NewEvent, state};

/// One message read from a mailbox.
#[derive(Debug, Clone)]
pub struct MailboxMessage {
    /// Where it came from, for the event's `source` (e.g. `maildir:/srv/bounces/new/1.eml`).
    pub source: String,
    pub raw: Vec<u8>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages read from the mailbox.
    pub read: usize,
    /// Messages that carried no feedback the parser understands.
    pub not_feedback: usize,
    /// Reports parsed out of the messages.
    pub reports: usize,
    /// Reports matched to a recipient and recorded now.
    pub matched: usize,
    /// Reports matched to no send of this campaign (left untouched).
    pub unmatched: usize,
    /// Reports already recorded by an earlier import.
    pub duplicates: usize,
    /// Recorded reports by event kind (hard, soft, complaint, auto_reply, delivered, delayed).
    pub by_kind: BTreeMap<String, usize>,
    /// Recipients whose state changed.
    pub state_changes: usize,
    /// Addresses newly added to the suppression list.
    pub suppressed: usize,
}

/// Errors recording feedback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "campaign `{0}` is not in this ledger\n\nSend it first (`mailroom send`), or check the campaign name and store path."
    )]
    UnknownCampaign(String),
    #[error("ledger write failed while importing {source_name}")]
    Store {
        source_name: String,
        #[source]
        source: Box<store::Error>,
    },
}

/// How to recognise our sends in returned mail.
#[derive(Debug, Clone)]
pub struct Matcher {
    campaign_id: crate::model::CampaignId,
    campaign: String,
    /// `return_path` split around `{token}`, lowercase.
    verp: Option<(String, String)>,
}

impl Matcher {
    /// Looks the campaign up; `return_path` is the `[bounces] return_path` pattern, if any.
    ///
    /// # Errors
    /// When the campaign has no row in the ledger.
    pub fn new(ledger: &Ledger, campaign: &str, return_path: Option<&str>) -> Result<Self, Error> {
        let id = ledger
            .campaign_id(campaign)
            .map_err(|source| Error::Store {
                source_name: campaign.to_owned(),
                source: Box::new(source),
            })?;
        let campaign_id = id.ok_or_else(|| Error::UnknownCampaign(campaign.to_owned()))?;
        let verp = return_path.and_then(|p| {
            let p = p.to_ascii_lowercase();
            p.split_once("{token}")
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
        });
        Ok(Matcher {
            campaign_id,
            campaign: campaign.to_owned(),
            verp,
        })
    }

    /// The VERP token in an address, when it has the shape of our return path.
    pub fn token_in(&self, address: &str) -> Option<String> {
        let (prefix, suffix) = self.verp.as_ref()?;
        let a = address.trim().trim_matches(['<', '>']).to_ascii_lowercase();
        let middle = a
            .strip_prefix(prefix.as_str())?
            .strip_suffix(suffix.as_str())?;
        (!middle.is_empty() && middle.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| middle.to_owned())
    }
}

/// Imports every message; each message is one transaction, so an interrupted import keeps what
/// it recorded and a re-run skips it.
///
/// # Errors
/// When the ledger cannot be written.
pub fn import(
    ledger: &mut Ledger,
    matcher: &Matcher,
    messages: impl IntoIterator<Item = MailboxMessage>,
) -> Result<Summary, Error> {
    let mut summary = Summary::default();
    for message in messages {
        import_one(ledger, matcher, &message, &mut summary)?;
    }
    Ok(summary)
}

/// Imports one message into `summary`.
///
/// # Errors
/// When the ledger cannot be written.
pub fn import_one(
    ledger: &mut Ledger,
    matcher: &Matcher,
    message: &MailboxMessage,
    summary: &mut Summary,
) -> Result<(), Error> {
    let fail = |source| Error::Store {
        source_name: message.source.clone(),
        source: Box::new(source),
    };
    summary.read += 1;
    let reports = parse(&message.raw);
    if reports.is_empty() {
        summary.not_feedback += 1;
        return Ok(());
    }
    summary.reports += reports.len();
    let digest = message_digest(&message.raw);
    let tx = ledger.feedback().map_err(fail)?;
    record(&tx, matcher, message, &reports, &digest, summary).map_err(fail)?;
    tx.commit().map_err(fail)
}

/// Records one message in the ledger that sent it, among the ledgers of one campaign's shards
/// (`bounces import --db A --db B`): each ledger is tried in turn inside a transaction, and the
/// first whose sends the message matches (or already holds it) keeps it; the others roll back
/// and never see it. Returns that ledger's index; `None` when no ledger sent it (counted as
/// unmatched in `summaries[0]`, like a message that is not feedback).
///
/// # Errors
/// When a ledger cannot be written.
pub fn import_routed(
    targets: &mut [(Ledger, Matcher)],
    message: &MailboxMessage,
    summaries: &mut [Summary],
) -> Result<Option<usize>, Error> {
    let fail = |source| Error::Store {
        source_name: message.source.clone(),
        source: Box::new(source),
    };
    let reports = parse(&message.raw);
    if reports.is_empty() {
        summaries[0].read += 1;
        summaries[0].not_feedback += 1;
        return Ok(None);
    }
    let digest = message_digest(&message.raw);
    for (i, (ledger, matcher)) in targets.iter_mut().enumerate() {
        let mut trial = Summary::default();
        let tx = ledger.feedback().map_err(fail)?;
        record(&tx, matcher, message, &reports, &digest, &mut trial).map_err(fail)?;
        if trial.matched + trial.duplicates > 0 {
            tx.commit().map_err(fail)?;
            trial.read = 1;
            trial.reports = reports.len();
            summaries[i].absorb(trial);
            return Ok(Some(i));
        }
        // Dropping the transaction rolls it back: this ledger did not send the message.
    }
    summaries[0].read += 1;
    summaries[0].reports += reports.len();
    summaries[0].unmatched += reports.len();
    Ok(None)
}

impl Summary {
    /// Adds another summary's counts to this one.
    pub fn absorb(&mut self, other: Summary) {
        self.read += other.read;
        self.not_feedback += other.not_feedback;
        self.reports += other.reports;
        self.matched += other.matched;
        self.unmatched += other.unmatched;
        self.duplicates += other.duplicates;
        self.state_changes += other.state_changes;
        self.suppressed += other.suppressed;
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
    }
}

/// The SHA-256 of a whole message, in hex: with the recipient, kind and status it makes an
/// event's fingerprint, so importing the same mailbox twice records nothing new.
fn message_digest(raw: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn record(
    tx: &FeedbackTx<'_>,
    matcher: &Matcher,
    message: &MailboxMessage,
    reports: &[Report],
    digest: &str,
    summary: &mut Summary,
) -> Result<(), store::Error> {
    let by_envid = match &reports[0].original.envelope_id {
        Some(envid) => tx.find(matcher.campaign_id, Evidence::Token(envid))?,
        None => None,
    };
    let by_message = match &by_envid {
        Some(_) => None,
        None => message_match(tx, matcher, &message.raw, &reports[0])?,
    };
    // A report that carries an identifier mailroom chose (ENVID, a VERP token, the token
    // header) none of which names a send of this campaign belongs to another campaign or
    // another ledger sharing the mailbox: matching it by address would be a guess, and a wrong
    // one (the same person is on many lists).
    let elsewhere = by_envid.is_none()
        && by_message.is_none()
        && carries_mailroom_id(matcher, &message.raw, &reports[0]);
    let now = crate::store::ledger::now_ms();
    for report in reports {
        if elsewhere {
            summary.unmatched += 1;
            continue;
        }
        // One message answers one transaction of one recipient (mailroom sends one RCPT per
        // message), so a message-level match names the recipient of a single report, or of the
        // report whose address it is.
        let fits = |r: &FeedbackTarget| {
            reports.len() == 1
                || r.email.eq_ignore_ascii_case(&report.recipient)
                || report
                    .original_recipient
                    .as_deref()
                    .is_some_and(|o| r.email.eq_ignore_ascii_case(o))
        };
        let by_orcpt = match &report.original_recipient {
            Some(orcpt) => tx.find(matcher.campaign_id, Evidence::Address(orcpt))?,
            None => None,
        };
        let target = match (&by_envid, by_orcpt, &by_message) {
            (Some(r), _, _) if fits(r) => Some(r.clone()),
            (_, Some(r), _) => Some(r),
            (_, None, Some(r)) if fits(r) => Some(r.clone()),
            _ => tx.find(matcher.campaign_id, Evidence::Address(&report.recipient))?,
        };
        let Some(mut target) = target else {
            summary.unmatched += 1;
            continue;
        };
        let kind = event_kind(report);
        let fingerprint = format!(
            "{}:{}:{}:{}",
            digest,
            report.recipient.to_ascii_lowercase(),
            kind,
            report.status.as_deref().unwrap_or("")
        );
        let diagnosis = diagnosis_of(report, kind, &target.email);
        let recorded = tx.record_event(&NewEvent {
            diagnosis,
            recipient_id: target.id,
            at: now,
            kind,
            action: report.action.map(Action::as_str),
            status: report.status.as_deref(),
            reason: report.reason.as_str(),
            diagnostic: Some(&report.diagnostic),
            remote_mta: report.remote_mta.as_deref(),
            source: &message.source,
            fingerprint: &fingerprint,
        })?;
        if !recorded {
            summary.duplicates += 1;
            continue;
        }
        summary.matched += 1;
        *summary.by_kind.entry(kind.to_owned()).or_default() += 1;
        if let Some(feedback) = state_feedback(kind)
            && tx.apply(&mut target, feedback)?.is_some()
        {
            summary.state_changes += 1;
        }
        let suppression = match report.kind {
            FeedbackKind::Hard => Some("hard_bounce"),
            FeedbackKind::Complaint => Some("complaint"),
            _ => None,
        };
        if let Some(reason) = suppression
            && tx.suppress(
                &target.email,
                reason,
                &message.source,
                Some(&matcher.campaign),
                now,
            )?
        {
            summary.suppressed += 1;
        }
    }
    Ok(())
}

/// The `events.kind` of a report: a FeedbackKind name, `delayed` for a delay notice, or
/// `relayed` for a success notice that only says the message was passed on (`relayed`,
/// `expanded`: RFC 3464 §2.3.3), which confirms no delivery.
fn event_kind(report: &Report) -> &'static str {
    if report.kind == FeedbackKind::Delivered
        && matches!(report.action, Some(Action::Relayed | Action::Expanded))
    {
        return "relayed";
    }
    if report.action == Some(Action::Delayed)
        && matches!(report.kind, FeedbackKind::Soft | FeedbackKind::Hard)
        && report.status.as_deref().is_none_or(|s| s.starts_with('4'))
    {
        "delayed"
    } else {
        report.kind.as_str()
    }
}

/// The state-changing feedback an event kind is, if any (delays, auto-replies and relay
/// notices are recorded as events only).
fn state_feedback(kind: &str) -> Option<state::Feedback> {
    match kind {
        "hard" => Some(state::Feedback::Hard),
        "soft" => Some(state::Feedback::Soft),
        "complaint" => Some(state::Feedback::Complaint),
        "delivered" => Some(state::Feedback::Delivered),
        _ => None,
    }
}

/// The diagnosis of a negative report (see `crate::diagnose`): the recipient's provider comes
/// from its domain, else from the remote MTA that wrote the text.
fn diagnosis_of(report: &Report, kind: &str, email: &str) -> Option<&'static str> {
    match kind {
        "complaint" => return Some(diagnose::COMPLAINT.key),
        "hard" | "soft" | "delayed" => {}
        _ => return None,
    }
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
    let provider = provider::of_domain(domain).or_else(|| {
        let mx = report.remote_mta.as_deref()?;
        Some(provider::of_mx(domain, mx)).filter(|p| {
            !matches!(
                p,
                Provider::Other | Provider::Unknown | Provider::SelfHosted
            )
        })
    });
    diagnose::diagnose(&diagnose::Evidence {
        provider,
        code: report.reply_code,
        status: report.status.as_deref(),
        text: &report.diagnostic,
    })
    .map(|d| d.key)
}

/// Message-level evidence: the VERP token in the delivery headers, then the returned
/// original's token and Message-ID.
fn message_match(
    tx: &FeedbackTx<'_>,
    matcher: &Matcher,
    raw: &[u8],
    first: &Report,
) -> Result<Option<FeedbackTarget>, store::Error> {
    let campaign = matcher.campaign_id;
    for address in envelope_addresses(raw) {
        if let Some(token) = matcher.token_in(&address)
            && let Some(r) = tx.find(campaign, Evidence::Token(&token))?
        {
            return Ok(Some(r));
        }
    }
    if let Some(token) = &first.original.token
        && let Some(r) = tx.find(campaign, Evidence::Token(token))?
    {
        return Ok(Some(r));
    }
    if let Some(id) = &first.original.message_id
        && let Some(token) = crate::campaign::message_id_token(&matcher.campaign, id)
        && let Some(r) = tx.find(campaign, Evidence::Token(token))?
    {
        return Ok(Some(r));
    }
    Ok(None)
}

/// Whether the message names a send by an identifier only mailroom puts there.
fn carries_mailroom_id(matcher: &Matcher, raw: &[u8], first: &Report) -> bool {
    first.original.envelope_id.is_some()
        || first.original.token.is_some()
        || envelope_addresses(raw)
            .iter()
            .any(|a| matcher.token_in(a).is_some())
}

/// Addresses the bounce was delivered to, from the headers delivery agents add, then To.
fn envelope_addresses(raw: &[u8]) -> Vec<String> {
    const NAMES: &[&str] = &[
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "x-rcpt-to",
        "to",
    ];
    let end = raw
        .windows(2)
        .position(|w| w == b"\n\n")
        .or_else(|| raw.windows(4).position(|w| w == b"\r\n\r\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut out = Vec::new();
    for name in NAMES {
        for line in head.lines() {
            if let Some((k, v)) = line.split_once(':')
                && k.trim().eq_ignore_ascii_case(name)
            {
                out.extend(super::text::addresses(v).into_iter().map(|(_, a)| a));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn verp_token_is_read_from_the_return_path_shape() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = crate::store::open(&dir.path().join("l.db")).unwrap();
        ledger.ensure_campaign("c").unwrap();
        let m = Matcher::new(&ledger, "c", Some("Bounces+{token}@News.example.com")).unwrap();
        assert_eq!(
            m.token_in("<bounces+ab12cd@news.example.com>").as_deref(),
            Some("ab12cd")
        );
        assert_eq!(m.token_in("bounces+@news.example.com"), None);
        assert_eq!(m.token_in("other+ab12@news.example.com"), None);
        assert!(matches!(
            Matcher::new(&ledger, "missing", None),
            Err(Error::UnknownCampaign(_))
        ));
    }

    #[test]
    fn envelope_addresses_come_from_delivery_headers_first() {
        let raw = b"To: a@example.com\nDelivered-To: b@example.com\n\nTo: c@example.com\n";
        assert_eq!(envelope_addresses(raw), ["b@example.com", "a@example.com"]);
    }
}
