//! Shared vocabulary: ledger ids, the states a recipient moves through, what an attempt and a
//! run ended with, how a connection is secured, the kinds of feedback a message can earn, the
//! reasons a delivery fails, and the one hard/soft policy ([`bounce_kind`]) that turns a reason
//! into a kind. No I/O, no dependency on any other module of the crate.
//!
//! The policy lives here, not in `bounce` or `transport`, because both decide hard or soft (a DSN
//! that arrives later, a 5xx reply at send time) and neither may depend on the other: this leaf
//! is the one place both may use. A hard bounce puts the address on the suppression list forever,
//! so the two must never disagree.
//!
//! The string forms (`as_str` / `FromStr`) are what the ledger stores and what reports print, so
//! they are part of the on-disk format: never rename one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A campaign's row id in the ledger.
    CampaignId
);
id!(
    /// A `send` run's row id in the ledger.
    RunId
);
id!(
    /// A relay's row id in the ledger (`[[relay]]`: one per relay name).
    RelayId
);
id!(
    /// A recipient's row id in the ledger (one per campaign and address).
    RecipientId
);

/// One of `count` disjoint parts of a campaign's recipients (`send --shard K/N`): the recipients
/// whose [`bucket`](Shard::contains) is `index` modulo `count`. Shards let several hosts send
/// one campaign, each with its own ledger, without any recipient going out twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Whether a recipient in `bucket` (a stable hash of campaign and address) belongs here.
    pub fn contains(self, bucket: u64) -> bool {
        bucket % u64::from(self.count) == u64::from(self.index)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `"K/N"` with 0 ≤ K < N.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a shard: write K/N with 0 <= K < N, e.g. 0/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// How a connection to a server (an SMTP relay, an IMAP server) is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Security {
    /// Plain connect, then STARTTLS, which is required (port 587 style).
    #[default]
    #[serde(rename = "starttls")]
    StartTls,
    /// TLS from the first byte (port 465, imaps).
    #[serde(rename = "tls")]
    Tls,
    /// No TLS at all: loopback only, never with a password.
    #[serde(rename = "none")]
    None,
}

impl Security {
    /// The name used in campaign.toml, the `runs` table and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::StartTls => "starttls",
            Security::Tls => "tls",
            Security::None => "none",
        }
    }
}

impl fmt::Display for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a relay that speaks the DSN extension should send a delivery status notification
/// (RFC 3461 §4.1 `NOTIFY`): on failure, on delay, on success, or (all false) never.
/// `[bounces] notify` in campaign.toml; the default asks for failures and delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsnNotify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl DsnNotify {
    /// `NOTIFY=FAILURE,DELAY`: what a sender needs to learn about problems.
    pub const DEFAULT: DsnNotify = DsnNotify {
        success: false,
        failure: true,
        delay: true,
    };
    /// `NOTIFY=NEVER`.
    pub const NEVER: DsnNotify = DsnNotify {
        success: false,
        failure: false,
        delay: false,
    };

    /// The `NOTIFY=` value: `NEVER`, or the conditions joined by commas in RFC order.
    pub fn keyword(self) -> String {
        let parts: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if parts.is_empty() {
            "NEVER".to_owned()
        } else {
            parts.join(",")
        }
    }
}

impl Default for DsnNotify {
    fn default() -> Self {
        DsnNotify::DEFAULT
    }
}

/// What one attempt (a row of `attempts`) ended with: the recipient's new state when it was
/// charged, or why the claim was given back uncharged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    Accepted,
    Deferred,
    BouncedHard,
    BouncedSoft,
    Failed,
    Unknown,
    /// Not sent: the address is on the suppression list.
    Suppressed,
    /// Given back after a "slow down" reply.
    Throttled,
    /// Given back: the relay refused the session or the sender, the run stopped.
    Aborted,
    /// Given back: the relay's replies did not match the commands sent.
    OutOfStep,
}

