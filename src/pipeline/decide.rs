//! What the end of one SMTP transaction means, as a pure function: for the recipient (charge a
//! state, charge a temporary failure, or give the claim back uncharged), for this job (done,
//! retry on a fresh connection, leave for a later pass) and for the run (go on, slow down,
//! pause, abort). The worker carries the decision out; this module does no I/O and keeps no
//! state, so every row of the table is a unit test.
//!
//! It must not read replies itself: a reply's meaning comes from `transport::classify` (through
//! `Reply::verdict`); this module decides what to do about it.

use super::Stop;
use super::guard::Sample;
use crate::diagnose;
use crate::model::{AttemptOutcome, DeliveryState};
use crate::provider::Provider;
use crate::transport::{Reply, Step, TxOutcome, Verdict};

/// Times one message is retried in the same run after a "slow down" or a stale connection
/// before it is left for a later pass or run.
pub const RETRIES_IN_RUN: u32 = 3;
/// "Slow down" replies in a row, across the run, after which it pauses: a relay that answers
/// 421 at RCPT or after the final "." to everything would otherwise have every message sent
/// again and again while the back-off grows to its cap.
pub const THROTTLES_IN_A_ROW: u32 = 5;

/// Transactions in a row lost before their message (no usable reply at MAIL, RCPT or DATA:
/// nothing of the message was sent) after which the run pauses. Fewer are charged to their
/// recipient as a temporary failure, each after its retries: a relay that drops one address
/// must not stop a campaign, but one that answers nobody must not defer a whole list.
pub const LOSSES_IN_A_ROW: u32 = 5;

/// What to do with the recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// The transaction ended: the recipient moves to this state.
    Record(DeliveryState),
    /// A temporary failure: deferred with a back-off, or failed once retries are used up (the
    /// retry schedule decides).
    Temporary,
    /// Not the recipient's fault: the claim goes back uncharged. `Some` keeps the reply as an
    /// attempt with that outcome, as evidence.
    GiveBack(Option<AttemptOutcome>),
}

/// What happens to the job after this transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing more for this message in this run.
    Done,
    /// Send it again (after the run-wide pause, on a fresh connection if this one is gone).
    Retry,
    /// Given back too often: leave it for a later pass or run (`End::Throttled`).
    LeaveForLater,
}

/// What the run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForRun {
    Continue,
    /// The relay took the message: the run-wide slow-down eases.
    Succeeded,
    /// Stop claiming, finish what is in flight, exit 1; nobody is charged.
    Pause(Stop),
    /// As `Pause`, for a problem that a re-run alone will not fix.
    Abort(Stop),
}

/// The whole decision about one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub charge: Charge,
    pub next: Next,
    pub run: ForRun,
    /// Slow the whole run down (the relay asked for it).
    pub slow_down: bool,
    /// Said before the reply text in the recorded attempt.
    pub note: Option<&'static str>,
    /// The relay, not the recipient, failed (with several relays: it counts towards the
    /// relay's cool-off, and the message goes to another relay).
    pub relay_fault: bool,
}

impl Decision {
    fn new(charge: Charge) -> Decision {
        Decision {
            charge,
            next: Next::Done,
            run: ForRun::Continue,
            slow_down: false,
            note: None,
            relay_fault: false,
        }
    }

    fn retry_or(mut self, retries: u32, give_up: impl FnOnce(&mut Decision)) -> Decision {
        if retries + 1 >= RETRIES_IN_RUN {
            give_up(&mut self);
        } else {
            self.next = Next::Retry;
        }
        self
    }
}

/// The facts a decision depends on besides the outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// Times this message was already tried again in this run.
    pub retries: u32,
    /// The relay accepted a message in this run (a "relay access denied" then means something
    /// changed, not a wrong configuration).
    pub accepted_any: bool,
    /// "Slow down" replies in a row across the run, this one included when it is one.
    pub throttles_in_a_row: u32,
    /// Several relays (`[[relay]]`): a relay that asks to slow down or refuses the sender for
    /// now is a relay fault (it cools off after a few), not a reason to slow or pause the run.
    pub failover: bool,
    /// Transactions lost before their message in a row across the run, this one included when
    /// it is one.
    pub losses_in_a_row: u32,
}

