//! Shared vocabulary: the states a recipient moves through and the kinds of feedback a message
//! can earn. Data only: no I/O, no dependency on any other module of the crate.
//!
//! The string forms (`as_str` / `FromStr`) are what the ledger stores and what reports print, so
//! they are part of the on-disk format: never rename one.

use std::fmt;
use std::str::FromStr;

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
