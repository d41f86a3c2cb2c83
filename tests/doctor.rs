//! `mailroom doctor` over real TCP: against the sandbox (STARTTLS, implicit TLS, no STARTTLS),
//! a closed port, a tiny hostile server offering AUTH in cleartext, the CLI (HOST and CAMPAIGN
//! modes, text and --json), and the CI Postfix when scripts/ci-servers.sh has run (skips loudly
//! without it; with CI=true a missing Postfix is a failure).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom::doctor::{self, Connect, Credentials, Login, Options, Report, Security};
use mailroom::sandbox::{self, SandboxConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

fn options(port: u16) -> Options {
    Options {
        host: "127.0.0.1".into(),
        ports: vec![port],
        ca_file: None,
        timeout: Duration::from_secs(10),
        hello_name: Some("doctor.test".into()),
        credentials: None,
        configured_port: None,
        configured_security: None,
        implicit_ports: vec![465],
    }
}

fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: user.into(),
        login: Login::Password(mailroom::transport::Secret::new(password.into())),
    })
}

/// Commands the sandbox received that could send mail.
fn mail_commands(transcript: &[String]) -> Vec<&String> {
    transcript
        .iter()
        .filter(|l| {
            let up = l.to_ascii_uppercase();
            up.starts_with("MAIL") || up.starts_with("RCPT") || up.starts_with("DATA")
        })
        .collect()
}

#[tokio::test]
async fn sandbox_starttls_with_ca_file_verifies_and_auth_is_accepted() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")).auth("ann", "s3cret-pw"))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let port = sb.addr().port();
    let mut o = options(port);
    o.ca_file = Some(ca.clone());
    o.credentials = creds("ann", "s3cret-pw");
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.connect, Connect::Open);
    assert_eq!(p.security, Some(Security::StartTls));
    assert!(p.starttls_offered);
    assert!(p.banner.as_deref().unwrap().starts_with("220 "), "{p:?}");
    assert!(!p.auth_before_tls, "the sandbox offers AUTH only after TLS");
    let tls = p.tls.as_ref().unwrap();
    assert!(tls.verified, "{tls:?}");
    assert!(tls.name_matches);
    assert!(tls.version.starts_with("TLSv1."), "{tls:?}");
    assert!(!tls.cipher.is_empty());
    assert!(tls.days_left.unwrap() > 0);
    assert!(tls.issuer.is_some() && tls.subject.is_some());
    assert!(p.auth_mechanisms.contains(&"PLAIN".to_owned()), "{p:?}");
    let auth = p.auth_result.as_ref().unwrap();
    assert!(auth.attempted && auth.success, "{auth:?}");
    assert!(
        auth.reply.as_deref().unwrap().starts_with("235"),
        "{auth:?}"
    );
    assert!(report.usable());
    let rec = &report.recommendation;
    assert_eq!(rec.port, Some(port));
    assert_eq!(rec.security.as_deref(), Some("starttls"));
    assert!(rec.toml.contains(&format!("port = {port}")), "{rec:?}");
    assert!(
        rec.toml.iter().any(|l| l.starts_with("ca_file = ")),
        "{rec:?}"
    );
    let transcript = sb.transcript();
    assert!(mail_commands(&transcript).is_empty(), "{transcript:?}");
    assert!(
        transcript.iter().any(|l| l.eq_ignore_ascii_case("QUIT")),
        "{transcript:?}"
    );
    assert!(
        !transcript.iter().any(|l| l.contains("s3cret-pw")),
        "{transcript:?}"
    );
    // Wrong password: the exact reply is reported and the port is not usable.
    o.credentials = creds("ann", "wrong");
    let report = doctor::run(&o).await.unwrap();
    let auth = report.ports[0].auth_result.as_ref().unwrap();
    assert!(auth.attempted && !auth.success, "{auth:?}");
    assert!(
        auth.reply.as_deref().unwrap().starts_with("535"),
        "{auth:?}"
    );
    assert!(!report.usable());
    sb.shutdown().await;
}

