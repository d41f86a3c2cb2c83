//! Copies of a campaign's message for people who are not its recipients: test sends (`send
//! --test`) and seeds (`[seeds]`). They go through the same [`Transport`]s as the campaign (so
//! plaintext and untrusted certificates are refused the same way, and the relay sees the same
//! message), one session for the lot; with several `[[relay]]`s, a relay that cannot be reached
//! or used hands the copies to the next, as a run's messages would go to the others. They come
//! back as [`CopyResult`]s for the caller to record
//! with `store::TestSend`. They never touch a recipient, a claim, the rate limiters, the daily
//! cap or the suppression list.
//!
//! It must not render (callers, or the run's [`super::Render`], hand over finished [`Outgoing`]
//! messages) or write the ledger other than through the run's writer.

use std::sync::Arc;

use crate::clock::now_ms;
use crate::store::{DueRow, TestKind, TestSend};
use crate::transport::{Reply, Step, Transport, TxOutcome};

use super::{Outgoing, Shared, Stop};

/// One copy to send.
#[derive(Debug, Clone)]
pub struct CopyMessage {
    pub outgoing: Outgoing,
}

/// What happened to one copy.
#[derive(Debug, Clone)]
pub struct CopyResult {
    pub to: String,
    pub message_id: String,
    pub port: Option<u16>,
    pub reply: Reply,
    /// accepted, deferred, refused, unknown or failed.
    pub outcome: &'static str,
}

/// The outcome name of a transaction's end.
fn outcome(tx: &TxOutcome) -> &'static str {
    match tx {
        TxOutcome::Replied(r) => match r.code {
            Some(200..=299) => "accepted",
            Some(400..=499) => "deferred",
            Some(_) => "refused",
            None => "failed",
        },
        TxOutcome::Lost(r) | TxOutcome::OutOfStep(r) if r.step == Step::Message => "unknown",
        TxOutcome::Lost(_) | TxOutcome::OutOfStep(_) => "failed",
    }
}