impl AttemptOutcome {
    /// The name stored in `attempts.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Accepted => "accepted",
            AttemptOutcome::Deferred => "deferred",
            AttemptOutcome::BouncedHard => "bounced_hard",
            AttemptOutcome::BouncedSoft => "bounced_soft",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Unknown => "unknown",
            AttemptOutcome::Suppressed => "suppressed",
            AttemptOutcome::Throttled => "throttled",
            AttemptOutcome::Aborted => "aborted",
            AttemptOutcome::OutOfStep => "out_of_step",
        }
    }

    /// The outcome of a charged attempt that left the recipient in `state` (`None` for states
    /// no attempt ends in).
    pub fn charged(state: DeliveryState) -> Option<AttemptOutcome> {
        Some(match state {
            DeliveryState::Accepted => AttemptOutcome::Accepted,
            DeliveryState::Deferred => AttemptOutcome::Deferred,
            DeliveryState::BouncedHard => AttemptOutcome::BouncedHard,
            DeliveryState::BouncedSoft => AttemptOutcome::BouncedSoft,
            DeliveryState::Failed => AttemptOutcome::Failed,
            DeliveryState::Unknown => AttemptOutcome::Unknown,
            DeliveryState::Suppressed => AttemptOutcome::Suppressed,
            _ => return None,
        })
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a `send` run ended (`runs.outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    Finished,
    Interrupted,
    Aborted,
    Paused,
    Limit,
    DailyCap,
    Throttled,
    /// Nothing was due: no connection was made.
    NothingDue,
    /// The user answered no at the confirmation prompt.
    Cancelled,
    /// Left open by a process that died; closed by the next send's recovery.
    Crashed,
    /// The send window was closed (`[schedule]`).
    Window,
}

impl RunOutcome {
    /// The name stored in `runs.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Finished => "finished",
            RunOutcome::Interrupted => "interrupted",
            RunOutcome::Aborted => "aborted",
            RunOutcome::Paused => "paused",
            RunOutcome::Limit => "limit",
            RunOutcome::DailyCap => "daily_cap",
            RunOutcome::Throttled => "throttled",
            RunOutcome::NothingDue => "nothing_due",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Crashed => "crashed",
            RunOutcome::Window => "window",
        }
    }
}

/// The one current state of a recipient in the ledger.
///
/// `Accepted` means accepted *by the relay* (a 250 after DATA), never "delivered": the relay may
/// still bounce the message later, which moves it to `BouncedHard`/`BouncedSoft`/`Complained`.
/// `Delivered` is only ever set by a success DSN (RFC 3464 `Action: delivered`) that the
/// receiving side sent back: the one case where mailroom knows the message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Imported, never tried.
    Pending,
    /// Claimed by a worker; durably recorded before the SMTP transaction starts.
    Sending,
    /// The relay answered 250 after DATA.
    Accepted,
    /// A success DSN came back: the receiving system confirmed delivery to the mailbox.
    Delivered,
    /// A 4xx reply; to be retried at `retry_at`.
    Deferred,
    /// A permanent failure about the address (5.1.1 and friends), at send time or by a later DSN.
    BouncedHard,
    /// A permanent failure not about the address (mailbox full, policy), or a DSN saying so.
    BouncedSoft,
    /// The recipient reported the message as spam (ARF).
    Complained,
    /// On the suppression list; never sent.
    Suppressed,
    /// Deferred too often or for too long; given up.
    Failed,
    /// The outcome cannot be known (connection lost after the final "." or a crash mid-send).
    Unknown,
}

impl DeliveryState {
    /// Every state, in report order.
    pub const ALL: [DeliveryState; 11] = [
        DeliveryState::Pending,
        DeliveryState::Sending,
        DeliveryState::Accepted,
        DeliveryState::Delivered,
        DeliveryState::Deferred,
        DeliveryState::BouncedHard,
        DeliveryState::BouncedSoft,
        DeliveryState::Complained,
        DeliveryState::Suppressed,
        DeliveryState::Failed,
        DeliveryState::Unknown,
    ];

