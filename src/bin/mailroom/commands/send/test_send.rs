//! `mailroom send CAMPAIGN --test ADDR[,ADDR...] [--line N | --to EMAIL]`: the real message of
//! one contact row (the first valid one by default), sent to each test address through the
//! campaign's relay, with `[test] subject_prefix` before its subject. No confirmation: the
//! campaign's recipients are never touched. Each copy is recorded in the ledger's test sends
//! (`store::TestSend`), apart from the campaign: no state, rate, cap or report total changes.
//!
//! Exit codes: 0 every copy accepted by the relay, 1 some were not, 2 error (the relay refused
//! TLS, its certificate or the credentials: nothing was sent).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use mailroom::campaign::{Campaign, Contact, ContactEntry, Copy, normalize_address};
use mailroom::pipeline::Outgoing;
use mailroom::pipeline::copies::{self, CopyMessage};
use mailroom::pipeline::setup;
use mailroom::store::{self, TestKind, TestSend};
use mailroom::transport::Transport;

use super::Args;

pub fn run(campaign: &Arc<Campaign>, args: &Args) -> anyhow::Result<ExitCode> {
    let mut to = Vec::new();
    for raw in &args.test {
        let a = normalize_address(raw)
            .map_err(|reason| anyhow::anyhow!("--test {raw:?} is not a valid address: {reason}"))?;
        if !to.contains(&a) {
            to.push(a);
        }
    }
    let contact = select(campaign, args.line, args.to.as_deref())?;
    // `[smtp]`, or every `[[relay]]` in order: a relay that cannot be used hands over to the next.
    let relays = setup::relays(campaign)?;
    let settings: Vec<_> = if relays.is_empty() {
        vec![setup::settings(campaign)?]
    } else {
        relays.into_iter().map(|r| r.settings).collect()
    };
    let prefix = campaign.config().test.subject_prefix.clone();
    let stamp = mailroom::clock::now_ms();
    let mut messages = Vec::with_capacity(to.len());
    for (i, address) in to.iter().enumerate() {
        let id = format!("test{stamp}x{i}");
        let copy = Copy {
            to: address,
            subject_prefix: &prefix,
            id: &id,
        };
        let r = campaign
            .render_copy(&contact, &copy, SystemTime::now())
            .with_context(|| format!("cannot build the message of line {}", contact.line))?;
        messages.push(CopyMessage {
            outgoing: Outgoing {
                envelope_from: r.envelope_from,
                envelope_to: r.envelope_to,
                message_id: r.message_id,
                bytes: r.bytes,
            },
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let results = runtime.block_on(async {
        let mut transports = Vec::with_capacity(settings.len());
        for s in settings {
            transports.push(Transport::new(s).await?);
        }
        let transports: Vec<&Transport> = transports.iter().map(AsRef::as_ref).collect();
        anyhow::Ok(copies::send_copies(&transports, &messages).await)
    })?;
    let results = match results {
        Ok(r) => r,
        Err(stop) => bail!(
            "test send stopped: {stop}\n\nNothing was sent. Fix the [smtp] or [[relay]] settings \
             in {} (or the relay) and try again; a test send refuses what a real send refuses.",
            campaign.config_path().display()
        ),
    };
    let ledger_path = &campaign.config().store.path;
    let ledger = store::Ledger::open(ledger_path)?;
    let campaign_id = ledger.ensure_campaign(campaign.name())?;
    let mut all_accepted = true;
    for r in &results {
        ledger.record_test_send(&TestSend {
            campaign: campaign_id,
            run: None,
            kind: TestKind::Test,
            at: mailroom::clock::now_ms(),
            address: r.to.clone(),
            source_line: Some(contact.line),
            source_email: Some(contact.email.clone()),
            message_id: r.message_id.clone(),
            port: r.port,
            step: r.reply.step.as_str().to_owned(),
            code: r.reply.code,
            enhanced: r.reply.enhanced.clone(),
            reply: Some(r.reply.text.clone()),
            outcome: r.outcome.to_owned(),
        })?;
        all_accepted &= r.outcome == "accepted";
        let what = if r.outcome == "accepted" {
            "accepted by the relay"
        } else {
            r.outcome
        };
        outln!(
            "test send to {}: {what} ({})",
            mailroom::display::one_line(&r.to),
            mailroom::display::one_line(&r.reply.describe())
        );
    }
    outln!(
        "The message of line {} ({}) went to {} test address(es), recorded in {} as test sends; \
         no recipient of the campaign was touched.",
        contact.line,
        mailroom::display::one_line(&contact.email),
        results.len(),
        ledger_path.display()
    );
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The contact row whose message is sent, chosen as `preview` chooses: by `--line`, by `--to`,
/// or the first valid row.
fn select(campaign: &Campaign, line: Option<u64>, to: Option<&str>) -> anyhow::Result<Contact> {
    let want = match to {
        Some(t) => Some(
            normalize_address(t)
                .map_err(|reason| anyhow::anyhow!("--to {t:?} is not a valid address: {reason}"))?,
        ),
        None => None,
    };
    let csv = campaign.config().contacts.path.display().to_string();
    for entry in campaign.contacts()? {
        match entry? {
            ContactEntry::Valid(c)
                if line.is_none_or(|l| l == c.line)
                    && want.as_ref().is_none_or(|w| *w == c.email) =>
            {
                return Ok(c);
            }
            ContactEntry::Invalid {
                line: l, reason, ..
            } if line == Some(l) => {
                bail!("{csv}:{l}: not a valid contact: {reason}");
            }
            ContactEntry::Duplicate {
                line: l,
                first_line,
                ..
            } if line == Some(l) => {
                bail!("{csv}:{l}: duplicates line {first_line}; use --line {first_line}");
            }
            _ => {}
        }
    }
    match (line, to) {
        (Some(l), _) => bail!("{csv}: no contact record starts at line {l}"),
        (None, Some(t)) => bail!("{csv}: no valid contact has the address {t}"),
        (None, None) => {
            bail!("{csv}: the contacts file has no valid contact to take the message from")
        }
    }
}
