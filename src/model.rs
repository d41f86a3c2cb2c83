//! Shared vocabulary: ledger ids, the states a recipient moves through, what an attempt and a
//! run ended with, how a connection is secured, and the kinds of feedback a message can earn.
//! Data only: no I/O, no dependency on any other module of the crate.
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
    /// A recipient's row id in the ledger (one per campaign and address).
    RecipientId
);

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
        }
    }
}

/// The one current state of a recipient in the ledger.
///
/// `Accepted` means accepted *by the relay* (a 250 after DATA), never "delivered": the relay may
/// still bounce the message later, which moves it to `BouncedHard`/`BouncedSoft`/`Complained`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Imported, never tried.
    Pending,
    /// Claimed by a worker; durably recorded before the SMTP transaction starts.
    Sending,
    /// The relay answered 250 after DATA.
    Accepted,
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
    pub const ALL: [DeliveryState; 10] = [
        DeliveryState::Pending,
        DeliveryState::Sending,
        DeliveryState::Accepted,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!("delivered".parse::<DeliveryState>().is_err());
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
}
