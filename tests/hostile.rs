//! Hostile relays over real TCP: the sandbox's scripted faults (`inject`, `flood`, `greeting`,
//! ...) play a relay that lies or floods, and mailroom must neither count a rejected message as
//! accepted nor let the relay exhaust its memory.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::relay::Relay;
use common::{contacts, plain, run_once, states, write_campaign};
use mailroom::pipeline::{End, Options, Stop, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::transport::{Security, Step};

/// Peak resident memory allowed to a `mailroom` process talking to a flooding peer.
const RSS_CAP_KIB: u64 = 200 * 1024;

/// One connection, very short throttle back-offs.
fn options() -> Options {
    Options {
        throttle_backoff: Duration::from_millis(20),
        throttle_max: Duration::from_millis(100),
        ..common::options(1)
    }
}

/// Sends `locals` through the relay with `security` and its CA.
async fn send(r: &Relay, locals: &[&str], security: Security) -> Summary {
    send_with(r, locals, r.tls_settings(security)).await
}

async fn send_with(r: &Relay, locals: &[&str], settings: mailroom::transport::Settings) -> Summary {
    let ledger = r.ledger();
    run_once(
        &ledger,
        "hostile",
        contacts(locals),
        settings,
        options(),
        plain(),
        Shutdown::new(),
    )
    .await
    .0
}

/// The CVE-2011-0411 replay: the relay answers STARTTLS with its 220 and, in the same write,
/// every reply a whole session needs (EHLO, AUTH, MAIL, RCPT, DATA), then does a genuine TLS
/// handshake and refuses every message. Read as if they came over TLS, those bytes would make a
/// 554 look like an acceptance.
const STARTTLS_INJECTION: &str = r#"
[session]
inject = { starttls = "250-fake\r\n250 AUTH PLAIN\r\n250 fake\r\n235 fake\r\n250 fake\r\n250 fake\r\n354 fake\r\n" }

[[rule]]
recipient = "*"
action = "reject"
reply = "554 5.7.1 refused after all"
at = "message"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_injected_before_the_starttls_handshake_refuse_the_relay() {
    let r = Relay::tls(STARTTLS_INJECTION, |c| c).await;
    let ledger = r.ledger();
    let summary = send(&r, &["a", "b"], Security::StartTls).await;
    let End::Aborted(Stop::Tls(reply)) = &summary.end else {
        panic!("expected a TLS abort, got {:?}", summary.end);
    };
    assert!(
        reply.text.contains("after its 220 to STARTTLS"),
        "{reply:?}"
    );
    // Nobody is charged, nothing is counted as accepted, no password and no mail went out.
    assert_eq!(summary.accepted, 0);
    assert_eq!(
        states(&ledger).get("pending"),
        Some(&2),
        "{:?}",
        states(&ledger)
    );
    let transcript = r.sandbox.transcript();
    assert!(
        !transcript
            .iter()
            .any(|l| l.starts_with("AUTH") || l.starts_with("MAIL")),
        "{transcript:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_injection_the_same_relay_is_used_and_its_refusals_recorded() {
    // The control for the test above: the same script minus the injected bytes.
    let script = STARTTLS_INJECTION.replace(
        "inject = { starttls = \"250-fake\\r\\n250 AUTH PLAIN\\r\\n250 fake\\r\\n235 fake\\r\\n250 fake\\r\\n250 fake\\r\\n354 fake\\r\\n\" }",
        "",
    );
    assert_ne!(script, STARTTLS_INJECTION);
    let r = Relay::tls(&script, |c| c).await;
    let summary = send(&r, &["a", "b"], Security::StartTls).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 0);
    assert_eq!(summary.bounced_soft + summary.bounced_hard, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_reply_after_the_greeting_of_an_implicit_tls_relay_is_caught() {
    // Inside TLS there is nothing to inject from outside, but a relay that sends a reply nobody
    // asked for must still never turn a refusal into an acceptance: replies are checked against
    // the command they answer.
    let r = Relay::tls(
        "[session]\ninject = { message = \"250 2.0.0 stray\\r\\n\" }\n\n[[rule]]\nrecipient = \"b@example.test\"\naction = \"reject\"\nreply = \"554 5.7.1 no\"\nat = \"message\"\n",
        |c| c.implicit_tls(true),
    )
    .await;
    let ledger = r.ledger();
    let summary = send(&r, &["a", "b"], Security::Tls).await;
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    let recipient = |email: &str| common::recipient(&ledger, email).0;
    assert_eq!(recipient("a@example.test"), "accepted");
    assert_ne!(recipient("b@example.test"), "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_implicit_tls_certificate_is_reported_at_connect() {
    let r = Relay::tls("", |c| c.implicit_tls(true)).await;
    let ledger = r.ledger();
    let mut settings = r.tls_settings(Security::Tls);
    settings.ca_file = None;
    let summary = send_with(&r, &["a"], settings).await;
    let End::Aborted(Stop::Tls(reply)) = &summary.end else {
        panic!("expected a TLS abort, got {:?}", summary.end);
    };
    assert!(reply.text.contains("UnknownIssuer"), "{reply:?}");
    // Implicit TLS fails at connect, not at a STARTTLS that never happened.
    assert_eq!(reply.step, Step::Connect);
    assert!(
        reply.describe().ends_with("(at connect)"),
        "{}",
        reply.describe()
    );
    assert_eq!(states(&ledger).get("pending"), Some(&1));
}

/// Runs the `mailroom` binary to completion while sampling its resident memory, killing it if
/// it passes [`RSS_CAP_KIB`]. Returns the exit status, stdout+stderr and the peak seen (KiB).
fn run_measured(args: &[&str], root: &Path) -> (Option<i32>, String, u64) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .arg(root)
        .arg("--yes")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        // VmHWM is the kernel's own high-water mark of the resident set, so sampling it now and
        // then still catches a peak between samples.
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib);
        }
        if peak > RSS_CAP_KIB || std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.code(), text, peak)
}