/// A session on the first of `transports` (in order, from `from`) that connects, and the index
/// of its transport; else the first relay's refusal, each other failure logged.
async fn connect_any(
    transports: &[&Transport],
    from: usize,
) -> Result<(usize, crate::transport::Session), crate::transport::ConnectFailure> {
    let mut first_failure = None;
    for k in 0..transports.len() {
        let i = (from + k) % transports.len();
        match transports[i].connect().await {
            Ok(session) => return Ok((i, session)),
            Err(e) => {
                if transports.len() > 1 {
                    tracing::warn!("copies: relay {} cannot be used: {e}", i + 1);
                }
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(first_failure
        .unwrap_or(crate::transport::ConnectFailure::Unreachable { tried: Vec::new() }))
}

/// Sends every copy through the first of `transports` that can be used (the campaign's relay,
/// or its `[[relay]]`s in order), reconnecting when a session breaks, to the next relay when
/// one cannot be reached or used.
///
/// # Errors
/// The [`Stop`] of the first relay's connection when no relay can be used at all (TLS refused
/// or untrusted, credentials refused, unreachable): then nothing was sent.
pub async fn send_copies(
    transports: &[&Transport],
    messages: &[CopyMessage],
) -> Result<Vec<CopyResult>, Stop> {
    let (mut current, first) = connect_any(transports, 0).await.map_err(Stop::connect)?;
    let mut session = Some(first);
    let mut results = Vec::with_capacity(messages.len());
    for m in messages {
        let out = &m.outgoing;
        let failed = |reason: String, port: Option<u16>| CopyResult {
            to: out.envelope_to.clone(),
            message_id: out.message_id.clone(),
            port,
            reply: Reply {
                step: Step::Mail,
                code: None,
                enhanced: None,
                text: reason,
                timed_out: false,
            },
            outcome: "failed",
        };
        let addresses = crate::transport::envelope_address(&out.envelope_from).and_then(|from| {
            crate::transport::envelope_address(&out.envelope_to).map(|to| (from, to))
        });
        let (from, to) = match addresses {
            Ok(pair) => pair,
            Err(e) => {
                results.push(failed(e.to_string(), None));
                continue;
            }
        };
        if !session
            .as_ref()
            .is_some_and(crate::transport::Session::is_usable)
        {
            if let Some(old) = session.take() {
                old.quit().await;
            }
            match connect_any(transports, current).await {
                Ok((i, s)) => {
                    current = i;
                    session = Some(s);
                }
                Err(e) => {
                    results.push(failed(e.to_string(), None));
                    continue;
                }
            }
        }
        let Some(live) = session.as_mut() else {
            continue;
        };
        let port = Some(live.port());
        if let Some(limit) = live.extensions().size.flatten()
            && out.bytes.len() as u64 > limit
        {
            results.push(failed(
                format!(
                    "not sent: the message is {} bytes, more than the SIZE the relay advertises \
                     ({limit} bytes)",
                    out.bytes.len()
                ),
                port,
            ));
            continue;
        }
        // No DSN parameters: a report about a copy has no recipient to move.
        let tx = live.send(&from, &to, &out.bytes, None).await;
        results.push(CopyResult {
            to: out.envelope_to.clone(),
            message_id: out.message_id.clone(),
            port,
            outcome: outcome(&tx),
            reply: tx.reply().clone(),
        });
    }
    if let Some(s) = session {
        s.quit().await;
    }
    Ok(results)
}

/// Sends the run's seeds a copy of `row`'s message (`phase`: "start" or "end") and queues each
/// result for the ledger as a seed test send. Best effort: a seed that cannot be reached is
/// recorded as failed; the run goes on either way.
pub(super) async fn seed(shared: Arc<Shared>, row: DueRow, phase: &'static str) {
    if shared.seeds.is_empty() {
        return;
    }
    let mut messages = Vec::with_capacity(shared.seeds.len());
    let mut failed = Vec::new();
    for (i, to) in shared.seeds.iter().enumerate() {
        let id = format!("seed{}{phase}{i}", shared.run_id.0);
        match shared.render.render_copy(&row, to, &id) {
            None => return,
            Some(Ok(outgoing)) => messages.push(CopyMessage { outgoing }),
            Some(Err(reason)) => failed.push((to.clone(), reason)),
        }
    }
    let transports = shared.relays.transports();
    let results = match send_copies(&transports, &messages).await {
        Ok(results) => results,
        Err(stop) => {
            failed.extend(
                messages
                    .iter()
                    .map(|m| (m.outgoing.envelope_to.clone(), stop.to_string())),
            );
            Vec::new()
        }
    };
    let record = |address: String,
                  message_id: String,
                  port: Option<u16>,
                  reply: Option<&Reply>,
                  text: String,
                  outcome: &str| TestSend {
        campaign: shared.campaign_id,
        run: Some(shared.run_id),
        kind: TestKind::Seed,
        at: now_ms(),
        address,
        source_line: Some(row.line),
        source_email: Some(row.email.clone()),
        message_id,
        port,
        step: reply.map_or("connect", |r| r.step.as_str()).to_owned(),
        code: reply.and_then(|r| r.code),
        enhanced: reply.and_then(|r| r.enhanced.clone()),
        reply: Some(format!("{phase} of run: {text}")),
        outcome: outcome.to_owned(),
    };
    for r in results {
        let t = record(
            r.to,
            r.message_id,
            r.port,
            Some(&r.reply),
            r.reply.text.clone(),
            r.outcome,
        );
        let _ = shared.writer.record_test_send(t).await;
    }
    for (to, reason) in failed {
        let t = record(to, String::new(), None, None, reason, "failed");
        let _ = shared.writer.record_test_send(t).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(step: Step, code: Option<u16>) -> Reply {
        Reply {
            step,
            code,
            enhanced: None,
            text: String::new(),
            timed_out: false,
        }
    }

    #[test]
    fn outcomes_follow_the_reply_class() {
        for (tx, want) in [
            (
                TxOutcome::Replied(reply(Step::Message, Some(250))),
                "accepted",
            ),
            (TxOutcome::Replied(reply(Step::Rcpt, Some(451))), "deferred"),
            (TxOutcome::Replied(reply(Step::Rcpt, Some(550))), "refused"),
            (TxOutcome::Lost(reply(Step::Message, None)), "unknown"),
            (TxOutcome::Lost(reply(Step::Rcpt, None)), "failed"),
            (TxOutcome::OutOfStep(reply(Step::Data, Some(250))), "failed"),
        ] {
            assert_eq!(outcome(&tx), want, "{tx:?}");
        }
    }
}
