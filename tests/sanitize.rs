//! Hostile text never reaches a terminal as it is: SMTP replies, DSN diagnostics, contact-file
//! values and suppression-file lines carrying escape sequences (ESC, BEL, C1, bidi overrides)
//! are shown escaped by `send`, `report --format text|md`, `bounces parse`, `check` and
//! `suppress import`, and CSV exports cannot start a cell with a formula.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::relay::Relay;
use common::write_campaign;

/// Sets the window title, rings the bell and clears the screen, if a terminal plays it.
const PAYLOAD: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J";

fn mailroom(args: &[&str], dir: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn assert_inert(what: &str, output: &str) {
    for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(
            !output.contains(c),
            "{what}: {c:?} reached the output as it is:\n{output:?}"
        );
    }
    assert!(
        output.contains("\\x1b"),
        "{what}: the escape is shown:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_escape_sequences_are_shown_not_played_by_send_and_reports() {
    // The payload in TOML's escapes.
    let script = "[[rule]]\nrecipient = \"bad@example.test\"\naction = \"reject\"\n\
                  reply = \"550 5.1.1 no such user \\u001b]0;pwned\\u0007\\u001b[2J\"\n";
    let relay = Relay::plain(script).await;
    let dir = tempfile::tempdir().unwrap();
    let emails = [
        "good@example.test",
        "bad@example.test",
        "=cmd|'/Ccalc.exe'!A0@example.test",
    ]
    .map(String::from);
    let root = write_campaign(
        dir.path(),
        "hostile",
        "news@sender.test",
        &relay.smtp_table(""),
        &emails,
    );
    let root_s = root.to_str().unwrap();
    let (code, out) = tokio::task::spawn_blocking({
        let root = root_s.to_owned();
        let dir = dir.path().to_owned();
        move || mailroom(&["send", &root, "--yes"], &dir)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert_inert("send", &out);
    for format in ["text", "md", "html"] {
        let (code, out) = mailroom(&["report", root_s, "--format", format], dir.path());
        assert_eq!(code, 0, "{out}");
        assert_inert(&format!("report --format {format}"), &out);
    }
    // CSV keeps the text (its quoting is its escaping) but no cell may start a formula.
    let (code, out) = mailroom(&["report", root_s, "--format", "csv"], dir.path());
    assert_eq!(code, 0, "{out}");
    let mut rows = csv::Reader::from_reader(out.as_bytes());
    let mut seen = 0;
    for row in rows.records() {
        let row = row.unwrap();
        for cell in &row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {row:?}"
            );
        }
        if row[0].starts_with("'=cmd") {
            seen += 1;
        }
    }
    assert_eq!(seen, 1, "{out}");
}

#[test]
fn a_bounces_diagnostic_is_shown_not_played_by_bounces_parse() {
    let dir = tempfile::tempdir().unwrap();
    let dsn = format!(
        "From: MAILER-DAEMON@mx.example\r\nTo: news@sender.test\r\nSubject: Undelivered\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; \
         boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b\r\n\
         Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
         Final-Recipient: rfc822; gone@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 user unknown {PAYLOAD}\r\n\r\n--b--\r\n"
    );
    std::fs::write(dir.path().join("dsn.eml"), dsn).unwrap();
    let (code, out) = mailroom(&["bounces", "parse", "dsn.eml"], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("gone@example.test"), "{out}");
    assert_inert("bounces parse", &out);
}

#[test]
fn contact_and_suppression_file_values_are_shown_not_played() {
    let dir = tempfile::tempdir().unwrap();
    let emails = [format!("x{PAYLOAD}@example.test"), "ok@example.test".into()];
    let root = write_campaign(
        dir.path(),
        "files",
        "news@sender.test",
        "host = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"",
        &emails,
    );
    let (code, out) = mailroom(&["check", root.to_str().unwrap()], dir.path());
    assert_eq!(code, 1, "{out}");
    assert_inert("check", &out);

    std::fs::write(
        dir.path().join("list.txt"),
        format!("ok@example.test\n{PAYLOAD}\n"),
    )
    .unwrap();
    let (code, out) = mailroom(
        &["suppress", "--db", "l.db", "import", "list.txt"],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert_inert("suppress import", &out);
}
