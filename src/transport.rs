//! SMTP client sessions for the delivery engine: one owned connection per worker, spoken by
//! mailroom itself over [`crate::smtp::Conn`] (every read bounded, a deadline on every command),
//! with PIPELINING when offered (the envelope in one write, and on request the next
//! transaction's envelope behind a message's final ".", RFC 2920 §3.1), RSET after a rejected
//! recipient, QUIT after `messages_per_connection`.
//!
//! Security rules enforced here, not by callers: `starttls` requires STARTTLS (never falls back
//! to plaintext), `tls` is implicit TLS, `none` only to a loopback host and never with AUTH;
//! certificates are verified against the system roots plus an optional CA file; TLS 1.2 or newer.
//! The greeting, EHLO and STARTTLS exchange happens on the raw stream, and the stream is handed
//! to TLS only when the server sent nothing after its 220 (bytes sent before the handshake would
//! otherwise be read as if they came over TLS: the STARTTLS response injection of
//! CVE-2011-0411). The password lives only in memory ([`Secret`]) and is never logged.
//!
//! This module must not touch the ledger or decide what a reply means for a recipient: it
//! returns replies with the step they answered; `classify` holds the table that interprets them.

mod auth;
pub mod classify;
pub mod dsn;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::Address;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::smtp::{self, Conn, Extensions};

pub use classify::{Step, Verdict};

pub use crate::model::Security;

