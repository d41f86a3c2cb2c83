//! The delivery pipeline end to end over real TCP: ledger file on disk, writer thread, owned
//! SMTP sessions, against the sandbox scripted as a relay whose replies depend on the local part
//! (tests/fixtures/sandbox/relay.toml: silence after DATA, silence at RCPT, throttling,
//! rejections, stray replies) that counts what it stored. Scenarios that differ only by data are
//! rows of two tables: `outcomes!` (a run and what it leaves per recipient) and `refusals!` (a
//! run the relay stops, with nothing marked and nothing stored).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::refusal::{Refusal, refusals};
use common::relay::{BY_LOCAL_PART, BY_LOCAL_PART_NO_PIPELINING, PASSWORD, Relay};
use common::{
    attempts, contacts, last_run_outcome, numbered, options, people, plain, recipient, run_once,
    spawn_send, states, write_campaign,
};
use mailroom::pipeline::{self, End, Options, Render, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::store::{ImportCount, NewRecipient, Writer};
use mailroom::transport::{Secret, Security, Settings, Transport};

/// The relay of tests/fixtures/sandbox/relay.toml in plaintext, with `session` keys on top.
async fn relay(session: &str) -> Relay {
    Relay::plain(&format!("[session]\n{session}\n{BY_LOCAL_PART}")).await
}

/// One command at a time: the client's non-pipelined path.
const NO_PIPELINING: &str = "pipelining = false";

async fn send(
    path: &Path,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    shutdown: Shutdown,
) -> Summary {
    run_once(path, "spring", people, settings, options, plain(), shutdown)
        .await
        .0
}

/// [`send`] with a chosen renderer; returns the summary and what the import reported.
async fn send_with(
    path: &Path,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    render: Arc<dyn Render>,
) -> (Summary, ImportCount) {
    run_once(
        path,
        "spring",
        people,
        settings,
        options,
        render,
        Shutdown::new(),
    )
    .await
}

/// A ledger in a folder of its own, for tests without a relay.
struct Ledger {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn ledger() -> Ledger {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    Ledger { _dir: dir, path }
}

/// "state attempts code enhanced" of one recipient, `-` for NULL.
fn row_text(path: &Path, email: &str) -> String {
    let (state, attempts, code, enhanced) = recipient(path, email);
    let code = code.map_or("-".to_owned(), |c| c.to_string());
    format!(
        "{state} {attempts} {code} {}",
        enhanced.as_deref().unwrap_or("-")
    )
}

/// "step code outcome" of each attempt of one recipient, `-` for no code.
fn attempt_texts(path: &Path, email: &str) -> Vec<String> {
    attempts(path, email)
        .into_iter()
        .map(|(step, code, _, outcome)| {
            let code = code.map_or("-".to_owned(), |c| c.to_string());
            format!("{step} {code} {outcome}")
        })
        .collect()
}

// ---- One run against the relay, and what it leaves ----

/// A run of `locals` (at example.test) against the relay and what it must leave. `None` and
/// empty fields are not checked.
struct Outcome {
    /// `[session]` keys on top of the relay script.
    session: &'static str,
    locals: &'static [&'static str],
    /// A shorter command timeout, for relays that go silent.
    command_timeout: Option<Duration>,
    end: End,
    /// (accepted, deferred, unknown) in the run's summary.
    summary: (u64, u64, u64),
    /// A local part and the start of its "state attempts code enhanced".
    rows: &'static [(&'static str, &'static str)],
    /// A local part and the "step code outcome" of each of its attempts.
    attempts: &'static [(&'static str, &'static [&'static str])],
    /// Connections the relay served; RSETs; MAILs that came pipelined; MAILs that came behind
    /// a message's final "." (the next transaction opened in the same write); messages it saw
    /// end.
    sessions: Option<u64>,
    rsets: Option<usize>,
    pipelined: Option<u64>,
    /// (A range: a transaction is opened behind a message only when the next row is already
    /// in the queue, which depends on how fast the dispatcher runs.)
    behind: Option<std::ops::RangeInclusive<u64>>,
    ended: Option<u64>,
    /// Whether every recorded 250 names the queue id the relay gave that recipient.
    in_sync: bool,
    /// One-off facts about the ledger after the run.
    check: Option<fn(&Summary, &Path)>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            session: NO_PIPELINING,
            locals: &[],
            command_timeout: None,
            end: End::Finished,
            summary: (0, 0, 0),
            rows: &[],
            attempts: &[],
            sessions: None,
            rsets: None,
            pipelined: None,
            behind: None,
            ended: None,
            in_sync: false,
            check: None,
        }
    }
}

async fn outcome(case: Outcome) {
    let relay = relay(case.session).await;
    let l = relay.ledger();
    let mut settings = relay.plain_settings();
    if let Some(timeout) = case.command_timeout {
        settings.command_timeout = timeout;
    }
    let summary = send(
        &l,
        contacts(case.locals),
        settings,
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, case.end, "{summary:?}");
    assert_eq!(
        (summary.accepted, summary.deferred, summary.unknown),
        case.summary,
        "{summary:?}"
    );
    for (local, want) in case.rows {
        let got = row_text(&l, &format!("{local}@example.test"));
        assert!(got.starts_with(want), "{local}: {got}, want {want}");
    }
    for (local, want) in case.attempts {
        assert_eq!(
            attempt_texts(&l, &format!("{local}@example.test")),
            *want,
            "{local}"
        );
    }
    let seen = relay.seen();
    let per = seen.accepted_per_address();
    assert!(per.values().all(|n| *n == 1), "stored twice: {per:?}");
    let rsets = relay.commands("RSET", "");
    let counted = [
        ("sessions", case.sessions, seen.sessions),
        ("pipelined MAILs", case.pipelined, seen.pipelined_mail),
        ("messages ended", case.ended, seen.messages_ended),
        ("RSETs", case.rsets.map(|n| n as u64), rsets as u64),
    ];
    if let Some(behind) = case.behind {
        assert!(
            behind.contains(&seen.mail_behind_message),
            "MAILs behind a message: {} not in {behind:?}",
            seen.mail_behind_message
        );
    }
    for (what, want, got) in counted {
        if let Some(want) = want {
            assert_eq!(got, want, "{what}: {:?}", relay.sandbox.transcript());
        }
    }
    if case.in_sync {
        relay.assert_replies_in_sync(&l);
    }
    if let Some(check) = case.check {
        check(&summary, &l);
    }
}

