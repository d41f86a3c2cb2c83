//! SMTP client sessions for the delivery engine: one owned lettre `AsyncSmtpConnection` per
//! worker, with a tokio timeout around every command (lettre's own timeout covers only the TCP
//! connect), RSET after a rejected recipient, QUIT after `messages_per_connection`.
//!
//! Security rules enforced here, not by callers: `starttls` requires STARTTLS (never falls back
//! to plaintext), `tls` is implicit TLS, `none` only to a loopback host and never with AUTH;
//! certificates are verified against the system roots plus an optional CA file; TLS 1.2 or newer.
//! The password lives only in memory ([`Secret`]) and is never logged.
//!
//! This module must not touch the ledger or decide what a reply means for a recipient: it
//! returns replies with the step they answered; `classify` holds the table that interprets them.

pub mod classify;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters, TlsVersion,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use tokio::time::timeout;

pub use classify::{Step, Verdict};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain connect, then STARTTLS is required.
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: loopback only, never with AUTH.
    None,
}

impl Security {
    /// The name used in the config file and the `runs` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::StartTls => "starttls",
            Security::Tls => "tls",
            Security::None => "none",
        }
    }
}

/// A password held in memory only; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything needed to open sessions to one relay.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM roots trusted in addition to the system's.
    pub ca_file: Option<PathBuf>,
    pub hello_name: Option<String>,
    pub fallback_ports: Vec<u16>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub messages_per_connection: usize,
}

/// Errors building a transport (configuration, not network).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "security \"none\" is only allowed to a loopback relay, and {host} is not one\n\n\
         Set [smtp] security = \"starttls\" (port 587) or \"tls\" (port 465)."
    )]
    PlaintextRemote { host: String },
    #[error(
        "refusing to authenticate without TLS ([smtp] security = \"none\" with a username)\n\n\
         Remove [smtp] username, or use security = \"starttls\" or \"tls\"."
    )]
    PlaintextAuth,
    #[error(
        "[smtp] username is set but no password was given\n\nSet [smtp] password_env or password_file."
    )]
    MissingPassword,
    #[error("cannot resolve relay host {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot use CA file {path}: {reason}\n\nGive a PEM file with one or more certificates."
    )]
    CaParse { path: PathBuf, reason: String },
    #[error("cannot set up TLS for {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error("invalid envelope address {address:?}: {reason}")]
    Address { address: String, reason: String },
}

/// A reply from the server, or the reason there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub step: Step,
    /// None when the connection failed or timed out before a reply.
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    /// The full reply text (all lines joined with "\n"), or the local error description.
    pub text: String,
    /// True when no reply arrived because the deadline passed.
    pub timed_out: bool,
}

impl Reply {
    fn from_response(step: Step, r: &Response) -> Reply {
        let code = u16::from(r.code());
        let text = r.message().collect::<Vec<_>>().join("\n");
        Reply {
            step,
            code: Some(code),
            enhanced: classify::enhanced_code(code, &text),
            text,
            timed_out: false,
        }
    }

    fn from_error(step: Step, e: &lettre::transport::smtp::Error) -> Reply {
        // lettre keeps the reply text only in the error's source; the code in status().
        let text = match std::error::Error::source(e) {
            Some(source) => source.to_string(),
            None => e.to_string(),
        };
        match e.status() {
            Some(code) => {
                let code = u16::from(code);
                Reply {
                    step,
                    code: Some(code),
                    enhanced: classify::enhanced_code(code, &text),
                    text,
                    timed_out: false,
                }
            }
            None => Reply {
                step,
                code: None,
                enhanced: None,
                text: e.to_string(),
                timed_out: false,
            },
        }
    }

    fn timeout(step: Step, after: Duration) -> Reply {
        Reply {
            step,
            code: None,
            enhanced: None,
            text: format!("no reply within {} s", after.as_secs_f64()),
            timed_out: true,
        }
    }