/// `doctor --auth` with XOAUTH2: a token command's token is accepted; another token is refused
/// with the decoded JSON error shown; a failing command is reported, not sent.
#[tokio::test]
async fn auth_test_tries_xoauth2_with_the_configured_token_source() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig::new(dir.path().join("mail"))
        .auth("ann", "s3cret-pw")
        .xoauth2_token("tok-good");
    let sb = sandbox::start(config).await.unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let mut o = options(sb.addr().port());
    o.ca_file = Some(ca);
    let roots = mailroom::tls::client_config(None).unwrap().config;
    let with_command = |argv: &[&str]| {
        let source =
            mailroom::oauth::Source::Command(argv.iter().map(|a| (*a).to_owned()).collect());
        Some(Credentials {
            username: "ann".into(),
            login: Login::XOAuth2(Arc::new(mailroom::oauth::Tokens::new(
                source,
                roots.clone(),
            ))),
        })
    };

    o.credentials = with_command(&["echo", "tok-good"]);
    let report = doctor::run(&o).await.unwrap();
    let auth = report.ports[0].auth_result.as_ref().unwrap();
    assert!(auth.attempted && auth.success, "{auth:?}");
    assert_eq!(auth.mechanism.as_deref(), Some("XOAUTH2"));
    assert!(report.usable());

    o.credentials = with_command(&["echo", "tok-bad"]);
    let report = doctor::run(&o).await.unwrap();
    let auth = report.ports[0].auth_result.as_ref().unwrap();
    assert!(auth.attempted && !auth.success, "{auth:?}");
    let reply = auth.reply.as_deref().unwrap();
    assert!(reply.starts_with("535"), "{reply}");
    assert!(reply.contains("status 400"), "{reply}");
    assert!(!report.usable());

    o.credentials = with_command(&["false"]);
    let report = doctor::run(&o).await.unwrap();
    let auth = report.ports[0].auth_result.as_ref().unwrap();
    assert!(!auth.attempted, "{auth:?}");
    assert!(
        auth.skipped
            .as_deref()
            .unwrap()
            .contains("token command false failed"),
        "{auth:?}"
    );
    let transcript = sb.transcript();
    assert!(mail_commands(&transcript).is_empty(), "{transcript:?}");
    assert!(
        !transcript.iter().any(|l| l.contains("tok-")),
        "{transcript:?}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn untrusted_certificate_is_inspected_but_never_gets_auth() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")).auth("ann", "pw"))
        .await
        .unwrap();
    let mut o = options(sb.addr().port());
    o.credentials = creds("ann", "pw");
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.verified);
    let err = tls.verify_error.as_deref().unwrap();
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The second, inspection-only handshake still shows the certificate.
    assert!(tls.subject.is_some(), "{tls:?}");
    assert!(tls.name_matches, "{tls:?}");
    assert!(
        tls.ip_addresses.contains(&"127.0.0.1".to_owned()),
        "{tls:?}"
    );
    let auth = p.auth_result.as_ref().unwrap();
    assert!(!auth.attempted, "{auth:?}");
    assert!(auth.skipped.as_deref().unwrap().contains("did not verify"));
    assert!(!report.usable());
    assert!(
        report
            .recommendation
            .reasons
            .iter()
            .any(|r| r.contains("--ca-file")),
        "{:?}",
        report.recommendation
    );
    let transcript = sb.transcript();
    assert!(
        !transcript
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH over an unverified session: {transcript:?}"
    );
    assert!(mail_commands(&transcript).is_empty(), "{transcript:?}");
    sb.shutdown().await;
}

