//! The sandbox SMTP server over real TCP on 127.0.0.1, driven by a raw client (tests/common/sandbox.rs)
//! that verifies TLS against the sandbox's generated CA.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::sandbox::{self as client, Client, dot_stuff, maildir_messages, strip_trace};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailroom::sandbox::{self, Sandbox, SandboxConfig, Script};

const MESSAGE: &str = "From: News <news@example.com>\r\nTo: <ann@example.org>\r\nSubject: Hello\r\nMessage-ID: <m1@example.com>\r\nX-Mailroom-Token: tok123\r\n\r\nHello Ann.\r\n";

async fn start(dir: &Path, script: &str, auth: bool) -> Sandbox {
    client::install_provider();
    let mut config = SandboxConfig::new(dir.join("maildir"))
        .bounce_maildir(dir.join("bounces"))
        .script(Script::parse(script).unwrap());
    if auth {
        config = config.auth("user", "secret");
    }
    sandbox::start(config).await.unwrap()
}

/// Plain connect, EHLO, STARTTLS, EHLO again; with `auth`, AUTH PLAIN as well.
async fn ready(sb: &Sandbox, auth: bool) -> Client {
    let (mut c, greeting) = Client::connect(sb.addr()).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let mut c = c.starttls(sb.ca_pem(), "localhost").await.unwrap();
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    if auth {
        let plain = BASE64.encode(b"\0user\0secret");
        assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.code, 235);
    }
    c
}

#[tokio::test]
async fn dialogue_advertises_extensions_and_answers_basic_commands() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", true).await;
    let (mut c, greeting) = Client::connect(sb.addr()).await;
    assert_eq!(greeting.code, 220);
    assert!(greeting.text().contains("ESMTP"));
    let ehlo = c.cmd("EHLO client.test").await;
    assert_eq!(ehlo.code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 10485760",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(ehlo.lines.iter().any(|l| l == ext), "{ext} not in {ehlo:?}");
    }
    assert!(
        !ehlo.text().contains("AUTH"),
        "AUTH must not be offered before TLS: {ehlo:?}"
    );
    assert_eq!(c.cmd("NOOP").await.code, 250);
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(c.cmd("HELO client.test").await.code, 250);
    let quit = c.cmd("QUIT").await;
    assert_eq!(quit.code, 221);
    assert!(c.is_closed().await);
    assert_eq!(
        sb.transcript(),
        [
            "EHLO client.test",
            "NOOP",
            "RSET",
            "HELO client.test",
            "QUIT"
        ]
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn auth_is_refused_before_tls_and_mail_needs_auth() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", true).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    let plain = BASE64.encode(b"\0user\0secret");
    let reply = c.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert_eq!(reply.code, 538, "{reply:?}");
    assert!(reply.text().starts_with("5.7.11"));
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.code, 530);
    assert!(
        !sb.transcript().iter().any(|l| l.contains(&plain)),
        "AUTH payload must be redacted"
    );
    assert!(maildir_messages(sb.maildir()).is_empty());
}

#[tokio::test]
async fn starttls_then_auth_plain_and_login_then_accepted_message_in_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", true).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    // The certificate verifies by IP SAN as well as by name.
    let mut c = c.starttls(sb.ca_pem(), "127.0.0.1").await.unwrap();
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.text().contains("STARTTLS"));
    assert_eq!(c.cmd("AUTH LOGIN").await.code, 334);
    assert_eq!(c.cmd(&BASE64.encode("user")).await.code, 334);
    assert_eq!(c.cmd(&BASE64.encode("wrong")).await.code, 535);
    assert_eq!(c.cmd("AUTH LOGIN").await.code, 334);
    assert_eq!(c.cmd(&BASE64.encode("user")).await.code, 334);
    assert_eq!(c.cmd(&BASE64.encode("secret")).await.code, 235);
    let reply = c
        .send_message("bounces@example.com", &["ann@example.org"], MESSAGE)
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert!(reply.text().starts_with("2.0.0 "));
    let files = maildir_messages(sb.maildir());
    assert_eq!(files.len(), 1);
    assert!(
        files[0].starts_with(
            b"Return-Path: <bounces@example.com>\r\nDelivered-To: ann@example.org\r\n"
        )
    );
    assert_eq!(strip_trace(&files[0]), MESSAGE.as_bytes());
    let transcript = sb.transcript();
    assert!(transcript.contains(&"STARTTLS".to_owned()));
    assert!(
        !transcript
            .iter()
            .any(|l| l.contains(&BASE64.encode("secret")))
    );
    assert_eq!(transcript.iter().filter(|l| *l == "<redacted>").count(), 4);
}