/// A password or token held in memory only; its `Debug` never shows it, and its bytes are
/// overwritten when it is dropped (each clone's too).
#[derive(Clone)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(zeroize::Zeroizing::new(value))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `parts` (one of them a secret) joined in a string sized for all of them first, which is
    /// overwritten when dropped. A `format!` that writes text after a secret can move the
    /// string to a larger buffer, and the old one is freed with the secret in it.
    pub fn concat(parts: &[&str]) -> zeroize::Zeroizing<String> {
        let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            out.push_str(part);
        }
        zeroize::Zeroizing::new(out)
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
    /// XOAUTH2 instead of a password: the run's token source (shared by every connection).
    pub oauth: Option<Arc<crate::oauth::Tokens>>,
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
    #[error(transparent)]
    Ca(#[from] crate::tls::Error),
    #[error("cannot set up TLS for {host}: {reason}")]
    Tls { host: String, reason: String },
    #[error(
        "[smtp] hello_name: {reason}\n\nUse a domain name, e.g. hello_name = \"mail.example.com\"."
    )]
    HelloName { reason: String },
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
    fn from_smtp(step: Step, r: &smtp::Reply) -> Reply {
        let text = r.message();
        Reply {
            step,
            code: Some(r.code),
            enhanced: classify::enhanced_code(r.code, &text),
            text,
            timed_out: false,
        }
    }

    /// No reply: why the read or write failed.
    fn lost(step: Step, e: &smtp::Error) -> Reply {
        Reply {
            step,
            code: None,
            enhanced: None,
            text: e.to_string(),
            timed_out: matches!(e, smtp::Error::Timeout(_)),
        }
    }

    fn timeout(step: Step, after: Duration) -> Reply {
        Reply::lost(step, &smtp::Error::Timeout(after))
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

    /// A one-line description for logs and errors; the relay's text is made safe to print
    /// (see `crate::display`).
    pub fn describe(&self) -> String {
        let text = crate::display::one_line(&self.text.replace('\n', " / "));
        match self.code {
            Some(code) => format!("{code} {text} (at {})", self.step),
            None => format!("{text} (at {})", self.step),
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, Clone)]
pub enum ConnectFailure {
    /// Every port refused or timed out at TCP connect.
    Unreachable { tried: Vec<(u16, String)> },
    /// TLS could not be established (STARTTLS missing or refused, handshake or certificate
    /// failure, bytes injected before the handshake): the run must stop; plaintext is never an
    /// option.
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

/// The envelope of one transaction: MAIL FROM, RCPT TO, and the DSN request, if any.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub from: &'a Address,
    pub to: &'a Address,
    pub dsn: Option<&'a dsn::Request<'a>>,
}

/// What became of a transaction opened behind the previous message (see [`Session::finish`]).
#[derive(Debug, Clone)]
pub enum Opened {
    /// The server said 354: the session waits for this message ([`Session::finish`]).
    Ready,
    /// The transaction ended before its message (a refusal, or the session was lost while
    /// reading its replies); as [`Session::open`] would have returned it.
    Ended(TxOutcome),
    /// The session ended with the previous message, before these replies were read: the
    /// transaction never reached its message and counts for nothing; send it again.
    NotSent,
}

/// The result of one transaction (one recipient).
#[derive(Debug, Clone)]
pub enum TxOutcome {
    /// The server answered at `reply.step`; `reply.code` is set. The session is still usable
    /// unless the server closed it (421) — the session tracks that itself.
    Replied(Reply),
    /// No reply: the connection broke, a deadline passed, or the reply broke the format or its
    /// bounds. The session is gone. When `reply.step == Message`, the relay may or may not have
    /// the message.
    Lost(Reply),
    /// A reply that does not fit the command it follows (a 250 to DATA, a 354 or any non-2xx
    /// positive reply to MAIL, RCPT or the final "."): the replies are out of step with the
    /// commands (an extra reply from a buggy relay or proxy), so no later reply on this
    /// connection can be trusted and the session has been dropped. Before `Step::Message` the
    /// body was never sent; at `Step::Message` the relay may have the message.
    OutOfStep(Reply),
}

impl TxOutcome {
    /// The reply (or the local description of why there was none).
    pub fn reply(&self) -> &Reply {
        match self {
            TxOutcome::Replied(r) | TxOutcome::Lost(r) | TxOutcome::OutOfStep(r) => r,
        }
    }
}

/// The byte stream under a session: TCP, then TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn is_encrypted(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens sessions to one relay; shared by all workers.
pub struct Transport {
    settings: Settings,
    addrs: Vec<IpAddr>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// The EHLO argument: a domain, or an address literal.
    hello: String,
    credentials: Option<auth::Credentials>,
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
                source: io::Error::other("no addresses"),
            });
        }
        if let Some(name) = &settings.hello_name {
            crate::smtp::check_hello_name(name).map_err(|reason| Error::HelloName { reason })?;
        }
        if settings.security == Security::None {
            // By name (the rule `check` applies) and by address (what the name resolved to).
            if !crate::smtp::is_loopback_host(&settings.host)
                || !addrs.iter().all(IpAddr::is_loopback)
            {
                return Err(Error::PlaintextRemote {
                    host: settings.host.clone(),
                });
            }
            if settings.username.is_some() {
                return Err(Error::PlaintextAuth);
            }
        }
        let credentials = match (&settings.username, &settings.password, &settings.oauth) {
            (Some(user), _, Some(tokens)) => Some(auth::Credentials::OAuth {
                user: user.clone(),
                tokens: tokens.clone(),
            }),
            (Some(user), Some(password), None) => Some(auth::Credentials::Password {
                user: user.clone(),
                password: password.clone(),
            }),
            (Some(_), None, None) => return Err(Error::MissingPassword),
            (None, _, _) => None,
        };
        let tls = if settings.security == Security::None && settings.fallback_ports.is_empty() {
            None
        } else {
            let roots = crate::tls::client_config(settings.ca_file.as_deref())?;
            let name = crate::tls::server_name(&settings.host).map_err(|reason| Error::Tls {
                host: settings.host.clone(),
                reason,
            })?;
            Some((roots.config, name))
        };
        let hello = match &settings.hello_name {
            Some(name) => hello_argument(name),
            None => lettre::transport::smtp::extension::ClientId::default().to_string(),
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

    /// A TCP connection to `port`, trying each resolved address in turn.
    async fn tcp(&self, port: u16) -> Result<TcpStream, String> {
        let mut last = String::from("no address");
        for ip in &self.addrs {
            let addr = SocketAddr::new(*ip, port);
            match timeout(self.settings.connect_timeout, TcpStream::connect(addr)).await {
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

    /// The TLS handshake over `tcp`, certificate verified; `step` says where it happened
    /// (implicit TLS at connect, or after STARTTLS).
    async fn handshake(
        &self,
        tcp: TcpStream,
        step: Step,
    ) -> Result<TlsStream<TcpStream>, PortFailure> {
        let Some((config, name)) = &self.tls else {
            return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                step,
                "no TLS parameters".into(),
            ))));
        };
        let limit = self.settings.command_timeout;
        let connector = TlsConnector::from(config.clone());
        match timeout(limit, connector.connect(name.clone(), tcp)).await {
            Err(_) => Err(PortFailure::Stop(ConnectFailure::Tls(Reply::timeout(
                step, limit,
            )))),
            Ok(Err(e)) => Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                step,
                crate::tls::explain(&e.to_string()),
            )))),
            Ok(Ok(tls)) => Ok(tls),
        }
    }

    async fn connect_port(&self, port: u16) -> Result<Session, PortFailure> {
        let security = self.security_for(port);
        let ct = self.settings.command_timeout;
        let tcp = self.tcp(port).await.map_err(PortFailure::Next)?;
        let stream = if security == Security::Tls {
            Stream::Tls(Box::new(self.handshake(tcp, Step::Connect).await?))
        } else {
            Stream::Plain(tcp)
        };
        let mut conn = Conn::new(stream, ct);
        let refused = |step, e: &smtp::Error| {
            PortFailure::Stop(ConnectFailure::Refused(Reply::lost(step, e)))
        };
        let greeting = conn
            .read_reply()
            .await
            .map_err(|e| refused(Step::Greeting, &e))?;
        if greeting.code != 220 {
            return Err(PortFailure::Stop(ConnectFailure::Refused(
                Reply::from_smtp(Step::Greeting, &greeting),
            )));
        }
        let mut ext = self.ehlo(&mut conn).await?;
        if security == Security::StartTls {
            if !ext.starttls {
                conn.quit().await;
                return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                    Step::StartTls,
                    format!(
                        "the server on port {port} does not offer STARTTLS; \
                         security = \"starttls\" requires it"
                    ),
                ))));
            }
            let tls_failure = |reply| PortFailure::Stop(ConnectFailure::Tls(reply));
            let reply = conn
                .command("STARTTLS")
                .await
                .map_err(|e| tls_failure(Reply::lost(Step::StartTls, &e)))?;
            if reply.code != 220 {
                return Err(tls_failure(Reply::from_smtp(Step::StartTls, &reply)));
            }
            let tcp = match conn.into_inner() {
                Ok(Stream::Plain(tcp)) => tcp,
                Ok(Stream::Tls(_)) => {
                    return Err(tls_failure(Reply::local(
                        Step::StartTls,
                        "STARTTLS inside TLS".into(),
                    )));
                }
                Err(e) => {
                    // Everything after the 220 must come over TLS: a server (or whoever sits
                    // between us) that sent more already is trying to have those bytes read as
                    // replies inside the encrypted session.
                    return Err(tls_failure(Reply::local(
                        Step::StartTls,
                        format!("{e}: refusing this relay"),
                    )));
                }
            };
            conn = Conn::new(
                Stream::Tls(Box::new(self.handshake(tcp, Step::StartTls).await?)),
                ct,
            );
            // RFC 3207 §4.2: everything learnt before TLS is forgotten; ask again.
            ext = self.ehlo(&mut conn).await?;
        }
        if let Some(credentials) = &self.credentials {
            if !conn.get_ref().is_encrypted() {
                // Belt and braces: `Transport::new` already refuses AUTH with security none.
                return Err(PortFailure::Stop(ConnectFailure::Tls(Reply::local(
                    Step::Auth,
                    "refusing to send credentials over an unencrypted connection".into(),
                ))));
            }
            auth::authenticate(&mut conn, &ext, credentials).await?;
        }
        Ok(Session {
            conn: Some(conn),
            port,
            sent: 0,
            limit: self.settings.messages_per_connection.max(1),
            command_timeout: ct,
            data_timeout: self.settings.data_timeout,
            ext,
            wire: Vec::new(),
        })
    }

    /// EHLO and its keywords.
    async fn ehlo(&self, conn: &mut Conn<Stream>) -> Result<Extensions, PortFailure> {
        match conn.command(&format!("EHLO {}", self.hello)).await {
            Err(e) => Err(PortFailure::Stop(ConnectFailure::Refused(Reply::lost(
                Step::Ehlo,
                &e,
            )))),
            Ok(reply) if reply.code == 250 => Ok(smtp::parse_ehlo(&reply)),
            Ok(reply) => Err(PortFailure::Stop(ConnectFailure::Refused(
                Reply::from_smtp(Step::Ehlo, &reply),
            ))),
        }
    }
}