#[tokio::test]
async fn implicit_tls_is_detected_on_a_port_expected_to_starttls() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(
        SandboxConfig::new(dir.path().join("mail"))
            .implicit_tls(true)
            .auth("ann", "pw"),
    )
    .await
    .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let port = sb.addr().port();
    let mut o = options(port);
    o.ca_file = Some(ca);
    o.timeout = Duration::from_secs(2);
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.expected, Security::StartTls);
    assert_eq!(p.security, Some(Security::Tls), "{p:?}");
    assert!(p.tls_verified(), "{p:?}");
    assert!(
        p.warnings.iter().any(|w| w.contains("speaks implicit TLS")),
        "{:?}",
        p.warnings
    );
    assert_eq!(report.recommendation.security.as_deref(), Some("tls"));

    // Told to expect implicit TLS there, it goes straight to TLS without the warning.
    o.implicit_ports = vec![port];
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.security, Some(Security::Tls));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert!(p.banner.as_deref().unwrap().starts_with("220"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_starttls_port_where_implicit_tls_was_expected_is_detected() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let port = sb.addr().port();
    let mut o = options(port);
    o.ca_file = Some(ca);
    o.implicit_ports = vec![port];
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.expected, Security::Tls);
    assert_eq!(p.security, Some(Security::StartTls), "{p:?}");
    assert!(p.tls_verified());
    assert!(
        p.warnings.iter().any(|w| w.contains("greets in plaintext")),
        "{:?}",
        p.warnings
    );
    assert_eq!(report.recommendation.security.as_deref(), Some("starttls"));
    sb.shutdown().await;
}

#[tokio::test]
async fn a_server_without_starttls_is_not_usable() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")).tls(false))
        .await
        .unwrap();
    let mut o = options(sb.addr().port());
    o.credentials = creds("ann", "pw");
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.security, Some(Security::None));
    assert!(!p.starttls_offered);
    assert!(p.tls.is_none());
    assert!(!p.extensions.is_empty(), "EHLO extensions still reported");
    assert!(!p.auth_result.as_ref().unwrap().attempted);
    assert!(!report.usable());
    assert!(report.recommendation.toml.is_empty());
    let transcript = sb.transcript();
    assert!(
        !transcript
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("AUTH")),
        "{transcript:?}"
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let report = doctor::run(&options(port)).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.connect, Connect::Refused);
    assert!(!p.reachable);
    assert_eq!(p.error.as_deref(), Some("connection refused"));
    assert!(!report.usable());
    assert!(
        report
            .recommendation
            .summary
            .starts_with("Nothing answered")
    );
}

/// A plaintext server that offers AUTH without STARTTLS and records every line it receives.
/// The dialogue of the tiny servers below: `greeting`, then `ehlo` to EHLO, 221 to QUIT and
/// 502 to anything else, logging every line received.
async fn answer<S: AsyncRead + AsyncWrite>(
    io: S,
    greeting: &[u8],
    ehlo: &[u8],
    log: &Mutex<Vec<String>>,
) {
    let (read, mut write) = tokio::io::split(io);
    let mut lines = BufReader::new(read).lines();
    if write.write_all(greeting).await.is_err() {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap().push(line.clone());
        let up = line.to_ascii_uppercase();
        let reply: &[u8] = if up.starts_with("EHLO") {
            ehlo
        } else if up.starts_with("QUIT") {
            b"221 bye\r\n"
        } else {
            b"502 5.5.1 not here\r\n"
        };
        if write.write_all(reply).await.is_err() || up.starts_with("QUIT") {
            break;
        }
    }
}