    fn local(step: Step, text: String) -> Reply {
        Reply {
            step,
            code: None,
            enhanced: None,
            text,
            timed_out: false,
        }
    }

    /// The classification of a reply that has a code.
    pub fn verdict(&self) -> Option<Verdict> {
        self.code
            .map(|code| classify::classify(self.step, code, self.enhanced.as_deref(), &self.text))
    }

    /// A one-line description for logs and errors.
    pub fn describe(&self) -> String {
        match self.code {
            Some(code) => format!(
                "{} {} (at {})",
                code,
                self.text.replace('\n', " / "),
                self.step
            ),
            None => format!("{} (at {})", self.text, self.step),
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone)]
pub enum ConnectFailure {
    /// Every port refused or timed out at TCP connect.
    Unreachable { tried: Vec<(u16, String)> },
    /// TLS could not be established (STARTTLS missing or refused, handshake or certificate
    /// failure): the run must stop; plaintext is never an option.
    Tls(Reply),
    /// The relay refused the credentials.
    Auth(Reply),
    /// The relay answered the greeting/EHLO with an error or did not answer in time.
    Refused(Reply),
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFailure::Unreachable { tried } => {
                f.write_str("cannot connect to the relay: ")?;
                let parts: Vec<String> = tried
                    .iter()
                    .map(|(port, why)| format!("port {port}: {why}"))
                    .collect();
                f.write_str(&parts.join("; "))
            }
            ConnectFailure::Tls(r) => write!(
                f,
                "TLS failed, refusing to continue without encryption: {}",
                r.describe()
            ),
            ConnectFailure::Auth(r) => write!(f, "authentication failed: {}", r.describe()),
            ConnectFailure::Refused(r) => {
                write!(f, "the relay refused the session: {}", r.describe())
            }
        }
    }
}

/// The result of one transaction (one recipient).
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// The server answered at `reply.step`; `reply.code` is set. The session is still usable
    /// unless the server closed it (421) — the session tracks that itself.
    Replied(Reply),
    /// No reply: the connection broke or a deadline passed. The session is gone. When
    /// `reply.step == Message`, the relay may or may not have the message.
    Lost(Reply),
    /// A reply that does not fit the command it follows (a 250 to DATA, a 354 or any non-2xx
    /// positive reply to MAIL, RCPT or the final "."): the replies are out of step with the
    /// commands (an extra reply from a buggy relay or proxy, or bytes injected before TLS), so
    /// no later reply on this connection can be trusted and the session has been dropped.
    /// Before `Step::Message` the body was never sent; at `Step::Message` the relay may have
    /// the message.
    OutOfStep(Reply),
}