#[tokio::test]
async fn implicit_tls_listener_greets_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    client::install_provider();
    let config = SandboxConfig::new(dir.path().join("maildir"))
        .implicit_tls(true)
        .auth("user", "secret");
    let sb = sandbox::start(config).await.unwrap();
    let (mut c, greeting) = Client::connect_tls(sb.addr(), sb.ca_pem(), "localhost")
        .await
        .unwrap();
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"));
    assert!(!ehlo.text().contains("STARTTLS"));
}

#[tokio::test]
async fn a_second_implicit_tls_listener_shares_the_ca_and_the_maildir() {
    let dir = tempfile::tempdir().unwrap();
    client::install_provider();
    let mut config = SandboxConfig::new(dir.path().join("maildir"));
    config.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    let sb = sandbox::start(config).await.unwrap();
    let tls_addr = sb.tls_addr().unwrap();
    assert_ne!(tls_addr, sb.addr());
    let (mut a, _) = Client::connect_tls(tls_addr, sb.ca_pem(), "localhost")
        .await
        .unwrap();
    assert_eq!(a.cmd("EHLO client.test").await.code, 250);
    assert_eq!(
        a.send_message("a@example.com", &["b@example.org"], MESSAGE)
            .await
            .code,
        250
    );
    let mut b = ready(&sb, false).await;
    assert_eq!(
        b.send_message("a@example.com", &["c@example.org"], MESSAGE)
            .await
            .code,
        250
    );
    assert_eq!(maildir_messages(sb.maildir()).len(), 2);
    // A plaintext client on the implicit-TLS port gets no SMTP greeting.
    let mut raw = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"EHLO plain\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf).await;
    assert!(!buf.starts_with(b"220"), "{buf:?}");
}

#[tokio::test]
async fn a_client_trusting_another_ca_cannot_complete_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", false).await;
    let other = start(&dir.path().join("other"), "", false).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    assert!(c.starttls(other.ca_pem(), "localhost").await.is_err());
    // A name that is not in the SANs fails too.
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    assert!(c.starttls(sb.ca_pem(), "mx.example.com").await.is_err());
}

#[tokio::test]
async fn dot_unstuffing_is_byte_exact_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", false).await;
    let mut c = ready(&sb, false).await;
    let message =
        b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\n...three\r\nend .\r\n\r\n\xc3\xa9 8bit\r\n";
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME").await.code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let stuffed = dot_stuff(message);
    assert!(stuffed.starts_with(b"Subject: dots\r\n\r\n..\r\n...\r\n..leading\r\n....three"));
    c.send_raw(&stuffed).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let files = maildir_messages(sb.maildir());
    assert_eq!(strip_trace(&files[0]), message);
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        "[[rule]]\nrecipient = \"nobody@example.org\"\naction = \"reject\"\nreply = \"550 5.1.1 no such user\"\n",
        false,
    )
    .await;
    let mut c = ready(&sb, false).await;
    // RFC 2920: the whole envelope in one write.
    c.send_raw(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(c.reply().await.unwrap().code);
    }
    assert_eq!(got, [250, 250, 550, 250, 354]);
    c.send_raw(b"Subject: p\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.reply().await.unwrap().code, 250);
    let files = maildir_messages(sb.maildir());
    assert_eq!(files.len(), 1);
    assert!(files[0].starts_with(b"Return-Path: <a@example.com>\r\nDelivered-To: b@example.org\r\nDelivered-To: c@example.org\r\n"));
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", false).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap().code, 220);
    // The server must not answer the injected MAIL in plaintext, nor run it inside TLS.
    let transcript = sb.transcript();
    assert!(
        transcript.contains(&"<plaintext after STARTTLS discarded>".to_owned()),
        "{transcript:?}"
    );
    assert!(!transcript.iter().any(|l| l.contains("injected")));
}

