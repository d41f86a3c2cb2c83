//! Campaign operations of issue 15 through the real binary and the sandbox relay: test sends
//! (`send --test`), seeds, send windows and warm-up. Each test asserts what the relay received
//! (the sandbox's transcript and Maildir) and what the ledger says, and that the campaign's
//! recipients are untouched where they must be.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::fixture::Fixture;
use common::relay::{PASSWORD, Relay, USER};
use mail_parser::MessageParser;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `mailroom ARGS DIR` with the relay's password in the environment, off the test's runtime.
async fn mailroom(args: &[&str], dir: &Path) -> Out {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(&args)
            .arg(&dir)
            .env("RELAY_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The base fixture pointed at `relay` over STARTTLS with AUTH, trusting `ca` (when given).
fn campaign_for(relay: &Relay, ca: Option<&Path>) -> Fixture {
    let f = Fixture::base();
    let ca = ca.map_or_else(String::new, |p| format!("ca_file = \"{}\"\n", p.display()));
    f.append_toml(&format!(
        "[smtp]\nhost = \"localhost\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{USER}\"\n\
         password_env = \"RELAY_PASSWORD\"\n{ca}\n[rate]\nper_second = 1000\n",
        relay.port()
    ));
    f
}

/// (state, attempts) of every recipient, by address.
fn recipients(ledger: &Path) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare("SELECT email, state, attempts FROM recipients ORDER BY email")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_reaches_only_the_test_addresses_and_never_touches_a_recipient() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    let ledger = f.path().join("mailroom.db");

    // Before any send: the first valid row's message, to two test addresses.
    let out = mailroom(
        &["send", "--test", "qa@example.net,Boss@Example.NET"],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("test send to qa@example.net: accepted by the relay"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("boss@example.net"), "{}", out.stdout);
    assert!(recipients(&ledger).is_empty(), "a test send imports no one");
    assert_eq!(relay.rcpts_for("ann@example.com"), 0);
    let copy = relay.body_of("qa@example.net");
    let m = MessageParser::default().parse(copy.as_bytes()).unwrap();
    assert_eq!(m.subject(), Some("[TEST] Grüße, Ann!"));
    assert_eq!(
        m.to().unwrap().first().unwrap().address(),
        Some("qa@example.net")
    );
    // Ann's own message: the same body, but not her Message-ID or token (a bounce of the copy
    // can never be matched to her).
    assert!(m.body_text(0).unwrap().contains("Ann"));
    let ann_token = mailroom::campaign::recipient_token("fixture", "ann@example.com");
    assert!(!copy.contains(&ann_token), "{copy}");
    assert!(copy.contains("Return-Path: <bounces+test"), "{copy}");

    // A real send, then a test send of line 3: every recipient stays as the real send left it.
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let after_send = recipients(&ledger);
    assert!(
        after_send
            .iter()
            .all(|(_, s, n)| s == "accepted" && *n == 1),
        "{after_send:?}"
    );
    let out = mailroom(
        &["send", "--test", "ann@example.com", "--line", "3"],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        recipients(&ledger),
        after_send,
        "a test send to a recipient changes nothing"
    );
    assert_eq!(
        relay.copies_for("ann@example.com"),
        2,
        "her message and the test copy"
    );

    // The report lists the three test sends apart; totals count the campaign only.
    let out = mailroom(&["report", "--format", "json"], f.path()).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["test_send_count"], 3, "{v:#}");
    assert_eq!(v["totals"]["recipients"], after_send.len());
    assert_eq!(v["totals"]["relay_accepted"], after_send.len());
    assert_eq!(v["test_sends"][0]["source_line"], 3);
    assert_eq!(v["test_sends"][0]["address"], "ann@example.com");
    assert_eq!(v["test_sends"][0]["kind"], "test");
    let text = mailroom(&["report"], f.path()).await.stdout;
    assert!(text.contains("Test sends (3)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_refuses_an_untrusted_certificate_and_plaintext_like_a_real_send() {
    let relay = Relay::tls("", |c| c).await;
    // The sandbox's CA is not trusted: the certificate is refused, nothing is sent.
    let f = campaign_for(&relay, None);
    let out = mailroom(&["send", "--test", "qa@example.net"], f.path()).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("TLS failed"), "{}", out.stderr);
    assert!(out.stderr.contains("Nothing was sent"), "{}", out.stderr);
    assert!(!relay.transcript_has("MAIL"));

    // A relay without STARTTLS: refused before AUTH and MAIL.
    let plain = Relay::start("[session]\nstarttls = false\n", |c| c.auth(USER, PASSWORD)).await;
    let f = campaign_for(&plain, Some(&plain.ca));
    let out = mailroom(&["send", "--test", "qa@example.net"], f.path()).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(!plain.transcript_has("AUTH") && !plain.transcript_has("MAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_picks_its_row_like_preview() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    let out = mailroom(
        &[
            "send",
            "--test",
            "qa@example.net",
            "--to",
            "BOB@bücher.example",
        ],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let m_text = relay.body_of("qa@example.net");
    let m = MessageParser::default().parse(m_text.as_bytes()).unwrap();
    assert_eq!(m.subject(), Some("[TEST] Grüße, Bob!"));
    for (args, needle) in [
        (&["--line", "99"][..], "no contact record starts at line 99"),
        (
            &["--to", "nobody@example.com"][..],
            "no valid contact has the address",
        ),
        (&["--limit", "1"][..], "cannot be used with"),
    ] {
        let mut all = vec!["send", "--test", "qa@example.net"];
        all.extend_from_slice(args);
        let out = mailroom(&all, f.path()).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}
