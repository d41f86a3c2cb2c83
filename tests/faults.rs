//! Fault injection: the real sender (pipeline + transport + ledger writer, a real SQLite file)
//! against the sandbox server over TCP with STARTTLS and AUTH, one scripted fault per test. Each
//! test asserts the ledger (plain SQL on the file) and what the sandbox stored or saw.
#![allow(clippy::unwrap_used)]

#[path = "common/sandbox.rs"]
mod client;
#[path = "common/delivery.rs"]
mod delivery;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use client::maildir_messages;
use mailroom::pipeline::{
    End, Options, Outgoing, RateOptions, Render, RetryOptions, Stop, Summary,
};
use mailroom::sandbox::{self, Sandbox, SandboxConfig, Script};
use mailroom::shutdown::Shutdown;
use mailroom::store::{DueRow, NewRecipient};
use mailroom::transport::{Secret, Security, Settings};

const USER: &str = "sender@demo.test";
const PASSWORD: &str = "correct horse";

/// One test's world: a sandbox with `script`, its CA on disk, and a ledger file.
struct Lab {
    dir: tempfile::TempDir,
    sandbox: Sandbox,
    ca: PathBuf,
}

impl Lab {
    async fn new(script: &str) -> Lab {
        client::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let config = SandboxConfig::new(dir.path().join("maildir"))
            .bounce_maildir(dir.path().join("bounces"))
            .auth(USER, PASSWORD)
            .script(Script::parse(script).unwrap());
        let sandbox = sandbox::start(config).await.unwrap();
        let ca = dir.path().join("ca.pem");
        sandbox.write_ca(&ca).unwrap();
        Lab { dir, sandbox, ca }
    }

    fn ledger(&self) -> PathBuf {
        self.dir.path().join("mailroom.db")
    }

    /// STARTTLS + AUTH against the sandbox, trusting its CA, short timeouts.
    fn settings(&self) -> Settings {
        Settings {
            host: "localhost".into(),
            port: self.sandbox.addr().port(),
            security: Security::StartTls,
            username: Some(USER.into()),
            password: Some(Secret::new(PASSWORD.into())),
            ca_file: Some(self.ca.clone()),
            hello_name: Some("client.test".into()),
            fallback_ports: vec![],
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            messages_per_connection: 100,
        }
    }

    /// Runs the sender once over `emails` (imported on the first run, kept on later ones).
    async fn send(&self, emails: &[&str], settings: Settings, options: Options) -> Summary {
        let people = recipients(emails);
        let render = Arc::new(TestRender);
        delivery::run_once(
            &self.ledger(),
            "faults",
            people,
            settings,
            options,
            render,
            Shutdown::new(),
        )
        .await
        .0
    }

    /// The Maildir files delivered to `email` (by the sandbox's Delivered-To line).
    fn copies_for(&self, email: &str) -> usize {
        let needle = format!("Delivered-To: {email}\r\n");
        maildir_messages(self.sandbox.maildir())
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains(&needle))
            .count()
    }

    fn stored(&self) -> usize {
        maildir_messages(self.sandbox.maildir()).len()
    }

    fn transcript_has(&self, verb: &str) -> bool {
        self.sandbox
            .transcript()
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with(verb))
    }
}

fn options() -> Options {
    Options {
        connections: 2,
        rate: RateOptions {
            per_second: Some(10_000.0),
            ..RateOptions::default()
        },
        throttle_backoff: Duration::from_millis(50),
        throttle_max: Duration::from_millis(200),
        ..Options::default()
    }
}

struct TestRender;

impl Render for TestRender {
    fn render(&self, row: &DueRow) -> Result<Outgoing, String> {
        let message_id = format!("{}@faults.test", row.token);
        let bytes = format!(
            "From: News <news@demo.test>\r\nTo: <{to}>\r\nSubject: fault test\r\nMessage-ID: <{message_id}>\r\nX-Mailroom-Token: {token}\r\n\r\nHello.\r\n",
            to = row.email,
            token = row.token,
        );
        Ok(Outgoing {
            envelope_from: format!("bounces+{}@demo.test", row.token),
            envelope_to: row.email.clone(),
            message_id,
            bytes: bytes.into_bytes(),
        })
    }
}

fn recipients(emails: &[&str]) -> Vec<NewRecipient> {
    emails
        .iter()
        .enumerate()
        .map(|(i, email)| NewRecipient {
            email: (*email).to_owned(),
            domain: email.rsplit('@').next().unwrap().to_owned(),
            name: None,
            line: i as u64 + 2,
            token: format!("t{i:04}{}", email.len()),
            message_id: format!("t{i:04}{}@faults.test", email.len()),
            fields: "{}".to_owned(),
        })
        .collect()
}