#[tokio::test]
async fn hostile_input_gets_5xx_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", false).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    let long = format!("EHLO {}\r\n", "x".repeat(20_000));
    c.send_raw(long.as_bytes()).await;
    let reply = c.reply().await.unwrap();
    assert_eq!(reply.code, 500, "{reply:?}");
    assert_eq!(c.cmd("RCPT TO:<x@y.z>").await.code, 503);
    c.send_raw(b"\x00\xff\xfe garbage\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 500);
    // Too many errors: 421 and the connection is closed.
    let mut last = 0;
    for _ in 0..10 {
        c.send_raw(b"BOGUS\r\n").await;
        match c.reply().await {
            Ok(r) => last = r.code,
            Err(_) => break,
        }
        if last == 421 {
            break;
        }
    }
    assert_eq!(last, 421);
    assert!(c.is_closed().await);
    // A message with a line over 998 octets is refused, the session survives.
    let mut c = ready(&sb, false).await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.org>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(5000)).as_bytes())
        .await;
    assert_eq!(c.reply().await.unwrap().code, 550);
    assert_eq!(c.cmd("NOOP").await.code, 250);
    // Declared SIZE over the limit.
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.com> SIZE=99999999999")
            .await
            .code,
        552
    );
    assert!(maildir_messages(sb.maildir()).is_empty());
}

#[tokio::test]
async fn script_rejects_greylists_and_reports_full_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        r#"
        [[rule]]
        recipient = "gone@example.org"
        action = "reject"
        reply = "550 5.1.1 user unknown"
        [[rule]]
        recipient = "*@grey.example"
        action = "greylist"
        attempts = 2
        [[rule]]
        recipient = "busy@example.org"
        action = "reject"
        reply = "452 4.2.2 mailbox full, try later"
        [[rule]]
        recipient = "full@example.org"
        action = "reject"
        reply = "552 5.2.2 mailbox full"
        at = "message"
        "#,
        false,
    )
    .await;
    let mut c = ready(&sb, false).await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.code, 250);
    let r = c.cmd("RCPT TO:<gone@example.org>").await;
    assert_eq!((r.code, r.text()), (550, "5.1.1 user unknown".to_owned()));
    let r = c.cmd("RCPT TO:<busy@example.org>").await;
    assert_eq!(
        (r.code, r.text()),
        (452, "4.2.2 mailbox full, try later".to_owned())
    );
    assert_eq!(c.cmd("RCPT TO:<x@grey.example>").await.code, 450);
    assert_eq!(c.cmd("RSET").await.code, 250);
    // Greylisting counts attempts per recipient across connections.
    let mut c2 = ready(&sb, false).await;
    assert_eq!(c2.cmd("MAIL FROM:<a@example.com>").await.code, 250);
    assert_eq!(c2.cmd("RCPT TO:<x@grey.example>").await.code, 450);
    assert_eq!(
        c2.cmd("RCPT TO:<y@grey.example>").await.code,
        450,
        "counted per address"
    );
    assert_eq!(c2.cmd("RCPT TO:<x@grey.example>").await.code, 250);
    assert_eq!(c2.cmd("DATA").await.code, 354);
    c2.send_raw(&dot_stuff(MESSAGE.as_bytes())).await;
    assert_eq!(c2.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<full@example.org>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(&dot_stuff(MESSAGE.as_bytes())).await;
    let r = c.reply().await.unwrap();
    assert_eq!((r.code, r.text()), (552, "5.2.2 mailbox full".to_owned()));
    let files = maildir_messages(sb.maildir());
    assert_eq!(files.len(), 1, "only the greylisted-then-accepted message");
    assert!(
        files[0].starts_with(b"Return-Path: <a@example.com>\r\nDelivered-To: x@grey.example\r\n")
    );
}