/// Decides what a transaction's outcome means.
pub fn decide(outcome: &TxOutcome, cx: Context) -> Decision {
    match outcome {
        // The final "." went out and no reply came back: the relay may have the message.
        TxOutcome::Lost(reply) if reply.step == Step::Message => {
            Decision::new(Charge::Record(DeliveryState::Unknown))
        }
        // A reused connection the server had already closed: nothing of this message was sent,
        // so reconnect and try again uncharged.
        TxOutcome::Lost(reply) if is_stale_session(reply, cx.retries) => Decision {
            next: Next::Retry,
            ..Decision::new(Charge::GiveBack(None))
        },
        // Lost before the message again and again, across recipients: the relay is not
        // answering, which says nothing about them; give it back and pause.
        TxOutcome::Lost(reply)
            if reply.step != Step::Message && cx.losses_in_a_row >= LOSSES_IN_A_ROW =>
        {
            Decision {
                run: ForRun::Pause(Stop::NoReply(reply.clone())),
                note: Some("no usable reply before the message, run paused: "),
                ..Decision::new(Charge::GiveBack(Some(AttemptOutcome::Aborted)))
            }
        }
        TxOutcome::Lost(_) => Decision::new(Charge::Temporary),
        // The body went out and the reply read is not the answer to it: the relay may well have
        // accepted the message, so it must not be sent again without opt-in.
        TxOutcome::OutOfStep(reply) if reply.step == Step::Message => Decision {
            note: Some("reply out of step after the message: "),
            ..Decision::new(Charge::Record(DeliveryState::Unknown))
        },
        // Nothing of the message was sent (the body only follows a 354): give the claim back
        // with the evidence and try a fresh connection; a relay out of step every time pauses.
        TxOutcome::OutOfStep(reply) => Decision {
            note: Some("reply out of step, connection dropped before the message: "),
            ..Decision::new(Charge::GiveBack(Some(AttemptOutcome::OutOfStep)))
        }
        .retry_or(cx.retries, |d| {
            d.run = ForRun::Pause(Stop::OutOfStep(reply.clone()))
        }),
        TxOutcome::Replied(reply) => replied(reply, cx),
    }
}

/// Whether a transaction lost with `reply` is taken for a reused connection the server had
/// already closed (lost at MAIL, not by a deadline), retried uncharged while `retries` allow:
/// it says nothing about the relay answering, so it does not count towards
/// [`LOSSES_IN_A_ROW`] either.
pub fn is_stale_session(reply: &Reply, retries: u32) -> bool {
    reply.step == Step::Mail && !reply.timed_out && retries < RETRIES_IN_RUN
}

/// What a charge counts as for the circuit breaker: charged outcomes only (a claim given back
/// uncharged, or an `unknown` outcome, says nothing about the list).
pub fn guard_sample(charge: &Charge) -> Option<Sample> {
    match charge {
        Charge::Record(DeliveryState::Accepted) => Some(Sample::Accepted),
        Charge::Record(DeliveryState::BouncedHard) => Some(Sample::Hard),
        Charge::Record(DeliveryState::BouncedSoft) => Some(Sample::Soft),
        Charge::Temporary => Some(Sample::Deferred),
        Charge::Record(_) | Charge::GiveBack(_) => None,
    }
}

/// The diagnosis (`crate::diagnose`) of a reply that was not an acceptance, for the attempt's
/// record; `provider` gives the recipient's (asked only for a refusal or deferral).
pub fn diagnosis(reply: &Reply, provider: impl FnOnce() -> Provider) -> Option<&'static str> {
    let code = reply.code?;
    if (200..300).contains(&code) {
        return None;
    }
    let provider = provider();
    diagnose::diagnose(&diagnose::Evidence {
        provider: Some(provider).filter(|p| *p != Provider::Unknown),
        code: Some(code),
        status: reply.enhanced.as_deref(),
        text: &reply.text,
    })
    .map(|d| d.key)
}

