//! Deliverability end to end over real TCP against the sandbox: the DSN extension (what mailroom
//! sends when the relay offers DSN, and what it does with the reports that come back: success
//! DSNs confirm delivery, ENVID/ORCPT match first), and the circuit breaker (`[guard]`) pausing
//! a run whose list bounces or draws complaints, while a clean list runs to the end.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::relay::{BY_LOCAL_PART, Relay};
use common::{numbered, options, people, plain, recipient, run_once, states};
use mailroom::bounce::import::{self, MailboxMessage, Matcher};
use mailroom::bounce::mailbox;
use mailroom::model::DsnNotify;
use mailroom::pipeline::guard::Limit;
use mailroom::pipeline::{End, GuardOptions, Options, Stop};
use mailroom::provider::Provider;
use mailroom::sandbox::report::{self as sandbox_report, Envelope};
use mailroom::shutdown::Shutdown;

const DSN_RELAY: &str = "[session]\ndsn = true\n";

fn notify_all() -> Options {
    Options {
        notify: DsnNotify {
            success: true,
            failure: true,
            delay: true,
        },
        ..options(2)
    }
}

/// Imports every message of the relay's bounce Maildir into campaign `spring`.
fn import_bounces(relay: &Relay, ledger: &Path) -> import::Summary {
    let messages: Vec<MailboxMessage> = mailbox::maildir(&relay.dir.path().join("bounces"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    import_messages(ledger, messages)
}

fn import_messages(ledger: &Path, messages: Vec<MailboxMessage>) -> import::Summary {
    let mut l = mailroom::store::open(ledger).unwrap();
    let matcher = Matcher::new(&l, "spring", None).unwrap();
    import::import(&mut l, &matcher, messages).unwrap()
}

fn token_of(ledger: &Path, email: &str) -> String {
    rusqlite::Connection::open(ledger)
        .unwrap()
        .query_row(
            "SELECT token FROM recipients WHERE email = ?1",
            [email],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_offers_dsn_gets_ret_envid_notify_and_orcpt() {
    let relay = Relay::plain(DSN_RELAY).await;
    let l = relay.ledger();
    let who = common::contacts(&["ann", "bob+news"]);
    run_once(
        &l,
        "spring",
        who,
        relay.plain_settings(),
        options(1),
        plain(),
        Shutdown::new(),
    )
    .await;
    let seen = relay.seen();
    assert_eq!(seen.stored.len(), 2);
    for stored in &seen.stored {
        let email = &stored.rcpts[0];
        assert_eq!(
            stored.ret.as_deref(),
            Some("HDRS"),
            "headers only, never the newsletter"
        );
        assert_eq!(stored.envid.as_deref(), Some(token_of(&l, email).as_str()));
        assert_eq!(stored.rcpt_dsn[0].notify.as_deref(), Some("FAILURE,DELAY"));
        let orcpt = stored.rcpt_dsn[0].orcpt.as_deref().unwrap();
        assert_eq!(orcpt, format!("rfc822;{}", email.replace('+', "+2B")));
    }
    // Nothing asked for a success report: nothing but the messages.
    assert_eq!(
        mailbox::maildir_files(&relay.dir.path().join("bounces")).map_or(0, |f| f.len()),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_dsn_gets_no_dsn_parameters() {
    let relay = Relay::plain("").await;
    let l = relay.ledger();
    run_once(
        &l,
        "spring",
        common::contacts(&["ann"]),
        relay.plain_settings(),
        notify_all(),
        plain(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(relay.seen().stored.len(), 1);
    assert_eq!(relay.commands("MAIL", "RET="), 0);
    assert_eq!(relay.commands("RCPT", "NOTIFY="), 0);
    assert_eq!(relay.commands("MAIL", "ENVID="), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_dsns_confirm_delivery_of_exactly_those_recipients() {
    let script = format!("{DSN_RELAY}[[rule]]\nrecipient = \"gone*@*\"\naction = \"bounce\"\n");
    let relay = Relay::plain(&script).await;
    let l = relay.ledger();
    let mut locals = numbered("reader", 6);
    locals.extend(numbered("gone", 2));
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        notify_all(),
        plain(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.accepted, 8, "the relay took every message");
    let imported = import_bounces(&relay, &l);
    assert_eq!(imported.by_kind.get("delivered"), Some(&6), "{imported:?}");
    assert_eq!(imported.by_kind.get("hard"), Some(&2), "{imported:?}");
    let s = states(&l);
    assert_eq!(s.get("delivered"), Some(&6), "{s:?}");
    assert_eq!(s.get("bounced_hard"), Some(&2), "{s:?}");
    assert_eq!(s.get("accepted"), None, "{s:?}");
    for i in 0..6 {
        assert_eq!(
            recipient(&l, &format!("reader{i}@example.test")).0,
            "delivered"
        );
    }

    // The report: delivered counted, accepted fell, relay_accepted unchanged, states sum up.
    let report = mailroom::report::load(&l, Some("spring")).unwrap();
    let t = report.totals;
    assert_eq!((t.delivered, t.accepted, t.relay_accepted), (6, 0, 8));
    let funnel = t.funnel();
    assert_eq!(
        (funnel.delivered, funnel.bounced_later, funnel.no_news),
        (6, 2, 0)
    );
    let sum: u64 = mailroom::model::DeliveryState::ALL
        .iter()
        .map(|s| t.get(*s))
        .sum();
    assert_eq!(sum, t.recipients);
    let mut json = Vec::new();
    mailroom::report::write_json(&report, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["totals"]["delivered"], 6);
    assert_eq!(json["totals"]["accepted"], 0);
    assert_eq!(json["totals"]["relay_accepted"], 8);

    // A second import records nothing new.
    let again = import_bounces(&relay, &l);
    assert_eq!((again.matched, again.duplicates), (0, 8));
}

/// The same people on two lists, one bounce mailbox: the reports of one campaign's sends carry
/// its ENVIDs, so imported into the other campaign they match nobody, even though every address
/// is on both lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_naming_another_campaigns_sends_are_not_matched_by_address() {
    let relay = Relay::plain(DSN_RELAY).await;
    let l = relay.ledger();
    let locals = numbered("reader", 3);
    for campaign in ["summer", "spring"] {
        let options = if campaign == "summer" {
            options(1)
        } else {
            notify_all()
        };
        // Tokens are unique in a ledger, as the loader makes them.
        let who = people(&locals)
            .into_iter()
            .map(|mut r| {
                r.token = format!("{campaign}{}", r.token);
                r
            })
            .collect();
        let (summary, _) = run_once(
            &l,
            campaign,
            who,
            relay.plain_settings(),
            options,
            plain(),
            Shutdown::new(),
        )
        .await;
        assert_eq!(summary.accepted, 3, "{campaign}: {summary:?}");
    }
    let messages: Vec<MailboxMessage> = mailbox::maildir(&relay.dir.path().join("bounces"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(messages.len(), 3, "one success report per spring send");
    let mut ledger = mailroom::store::open(&l).unwrap();
    let summer = Matcher::new(&ledger, "summer", None).unwrap();
    let into_summer = import::import(&mut ledger, &summer, messages.clone()).unwrap();
    assert_eq!((into_summer.matched, into_summer.unmatched), (0, 3));
    let spring = Matcher::new(&ledger, "spring", None).unwrap();
    let into_spring = import::import(&mut ledger, &spring, messages).unwrap();
    assert_eq!(into_spring.by_kind.get("delivered"), Some(&3));
    drop(ledger);
    let summer = mailroom::report::load(&l, Some("summer")).unwrap().totals;
    assert_eq!((summer.delivered, summer.accepted), (0, 3));
}

/// A success report about an address the ledger does not know (the message was forwarded to an
/// alias), with no VERP address and no headers of ours: the ENVID alone names the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_id_names_the_recipient_when_nothing_else_does() {
    let relay = Relay::plain(DSN_RELAY).await;
    let l = relay.ledger();
    run_once(
        &l,
        "spring",
        common::contacts(&["ann", "bob", "cid"]),
        relay.plain_settings(),
        options(1),
        plain(),
        Shutdown::new(),
    )
    .await;
    let report = |rcpt: &str, envid: Option<&str>, orcpt: Option<&str>, kind: &str| {
        let original = sandbox_report::Original {
            mail_from: "bounces@sender.test",
            rcpt_to: rcpt,
            message: b"From: someone@else.test\r\nSubject: forwarded\r\n\r\n",
            reporting_host: "mx.alias.test",
            arrival_date: "Sat, 28 Nov 2026 10:00:00 +0000",
            unique: kind,
            source_ip: "192.0.2.1",
        };
        let envelope = Envelope { envid, orcpt };
        let raw = match kind {
            "delivered" => sandbox_report::delivered(&original, envelope),
            _ => sandbox_report::failed(
                &original,
                "5.2.1",
                "smtp; 550 5.2.1 mailbox disabled",
                envelope,
            ),
        };
        MailboxMessage {
            source: format!("test:{kind}"),
            raw,
        }
    };
    let ann = token_of(&l, "ann@example.test");
    let summary = import_messages(
        &l,
        vec![
            // ENVID only.
            report("ann.alias@forward.test", Some(&ann), None, "delivered"),
            // ORCPT only (the address as mailroom sent it, xtext).
            report(
                "b@forward.test",
                None,
                Some("rfc822;bob@example.test"),
                "delivered",
            ),
            // Neither: the address is not in the campaign, nothing is guessed.
            report("cid.alias@forward.test", None, None, "delivered"),
        ],
    );
    assert_eq!((summary.matched, summary.unmatched), (2, 1), "{summary:?}");
    assert_eq!(recipient(&l, "ann@example.test").0, "delivered");
    assert_eq!(recipient(&l, "bob@example.test").0, "delivered");
    assert_eq!(recipient(&l, "cid@example.test").0, "accepted");
    // A failure that comes after the confirmation still counts.
    import_messages(
        &l,
        vec![report("ann.alias@forward.test", Some(&ann), None, "failed")],
    );
    assert_eq!(recipient(&l, "ann@example.test").0, "bounced_soft");
}

#[test]
fn relayed_and_delayed_reports_are_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("l.db");
    let mut ledger = mailroom::store::open(&l).unwrap();
    let c = ledger.ensure_campaign("spring").unwrap();
    ledger
        .import(c, common::contacts(&["ann"]).into_iter().map(Ok::<_, ()>))
        .unwrap();
    drop(ledger);
    rusqlite::Connection::open(&l)
        .unwrap()
        .execute(
            "UPDATE recipients SET state = 'accepted', relay_accepted = 1",
            [],
        )
        .unwrap();
    let ann = token_of(&l, "ann@example.test");
    let dsn = |action: &str, status: &str| MailboxMessage {
        source: format!("test:{action}"),
        raw: format!(
            "From: MAILER-DAEMON@mx.test\r\nTo: bounces@sender.test\r\nSubject: report\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; \
             boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nReport.\r\n--b\r\n\
             Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.test\r\n\
             Original-Envelope-Id: {ann}\r\n\r\nFinal-Recipient: rfc822; ann@example.test\r\n\
             Action: {action}\r\nStatus: {status}\r\n\r\n--b--\r\n"
        )
        .into_bytes(),
    };
    let summary = import_messages(
        &l,
        vec![
            dsn("relayed", "2.0.0"),
            dsn("expanded", "2.0.0"),
            dsn("delayed", "4.4.7"),
        ],
    );
    assert_eq!(summary.by_kind.get("relayed"), Some(&2), "{summary:?}");
    assert_eq!(summary.by_kind.get("delayed"), Some(&1), "{summary:?}");
    assert_eq!(summary.state_changes, 0);
    assert_eq!(recipient(&l, "ann@example.test").0, "accepted");
    let report = mailroom::report::load(&l, Some("spring")).unwrap();
    assert!(
        report.reasons.iter().all(|r| r.outcome != "relayed"),
        "a relay notice is no reason: {:?}",
        report.reasons
    );
}

// ---- The circuit breaker ----

/// `n` local parts where every fifth is an unknown user (20%).
fn one_in_five_unknown(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % 5 == 4 {
                format!("unknown{i}")
            } else {
                format!("reader{i}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_with_twenty_percent_unknown_users_pauses_after_the_minimum_sample() {
    let relay = Relay::plain(BY_LOCAL_PART).await;
    let l = relay.ledger();
    // One connection: the sample that trips is the 200th transaction, and nothing after it goes
    // out.
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&one_in_five_unknown(1000)),
        relay.plain_settings(),
        options(1),
        plain(),
        Shutdown::new(),
    )
    .await;
    let End::Paused(Stop::Guard(trip)) = &summary.end else {
        panic!("{:?}", summary.end);
    };
    assert_eq!(trip.limit, Limit::HardBounce);
    assert_eq!(trip.provider, None);
    assert_eq!((trip.count, trip.of), (40, 200));
    assert_eq!(summary.transactions, 200);
    assert_eq!(summary.accepted + summary.bounced_hard, 200);
    let s = states(&l);
    assert_eq!(s.get("pending"), Some(&800), "the rest is untouched: {s:?}");
    assert_eq!(s.get("sending"), None, "claims given back: {s:?}");
    assert_eq!(relay.seen().stored.len(), 160);
    assert_eq!(common::last_run_outcome(&l), "paused");
    let text = Stop::Guard(trip.clone()).to_string();
    assert!(text.contains("hard-bounce guard tripped"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_connections_the_breaker_stops_the_run_early_too() {
    let relay = Relay::plain(BY_LOCAL_PART).await;
    let l = relay.ledger();
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&one_in_five_unknown(1000)),
        relay.plain_settings(),
        options(4),
        plain(),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Paused(Stop::Guard(t)) if t.limit == Limit::HardBounce),
        "{:?}",
        summary.end
    );
    // At most what is already in flight finishes after it: on each connection a message and,
    // with PIPELINING, the envelope opened behind it, whose refusal at RCPT is an outcome too.
    assert!(
        (200..=208).contains(&summary.transactions),
        "{}",
        summary.transactions
    );
    assert!(states(&l).get("pending").copied().unwrap_or(0) >= 792);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_list_never_trips_the_breaker() {
    let relay = Relay::plain(BY_LOCAL_PART).await;
    let l = relay.ledger();
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&numbered("reader", 1000)),
        relay.plain_settings(),
        options(4),
        plain(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_can_be_turned_off() {
    let relay = Relay::plain(BY_LOCAL_PART).await;
    let l = relay.ledger();
    let mut opts = options(4);
    opts.guard = GuardOptions {
        enabled: false,
        ..GuardOptions::default()
    };
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&one_in_five_unknown(400)),
        relay.plain_settings(),
        opts,
        plain(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.bounced_hard, 80);
}

/// Complaints imported from ARF reports feed the complaint guard: the next run of the campaign
/// pauses before it claims anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_complaints_pause_the_next_run_before_it_sends() {
    let script = "[[rule]]\nrecipient = \"grumpy*@*\"\naction = \"complain\"\n";
    let relay = Relay::plain(script).await;
    let l = relay.ledger();
    let mut locals = numbered("reader", 18);
    locals.extend(numbered("grumpy", 2));
    let guard = GuardOptions {
        min_sample: 10,
        window: 100,
        ..GuardOptions::default()
    };
    let mut opts = options(2);
    opts.guard = guard.clone();
    let (first, _) = run_once(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        opts,
        plain(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(first.end, End::Finished);
    let imported = import_bounces(&relay, &l);
    assert_eq!(imported.by_kind.get("complaint"), Some(&2));

    // 2 complaints of 20 accepted: 10%, far above 0.3%.
    locals.extend(numbered("later", 5));
    let mut opts = options(2);
    opts.guard = guard;
    let before = relay.seen().sessions;
    let (second, _) = run_once(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        opts,
        plain(),
        Shutdown::new(),
    )
    .await;
    let End::Paused(Stop::Guard(trip)) = &second.end else {
        panic!("{:?}", second.end);
    };
    assert_eq!(trip.limit, Limit::Complaint);
    assert_eq!((trip.count, trip.of), (2, 20));
    assert_eq!(second.transactions, 0);
    assert_eq!(relay.seen().sessions, before, "not even a connection");
    assert_eq!(states(&l).get("pending"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_whose_recipients_bounce_trips_its_own_guard() {
    // Outlook.com recipients bounce 20%, the rest of the list is clean: overall 4% stays under
    // the limit, Microsoft's window does not.
    let script = "[[rule]]\nrecipient = \"gone*@outlook.com\"\naction = \"reject\"\nreply = \"550 5.1.1 Requested action not taken: mailbox unavailable\"\n";
    let relay = Relay::plain(script).await;
    let l = relay.ledger();
    let mut locals = Vec::new();
    for i in 0..2000 {
        let at = if i % 5 == 0 {
            "outlook.com"
        } else {
            "example.test"
        };
        let local = if i % 25 == 0 { "gone" } else { "reader" };
        locals.push(format!("{local}{i}@{at}"));
    }
    let (summary, _) = run_once(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        options(1),
        plain(),
        Shutdown::new(),
    )
    .await;
    let End::Paused(Stop::Guard(trip)) = &summary.end else {
        panic!("{:?}", summary.end);
    };
    assert_eq!(trip.provider, Some(Provider::Microsoft));
    assert_eq!(trip.limit, Limit::HardBounce);
    assert_eq!(
        (trip.count, trip.of),
        (40, 200),
        "Microsoft's own minimum sample"
    );
    // The 200th Outlook.com recipient is the 996th of the list: the rest never goes out.
    assert_eq!(summary.transactions, 996);
    assert_eq!(states(&l).get("pending"), Some(&1004));
}

/// `mailroom send` end to end: the breaker's pause exits 1 and says which guard tripped, the
/// figures and what to do; `[guard] enabled = false` in campaign.toml sends everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pauses_with_the_guards_message_and_campaign_toml_can_turn_it_off() {
    let relay = Relay::plain(BY_LOCAL_PART).await;
    let emails: Vec<String> = one_in_five_unknown(300)
        .into_iter()
        .map(|local| format!("{local}@example.test"))
        .collect();
    let root = common::write_campaign(
        relay.dir.path(),
        "guarded",
        "news@sender.test",
        &relay.smtp_table("connections = 1"),
        &emails,
    );
    let out = tokio::task::spawn_blocking({
        let root = root.clone();
        move || common::spawn_send(&root).wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("Paused: the hard-bounce guard tripped: 20.00% (40 of 200)"),
        "{stdout}"
    );
    assert!(stdout.contains("mailroom suppress import"), "{stdout}");
    assert!(stdout.contains("100 recipients are untouched"), "{stdout}");

    let toml = root.join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[guard]\nenabled = false\n")).unwrap();
    let out =
        tokio::task::spawn_blocking(move || common::spawn_send(&root).wait_with_output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("guard tripped"), "{stdout}");
    assert_eq!(relay.seen().stored.len(), 240, "every reader accepted once");
}