async fn cleartext_auth_server(greet_after: Duration) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                // A slow greeter (its own behaviour, not test synchronisation).
                tokio::time::sleep(greet_after).await;
                let ehlo: &[u8] =
                    b"250-old.test\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE 5242880\r\n250 8BITMIME\r\n";
                answer(stream, b"220 old.test ESMTP\r\n", ehlo, &log).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn auth_offered_in_cleartext_is_warned_and_never_used() {
    provider();
    let (port, seen) = cleartext_auth_server(Duration::ZERO).await;
    let mut o = options(port);
    o.credentials = creds("ann", "pw");
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.security, Some(Security::None));
    assert!(p.auth_before_tls);
    assert_eq!(p.auth_mechanisms, vec!["PLAIN", "LOGIN"]);
    assert_eq!(p.size_limit, Some(5_242_880));
    assert!(p.eightbitmime && !p.pipelining);
    assert!(
        p.warnings.iter().any(|w| w.contains("without TLS")),
        "{:?}",
        p.warnings
    );
    assert!(!report.usable());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec!["EHLO doctor.test", "QUIT"],
        "never AUTH in cleartext"
    );
}

#[tokio::test]
async fn a_slow_plaintext_greeter_on_an_implicit_tls_port_is_recognised() {
    provider();
    // Greets after the probe already sent its ClientHello: the handshake sees "220 …".
    let (port, seen) = cleartext_auth_server(Duration::from_millis(1500)).await;
    let mut o = options(port);
    o.implicit_ports = vec![port];
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.expected, Security::Tls);
    assert_eq!(p.security, Some(Security::None), "{p:?}");
    assert!(p.error.is_none(), "{p:?}");
    assert_eq!(p.banner.as_deref(), Some("220 old.test ESMTP"));
    assert!(
        p.warnings.iter().any(|w| w.contains("greets in plaintext")),
        "{:?}",
        p.warnings
    );
    assert!(
        seen.lock()
            .unwrap()
            .contains(&"EHLO doctor.test".to_owned())
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_at_once_is_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let report = doctor::run(&options(port)).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.connect, Connect::Open);
    assert_eq!(
        p.error.as_deref(),
        Some("the server closed the connection without a greeting")
    );
    assert!(!report.usable());
    server.abort();
}

#[tokio::test]
async fn a_server_that_never_greets_times_out_per_step() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut o = options(port);
    o.timeout = Duration::from_millis(300);
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.connect, Connect::Open);
    let err = p.error.as_deref().unwrap();
    assert!(err.contains("no greeting"), "{err}");
    assert!(!report.usable());
    holder.abort();
}

/// An implicit-TLS server whose certificate (signed by a CA written to `ca_path`) names only
/// `names` and is valid from `not_before` to `not_after` (year, month, day).
async fn custom_cert_server(
    ca_path: &Path,
    names: &[&str],
    not_before: (i32, u8, u8),
    not_after: (i32, u8, u8),
) -> (u16, Arc<Mutex<Vec<String>>>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "doctor test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(ca_path, ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, names[0]);
    leaf.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
    leaf.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let config = ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                // A client rejecting the certificate aborts the handshake: that is expected.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let ehlo: &[u8] = b"250-custom.test\r\n250 AUTH PLAIN\r\n";
                answer(tls, b"220 custom.test ESMTP\r\n", ehlo, &log).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_certificate_for_another_name_is_shown_with_a_hint_and_no_auth() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (port, seen) =
        custom_cert_server(&ca, &["mail.other.test"], (2020, 1, 1), (2090, 1, 1)).await;
    let mut o = options(port);
    o.ca_file = Some(ca);
    o.implicit_ports = vec![port];
    o.credentials = creds("ann", "pw");
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert_eq!(p.security, Some(Security::Tls), "{p:?}");
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.verified && !tls.name_matches, "{tls:?}");
    assert!(
        tls.verify_error
            .as_deref()
            .unwrap()
            .contains("mail.other.test"),
        "{tls:?}"
    );
    assert_eq!(tls.dns_names, vec!["mail.other.test"]);
    assert_eq!(tls.subject.as_deref(), Some("CN=mail.other.test"));
    assert_eq!(tls.issuer.as_deref(), Some("CN=doctor test CA"));
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("does not name 127.0.0.1")),
        "{:?}",
        p.warnings
    );
    assert!(!p.auth_result.as_ref().unwrap().attempted);
    assert!(!report.usable());
    assert!(
        report
            .recommendation
            .reasons
            .iter()
            .any(|r| r.contains("names mail.other.test, not 127.0.0.1")),
        "{:?}",
        report.recommendation.reasons
    );
    // The inspection session said EHLO and QUIT, nothing else.
    assert_eq!(*seen.lock().unwrap(), vec!["EHLO doctor.test", "QUIT"]);
}