#[tokio::test]
async fn script_disconnects_drops_and_slows_down() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        r#"
        [[rule]]
        recipient = "bye@example.org"
        action = "disconnect"
        [[rule]]
        recipient = "late-bye@example.org"
        action = "disconnect"
        reply = "421 4.4.2 shutting down"
        at = "message"
        [[rule]]
        recipient = "void@example.org"
        action = "drop"
        [[rule]]
        recipient = "slow@example.org"
        action = "accept"
        delay_ms = 300
        delay_at = "message"
        "#,
        false,
    )
    .await;
    let mut c = ready(&sb, false).await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    let r = c.cmd("RCPT TO:<bye@example.org>").await;
    assert_eq!(r.code, 421);
    assert!(c.is_closed().await);

    let mut c = ready(&sb, false).await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<late-bye@example.org>").await;
    c.cmd("DATA").await;
    c.send_raw(&dot_stuff(MESSAGE.as_bytes())).await;
    assert_eq!(c.reply().await.unwrap().code, 421);
    assert!(c.is_closed().await);

    let mut c = ready(&sb, false).await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<void@example.org>").await;
    c.cmd("DATA").await;
    c.send_raw(&dot_stuff(MESSAGE.as_bytes())).await;
    assert!(
        c.reply().await.is_err(),
        "dropped after DATA: no reply at all"
    );
    assert!(
        maildir_messages(sb.maildir()).is_empty(),
        "nothing stored for a drop"
    );

    let mut c = ready(&sb, false).await;
    let started = Instant::now();
    let r = c
        .send_message("a@example.com", &["slow@example.org"], MESSAGE)
        .await;
    assert_eq!(r.code, 250);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "reply came before the scripted delay"
    );
    assert_eq!(maildir_messages(sb.maildir()).len(), 1);
}

#[tokio::test]
async fn session_faults_greeting_no_starttls_auth_fails_and_handshake_abort() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        &dir.path().join("a"),
        "[session]\ngreeting = \"421 4.3.2 not now\"\n",
        false,
    )
    .await;
    let (mut c, greeting) = Client::connect(sb.addr()).await;
    assert_eq!(greeting.code, 421);
    assert!(c.is_closed().await);

    let sb = start(&dir.path().join("b"), "[session]\nstarttls = false\n", true).await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.text().contains("STARTTLS") && !ehlo.text().contains("AUTH"));
    assert_eq!(c.cmd("STARTTLS").await.code, 502);

    let sb = start(&dir.path().join("c"), "[session]\nauth = \"fail\"\n", true).await;
    let mut c = ready(&sb, false).await;
    let plain = BASE64.encode(b"\0user\0secret");
    let r = c.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert_eq!((r.code, r.lines[0].starts_with("5.7.8")), (535, true));

    let sb = start(
        &dir.path().join("e"),
        "[session]\ndisconnect_at = \"auth\"\n",
        true,
    )
    .await;
    let mut c = ready(&sb, false).await;
    let r = c.cmd(&format!("AUTH PLAIN {plain}")).await;
    assert_eq!(r.code, 421);
    assert!(c.is_closed().await);

    let sb = start(
        &dir.path().join("d"),
        "[session]\ntls_handshake = \"abort\"\n",
        false,
    )
    .await;
    let (mut c, _) = Client::connect(sb.addr()).await;
    c.cmd("EHLO client.test").await;
    assert!(c.starttls(sb.ca_pem(), "localhost").await.is_err());
}

#[tokio::test]
async fn disconnect_after_messages_closes_mid_session() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        "[session]\ndisconnect_after_messages = 2\n",
        false,
    )
    .await;
    let mut c = ready(&sb, false).await;
    for _ in 0..2 {
        assert_eq!(
            c.send_message("a@example.com", &["b@example.org"], MESSAGE)
                .await
                .code,
            250
        );
    }
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.code, 421);
    assert!(c.is_closed().await);
    assert_eq!(maildir_messages(sb.maildir()).len(), 2);
}

