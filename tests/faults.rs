//! Fault injection: the real sender (pipeline + transport + ledger writer, a real SQLite file)
//! against the sandbox over TCP with STARTTLS and AUTH, one scripted fault per test. Each test
//! asserts the ledger (plain SQL on the file) and what the sandbox stored or saw. Faults that
//! differ only by their script are rows: `refusals!` (the session is refused) and `bob_faults!`
//! (one recipient's reply).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::refusal::{Refusal, refusals};
use common::relay::Relay;
use common::{attempts, contacts, plain, recipient, run_once, state_map, states};
use mailroom::pipeline::{End, Options, RateOptions, RetryOptions, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::transport::{Security, Settings};

/// Two connections, a pace that never binds, short throttle back-offs.
fn options() -> Options {
    Options {
        rate: RateOptions {
            per_second: Some(10_000.0),
            ..RateOptions::default()
        },
        throttle_max: Duration::from_millis(200),
        ..common::options(2)
    }
}

/// Runs the sender once over `emails` (imported on the first run, kept on later ones).
async fn send(relay: &Relay, emails: &[&str], settings: Settings, options: Options) -> Summary {
    let people = contacts(emails);
    let ledger = relay.ledger();
    run_once(
        &ledger,
        "faults",
        people,
        settings,
        options,
        plain(),
        Shutdown::new(),
    )
    .await
    .0
}

/// The relay's STARTTLS settings.
fn tls(relay: &Relay) -> Settings {
    relay.tls_settings(Security::StartTls)
}

/// (reply code, outcome) of each attempt of one recipient.
fn outcomes(path: &Path, email: &str) -> Vec<(Option<i64>, String)> {
    attempts(path, email)
        .into_iter()
        .map(|(_, code, _, outcome)| (code, outcome))
        .collect()
}

const THREE: [&str; 3] = ["ann@example.org", "bob@example.org", "cy@example.net"];

refusals! {
    greeting_421_marks_nothing_and_sends_nothing: Refusal {
        script: "[session]\ngreeting = \"421 4.3.2 service shutting down\"\n",
        tls: true,
        locals: &THREE,
        connections: 2,
        // The run stops (aborted or paused, never "finished") and says why.
        ends: &["aborted", "paused"],
        says: &["421"],
        never: &["MAIL"],
        check: Some(|_, l| {
            let conn = rusqlite::Connection::open(l).unwrap();
            let attempts: i64 = conn
                .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
                .unwrap();
            assert_eq!(attempts, 0);
        }),
        ..Refusal::default()
    };
    auth_failure_535_aborts_the_run_and_marks_nothing: Refusal {
        script: "[session]\nauth = \"fail\"\n",
        tls: true,
        locals: &THREE,
        connections: 2,
        seen: &["AUTH"],
        never: &["MAIL"],
        ..Refusal::default()
    };
    // Credentials are never offered without TLS.
    missing_starttls_is_refused_before_any_auth_or_mail: Refusal {
        script: "[session]\nstarttls = false\n",
        tls: true,
        locals: &THREE,
        connections: 2,
        seen: &["EHLO"],
        never: &["AUTH", "MAIL"],
        ..Refusal::default()
    };
    untrusted_server_certificate_is_refused: Refusal {
        tls: true,
        settings: |s| Settings { ca_file: None, ..s },
        locals: &THREE,
        connections: 2,
        seen: &["STARTTLS"],
        never: &["AUTH", "MAIL"],
        ..Refusal::default()
    };
    tls_handshake_failure_is_refused: Refusal {
        script: "[session]\ntls_handshake = \"abort\"\n",
        tls: true,
        locals: &THREE,
        connections: 2,
        never: &["AUTH"],
        ..Refusal::default()
    };
}

/// A fault scripted for bob@example.org alone: ann and cy are accepted and stored once, bob is
/// stored never and ends as `bob` says.
struct BobFault {
    /// The keys of bob's `[[rule]]` after `recipient`.
    rule: &'static str,
    /// A shorter command timeout than the relay's reply takes.
    command_timeout: Option<Duration>,
    /// The start of bob's "state attempts code enhanced".
    bob: &'static str,
    /// The step of bob's first attempt.
    step: &'static str,
}

async fn bob_fault(case: BobFault) {
    let script = format!("[[rule]]\nrecipient = \"bob@example.org\"\n{}", case.rule);
    let relay = Relay::tls(&script, |c| c).await;
    let mut settings = tls(&relay);
    if let Some(timeout) = case.command_timeout {
        settings.command_timeout = timeout;
    }
    // A relay that never answers must not hang the run either.
    let run = send(&relay, &THREE, settings, options());
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run hung");
    let l = relay.ledger();
    let (state, attempts_made, code, enhanced) = recipient(&l, "bob@example.org");
    let code = code.map_or("-".to_owned(), |c| c.to_string());
    let bob = format!(
        "{state} {attempts_made} {code} {}",
        enhanced.unwrap_or_default()
    );
    assert!(bob.starts_with(case.bob), "bob: {bob}, want {}", case.bob);
    assert_eq!(attempts(&l, "bob@example.org")[0].0, case.step);
    assert_eq!(relay.copies_for("bob@example.org"), 0);
    assert_eq!(
        states(&l),
        state_map(&[("accepted", 2), (state.as_str(), 1)])
    );
    for email in ["ann@example.org", "cy@example.net"] {
        assert_eq!(recipient(&l, email).0, "accepted", "{email}");
        assert_eq!(relay.copies_for(email), 1, "{email}");
    }
    assert_eq!(relay.stored(), 2);
    assert_eq!(summary.accepted, 2, "{summary:?}");
    if state == "deferred" {
        let conn = rusqlite::Connection::open(&l).unwrap();
        let retry_at: Option<i64> = conn
            .query_row(
                "SELECT retry_at FROM recipients WHERE email = 'bob@example.org'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            retry_at.is_some(),
            "a deferred recipient needs a retry time"
        );
        assert_eq!(summary.deferred, 1, "{summary:?}");
    }
}

macro_rules! bob_faults {
    ($($name:ident: $case:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            bob_fault($case).await;
        }
    )*};
}

