//! Probes one port: connect, greeting, EHLO, TLS, optional AUTH, QUIT, filling a `PortReport`.
//!
//! Rules it keeps: AUTH only on a TLS session whose certificate verified; the accept-anything TLS
//! configuration is used on a separate connection, only to read a certificate that failed, and
//! that session ends after EHLO. No MAIL, RCPT or DATA is ever sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use super::tls::Configs;
use super::{AuthResult, Connect, Login, Options, PortReport, Security, TlsReport, cert};
use crate::smtp::{Conn, Error as StepError, Extensions, parse_ehlo};
use crate::transport::Secret;

/// How long a port expected to speak TLS first may take to show it speaks plaintext instead: a
/// plaintext SMTP server greets at once, a TLS server waits for our ClientHello.
const SNIFF: Duration = Duration::from_millis(800);

/// What a fresh connection does before we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    Data,
    Closed,
    Silent,
}

pub async fn probe_port(options: &Options, configs: &Configs, port: u16) -> PortReport {
    let started = Instant::now();
    let expected = if options.implicit_ports.contains(&port) {
        Security::Tls
    } else {
        Security::StartTls
    };
    let mut report = PortReport::new(port, expected);
    let probe = Probe {
        options,
        configs,
        port,
    };
    probe.run(&mut report).await;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report
}

struct Probe<'a> {
    options: &'a Options,
    configs: &'a Configs,
    port: u16,
}