fn replied(reply: &Reply, cx: Context) -> Decision {
    let give_back = |outcome| Decision::new(Charge::GiveBack(Some(outcome)));
    let verdict = reply.verdict().unwrap_or(Verdict::Deferred);
    let relay_fault =
        verdict == Verdict::Throttle || (verdict == Verdict::Deferred && reply.step == Step::Mail);
    if cx.failover && relay_fault {
        // Another relay may take it: uncharged, retried there; the pool cools this relay off
        // after a few in a row, and the run pauses only when every relay is cooling off.
        return Decision {
            relay_fault: true,
            ..give_back(AttemptOutcome::Throttled)
        }
        .retry_or(cx.retries, |d| d.next = Next::LeaveForLater);
    }
    if cx.failover && verdict == Verdict::RelayDenied {
        // This relay will not relay for us (its configuration, not the recipient's address):
        // with other relays that is this relay's fault, like a failed AUTH, not the run's end.
        return Decision {
            relay_fault: true,
            ..give_back(AttemptOutcome::Aborted)
        }
        .retry_or(cx.retries, |d| d.next = Next::LeaveForLater);
    }
    match verdict {
        Verdict::Accepted => Decision {
            run: ForRun::Succeeded,
            ..Decision::new(Charge::Record(DeliveryState::Accepted))
        },
        // A temporary refusal of MAIL FROM (451 local problem, 452 insufficient storage) is
        // about the sender or the relay, not this recipient: uncharged, slower, and a pause if
        // it persists.
        Verdict::Deferred if reply.step == Step::Mail => Decision {
            slow_down: true,
            ..give_back(AttemptOutcome::Throttled)
        }
        .retry_or(cx.retries, |d| {
            d.run = ForRun::Pause(Stop::Sender(reply.clone()))
        }),
        Verdict::Deferred => Decision::new(Charge::Temporary),
        Verdict::BouncedHard => Decision::new(Charge::Record(DeliveryState::BouncedHard)),
        Verdict::BouncedSoft => Decision::new(Charge::Record(DeliveryState::BouncedSoft)),
        Verdict::Throttle => {
            let mut d = Decision {
                slow_down: true,
                ..give_back(AttemptOutcome::Throttled)
            };
            if cx.throttles_in_a_row >= THROTTLES_IN_A_ROW {
                d.run = ForRun::Pause(Stop::Busy(reply.clone()));
                d
            } else {
                d.retry_or(cx.retries, |d| d.next = Next::LeaveForLater)
            }
        }
        Verdict::Pause => Decision {
            run: ForRun::Pause(Stop::Sender(reply.clone())),
            ..give_back(AttemptOutcome::Aborted)
        },
        // Relaying worked earlier in this run: something changed at the relay; pause.
        Verdict::RelayDenied if cx.accepted_any => Decision {
            run: ForRun::Pause(Stop::Refused(reply.clone())),
            ..give_back(AttemptOutcome::Aborted)
        },
        Verdict::Abort | Verdict::RelayDenied => Decision {
            run: ForRun::Abort(Stop::Refused(reply.clone())),
            ..give_back(AttemptOutcome::Aborted)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::classify::enhanced_code;

    fn reply(step: Step, code: u16, text: &str) -> Reply {
        Reply {
            step,
            code: Some(code),
            enhanced: enhanced_code(code, text),
            text: text.to_owned(),
            timed_out: false,
        }
    }

    fn lost(step: Step, timed_out: bool) -> Reply {
        Reply {
            step,
            code: None,
            enhanced: None,
            text: "connection closed by the server".into(),
            timed_out,
        }
    }

    const FIRST: Context = Context {
        retries: 0,
        accepted_any: false,
        throttles_in_a_row: 0,
        failover: false,
        losses_in_a_row: 0,
    };
    const LAST_TRY: Context = Context {
        retries: RETRIES_IN_RUN - 1,
        accepted_any: false,
        throttles_in_a_row: 0,
        failover: false,
        losses_in_a_row: 0,
    };

    #[test]
    fn charges_and_what_the_breaker_counts() {
        use DeliveryState as S;
        let table = [
            (Charge::Record(S::Accepted), Some(Sample::Accepted)),
            (Charge::Record(S::BouncedHard), Some(Sample::Hard)),
            (Charge::Record(S::BouncedSoft), Some(Sample::Soft)),
            (Charge::Temporary, Some(Sample::Deferred)),
            (Charge::Record(S::Unknown), None),
            (Charge::Record(S::Failed), None),
            (Charge::GiveBack(Some(AttemptOutcome::Throttled)), None),
            (Charge::GiveBack(None), None),
        ];
        for (charge, sample) in table {
            assert_eq!(guard_sample(&charge), sample, "{charge:?}");
        }
    }

    #[test]
    fn refusals_are_diagnosed_with_the_recipients_provider_and_acceptances_never() {
        let gmail_rate = reply(
            Step::Rcpt,
            421,
            "4.7.0 Try again later, closing connection.",
        );
        assert_eq!(
            diagnosis(&gmail_rate, || Provider::Google),
            Some("gmail-4.7.0")
        );
        assert_eq!(diagnosis(&gmail_rate, || Provider::Unknown), None);
        let outlook = reply(
            Step::Message,
            550,
            "5.7.515 Access denied, sending domain example.com doesn't meet the required authentication level.",
        );
        assert_eq!(
            diagnosis(&outlook, || Provider::Microsoft),
            Some("microsoft-5.7.515")
        );
        assert_eq!(
            diagnosis(&reply(Step::Message, 250, "2.0.0 ok"), || -> Provider {
                unreachable!("no provider is asked for an acceptance")
            }),
            None
        );
        assert_eq!(
            diagnosis(&lost(Step::Message, true), || Provider::Google),
            None
        );
    }

    /// (outcome, context) → (charge, next, run kind, slow down)
    #[test]
    fn the_decision_table() {
        use Charge::{GiveBack, Record, Temporary};
        use DeliveryState as S;
        let ok = reply(Step::Message, 250, "2.0.0 queued as X");
        let busy_rcpt = reply(Step::Rcpt, 421, "4.7.0 too many messages, slow down");
        let busy_message = reply(Step::Message, 421, "4.3.2 service not available, closing");
        let mail_451 = reply(Step::Mail, 451, "4.3.0 local problem");
        let rcpt_451 = reply(Step::Rcpt, 451, "4.3.0 try again later");
        let rcpt_550 = reply(Step::Rcpt, 550, "5.1.1 user unknown");
        let full = reply(Step::Message, 552, "5.2.2 mailbox full");
        let quota = reply(Step::Mail, 550, "5.7.1 daily sending quota exceeded");
        let denied = reply(Step::Rcpt, 554, "5.7.1 Relay access denied");
        let auth_needed = reply(Step::Mail, 530, "5.7.0 Authentication required");
        let stray_data = reply(Step::Data, 250, "2.1.5 Ok");
        let stray_message = reply(Step::Message, 354, "go ahead");
        let throttled_often = Context {
            throttles_in_a_row: THROTTLES_IN_A_ROW,
            ..FIRST
        };
        let after_success = Context {
            accepted_any: true,
            ..FIRST
        };
        type Row = (TxOutcome, Context, Charge, Next, &'static str, bool);
        let cases: Vec<Row> = vec![
            // accepted, bounced, deferred
            (
                TxOutcome::Replied(ok),
                FIRST,
                Record(S::Accepted),
                Next::Done,
                "succeeded",
                false,
            ),
            (
                TxOutcome::Replied(rcpt_550),
                FIRST,
                Record(S::BouncedHard),
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Replied(full),
                FIRST,
                Record(S::BouncedSoft),
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Replied(rcpt_451),
                FIRST,
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            // slow down: retried uncharged, left for later when the message used its retries,
            // and the run pauses when the relay says it to everything
            (
                TxOutcome::Replied(busy_rcpt.clone()),
                FIRST,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::Retry,
                "continue",
                true,
            ),
            (
                TxOutcome::Replied(busy_rcpt),
                LAST_TRY,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::LeaveForLater,
                "continue",
                true,
            ),
            (
                TxOutcome::Replied(busy_message.clone()),
                FIRST,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::Retry,
                "continue",
                true,
            ),
            (
                TxOutcome::Replied(busy_message),
                throttled_often,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::Done,
                "pause busy",
                true,
            ),
            // the sender refused for now: uncharged, and a pause when it persists
            (
                TxOutcome::Replied(mail_451.clone()),
                FIRST,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::Retry,
                "continue",
                true,
            ),
            (
                TxOutcome::Replied(mail_451),
                LAST_TRY,
                GiveBack(Some(AttemptOutcome::Throttled)),
                Next::Done,
                "pause sender",
                true,
            ),
            (
                TxOutcome::Replied(quota),
                FIRST,
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "pause sender",
                false,
            ),
            // the relay refuses us
            (
                TxOutcome::Replied(denied.clone()),
                FIRST,
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "abort refused",
                false,
            ),
            (
                TxOutcome::Replied(denied),
                after_success,
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "pause refused",
                false,
            ),
            (
                TxOutcome::Replied(auth_needed),
                FIRST,
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "abort refused",
                false,
            ),
            // no reply
            (
                TxOutcome::Lost(lost(Step::Message, false)),
                FIRST,
                Record(S::Unknown),
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Message, true)),
                FIRST,
                Record(S::Unknown),
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Mail, false)),
                FIRST,
                GiveBack(None),
                Next::Retry,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Mail, false)),
                Context {
                    retries: RETRIES_IN_RUN,
                    ..FIRST
                },
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Mail, true)),
                FIRST,
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Rcpt, false)),
                FIRST,
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Data, true)),
                FIRST,
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            // lost before the message transaction after transaction: the relay is not
            // answering; given back and the run paused, however far the message got
            (
                TxOutcome::Lost(lost(Step::Mail, false)),
                Context {
                    retries: RETRIES_IN_RUN,
                    losses_in_a_row: LOSSES_IN_A_ROW,
                    ..FIRST
                },
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "pause no reply",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Rcpt, true)),
                Context {
                    losses_in_a_row: LOSSES_IN_A_ROW + 4,
                    ..FIRST
                },
                GiveBack(Some(AttemptOutcome::Aborted)),
                Next::Done,
                "pause no reply",
                false,
            ),
            (
                TxOutcome::Lost(lost(Step::Data, false)),
                Context {
                    losses_in_a_row: LOSSES_IN_A_ROW - 1,
                    ..FIRST
                },
                Temporary,
                Next::Done,
                "continue",
                false,
            ),
            // after the final ".": the relay may have it, whatever came before
            (
                TxOutcome::Lost(lost(Step::Message, true)),
                Context {
                    losses_in_a_row: LOSSES_IN_A_ROW,
                    ..FIRST
                },
                Record(S::Unknown),
                Next::Done,
                "continue",
                false,
            ),
            // replies out of step with the commands
            (
                TxOutcome::OutOfStep(stray_data.clone()),
                FIRST,
                GiveBack(Some(AttemptOutcome::OutOfStep)),
                Next::Retry,
                "continue",
                false,
            ),
            (
                TxOutcome::OutOfStep(stray_data),
                LAST_TRY,
                GiveBack(Some(AttemptOutcome::OutOfStep)),
                Next::Done,
                "pause out of step",
                false,
            ),
            (
                TxOutcome::OutOfStep(stray_message),
                FIRST,
                Record(S::Unknown),
                Next::Done,
                "continue",
                false,
            ),
        ];
        for (i, (outcome, cx, charge, next, run, slow)) in cases.into_iter().enumerate() {
            let d = decide(&outcome, cx);
            let kind = match &d.run {
                ForRun::Continue => "continue",
                ForRun::Succeeded => "succeeded",
                ForRun::Pause(Stop::Busy(_)) => "pause busy",
                ForRun::Pause(Stop::Sender(_)) => "pause sender",
                ForRun::Pause(Stop::Refused(_)) => "pause refused",
                ForRun::Pause(Stop::OutOfStep(_)) => "pause out of step",
                ForRun::Pause(Stop::NoReply(_)) => "pause no reply",
                ForRun::Abort(Stop::Refused(_)) => "abort refused",
                other => panic!("row {i}: unexpected {other:?}"),
            };
            assert_eq!(
                (&d.charge, d.next, kind, d.slow_down),
                (&charge, next, run, slow),
                "row {i}: {outcome:?} with {cx:?}"
            );
        }
    }

    /// One reply that each row of the classification table matches (it may be caught by an
    /// earlier row: the test holds for whatever verdict the table gives).
    fn examples() -> Vec<(Step, u16, String)> {
        use crate::transport::classify::{RULES, Steps};
        RULES
            .iter()
            .map(|rule| {
                let step = match rule.steps {
                    Steps::One(step) => step,
                    Steps::Session => Step::Greeting,
                    Steps::Any | Steps::Recipient => Step::Rcpt,
                };
                let code: String = rule
                    .code
                    .chars()
                    .enumerate()
                    .map(|(i, c)| match (i, c) {
                        (0, 'x') => '5',
                        (_, 'x') => '0',
                        (_, c) => c,
                    })
                    .collect();
                let code: u16 = code.parse().unwrap_or(550);
                let enhanced = match rule.enhanced {
                    Some(e) if e.ends_with('.') => format!("{e}0 "),
                    Some(e) => format!("{e} "),
                    None => String::new(),
                };
                let words = rule.keywords.first().copied().unwrap_or("no reason given");
                (step, code, format!("{enhanced}{words}"))
            })
            .collect()
    }

    #[test]
    fn every_row_of_the_reply_table_gets_a_decision_that_charges_only_what_it_should() {
        // Whatever the classifier says, an acceptance is recorded as one, a bounce charges the
        // recipient, a temporary failure after MAIL defers it, and everything about the relay or
        // the sender gives the claim back.
        let examples = examples();
        assert!(examples.len() > 20, "the table is that large");
        for (step, code, text) in examples {
            let r = reply(step, code, &text);
            let d = decide(&TxOutcome::Replied(r.clone()), FIRST);
            match r.verdict() {
                Some(Verdict::Accepted) => {
                    assert_eq!(d.charge, Charge::Record(DeliveryState::Accepted), "{r:?}");
                }
                Some(Verdict::BouncedHard | Verdict::BouncedSoft) => {
                    assert!(matches!(d.charge, Charge::Record(_)), "{r:?}: {d:?}");
                }
                Some(Verdict::Deferred) if step != Step::Mail => {
                    assert_eq!(d.charge, Charge::Temporary, "{r:?}");
                }
                _ => assert!(matches!(d.charge, Charge::GiveBack(_)), "{r:?}: {d:?}"),
            }
        }
    }

    #[test]
    fn with_several_relays_slow_down_is_the_relays_fault_and_never_pauses_the_run() {
        let busy = reply(Step::Rcpt, 421, "4.7.0 too many messages, slow down");
        let mail_451 = reply(Step::Mail, 451, "4.3.0 local problem");
        let rcpt_451 = reply(Step::Rcpt, 451, "4.3.0 try again later");
        let several = Context {
            failover: true,
            throttles_in_a_row: THROTTLES_IN_A_ROW + 3,
            ..FIRST
        };
        for r in [&busy, &mail_451] {
            let d = decide(&TxOutcome::Replied(r.clone()), several);
            assert_eq!(d.charge, Charge::GiveBack(Some(AttemptOutcome::Throttled)));
            assert_eq!((d.next, d.run.clone()), (Next::Retry, ForRun::Continue));
            assert!(d.relay_fault && !d.slow_down, "{r:?}");
            let last = decide(
                &TxOutcome::Replied(r.clone()),
                Context {
                    retries: RETRIES_IN_RUN - 1,
                    ..several
                },
            );
            assert_eq!(last.next, Next::LeaveForLater);
        }
        // A relay that will not relay for us is that relay's fault too (alone it ends the run).
        let denied = reply(Step::Rcpt, 550, "5.7.1 Relaying denied");
        let d = decide(&TxOutcome::Replied(denied.clone()), several);
        assert_eq!(d.charge, Charge::GiveBack(Some(AttemptOutcome::Aborted)));
        assert_eq!((d.next, d.run.clone()), (Next::Retry, ForRun::Continue));
        assert!(d.relay_fault, "{d:?}");
        let alone = decide(&TxOutcome::Replied(denied), FIRST);
        assert!(
            matches!(alone.run, ForRun::Abort(Stop::Refused(_))),
            "{alone:?}"
        );
        assert!(!alone.relay_fault);
        // The recipient's own deferral is still the recipient's.
        let d = decide(&TxOutcome::Replied(rcpt_451), several);
        assert_eq!(d.charge, Charge::Temporary);
        assert!(!d.relay_fault);
        // One relay: the run-wide rules as before.
        let one = decide(
            &TxOutcome::Replied(busy),
            Context {
                throttles_in_a_row: THROTTLES_IN_A_ROW,
                ..FIRST
            },
        );
        assert!(matches!(one.run, ForRun::Pause(Stop::Busy(_))));
        assert!(!one.relay_fault);
    }
}