fn part_types(bytes: &[u8]) -> (String, Vec<String>) {
    let msg = MessageParser::default().parse(bytes).unwrap();
    let ct = msg.content_type().unwrap();
    let report_type = ct.attribute("report-type").unwrap_or_default().to_owned();
    let types = msg
        .parts
        .iter()
        .skip(1)
        .map(|p| {
            let ct = p.content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    (report_type, types)
}

#[tokio::test]
async fn bounce_and_complaint_rules_write_multipart_reports_to_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        r#"
        [[rule]]
        recipient = "dsn@example.org"
        action = "bounce"
        status = "5.1.1"
        diagnostic = "smtp; 550 5.1.1 <dsn@example.org>: user unknown"
        [[rule]]
        recipient = "arf@example.org"
        action = "complain"
        "#,
        false,
    )
    .await;
    let mut c = ready(&sb, false).await;
    let from = "bounces+tok123@example.com";
    assert_eq!(
        c.send_message(from, &["dsn@example.org"], MESSAGE)
            .await
            .code,
        250
    );
    assert_eq!(
        c.send_message(from, &["arf@example.org"], MESSAGE)
            .await
            .code,
        250
    );
    assert_eq!(
        maildir_messages(sb.maildir()).len(),
        2,
        "both were accepted first"
    );
    let reports = maildir_messages(sb.bounce_maildir());
    assert_eq!(reports.len(), 2);

    let (report_type, types) = part_types(&reports[0]);
    assert_eq!(report_type, "delivery-status");
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let dsn = MessageParser::default().parse(&reports[0]).unwrap();
    assert_eq!(dsn.to().unwrap().first().unwrap().address(), Some(from));
    let status = match &dsn.parts[2].body {
        PartType::Text(t) => t.to_string(),
        PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("unexpected delivery-status body {other:?}"),
    };
    for field in [
        "Reporting-MTA: dns; sandbox.localhost",
        "Final-Recipient: rfc822; dsn@example.org",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <dsn@example.org>: user unknown",
    ] {
        assert!(status.contains(field), "{field} missing in {status}");
    }
    let headers = String::from_utf8_lossy(&reports[0]);
    assert!(
        headers.contains("X-Mailroom-Token: tok123\r\n"),
        "original headers are returned"
    );
    assert!(
        !headers.contains("Hello Ann."),
        "only the headers, not the body"
    );

    let (report_type, types) = part_types(&reports[1]);
    assert_eq!(report_type, "feedback-report");
    assert_eq!(
        types,
        [
            "text/plain",
            "message/feedback-report",
            "text/rfc822-headers"
        ]
    );
    let arf = String::from_utf8_lossy(&reports[1]);
    for field in [
        "Feedback-Type: abuse",
        "Original-Rcpt-To: <dsn@example.org>",
        "Message-ID: <m1@example.com>",
    ] {
        let field = field.replace("dsn@", "arf@");
        assert!(arf.contains(&field), "{field} missing in {arf}");
    }
}

#[tokio::test]
async fn refuses_non_loopback_addresses_without_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = sandbox::start(SandboxConfig::new(dir.path().join("m")).listen(listen))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, sandbox::Error::NotLoopback { .. }));
    assert!(err.to_string().contains("--allow-remote"));
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let sb = start(dir.path(), "", false).await;
    let addr = sb.addr();
    let ca_path = dir.path().join("ca.pem");
    sb.write_ca(&ca_path).unwrap();
    assert!(
        std::fs::read_to_string(&ca_path)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    sb.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The SMTP client the sender is built on talks to the sandbox: STARTTLS with the sandbox CA,
/// AUTH PLAIN and LOGIN, a 550 at RCPT with its enhanced code, and an accepted message.
#[tokio::test]
async fn lettre_client_interoperates() {
    use lettre::address::Envelope;
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{
        AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
    };
    use lettre::transport::smtp::commands::{Mail, Rcpt, Rset};
    use lettre::transport::smtp::extension::ClientId;

    let dir = tempfile::tempdir().unwrap();
    let sb = start(
        dir.path(),
        "[[rule]]\nrecipient = \"gone@example.org\"\naction = \"reject\"\nreply = \"550 5.1.1 user unknown\"\n",
        true,
    )
    .await;
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let hello = ClientId::Domain("client.test".to_owned());
        let mut conn = AsyncSmtpConnection::connect_tokio1(sb.addr(), None, &hello, None, None)
            .await
            .unwrap();
        let params = TlsParameters::builder("localhost".to_owned())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(sb.ca_pem().as_bytes()).unwrap())
            .build_rustls()
            .unwrap();
        conn.starttls(params, &hello).await.unwrap();
        assert!(conn.is_encrypted());
        let creds = Credentials::new("user".to_owned(), "secret".to_owned());
        assert_eq!(
            conn.auth(&[mechanism], &creds)
                .await
                .unwrap()
                .code()
                .to_string(),
            "235"
        );
        // Command by command, as the sender drives it (lettre's `send` drops the connection on
        // any negative reply).
        let from: lettre::Address = "bounces@example.com".parse().unwrap();
        conn.command(Mail::new(Some(from), vec![])).await.unwrap();
        let err = conn
            .command(Rcpt::new("gone@example.org".parse().unwrap(), vec![]))
            .await
            .unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(err.status().map(|c| c.to_string()), Some("550".to_owned()));
        assert!(err.to_string().contains("5.1.1"), "{err}");
        // The connection stays usable after a rejected RCPT once reset.
        conn.command(Rset).await.unwrap();
        let envelope = Envelope::new(
            Some("bounces@example.com".parse().unwrap()),
            vec!["ann@example.org".parse().unwrap()],
        )
        .unwrap();
        let ok = conn.send(&envelope, MESSAGE.as_bytes()).await.unwrap();
        assert_eq!(ok.code().to_string(), "250");
        conn.quit().await.unwrap();
    }
    let files = maildir_messages(sb.maildir());
    assert_eq!(files.len(), 2);
    // lettre always sends "\r\n.\r\n" after the message, so a message that already ends in
    // CRLF arrives with one extra empty line; the sandbox stores exactly what was sent.
    assert_eq!(strip_trace(&files[1]), format!("{MESSAGE}\r\n").as_bytes());
}