async fn flood_campaign(flood: &str) -> (Relay, std::path::PathBuf) {
    let r = Relay::tls(
        &format!("[session]\nflood_at = \"mail\"\nflood = \"{flood}\"\n"),
        |c| c,
    )
    .await;
    let smtp = r.smtp_table("connections = 1\ncommand_timeout = 10\ndata_timeout = 10");
    let emails = vec!["a@example.test".to_owned(), "b@example.test".to_owned()];
    let root = write_campaign(r.dir.path(), "flood", "news@sender.test", &smtp, &emails);
    (r, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_line_that_never_ends_is_cut_and_memory_stays_bounded() {
    for flood in ["line", "lines"] {
        let (r, root) = flood_campaign(flood).await;
        let (code, output, peak) =
            tokio::task::spawn_blocking(move || run_measured(&["send"], &root))
                .await
                .unwrap();
        assert!(
            peak <= RSS_CAP_KIB,
            "flood = {flood}: peak RSS {peak} KiB passed the cap; output: {output}"
        );
        assert!(peak > 0, "the child's memory was never sampled");
        // The relay never answered MAIL properly: nobody is accepted, the run says why.
        assert_eq!(code, Some(1), "flood = {flood}: {output}");
        let want = if flood == "line" {
            "longer than 4096 bytes"
        } else {
            "more than 200 lines"
        };
        assert!(output.contains(want), "flood = {flood}: {output}");
        let ledger = r.dir.path().join("flood").join("mailroom.db");
        let st = states(&ledger);
        assert_eq!(st.get("accepted"), None, "{st:?}");
        assert_eq!(st.values().sum::<i64>(), 2, "{st:?}");
    }
}

fn attempt_outcomes(ledger: &Path) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare("SELECT step, outcome FROM attempts ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_answers_421_to_everything_pauses_the_run_and_every_transmission_is_recorded()
{
    // 421 at RCPT (nothing of the message sent) and after the final "." (the whole message sent
    // each time): either way the run must stop resending after a few tries, charge nobody, and
    // keep an attempt row for every transmission.
    for (at, step) in [("rcpt", "rcpt"), ("message", "message")] {
        let script = format!(
            "[[rule]]\nrecipient = \"*\"\naction = \"reject\"\nreply = \"421 4.7.0 too many messages, slow down\"\nat = \"{at}\"\n"
        );
        let r = Relay::tls(&script, |c| c).await;
        let ledger = r.ledger();
        let summary = send(&r, &["a", "b", "c"], Security::StartTls).await;
        let End::Paused(Stop::Busy(reply)) = &summary.end else {
            panic!(
                "at {at}: expected a pause for a busy relay, got {:?}",
                summary.end
            );
        };
        assert_eq!(reply.code, Some(421));
        assert!(Stop::Busy(reply.clone()).to_string().contains("try later"));
        // Nobody charged: every recipient is pending again.
        assert_eq!(
            states(&ledger).get("pending"),
            Some(&3),
            "at {at}: {:?}",
            states(&ledger)
        );
        // Bounded: the run paused after a handful of transmissions, not 4 per recipient with
        // growing pauses in between, and each one is on record.
        let attempts = attempt_outcomes(&ledger);
        assert_eq!(
            attempts.len() as u64,
            summary.transactions,
            "at {at}: {attempts:?}"
        );
        assert_eq!(summary.throttled, summary.transactions);
        assert!(
            (5..=6).contains(&summary.transactions),
            "at {at}: {} transmissions",
            summary.transactions
        );
        assert!(
            attempts.iter().all(|(s, o)| s == step && o == "throttled"),
            "at {at}: {attempts:?}"
        );
        if at == "message" {
            // The whole message went out each time (counted by its final ".", not by DATA
            // commands: the next transaction's DATA may ride behind a message, RFC 2920, and
            // is never given its message when the relay closes).
            assert_eq!(r.sandbox.seen().messages_ended, summary.transactions);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_stops_answering_before_the_message_pauses_the_run_instead_of_deferring_the_list()
 {
    // MAIL is never answered: nothing of any message is sent, and nothing about the recipients
    // is learnt. A few may be charged as deferred before the pattern shows; the list is not.
    let (r, summary) =
        twelve_with_short_timeouts("[[rule]]\nsender = \"*\"\naction = \"hang\"\nat = \"mail\"\n")
            .await;
    let ledger = r.ledger();
    let End::Paused(stop @ Stop::NoReply(reply)) = &summary.end else {
        panic!(
            "expected a pause for a relay that does not answer, got {:?}",
            summary.end
        );
    };
    assert_eq!(reply.step, Step::Mail, "{reply:?}");
    assert!(reply.timed_out, "{reply:?}");
    assert!(
        stop.to_string()
            .contains("no usable reply before the message on 5 transactions in a row"),
        "{stop}"
    );
    let s = states(&ledger);
    let deferred = s.get("deferred").copied().unwrap_or(0);
    assert_eq!(deferred, 4, "the four before the pattern showed: {s:?}");
    assert_eq!(s.get("pending"), Some(&8), "the rest uncharged: {s:?}");
    assert_eq!(summary.accepted, 0);
    // The one that tripped the pause is on record, given back as aborted.
    let attempts = attempt_outcomes(&ledger);
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    assert_eq!(
        attempts.iter().filter(|(_, o)| o == "aborted").count(),
        1,
        "{attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_recipient_whose_transaction_is_lost_is_deferred_and_the_run_goes_on() {
    // The control for the test above: one address whose RCPT is never answered costs that
    // recipient a deferral, and the replies to the others reset the count.
    let (r, summary) = twelve_with_short_timeouts(
        "[[rule]]\nrecipient = \"r3@*\"\naction = \"hang\"\nat = \"rcpt\"\n",
    )
    .await;
    let ledger = r.ledger();
    assert_eq!(summary.end, End::Finished, "{summary:?}");
    assert_eq!(
        states(&ledger),
        common::state_map(&[("accepted", 11), ("deferred", 1)])
    );
}

/// Sends to r0..r11 through a plaintext sandbox playing `script`, with a 200 ms command
/// timeout (a hanging relay costs each transaction that long).
async fn twelve_with_short_timeouts(script: &str) -> (Relay, Summary) {
    let r = Relay::plain(script).await;
    let mut settings = r.plain_settings();
    settings.command_timeout = Duration::from_millis(200);
    let locals: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    let locals: Vec<&str> = locals.iter().map(String::as_str).collect();
    let summary = send_with(&r, &locals, settings).await;
    (r, summary)
}