#[tokio::test]
async fn an_expired_certificate_is_reported_with_negative_days_left() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (port, _seen) = custom_cert_server(&ca, &["127.0.0.1"], (2019, 1, 1), (2020, 1, 1)).await;
    let mut o = options(port);
    o.ca_file = Some(ca);
    o.implicit_ports = vec![port];
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.verified, "{tls:?}");
    assert!(tls.name_matches, "{tls:?}");
    assert!(tls.days_left.unwrap() < 0, "{tls:?}");
    assert_eq!(tls.not_after.as_deref(), Some("2020-01-01T00:00:00Z"));
    assert!(
        tls.verify_error.as_deref().unwrap().contains("expired"),
        "{tls:?}"
    );
    assert!(
        p.warnings.iter().any(|w| w.contains("EXPIRED")),
        "{:?}",
        p.warnings
    );
    assert!(!report.usable());
}

// ---------------------------------------------------------------- the CLI

fn mailroom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
}

#[tokio::test]
async fn cli_host_mode_json_and_exit_codes() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")).auth("ann", "pw"))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let port = sb.addr().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = tokio::task::spawn_blocking(move || {
        mailroom()
            .args(["doctor", "127.0.0.1", "--json", "--auth", "--user", "ann"])
            .arg("--ports")
            .arg(format!("{closed},{port}"))
            .arg("--ca-file")
            .arg(&ca)
            .env("MAILROOM_SMTP_PASSWORD", "pw")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let ports = json["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["port"], closed);
    assert_eq!(ports[0]["reachable"], false);
    assert_eq!(ports[0]["connect"], "refused");
    assert_eq!(ports[1]["tls"]["verified"], true);
    assert_eq!(ports[1]["auth_result"]["success"], true);
    assert!(ports[1]["tls"]["days_left"].as_i64().unwrap() > 0);
    assert_eq!(json["recommendation"]["port"], port);
    assert!(!stdout.contains("\"pw\""), "the password never appears");

    // Nothing usable: exit 1; the text report says why.
    let out = mailroom()
        .args(["doctor", "127.0.0.1", "--ports"])
        .arg(closed.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connection refused"), "{text}");
    assert!(
        text.contains("verdict: no port is usable securely"),
        "{text}"
    );

    // Usage errors: exit 2 with a fix.
    let out = mailroom()
        .args(["doctor", "127.0.0.1", "--auth"])
        .env_remove("MAILROOM_SMTP_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user"));
    let out = mailroom()
        .args(["doctor", "127.0.0.1", "--ca-file", "/nonexistent/ca.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/ca.pem"));
    sb.shutdown().await;
}