#[test]
fn the_command_refuses_a_public_address_and_reports_script_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("mailroom")
        .unwrap()
        .args(["sandbox", "--listen", "0.0.0.0:2587", "--maildir"])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--allow-remote"),
        "{stderr}"
    );

    // `sandbox --script SCRIPT` must refuse to start (exit 2); its error.
    let refused = |script: &std::path::Path| {
        let out = assert_cmd::Command::cargo_bin("mailroom")
            .unwrap()
            .args(["sandbox", "--listen", "127.0.0.1:0", "--script"])
            .arg(script)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let script = dir.path().join("script.toml");
    std::fs::write(
        &script,
        "[[rule]]\nrecipient = \"a@b\"\naction = \"reject\"\n",
    )
    .unwrap();
    let stderr = refused(&script);
    assert!(
        stderr.contains("script.toml") && stderr.contains("needs a reply"),
        "{stderr}"
    );

    // A wrong path to something endless is refused at the cap, not read until memory runs out.
    let stderr = refused(std::path::Path::new("/dev/zero"));
    assert!(
        stderr.contains("/dev/zero is larger than 1 MiB"),
        "{stderr}"
    );

    // A script saved in windows-1252: where the first wrong byte is, and how to convert.
    std::fs::write(&script, b"# caf\xe9\n").unwrap();
    let stderr = refused(&script);
    assert!(
        stderr.contains("script.toml") && stderr.contains("line 1") && stderr.contains("iconv"),
        "{stderr}"
    );
}