/// Opens sessions to one relay; shared by all workers.
pub struct Transport {
    settings: Settings,
    addrs: Vec<IpAddr>,
    tls: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// The port that worked last; tried first by the next connect.
    working_port: AtomicU16,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .field("security", &self.settings.security)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Validates the security rules, resolves the host, loads the CA file.
    ///
    /// # Errors
    /// When the settings are unsafe (plaintext to a remote host, AUTH without TLS) or the CA
    /// file or host are unusable.
    pub async fn new(settings: Settings) -> Result<Arc<Transport>, Error> {
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((settings.host.as_str(), settings.port))
            .await
            .map_err(|source| Error::Resolve {
                host: settings.host.clone(),
                source,
            })?
            .map(|a| a.ip())
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve {
                host: settings.host.clone(),
                source: std::io::Error::other("no addresses"),
            });
        }
        if settings.security == Security::None {
            if !addrs.iter().all(IpAddr::is_loopback) {
                return Err(Error::PlaintextRemote {
                    host: settings.host.clone(),
                });
            }
            if settings.username.is_some() {
                return Err(Error::PlaintextAuth);
            }
        }
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(Secret(pass))) => Some(Credentials::new(user.clone(), pass.clone())),
            (Some(_), None) => return Err(Error::MissingPassword),
            (None, _) => None,
        };
        let tls = if settings.security == Security::None && settings.fallback_ports.is_empty() {
            None
        } else {
            Some(tls_parameters(&settings)?)
        };
        let hello = match &settings.hello_name {
            Some(name) => match name.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => ClientId::Ipv4(ip),
                Err(_) => ClientId::Domain(name.clone()),
            },
            None => ClientId::default(),
        };
        let working_port = AtomicU16::new(settings.port);
        Ok(Arc::new(Transport {
            settings,
            addrs,
            tls,
            hello,
            credentials,
            working_port,
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Ports in the order to try: the one that worked last, then the configured order.
    fn ports(&self) -> Vec<u16> {
        let mut ports = vec![
            self.working_port.load(Ordering::Relaxed),
            self.settings.port,
        ];
        ports.extend(self.settings.fallback_ports.iter().copied());
        let mut seen = Vec::new();
        ports.retain(|p| {
            let fresh = !seen.contains(p);
            seen.push(*p);
            fresh
        });
        ports
    }

    /// The security used on `port`: the configured one on the primary port; on a fallback port
    /// 465 means implicit TLS and any other STARTTLS (or none if the run is plaintext loopback).
    fn security_for(&self, port: u16) -> Security {
        if port == self.settings.port {
            self.settings.security
        } else if port == 465 {
            Security::Tls
        } else if self.settings.security == Security::None {
            Security::None
        } else {
            Security::StartTls
        }
    }

    /// Opens a ready session (greeted, TLS as configured, authenticated), trying fallback ports
    /// when a port refuses the TCP connection or does not answer in time.
    ///
    /// # Errors
    /// See [`ConnectFailure`]: TLS and AUTH failures are returned at once, never retried on
    /// another port (they would fail there too, and plaintext is not a fallback).
    pub async fn connect(&self) -> Result<Session, ConnectFailure> {
        let mut tried = Vec::new();
        for port in self.ports() {
            match self.connect_port(port).await {
                Ok(session) => {
                    self.working_port.store(port, Ordering::Relaxed);
                    return Ok(session);
                }
                Err(PortFailure::Next(why)) => {
                    tracing::info!(port, "cannot connect: {why}");
                    tried.push((port, why));
                }
                Err(PortFailure::Stop(failure)) => return Err(failure),
            }
        }
        Err(ConnectFailure::Unreachable { tried })
    }

    async fn tcp(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let mut last = String::from("no address");
        for ip in &self.addrs {
            let addr = SocketAddr::new(*ip, port);
            match timeout(
                self.settings.connect_timeout,
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    // Small commands and replies: Nagle plus delayed ACK would add ~40 ms each.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => {
                    last = format!(
                        "{addr}: no connection within {} s",
                        self.settings.connect_timeout.as_secs_f64()
                    );
                }
            }
        }
        Err(last)
    }

    async fn connect_port(&self, port: u16) -> Result<Session, PortFailure> {
        let security = self.security_for(port);
        let command_timeout = self.settings.command_timeout;
        let tls = || {
            self.tls.clone().ok_or_else(|| {
                PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                    Step::StartTls,
                    "no TLS parameters".into(),
                )))
            })
        };
        let mut conn = match security {
            Security::Tls => {
                // Implicit TLS: lettre does TCP + handshake + greeting + EHLO in one call.
                let params = tls()?;
                let addr = SocketAddr::new(self.addrs[0], port);
                let deadline = self.settings.connect_timeout + command_timeout * 2;
                match timeout(
                    deadline,
                    AsyncSmtpConnection::connect_tokio1(
                        addr,
                        Some(self.settings.connect_timeout),
                        &self.hello,
                        Some(params),
                        None,
                    ),
                )
                .await
                {
                    Err(_) => {
                        return Err(PortFailure::Next(format!(
                            "no TLS session within {} s",
                            deadline.as_secs_f64()
                        )));
                    }
                    Ok(Err(e)) => return Err(classify_connect_error(&e)),
                    Ok(Ok(conn)) => conn,
                }
            }
            Security::StartTls | Security::None => {
                let stream = self.tcp(port).await.map_err(PortFailure::Next)?;
                // Greeting and EHLO: two replies, each under the command timeout.
                match timeout(
                    command_timeout * 2,
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello),
                )
                .await
                {
                    Err(_) => {
                        return Err(PortFailure::Stop(ConnectFailure::Refused(Reply::timeout(
                            Step::Greeting,
                            command_timeout * 2,
                        ))));
                    }
                    Ok(Err(e)) => {
                        return Err(PortFailure::Stop(ConnectFailure::Refused(
                            Reply::from_error(Step::Greeting, &e),
                        )));
                    }
                    Ok(Ok(conn)) => conn,
                }
            }
        };
        if security == Security::StartTls {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                let _ = timeout(command_timeout, conn.quit()).await;
                return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                    Step::StartTls,
                    format!(
                        "the server on port {port} does not offer STARTTLS; \
                         security = \"starttls\" requires it"
                    ),
                ))));
            }
            let params = tls()?;
            // STARTTLS, handshake, EHLO again.
            match timeout(command_timeout * 3, conn.starttls(params, &self.hello)).await {
                Err(_) => {
                    return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::timeout(
                        Step::StartTls,
                        command_timeout * 3,
                    ))));
                }
                Ok(Err(e)) => {
                    return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::from_error(
                        Step::StartTls,
                        &e,
                    ))));
                }
                Ok(Ok(())) => {}
            }
        }
        // lettre's ServerInfo drops PIPELINING, so ask once more (before AUTH, on the final,
        // encrypted channel) and read the keyword from the raw EHLO reply.
        let pipelining =
            match timeout(command_timeout, conn.command(Ehlo::new(self.hello.clone()))).await {
                Err(_) => {
                    return Err(PortFailure::Stop(ConnectFailure::Refused(Reply::timeout(
                        Step::Ehlo,
                        command_timeout,
                    ))));
                }
                Ok(Ok(response)) => response.message().any(|line| {
                    line.split_whitespace()
                        .next()
                        .is_some_and(|word| word.eq_ignore_ascii_case("PIPELINING"))
                }),
                Ok(Err(e)) if e.status().is_none() => {
                    return Err(PortFailure::Stop(ConnectFailure::Refused(
                        Reply::from_error(Step::Ehlo, &e),
                    )));
                }
                Ok(Err(_)) => false,
            };
        if let Some(credentials) = &self.credentials {
            if !conn.is_encrypted() && security != Security::Tls {
                // Belt and braces: `Transport::new` already refuses AUTH with security none.
                return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                    Step::Auth,
                    "refusing to send credentials over an unencrypted connection".into(),
                ))));
            }
            let mechanisms = [Mechanism::Plain, Mechanism::Login];
            match timeout(command_timeout * 3, conn.auth(&mechanisms, credentials)).await {
                Err(_) => {
                    return Err(PortFailure::Stop(ConnectFailure::Auth(Reply::timeout(
                        Step::Auth,
                        command_timeout * 3,
                    ))));
                }
                Ok(Err(e)) => {
                    return Err(PortFailure::Stop(ConnectFailure::Auth(Reply::from_error(
                        Step::Auth,
                        &e,
                    ))));
                }
                Ok(Ok(_)) => {}
            }
        }
        Ok(Session {
            conn: Some(conn),
            port,
            sent: 0,
            limit: self.settings.messages_per_connection.max(1),
            command_timeout,
            data_timeout: self.settings.data_timeout,
            pipelining,
        })
    }
}