bob_faults! {
    mailbox_busy_452_is_deferred_with_a_retry_time: BobFault {
        rule: "action = \"reject\"\nreply = \"452 4.2.2 mailbox over quota, try later\"\n",
        command_timeout: None,
        bob: "deferred 1 452 4.2.2",
        step: "rcpt",
    };
    user_unknown_550_5_1_1_is_a_hard_bounce: BobFault {
        rule: "action = \"reject\"\nreply = \"550 5.1.1 user unknown\"\n",
        command_timeout: None,
        bob: "bounced_hard 1 550 5.1.1",
        step: "rcpt",
    };
    mailbox_full_552_5_2_2_after_data_is_a_soft_bounce: BobFault {
        rule: "action = \"reject\"\nreply = \"552 5.2.2 mailbox full\"\nat = \"message\"\n",
        command_timeout: None,
        bob: "bounced_soft 1 552 5.2.2",
        step: "message",
    };
    // The sandbox would answer bob's RCPT after 60 s; the sender gives up after 300 ms.
    slow_server_beyond_the_timeout_is_deferred_and_the_run_ends: BobFault {
        rule: "action = \"accept\"\ndelay_ms = 60000\n",
        command_timeout: Some(Duration::from_millis(300)),
        bob: "deferred",
        step: "rcpt",
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_421_after_a_message_reconnects_and_sends_each_once() {
    // "421 too many messages in this session" at the next MAIL: the sender must reconnect and
    // carry on, with nothing lost and nothing sent twice.
    let relay = Relay::tls("[session]\ndisconnect_after_messages = 1\n", |c| c).await;
    let mut opts = options();
    opts.connections = 1;
    let summary = send(&relay, &THREE, tls(&relay), opts).await;
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(states(&relay.ledger()), state_map(&[("accepted", 3)]));
    for email in THREE {
        assert_eq!(relay.copies_for(email), 1, "{email}");
    }
    let sessions = relay.commands("STARTTLS", "");
    assert!(
        sessions >= 3,
        "one message per session: {sessions} sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_421_at_one_recipient_leaves_it_unsent_and_not_final() {
    let relay = Relay::tls(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"disconnect\"\nreply = \"421 4.4.2 closing, too busy\"\n",
        |c| c,
    )
    .await;
    let mut opts = options();
    opts.connections = 1;
    send(&relay, &THREE, tls(&relay), opts).await;
    let l = relay.ledger();
    // 421 is about the server, not the address: never a bounce, never charged as delivered.
    let (state, _, _, _) = recipient(&l, "bob@example.org");
    assert!(
        matches!(state.as_str(), "pending" | "deferred"),
        "bob is {state}"
    );
    let bob = attempts(&l, "bob@example.org");
    assert!(
        !bob.is_empty() && bob.iter().all(|a| a.1 == Some(421) && a.0 == "rcpt"),
        "{bob:?}"
    );
    assert_eq!(relay.copies_for("bob@example.org"), 0);
    for email in ["ann@example.org", "cy@example.net"] {
        assert_eq!(recipient(&l, email).0, "accepted", "{email}");
        assert_eq!(relay.copies_for(email), 1, "{email}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_after_data_is_unknown_and_not_resent() {
    let relay = Relay::tls(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"drop\"\n",
        |c| c,
    )
    .await;
    let l = relay.ledger();
    let summary = send(&relay, &THREE, tls(&relay), options()).await;
    assert_eq!((summary.accepted, summary.unknown), (2, 1), "{summary:?}");
    let (state, attempts_made, _, _) = recipient(&l, "bob@example.org");
    assert_eq!((state.as_str(), attempts_made), ("unknown", 1));
    assert_eq!(
        relay.copies_for("bob@example.org"),
        0,
        "the sandbox stored nothing for a drop"
    );
    let offered_before = relay.commands("", "bob@example.org");
    // A second run must not send it again (the relay may have it).
    let again = send(&relay, &THREE, tls(&relay), options()).await;
    assert_eq!((again.accepted, again.unknown), (0, 0), "{again:?}");
    assert_eq!(
        offered_before,
        relay.commands("", "bob@example.org"),
        "bob was offered to the relay again"
    );
    assert_eq!(recipient(&l, "bob@example.org").0, "unknown");
    assert_eq!(states(&l), state_map(&[("accepted", 2), ("unknown", 1)]));
}

const GREYLIST: &str =
    "[[rule]]\nrecipient = \"*@grey.example\"\naction = \"greylist\"\nattempts = 1\n";

/// Greylisted (450 4.2.0) once, accepted on the retry: both outcomes on record, each address
/// stored once.
fn assert_greylisted_then_accepted(relay: &Relay) {
    let l = relay.ledger();
    assert_eq!(states(&l), state_map(&[("accepted", 2)]));
    assert_eq!(
        outcomes(&l, "gus@grey.example"),
        [
            (Some(450), "deferred".to_owned()),
            (Some(250), "accepted".to_owned())
        ]
    );
    assert_eq!(relay.copies_for("gus@grey.example"), 1);
    assert_eq!(relay.copies_for("ann@example.org"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_450_then_accepted_on_the_next_run_exactly_once() {
    let relay = Relay::tls(GREYLIST, |c| c).await;
    let emails = ["ann@example.org", "gus@grey.example"];
    let mut opts = options();
    // A zero back-off makes the deferred row due at once, so the second run retries it without
    // waiting on the clock.
    opts.retry = RetryOptions {
        backoff: vec![Duration::ZERO],
        max_attempts: 3,
        max_age: Duration::from_secs(3600),
    };
    let first = send(&relay, &emails, tls(&relay), opts.clone()).await;
    assert_eq!((first.accepted, first.deferred), (1, 1), "{first:?}");
    let (state, _, code, enhanced) = recipient(&relay.ledger(), "gus@grey.example");
    assert_eq!(
        (state.as_str(), code, enhanced.as_deref()),
        ("deferred", Some(450), Some("4.2.0"))
    );
    assert_eq!(relay.copies_for("gus@grey.example"), 0);

    let second = send(&relay, &emails, tls(&relay), opts).await;
    assert_eq!(
        second.accepted, 1,
        "only the deferred recipient is sent again: {second:?}"
    );
    assert_greylisted_then_accepted(&relay);
}

// With `Options::wait` the same run sleeps until the retry time and sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_450_is_retried_within_a_waiting_run() {
    let relay = Relay::tls(GREYLIST, |c| c).await;
    let emails = ["ann@example.org", "gus@grey.example"];
    let mut opts = options();
    opts.wait = true;
    opts.retry = RetryOptions {
        backoff: vec![Duration::from_millis(100)],
        max_attempts: 3,
        max_age: Duration::from_secs(3600),
    };
    let summary = send(&relay, &emails, tls(&relay), opts).await;
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_greylisted_then_accepted(&relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_on_the_ledger_does_not_stop_a_running_send() {
    // `mailroom suppress add` and `bounces import` write the same ledger while a send runs:
    // a busy ledger must make the writer wait and retry, never fail the run.
    let relay = Relay::tls("", |c| c).await;
    let path = relay.ledger();
    drop(mailroom::store::open(&path).unwrap());
    let emails: Vec<String> = (0..2000).map(|i| format!("r{i}@example.org")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut commits = 0u64;
            // Bounded: at most this many transactions, fewer once the send is done.
            for i in 0..200_000u64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .unwrap();
                tx.execute(
                    "INSERT INTO suppressions (email, reason, source, created_at)
                     VALUES (?1, 'manual', 'test', 0)",
                    [format!("other{i}@elsewhere.test")],
                )
                .unwrap();
                tx.commit().unwrap();
                commits += 1;
                // The cadence of a bounce import writing one report at a time (load shape,
                // not synchronisation).
                std::thread::sleep(Duration::from_millis(1));
            }
            commits
        })
    };
    let mut opts = options();
    opts.connections = 4;
    let summary = send(&relay, &refs, tls(&relay), opts).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    assert!(commits > 10, "the other writer committed {commits} times");
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(summary.accepted, 2000);
    // Every recipient accounted for: all accepted, none left `sending` or pending.
    assert_eq!(states(&path), state_map(&[("accepted", 2000)]));
    assert_eq!(relay.stored(), 2000);
}
