//! The recipient state machine: one pure function saying which state a recipient moves to when
//! something happens to it. Every state change the ledger makes (claims, outcomes, given-back
//! claims, suppression at claim time, imported feedback) asks it first, so the rules exist once.
//!
//! It must not touch SQL: the ledger's statements apply what it decides.

use crate::model::DeliveryState;

/// Something that happens to a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The dispatcher takes a due row for one transaction.
    Claim,
    /// The address is on the suppression list when the dispatcher looks at it.
    Suppress,
    /// The claimed transaction ended with this outcome (charged to the recipient).
    Outcome(DeliveryState),
    /// The claim is given back, uncharged: the row returns to the state it was claimed from.
    GiveBack(DeliveryState),
    /// Feedback that arrived later (DSN, ARF).
    Feedback(Feedback),
}

/// Feedback that may change a state (delays, auto-replies and `relayed`/`expanded` notices
/// never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// A success DSN (`Action: delivered`): the receiving side confirms delivery.
    Delivered,
    /// A permanent failure about the address.
    Hard,
    /// A failure not about the address, after the relay had accepted the message.
    Soft,
    /// A spam complaint.
    Complaint,
}

/// The state after `event`, or `None` when the event does not apply to a recipient in
/// `current` (then nothing changes).
pub fn next(current: DeliveryState, event: Event) -> Option<DeliveryState> {
    use DeliveryState as S;
    match event {
        // What is due: never tried, due for a retry, or (only on the user's opt-in, which the
        // dispatcher's query decides) unknown.
        Event::Claim => {
            matches!(current, S::Pending | S::Deferred | S::Unknown).then_some(S::Sending)
        }
        Event::Suppress => {
            matches!(current, S::Pending | S::Deferred | S::Unknown).then_some(S::Suppressed)
        }
        Event::Outcome(outcome) => (current == S::Sending
            && matches!(
                outcome,
                S::Accepted
                    | S::Deferred
                    | S::BouncedHard
                    | S::BouncedSoft
                    | S::Failed
                    | S::Unknown
            ))
        .then_some(outcome),
        Event::GiveBack(from) => (current == S::Sending
            && matches!(from, S::Pending | S::Deferred | S::Unknown))
        .then_some(from),
        // Only a message the relay took (or may have taken: `unknown`) can be confirmed; a
        // confirmation never undoes a bounce or a complaint that is already known.
        Event::Feedback(Feedback::Delivered) => {
            matches!(current, S::Accepted | S::Unknown).then_some(S::Delivered)
        }
        Event::Feedback(feedback) => {
            let (to, keep): (S, &[S]) = match feedback {
                Feedback::Delivered => return None,
                // A complaint outranks everything: the person asked not to be mailed.
                Feedback::Complaint => (S::Complained, &[S::Complained]),
                Feedback::Hard => (S::BouncedHard, &[S::BouncedHard, S::Complained]),
                // A soft failure never overrides a verdict that is final for the address.
                Feedback::Soft => (
                    S::BouncedSoft,
                    &[S::BouncedHard, S::BouncedSoft, S::Complained, S::Suppressed],
                ),
            };
            (!keep.contains(&current)).then_some(to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryState as S;

    #[test]
    fn the_state_table() {
        let cases: &[(S, Event, Option<S>)] = &[
            // Claims: only what can be due.
            (S::Pending, Event::Claim, Some(S::Sending)),
            (S::Deferred, Event::Claim, Some(S::Sending)),
            (S::Unknown, Event::Claim, Some(S::Sending)),
            (S::Accepted, Event::Claim, None),
            (S::Sending, Event::Claim, None),
            (S::Suppressed, Event::Claim, None),
            (S::BouncedHard, Event::Claim, None),
            (S::Failed, Event::Claim, None),
            (S::Pending, Event::Suppress, Some(S::Suppressed)),
            (S::Accepted, Event::Suppress, None),
            // Outcomes end a claim, and nothing else.
            (S::Sending, Event::Outcome(S::Accepted), Some(S::Accepted)),
            (S::Sending, Event::Outcome(S::Deferred), Some(S::Deferred)),
            (
                S::Sending,
                Event::Outcome(S::BouncedHard),
                Some(S::BouncedHard),
            ),
            (S::Sending, Event::Outcome(S::Unknown), Some(S::Unknown)),
            (S::Sending, Event::Outcome(S::Failed), Some(S::Failed)),
            (S::Sending, Event::Outcome(S::Pending), None),
            (S::Sending, Event::Outcome(S::Complained), None),
            (S::Pending, Event::Outcome(S::Accepted), None),
            (S::Unknown, Event::Outcome(S::Accepted), None),
            // Giving a claim back restores where it came from.
            (S::Sending, Event::GiveBack(S::Pending), Some(S::Pending)),
            (S::Sending, Event::GiveBack(S::Deferred), Some(S::Deferred)),
            (S::Sending, Event::GiveBack(S::Accepted), None),
            (S::Pending, Event::GiveBack(S::Pending), None),
            // Feedback.
            (
                S::Accepted,
                Event::Feedback(Feedback::Hard),
                Some(S::BouncedHard),
            ),
            (
                S::Unknown,
                Event::Feedback(Feedback::Hard),
                Some(S::BouncedHard),
            ),
            (
                S::BouncedSoft,
                Event::Feedback(Feedback::Hard),
                Some(S::BouncedHard),
            ),
            (S::BouncedHard, Event::Feedback(Feedback::Hard), None),
            (S::Complained, Event::Feedback(Feedback::Hard), None),
            (
                S::Accepted,
                Event::Feedback(Feedback::Soft),
                Some(S::BouncedSoft),
            ),
            (S::BouncedHard, Event::Feedback(Feedback::Soft), None),
            (S::Suppressed, Event::Feedback(Feedback::Soft), None),
            (S::BouncedSoft, Event::Feedback(Feedback::Soft), None),
            (
                S::Accepted,
                Event::Feedback(Feedback::Complaint),
                Some(S::Complained),
            ),
            (
                S::BouncedHard,
                Event::Feedback(Feedback::Complaint),
                Some(S::Complained),
            ),
            (
                S::Suppressed,
                Event::Feedback(Feedback::Complaint),
                Some(S::Complained),
            ),
            (S::Complained, Event::Feedback(Feedback::Complaint), None),
            // Success DSNs confirm what the relay accepted (or may have: unknown), nothing else;
            // a later failure DSN or complaint still moves a delivered recipient.
            (
                S::Accepted,
                Event::Feedback(Feedback::Delivered),
                Some(S::Delivered),
            ),
            (
                S::Unknown,
                Event::Feedback(Feedback::Delivered),
                Some(S::Delivered),
            ),
            (S::Delivered, Event::Feedback(Feedback::Delivered), None),
            (S::BouncedHard, Event::Feedback(Feedback::Delivered), None),
            (S::BouncedSoft, Event::Feedback(Feedback::Delivered), None),
            (S::Complained, Event::Feedback(Feedback::Delivered), None),
            (S::Suppressed, Event::Feedback(Feedback::Delivered), None),
            (S::Pending, Event::Feedback(Feedback::Delivered), None),
            (S::Deferred, Event::Feedback(Feedback::Delivered), None),
            (S::Sending, Event::Feedback(Feedback::Delivered), None),
            (
                S::Delivered,
                Event::Feedback(Feedback::Hard),
                Some(S::BouncedHard),
            ),
            (
                S::Delivered,
                Event::Feedback(Feedback::Soft),
                Some(S::BouncedSoft),
            ),
            (
                S::Delivered,
                Event::Feedback(Feedback::Complaint),
                Some(S::Complained),
            ),
            // Nothing claims, suppresses or charges a delivered recipient.
            (S::Delivered, Event::Claim, None),
            (S::Delivered, Event::Suppress, None),
            (S::Sending, Event::Outcome(S::Delivered), None),
            (S::Sending, Event::GiveBack(S::Delivered), None),
        ];
        for (current, event, want) in cases {
            assert_eq!(next(*current, *event), *want, "{current} + {event:?}");
        }
    }

    #[test]
    fn every_state_reached_is_a_known_state_and_sending_only_by_claim() {
        let events = [
            Event::Claim,
            Event::Suppress,
            Event::Feedback(Feedback::Hard),
            Event::Feedback(Feedback::Soft),
            Event::Feedback(Feedback::Complaint),
            Event::Feedback(Feedback::Delivered),
        ]
        .into_iter()
        .chain(S::ALL.map(Event::Outcome))
        .chain(S::ALL.map(Event::GiveBack));
        for event in events {
            for current in S::ALL {
                if next(current, event) == Some(S::Sending) {
                    assert_eq!(event, Event::Claim, "{current} + {event:?}");
                }
            }
        }
    }
}