enum PortFailure {
    /// Try the next port (TCP refused or timed out).
    Next(String),
    /// Stop trying: a later port would not help or would be less safe.
    Stop(ConnectFailure),
}

fn classify_connect_error(e: &lettre::transport::smtp::Error) -> PortFailure {
    let reply = Reply::from_error(Step::Connect, e);
    if e.status().is_some() {
        return PortFailure::Stop(ConnectFailure::Refused(Reply {
            step: Step::Greeting,
            ..reply
        }));
    }
    let text = reply.text.to_ascii_lowercase();
    // Certificate errors are not `is_tls()` in lettre: look at the text too.
    if e.is_tls()
        || text.contains("certificate")
        || text.contains("tls")
        || text.contains("handshake")
    {
        return PortFailure::Stop(ConnectFailure::Tls(Reply {
            step: Step::StartTls,
            ..reply
        }));
    }
    PortFailure::Next(reply.text)
}

fn tls_parameters(settings: &Settings) -> Result<TlsParameters, Error> {
    let mut builder = TlsParameters::builder(settings.host.clone())
        .certificate_store(CertificateStore::Default)
        .set_min_tls_version(TlsVersion::Tlsv12);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|source| Error::CaFile {
            path: path.clone(),
            source,
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|e| Error::CaParse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| Error::Tls {
        host: settings.host.clone(),
        reason: e.to_string(),
    })
}