    /// The name stored in the ledger and printed in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Accepted => "accepted",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Deferred => "deferred",
            DeliveryState::BouncedHard => "bounced_hard",
            DeliveryState::BouncedSoft => "bounced_soft",
            DeliveryState::Complained => "complained",
            DeliveryState::Suppressed => "suppressed",
            DeliveryState::Failed => "failed",
            DeliveryState::Unknown => "unknown",
        }
    }

    /// True when no further send will be attempted without an explicit opt-in.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryState::Pending | DeliveryState::Sending | DeliveryState::Deferred
        )
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger held a state name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery state `{0}`")]
pub struct UnknownState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// What a piece of later feedback (a DSN, an ARF report, an auto-reply) says about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FeedbackKind {
    /// Permanent, about the address: stop mailing it.
    Hard,
    /// Permanent or temporary, not about the address.
    Soft,
    /// The recipient reported the message as abuse (RFC 5965).
    Complaint,
    /// A vacation notice or other automatic reply (RFC 3834): never a bounce.
    AutoReply,
    /// A success DSN.
    Delivered,
}

impl FeedbackKind {
    /// The name used in the ledger, JSON output and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Hard => "hard",
            FeedbackKind::Soft => "soft",
            FeedbackKind::Complaint => "complaint",
            FeedbackKind::AutoReply => "auto_reply",
            FeedbackKind::Delivered => "delivered",
        }
    }
}