fn write_campaign(dir: &Path, port: u16, security: &str, ca: &Path, password_env: &str) {
    std::fs::write(dir.join("body.txt.hbs"), "Hello {{name}}\n").unwrap();
    std::fs::write(
        dir.join("contacts.csv"),
        "email,name\nann@example.com,Ann\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("campaign.toml"),
        format!(
            r#"[campaign]
name = "doctor-test"
from = "News <news@example.com>"
subject = "Hi"
text = "body.txt.hbs"

[contacts]
path = "contacts.csv"

[smtp]
host = "127.0.0.1"
port = {port}
security = "{security}"
username = "ann"
password_env = "{password_env}"
ca_file = "{}"
"#,
            ca.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn cli_campaign_mode_reads_host_port_credentials_and_ca_file() {
    provider();
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox::start(SandboxConfig::new(dir.path().join("mail")).auth("ann", "pw2"))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    sb.write_ca(&ca).unwrap();
    let port = sb.addr().port();
    let campaign = dir.path().join("campaign");
    std::fs::create_dir(&campaign).unwrap();
    write_campaign(&campaign, port, "starttls", &ca, "DOCTOR_TEST_PASSWORD");
    let dir_path = campaign.clone();
    let out = tokio::task::spawn_blocking(move || {
        mailroom()
            .arg("doctor")
            .arg(&campaign)
            .args(["--auth", "--timeout", "5", "--ports"])
            .arg(port.to_string())
            .env("DOCTOR_TEST_PASSWORD", "pw2")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("auth test: accepted (PLAIN): 235"), "{text}");
    assert!(text.contains(&format!("port = {port}")), "{text}");
    assert!(text.contains("the port already configured"), "{text}");
    assert!(!text.contains("pw2"), "{text}");
    assert!(!text.contains("campaign.toml has port"), "{text}");

    // The campaign says implicit TLS, the port speaks STARTTLS: the verdict says so.
    write_campaign(&dir_path, port, "tls", &ca, "DOCTOR_TEST_PASSWORD");
    let out = tokio::task::spawn_blocking(move || {
        mailroom()
            .arg("doctor")
            .arg(dir_path.join("campaign.toml"))
            .args(["--timeout", "5", "--ports"])
            .arg(port.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "campaign.toml has port = {port}, security = \"tls\", but port {port} speaks STARTTLS"
        )),
        "{text}"
    );
    assert!(text.contains("security = \"starttls\""), "{text}");
    sb.shutdown().await;
}

// ---------------------------------------------------------------- the CI Postfix

struct Rig {
    submission: u16,
    smtps: u16,
    smtp: u16,
    sink: u16,
    ca: std::path::PathBuf,
    user: String,
    password: String,
}

fn rig() -> Option<Rig> {
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let Some(_host) = var("MAILROOM_TEST_POSTFIX_HOST") else {
        assert!(
            var("CI").as_deref() != Some("true"),
            "CI=true but MAILROOM_TEST_POSTFIX_HOST is not set: source scripts/ci-servers.sh"
        );
        eprintln!(
            "SKIPPED: doctor against Postfix: MAILROOM_TEST_POSTFIX_HOST unset; \
             run `source scripts/ci-servers.sh` as root to include it"
        );
        return None;
    };
    let need = |n: &str| var(n).unwrap_or_else(|| panic!("{n} is not set"));
    Some(Rig {
        submission: need("MAILROOM_TEST_POSTFIX_SUBMISSION_PORT")
            .parse()
            .unwrap(),
        smtps: need("MAILROOM_TEST_POSTFIX_SMTPS_PORT").parse().unwrap(),
        smtp: need("MAILROOM_TEST_POSTFIX_SMTP_PORT").parse().unwrap(),
        sink: need("MAILROOM_TEST_SMTP_SINK_PORT").parse().unwrap(),
        ca: need("MAILROOM_TEST_POSTFIX_CA").into(),
        user: need("MAILROOM_TEST_POSTFIX_USER"),
        password: need("MAILROOM_TEST_POSTFIX_PASSWORD"),
    })
}

fn port(report: &Report, port: u16) -> &doctor::PortReport {
    report.ports.iter().find(|p| p.port == port).unwrap()
}

#[tokio::test]
async fn postfix_rig_every_listener_kind() {
    provider();
    let Some(rig) = rig() else { return };
    let mut o = options(rig.submission);
    o.ports = vec![rig.submission, rig.smtps, rig.smtp, rig.sink];
    o.implicit_ports = vec![rig.smtps];
    o.ca_file = Some(rig.ca.clone());
    o.credentials = creds(&rig.user, &rig.password);
    let report = doctor::run(&o).await.unwrap();

    let sub = port(&report, rig.submission);
    assert_eq!(sub.security, Some(Security::StartTls), "{sub:?}");
    assert!(sub.tls_verified(), "{sub:?}");
    assert!(
        !sub.auth_before_tls,
        "Postfix with smtpd_tls_auth_only hides AUTH before TLS"
    );
    assert!(sub.extensions_before_tls.iter().any(|e| e == "STARTTLS"));
    assert!(sub.pipelining && sub.enhancedstatuscodes && sub.dsn && sub.smtputf8 && sub.chunking);
    assert!(sub.size_limit.is_some());
    assert!(sub.auth_succeeded(), "{:?}", sub.auth_result);

    let smtps = port(&report, rig.smtps);
    assert_eq!(smtps.security, Some(Security::Tls), "{smtps:?}");
    assert!(smtps.auth_succeeded(), "{:?}", smtps.auth_result);
    assert!(smtps.warnings.is_empty(), "{:?}", smtps.warnings);

    let inbound = port(&report, rig.smtp);
    assert_eq!(inbound.security, Some(Security::StartTls));
    assert!(inbound.tls_verified());
    assert!(inbound.auth_mechanisms.is_empty());
    assert!(!inbound.auth_succeeded());

    let sink = port(&report, rig.sink);
    assert_eq!(sink.security, Some(Security::None));
    assert!(sink.auth_before_tls, "smtp-sink offers AUTH in cleartext");
    assert!(!sink.auth_result.as_ref().unwrap().attempted);

    assert!(report.usable());
    let rec = &report.recommendation;
    // 465 is preferred (RFC 8314) when the rig uses the standard ports.
    if rig.smtps == 465 {
        assert_eq!(rec.port, Some(rig.smtps), "{rec:?}");
        assert_eq!(rec.security.as_deref(), Some("tls"));
    } else {
        assert!(
            rec.port == Some(rig.smtps) || rec.port == Some(rig.submission),
            "{rec:?}"
        );
    }
    assert!(
        !rec.toml
            .iter()
            .any(|l| l.contains(&rig.smtp.to_string()) && l.starts_with("fallback")),
        "the inbound port offers no AUTH: never a fallback: {rec:?}"
    );

    // Wrong password: Postfix's exact 535 is reported, nothing is usable.
    o.ports = vec![rig.submission];
    o.credentials = creds(&rig.user, "definitely-wrong");
    let report = doctor::run(&o).await.unwrap();
    let auth = report.ports[0].auth_result.as_ref().unwrap();
    assert!(
        auth.reply.as_deref().unwrap().starts_with("535 5.7.8"),
        "{auth:?}"
    );
    assert!(!report.usable());

    // Without the test CA: the chain does not verify and AUTH is not attempted.
    o.ca_file = None;
    o.credentials = creds(&rig.user, &rig.password);
    let report = doctor::run(&o).await.unwrap();
    let p = &report.ports[0];
    assert!(!p.tls_verified());
    assert!(p.tls.as_ref().unwrap().subject.is_some());
    assert!(!p.auth_result.as_ref().unwrap().attempted);
}

// ---------------------------------------------------------------- the CI rig's own contract
// scripts/ci-servers.sh promises fixed behaviours (docs/testing.md); other test files rely on
// them. This checks each promise through the submission port with lettre, so a change to the
// script that breaks one fails here, with the reply in the message.

async fn rig_send(rig: &Rig, from: &str, to: &str, body: &str) -> Result<String, String> {
    use lettre::transport::smtp::authentication::Credentials as SmtpCredentials;
    use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};

    let ca = std::fs::read(&rig.ca).unwrap();
    let params = TlsParameters::builder("127.0.0.1".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(Certificate::from_pem(&ca).unwrap())
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(rig.submission)
        .tls(Tls::Required(params))
        .credentials(SmtpCredentials::new(rig.user.clone(), rig.password.clone()))
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let envelope = Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()]).unwrap();
    let message = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: rig contract\r\nMessage-ID: <{body}@doctor.test>\r\n\r\n{body}\r\n"
    );
    transport
        .send_raw(&envelope, message.as_bytes())
        .await
        .map(|r| r.code().to_string())
        .map_err(|e| e.to_string())
}

/// Files in a Maildir's new/ and cur/ whose text contains `needle` (bounded wait).
async fn wait_for_file(maildir: &Path, needle: &str) -> Option<String> {
    for _ in 0..150 {
        for sub in ["new", "cur"] {
            for entry in std::fs::read_dir(maildir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(text) = std::fs::read_to_string(entry.path())
                    && text.contains(needle)
                {
                    return Some(text);
                }
            }
        }
        // Postfix delivers after its 250, asynchronously: poll with a bounded deadline.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test]
async fn ci_rig_keeps_its_documented_promises() {
    provider();
    let Some(rig) = rig() else { return };
    let var = |n: &str| std::env::var(n).unwrap();
    let ok = var("MAILROOM_TEST_DOMAIN_OK");
    let bounces = var("MAILROOM_TEST_DOMAIN_BOUNCES");
    let maildirs = std::path::PathBuf::from(var("MAILROOM_TEST_POSTFIX_MAILDIR_ROOT"));
    let bounce_maildir = std::path::PathBuf::from(var("MAILROOM_TEST_POSTFIX_BOUNCE_MAILDIR"));
    let marker = format!(
        "rig{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let from = "sender@mailroom.test";

    // A listed user: accepted, then in <root>/<domain>/<user>/.
    let code = rig_send(&rig, from, &format!("user0042@{ok}"), &marker).await;
    assert_eq!(code.as_deref(), Ok("250"), "{code:?}");
    let user_dir = maildirs.join(&ok).join("user0042");
    assert!(
        wait_for_file(&user_dir, &marker).await.is_some(),
        "not in {}",
        user_dir.display()
    );

    // Unknown user: 550 5.1.1 at RCPT.
    let err = rig_send(&rig, from, &var("MAILROOM_TEST_UNKNOWN_USER"), &marker)
        .await
        .unwrap_err();
    assert!(err.contains("550") && err.contains("5.1.1"), "{err}");
    // The two deferring domains.
    let err = rig_send(
        &rig,
        from,
        &format!("a@{}", var("MAILROOM_TEST_DOMAIN_DEFER451")),
        &marker,
    )
    .await
    .unwrap_err();
    assert!(err.contains("451") && err.contains("4.3.0"), "{err}");
    let err = rig_send(
        &rig,
        from,
        &format!("a@{}", var("MAILROOM_TEST_DOMAIN_DEFER452")),
        &marker,
    )
    .await
    .unwrap_err();
    assert!(err.contains("452") && err.contains("4.2.2"), "{err}");

    // Accepted, then a real RFC 3464 DSN to the VERP return path, in the bounce Maildir.
    let return_path = var("MAILROOM_TEST_BOUNCE_RETURN_PATH").replace("{token}", &marker);
    assert!(
        return_path.ends_with(&format!("@{bounces}")),
        "{return_path}"
    );
    let code = rig_send(
        &rig,
        &return_path,
        &format!("someone@{}", var("MAILROOM_TEST_DOMAIN_DSN")),
        &marker,
    )
    .await;
    assert_eq!(code.as_deref(), Ok("250"), "{code:?}");
    let dsn = wait_for_file(&bounce_maildir, &format!("X-Original-To: {return_path}"))
        .await
        .unwrap_or_else(|| panic!("no DSN for {return_path} in {}", bounce_maildir.display()));
    assert!(dsn.contains("report-type=delivery-status"), "{dsn}");
    assert!(dsn.contains("Status: 5.1.1"), "{dsn}");
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(
        dsn.contains(&marker),
        "the DSN returns the original message"
    );
}