/// Parses an envelope address for MAIL FROM / RCPT TO.
///
/// # Errors
/// When the address is not a valid mailbox.
pub fn envelope_address(address: &str) -> Result<Address, Error> {
    address.parse::<Address>().map_err(|e| Error::Address {
        address: address.to_owned(),
        reason: e.to_string(),
    })
}

/// MAIL FROM, RCPT TO and DATA as one pipelined write.
struct PipelinedEnvelope(Mail, Rcpt);

impl fmt::Display for PipelinedEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.0, self.1, Data)
    }
}

/// A message body with SMTP transparency (RFC 5321 §4.5.2: a line that starts with "." gets
/// another one) and the end-of-data line, written as one string.
struct DotStuffed<'a>(&'a str);

impl fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.0;
        let mut rest = body;
        if rest.starts_with('.') {
            f.write_str(".")?;
        }
        while let Some(at) = rest.find("\r\n.") {
            // Up to and including the ".", then the extra one.
            f.write_str(&rest[..at + 3])?;
            f.write_str(".")?;
            rest = &rest[at + 3..];
        }
        f.write_str(rest)?;
        // The last line's own CRLF ends it; a body without one needs it before the ".".
        if body.ends_with("\r\n") {
            f.write_str(".\r\n")
        } else {
            f.write_str("\r\n.\r\n")
        }
    }
}

/// Whether a positive reply is the right one for `step` (RFC 5321 §4.3.2): MAIL and RSET 250,
/// RCPT 250 or 251, DATA 354. lettre calls any 2xx or 3xx "positive"; a 250 to DATA means we are
/// reading an earlier command's reply, so the body must not go out. lettre keeps unread bytes in
/// its own buffer and offers no way to look at it, so a stray reply can only be caught by
/// checking every reply against the command it should answer.
fn fits(step: Step, response: &Response) -> bool {
    let code = u16::from(response.code());
    match step {
        Step::Data => code == 354,
        Step::Rcpt => matches!(code, 250 | 251),
        Step::Mail => code == 250,
        _ => (200..300).contains(&code),
    }
}

/// One open, authenticated connection owned by one worker.
pub struct Session {
    /// None once the connection is known broken (then the worker must reconnect).
    conn: Option<AsyncSmtpConnection>,
    port: u16,
    sent: usize,
    limit: usize,
    command_timeout: Duration,
    data_timeout: Duration,
    /// The server offered PIPELINING (RFC 2920): MAIL, RCPT and DATA go out in one write.
    pipelining: bool,
}

impl Session {
    /// The port this session is connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// False once the connection broke, timed out, or reached its message cap.
    pub fn is_usable(&self) -> bool {
        self.conn.is_some() && self.sent < self.limit
    }