#[test]
fn demo_sends_through_the_sandbox_and_the_ledger_matches_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("demo");
    let out = assert_cmd::Command::cargo_bin("mailroom")
        .unwrap()
        .args(["demo", "--no-dashboard", "--dir"])
        .arg(&ws)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3. Report"), "{stdout}");
    assert!(
        !stdout.to_lowercase().contains("delivered"),
        "a 250 is not a delivery: {stdout}"
    );

    let conn = rusqlite::Connection::open(ws.join("campaign/mailroom.db")).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let states: Vec<(String, i64)> = conn
        .prepare("SELECT state, count(*) FROM recipients GROUP BY state ORDER BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expect = [
        ("accepted", 270),
        ("bounced_hard", 9),
        ("bounced_soft", 4),
        ("complained", 2),
    ];
    let expect: Vec<(String, i64)> = expect.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
    assert_eq!(states, expect);
    // Greylisted: deferred once with 450 4.2.0, then accepted.
    assert_eq!(
        count(
            "SELECT count(*) FROM recipients WHERE domain = 'greylist.example' AND state = 'accepted' AND attempts = 2"
        ),
        20
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM attempts WHERE code = 450 AND enhanced = '4.2.0' AND outcome = 'deferred'"
        ),
        20
    );
    // The DSN and ARF recipients were accepted by the relay first, then changed by the import.
    assert_eq!(
        count(
            "SELECT count(*) FROM recipients WHERE (email LIKE 'moved-%' OR email LIKE 'grumpy-%') AND relay_accepted = 1"
        ),
        5
    );
    assert_eq!(count("SELECT count(*) FROM suppressions"), 5);
    let stored = maildir_messages(&ws.join("sandbox/maildir"));
    assert_eq!(
        stored.len(),
        275,
        "one file per message accepted by the relay"
    );
    for i in 1..=20 {
        let needle = format!("Delivered-To: reader{i}@greylist.example\r\n");
        let copies = stored
            .iter()
            .filter(|m| String::from_utf8_lossy(m).contains(&needle))
            .count();
        assert_eq!(copies, 1, "reader{i}@greylist.example");
    }
    assert_eq!(maildir_messages(&ws.join("sandbox/bounces")).len(), 5);
}

#[tokio::test]
async fn connections_beyond_the_limit_get_421() {
    let dir = tempfile::tempdir().unwrap();
    client::install_provider();
    let mut config = SandboxConfig::new(dir.path().join("m"));
    config.max_connections = 2;
    let sb = sandbox::start(config).await.unwrap();
    let (mut a, ga) = Client::connect(sb.addr()).await;
    let (_b, gb) = Client::connect(sb.addr()).await;
    assert_eq!((ga.code, gb.code), (220, 220));
    let (mut c, gc) = Client::connect(sb.addr()).await;
    assert_eq!(gc.code, 421);
    assert!(c.is_closed().await);
    // The first sessions are unaffected.
    assert_eq!(a.cmd("NOOP").await.code, 250);
}

/// `mailroom -vv send` with the most verbose logging must never print the SMTP password, in
/// clear or in the base64 of AUTH PLAIN / AUTH LOGIN, even though lettre logs every line it
/// writes at debug level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_send_logs_never_contain_the_password() {
    let dir = tempfile::tempdir().unwrap();
    client::install_provider();
    // A password no library would print by coincidence (rustls logs "…_secret" field names).
    const PASSWORD: &str = "Hunter2-Qx9z";
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("maildir")).auth("user", PASSWORD))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let camp = dir.path().join("camp");
    std::fs::create_dir_all(&camp).unwrap();
    std::fs::write(
        camp.join("campaign.toml"),
        format!(
            "[campaign]\nname = \"logs\"\nfrom = \"news@example.com\"\nsubject = \"Hi\"\n\
             text = \"body.txt.hbs\"\n\n[contacts]\npath = \"contacts.csv\"\n\n[smtp]\n\
             host = \"localhost\"\nport = {}\nsecurity = \"starttls\"\nusername = \"user\"\n\
             password_env = \"LOG_TEST_PASSWORD\"\nca_file = \"{}\"\n\n[rate]\nper_second = 1000\n",
            sb.addr().port(),
            ca.display()
        ),
    )
    .unwrap();
    std::fs::write(camp.join("body.txt.hbs"), "Hello {{email}}\n").unwrap();
    std::fs::write(
        camp.join("contacts.csv"),
        "email\nann@example.org\nbob@example.org\n",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["-vv", "send", "--yes"])
            .arg(&camp)
            .env("LOG_TEST_PASSWORD", PASSWORD)
            .env("MAILROOM_LOG", "trace")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_eq!(maildir_messages(&dir.path().join("maildir")).len(), 2);
    // The run did log at trace level (so the check below is not vacuous) ...
    assert!(all.contains("TRACE") || all.contains("DEBUG"), "{all}");
    // ... yet neither the password nor any encoding of it that AUTH uses appears.
    for secret in [
        PASSWORD.to_owned(),
        BASE64.encode(format!("\0user\0{PASSWORD}")),
        BASE64.encode(PASSWORD),
    ] {
        assert!(
            !all.contains(&secret),
            "{secret:?} leaked into the logs:\n{all}"
        );
    }
}