macro_rules! outcomes {
    ($($name:ident: $case:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            outcome($case).await;
        }
    )*};
}

outcomes! {
    // One connection; a rejected RCPT is followed by RSET, never by dropping the session.
    rejections_are_classified_and_the_session_is_reset_not_dropped: Outcome {
        locals: &["ok1", "unknown1", "defer1", "full1", "ok2"],
        summary: (2, 1, 0),
        rows: &[
            ("unknown1", "bounced_hard 1 550 5.1.1"),
            ("full1", "bounced_soft 1 552 5.2.2"),
            ("defer1", "deferred 1 451 4.3.0"),
            ("ok2", "accepted"),
        ],
        sessions: Some(1),
        rsets: Some(3),
        pipelined: Some(0),
        behind: Some(0..=0),
        check: Some(|summary, _| {
            assert_eq!(summary.deferred_total, 1);
            // Default backoff: first retry 30 minutes later.
            let retry_at = summary.next_retry_at.unwrap();
            let now = mailroom::store::ledger::now_ms();
            assert!((now + 29 * 60_000..=now + 31 * 60_000).contains(&retry_at));
        }),
        ..Outcome::default()
    };
    // With PIPELINING each message's final "." carries the next transaction's MAIL, RCPT and
    // DATA (RFC 2920): one round trip a message, every reply matched to its own command.
    with_pipelining_the_next_envelope_rides_behind_each_message: Outcome {
        session: "",
        locals: &["n1", "n2", "n3", "n4", "n5"],
        summary: (5, 0, 0),
        sessions: Some(1),
        pipelined: Some(5),
        // n2 to n5 each behind the message before it, when the dispatcher has queued them by
        // then (it has, unless the machine is very busy); never more.
        behind: Some(1..=4),
        ended: Some(5),
        rsets: Some(0),
        in_sync: true,
        ..Outcome::default()
    };
    // Every transaction goes out as one MAIL+RCPT+DATA write, and the replies are read in order;
    // a transaction opened behind a message and refused at RCPT is reset before the next one.
    with_pipelining_rejections_are_read_in_order_and_the_session_stays_in_step: Outcome {
        session: "",
        locals: &["ok1", "unknown1", "defer1", "full1", "throttleonce1", "ok2"],
        summary: (3, 1, 0),
        rows: &[
            ("unknown1", "bounced_hard"),
            ("defer1", "deferred"),
            ("full1", "bounced_soft"),
            ("throttleonce1", "accepted 1"),
        ],
        sessions: Some(1),
        rsets: Some(4),
        pipelined: Some(7),
        // At most unknown1 behind ok1's message; none after the slow-down (the run is paced
        // until a streak of acceptances, so nothing is opened ahead of its turn). The transport's
        // own tests show a refusal behind a message deterministically.
        behind: Some(0..=1),
        in_sync: true,
        ..Outcome::default()
    };
    a_command_timeout_defers_the_recipient_and_the_run_goes_on: Outcome {
        locals: &["silentrcpt1", "b1", "b2"],
        command_timeout: Some(Duration::from_millis(300)),
        summary: (2, 1, 0),
        rows: &[("silentrcpt1", "deferred 1 -")],
        attempts: &[("silentrcpt1", &["rcpt - deferred"])],
        in_sync: true,
        check: Some(|_, l| {
            let conn = rusqlite::Connection::open(l).unwrap();
            let reply: String = conn
                .query_row("SELECT reply FROM attempts WHERE outcome = 'deferred'", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert!(reply.contains("no reply within"), "{reply}");
        }),
        ..Outcome::default()
    };
    slow_down_replies_are_retried_and_not_charged: Outcome {
        locals: &["throttleonce1", "c1", "c2"],
        summary: (3, 0, 0),
        rows: &[("throttleonce1", "accepted 1 250")],
        check: Some(|_, l| {
            let conn = rusqlite::Connection::open(l).unwrap();
            let throttled: i64 = conn
                .query_row(
                    "SELECT count(*) FROM attempts WHERE outcome = 'throttled' AND code = 450",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(throttled, 1);
        }),
        ..Outcome::default()
    };
    // Not "finished": one recipient is still pending because the relay kept saying slow down.
    recipients_left_after_repeated_slow_down_replies_end_the_run_as_throttled: Outcome {
        locals: &["t1", "throttlealways1", "t2"],
        end: End::Throttled(1),
        summary: (2, 0, 0),
        rows: &[("throttlealways1", "pending 0")],
        check: Some(|_, l| assert_eq!(last_run_outcome(l), "throttled")),
        ..Outcome::default()
    };
    // A 354 after the final dot answers nothing: the relay may have the message (unknown). a2
    // reads the stray 250 after dupqueued1 as MAIL's reply, is caught at DATA and sent on a new
    // connection; dot3541's connection is dropped too: three sessions, every body once.
    stray_replies_after_the_final_dot_never_turn_an_acceptance_into_a_retry: Outcome {
        locals: &["a1", "dupqueued1", "a2", "dot3541", "a3"],
        summary: (4, 0, 1),
        rows: &[
            ("dot3541", "unknown"),
            ("a1", "accepted"),
            ("dupqueued1", "accepted"),
            ("a2", "accepted"),
            ("a3", "accepted"),
        ],
        attempts: &[("a2", &["data 250 out_of_step", "message 250 accepted"])],
        sessions: Some(3),
        ended: Some(5),
        in_sync: true,
        ..Outcome::default()
    };
    // DATA gets RCPT's 250 instead of 354 on the first connection: the body never goes out
    // there, a fresh connection carries every message once, and giving the claim back does not
    // charge the recipient.
    an_extra_reply_to_mail_drops_the_session_before_the_body_and_every_250_matches: Outcome {
        session: "pipelining = false\ninject = { mail = \"250 2.1.0 Ok (extra)\\r\\n\" }\ninject_sessions = 1",
        ..extra_reply_to_mail()
    };
    with_pipelining_an_extra_reply_to_mail_drops_the_session_before_the_body: Outcome {
        session: "inject = { mail = \"250 2.1.0 Ok (extra)\\r\\n\" }\ninject_sessions = 1",
        ..extra_reply_to_mail()
    };
}

fn extra_reply_to_mail() -> Outcome {
    Outcome {
        locals: &["p0", "p1", "p2"],
        summary: (3, 0, 0),
        rows: &[("p0", "accepted 1"), ("p1", "accepted"), ("p2", "accepted")],
        attempts: &[("p0", &["data 250 out_of_step", "message 250 accepted"])],
        sessions: Some(2),
        ended: Some(3),
        in_sync: true,
        ..Outcome::default()
    }
}

// ---- Runs the relay stops: nothing marked, nobody charged, nothing stored ----

refusals! {
    a_refused_sender_pauses_and_leaves_everyone_untouched: Refusal {
        script: BY_LOCAL_PART_NO_PIPELINING,
        from: "bad-sender@sender.test",
        locals: &["d0", "d1", "d2", "d3", "d4"],
        connections: 2,
        ends: &["paused"],
        says: &["553"],
        ..Refusal::default()
    };
    a_temporary_refusal_of_the_sender_is_not_charged_to_recipients: Refusal {
        script: BY_LOCAL_PART_NO_PIPELINING,
        from: "tempfail@sender.test",
        locals: &["m0", "m1"],
        ends: &["paused"],
        says: &["451"],
        check: Some(|summary, l| {
            assert_eq!(summary.deferred + summary.failed, 0);
            let rows = attempt_texts(l, "m0@example.test");
            assert!(!rows.is_empty());
            assert!(rows.iter().all(|r| r == "mail 451 throttled"), "{rows:?}");
        }),
        ..Refusal::default()
    };
    relay_access_denied_on_the_first_message_aborts_with_nothing_marked: Refusal {
        script: BY_LOCAL_PART_NO_PIPELINING,
        locals: &["relaydenied1", "e1", "e2"],
        says: &["Relay access denied"],
        ..Refusal::default()
    };
    starttls_required_but_not_offered_stops_before_mail: Refusal {
        script: BY_LOCAL_PART_NO_PIPELINING,
        settings: |s| Settings { security: Security::StartTls, ..s },
        locals: &["f0", "f1", "f2"],
        connections: 2,
        says: &["does not offer STARTTLS"],
        never: &["MAIL", "AUTH"],
        ..Refusal::default()
    };
    a_wrong_password_aborts_the_run_with_nothing_marked: Refusal {
        tls: true,
        settings: |s| Settings { password: Some(Secret::new("wrong".into())), ..s },
        locals: &["w0", "w1", "w2", "w3", "w4"],
        connections: 2,
        says: &["authentication failed"],
        never: &["MAIL"],
        ..Refusal::default()
    };
    a_failed_tls_handshake_never_falls_back_to_plaintext: Refusal {
        script: "[session]\ntls_handshake = \"abort\"",
        tls: true,
        says: &["TLS failed"],
        never: &["AUTH", "MAIL"],
        ..Refusal::default()
    };
    missing_starttls_never_falls_back_to_plaintext: Refusal {
        script: "[session]\nstarttls = false",
        tls: true,
        says: &["TLS failed"],
        never: &["AUTH", "MAIL"],
        ..Refusal::default()
    };
    an_untrusted_certificate_is_refused: Refusal {
        tls: true,
        settings: |s| Settings { ca_file: None, ..s },
        locals: &["u0"],
        says: &["TLS failed", "certificate"],
        never: &["AUTH"],
        ..Refusal::default()
    };
    a_busy_relay_at_the_greeting_pauses_the_run: Refusal {
        script: "[session]\ngreeting = \"421 4.3.2 try later\"",
        tls: true,
        ends: &["paused"],
        says: &["421"],
        ..Refusal::default()
    };
}

// ---- Whole runs, reruns and interruptions ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_is_accepted_once_and_a_rerun_sends_nothing() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let locals = numbered("user", 40);
    let mut s = relay.plain_settings();
    s.messages_per_connection = 10;
    let summary = send(&l, people(&locals), s.clone(), options(3), Shutdown::new()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 40);
    assert_eq!(summary.port, Some(relay.port()));
    let per = relay.accepted_per_address();
    assert_eq!(per.len(), 40);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    // Connections are reused up to the cap, then QUIT and reconnect: 40 messages need ≥ 4.
    let sessions = relay.seen().sessions;
    assert!((4..=12).contains(&sessions), "sessions: {sessions}");
    assert_eq!(states(&l).get("accepted"), Some(&40));

    // The relay's reply and the port are on record.
    let conn = rusqlite::Connection::open(&l).unwrap();
    let (reply, port): (String, i64) = conn
        .query_row(
            "SELECT reply, port FROM attempts WHERE outcome = 'accepted' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(reply.contains("queued as SBX"), "{reply}");
    assert_eq!(port, i64::from(relay.port()));
    let (run_port, claimed, accepted, outcome): (i64, i64, i64, String) = conn
        .query_row(
            "SELECT port, claimed, accepted, outcome FROM runs ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(run_port, i64::from(relay.port()));
    assert_eq!((claimed, accepted, outcome.as_str()), (40, 40, "finished"));

    // Same contacts again: import is a no-op and nothing is due.
    let again = send(&l, people(&locals), s, options(3), Shutdown::new()).await;
    assert_eq!(again.end, End::Finished);
    assert_eq!(again.accepted, 0);
    assert_eq!(relay.seen().messages_accepted, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_send_empties_the_in_flight_journal() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let journal = mailroom::store::journal::path_for(&l);
    let locals = numbered("j", 12);
    let summary = common::send_prepared(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        options(2),
        plain(),
    )
    .await;
    assert_eq!((summary.end, summary.accepted), (End::Finished, 12));
    assert_eq!(relay.seen().messages_accepted, 12);
    // Each transaction was noted in the journal before it started; with every outcome committed
    // and no row left claimed, the journal is emptied instead of keeping a line per message.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    // The ledger is left whole in its one file, as the writer's close leaves it.
    for leftover in ["-wal", "-shm"] {
        let mut name = l.clone().into_os_string();
        name.push(leftover);
        assert!(!Path::new(&name).exists(), "{leftover} left behind");
    }
    assert_eq!(states(&l).get("sending"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_after_the_final_dot_is_unknown_and_never_resent_without_opt_in() {
    // With PIPELINING, a2's envelope went out behind silentdata1's message and was lost with
    // that connection: it goes again on the next one, once.
    for session in [NO_PIPELINING, ""] {
        silence_after_the_final_dot(session).await;
    }
}

async fn silence_after_the_final_dot(session: &str) {
    let relay = relay(session).await;
    let l = relay.ledger();
    let locals = ["a1", "silentdata1", "a2", "a3"].map(String::from);
    let mut s = relay.plain_settings();
    s.data_timeout = Duration::from_millis(500);
    let summary = send(&l, people(&locals), s.clone(), options(1), Shutdown::new()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.unknown, 1);
    assert_eq!(summary.accepted, 3);
    assert_eq!(recipient(&l, "silentdata1@example.test").0, "unknown");
    // The connection was dropped after the timeout and a new one carried on, in step.
    assert_eq!(relay.seen().sessions, 2);
    relay.assert_replies_in_sync(&l);

    let rerun = send(&l, people(&locals), s.clone(), options(1), Shutdown::new()).await;
    assert_eq!(rerun.accepted + rerun.unknown, 0);
    assert_eq!(relay.seen().messages_ended, 4);

    let mut opt_in = options(1);
    opt_in.resend_unknown = true;
    let resend = send(&l, people(&locals), s, opt_in, Shutdown::new()).await;
    assert_eq!(resend.unknown, 1, "still silent, still unknown");
    assert_eq!(relay.seen().messages_ended, 5);
}

#[tokio::test]
async fn plaintext_to_a_remote_host_or_with_auth_is_refused() {
    let remote = common::settings("192.0.2.1", 25, Security::None);
    let err = Transport::new(remote).await.unwrap_err().to_string();
    assert!(err.contains("only allowed to a loopback relay"), "{err}");
    let mut s = common::settings("127.0.0.1", 25, Security::None);
    s.username = Some("u".into());
    s.password = Some(Secret::new("p".into()));
    let err = Transport::new(s).await.unwrap_err().to_string();
    assert!(
        err.contains("refusing to authenticate without TLS"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_fallback_uses_the_next_port_and_records_it() {
    let relay = relay(NO_PIPELINING).await;
    // A port that refuses: bind, note it, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let l = relay.ledger();
    let mut s = relay.plain_settings();
    s.port = closed;
    s.fallback_ports = vec![relay.port()];
    let summary = send(
        &l,
        people(&numbered("g", 3)),
        s,
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.port, Some(relay.port()));
    assert_eq!(summary.accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_in_flight_messages_finish_and_claims_nothing_new() {
    let relay = relay("pipelining = false\ndelay_ms = { message = 300 }").await;
    let l = relay.ledger();
    let locals = numbered("h", 20);
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    // Press "Ctrl-C" as soon as two messages are in flight (their final dot has arrived).
    let press = async {
        relay.wait_until(|s| s.messages_ended >= 2).await;
        stop.trigger();
    };
    let s = relay.plain_settings();
    let run = send(&l, people(&locals), s.clone(), options(2), shutdown);
    let (summary, ()) = tokio::join!(run, press);
    assert_eq!(summary.end, End::Interrupted);
    let st = states(&l);
    let accepted = *st.get("accepted").unwrap_or(&0);
    // The in-flight transactions completed and were recorded; nothing is left `sending`.
    assert!(accepted >= 2, "{st:?}");
    assert_eq!(st.get("sending"), None);
    assert_eq!(accepted + st.get("pending").copied().unwrap_or(0), 20);
    assert_eq!(accepted as u64, relay.seen().messages_accepted);

    // A second run picks up exactly the rest, on a fresh, in-sync connection.
    let rest = send(&l, people(&locals), s, options(2), Shutdown::new()).await;
    assert_eq!(rest.end, End::Finished);
    assert_eq!(states(&l).get("accepted"), Some(&20));
    // Each run counts its own attempts only, not the first run's before it.
    let conn = rusqlite::Connection::open(&l).unwrap();
    let counts: Vec<(i64, i64)> = conn
        .prepare("SELECT claimed, accepted FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let second = i64::try_from(rest.accepted).unwrap();
    assert_eq!(counts, vec![(accepted, accepted), (second, second)]);
    relay.assert_replies_in_sync(&l);
    let per = relay.accepted_per_address();
    assert_eq!(per.len(), 20);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_addresses_are_recorded_and_not_sent() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    {
        drop(mailroom::store::open(&l).unwrap());
        let conn = rusqlite::Connection::open(&l).unwrap();
        conn.execute(
            "INSERT INTO suppressions (email, reason, source, created_at)
             VALUES ('k1@example.test', 'hard_bounce', 'test', 0)",
            [],
        )
        .unwrap();
    }
    let locals = numbered("k", 3);
    let s = relay.plain_settings();
    let summary = send(&l, people(&locals), s, options(1), Shutdown::new()).await;
    assert_eq!(summary.suppressed, 1);
    assert_eq!(summary.accepted, 2);
    assert_eq!(recipient(&l, "k1@example.test").0, "suppressed");
    assert!(!relay.accepted_per_address().contains_key("k1@example.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_daily_cap_bound_the_run() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let locals = numbered("m", 10);
    let mut limited = options(1);
    limited.limit = Some(4);
    let s = relay.plain_settings();
    let first = send(&l, people(&locals), s.clone(), limited, Shutdown::new()).await;
    assert_eq!(first.end, End::Limit);
    assert_eq!(first.accepted, 4);
    let mut capped = options(1);
    capped.rate.daily_cap = Some(7);
    let second = send(&l, people(&locals), s, capped, Shutdown::new()).await;
    assert_eq!(second.end, End::DailyCap);
    assert_eq!(second.accepted, 3, "7 a day, 4 already accepted today");
    assert_eq!(states(&l).get("pending"), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_the_run_retries_deferred_recipients_until_all_are_final() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let locals = ["retryonce1", "defer1", "n1"].map(String::from);
    let mut o = options(1);
    o.wait = true;
    o.retry.backoff = vec![Duration::from_millis(100), Duration::from_millis(200)];
    o.retry.max_attempts = 3;
    let s = relay.plain_settings();
    let summary = send(&l, people(&locals), s, o, Shutdown::new()).await;
    assert_eq!(summary.end, End::Finished);
    // Deferred once, then accepted on the retry.
    assert!(row_text(&l, "retryonce1@example.test").starts_with("accepted 2 250"));
    // Always deferred: given up after max_attempts.
    assert!(row_text(&l, "defer1@example.test").starts_with("failed 3 451"));
    assert_eq!(summary.deferred_total, 0);
    assert_eq!(relay.rcpts_for("defer1@example.test"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_a_deferred_recipient_waits_for_the_next_run() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let locals = ["retryonce2", "n2"].map(String::from);
    let mut o = options(1);
    o.retry.backoff = vec![Duration::from_millis(1)];
    let s = relay.plain_settings();
    let first = send(&l, people(&locals), s.clone(), o.clone(), Shutdown::new()).await;
    assert_eq!(
        (first.end, first.deferred, first.accepted),
        (End::Finished, 1, 1)
    );
    // The retry time has passed by the time the next run starts: it is due and goes out once.
    let second = send(&l, people(&locals), s, o, Shutdown::new()).await;
    assert_eq!(second.accepted, 1);
    assert_eq!(recipient(&l, "retryonce2@example.test").0, "accepted");
    assert_eq!(relay.seen().messages_accepted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_send_reconciles_the_ledger_with_the_contacts_file() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let s = relay.plain_settings();
    let mut first = people(&numbered("c", 3));
    // Run 1 sends c0 only.
    let mut limited = options(1);
    limited.limit = Some(1);
    let (summary, imported) = send_with(&l, first.clone(), s.clone(), limited, plain()).await;
    assert_eq!((summary.accepted, imported.inserted), (1, 3));

    // Run 2: c1 left the file (unsubscribed), c2's fields were corrected.
    let c2 = first.pop().unwrap();
    let c2_fixed = NewRecipient {
        fields: "{\"n\":\"fixed\"}".into(),
        name: Some("Corrected Name".into()),
        ..c2.clone()
    };
    let without_c1 = vec![first[0].clone(), c2_fixed.clone()];
    let (summary, imported) = send_with(&l, without_c1, s.clone(), options(1), plain()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 1);
    assert_eq!((imported.refreshed, imported.removed), (1, 1));
    assert_eq!(relay.accepted_per_address().get("c1@example.test"), None);
    assert!(relay.body_of("c2@example.test").contains("fixed"));
    // c1 is still pending (never sent), marked as out of the file.
    let conn = rusqlite::Connection::open(&l).unwrap();
    let (state, removed): (String, Option<i64>) = conn
        .query_row(
            "SELECT state, removed_at FROM recipients WHERE email = 'c1@example.test'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "pending");
    assert!(removed.is_some());
    // The report still counts every recipient once: the removed row as pending.
    let report = mailroom::report::Ledger::open(&l).unwrap();
    let summary = report.find_campaign(Some("spring")).unwrap();
    let totals = report.campaign_report(&summary).unwrap().totals;
    assert_eq!(
        (totals.recipients, totals.accepted, totals.pending),
        (3, 2, 1)
    );
    // Nothing is due: a run over the same file sends nothing and leaves c1 alone.
    let same = vec![first[0].clone(), c2_fixed.clone()];
    let (again, imported) = send_with(&l, same, s.clone(), options(1), plain()).await;
    assert_eq!(
        (again.accepted, imported.refreshed, imported.removed),
        (0, 0, 1)
    );

    // Run 4: c1 is back in the file and goes out once; sent rows keep their fields.
    let c2_again = NewRecipient {
        fields: "{\"n\":\"changed after sending\"}".into(),
        ..c2_fixed
    };
    let all = vec![first[0].clone(), first[1].clone(), c2_again];
    let (back, imported) = send_with(&l, all, s, options(1), plain()).await;
    assert_eq!(
        (back.accepted, imported.refreshed, imported.removed),
        (1, 1, 0)
    );
    assert!(relay.accepted_per_address().values().all(|n| *n == 1));
    assert_eq!(relay.accepted_per_address().len(), 3);
    let fields: String = conn
        .query_row(
            "SELECT fields FROM recipients WHERE email = 'c2@example.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(fields.contains("fixed"), "{fields}");
}

/// Renders like [`common::PlainRender`], except for addresses starting with "broken".
struct SometimesBroken;

impl Render for SometimesBroken {
    fn render(
        &self,
        row: &mailroom::store::DueRow,
    ) -> Result<mailroom::pipeline::Outgoing, String> {
        if row.email.starts_with("broken") {
            return Err("line 3: header X-City: the value contains a line break".into());
        }
        plain().render(row)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_built_fails_only_its_row() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    let locals = ["ok1", "broken1", "ok2"].map(String::from);
    let s = relay.plain_settings();
    let render = Arc::new(SometimesBroken);
    let (summary, _) = send_with(&l, people(&locals), s, options(1), render).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!((summary.accepted, summary.failed), (2, 1));
    assert!(row_text(&l, "broken1@example.test").starts_with("failed 1"));
    assert_eq!(
        attempt_texts(&l, "broken1@example.test"),
        ["render - failed"]
    );
    let conn = rusqlite::Connection::open(&l).unwrap();
    let reason: String = conn
        .query_row(
            "SELECT last_reply FROM recipients WHERE email = 'broken1@example.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("line break"), "{reason}");
    assert_eq!(
        relay.accepted_per_address().get("broken1@example.test"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_failure_mid_run_halts_the_workers_and_closes_the_run() {
    let relay = relay(NO_PIPELINING).await;
    let l = relay.ledger();
    drop(mailroom::store::open(&l).unwrap());
    // The ledger refuses to record one outcome (as a full disk would): the writer fails for good.
    rusqlite::Connection::open(&l)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON recipients
             WHEN NEW.state = 'accepted' AND NEW.email = 'boom@example.test'
             BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
        )
        .unwrap();
    let mut locals = vec!["boom".to_owned()];
    // Enough that the run cannot finish in the few milliseconds an outcome batch waits before
    // its commit (which is when the failure shows).
    locals.extend(numbered("after", 500));
    let mut opts = options(1);
    opts.wait = true;
    let ran = common::try_run_once(
        &l,
        "spring",
        people(&locals),
        relay.plain_settings(),
        opts,
        plain(),
        Shutdown::new(),
    )
    .await;
    let err = ran.result.expect_err("the run must fail");
    assert!(err.to_string().contains("disk says no"), "{err}");
    assert!(ran.writer.is_err());
    // Every worker stopped before `run` returned: nothing more reaches the relay afterwards.
    let sent = relay.seen().messages_ended;
    assert!(sent < locals.len() as u64, "{sent}");
    // The run row is closed with an outcome, not left open for the next run to call crashed.
    let conn = rusqlite::Connection::open(&l).unwrap();
    let (outcome, finished): (Option<String>, Option<i64>) = conn
        .query_row(
            "SELECT outcome, finished_at FROM runs WHERE id = ?1",
            [ran.run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome.as_deref(), Some("aborted"));
    assert!(finished.is_some());
}

// ---- The `mailroom send` command ----

/// Runs `mailroom send CAMPAIGN ARGS` with no terminal on stdin.
fn run_send(root: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_reports_honestly_and_sets_exit_codes() {
    let relay = relay(NO_PIPELINING).await;
    let smtp = relay.smtp_table("");
    let dir = relay.dir.path();

    // Dry run: renders, counts, writes nothing, sends nothing.
    let clean: Vec<String> = (0..3).map(|i| format!("p{i}@example.test")).collect();
    let root = write_campaign(dir, "clean", "news@sender.test", &smtp, &clean);
    let out = run_send(&root, &["--dry-run"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("would send 3 messages"), "{stdout}");
    assert!(!root.join("mailroom.db").exists());
    assert_eq!(relay.seen().sessions, 0);
    // With --limit, what the run would send, not all that is due.
    let out = run_send(&root, &["--dry-run", "--limit", "2"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("would send 2 messages (--limit 2; 3 are due)"),
        "{stdout}"
    );
    // --limit 0 would send nothing while saying "Nothing is due": refused.
    let out = run_send(&root, &["--yes", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--limit"),
        "{}",
        text(&out.stderr)
    );
    assert!(!root.join("mailroom.db").exists());

    // All accepted: exit 0, and the wording never claims delivery.
    let out = run_send(&root, &["--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("3 accepted by the relay"), "{stdout}");
    assert!(!stdout.to_lowercase().contains("delivered"), "{stdout}");
    assert_eq!(relay.seen().messages_accepted, 3);

    // A hard bounce: finished with problems, exit 1.
    let mixed = ["q1@example.test", "unknown9@example.test"].map(String::from);
    let root = write_campaign(dir, "mixed", "news@sender.test", &smtp, &mixed);
    let out = run_send(&root, &["--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 bounced (hard 1, soft 0)"), "{stdout}");
    assert!(
        stdout.contains("bounced_hard unknown9@example.test"),
        "{stdout}"
    );

    // Another live send holds the ledger (this test process takes the same OS lock a send
    // takes): refused, nothing touched.
    let held = mailroom::store::RunLock::acquire(&root.join("mailroom.db")).unwrap();
    let out = run_send(&root, &["--yes"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let pid = std::process::id();
    assert!(
        stderr.contains(&format!("another `mailroom send` (pid {pid})")),
        "{stderr}"
    );
    drop(held);
}

#[test]
fn send_without_a_terminal_requires_yes() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_campaign(
        dir.path(),
        "noyes",
        "news@sender.test",
        "host = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"",
        &["a@example.test".to_owned()],
    );
    let out = run_send(&root, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Pass --yes"), "{stderr}");
    assert!(
        !root.join("mailroom.db").exists(),
        "nothing written without confirmation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_skips_rows_that_check_rejects_and_names_their_line() {
    let relay = relay(NO_PIPELINING).await;
    let smtp = relay.smtp_table("");
    let root = write_campaign(relay.dir.path(), "city", "news@sender.test", &smtp, &[]);
    let toml = std::fs::read_to_string(root.join("campaign.toml")).unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!("{toml}\n[campaign.headers]\n\"X-City\" = \"{{{{city}}}}\"\n"),
    )
    .unwrap();
    let csv = |middle: &str| {
        format!(
            "email,name,city\na1@example.test,Ann,Lyon\na2@example.test,Bob,{middle}\n\
             a3@example.test,Cy,Paris\n"
        )
    };
    std::fs::write(root.join("contacts.csv"), csv("\"Nice\nInjected: yes\"")).unwrap();
    let dry = run_send(&root, &["--dry-run"]);
    let (dry_out, dry_err) = (text(&dry.stdout), text(&dry.stderr));
    assert_eq!(dry.status.code(), Some(1), "{dry_out}\n{dry_err}");
    assert!(dry_out.contains("would send 2 messages"), "{dry_out}");
    assert!(
        dry_err.contains("contacts.csv:3: a2@example.test: would not be sent"),
        "{dry_err}"
    );
    let out = run_send(&root, &["--yes"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        stderr.contains("contacts.csv:3: a2@example.test: not imported"),
        "{stderr}"
    );
    assert!(
        stdout.contains("2 accepted by the relay"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(relay.seen().messages_accepted, 2);
    assert_eq!(relay.accepted_per_address().get("a2@example.test"), None);

    // The fixed row goes out on the next send, once; the others are not sent again.
    std::fs::write(root.join("contacts.csv"), csv("Nice")).unwrap();
    let out = run_send(&root, &["--yes"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 accepted by the relay"), "{stdout}");
    assert!(relay.body_of("a2@example.test").contains("X-City: Nice"));
    assert!(relay.accepted_per_address().values().all(|n| *n == 1));
}

/// Polls the ledger (another process writes it) until `n` recipients are accepted; panics after
/// 30 s. Outcomes reach the ledger in batches and nothing crosses the process boundary to say
/// when, so this looks every 10 ms.
async fn wait_for_accepted(path: &Path, n: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let accepted = rusqlite::Connection::open(path)
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM recipients WHERE state = 'accepted'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0);
        if accepted >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger never showed {n} accepted (last: {accepted})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_rerun_sends_nobody_twice() {
    let relay = relay("pipelining = false\nfreeze_after_messages = 60").await;
    let emails: Vec<String> = (0..300)
        .map(|i| format!("reader{i}@example.test"))
        .collect();
    let smtp = relay.smtp_table(
        "connections = 3\nmessages_per_connection = 40\ncommand_timeout = 5\ndata_timeout = 5",
    );
    let root = write_campaign(
        relay.dir.path(),
        "crash",
        "news@sender.test",
        &smtp,
        &emails,
    );
    let ledger_path = root.join("mailroom.db");

    let mut child = spawn_send(&root);
    // The relay accepts 60 messages, then hangs after the final "." of every later one. Kill the
    // sender (SIGKILL) once all 3 connections have a message stuck there: mid-run, with
    // transactions in flight whose outcome the sender cannot know.
    relay.wait_until(|s| s.messages_ended >= 63).await;
    // Outcomes are committed in batches a few milliseconds apart (a crash turns the last
    // batch's into `unknown`, never into anything else). Kill once the 60 answered ones are in
    // the ledger, so that exactly the 3 hanging transactions are in doubt.
    wait_for_accepted(&ledger_path, 60).await;
    child.kill().unwrap();
    child.wait().unwrap();
    relay.sandbox.thaw();
    let at_kill = relay.seen().messages_accepted;
    assert_eq!(at_kill, 60);
    let after_crash = states(&ledger_path);
    let accepted_in_ledger = after_crash.get("accepted").copied().unwrap_or(0);
    assert!(accepted_in_ledger as u64 <= at_kill);

    // Re-run to completion.
    let out = spawn_send(&root).wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
    // The three stuck messages were claimed (durably) and never answered; rows claimed with
    // them but not started yet are `sending` too, and the in-flight journal tells them apart.
    let claimed_at_kill = after_crash.get("sending").copied().unwrap_or(0);
    assert!(claimed_at_kill >= 3, "{after_crash:?}");
    let recovered = 3;
    assert!(
        stderr.contains("3 recipients were in flight when a previous run stopped"),
        "{stderr}"
    );
    if claimed_at_kill > 3 {
        assert!(
            stderr.contains(&format!(
                "{} recipients claimed by a previous run that stopped were never sent",
                claimed_at_kill - 3
            )),
            "{stderr}"
        );
    }
    let finals = states(&ledger_path);
    // Nobody twice at the relay.
    let per = relay.accepted_per_address();
    assert!(per.values().all(|n| *n == 1), "duplicates: {per:?}");
    // Every recipient accounted for exactly once: accepted or unknown (the in-flight ones).
    let accepted = finals.get("accepted").copied().unwrap_or(0);
    let unknown = finals.get("unknown").copied().unwrap_or(0);
    assert_eq!(accepted + unknown, 300, "{finals:?}");
    assert_eq!(unknown, recovered, "{finals:?}");
    // The relay has the accepted messages, plus at most the 3 stuck ones: their data was
    // complete when the sender died, so the relay may still take them when it thaws (that is
    // what `unknown` means); they are not resent without --resend-unknown.
    assert!(
        (accepted..=accepted + recovered).contains(&(per.len() as i64)),
        "relay {} vs ledger {finals:?}",
        per.len()
    );
    assert_eq!(relay.seen().messages_ended, 300);
    let conn = rusqlite::Connection::open(&ledger_path).unwrap();
    let crashed: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE outcome = 'crashed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(crashed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_like_ctrl_c_and_commits_what_the_relay_answered() {
    let relay = relay("pipelining = false\ndelay_ms = { message = 200 }").await;
    let emails: Vec<String> = (0..40).map(|i| format!("t{i}@example.test")).collect();
    let smtp = relay.smtp_table("connections = 1");
    let root = write_campaign(relay.dir.path(), "term", "news@sender.test", &smtp, &emails);
    let ledger_path = root.join("mailroom.db");
    let child = spawn_send(&root);
    relay.wait_until(|s| s.messages_ended >= 3).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{:?}\n{stdout}", out.status);
    assert!(stdout.contains("Interrupted"), "{stdout}");
    // The message in flight finished and was recorded; nothing is left `sending`.
    let finals = states(&ledger_path);
    assert_eq!(finals.get("sending"), None, "{finals:?}");
    let accepted = finals.get("accepted").copied().unwrap_or(0);
    assert_eq!(
        accepted as u64,
        relay.seen().messages_accepted,
        "{finals:?}"
    );
    assert!((3..40).contains(&accepted), "{finals:?}");
    assert_eq!(last_run_outcome(&ledger_path), "interrupted");
}

// ---- The STARTTLS and implicit-TLS paths to the sandbox ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_to_the_sandbox_store_each_message_once() {
    let script = r#"
[[rule]]
recipient = "gone@example.test"
action = "reject"
reply = "550 5.1.1 user unknown"

[[rule]]
recipient = "full@example.test"
action = "reject"
reply = "552 5.2.2 mailbox full"
at = "message"

[[rule]]
recipient = "lost@example.test"
action = "drop"
"#;
    let relay = Relay::tls(script, |c| c).await;
    let l = relay.ledger();
    let mut locals = numbered("s", 12);
    locals.extend(["gone", "full", "lost"].map(String::from));
    let s = relay.tls_settings(Security::StartTls);
    let summary = send(&l, people(&locals), s, options(3), Shutdown::new()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 12);
    assert!(row_text(&l, "gone@example.test").starts_with("bounced_hard 1 550 5.1.1"));
    assert_eq!(recipient(&l, "full@example.test").0, "bounced_soft");
    // Dropped after the final "." with no reply: unknown, never "accepted".
    assert_eq!(recipient(&l, "lost@example.test").0, "unknown");
    let counts = relay.maildir_counts();
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // The password never reached the transcript (the sandbox redacts AUTH payloads) nor the
    // ledger.
    let transcript = relay.sandbox.transcript().join("\n");
    assert!(transcript.contains("STARTTLS"));
    assert!(!transcript.contains(PASSWORD));
    let db = std::fs::read(&l).unwrap();
    assert!(!db.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_to_the_sandbox_works() {
    let relay = Relay::tls("", |c| c.implicit_tls(true)).await;
    let l = relay.ledger();
    let s = relay.tls_settings(Security::Tls);
    let summary = send(
        &l,
        people(&numbered("i", 4)),
        s,
        options(2),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 4);
    assert_eq!(relay.maildir_counts().len(), 4);
}

// ---- Import and crash recovery (no relay) ----

#[test]
fn import_validation_keeps_file_order_and_names_every_unbuildable_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = write_campaign(
        dir.path(),
        "order",
        "news@sender.test",
        "host = \"127.0.0.1\"\nsecurity = \"none\"",
        &[],
    );
    let toml = std::fs::read_to_string(root.join("campaign.toml")).unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!("{toml}\n[campaign.headers]\n\"X-City\" = \"{{{{city}}}}\"\n"),
    )
    .unwrap();
    // Enough rows for several batches and threads; every 97th city breaks the header.
    let mut csv = String::from("email,name,city\n");
    let mut broken = Vec::new();
    for i in 0..5000u64 {
        if i % 97 == 5 {
            csv.push_str(&format!("r{i}@example.test,R,\"A\nB: c\"\n"));
            // The quoted cell spans two physical lines; the row starts at the first.
            broken.push(i);
        } else {
            csv.push_str(&format!("r{i}@example.test,R,City {i}\n"));
        }
    }
    std::fs::write(root.join("contacts.csv"), csv).unwrap();
    let campaign = mailroom::campaign::Campaign::load(&root).unwrap();
    let mut stats = pipeline::setup::ContactStats::default();
    // One address already final: never rendered, so its (broken) row is still imported.
    let finals: std::collections::HashSet<String> = [format!("r{}@example.test", broken[0])].into();
    let rows: Vec<NewRecipient> =
        pipeline::setup::recipients_except_final(&campaign, &mut stats, finals)
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let skipped: Vec<String> = stats.unrenderable.iter().map(|u| u.email.clone()).collect();
    let expected: Vec<String> = broken[1..]
        .iter()
        .map(|i| format!("r{i}@example.test"))
        .collect();
    assert_eq!(skipped, expected);
    assert_eq!(stats.invalid as usize, expected.len());
    assert_eq!(rows.len() + expected.len(), 5000);
    assert_eq!(stats.valid as usize, rows.len());
    // File order, so ledger ids (and the send order) follow the CSV.
    assert!(rows.windows(2).all(|w| w[0].line < w[1].line));
    assert!(
        stats
            .unrenderable
            .iter()
            .all(|u| u.reason.contains("line "))
    );
}

/// Claims every due row of `campaign` as run `run` would, and notes in the in-flight journal that
/// the transactions of the first `started` of them began: the ledger as a kill -9 leaves it.
fn crash_with_claims(prepared: pipeline::Prepared, path: &Path, started: usize) {
    use mailroom::store::{Claim, journal, ledger};
    let (campaign, run) = (prepared.campaign_id, prepared.run_id);
    let due = mailroom::store::Reader::open(path)
        .unwrap()
        .due_rows(campaign, 0, ledger::now_ms(), false, 100)
        .unwrap();
    let journal = journal::Journal::open(path).unwrap();
    // Claims committed through the real writer, some transactions noted as started, then the
    // process "dies": the writer stops without any outcome or release.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (writer, thread) = Writer::spawn(prepared.ledger).unwrap();
    for (i, row) in due.iter().enumerate() {
        let claim = Claim {
            recipient_id: row.id,
            run_id: run,
            expected_state: row.state,
            expected_attempts: row.attempts,
        };
        runtime.block_on(writer.claim(claim)).unwrap();
        if i < started {
            journal.started(run, row.id).unwrap();
        }
    }
    drop(writer);
    thread.join().unwrap();
}

fn count_due(path: &Path, campaign: mailroom::model::CampaignId) -> u64 {
    mailroom::store::Reader::open(path)
        .unwrap()
        .count_due(campaign, mailroom::store::ledger::now_ms(), false)
        .unwrap()
}

/// [`common::prepare`] of campaign `campaign` with the contacts `locals` (recovery and import).
fn prepared(path: &Path, campaign: &str, locals: &[String]) -> pipeline::Prepared {
    common::prepare(path, campaign, people(locals))
}

#[test]
fn a_send_of_another_campaign_does_not_lose_a_crashed_campaigns_journal() {
    let l = ledger();
    let a = prepared(&l.path, "spring", &numbered("a", 3));
    let spring = a.campaign_id;
    crash_with_claims(a, &l.path, 2);
    // Another campaign on the same ledger runs first: it must not throw away what the journal
    // says about the first one (its two started transactions may be at the relay).
    let b = prepared(&l.path, "autumn", &numbered("bb", 2));
    assert_eq!((b.recovered.unknown, b.recovered.returned), (2, 1));
    assert_eq!(b.imported.inserted, 2);
    drop(b);
    let again = prepared(&l.path, "spring", &numbered("a", 3));
    assert_eq!((again.recovered.unknown, again.recovered.returned), (0, 0));
    let st = states(&l.path);
    assert_eq!(st.get("unknown"), Some(&2), "{st:?}");
    // Nothing started is due again; the one never started is.
    assert_eq!(count_due(&l.path, spring), 1);
}

#[test]
fn a_claim_given_back_after_a_crash_respects_a_contact_removed_from_the_file() {
    let l = ledger();
    let a = prepared(&l.path, "spring", &numbered("a", 3));
    let spring = a.campaign_id;
    crash_with_claims(a, &l.path, 0);
    // a2 left the file before the next send: given back by recovery, it must then be marked
    // removed by the import like any pending row, not sent.
    let next = prepared(&l.path, "spring", &numbered("a", 2));
    assert_eq!(next.recovered.returned, 3);
    assert_eq!(next.imported.removed, 1);
    assert_eq!(count_due(&l.path, spring), 2);
}