    /// Runs one transaction: MAIL, RCPT, DATA, the message, each under its own deadline.
    /// After a rejected MAIL or RCPT the session sends RSET and stays usable; after any
    /// timeout or broken connection it is dropped (its state is unknown).
    pub async fn send(&mut self, from: &Address, to: &Address, message: &[u8]) -> TxOutcome {
        let Some(conn) = self.conn.as_mut() else {
            return TxOutcome::Lost(Reply::local(Step::Mail, "session already closed".into()));
        };
        self.sent += 1;
        let ct = self.command_timeout;
        let mut params = Vec::new();
        if !message.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if self.pipelining {
            let mail = Mail::new(Some(from.clone()), params);
            let rcpt = Rcpt::new(to.clone(), vec![]);
            if let Some(done) = self.pipelined_envelope(mail, rcpt).await {
                return done;
            }
            return self.body(message).await;
        }
        let steps: [(Step, Duration); 3] = [(Step::Mail, ct), (Step::Rcpt, ct), (Step::Data, ct)];
        for (step, limit) in steps {
            let fut = async {
                match step {
                    Step::Mail => {
                        conn.command(Mail::new(Some(from.clone()), params.clone()))
                            .await
                    }
                    Step::Rcpt => conn.command(Rcpt::new(to.clone(), vec![])).await,
                    _ => conn.command(Data).await,
                }
            };
            match timeout(limit, fut).await {
                Err(_) => {
                    self.conn = None;
                    return TxOutcome::Lost(Reply::timeout(step, limit));
                }
                Ok(Ok(response)) => {
                    if !fits(step, &response) {
                        self.conn = None;
                        return TxOutcome::OutOfStep(Reply::from_response(step, &response));
                    }
                }
                Ok(Err(e)) => {
                    let reply = Reply::from_error(step, &e);
                    if reply.code.is_none() {
                        self.conn = None;
                        return TxOutcome::Lost(reply);
                    }
                    if reply.code == Some(421) {
                        // The server is closing the session.
                        self.conn = None;
                    } else if !self.reset().await {
                        self.conn = None;
                    }
                    return TxOutcome::Replied(reply);
                }
            }
        }
        self.body(message).await
    }

    /// MAIL, RCPT and DATA in one write (RFC 2920), then their three replies in order.
    /// Returns `Some` when the transaction ended before the body (a rejection or a lost
    /// connection), `None` when the server said 354 and the body may follow.
    async fn pipelined_envelope(&mut self, mail: Mail, rcpt: Rcpt) -> Option<TxOutcome> {
        let ct = self.command_timeout;
        let conn = self.conn.as_mut()?;
        let batch = PipelinedEnvelope(mail, rcpt);
        let mut first_failure: Option<Reply> = None;
        let mut data_open = false;
        for step in [Step::Mail, Step::Rcpt, Step::Data] {
            let read = async {
                if step == Step::Mail {
                    conn.command(&batch).await
                } else {
                    conn.read_response().await
                }
            };
            match timeout(ct, read).await {
                Err(_) => {
                    self.conn = None;
                    return Some(TxOutcome::Lost(Reply::timeout(step, ct)));
                }
                Ok(Ok(response)) => {
                    if !fits(step, &response) {
                        // Replies and commands are out of step (see `send`): nothing on this
                        // connection can be trusted, and the body must not go out.
                        self.conn = None;
                        return Some(TxOutcome::OutOfStep(Reply::from_response(step, &response)));
                    }
                    data_open = step == Step::Data;
                }
                Ok(Err(e)) => {
                    let reply = Reply::from_error(step, &e);
                    if reply.code.is_none() {
                        self.conn = None;
                        return Some(match first_failure {
                            // The server hung up after refusing: its refusal is the answer.
                            Some(refusal) => TxOutcome::Replied(refusal),
                            None => TxOutcome::Lost(reply),
                        });
                    }
                    let closing = reply.code == Some(421);
                    first_failure.get_or_insert(reply);
                    if closing {
                        self.conn = None;
                        return first_failure.map(TxOutcome::Replied);
                    }
                }
            }
        }
        let refusal = first_failure?;
        if data_open {
            // A server that opened DATA after refusing MAIL or RCPT: the only safe way out of
            // data mode without sending a message is to drop the connection.
            self.conn = None;
        } else if !self.reset().await {
            self.conn = None;
        }
        Some(TxOutcome::Replied(refusal))
    }