/// The EHLO argument for a configured `hello_name`: an IP address becomes an address literal
/// (RFC 5321 §4.1.3); a name is used as it is (config validation checked it is a domain).
fn hello_argument(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => format!("[{ip}]"),
        Ok(IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        Err(_) => name.to_owned(),
    }
}

enum PortFailure {
    /// Try the next port (TCP refused or timed out).
    Next(String),
    /// Stop trying: a later port would not help or would be less safe.
    Stop(ConnectFailure),
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

/// Appends `body` to `out` with SMTP transparency (RFC 5321 §4.5.2: a line that starts with "."
/// gets another one) and the end-of-data line.
#[cfg(test)]
fn dot_stuff(body: &[u8], out: &mut Vec<u8>) {
    stuff_lines(body, out);
    end_of_data(body, out);
}

/// The dot-stuffing of [`dot_stuff`] for `lines`, which must start at the start of a line.
fn stuff_lines(lines: &[u8], out: &mut Vec<u8>) {
    out.reserve(lines.len() + 2);
    if lines.first() == Some(&b'.') {
        out.push(b'.');
    }
    // memmem's vectorised search: a byte-by-byte scan of every message was 1.5% of a send's
    // CPU time.
    let mut from = 0;
    for at in memchr::memmem::find_iter(lines, b"\r\n.") {
        // Up to and including the ".", then the extra one.
        out.extend_from_slice(&lines[from..at + 3]);
        out.push(b'.');
        from = at + 3;
    }
    out.extend_from_slice(&lines[from..]);
}

/// The end-of-data line after `body`: the last line's own CRLF ends it; a body without one
/// needs it before the ".".
fn end_of_data(body: &[u8], out: &mut Vec<u8>) {
    if body.ends_with(b"\r\n") {
        out.extend_from_slice(b".\r\n");
    } else {
        out.extend_from_slice(b"\r\n.\r\n");
    }
}

/// Bytes of a message written per write while sending its body: a large message (attachments)
/// costs this much here rather than a second, dot-stuffed copy of all of it.
const BODY_SLICE: usize = 256 * 1024;

/// Where the slice of `rest` to send next ends: after the last CRLF within [`BODY_SLICE`] (so
/// every slice starts at a line start and dot-stuffing needs no state), or after the first CRLF
/// past it, or at the end.
fn slice_end(rest: &[u8]) -> usize {
    if rest.len() <= BODY_SLICE {
        return rest.len();
    }
    if let Some(at) = rest[..BODY_SLICE].windows(2).rposition(|w| w == b"\r\n") {
        return at + 2;
    }
    rest[BODY_SLICE..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map_or(rest.len(), |at| BODY_SLICE + at + 2)
}

/// Whether a positive reply is the right one for `step` (RFC 5321 §4.3.2): MAIL and RSET 250,
/// RCPT 250 or 251, DATA 354, the final "." any 2xx. A 250 to DATA means we are reading an
/// earlier command's reply, so the body must not go out.
fn fits(step: Step, code: u16) -> bool {
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
    conn: Option<Conn<Stream>>,
    port: u16,
    sent: usize,
    limit: usize,
    command_timeout: Duration,
    data_timeout: Duration,
    /// What the server offered in its last EHLO (after TLS when TLS is used).
    ext: Extensions,
    /// Reused for every command batch and message, so a session allocates once.
    wire: Vec<u8>,
}

impl Session {
    /// The port this session is connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server offered in its EHLO.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// False once the connection broke, timed out, or reached its message cap.
    pub fn is_usable(&self) -> bool {
        self.conn.is_some() && self.sent < self.limit
    }

    /// Runs one transaction: MAIL, RCPT, DATA (in one write when the server offers PIPELINING,
    /// RFC 2920), the message, each reply under its own deadline. After a rejected MAIL or RCPT
    /// the session sends RSET and stays usable; after any timeout, broken connection or
    /// malformed reply it is dropped (its state is unknown). With `dsn`, and only when the
    /// relay's EHLO lists DSN, MAIL and RCPT carry the RFC 3461 parameters (see [`dsn`]).
    pub async fn send(
        &mut self,
        from: &Address,
        to: &Address,
        message: &[u8],
        dsn: Option<&dsn::Request<'_>>,
    ) -> TxOutcome {
        let envelope = Envelope { from, to, dsn };
        if let Some(done) = self.open(&envelope, message).await {
            return done;
        }
        self.finish(message, None).await.0
    }

    /// The first half of [`Session::send`]: MAIL, RCPT and DATA. `None` once the server said
    /// 354 (call [`Session::finish`] with the same `message` next); otherwise how the
    /// transaction ended before its message.
    pub async fn open(&mut self, envelope: &Envelope<'_>, message: &[u8]) -> Option<TxOutcome> {
        if self.conn.is_none() {
            return Some(TxOutcome::Lost(Reply::local(
                Step::Mail,
                "session already closed".into(),
            )));
        }
        self.sent += 1;
        let (mail, rcpt) = self.envelope_commands(envelope, message);
        let data = "DATA\r\n";
        if self.ext.pipelining {
            self.pipelined_envelope(&[&mail, &rcpt, data]).await
        } else {
            self.envelope_step_by_step(&[&mail, &rcpt, data]).await
        }
    }

    /// Whether [`Session::finish`] may open the next transaction behind this message's final
    /// ".": the server offers PIPELINING and the session has room for another message.
    pub fn can_open_next(&self) -> bool {
        self.conn.is_some() && self.ext.pipelining && self.sent < self.limit
    }

    /// The second half of [`Session::send`]: the message, its final ".", and the reply to it.
    ///
    /// With `next` (only when [`Session::can_open_next`]; ignored otherwise), the next
    /// transaction's MAIL, RCPT and DATA go out in the same write, right after the "." (RFC 2920
    /// lets a message's content start a command group), so a stream of messages costs one
    /// round trip each instead of two. Their replies are read after this message's, and the
    /// second value says what became of them; `None` when `next` was not written.
    pub async fn finish(
        &mut self,
        message: &[u8],
        next: Option<(&Envelope<'_>, &[u8])>,
    ) -> (TxOutcome, Option<Opened>) {
        let next = next
            .filter(|_| self.can_open_next())
            .map(|(envelope, next_message)| {
                let (mail, rcpt) = self.envelope_commands(envelope, next_message);
                format!("{mail}{rcpt}DATA\r\n")
            });
        let outcome = self.body(message, next.as_deref()).await;
        if next.is_none() {
            return (outcome, None);
        }
        self.sent += 1;
        if self.conn.is_none() {
            // The session ended with this message: the next envelope's replies were never
            // read, and its message never went out.
            return (outcome, Some(Opened::NotSent));
        }
        let opened = match self.envelope_replies().await {
            None => Opened::Ready,
            Some(ended) => Opened::Ended(ended),
        };
        (outcome, Some(opened))
    }

    /// MAIL and RCPT for `envelope` (`message` decides whether BODY=8BITMIME is needed).
    fn envelope_commands(&self, envelope: &Envelope<'_>, message: &[u8]) -> (String, String) {
        let body = if !message.is_ascii() && self.ext.eightbitmime {
            " BODY=8BITMIME"
        } else {
            ""
        };
        let dsn = envelope.dsn.filter(|_| self.ext.dsn);
        let (mail_dsn, rcpt_dsn) = dsn.map_or_else(Default::default, |d| {
            (dsn::mail_parameters(d), dsn::rcpt_parameters(d))
        });
        (
            format!("MAIL FROM:<{}>{body}{mail_dsn}\r\n", envelope.from),
            format!("RCPT TO:<{}>{rcpt_dsn}\r\n", envelope.to),
        )
    }

    /// The three envelope commands one at a time, each waiting for its reply.
    /// Returns `Some` when the transaction ended before the body, `None` after a 354.
    async fn envelope_step_by_step(&mut self, commands: &[&str; 3]) -> Option<TxOutcome> {
        for (step, command) in [Step::Mail, Step::Rcpt, Step::Data]
            .into_iter()
            .zip(commands)
        {
            let conn = self.conn.as_mut()?;
            let result = match conn.send(command.as_bytes()).await {
                Ok(()) => conn.read_reply().await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) => {
                    self.conn = None;
                    return Some(TxOutcome::Lost(Reply::lost(step, &e)));
                }
                Ok(reply) if reply.is_positive() || reply.code == 354 => {
                    if !fits(step, reply.code) {
                        self.conn = None;
                        return Some(TxOutcome::OutOfStep(Reply::from_smtp(step, &reply)));
                    }
                }
                Ok(reply) => {
                    let reply = Reply::from_smtp(step, &reply);
                    if reply.code == Some(421) {
                        // The server is closing the session.
                        self.conn = None;
                    } else if !self.reset().await {
                        self.conn = None;
                    }
                    return Some(TxOutcome::Replied(reply));
                }
            }
        }
        None
    }

    /// MAIL, RCPT and DATA in one write (RFC 2920), then their three replies in order.
    /// Returns `Some` when the transaction ended before the body (a rejection or a lost
    /// connection), `None` when the server said 354 and the body may follow.
    async fn pipelined_envelope(&mut self, commands: &[&str; 3]) -> Option<TxOutcome> {
        let conn = self.conn.as_mut()?;
        self.wire.clear();
        for command in commands {
            self.wire.extend_from_slice(command.as_bytes());
        }
        if let Err(e) = conn.send(&self.wire).await {
            self.conn = None;
            return Some(TxOutcome::Lost(Reply::lost(Step::Mail, &e)));
        }
        self.envelope_replies().await
    }

    /// The replies to a pipelined MAIL, RCPT and DATA, in order; as
    /// [`Session::pipelined_envelope`].
    async fn envelope_replies(&mut self) -> Option<TxOutcome> {
        let Some(conn) = self.conn.as_mut() else {
            return Some(TxOutcome::Lost(Reply::local(
                Step::Mail,
                "session closed".into(),
            )));
        };
        let mut first_failure: Option<Reply> = None;
        let mut data_open = false;
        for step in [Step::Mail, Step::Rcpt, Step::Data] {
            match conn.read_reply().await {
                Err(e) => {
                    self.conn = None;
                    return Some(match first_failure {
                        // The server hung up after refusing: its refusal is the answer.
                        Some(refusal) => TxOutcome::Replied(refusal),
                        None => TxOutcome::Lost(Reply::lost(step, &e)),
                    });
                }
                Ok(reply) if reply.is_positive() || reply.code == 354 => {
                    if !fits(step, reply.code) {
                        // Replies and commands are out of step (see `send`): nothing on this
                        // connection can be trusted, and the body must not go out.
                        self.conn = None;
                        return Some(TxOutcome::OutOfStep(Reply::from_smtp(step, &reply)));
                    }
                    data_open = step == Step::Data;
                }
                Ok(reply) => {
                    let reply = Reply::from_smtp(step, &reply);
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

    /// The message after a 354, and the reply after the final "."; `next` (commands) is written
    /// right after the ".", in the same write.
    async fn body(&mut self, message: &[u8], next: Option<&str>) -> TxOutcome {
        let Some(conn) = self.conn.as_mut() else {
            return TxOutcome::Lost(Reply::local(Step::Message, "session closed".into()));
        };
        // One write for the body and its terminator (one packet train and one wake-up of the
        // server per message), or a few for a large one: slices of BODY_SLICE, all within one
        // `data_timeout`.
        let deadline = tokio::time::Instant::now() + self.data_timeout;
        let mut rest = message;
        let mut sent = Ok(());
        while sent.is_ok() {
            let (slice, after) = rest.split_at(slice_end(rest));
            self.wire.clear();
            stuff_lines(slice, &mut self.wire);
            if after.is_empty() {
                end_of_data(message, &mut self.wire);
                if let Some(next) = next {
                    self.wire.extend_from_slice(next.as_bytes());
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            sent = conn.send_within(&self.wire, left).await;
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        let result = match sent {
            Ok(()) => conn.read_reply_within(self.data_timeout).await,
            Err(e) => Err(e),
        };
        if self.wire.capacity() > 1 << 20 {
            // Do not keep a large message's buffer for the rest of the session.
            self.wire = Vec::new();
        }
        match result {
            Err(e) => {
                self.conn = None;
                TxOutcome::Lost(Reply::lost(Step::Message, &e))
            }
            Ok(reply) if reply.is_positive() => {
                TxOutcome::Replied(Reply::from_smtp(Step::Message, &reply))
            }
            Ok(reply) if reply.code < 400 => {
                // A 3xx after the final "." answers no command we sent: the relay's real
                // verdict on this message is somewhere else in the stream.
                self.conn = None;
                TxOutcome::OutOfStep(Reply::from_smtp(Step::Message, &reply))
            }
            Ok(reply) => {
                if reply.code == 421 {
                    self.conn = None;
                }
                TxOutcome::Replied(Reply::from_smtp(Step::Message, &reply))
            }
        }
    }

    /// RSET after a rejected command; false when the session should be dropped.
    async fn reset(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        // Only a 250 is RSET's reply; anything else positive is a stray earlier reply.
        matches!(conn.command("RSET").await, Ok(r) if r.code == 250)
    }

    /// Says QUIT (bounded by the command timeout) and closes.
    pub async fn quit(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = timeout(self.command_timeout * 2, conn.quit()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stuffed(body: &str) -> String {
        let mut out = Vec::new();
        dot_stuff(body.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_body_sent_in_slices_is_stuffed_as_one() {
        // Lines of every length around the slice size, some starting with a dot.
        let mut body = Vec::new();
        let mut i = 0usize;
        while body.len() < 3 * BODY_SLICE {
            if i.is_multiple_of(7) {
                body.push(b'.');
            }
            body.extend(std::iter::repeat_n(b'x', (i * 7919) % 1000));
            body.extend_from_slice(b"\r\n");
            i += 1;
        }
        body.extend_from_slice(b".no final CRLF");
        let mut whole = Vec::new();
        dot_stuff(&body, &mut whole);
        let mut sliced = Vec::new();
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            let (slice, after) = rest.split_at(slice_end(rest));
            assert!(
                slice.len() <= BODY_SLICE || !slice[..BODY_SLICE].windows(2).any(|w| w == b"\r\n")
            );
            stuff_lines(slice, &mut sliced);
            rest = after;
        }
        end_of_data(&body, &mut sliced);
        assert!(whole == sliced);
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
            assert_eq!(stuffed(body), wire, "{body:?}");
        }
    }

    #[test]
    fn each_command_accepts_only_its_own_positive_reply() {
        let cases = [
            (Step::Mail, 250, true),
            (Step::Mail, 251, false),
            (Step::Mail, 354, false),
            (Step::Mail, 220, false),
            (Step::Rcpt, 250, true),
            (Step::Rcpt, 251, true),
            (Step::Rcpt, 354, false),
            (Step::Data, 354, true),
            (Step::Data, 250, false),
            (Step::Message, 250, true),
            (Step::Message, 354, false),
        ];
        for (step, code, want) in cases {
            assert_eq!(fits(step, code), want, "{step} {code}");
        }
    }

    #[tokio::test]
    async fn implicit_tls_tries_each_resolved_address() {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let sandbox = crate::sandbox::start(
            crate::sandbox::SandboxConfig::new(dir.path().join("maildir")).implicit_tls(true),
        )
        .await
        .unwrap();
        let ca = dir.path().join("ca.pem");
        sandbox.write_ca(&ca).unwrap();
        let port = sandbox.addr().port();
        let settings = Settings {
            host: "localhost".into(),
            port,
            security: Security::Tls,
            username: None,
            password: None,
            oauth: None,
            ca_file: Some(ca),
            hello_name: None,
            fallback_ports: vec![],
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            messages_per_connection: 1,
        };
        let mut transport = Arc::into_inner(Transport::new(settings).await.unwrap()).unwrap();
        // The first address refuses (nothing listens on 127.0.0.2); the second is the relay.
        transport.addrs = vec![IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 1])];
        let session = transport.connect().await.unwrap();
        assert_eq!(session.port(), port);
        assert!(session.extensions().pipelining);
        session.quit().await;
    }

    /// A plain session to a sandbox running `script`, at most `limit` messages long.
    async fn sandbox_session(
        script: &str,
        limit: usize,
    ) -> (tempfile::TempDir, crate::sandbox::Sandbox, Session) {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = crate::sandbox::start(
            crate::sandbox::SandboxConfig::new(dir.path().join("maildir"))
                .script(crate::sandbox::script::Script::parse(script).unwrap()),
        )
        .await
        .unwrap();
        let settings = Settings {
            host: "127.0.0.1".into(),
            port: sandbox.addr().port(),
            security: Security::None,
            username: None,
            password: None,
            oauth: None,
            ca_file: None,
            hello_name: None,
            fallback_ports: vec![],
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            messages_per_connection: limit,
        };
        let session = Transport::new(settings)
            .await
            .unwrap()
            .connect()
            .await
            .unwrap();
        (dir, sandbox, session)
    }

    fn address(local: &str) -> Address {
        format!("{local}@example.test").parse().unwrap()
    }

    fn message(local: &str) -> Vec<u8> {
        format!("From: news@sender.test\r\nTo: {local}@example.test\r\nSubject: hi\r\n\r\nHello {local}\r\n")
            .into_bytes()
    }

    /// An envelope without DSN parameters.
    fn plain<'a>(from: &'a Address, to: &'a Address) -> Envelope<'a> {
        Envelope {
            from,
            to,
            dsn: None,
        }
    }

    fn code(outcome: &TxOutcome) -> (Step, Option<u16>) {
        let reply = outcome.reply();
        (reply.step, reply.code)
    }

    #[tokio::test]
    async fn the_next_envelope_goes_out_behind_the_final_dot_and_its_replies_stay_in_step() {
        let script = "[[rule]]\nrecipient = \"unknown*@*\"\naction = \"reject\"\nreply = \"550 5.1.1 no such user\"\n";
        let (_dir, sandbox, mut session) = sandbox_session(script, 100).await;
        let from = address("news");
        let (a1, u1, a2, a3) = (
            address("a1"),
            address("unknown1"),
            address("a2"),
            address("a3"),
        );
        let (m1, mu, m2, m3) = (
            message("a1"),
            message("unknown1"),
            message("a2"),
            message("a3"),
        );
        let env = |to| Envelope {
            from: &from,
            to,
            dsn: None,
        };

        assert!(session.open(&env(&a1), &m1).await.is_none());
        assert!(session.can_open_next());
        // a1's message with unknown1's envelope behind it: a1 is accepted, unknown1 refused at
        // RCPT, and the session is reset and in step for the next transaction.
        let (first, next) = session.finish(&m1, Some((&env(&u1), &mu))).await;
        assert_eq!(code(&first), (Step::Message, Some(250)));
        let Some(Opened::Ended(refused)) = next else {
            panic!("{next:?}");
        };
        assert_eq!(code(&refused), (Step::Rcpt, Some(550)));
        // a2 opened normally, a3 behind it, then a3's message alone.
        assert!(session.open(&env(&a2), &m2).await.is_none());
        let (second, next) = session.finish(&m2, Some((&env(&a3), &m3))).await;
        assert_eq!(code(&second), (Step::Message, Some(250)));
        assert!(matches!(next, Some(Opened::Ready)), "{next:?}");
        let (third, next) = session.finish(&m3, None).await;
        assert_eq!(code(&third), (Step::Message, Some(250)));
        assert!(next.is_none());
        session.quit().await;

        let seen = sandbox.seen();
        assert_eq!(seen.mail_behind_message, 2);
        assert_eq!(seen.messages_ended, 3);
        let stored: Vec<_> = seen.stored.iter().flat_map(|s| s.rcpts.clone()).collect();
        assert_eq!(
            stored,
            ["a1@example.test", "a2@example.test", "a3@example.test"]
        );
    }

    #[tokio::test]
    async fn nothing_is_opened_behind_the_last_message_a_session_may_carry() {
        let (_dir, sandbox, mut session) = sandbox_session("", 1).await;
        let from = address("news");
        let (a1, a2) = (address("a1"), address("a2"));
        let m = message("a1");
        assert!(session.open(&plain(&from, &a1), &m).await.is_none());
        assert!(!session.can_open_next());
        let (first, next) = session.finish(&m, Some((&plain(&from, &a2), &m))).await;
        assert_eq!(code(&first), (Step::Message, Some(250)));
        assert!(next.is_none(), "{next:?}");
        session.quit().await;
        assert_eq!(sandbox.seen().mail_behind_message, 0);
    }

    #[tokio::test]
    async fn a_relay_closing_after_a_message_leaves_the_envelope_behind_it_unsent() {
        let script = "[[rule]]\nrecipient = \"busy*@*\"\naction = \"reject\"\nreply = \"421 4.7.0 closing\"\nat = \"message\"\n";
        let (_dir, _sandbox, mut session) = sandbox_session(script, 100).await;
        let from = address("news");
        let (b1, a2) = (address("busy1"), address("a2"));
        let (mb, m2) = (message("busy1"), message("a2"));
        assert!(session.open(&plain(&from, &b1), &mb).await.is_none());
        let (first, next) = session.finish(&mb, Some((&plain(&from, &a2), &m2))).await;
        assert_eq!(code(&first), (Step::Message, Some(421)));
        assert!(matches!(next, Some(Opened::NotSent)), "{next:?}");
        assert!(!session.is_usable());
    }

    #[test]
    fn hello_names_and_address_literals() {
        assert_eq!(hello_argument("mail.example.com"), "mail.example.com");
        assert_eq!(hello_argument("192.0.2.7"), "[192.0.2.7]");
        assert_eq!(hello_argument("2001:db8::1"), "[IPv6:2001:db8::1]");
    }
}