impl Probe<'_> {
    fn timeout(&self) -> Duration {
        self.options.timeout
    }

    async fn run(&self, r: &mut PortReport) {
        let Some(tcp) = self.connect(r).await else {
            return;
        };
        r.reachable = true;
        r.connect = Connect::Open;
        let mut first = self.sniff(&tcp, SNIFF.min(self.timeout())).await;
        if first == Sniff::Silent && r.expected == Security::StartTls {
            first = self.sniff(&tcp, self.timeout()).await;
        }
        if first == Sniff::Closed {
            r.error = Some("the server closed the connection without a greeting".into());
            return;
        }
        let server_speaks_first = first == Sniff::Data;
        if r.expected == Security::Tls {
            if server_speaks_first {
                r.warnings.push(format!(
                    "port {} greets in plaintext: it is a STARTTLS-style port, not implicit TLS",
                    self.port
                ));
                self.plain_session(r, tcp).await;
            } else {
                self.implicit_session(r, tcp).await;
            }
            return;
        }
        // STARTTLS expected: a silent server may be an implicit-TLS port.
        if server_speaks_first {
            self.plain_session(r, tcp).await;
            return;
        }
        drop(tcp);
        let Some(tcp) = self.connect(r).await else {
            return;
        };
        let before = r.warnings.len();
        self.implicit_session(r, tcp).await;
        if r.security == Some(Security::Tls) && r.error.is_none() {
            r.warnings.insert(
                before,
                format!(
                    "port {} sent no plaintext greeting but speaks implicit TLS (465 style): use security = \"tls\"",
                    self.port
                ),
            );
        } else if r.security.is_none() {
            r.error = Some(format!(
                "no greeting within {:?}, and implicit TLS failed too{}",
                self.timeout(),
                r.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
    }

    async fn connect(&self, r: &mut PortReport) -> Option<TcpStream> {
        // "[::1]" is how people write an IPv6 literal next to a port; the resolver wants "::1".
        let host = self
            .options
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        let attempt = tokio::time::timeout(self.timeout(), TcpStream::connect((host, self.port)));
        match attempt.await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                Some(tcp)
            }
            Ok(Err(e)) => {
                r.connect = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Connect::Refused
                } else {
                    Connect::Error
                };
                r.error = Some(match r.connect {
                    Connect::Refused => "connection refused".to_owned(),
                    _ => format!("cannot connect to {host}:{}: {e}", self.port),
                });
                None
            }
            Err(_) => {
                r.connect = Connect::Timeout;
                r.error = Some(format!(
                    "no answer within {:?} (filtered/blocked by a firewall or the provider?)",
                    self.timeout()
                ));
                None
            }
        }
    }

    /// Whether the server sends something within `wait` without being spoken to.
    async fn sniff(&self, tcp: &TcpStream, wait: Duration) -> Sniff {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(wait, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Sniff::Data,
            Ok(_) => Sniff::Closed,
            Err(_) => Sniff::Silent,
        }
    }

    fn hello(&self, tcp: &TcpStream) -> String {
        if let Some(name) = &self.options.hello_name {
            return name.clone();
        }
        match tcp.local_addr() {
            Ok(SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(_) => "localhost".to_owned(),
        }
    }

    /// Plain greeting, EHLO, then STARTTLS when offered.
    async fn plain_session(&self, r: &mut PortReport, tcp: TcpStream) {
        let hello = self.hello(&tcp);
        let mut conn = Conn::new(tcp, self.timeout());
        let Some(ext) = self.greet_and_ehlo(r, &mut conn, &hello, true).await else {
            return;
        };
        r.extensions_before_tls = ext.raw.clone();
        r.starttls_offered = ext.starttls;
        r.auth_before_tls = !ext.auth.is_empty();
        if !ext.starttls {
            r.security = Some(Security::None);
            apply_extensions(r, &ext);
            r.warnings.push(
                "no STARTTLS offered: mail and passwords would cross the network in cleartext"
                    .into(),
            );
            if r.auth_before_tls {
                r.warnings.push(
                    "AUTH is offered without TLS: mailroom never authenticates in cleartext".into(),
                );
            }
            self.skip_auth(r, "the port offers no TLS; AUTH is never sent in cleartext");
            conn.quit().await;
            return;
        }
        r.security = Some(Security::StartTls);
        if r.auth_before_tls {
            r.warnings.push(format!(
                "AUTH ({}) is offered before STARTTLS: a client that does not insist on TLS could send its password in cleartext",
                ext.auth.join(" ")
            ));
        }
        let Some(tcp) = self.starttls_command(r, conn).await else {
            return;
        };
        let stream = match self.handshake(&self.configs.verified, tcp).await {
            Ok(stream) => stream,
            Err(verify_error) => {
                // Second connection, accept-anything config: only to show the certificate.
                let Some(stream) = self.inspect_via_starttls(r, &hello).await else {
                    r.error = Some(format!("TLS handshake failed: {verify_error}"));
                    return;
                };
                self.record_tls(r, &stream, false, Some(verify_error));
                self.after_tls(r, stream, &hello, false).await;
                return;
            }
        };
        self.record_tls(r, &stream, true, None);
        self.after_tls(r, stream, &hello, true).await;
    }

    async fn starttls_command(
        &self,
        r: &mut PortReport,
        mut conn: Conn<TcpStream>,
    ) -> Option<TcpStream> {
        match conn.command("STARTTLS").await {
            Ok(reply) if reply.code == 220 => match conn.into_inner() {
                Ok(tcp) => Some(tcp),
                Err(e) => {
                    r.error = Some(e.to_string());
                    None
                }
            },
            Ok(reply) => {
                r.error = Some(format!("STARTTLS refused: {}", reply.text()));
                conn.quit().await;
                None
            }
            Err(e) => {
                r.error = Some(format!("STARTTLS: {e}"));
                None
            }
        }
    }

    /// Connect again, greet, EHLO, STARTTLS, and handshake accepting any certificate.
    async fn inspect_via_starttls(
        &self,
        r: &mut PortReport,
        hello: &str,
    ) -> Option<TlsStream<TcpStream>> {
        let mut scratch = PortReport::new(self.port, Security::StartTls);
        let tcp = self.connect(&mut scratch).await?;
        let mut conn = Conn::new(tcp, self.timeout());
        self.greet_and_ehlo(&mut scratch, &mut conn, hello, false)
            .await?;
        let tcp = self.starttls_command(&mut scratch, conn).await?;
        let stream = self.handshake(&self.configs.inspect, tcp).await.ok();
        if stream.is_none() {
            r.warnings
                .push("could not complete a second TLS handshake to read the certificate".into());
        }
        stream
    }

    /// TLS from the first byte (465 style).
    async fn implicit_session(&self, r: &mut PortReport, tcp: TcpStream) {
        let hello = self.hello(&tcp);
        match self.handshake(&self.configs.verified, tcp).await {
            Ok(stream) => {
                r.security = Some(Security::Tls);
                self.record_tls(r, &stream, true, None);
                self.after_tls(r, stream, &hello, true).await;
            }
            Err(verify_error) => {
                let mut scratch = PortReport::new(self.port, Security::StartTls);
                let Some(tcp) = self.connect(&mut scratch).await else {
                    r.error = Some(format!("TLS handshake failed: {verify_error}"));
                    return;
                };
                if verify_error.contains("InvalidContentType") {
                    // The server sent a plaintext greeting where a TLS record was expected: a
                    // STARTTLS-style port that was merely slow to greet.
                    r.warnings.push(format!(
                        "port {} greets in plaintext: it is a STARTTLS-style port, not implicit TLS",
                        self.port
                    ));
                    self.plain_session(r, tcp).await;
                    return;
                }
                match self.handshake(&self.configs.inspect, tcp).await {
                    Ok(stream) => {
                        r.security = Some(Security::Tls);
                        self.record_tls(r, &stream, false, Some(verify_error));
                        self.after_tls(r, stream, &hello, false).await;
                    }
                    Err(_) => r.error = Some(format!("TLS handshake failed: {verify_error}")),
                }
            }
        }
    }

    async fn handshake(
        &self,
        config: &Arc<ClientConfig>,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(self.options.host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| format!("{} is not a valid TLS server name: {e}", self.options.host))?;
        let connector = TlsConnector::from(Arc::clone(config));
        match tokio::time::timeout(self.timeout(), connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(crate::tls::explain(&e.to_string())),
            Err(_) => Err(format!("handshake timed out after {:?}", self.timeout())),
        }
    }

    fn record_tls(
        &self,
        r: &mut PortReport,
        stream: &TlsStream<TcpStream>,
        verified: bool,
        verify_error: Option<String>,
    ) {
        let (_, session) = stream.get_ref();
        let version = session
            .protocol_version()
            .map(|v| match v {
                tokio_rustls::rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                tokio_rustls::rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        let cipher = session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let chain = session.peer_certificates().unwrap_or_default();
        let summary = chain.first().and_then(|der| cert::parse(der));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let host = self.options.host.as_str();
        let tls = TlsReport {
            version,
            cipher,
            verified,
            verify_error,
            subject: summary.as_ref().map(|s| s.subject.clone()),
            issuer: summary.as_ref().map(|s| s.issuer.clone()),
            not_after: summary.as_ref().and_then(|s| {
                chrono::DateTime::from_timestamp(s.not_after, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            }),
            days_left: summary
                .as_ref()
                .map(|s| (s.not_after - now).div_euclid(86_400)),
            dns_names: summary
                .as_ref()
                .map(|s| s.dns_names.clone())
                .unwrap_or_default(),
            ip_addresses: summary
                .as_ref()
                .map(|s| s.ip_addresses.iter().map(|ip| ip.to_string()).collect())
                .unwrap_or_default(),
            name_matches: summary
                .as_ref()
                .is_some_and(|s| cert::name_matches(s, host)),
            chain_length: chain.len(),
        };
        if let Some(days) = tls.days_left {
            if days < 0 {
                r.warnings.push("the certificate has EXPIRED".into());
            } else if days < 14 {
                r.warnings
                    .push(format!("the certificate expires in {days} days"));
            }
        }
        if !tls.name_matches && summary.is_some() {
            r.warnings.push(format!(
                "the certificate does not name {host} (it names: {})",
                tls.dns_names
                    .iter()
                    .chain(&tls.ip_addresses)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        r.tls = Some(tls);
    }

    /// Greeting (implicit TLS only), EHLO over TLS, AUTH when verified, QUIT.
    async fn after_tls<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        r: &mut PortReport,
        stream: S,
        hello: &str,
        verified: bool,
    ) {
        let mut conn = Conn::new(stream, self.timeout());
        let implicit = r.security == Some(Security::Tls);
        let ext = if implicit {
            self.greet_and_ehlo(r, &mut conn, hello, true).await
        } else {
            match conn.command(&format!("EHLO {hello}")).await {
                Ok(reply) if reply.code == 250 => Some(parse_ehlo(&reply)),
                Ok(reply) => {
                    r.error = Some(format!("EHLO after STARTTLS refused: {}", reply.text()));
                    None
                }
                Err(e) => {
                    r.error = Some(format!("EHLO after STARTTLS: {e}"));
                    None
                }
            }
        };
        let Some(ext) = ext else {
            return;
        };
        apply_extensions(r, &ext);
        if verified {
            self.try_auth(r, &mut conn, &ext).await;
        } else {
            self.skip_auth(
                r,
                "the certificate did not verify; AUTH is never sent over an unverified connection",
            );
        }
        conn.quit().await;
    }

    /// Reads the greeting, sends EHLO. `record` = store banner/errors in the report.
    async fn greet_and_ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        r: &mut PortReport,
        conn: &mut Conn<S>,
        hello: &str,
        record: bool,
    ) -> Option<Extensions> {
        let greeting = match conn.read_reply().await {
            Ok(reply) => reply,
            Err(e) => {
                if record {
                    r.error = Some(format!("greeting: {e}"));
                }
                return None;
            }
        };
        if record {
            r.banner = Some(greeting.text());
        }
        if greeting.code != 220 {
            if record {
                r.error = Some(format!(
                    "the server refused the session: {}",
                    greeting.text()
                ));
            }
            let _ = conn.command("QUIT").await;
            return None;
        }
        match conn.command(&format!("EHLO {hello}")).await {
            Ok(reply) if reply.code == 250 => Some(parse_ehlo(&reply)),
            Ok(reply) => {
                if record {
                    r.error = Some(format!(
                        "EHLO refused: {} (an ESMTP server is needed for TLS and AUTH)",
                        reply.text()
                    ));
                }
                let _ = conn.command("QUIT").await;
                None
            }
            Err(e) => {
                if record {
                    r.error = Some(format!("EHLO: {e}"));
                }
                None
            }
        }
    }

    fn skip_auth(&self, r: &mut PortReport, why: &str) {
        if self.options.credentials.is_some() {
            r.auth_result = Some(AuthResult {
                attempted: false,
                success: false,
                mechanism: None,
                reply: None,
                skipped: Some(why.to_owned()),
            });
        }
    }

    async fn try_auth<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        r: &mut PortReport,
        conn: &mut Conn<S>,
        ext: &Extensions,
    ) {
        let Some(creds) = &self.options.credentials else {
            return;
        };
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let password = match &creds.login {
            Login::Password(password) => password.expose(),
            Login::XOAuth2(tokens) => {
                self.try_xoauth2(r, conn, ext, &creds.username, tokens)
                    .await;
                return;
            }
        };
        let mechanism = if ext.auth.iter().any(|m| m == "PLAIN") {
            "PLAIN"
        } else if ext.auth.iter().any(|m| m == "LOGIN") {
            "LOGIN"
        } else {
            let why = if ext.auth.is_empty() {
                "the server offers no AUTH on this port".to_owned()
            } else {
                format!(
                    "the server offers only {} (mailroom speaks PLAIN and LOGIN with a password)",
                    ext.auth.join(" ")
                )
            };
            self.skip_auth(r, &why);
            return;
        };
        let outcome: Result<_, StepError> = async {
            if mechanism == "PLAIN" {
                let mut token = zeroize::Zeroizing::new(Vec::with_capacity(
                    creds.username.len() * 2 + password.len() + 2,
                ));
                token.push(0);
                token.extend_from_slice(creds.username.as_bytes());
                token.push(0);
                token.extend_from_slice(password.as_bytes());
                let token = zeroize::Zeroizing::new(b64(&token));
                let line = Secret::concat(&["AUTH PLAIN ", &token]);
                return conn.command(&line).await;
            }
            let reply = conn.command("AUTH LOGIN").await?;
            if reply.code != 334 {
                return Ok(reply);
            }
            let reply = conn.command(&b64(creds.username.as_bytes())).await?;
            if reply.code != 334 {
                return Ok(reply);
            }
            conn.command(&zeroize::Zeroizing::new(b64(password.as_bytes())))
                .await
        }
        .await;
        record_auth(r, mechanism, outcome);
    }

    /// AUTH XOAUTH2: a refused token gets a 334 with a JSON error, answered with an empty
    /// line; the 535 after it is the result (with the decoded error added).
    async fn try_xoauth2<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        r: &mut PortReport,
        conn: &mut Conn<S>,
        ext: &Extensions,
        user: &str,
        tokens: &crate::oauth::Tokens,
    ) {
        if !ext.auth.iter().any(|m| m == "XOAUTH2") {
            let offered = if ext.auth.is_empty() {
                "no AUTH".to_owned()
            } else {
                ext.auth.join(" ")
            };
            self.skip_auth(
                r,
                &format!("the server offers {offered} on this port, not XOAUTH2"),
            );
            return;
        }
        let token = match tokens.token().await {
            Ok(token) => token,
            Err(e) => {
                self.skip_auth(r, &format!("no OAuth2 access token: {e}"));
                return;
            }
        };
        let response = crate::oauth::xoauth2_response(user, &token);
        let outcome: Result<_, StepError> = async {
            let line = Secret::concat(&["AUTH XOAUTH2 ", &response]);
            let first = conn.command(&line).await?;
            if first.code != 334 {
                return Ok(first);
            }
            let detail = crate::oauth::describe_challenge(&first.message());
            let mut last = conn.command("").await?;
            if let Some(detail) = detail {
                last.lines.push(detail);
            }
            Ok(last)
        }
        .await;
        record_auth(r, "XOAUTH2", outcome);
    }
}

fn record_auth(
    r: &mut PortReport,
    mechanism: &str,
    outcome: Result<crate::smtp::Reply, StepError>,
) {
    r.auth_result = Some(match outcome {
        Ok(reply) => AuthResult {
            attempted: true,
            success: reply.code == 235,
            mechanism: Some(mechanism.to_owned()),
            reply: Some(reply.text()),
            skipped: None,
        },
        Err(e) => AuthResult {
            attempted: true,
            success: false,
            mechanism: Some(mechanism.to_owned()),
            reply: Some(format!("no reply: {e}")),
            skipped: None,
        },
    });
}

fn apply_extensions(r: &mut PortReport, ext: &Extensions) {
    r.extensions = ext.raw.clone();
    r.auth_mechanisms = ext.auth.clone();
    r.size_limit = ext.size.flatten();
    r.pipelining = ext.pipelining;
    r.eightbitmime = ext.eightbitmime;
    r.smtputf8 = ext.smtputf8;
    r.enhancedstatuscodes = ext.enhancedstatuscodes;
    r.dsn = ext.dsn;
    r.chunking = ext.chunking;
}
