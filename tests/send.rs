//! The delivery pipeline end to end over real TCP: ledger file on disk, writer thread, owned
//! SMTP sessions, against a scripted server that injects protocol faults (silence after DATA,
//! silence at RCPT, throttling, rejections) and counts what it accepted.
#![allow(clippy::unwrap_used)]

#[path = "common/delivery.rs"]
mod delivery;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use delivery::{Options as ServerOptions, PlainRender, Server, contacts, recipient, states};
use mailroom::pipeline::{self, Counters, End, Options, RateOptions, Run, Stop, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::store::{NewRecipient, Writer};
use mailroom::transport::{Security, Settings, Transport};

fn settings(port: u16) -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        ca_file: None,
        hello_name: Some("client.test".into()),
        fallback_ports: vec![],
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(2),
        data_timeout: Duration::from_secs(2),
        messages_per_connection: 100,
    }
}

fn options(connections: usize) -> Options {
    Options {
        connections,
        rate: RateOptions {
            per_second: Some(100_000.0),
            ..RateOptions::default()
        },
        throttle_backoff: Duration::from_millis(50),
        throttle_max: Duration::from_millis(400),
        ..Options::default()
    }
}

struct Ledger {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn ledger() -> Ledger {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    Ledger { _dir: dir, path }
}

async fn send(
    path: &Path,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    shutdown: Shutdown,
) -> Summary {
    let render = Arc::new(PlainRender {
        from: "news@sender.test".into(),
    });
    delivery::run_once(path, "spring", people, settings, options, render, shutdown)
        .await
        .0
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn people(locals: &[String]) -> Vec<NewRecipient> {
    let refs: Vec<&str> = locals.iter().map(String::as_str).collect();
    contacts(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipient_is_accepted_once_and_a_rerun_sends_nothing() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals = numbered("user", 40);
    let mut s = settings(server.addr.port());
    s.messages_per_connection = 10;
    let summary = send(
        &l.path,
        people(&locals),
        s.clone(),
        options(3),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 40);
    assert_eq!(summary.port, Some(server.addr.port()));
    let per = server.accepted_per_address();
    assert_eq!(per.len(), 40);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    // Connections are reused up to the cap, then QUIT and reconnect: 40 messages need ≥ 4.
    let sessions = server.seen.lock().unwrap().sessions;
    assert!((4..=12).contains(&sessions), "sessions: {sessions}");
    assert_eq!(states(&l.path).get("accepted"), Some(&40));

    // The relay's reply and the port are on record.
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let (reply, port): (String, i64) = conn
        .query_row(
            "SELECT reply, port FROM attempts WHERE outcome = 'accepted' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(reply.contains("queued as Q"), "{reply}");
    assert_eq!(port, i64::from(server.addr.port()));
    let (run_port, claimed, accepted, outcome): (i64, i64, i64, String) = conn
        .query_row(
            "SELECT port, claimed, accepted, outcome FROM runs ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(run_port, i64::from(server.addr.port()));
    assert_eq!((claimed, accepted, outcome.as_str()), (40, 40, "finished"));

    // Same contacts again: import is a no-op and nothing is due.
    let again = send(&l.path, people(&locals), s, options(3), Shutdown::new()).await;
    assert_eq!(again.end, End::Finished);
    assert_eq!(again.accepted, 0);
    assert_eq!(server.accepted_count(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_classified_and_the_session_is_reset_not_dropped() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["ok1", "unknown1", "defer1", "full1", "ok2"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    let hard = recipient(&l.path, "unknown1@example.test");
    assert_eq!(
        hard,
        ("bounced_hard".into(), 1, Some(550), Some("5.1.1".into()))
    );
    let soft = recipient(&l.path, "full1@example.test");
    assert_eq!(
        soft,
        ("bounced_soft".into(), 1, Some(552), Some("5.2.2".into()))
    );
    let deferred = recipient(&l.path, "defer1@example.test");
    assert_eq!(
        deferred,
        ("deferred".into(), 1, Some(451), Some("4.3.0".into()))
    );
    assert_eq!(summary.deferred_total, 1);
    let retry_at = summary.next_retry_at.unwrap();
    let now = mailroom::store::ledger::now_ms();
    // Default backoff: first retry 30 minutes later.
    assert!((now + 29 * 60_000..=now + 31 * 60_000).contains(&retry_at));
    assert_eq!(recipient(&l.path, "ok2@example.test").0, "accepted");
    // One connection, RSET after each rejected RCPT.
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.sessions, 1);
    let rsets = seen
        .transcript
        .iter()
        .filter(|c| c.as_str() == "RSET")
        .count();
    assert_eq!(rsets, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_after_the_final_dot_is_unknown_and_never_resent_without_opt_in() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["a1", "silentdata1", "a2", "a3"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut s = settings(server.addr.port());
    s.data_timeout = Duration::from_millis(500);
    let summary = send(
        &l.path,
        people(&locals),
        s.clone(),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.unknown, 1);
    assert_eq!(summary.accepted, 3);
    assert_eq!(recipient(&l.path, "silentdata1@example.test").0, "unknown");
    // The connection was dropped after the timeout and a new one carried on, in step.
    assert_eq!(server.seen.lock().unwrap().sessions, 2);
    delivery::assert_replies_in_sync(&server, &l.path);

    let rerun = send(
        &l.path,
        people(&locals),
        s.clone(),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(rerun.accepted + rerun.unknown, 0);
    assert_eq!(server.seen.lock().unwrap().data_received.len(), 4);

    let mut opt_in = options(1);
    opt_in.resend_unknown = true;
    let resend = send(&l.path, people(&locals), s, opt_in, Shutdown::new()).await;
    assert_eq!(resend.unknown, 1, "still silent, still unknown");
    assert_eq!(server.seen.lock().unwrap().data_received.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_timeout_defers_the_recipient_and_the_run_goes_on() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["silentrcpt1", "b1", "b2"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut s = settings(server.addr.port());
    s.command_timeout = Duration::from_millis(300);
    let summary = send(&l.path, people(&locals), s, options(1), Shutdown::new()).await;
    assert_eq!(summary.end, End::Finished);
    let (state, attempts, code, _) = recipient(&l.path, "silentrcpt1@example.test");
    assert_eq!((state.as_str(), attempts, code), ("deferred", 1, None));
    assert_eq!(summary.accepted, 2);
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let (step, reply): (String, String) = conn
        .query_row(
            "SELECT step, reply FROM attempts WHERE outcome = 'deferred'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(step, "rcpt");
    assert!(reply.contains("no reply within"), "{reply}");
    delivery::assert_replies_in_sync(&server, &l.path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_replies_are_retried_and_not_charged() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["throttleonce1", "c1", "c2"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 3);
    let (state, attempts, code, _) = recipient(&l.path, "throttleonce1@example.test");
    assert_eq!((state.as_str(), attempts, code), ("accepted", 1, Some(250)));
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let throttled: i64 = conn
        .query_row(
            "SELECT count(*) FROM attempts WHERE outcome = 'throttled' AND code = 450",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(throttled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sender_pauses_and_leaves_everyone_untouched() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals = numbered("d", 5);
    let prepared = prepared(&l.path, "spring", &locals);
    let (writer, thread) = Writer::spawn(prepared.ledger).unwrap();
    let transport = Transport::new(settings(server.addr.port())).await.unwrap();
    let summary = pipeline::run(Run {
        ledger: l.path.clone(),
        writer,
        campaign_id: prepared.campaign_id,
        run_id: prepared.run_id,
        transport,
        render: Arc::new(PlainRender {
            from: "bad-sender@sender.test".into(),
        }),
        options: options(2),
        shutdown: Shutdown::new(),
        counters: Arc::new(Counters::default()),
        events: None,
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&summary.end, End::Paused(Stop::Sender(reply)) if reply.code == Some(553)),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&l.path).get("pending"), Some(&5));
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let charged: i64 = conn
        .query_row("SELECT sum(attempts) FROM recipients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(charged, 0);
    assert_eq!(server.accepted_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_access_denied_on_the_first_message_aborts_with_nothing_marked() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["relaydenied1", "e1", "e2"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Refused(reply)) if reply.text.contains("Relay access denied")),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&l.path).get("pending"), Some(&3));
    assert_eq!(server.accepted_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_required_but_not_offered_stops_before_mail() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let mut s = settings(server.addr.port());
    s.security = Security::StartTls;
    let summary = send(
        &l.path,
        people(&numbered("f", 3)),
        s,
        options(2),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Tls(reply)) if reply.text.contains("does not offer STARTTLS")),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&l.path).get("pending"), Some(&3));
    let seen = server.seen.lock().unwrap();
    assert!(
        !seen
            .transcript
            .iter()
            .any(|c| c.starts_with("MAIL") || c.starts_with("AUTH")),
        "{:?}",
        seen.transcript
    );
}

#[tokio::test]
async fn plaintext_to_a_remote_host_or_with_auth_is_refused() {
    let mut s = settings(25);
    s.host = "192.0.2.1".into();
    let err = Transport::new(s).await.unwrap_err().to_string();
    assert!(err.contains("only allowed to a loopback relay"), "{err}");
    let mut s = settings(25);
    s.username = Some("u".into());
    s.password = Some(mailroom::transport::Secret::new("p".into()));
    let err = Transport::new(s).await.unwrap_err().to_string();
    assert!(
        err.contains("refusing to authenticate without TLS"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_fallback_uses_the_next_port_and_records_it() {
    let server = Server::start(ServerOptions::default()).await;
    // A port that refuses: bind, note it, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let l = ledger();
    let mut s = settings(closed);
    s.fallback_ports = vec![server.addr.port()];
    let summary = send(
        &l.path,
        people(&numbered("g", 3)),
        s,
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.port, Some(server.addr.port()));
    assert_eq!(summary.accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_lets_in_flight_messages_finish_and_claims_nothing_new() {
    let server = Server::start(ServerOptions {
        data_delay: Duration::from_millis(300),
        ..ServerOptions::default()
    })
    .await;
    let l = ledger();
    let locals = numbered("h", 20);
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let seen = server.seen.clone();
    let changed = server.changed.clone();
    // Press "Ctrl-C" as soon as two messages are in flight (their DATA has been received).
    let presser = tokio::spawn(async move {
        loop {
            let notified = changed.notified();
            if seen.lock().unwrap().data_received.len() >= 2 {
                stop.trigger();
                return;
            }
            notified.await;
        }
    });
    let s = settings(server.addr.port());
    let summary = send(&l.path, people(&locals), s.clone(), options(2), shutdown).await;
    presser.await.unwrap();
    assert_eq!(summary.end, End::Interrupted);
    let st = states(&l.path);
    let accepted = *st.get("accepted").unwrap_or(&0);
    // The in-flight transactions completed and were recorded; nothing is left `sending`.
    assert!(accepted >= 2, "{st:?}");
    assert_eq!(st.get("sending"), None);
    assert_eq!(accepted + st.get("pending").copied().unwrap_or(0), 20);
    assert_eq!(accepted as usize, server.accepted_count());

    // A second run picks up exactly the rest, on a fresh, in-sync connection.
    let rest = send(&l.path, people(&locals), s, options(2), Shutdown::new()).await;
    assert_eq!(rest.end, End::Finished);
    assert_eq!(states(&l.path).get("accepted"), Some(&20));
    delivery::assert_replies_in_sync(&server, &l.path);
    let per = server.accepted_per_address();
    assert_eq!(per.len(), 20);
    assert!(per.values().all(|n| *n == 1), "{per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressed_addresses_are_recorded_and_not_sent() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    {
        let conn = mailroom_test_conn(&l.path);
        conn.execute(
            "INSERT INTO suppressions (email, reason, source, created_at)
             VALUES ('k1@example.test', 'hard_bounce', 'test', 0)",
            [],
        )
        .unwrap();
    }
    let locals = numbered("k", 3);
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.suppressed, 1);
    assert_eq!(summary.accepted, 2);
    assert_eq!(recipient(&l.path, "k1@example.test").0, "suppressed");
    assert!(
        !server
            .accepted_per_address()
            .contains_key("k1@example.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_daily_cap_bound_the_run() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals = numbered("m", 10);
    let mut limited = options(1);
    limited.limit = Some(4);
    let s = settings(server.addr.port());
    let first = send(
        &l.path,
        people(&locals),
        s.clone(),
        limited,
        Shutdown::new(),
    )
    .await;
    assert_eq!(first.end, End::Limit);
    assert_eq!(first.accepted, 4);
    let mut capped = options(1);
    capped.rate.daily_cap = Some(7);
    let second = send(&l.path, people(&locals), s, capped, Shutdown::new()).await;
    assert_eq!(second.end, End::DailyCap);
    assert_eq!(second.accepted, 3, "7 a day, 4 already accepted today");
    assert_eq!(states(&l.path).get("pending"), Some(&3));
}

/// Runs `mailroom send --yes` on a campaign folder; returns the child with stdout piped.
/// Polls the ledger (another process writes it) until `n` recipients are accepted; panics after
/// 30 s. There is no event to wait on across processes, so this looks every 10 ms.
async fn wait_for_accepted(path: &Path, n: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
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
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn spawn_send(root: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(root)
        .arg("--yes")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_rerun_sends_nobody_twice() {
    let server = Server::start(ServerOptions {
        freeze_after: Some(60),
        ..ServerOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = (0..300)
        .map(|i| format!("reader{i}@example.test"))
        .collect();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nconnections = 3\n\
         messages_per_connection = 40\ncommand_timeout = 5\ndata_timeout = 5",
        server.addr.port()
    );
    let root = delivery::write_campaign(dir.path(), "crash", "news@sender.test", &smtp, &emails);
    let ledger_path = root.join("mailroom.db");

    let mut child = spawn_send(&root);
    // The relay accepts 60 messages, then hangs after the final "." of every later one. Kill the
    // sender (SIGKILL) once all 3 connections have a message stuck there: mid-run, with
    // transactions in flight whose outcome the sender cannot know.
    server.wait_until(|s| s.data_received.len() >= 63).await;
    // Outcomes are committed in batches a few milliseconds apart (a crash turns the last
    // batch's into `unknown`, never into anything else). Kill once the 60 answered ones are in
    // the ledger, so that exactly the 3 hanging transactions are in doubt.
    wait_for_accepted(&ledger_path, 60).await;
    child.kill().unwrap();
    child.wait().unwrap();
    server.thaw();
    let at_kill = server.accepted_count();
    assert_eq!(at_kill, 60);
    let after_crash = states(&ledger_path);
    let accepted_in_ledger = after_crash.get("accepted").copied().unwrap_or(0);
    assert!(accepted_in_ledger as usize <= at_kill);

    // Re-run to completion.
    let out = spawn_send(&root).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
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
    let per = server.accepted_per_address();
    assert!(per.values().all(|n| *n == 1), "duplicates: {per:?}");
    // Every recipient accounted for exactly once: accepted or unknown (the in-flight ones).
    let accepted = finals.get("accepted").copied().unwrap_or(0);
    let unknown = finals.get("unknown").copied().unwrap_or(0);
    assert_eq!(accepted + unknown, 300, "{finals:?}");
    assert_eq!(unknown, recovered, "{finals:?}");
    // The relay has exactly the accepted messages: the 3 stuck ones were never answered (so
    // never accepted) and are not resent without --resend-unknown.
    assert_eq!(per.len() as i64, accepted);
    assert_eq!(server.seen.lock().unwrap().data_received.len(), 300);
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
async fn send_without_a_terminal_requires_yes() {
    let dir = tempfile::tempdir().unwrap();
    let root = delivery::write_campaign(
        dir.path(),
        "noyes",
        "news@sender.test",
        "host = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"",
        &["a@example.test".to_owned()],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Pass --yes"), "{stderr}");
    assert!(
        !root.join("mailroom.db").exists(),
        "nothing written without confirmation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_the_run_retries_deferred_recipients_until_all_are_final() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["retryonce1", "defer1", "n1"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut o = options(1);
    o.wait = true;
    o.retry.backoff = vec![Duration::from_millis(100), Duration::from_millis(200)];
    o.retry.max_attempts = 3;
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        o,
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    // Deferred once, then accepted on the retry.
    let (state, attempts, code, _) = recipient(&l.path, "retryonce1@example.test");
    assert_eq!((state.as_str(), attempts, code), ("accepted", 2, Some(250)));
    // Always deferred: given up after max_attempts.
    let (state, attempts, code, _) = recipient(&l.path, "defer1@example.test");
    assert_eq!((state.as_str(), attempts, code), ("failed", 3, Some(451)));
    assert_eq!(summary.deferred_total, 0);
    assert_eq!(
        server.seen.lock().unwrap().rcpt_count["defer1@example.test"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_a_deferred_recipient_waits_for_the_next_run() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["retryonce2", "n2"].into_iter().map(String::from).collect();
    let mut o = options(1);
    o.retry.backoff = vec![Duration::from_millis(1)];
    let first = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        o.clone(),
        Shutdown::new(),
    )
    .await;
    assert_eq!(
        (first.end, first.deferred, first.accepted),
        (End::Finished, 1, 1)
    );
    // The retry time has passed by the time the next run starts: it is due and goes out once.
    let second = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        o,
        Shutdown::new(),
    )
    .await;
    assert_eq!(second.accepted, 1);
    assert_eq!(recipient(&l.path, "retryonce2@example.test").0, "accepted");
    assert_eq!(server.accepted_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_reports_honestly_and_sets_exit_codes() {
    let server = Server::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"",
        server.addr.port()
    );
    let run = |root: &Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("send")
            .arg(root)
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };

    // Dry run: renders, counts, writes nothing, sends nothing.
    let clean: Vec<String> = (0..3).map(|i| format!("p{i}@example.test")).collect();
    let root = delivery::write_campaign(dir.path(), "clean", "news@sender.test", &smtp, &clean);
    let out = run(&root, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("would send 3 messages"), "{stdout}");
    assert!(!root.join("mailroom.db").exists());
    assert_eq!(server.seen.lock().unwrap().sessions, 0);

    // All accepted: exit 0, and the wording never claims delivery.
    let out = run(&root, &["--yes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("3 accepted by the relay"), "{stdout}");
    assert!(!stdout.to_lowercase().contains("delivered"), "{stdout}");
    assert_eq!(server.accepted_count(), 3);

    // A hard bounce: finished with problems, exit 1.
    let mixed = vec![
        "q1@example.test".to_owned(),
        "unknown9@example.test".to_owned(),
    ];
    let root = delivery::write_campaign(dir.path(), "mixed", "news@sender.test", &smtp, &mixed);
    let out = run(&root, &["--yes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 bounced (hard 1, soft 0)"), "{stdout}");
    assert!(
        stdout.contains("bounced_hard unknown9@example.test"),
        "{stdout}"
    );

    // Another live send holds the ledger (this test process takes the same OS lock a send
    // takes): refused, nothing touched.
    let held = mailroom::store::RunLock::acquire(&root.join("mailroom.db")).unwrap();
    let out = run(&root, &["--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "another `mailroom send` (pid {})",
            std::process::id()
        )),
        "{stderr}"
    );
    drop(held);
}

// ---- TLS and AUTH against the embedded sandbox (real TLS over TCP, no Postfix needed) ----

use mailroom::sandbox::{self, SandboxConfig, Script};

struct Tls {
    _dir: tempfile::TempDir,
    sandbox: sandbox::Sandbox,
    ca: PathBuf,
    maildir: PathBuf,
}

async fn tls_sandbox(config: impl FnOnce(SandboxConfig) -> SandboxConfig) -> Tls {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let sandbox = sandbox::start(config(
        SandboxConfig::new(&maildir).auth("mailer", "s3cret-pass"),
    ))
    .await
    .unwrap();
    let ca = dir.path().join("ca.pem");
    sandbox.write_ca(&ca).unwrap();
    Tls {
        _dir: dir,
        sandbox,
        ca,
        maildir,
    }
}

fn tls_settings(t: &Tls, security: Security, port: u16) -> Settings {
    Settings {
        host: "localhost".into(),
        security,
        username: Some("mailer".into()),
        password: Some(mailroom::transport::Secret::new("s3cret-pass".into())),
        ca_file: Some(t.ca.clone()),
        ..settings(port)
    }
}

/// Recipient → number of stored messages, from the sandbox Maildir's Delivered-To headers.
fn maildir_counts(maildir: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(maildir.join("new"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines().take_while(|l| !l.is_empty()) {
            if let Some(rcpt) = line.strip_prefix("Delivered-To: ") {
                *counts.entry(rcpt.trim().to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_to_the_sandbox_store_each_message_once() {
    let script = Script::parse(
        r#"
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
"#,
    )
    .unwrap();
    let t = tls_sandbox(|c| c.script(script)).await;
    let l = ledger();
    let mut locals = numbered("s", 12);
    locals.extend(["gone", "full", "lost"].map(String::from));
    let summary = send(
        &l.path,
        people(&locals),
        tls_settings(&t, Security::StartTls, t.sandbox.addr().port()),
        options(3),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 12);
    assert_eq!(
        recipient(&l.path, "gone@example.test").3.as_deref(),
        Some("5.1.1")
    );
    assert_eq!(recipient(&l.path, "gone@example.test").0, "bounced_hard");
    assert_eq!(recipient(&l.path, "full@example.test").0, "bounced_soft");
    // Dropped after the final "." with no reply: unknown, never "accepted".
    assert_eq!(recipient(&l.path, "lost@example.test").0, "unknown");
    let counts = maildir_counts(&t.maildir);
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // The password never reached the transcript (the sandbox redacts AUTH payloads) nor the
    // ledger.
    let transcript = t.sandbox.transcript().join("\n");
    assert!(transcript.contains("STARTTLS"));
    assert!(!transcript.contains("s3cret-pass"));
    let db = std::fs::read(&l.path).unwrap();
    assert!(!db.windows(11).any(|w| w == b"s3cret-pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_to_the_sandbox_works() {
    let t = tls_sandbox(|c| c.implicit_tls(true)).await;
    let l = ledger();
    let summary = send(
        &l.path,
        people(&numbered("i", 4)),
        tls_settings(&t, Security::Tls, t.sandbox.addr().port()),
        options(2),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 4);
    assert_eq!(maildir_counts(&t.maildir).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_aborts_the_run_with_nothing_marked() {
    let t = tls_sandbox(|c| c).await;
    let l = ledger();
    let mut s = tls_settings(&t, Security::StartTls, t.sandbox.addr().port());
    s.password = Some(mailroom::transport::Secret::new("wrong".into()));
    let summary = send(
        &l.path,
        people(&numbered("w", 5)),
        s,
        options(2),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Auth(_))),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&l.path).get("pending"), Some(&5));
    assert!(!t.sandbox.transcript().iter().any(|c| c.starts_with("MAIL")));
    assert!(maildir_counts(&t.maildir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tls_handshake_never_falls_back_to_plaintext() {
    for script in [
        "[session]\ntls_handshake = \"abort\"",
        "[session]\nstarttls = false",
    ] {
        let script = Script::parse(script).unwrap();
        let t = tls_sandbox(|c| c.script(script)).await;
        let l = ledger();
        let s = tls_settings(&t, Security::StartTls, t.sandbox.addr().port());
        let summary = send(
            &l.path,
            people(&numbered("t", 2)),
            s,
            options(1),
            Shutdown::new(),
        )
        .await;
        assert!(
            matches!(&summary.end, End::Aborted(Stop::Tls(_))),
            "{:?}",
            summary.end
        );
        let transcript = t.sandbox.transcript();
        assert!(
            !transcript
                .iter()
                .any(|c| c.starts_with("AUTH") || c.starts_with("MAIL")),
            "{transcript:?}"
        );
        assert_eq!(states(&l.path).get("pending"), Some(&2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let t = tls_sandbox(|c| c).await;
    let l = ledger();
    let mut s = tls_settings(&t, Security::StartTls, t.sandbox.addr().port());
    s.ca_file = None;
    let summary = send(
        &l.path,
        people(&numbered("u", 1)),
        s,
        options(1),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Tls(reply)) if reply.text.contains("certificate")),
        "{:?}",
        summary.end
    );
    assert!(!t.sandbox.transcript().iter().any(|c| c.starts_with("AUTH")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_relay_at_the_greeting_pauses_the_run() {
    let script = Script::parse("[session]\ngreeting = \"421 4.3.2 try later\"").unwrap();
    let t = tls_sandbox(|c| c.script(script)).await;
    let l = ledger();
    let s = tls_settings(&t, Security::StartTls, t.sandbox.addr().port());
    let summary = send(
        &l.path,
        people(&numbered("b", 2)),
        s,
        options(1),
        Shutdown::new(),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Paused(Stop::Busy(reply)) if reply.code == Some(421)),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&l.path).get("pending"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pipelining_rejections_are_read_in_order_and_the_session_stays_in_step() {
    let server = Server::start(ServerOptions {
        pipelining: true,
        ..ServerOptions::default()
    })
    .await;
    let l = ledger();
    let locals: Vec<String> = ["ok1", "unknown1", "defer1", "full1", "throttleonce1", "ok2"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(
        recipient(&l.path, "unknown1@example.test").0,
        "bounced_hard"
    );
    assert_eq!(recipient(&l.path, "defer1@example.test").0, "deferred");
    assert_eq!(recipient(&l.path, "full1@example.test").0, "bounced_soft");
    let (state, attempts, _, _) = recipient(&l.path, "throttleonce1@example.test");
    assert_eq!((state.as_str(), attempts), ("accepted", 1));
    assert_eq!(summary.accepted, 3);
    delivery::assert_replies_in_sync(&server, &l.path);
    let seen = server.seen.lock().unwrap();
    // Every transaction went out as one MAIL+RCPT+DATA write, on one connection.
    assert_eq!(seen.pipelined_mail, 7, "{:?}", seen.transcript);
    assert_eq!(seen.sessions, 1);
    let rsets = seen
        .transcript
        .iter()
        .filter(|c| c.as_str() == "RSET")
        .count();
    assert_eq!(rsets, 4);
}

/// (step, code, outcome) of every attempt of one address, in order.
fn attempt_rows(path: &Path, email: &str) -> Vec<(String, Option<i64>, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT a.step, a.code, a.outcome FROM attempts a
             JOIN recipients r ON r.id = a.recipient_id WHERE r.email = ?1 ORDER BY a.id",
        )
        .unwrap();
    stmt.query_map([email], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_reply_to_mail_drops_the_session_before_the_body_and_every_250_matches() {
    extra_reply_to_mail(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pipelining_an_extra_reply_to_mail_drops_the_session_before_the_body() {
    extra_reply_to_mail(true).await;
}

async fn extra_reply_to_mail(pipelining: bool) {
    let server = Server::start(ServerOptions {
        extra_mail_reply_sessions: 1,
        pipelining,
        ..ServerOptions::default()
    })
    .await;
    let l = ledger();
    let locals = numbered("p", 3);
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 3);
    assert_eq!(summary.deferred + summary.unknown, 0);
    assert_eq!(states(&l.path).get("accepted"), Some(&3));
    // DATA got RCPT's 250 instead of 354 on the first connection: the body never went out
    // there, and a fresh connection carried every message once.
    assert_eq!(server.seen.lock().unwrap().sessions, 2);
    assert_eq!(server.seen.lock().unwrap().data_received.len(), 3);
    assert!(server.accepted_per_address().values().all(|n| *n == 1));
    assert_eq!(server.accepted_per_address().len(), 3);
    delivery::assert_replies_in_sync(&server, &l.path);
    let first = attempt_rows(&l.path, "p0@example.test");
    assert_eq!(
        first,
        vec![
            ("data".to_owned(), Some(250), "out_of_step".to_owned()),
            ("message".to_owned(), Some(250), "accepted".to_owned()),
        ]
    );
    // Giving the claim back did not charge the recipient.
    assert_eq!(recipient(&l.path, "p0@example.test").1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_replies_after_the_final_dot_never_turn_an_acceptance_into_a_retry() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["a1", "dupqueued1", "a2", "dot3541", "a3"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 4);
    assert_eq!(summary.unknown, 1);
    assert_eq!(summary.deferred, 0);
    // A 354 after the final dot answers nothing: the relay may have the message.
    assert_eq!(recipient(&l.path, "dot3541@example.test").0, "unknown");
    for a in ["a1", "dupqueued1", "a2", "a3"] {
        assert_eq!(
            recipient(&l.path, &format!("{a}@example.test")).0,
            "accepted"
        );
    }
    // a2 read the stray 250 as MAIL's reply, was caught at DATA and sent on a new connection;
    // dot3541's connection was dropped too: three sessions, every body received once.
    assert_eq!(server.seen.lock().unwrap().sessions, 3);
    assert_eq!(server.seen.lock().unwrap().data_received.len(), 5);
    assert!(server.accepted_per_address().values().all(|n| *n == 1));
    delivery::assert_replies_in_sync(&server, &l.path);
    assert_eq!(
        attempt_rows(&l.path, "a2@example.test")
            .iter()
            .map(|(step, _, outcome)| format!("{step}:{outcome}"))
            .collect::<Vec<_>>(),
        ["data:out_of_step", "message:accepted"]
    );
}

/// [`send`] with a chosen renderer; returns the summary and what the import reported.
async fn send_with(
    path: &Path,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    render: Arc<dyn mailroom::pipeline::Render>,
) -> (Summary, mailroom::store::ImportCount) {
    delivery::run_once(
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

fn plain() -> Arc<dyn mailroom::pipeline::Render> {
    Arc::new(PlainRender {
        from: "news@sender.test".into(),
    })
}

/// The body the server accepted for `rcpt` (the last one, if several).
fn body_of(server: &Server, rcpt: &str) -> String {
    let seen = server.seen.lock().unwrap();
    let (_, body) = seen.accepted.iter().rev().find(|(r, _)| r == rcpt).unwrap();
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_send_reconciles_the_ledger_with_the_contacts_file() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let port = server.addr.port();
    let mut first = people(&numbered("c", 3));
    // Run 1 sends c0 only.
    let mut limited = options(1);
    limited.limit = Some(1);
    let (summary, imported) =
        send_with(&l.path, first.clone(), settings(port), limited, plain()).await;
    assert_eq!((summary.accepted, imported.inserted), (1, 3));

    // Run 2: c1 left the file (unsubscribed), c2's fields were corrected.
    let c2 = first.pop().unwrap();
    let c2_fixed = NewRecipient {
        fields: "{\"n\":\"fixed\"}".into(),
        name: Some("Corrected Name".into()),
        ..c2.clone()
    };
    let without_c1 = vec![first[0].clone(), c2_fixed.clone()];
    let (summary, imported) =
        send_with(&l.path, without_c1, settings(port), options(1), plain()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 1);
    assert_eq!((imported.refreshed, imported.removed), (1, 1));
    assert_eq!(server.accepted_per_address().get("c1@example.test"), None);
    assert!(body_of(&server, "c2@example.test").contains("fixed"));
    // c1 is still pending (never sent), marked as out of the file.
    let conn = rusqlite::Connection::open(&l.path).unwrap();
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
    let report = mailroom::report::Ledger::open(&l.path).unwrap();
    let summary = report.find_campaign(Some("spring")).unwrap();
    let totals = report.campaign_report(&summary).unwrap().totals;
    assert_eq!(
        (totals.recipients, totals.accepted, totals.pending),
        (3, 2, 1)
    );
    // Nothing is due: a run over the same file sends nothing and leaves c1 alone.
    let (again, imported) = send_with(
        &l.path,
        vec![first[0].clone(), c2_fixed.clone()],
        settings(port),
        options(1),
        plain(),
    )
    .await;
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
    let (back, imported) = send_with(&l.path, all, settings(port), options(1), plain()).await;
    assert_eq!(
        (back.accepted, imported.refreshed, imported.removed),
        (1, 1, 0)
    );
    assert!(server.accepted_per_address().values().all(|n| *n == 1));
    assert_eq!(server.accepted_per_address().len(), 3);
    let fields: String = conn
        .query_row(
            "SELECT fields FROM recipients WHERE email = 'c2@example.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(fields.contains("fixed"), "{fields}");
}

/// Renders like [`PlainRender`], except for addresses starting with "broken".
struct SometimesBroken;

impl mailroom::pipeline::Render for SometimesBroken {
    fn render(
        &self,
        row: &mailroom::store::DueRow,
    ) -> Result<mailroom::pipeline::Outgoing, String> {
        if row.email.starts_with("broken") {
            return Err("line 3: header X-City: the value contains a line break".into());
        }
        PlainRender {
            from: "news@sender.test".into(),
        }
        .render(row)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_built_fails_only_its_row() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["ok1", "broken1", "ok2"]
        .into_iter()
        .map(String::from)
        .collect();
    let (summary, _) = send_with(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Arc::new(SometimesBroken),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!((summary.accepted, summary.failed), (2, 1));
    let (state, attempts, _, _) = recipient(&l.path, "broken1@example.test");
    assert_eq!((state.as_str(), attempts), ("failed", 1));
    assert_eq!(
        attempt_rows(&l.path, "broken1@example.test"),
        vec![("render".to_owned(), None, "failed".to_owned())]
    );
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let reason: String = conn
        .query_row(
            "SELECT last_reply FROM recipients WHERE email = 'broken1@example.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("line break"), "{reason}");
    assert_eq!(
        server.accepted_per_address().get("broken1@example.test"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_skips_rows_that_check_rejects_and_names_their_line() {
    let server = Server::start(ServerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"",
        server.addr.port()
    );
    let root = delivery::write_campaign(dir.path(), "city", "news@sender.test", &smtp, &[]);
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
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("send")
            .arg(&root)
            .arg("--yes")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let dry = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["send", "--dry-run"])
        .arg(&root)
        .output()
        .unwrap();
    let (dry_out, dry_err) = (
        String::from_utf8_lossy(&dry.stdout),
        String::from_utf8_lossy(&dry.stderr),
    );
    assert_eq!(dry.status.code(), Some(1), "{dry_out}\n{dry_err}");
    assert!(dry_out.contains("would send 2 messages"), "{dry_out}");
    assert!(
        dry_err.contains("contacts.csv:3: a2@example.test: would not be sent"),
        "{dry_err}"
    );
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("contacts.csv:3: a2@example.test: not imported"),
        "{stderr}"
    );
    assert!(
        stdout.contains("2 accepted by the relay"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(server.accepted_count(), 2);
    assert_eq!(server.accepted_per_address().get("a2@example.test"), None);

    // The fixed row goes out on the next send, once; the others are not sent again.
    std::fs::write(root.join("contacts.csv"), csv("Nice")).unwrap();
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 accepted by the relay"), "{stdout}");
    assert!(body_of(&server, "a2@example.test").contains("X-City: Nice"));
    assert!(server.accepted_per_address().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_left_after_repeated_slow_down_replies_end_the_run_as_throttled() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let locals: Vec<String> = ["t1", "throttlealways1", "t2"]
        .into_iter()
        .map(String::from)
        .collect();
    let summary = send(
        &l.path,
        people(&locals),
        settings(server.addr.port()),
        options(1),
        Shutdown::new(),
    )
    .await;
    // Not "finished": one recipient is still pending because the relay kept saying slow down.
    assert_eq!(summary.end, End::Throttled(1));
    assert_eq!(summary.accepted, 2);
    let (state, attempts, _, _) = recipient(&l.path, "throttlealways1@example.test");
    assert_eq!((state.as_str(), attempts), ("pending", 0));
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let outcome: String = conn
        .query_row(
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "throttled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_failure_mid_run_halts_the_workers_and_closes_the_run() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    drop(mailroom::store::open(&l.path).unwrap());
    // The ledger refuses to record one outcome (as a full disk would): the writer fails for good.
    rusqlite::Connection::open(&l.path)
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
    let settings = settings(server.addr.port());
    let prepared = prepared(&l.path, "spring", &locals);
    let run_id = prepared.run_id;
    let (writer, thread) = Writer::spawn(prepared.ledger).unwrap();
    let mut opts = options(1);
    opts.wait = true;
    let result = pipeline::run(Run {
        ledger: l.path.clone(),
        writer,
        campaign_id: prepared.campaign_id,
        run_id,
        transport: Transport::new(settings).await.unwrap(),
        render: plain(),
        options: opts,
        shutdown: Shutdown::new(),
        counters: Arc::new(Counters::default()),
        events: None,
    })
    .await;
    let err = result.expect_err("the run must fail");
    assert!(err.to_string().contains("disk says no"), "{err}");
    assert!(
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .is_err()
    );
    // Every worker stopped before `run` returned: nothing more reaches the relay afterwards.
    let sent = server.seen.lock().unwrap().data_received.len();
    assert!(sent < locals.len(), "{sent}");
    // The run row is closed with an outcome, not left open for the next run to call crashed.
    let conn = rusqlite::Connection::open(&l.path).unwrap();
    let (outcome, finished): (Option<String>, Option<i64>) = conn
        .query_row(
            "SELECT outcome, finished_at FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(outcome.as_deref(), Some("aborted"));
    assert!(finished.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_refusal_of_the_sender_is_not_charged_to_recipients() {
    let server = Server::start(ServerOptions::default()).await;
    let l = ledger();
    let (summary, _) = send_with(
        &l.path,
        people(&numbered("m", 2)),
        settings(server.addr.port()),
        options(1),
        Arc::new(PlainRender {
            from: "tempfail@sender.test".into(),
        }),
    )
    .await;
    assert!(
        matches!(&summary.end, End::Paused(Stop::Sender(reply)) if reply.code == Some(451)),
        "{:?}",
        summary.end
    );
    assert_eq!(summary.deferred + summary.failed, 0);
    for m in ["m0@example.test", "m1@example.test"] {
        let (state, attempts, _, _) = recipient(&l.path, m);
        assert_eq!((state.as_str(), attempts), ("pending", 0), "{m}");
    }
    let rows = attempt_rows(&l.path, "m0@example.test");
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| *r == ("mail".to_owned(), Some(451), "throttled".to_owned())),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_like_ctrl_c_and_commits_what_the_relay_answered() {
    let server = Server::start(ServerOptions {
        data_delay: Duration::from_millis(200),
        ..ServerOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = (0..40).map(|i| format!("t{i}@example.test")).collect();
    let smtp = format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nconnections = 1",
        server.addr.port()
    );
    let root = delivery::write_campaign(dir.path(), "term", "news@sender.test", &smtp, &emails);
    let ledger_path = root.join("mailroom.db");
    let child = spawn_send(&root);
    server.wait_until(|s| s.data_received.len() >= 3).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{:?}\n{stdout}", out.status);
    assert!(stdout.contains("Interrupted"), "{stdout}");
    // The message in flight finished and was recorded; nothing is left `sending`.
    let finals = states(&ledger_path);
    assert_eq!(finals.get("sending"), None, "{finals:?}");
    let accepted = finals.get("accepted").copied().unwrap_or(0) as usize;
    assert_eq!(accepted, server.accepted_count(), "{finals:?}");
    assert!((3..40).contains(&accepted), "{finals:?}");
    let conn = rusqlite::Connection::open(&ledger_path).unwrap();
    let outcome: String = conn
        .query_row(
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(outcome, "interrupted");
}

#[test]
fn import_validation_keeps_file_order_and_names_every_unbuildable_row() {
    let dir = tempfile::tempdir().unwrap();
    let root = delivery::write_campaign(
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

/// `pipeline::prepare` of campaign `campaign` with the contacts `locals` (recovery and import).
fn prepared(path: &Path, campaign: &str, locals: &[String]) -> pipeline::Prepared {
    let rows = people(locals).into_iter().map(Ok::<_, String>);
    pipeline::prepare(path, campaign, rows, "127.0.0.1", "none").unwrap()
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

/// The ledger at `path`, created and migrated by mailroom, as a raw connection for seeding and
/// inspecting it in tests (mailroom itself never hands out its connection).
#[allow(dead_code)]
fn mailroom_test_conn(path: &std::path::Path) -> rusqlite::Connection {
    drop(mailroom::store::open(path).unwrap());
    rusqlite::Connection::open(path).unwrap()
}