/// (state, attempts, last_code, last_enhanced) of one recipient.
fn row(path: &Path, email: &str) -> (String, i64, Option<i64>, Option<String>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT state, attempts, last_code, last_enhanced FROM recipients WHERE email = ?1",
        [email],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

fn states(path: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, count(*) FROM recipients GROUP BY state")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (step, code, enhanced, outcome) of every attempt for one recipient, in order.
fn attempts(path: &Path, email: &str) -> Vec<(String, Option<i64>, Option<String>, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT a.step, a.code, a.enhanced, a.outcome FROM attempts a
             JOIN recipients r ON r.id = a.recipient_id WHERE r.email = ?1 ORDER BY a.id",
        )
        .unwrap();
    stmt.query_map([email], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn attempt_count(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
        .unwrap()
}

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

const THREE: [&str; 3] = ["ann@example.org", "bob@example.org", "cy@example.net"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_421_marks_nothing_and_sends_nothing() {
    let lab = Lab::new("[session]\ngreeting = \"421 4.3.2 service shutting down\"\n").await;
    let summary = lab.send(&THREE, lab.settings(), options()).await;
    // The run stops (aborted or paused, never "finished") and says why.
    match &summary.end {
        End::Paused(Stop::Busy(reply)) => assert_eq!(reply.code, Some(421), "{reply:?}"),
        other => panic!("a relay refusing every session must stop the run: {other:?}"),
    }
    assert_eq!(states(&lab.ledger()), map(&[("pending", 3)]));
    assert_eq!(attempt_count(&lab.ledger()), 0);
    assert!(!lab.transcript_has("MAIL"));
    assert_eq!(lab.stored(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_421_after_a_message_reconnects_and_sends_each_once() {
    // "421 too many messages in this session" at the next MAIL: the sender must reconnect and
    // carry on, with nothing lost and nothing sent twice.
    let lab = Lab::new("[session]\ndisconnect_after_messages = 1\n").await;
    let mut opts = options();
    opts.connections = 1;
    let summary = lab.send(&THREE, lab.settings(), opts).await;
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(states(&lab.ledger()), map(&[("accepted", 3)]));
    for email in THREE {
        assert_eq!(lab.copies_for(email), 1, "{email}");
    }
    let sessions = lab
        .sandbox
        .transcript()
        .iter()
        .filter(|l| *l == "STARTTLS")
        .count();
    assert!(
        sessions >= 3,
        "one message per session: {sessions} sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_421_at_one_recipient_leaves_it_unsent_and_not_final() {
    let lab = Lab::new(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"disconnect\"\nreply = \"421 4.4.2 closing, too busy\"\n",
    )
    .await;
    let mut opts = options();
    opts.connections = 1;
    lab.send(&THREE, lab.settings(), opts).await;
    // 421 is about the server, not the address: never a bounce, never charged as delivered.
    let (state, _, _, _) = row(&lab.ledger(), "bob@example.org");
    assert!(
        matches!(state.as_str(), "pending" | "deferred"),
        "bob is {state}"
    );
    let bob = attempts(&lab.ledger(), "bob@example.org");
    assert!(
        !bob.is_empty() && bob.iter().all(|a| a.1 == Some(421) && a.0 == "rcpt"),
        "{bob:?}"
    );
    assert_eq!(lab.copies_for("bob@example.org"), 0);
    for email in ["ann@example.org", "cy@example.net"] {
        assert_eq!(row(&lab.ledger(), email).0, "accepted", "{email}");
        assert_eq!(lab.copies_for(email), 1, "{email}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_after_data_is_unknown_and_not_resent() {
    let lab = Lab::new("[[rule]]\nrecipient = \"bob@example.org\"\naction = \"drop\"\n").await;
    let summary = lab.send(&THREE, lab.settings(), options()).await;
    assert_eq!((summary.accepted, summary.unknown), (2, 1), "{summary:?}");
    let (state, attempts_made, _, _) = row(&lab.ledger(), "bob@example.org");
    assert_eq!((state.as_str(), attempts_made), ("unknown", 1));
    assert_eq!(
        lab.copies_for("bob@example.org"),
        0,
        "the sandbox stored nothing for a drop"
    );
    let rcpts_before = lab
        .sandbox
        .transcript()
        .iter()
        .filter(|l| l.contains("bob@example.org"))
        .count();
    // A second run must not send it again (the relay may have it).
    let again = lab.send(&THREE, lab.settings(), options()).await;
    assert_eq!((again.accepted, again.unknown), (0, 0), "{again:?}");
    let rcpts_after = lab
        .sandbox
        .transcript()
        .iter()
        .filter(|l| l.contains("bob@example.org"))
        .count();
    assert_eq!(
        rcpts_before, rcpts_after,
        "bob was offered to the relay again"
    );
    assert_eq!(row(&lab.ledger(), "bob@example.org").0, "unknown");
    assert_eq!(
        states(&lab.ledger()),
        map(&[("accepted", 2), ("unknown", 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_450_then_accepted_on_the_next_run_exactly_once() {
    let lab =
        Lab::new("[[rule]]\nrecipient = \"*@grey.example\"\naction = \"greylist\"\nattempts = 1\n")
            .await;
    let emails = ["ann@example.org", "gus@grey.example"];
    let mut opts = options();
    // A zero back-off makes the deferred row due at once, so the second run retries it without
    // waiting on the clock.
    opts.retry = RetryOptions {
        backoff: vec![Duration::ZERO],
        max_attempts: 3,
        max_age: Duration::from_secs(3600),
    };
    let first = lab.send(&emails, lab.settings(), opts.clone()).await;
    assert_eq!((first.accepted, first.deferred), (1, 1), "{first:?}");
    let (state, _, code, enhanced) = row(&lab.ledger(), "gus@grey.example");
    assert_eq!(
        (state.as_str(), code, enhanced.as_deref()),
        ("deferred", Some(450), Some("4.2.0"))
    );
    assert_eq!(lab.copies_for("gus@grey.example"), 0);

    let second = lab.send(&emails, lab.settings(), opts).await;
    assert_eq!(
        second.accepted, 1,
        "only the deferred recipient is sent again: {second:?}"
    );
    assert_eq!(states(&lab.ledger()), map(&[("accepted", 2)]));
    let gus = attempts(&lab.ledger(), "gus@grey.example");
    let outcomes: Vec<(Option<i64>, &str)> = gus.iter().map(|a| (a.1, a.3.as_str())).collect();
    assert_eq!(
        outcomes,
        [(Some(450), "deferred"), (Some(250), "accepted")],
        "{gus:?}"
    );
    assert_eq!(lab.copies_for("gus@grey.example"), 1);
    assert_eq!(lab.copies_for("ann@example.org"), 1);
}

// With `Options::wait` the same run sleeps until the retry time and sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_450_is_retried_within_a_waiting_run() {
    let lab =
        Lab::new("[[rule]]\nrecipient = \"*@grey.example\"\naction = \"greylist\"\nattempts = 1\n")
            .await;
    let emails = ["ann@example.org", "gus@grey.example"];
    let mut opts = options();
    opts.wait = true;
    opts.retry = RetryOptions {
        backoff: vec![Duration::from_millis(100)],
        max_attempts: 3,
        max_age: Duration::from_secs(3600),
    };
    let summary = lab.send(&emails, lab.settings(), opts).await;
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(states(&lab.ledger()), map(&[("accepted", 2)]));
    let gus = attempts(&lab.ledger(), "gus@grey.example");
    let outcomes: Vec<(Option<i64>, &str)> = gus.iter().map(|a| (a.1, a.3.as_str())).collect();
    assert_eq!(
        outcomes,
        [(Some(450), "deferred"), (Some(250), "accepted")],
        "{gus:?}"
    );
    assert_eq!(lab.copies_for("gus@grey.example"), 1);
    assert_eq!(lab.copies_for("ann@example.org"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_busy_452_is_deferred_with_a_retry_time() {
    let lab = Lab::new(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"reject\"\nreply = \"452 4.2.2 mailbox over quota, try later\"\n",
    )
    .await;
    lab.send(&THREE, lab.settings(), options()).await;
    let (state, _, code, enhanced) = row(&lab.ledger(), "bob@example.org");
    assert_eq!(
        (state.as_str(), code, enhanced.as_deref()),
        ("deferred", Some(452), Some("4.2.2"))
    );
    let conn = rusqlite::Connection::open(lab.ledger()).unwrap();
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
    assert_eq!(lab.copies_for("bob@example.org"), 0);
    assert_eq!(
        states(&lab.ledger()),
        map(&[("accepted", 2), ("deferred", 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_unknown_550_5_1_1_is_a_hard_bounce() {
    let lab = Lab::new(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"reject\"\nreply = \"550 5.1.1 user unknown\"\n",
    )
    .await;
    lab.send(&THREE, lab.settings(), options()).await;
    let (state, attempts_made, code, enhanced) = row(&lab.ledger(), "bob@example.org");
    assert_eq!(
        (state.as_str(), attempts_made, code, enhanced.as_deref()),
        ("bounced_hard", 1, Some(550), Some("5.1.1"))
    );
    let bob = attempts(&lab.ledger(), "bob@example.org");
    assert_eq!(bob[0].0, "rcpt");
    assert_eq!(
        states(&lab.ledger()),
        map(&[("accepted", 2), ("bounced_hard", 1)])
    );
    assert_eq!(lab.stored(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_full_552_5_2_2_after_data_is_a_soft_bounce() {
    let lab = Lab::new(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"reject\"\nreply = \"552 5.2.2 mailbox full\"\nat = \"message\"\n",
    )
    .await;
    lab.send(&THREE, lab.settings(), options()).await;
    let (state, _, code, enhanced) = row(&lab.ledger(), "bob@example.org");
    assert_eq!(
        (state.as_str(), code, enhanced.as_deref()),
        ("bounced_soft", Some(552), Some("5.2.2"))
    );
    assert_eq!(attempts(&lab.ledger(), "bob@example.org")[0].0, "message");
    assert_eq!(lab.copies_for("bob@example.org"), 0);
    assert_eq!(
        states(&lab.ledger()),
        map(&[("accepted", 2), ("bounced_soft", 1)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_535_aborts_the_run_and_marks_nothing() {
    let lab = Lab::new("[session]\nauth = \"fail\"\n").await;
    let summary = lab.send(&THREE, lab.settings(), options()).await;
    assert!(matches!(summary.end, End::Aborted(_)), "{summary:?}");
    assert_eq!(states(&lab.ledger()), map(&[("pending", 3)]));
    assert!(!lab.transcript_has("MAIL"));
    assert!(lab.transcript_has("AUTH"));
    assert_eq!(lab.stored(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_starttls_is_refused_before_any_auth_or_mail() {
    let lab = Lab::new("[session]\nstarttls = false\n").await;
    let summary = lab.send(&THREE, lab.settings(), options()).await;
    assert!(matches!(summary.end, End::Aborted(_)), "{summary:?}");
    let transcript = lab.sandbox.transcript();
    assert!(
        transcript.iter().any(|l| l.starts_with("EHLO")),
        "{transcript:?}"
    );
    assert!(
        !lab.transcript_has("AUTH"),
        "credentials offered without TLS: {transcript:?}"
    );
    assert!(!lab.transcript_has("MAIL"), "{transcript:?}");
    assert_eq!(states(&lab.ledger()), map(&[("pending", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_is_refused() {
    let lab = Lab::new("").await;
    let mut settings = lab.settings();
    settings.ca_file = None;
    let summary = lab.send(&THREE, settings, options()).await;
    assert!(matches!(summary.end, End::Aborted(_)), "{summary:?}");
    assert!(lab.transcript_has("STARTTLS"));
    assert!(!lab.transcript_has("AUTH"));
    assert!(!lab.transcript_has("MAIL"));
    assert_eq!(states(&lab.ledger()), map(&[("pending", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_failure_is_refused() {
    let lab = Lab::new("[session]\ntls_handshake = \"abort\"\n").await;
    let summary = lab.send(&THREE, lab.settings(), options()).await;
    assert!(matches!(summary.end, End::Aborted(_)), "{summary:?}");
    assert!(!lab.transcript_has("AUTH"));
    assert_eq!(states(&lab.ledger()), map(&[("pending", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_beyond_the_timeout_is_deferred_and_the_run_ends() {
    // The sandbox would answer bob's RCPT after 60 s; the sender gives up after 300 ms.
    let lab = Lab::new(
        "[[rule]]\nrecipient = \"bob@example.org\"\naction = \"accept\"\ndelay_ms = 60000\n",
    )
    .await;
    let mut settings = lab.settings();
    settings.command_timeout = Duration::from_millis(300);
    let run = lab.send(&THREE, settings, options());
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run hung on a slow server");
    assert_eq!((summary.accepted, summary.deferred), (2, 1), "{summary:?}");
    let (state, _, _, _) = row(&lab.ledger(), "bob@example.org");
    assert_eq!(state, "deferred");
    assert_eq!(lab.copies_for("bob@example.org"), 0);
    for email in ["ann@example.org", "cy@example.net"] {
        assert_eq!(row(&lab.ledger(), email).0, "accepted", "{email}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_writer_on_the_ledger_does_not_stop_a_running_send() {
    // `mailroom suppress add` and `bounces import` write the same ledger while a send runs:
    // a busy ledger must make the writer wait and retry, never fail the run.
    let lab = Lab::new("").await;
    let path = lab.ledger();
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
    let summary = lab.send(&refs, lab.settings(), opts).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let commits = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    assert!(commits > 10, "the other writer committed {commits} times");
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(summary.accepted, 2000);
    // Every recipient accounted for: all accepted, none left `sending` or pending.
    assert_eq!(states(&path), map(&[("accepted", 2000)]));
    assert_eq!(lab.stored(), 2000);
}