impl fmt::Display for FeedbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reason names, as stored in the ledger and printed (`as_str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    AuthFailure,
    BadReputation,
    Blocked,
    ContentError,
    ExceedLimit,
    Expired,
    Filtered,
    HasMoved,
    HostUnknown,
    MailboxFull,
    MailerError,
    MesgTooBig,
    NetworkError,
    NoRelaying,
    NotAccept,
    NotCompliantRfc,
    PolicyViolation,
    Rejected,
    RequirePtr,
    SecurityError,
    SpamDetected,
    Speeding,
    Suspend,
    SyntaxError,
    SystemError,
    SystemFull,
    TooManyConn,
    UserUnknown,
    VirusDetected,
    /// Not a bounce: an ARF complaint.
    Feedback,
    /// Not a bounce: an RFC 3834 automatic reply.
    Vacation,
    /// Not a bounce: a success DSN.
    Delivered,
    /// A failure whose text says nothing classifiable.
    Undefined,
}

impl Reason {
    /// sisimai's name for the reason, stored in the ledger's `events.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthFailure => "authfailure",
            Reason::BadReputation => "badreputation",
            Reason::Blocked => "blocked",
            Reason::ContentError => "contenterror",
            Reason::ExceedLimit => "exceedlimit",
            Reason::Expired => "expired",
            Reason::Filtered => "filtered",
            Reason::HasMoved => "hasmoved",
            Reason::HostUnknown => "hostunknown",
            Reason::MailboxFull => "mailboxfull",
            Reason::MailerError => "mailererror",
            Reason::MesgTooBig => "mesgtoobig",
            Reason::NetworkError => "networkerror",
            Reason::NoRelaying => "norelaying",
            Reason::NotAccept => "notaccept",
            Reason::NotCompliantRfc => "notcompliantrfc",
            Reason::PolicyViolation => "policyviolation",
            Reason::Rejected => "rejected",
            Reason::RequirePtr => "requireptr",
            Reason::SecurityError => "securityerror",
            Reason::SpamDetected => "spamdetected",
            Reason::Speeding => "speeding",
            Reason::Suspend => "suspend",
            Reason::SyntaxError => "syntaxerror",
            Reason::SystemError => "systemerror",
            Reason::SystemFull => "systemfull",
            Reason::TooManyConn => "toomanyconn",
            Reason::UserUnknown => "userunknown",
            Reason::VirusDetected => "virusdetected",
            Reason::Feedback => "feedback",
            Reason::Vacation => "vacation",
            Reason::Delivered => "delivered",
            Reason::Undefined => "undefined",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a failure is permanent: an RFC 3463 status class `5` or an RFC 5321 reply code 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanence {
    Permanent,
    Temporary,
}

impl Permanence {
    /// From the evidence a bounce carries: the enhanced status class decides, else the reply
    /// code's class. A failure report that states neither is taken as permanent: the MTA gave
    /// up on the message, which is what a permanent failure means to the sender.
    pub fn of(status: Option<&str>, reply_code: Option<u16>) -> Permanence {
        match (status.and_then(|s| s.bytes().next()), reply_code) {
            (Some(b'4'), _) => Permanence::Temporary,
            (Some(b'5'), _) => Permanence::Permanent,
            (_, Some(400..=499)) => Permanence::Temporary,
            _ => Permanence::Permanent,
        }
    }
}

/// The hard/soft policy, sisimai's: a bounce is **hard** when the address itself is bad
/// (`userunknown`, `hostunknown`, `hasmoved`), or when the host refuses all mail for good
/// (`notaccept` with a permanent code). Every other bounce is **soft**, whatever its code: a full
/// mailbox, a block, a policy or spam refusal, an expired delay. Complaints, auto-replies and
/// success notices keep their own kinds.
///
/// Used for DSNs (`bounce`) and for 5xx replies at send time (`transport::classify`); a hard
/// bounce is what adds an address to the suppression list.
pub fn bounce_kind(reason: Reason, permanence: Permanence) -> FeedbackKind {
    match reason {
        Reason::Feedback => FeedbackKind::Complaint,
        Reason::Vacation => FeedbackKind::AutoReply,
        Reason::Delivered => FeedbackKind::Delivered,
        Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved => FeedbackKind::Hard,
        Reason::NotAccept if permanence == Permanence::Permanent => FeedbackKind::Hard,
        _ => FeedbackKind::Soft,
    }
}

/// The reason an RFC 3463 status code names about the recipient's address, for the codes whose
/// meaning is unambiguous (RFC 3463 §3.2, RFC 7505, RFC 7293): `X.1.1` and `X.1.3` (no such
/// mailbox, or not a valid one), `X.1.2` (no such domain), `X.1.6`, `X.7.17` and `X.7.18` (the
/// mailbox or domain changed hands or moved), `X.1.10` (null MX). `None` for every other code.
pub fn addressing_reason(status: &str) -> Option<Reason> {
    let (_, detail) = status.split_once('.')?;
    Some(match detail {
        "1.1" | "1.3" => Reason::UserUnknown,
        "1.2" => Reason::HostUnknown,
        "1.6" | "7.17" | "7.18" => Reason::HasMoved,
        "1.10" => Reason::NotAccept,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shards_parse_and_partition() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!((s.index, s.count), (1, 3));
        assert_eq!(s.to_string(), "1/3");
        for bad in ["3/3", "0/0", "1", "a/3", "-1/3", "1/"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every bucket lands in exactly one shard of three.
        for bucket in 0..1000u64 {
            let owners = (0..3)
                .filter(|&k| Shard { index: k, count: 3 }.contains(bucket))
                .count();
            assert_eq!(owners, 1);
        }
    }

    #[test]
    fn every_charged_state_has_its_own_attempt_outcome_name() {
        for state in DeliveryState::ALL {
            if let Some(outcome) = AttemptOutcome::charged(state) {
                assert_eq!(outcome.as_str(), state.as_str());
            }
        }
        assert_eq!(AttemptOutcome::charged(DeliveryState::Pending), None);
    }

    #[test]
    fn delivery_state_names_round_trip() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(state));
        }
        // `delivered` became a state with success DSNs (issue 14); a name from nowhere is not.
        assert!("relay_accepted".parse::<DeliveryState>().is_err());
    }

    #[test]
    fn only_pending_sending_and_deferred_are_open() {
        let open: Vec<_> = DeliveryState::ALL
            .into_iter()
            .filter(|s| !s.is_final())
            .collect();
        assert_eq!(
            open,
            [
                DeliveryState::Pending,
                DeliveryState::Sending,
                DeliveryState::Deferred
            ]
        );
    }

    #[test]
    fn dsn_notify_keywords() {
        assert_eq!(DsnNotify::DEFAULT.keyword(), "FAILURE,DELAY");
        assert_eq!(DsnNotify::NEVER.keyword(), "NEVER");
        let all = DsnNotify {
            success: true,
            failure: true,
            delay: true,
        };
        assert_eq!(all.keyword(), "SUCCESS,FAILURE,DELAY");
    }

    #[test]
    fn hard_or_soft_follows_one_table() {
        use Permanence::{Permanent, Temporary};
        let table = [
            (Reason::UserUnknown, Permanent, FeedbackKind::Hard),
            (Reason::UserUnknown, Temporary, FeedbackKind::Hard),
            (Reason::HostUnknown, Permanent, FeedbackKind::Hard),
            (Reason::HasMoved, Permanent, FeedbackKind::Hard),
            (Reason::NotAccept, Permanent, FeedbackKind::Hard),
            (Reason::NotAccept, Temporary, FeedbackKind::Soft),
            // A full mailbox is soft even when the server says 5xx: the owner can empty it.
            (Reason::MailboxFull, Permanent, FeedbackKind::Soft),
            (Reason::Blocked, Permanent, FeedbackKind::Soft),
            (Reason::Filtered, Permanent, FeedbackKind::Soft),
            (Reason::Suspend, Permanent, FeedbackKind::Soft),
            (Reason::Expired, Temporary, FeedbackKind::Soft),
            (Reason::SystemFull, Permanent, FeedbackKind::Soft),
            (Reason::Undefined, Permanent, FeedbackKind::Soft),
            (Reason::Feedback, Permanent, FeedbackKind::Complaint),
            (Reason::Vacation, Permanent, FeedbackKind::AutoReply),
            (Reason::Delivered, Permanent, FeedbackKind::Delivered),
        ];
        for (reason, permanence, kind) in table {
            assert_eq!(
                bounce_kind(reason, permanence),
                kind,
                "{reason} {permanence:?}"
            );
        }
    }

    #[test]
    fn permanence_reads_the_status_class_before_the_reply_code() {
        assert_eq!(
            Permanence::of(Some("4.2.2"), Some(552)),
            Permanence::Temporary
        );
        assert_eq!(
            Permanence::of(Some("5.1.1"), Some(450)),
            Permanence::Permanent
        );
        assert_eq!(Permanence::of(None, Some(452)), Permanence::Temporary);
        assert_eq!(Permanence::of(None, Some(550)), Permanence::Permanent);
        assert_eq!(Permanence::of(None, None), Permanence::Permanent);
    }

    #[test]
    fn addressing_codes_name_their_reason() {
        let table = [
            ("5.1.1", Some(Reason::UserUnknown)),
            ("5.1.3", Some(Reason::UserUnknown)),
            ("5.1.2", Some(Reason::HostUnknown)),
            ("5.1.6", Some(Reason::HasMoved)),
            ("5.7.17", Some(Reason::HasMoved)),
            ("5.1.10", Some(Reason::NotAccept)),
            ("4.1.1", Some(Reason::UserUnknown)),
            ("5.1.0", None),
            ("5.1.7", None),
            ("5.2.2", None),
            ("5.7.1", None),
            ("garbage", None),
        ];
        for (status, reason) in table {
            assert_eq!(addressing_reason(status), reason, "{status}");
        }
    }
}