    /// The message after a 354, and the reply after the final ".".
    async fn body(&mut self, message: &[u8]) -> TxOutcome {
        let Some(conn) = self.conn.as_mut() else {
            return TxOutcome::Lost(Reply::local(Step::Message, "session closed".into()));
        };
        // One write for the body and its terminator (lettre's `message` makes two, which costs a
        // second packet and a second wake-up of the server per message). The body is text in
        // practice; anything else goes through lettre's own encoder.
        let sent = match std::str::from_utf8(message) {
            Ok(text) => timeout(self.data_timeout, conn.command(DotStuffed(text))).await,
            Err(_) => timeout(self.data_timeout, conn.message(message)).await,
        };
        match sent {
            Err(_) => {
                self.conn = None;
                TxOutcome::Lost(Reply::timeout(Step::Message, self.data_timeout))
            }
            Ok(Ok(response)) => {
                let reply = Reply::from_response(Step::Message, &response);
                if (200..300).contains(&u16::from(response.code())) {
                    TxOutcome::Replied(reply)
                } else {
                    // A 3xx after the final "." answers no command we sent: the relay's real
                    // verdict on this message is somewhere else in the stream.
                    self.conn = None;
                    TxOutcome::OutOfStep(reply)
                }
            }
            Ok(Err(e)) => {
                let reply = Reply::from_error(Step::Message, &e);
                if reply.code.is_none() || reply.code == Some(421) {
                    self.conn = None;
                    if reply.code.is_none() {
                        return TxOutcome::Lost(reply);
                    }
                }
                TxOutcome::Replied(reply)
            }
        }
    }

    /// RSET after a rejected command; false when the session should be dropped.
    async fn reset(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        // Only a 250 is RSET's reply; anything else positive is a stray earlier reply.
        matches!(
            timeout(self.command_timeout, conn.command(Rset)).await,
            Ok(Ok(r)) if u16::from(r.code()) == 250
        )
    }

    /// Says QUIT (bounded by the command timeout) and closes.
    pub async fn quit(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = timeout(self.command_timeout, conn.quit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply(text: &str) -> Response {
        format!("{text}\r\n").parse().unwrap()
    }

    #[test]
    fn bodies_are_dot_stuffed_and_terminated_once() {
        let cases = [
            ("Hi\r\n", "Hi\r\n.\r\n"),
            ("Hi", "Hi\r\n.\r\n"),
            (".start\r\n", "..start\r\n.\r\n"),
            ("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"),
            ("a\r\n..x\r\n.", "a\r\n...x\r\n..\r\n.\r\n"),
            // Only a "." after CRLF starts a line; a bare LF does not.
            ("a\n.b\r\n", "a\n.b\r\n.\r\n"),
            ("", "\r\n.\r\n"),
        ];
        for (body, wire) in cases {
            assert_eq!(DotStuffed(body).to_string(), wire, "{body:?}");
        }
    }

    #[test]
    fn each_command_accepts_only_its_own_positive_reply() {
        let cases = [
            (Step::Mail, "250 2.1.0 Ok", true),
            (Step::Mail, "251 odd", false),
            (Step::Mail, "354 go ahead", false),
            (Step::Mail, "220 a greeting from nowhere", false),
            (Step::Rcpt, "250 2.1.5 Ok", true),
            (Step::Rcpt, "251 User not local; will forward", true),
            (Step::Rcpt, "354 go ahead", false),
            (Step::Data, "354 End data with <CR><LF>.<CR><LF>", true),
            (Step::Data, "250 2.1.5 Ok", false),
            (Step::Message, "250 2.0.0 queued", true),
            (Step::Message, "354 go ahead", false),
        ];
        for (step, text, want) in cases {
            assert_eq!(fits(step, &reply(text)), want, "{step} {text}");
        }
    }
}
