//! A small IMAP4rev1 (RFC 3501) client that reads every message of one mailbox without
//! changing it, one message at a time: LOGIN, EXAMINE (read-only SELECT), `FETCH a:b (UID
//! RFC822.SIZE)` in batches of 1000, then `UID FETCH n BODY.PEEK[]` per message (PEEK
//! leaves `\Seen` alone), LOGOUT.
//!
//! It owns the IMAP dialogue and the connection; it hands each message to its caller as it
//! arrives ([`Mailbox::next`], the IMAP counterpart of `mailbox::Mbox`) and must never hold more
//! than one message, one response and one listing batch. `response.rs` reads the bytes and
//! enforces the caps (docs/bounces.md, "IMAP limits"): a response line of 64 KiB, 4 MiB of
//! non-message data per command, a message of 25 MiB. A message over the cap is skipped and
//! reported ([`Item::Skipped`]), never read: by its `RFC822.SIZE` before it is fetched, or by its
//! literal's `{n}` if the server understated the size (the connection is then dropped mid-literal
//! and a new one goes on with the next message).
//!
//! Security: `imaps://` is implicit TLS; `imap://` upgrades with STARTTLS, and only a loopback
//! server may be used in plain text. Certificates are verified against the system's CA bundle
//! (plus `--imap-ca`). The password is sent only inside TLS (or to loopback) and never logged.

mod response;
mod url;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use zeroize::Zeroizing;

use self::response::{LIMITS, ReadError, Reader, Response};
pub use self::url::ImapUrl;
use super::import::MailboxMessage;
use crate::transport::Secret;

/// Every connect, handshake, write and wait for the next bytes must finish within this; a
/// stalled server ends the import.
const IO_TIMEOUT: Duration = LIMITS.idle;
/// Messages listed (UID and size) per `FETCH a:b (UID RFC822.SIZE)`: about 50 KiB of reply,
/// and what [`Mailbox`] holds of the listing at once.
const LIST_BATCH: u32 = 1000;
/// Fetches abandoned mid-literal (a message larger than the server said) before the import
/// gives up on the server: each costs a new connection.
const MAX_ABANDONED: u32 = 8;
/// Socket buffer: a 25 MiB message in 64 KiB reads rather than 8 KiB ones.
const READ_BUFFER: usize = 64 << 10;

/// `4 MiB`, `64 KiB`, or a byte count.
fn bytes_text(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Errors talking to the IMAP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "bad IMAP URL `{url}`: {why}\n\nUse imaps://user@host[:993]/MAILBOX (or imap://... for STARTTLS)."
    )]
    Url { url: String, why: &'static str },
    #[error("IMAP connection to {host}:{port} failed")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("IMAP server {host} timed out")]
    Timeout { host: String },
    #[error("IMAP server {host} closed the connection")]
    Closed { host: String },
    #[error("IMAP I/O with {host} failed")]
    Io {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup for {host} failed: {why}")]
    Tls { host: String, why: String },
    #[error(
        "IMAP server {host} does not offer STARTTLS\n\nUse imaps:// (port 993); mailroom sends the password only over TLS."
    )]
    NoStartTls { host: String },
    #[error("IMAP {command} refused by {host}: {reply}")]
    Refused {
        host: String,
        command: &'static str,
        reply: String,
    },
    #[error("IMAP server {host} sent a malformed response: {why}")]
    Protocol { host: String, why: String },
    #[error(
        "IMAP server {host} sent a response line longer than {} in reply to {command}\n\n\
         No IMAP server needs lines that long: check that the URL points at your mail provider's IMAP server.",
        bytes_text(*limit as u64)
    )]
    LineTooLong {
        host: String,
        command: &'static str,
        limit: usize,
    },
    #[error(
        "IMAP server {host} sent more than {} in reply to {command} (the cap on one command's reply, \
         untagged responses included; a message does not count against it)\n\n\
         No IMAP server needs that much: check that the URL points at your mail provider's IMAP server.",
        bytes_text(*limit)
    )]
    TooMuchData {
        host: String,
        command: &'static str,
        limit: u64,
    },
    #[error(
        "IMAP server {host} sent {count} messages larger than the sizes it listed for them; giving up\n\n\
         Its RFC822.SIZE answers cannot be trusted: export the mailbox to a Maildir or mbox with a \
         mail client and import that with --maildir or --mbox."
    )]
    SizesUntrusted { host: String, count: u32 },
    #[error(
        "IMAP mailbox {mailbox} on {host} was recreated during the import (UIDVALIDITY changed)\n\n\
         Run the import again: what it recorded so far is kept, and a re-run skips it."
    )]
    UidValidityChanged { host: String, mailbox: String },
    #[error("the IMAP user name or password contains a line break")]
    BadCredentials,
    #[error(
        "IMAP server {host} does not offer AUTHENTICATE XOAUTH2\n\nUse a password (drop --imap-auth xoauth2), or a server that takes OAuth2 tokens."
    )]
    NoXoauth2 { host: String },
    #[error("no OAuth2 access token for IMAP: {0}")]
    Token(#[from] crate::oauth::Error),
}

/// How a session logs in. Neither variant's `Debug` shows a secret.
#[derive(Clone)]
pub enum Login {
    /// LOGIN with this password.
    Password(Secret),
    /// AUTHENTICATE XOAUTH2 with tokens from this source.
    XOAuth2(std::sync::Arc<crate::oauth::Tokens>),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Password(_) => f.write_str("Password(<redacted>)"),
            Login::XOAuth2(tokens) => f.debug_tuple("XOAuth2").field(tokens).finish(),
        }
    }
}

/// `imaps://` is [`Security::Tls`], `imap://` [`Security::StartTls`] (required unless the host
/// is loopback).
pub use crate::model::Security;

/// Builds the rustls config: the system CA bundle (the file OpenSSL uses) plus `extra_ca`.
fn tls_config(host: &str, extra_ca: Option<&[u8]>) -> Result<Arc<ClientConfig>, Error> {
    let tls_err = |why: String| Error::Tls {
        host: host.to_owned(),
        why,
    };
    let mut roots = RootCertStore::empty();
    let mut candidates: Vec<std::path::PathBuf> = std::env::var_os("SSL_CERT_FILE")
        .map(Into::into)
        .into_iter()
        .collect();
    candidates.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ]
        .map(Into::into),
    );
    if let Some(path) = candidates.iter().find(|p| p.is_file())
        && let Ok(iter) = CertificateDer::pem_file_iter(path)
    {
        for cert in iter.flatten() {
            let _ = roots.add(cert);
        }
    }
    if let Some(pem) = extra_ca {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| tls_err(format!("bad CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| tls_err(format!("bad CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(tls_err(
            "no trusted CA certificates found (install ca-certificates or pass --imap-ca)".into(),
        ));
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn tls_wrap(
    tcp: TcpStream,
    host: &str,
    extra_ca: Option<&[u8]>,
) -> Result<TlsStream<TcpStream>, Error> {
    let config = tls_config(host, extra_ca)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls {
        host: host.to_owned(),
        why: e.to_string(),
    })?;
    tokio::time::timeout(IO_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| Error::Timeout {
            host: host.to_owned(),
        })?
        .map_err(|e| Error::Tls {
            host: host.to_owned(),
            why: e.to_string(),
        })
}

/// IMAP quoted string; refuses CR/LF, which no quoting can carry.
fn quote(s: &str) -> Result<Zeroizing<String>, Error> {
    if s.contains(['\r', '\n']) {
        return Err(Error::BadCredentials);
    }
    // Sized first: `s` may be the password, and a string that grows frees copies of it.
    let mut out = Zeroizing::new(String::with_capacity(2 * s.len() + 2));
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// One message of the mailbox, or why it was not read.
#[derive(Debug)]
pub enum Item {
    /// A message to import.
    Message(MailboxMessage),
    /// A message left unread; the import goes on without it.
    Skipped(Skipped),
}

/// A message [`Mailbox::next`] did not read, to be reported to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The message's `imap://…;UID=n` name, as a `MailboxMessage::source`.
    pub source: String,
    pub uid: u32,
    pub why: SkipReason,
}

/// Why a message was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Larger than the cap on one message: `size` is what the server announced, by
    /// `RFC822.SIZE` or by the `{n}` of the literal it started to send.
    TooLarge { size: u64, cap: u64 },
    /// Listed, but the server returned no message for it: another client expunged it.
    Vanished,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.why {
            SkipReason::TooLarge { size, cap } => write!(
                f,
                "{}: skipped, not read: the server says it is {size} bytes, over the {} cap on \
                 one message\n\nSave it with a mail client into a Maildir or mbox and import that \
                 with --maildir or --mbox, which have no cap.",
                self.source,
                bytes_text(cap)
            ),
            SkipReason::Vanished => write!(
                f,
                "{}: skipped: the server no longer has it (expunged by another client?)",
                self.source
            ),
        }
    }
}

enum Stream {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<TlsStream<TcpStream>>>),
}

/// One logged-in connection with the mailbox EXAMINEd.
struct Session {
    stream: Stream,
    host: String,
    tag: u32,
    reader: Reader,
    position: Position,
    /// From `* OK [UIDVALIDITY n]`: UIDs mean the same messages only while it is unchanged.
    uidvalidity: Option<u32>,
}

/// Where the listing of a mailbox stands, kept current by the untagged responses of any
/// command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// Messages in the mailbox, from `* n EXISTS` (RFC 3501 §7.3.1).
    exists: u32,
    /// The sequence number the listing goes on from.
    cursor: u32,
}

impl Position {
    /// Follows `* n EXISTS` and `* n EXPUNGE`. An expunge below the cursor moves it down:
    /// every later message's number drops by one at once (RFC 3501 §7.4.1).
    fn follow(&mut self, text: &[u8]) {
        let Some((n, keyword)) = untagged_number(text) else {
            return;
        };
        if keyword.eq_ignore_ascii_case(b"EXISTS") {
            self.exists = n;
        } else if keyword.eq_ignore_ascii_case(b"EXPUNGE") {
            self.exists = self.exists.saturating_sub(1);
            if n < self.cursor {
                self.cursor -= 1;
            }
        }
    }
}

/// What [`Session::next_reply`] read.
enum Reply {
    /// The tagged OK that completes the command.
    Done,
    Untagged(Response),
    /// The `BODY[]` literal announced this many bytes, over the cap, and none was read: the
    /// connection is mid-literal and must be dropped.
    TooLarge(u64),
}

/// What [`Session::fetch_body`] got.
enum Body {
    Raw(Vec<u8>),
    TooLarge(u64),
    Missing,
}

/// At most 200 bytes of server text, for an error message.
fn shown(text: &[u8]) -> String {
    String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned()
}

/// Whether `haystack` contains `needle`, ASCII case-insensitively.
fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The leading digits of `text` as a number; `None` without digits or on overflow.
fn number(text: &[u8]) -> Option<u64> {
    let end = text
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(text.len());
    std::str::from_utf8(&text[..end]).ok()?.parse().ok()
}

/// `* n KEYWORD ...`: `n` and the keyword.
fn untagged_number(text: &[u8]) -> Option<(u32, &[u8])> {
    let rest = text.strip_prefix(b"* ")?;
    let n = u32::try_from(number(rest)?).ok()?;
    let after = rest.iter().position(|&b| b == b' ')?;
    let keyword = &rest[after + 1..];
    let end = keyword
        .iter()
        .position(|&b| b == b' ' || b == b'(')
        .unwrap_or(keyword.len());
    Some((n, &keyword[..end]))
}

/// The number after the FETCH item `name` (`UID`, `RFC822.SIZE`) in a FETCH response.
fn fetch_item(text: &[u8], name: &[u8]) -> Option<u64> {
    let at = text
        .windows(name.len() + 1)
        .enumerate()
        .position(|(i, w)| {
            w[..name.len()].eq_ignore_ascii_case(name)
                && w[name.len()] == b' '
                && i > 0
                && matches!(text[i - 1], b'(' | b' ')
        })?;
    number(&text[at + name.len() + 1..])
}

impl Session {
    /// Connects, upgrades to TLS as the URL says, logs in and EXAMINEs the mailbox.
    async fn open(url: &ImapUrl, login: &Login, extra_ca: Option<&[u8]>) -> Result<Self, Error> {
        let host = url.host.as_str();
        let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect((host, url.port)))
            .await
            .map_err(|_| Error::Timeout {
                host: host.to_owned(),
            })?
            .map_err(|source| Error::Connect {
                host: host.to_owned(),
                port: url.port,
                source,
            })?;
        let stream = match url.security {
            Security::Tls => Stream::Tls(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                tls_wrap(tcp, host, extra_ca).await?,
            ))),
            // A parsed URL is never `None`: `imap://` means STARTTLS (required off loopback).
            Security::StartTls | Security::None => {
                Stream::Plain(BufReader::with_capacity(READ_BUFFER, tcp))
            }
        };
        let mut s = Session {
            stream,
            host: host.to_owned(),
            tag: 0,
            reader: Reader::new(LIMITS),
            position: Position {
                exists: 0,
                cursor: 1,
            },
            uidvalidity: None,
        };
        s.reader.start_command();
        let greeting = s.read("greeting", false).await?;
        if !greeting.text.starts_with(b"* OK") && !greeting.text.starts_with(b"* PREAUTH") {
            return Err(Error::Refused {
                host: host.to_owned(),
                command: "greeting",
                reply: shown(&greeting.text),
            });
        }
        if url.security == Security::StartTls {
            let mut offers = false;
            s.command("CAPABILITY", "", |text| {
                offers |= contains_ci(text, b"STARTTLS");
            })
            .await?;
            if offers {
                s.command("STARTTLS", "", |_| {}).await?;
                let Stream::Plain(reader) = s.stream else {
                    return Err(Error::Protocol {
                        host: host.to_owned(),
                        why: "STARTTLS on a TLS stream".into(),
                    });
                };
                // Nothing may follow the STARTTLS OK in plain text; buffered bytes would be an
                // injection attempt (CVE-2011-0411 style), so refuse them.
                if !reader.buffer().is_empty() {
                    return Err(Error::Protocol {
                        host: host.to_owned(),
                        why: "data after STARTTLS response".into(),
                    });
                }
                let tls = tls_wrap(reader.into_inner(), host, extra_ca).await?;
                s.stream = Stream::Tls(Box::new(BufReader::with_capacity(READ_BUFFER, tls)));
            } else if !url.is_loopback() {
                return Err(Error::NoStartTls {
                    host: host.to_owned(),
                });
            }
        }
        match login {
            Login::Password(password) => {
                let password = quote(password.expose())?;
                let args = Secret::concat(&[&quote(&url.user)?, " ", &password]);
                s.command("LOGIN", &args, |_| {}).await?;
            }
            Login::XOAuth2(tokens) => s.xoauth2(&url.user, tokens).await?,
        }
        // EXAMINE is SELECT read-only (RFC 3501 §6.3.2): the server keeps new mail "recent" and
        // unflagged, so the mailbox looks untouched to its other readers.
        let mut uidvalidity = None;
        s.command("EXAMINE", &quote(&url.mailbox)?, |text| {
            if let Some(at) = text.windows(13).position(|w| w == b"[UIDVALIDITY ") {
                uidvalidity = number(&text[at + 13..]).and_then(|n| u32::try_from(n).ok());
            }
        })
        .await?;
        s.uidvalidity = uidvalidity;
        Ok(s)
    }

    /// AUTHENTICATE XOAUTH2 (with the initial response when the server has SASL-IR). A refused
    /// token gets a `+` continuation with a base64 JSON error, which the client answers with
    /// an empty line; the tagged NO that follows is the refusal.
    async fn xoauth2(&mut self, user: &str, tokens: &crate::oauth::Tokens) -> Result<(), Error> {
        const NAME: &str = "AUTHENTICATE";
        if user.contains(['\r', '\n', '\x01']) {
            return Err(Error::BadCredentials);
        }
        let (mut xoauth2, mut sasl_ir) = (false, false);
        self.command("CAPABILITY", "", |text| {
            xoauth2 |= contains_ci(text, b"AUTH=XOAUTH2");
            sasl_ir |= contains_ci(text, b"SASL-IR");
        })
        .await?;
        if !xoauth2 {
            return Err(Error::NoXoauth2 {
                host: self.host.clone(),
            });
        }
        let token = tokens.token().await?;
        let response = crate::oauth::xoauth2_response(user, &token);
        let tag = if sasl_ir {
            self.send(NAME, &Secret::concat(&["XOAUTH2 ", &response]))
                .await?
        } else {
            self.send(NAME, "XOAUTH2").await?
        };
        let mut sent = sasl_ir;
        let mut detail = None;
        loop {
            match self.next_reply(&tag, NAME, false).await {
                Ok(Reply::Done) => return Ok(()),
                Ok(Reply::Untagged(r)) if r.text.starts_with(b"+") => {
                    if sent {
                        let challenge = String::from_utf8_lossy(&r.text[1..]).into_owned();
                        detail = crate::oauth::describe_challenge(&challenge);
                        self.write(b"\r\n").await?;
                    } else {
                        sent = true;
                        let line = Secret::concat(&[&response, "\r\n"]);
                        self.write(line.as_bytes()).await?;
                    }
                }
                Ok(_) => {}
                Err(Error::Refused {
                    host,
                    command,
                    reply,
                }) => {
                    let reply = match &detail {
                        Some(detail) => format!("{reply} ({detail})"),
                        None => reply,
                    };
                    return Err(Error::Refused {
                        host,
                        command,
                        reply,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let fut = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.get_mut().write_all(bytes).await?;
                    s.get_mut().flush().await
                }
                Stream::Tls(s) => {
                    s.get_mut().write_all(bytes).await?;
                    s.get_mut().flush().await
                }
            }
        };
        match tokio::time::timeout(IO_TIMEOUT, fut).await {
            Err(_) => Err(Error::Timeout {
                host: self.host.clone(),
            }),
            Ok(result) => result.map_err(|source| Error::Io {
                host: self.host.clone(),
                source,
            }),
        }
    }

    /// Reads one response within the caps; `command` names the reply in errors.
    async fn read(&mut self, command: &'static str, want_body: bool) -> Result<Response, Error> {
        self.read_raw(want_body)
            .await
            .map_err(|e| self.read_error(command, e))
    }

    async fn read_raw(&mut self, want_body: bool) -> Result<Response, ReadError> {
        let Session { stream, reader, .. } = self;
        match stream {
            Stream::Plain(s) => reader.read(s, want_body).await,
            Stream::Tls(s) => reader.read(&mut **s, want_body).await,
        }
    }

    fn read_error(&self, command: &'static str, e: ReadError) -> Error {
        let host = self.host.clone();
        match e {
            ReadError::Closed => Error::Closed { host },
            ReadError::Timeout(_) => Error::Timeout { host },
            ReadError::Io(source) => Error::Io { host, source },
            ReadError::LineTooLong { limit } => Error::LineTooLong {
                host,
                command,
                limit,
            },
            ReadError::CommandTooLarge { limit } => Error::TooMuchData {
                host,
                command,
                limit,
            },
            ReadError::MessageTooLarge { size, .. } => Error::Protocol {
                host,
                why: format!("a {size}-byte message in reply to {command}"),
            },
        }
    }

    /// Sends a tagged command and starts its byte budget; returns the tag.
    async fn send(&mut self, name: &'static str, args: &str) -> Result<String, Error> {
        self.tag += 1;
        let tag = format!("m{}", self.tag);
        // LOGIN and AUTHENTICATE lines carry credentials: the copy is overwritten once sent.
        let line = if args.is_empty() {
            Secret::concat(&[&tag, " ", name, "\r\n"])
        } else {
            Secret::concat(&[&tag, " ", name, " ", args, "\r\n"])
        };
        self.reader.start_command();
        self.write(line.as_bytes()).await?;
        Ok(tag)
    }

    /// Reads the next response to the command `tag`. Mailbox-size updates (EXISTS, EXPUNGE)
    /// are applied here, whatever the command, and then dropped with the rest of the untagged
    /// data the caller does not keep.
    async fn next_reply(
        &mut self,
        tag: &str,
        command: &'static str,
        want_body: bool,
    ) -> Result<Reply, Error> {
        let response = match self.read_raw(want_body).await {
            Ok(r) => r,
            Err(ReadError::MessageTooLarge { size, .. }) if want_body => {
                return Ok(Reply::TooLarge(size));
            }
            Err(e) => return Err(self.read_error(command, e)),
        };
        let text = &response.text;
        if let Some(rest) = text
            .strip_prefix(tag.as_bytes())
            .and_then(|r| r.strip_prefix(b" "))
        {
            if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case(b"OK") {
                return Ok(Reply::Done);
            }
            return Err(Error::Refused {
                host: self.host.clone(),
                command,
                reply: shown(rest),
            });
        }
        self.position.follow(text);
        if text.len() >= 5 && text[..5].eq_ignore_ascii_case(b"* BYE") && command != "LOGOUT" {
            return Err(Error::Refused {
                host: self.host.clone(),
                command,
                reply: shown(&text[2..]),
            });
        }
        Ok(Reply::Untagged(response))
    }

    /// Sends a command and shows each untagged response's text to `on_untagged` as it
    /// arrives, until the tagged OK.
    async fn command(
        &mut self,
        name: &'static str,
        args: &str,
        mut on_untagged: impl FnMut(&[u8]),
    ) -> Result<(), Error> {
        let tag = self.send(name, args).await?;
        loop {
            match self.next_reply(&tag, name, false).await? {
                Reply::Done => return Ok(()),
                Reply::Untagged(r) => on_untagged(&r.text),
                // Only a wanted body can be too large; kept as an error, not a panic.
                Reply::TooLarge(size) => {
                    return Err(Error::Protocol {
                        host: self.host.clone(),
                        why: format!("a {size}-byte message in reply to {name}"),
                    });
                }
            }
        }
    }

    /// UIDs and sizes of the messages numbered `lo..=hi`, by sequence number, at most one
    /// each; moves the cursor past them.
    async fn list(&mut self, lo: u32, hi: u32) -> Result<Vec<(u32, u64)>, Error> {
        // Moved first, so an EXPUNGE the server sends meanwhile adjusts the new position.
        self.position.cursor = hi.saturating_add(1);
        let mut slots: Vec<Option<(u32, u64)>> = vec![None; (hi - lo + 1) as usize];
        self.command("FETCH", &format!("{lo}:{hi} (UID RFC822.SIZE)"), |text| {
            if let Some((seq, keyword)) = untagged_number(text)
                && keyword.eq_ignore_ascii_case(b"FETCH")
                && (lo..=hi).contains(&seq)
                && let Some(uid) = fetch_item(text, b"UID").and_then(|u| u32::try_from(u).ok())
                && let Some(size) = fetch_item(text, b"RFC822.SIZE")
            {
                slots[(seq - lo) as usize] = Some((uid, size));
            }
        })
        .await?;
        Ok(slots.into_iter().flatten().collect())
    }

    /// The message with this UID, read only if it fits the cap.
    async fn fetch_body(&mut self, uid: u32) -> Result<Body, Error> {
        const NAME: &str = "UID FETCH";
        let tag = self.send(NAME, &format!("{uid} BODY.PEEK[]")).await?;
        let mut body = None;
        loop {
            match self.next_reply(&tag, NAME, body.is_none()).await? {
                Reply::Done => return Ok(body.map_or(Body::Missing, Body::Raw)),
                Reply::TooLarge(size) => return Ok(Body::TooLarge(size)),
                Reply::Untagged(r) => {
                    // A FETCH for another message (a flag change, say) is not the one asked for.
                    if let Some(raw) = r.body
                        && fetch_item(&r.text, b"UID").is_none_or(|u| u == u64::from(uid))
                    {
                        body = Some(raw);
                    }
                }
            }
        }
    }
}

/// A read-only IMAP mailbox, read one message at a time, oldest first.
pub struct Mailbox {
    url: ImapUrl,
    /// Kept for the new connection that replaces one dropped mid-literal; never logged (this
    /// type's `Debug` leaves it out).
    login: Login,
    extra_ca: Option<Vec<u8>>,
    /// `None` after a connection was dropped mid-literal, until the next one is needed.
    session: Option<Session>,
    /// Where the listing goes on in the next session when one was dropped.
    cursor: u32,
    uidvalidity: Option<u32>,
    /// Listed messages not yet read, `(UID, RFC822.SIZE)`, oldest first: one batch at most.
    pending: VecDeque<(u32, u64)>,
    /// The highest UID listed; UIDs grow with sequence numbers (RFC 3501 §2.3.1.1), so a
    /// listing that overlaps an earlier one never repeats a message.
    listed_uid: u32,
    /// Fetches abandoned because the literal was larger than the cap.
    abandoned: u32,
    listed_all: bool,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("url", &self.url)
            .field("cursor", &self.cursor)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Connects, logs in and opens the mailbox read-only.
    ///
    /// # Errors
    /// Connection, TLS, authentication or protocol failures, or a server over a cap.
    pub async fn open(
        url: &ImapUrl,
        login: &Login,
        extra_ca: Option<&[u8]>,
    ) -> Result<Mailbox, Error> {
        let session = Session::open(url, login, extra_ca).await?;
        Ok(Mailbox {
            url: url.clone(),
            login: login.clone(),
            extra_ca: extra_ca.map(<[u8]>::to_vec),
            cursor: 1,
            uidvalidity: session.uidvalidity,
            session: Some(session),
            pending: VecDeque::new(),
            listed_uid: 0,
            abandoned: 0,
            listed_all: false,
        })
    }

    fn source(&self, uid: u32) -> String {
        format!(
            "imap://{}@{}/{};UID={uid}",
            self.url.user, self.url.host, self.url.mailbox
        )
    }

    /// The open session, or a new one that goes on where the dropped one stopped.
    async fn session(&mut self) -> Result<&mut Session, Error> {
        let session = match self.session.take() {
            Some(s) => s,
            None => {
                let mut s = Session::open(&self.url, &self.login, self.extra_ca.as_deref()).await?;
                if s.uidvalidity != self.uidvalidity {
                    return Err(Error::UidValidityChanged {
                        host: self.url.host.clone(),
                        mailbox: self.url.mailbox.clone(),
                    });
                }
                s.position.cursor = self.cursor;
                s
            }
        };
        Ok(self.session.insert(session))
    }

    /// The next message, or why it was skipped; `None` once every message has been read.
    /// Messages come one at a time, so the caller holds at most one.
    ///
    /// # Errors
    /// Connection, protocol or cap failures: the import stops there (what it recorded is
    /// kept, and a re-run skips it).
    pub async fn next(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if let Some((uid, size)) = self.pending.pop_front() {
                let source = self.source(uid);
                let skipped = |source, why| Ok(Some(Item::Skipped(Skipped { source, uid, why })));
                let cap = LIMITS.message;
                if size > cap {
                    return skipped(source, SkipReason::TooLarge { size, cap });
                }
                return match self.session().await?.fetch_body(uid).await? {
                    Body::Raw(raw) => Ok(Some(Item::Message(MailboxMessage { source, raw }))),
                    Body::Missing => skipped(source, SkipReason::Vanished),
                    Body::TooLarge(size) => {
                        // Mid-literal: drop the connection rather than read what we refuse.
                        if let Some(s) = self.session.take() {
                            self.cursor = s.position.cursor;
                        }
                        self.abandoned += 1;
                        if self.abandoned > MAX_ABANDONED {
                            return Err(Error::SizesUntrusted {
                                host: self.url.host.clone(),
                                count: self.abandoned,
                            });
                        }
                        skipped(source, SkipReason::TooLarge { size, cap })
                    }
                };
            }
            if self.listed_all {
                return Ok(None);
            }
            let s = self.session().await?;
            let Position { exists, cursor } = s.position;
            if cursor > exists {
                self.listed_all = true;
                continue;
            }
            let lo = cursor;
            let hi = exists.min(lo.saturating_add(LIST_BATCH - 1));
            let listed = s.list(lo, hi).await?;
            // A server lists every number up to EXISTS; one that lists none of a batch is
            // not read further (else a huge EXISTS could keep the import going forever).
            if listed.is_empty() {
                self.listed_all = true;
                continue;
            }
            for (uid, size) in listed {
                if uid > self.listed_uid {
                    self.listed_uid = uid;
                    self.pending.push_back((uid, size));
                }
            }
        }
    }

    /// Says goodbye; a failed LOGOUT changes nothing already read.
    pub async fn logout(mut self) {
        if let Some(s) = self.session.as_mut() {
            let _ = s.command("LOGOUT", "", |_| {}).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_passwords() {
        let u = ImapUrl::parse("imaps://bounce%40example.com@mail.example.com/Bounces").unwrap();
        assert_eq!(u.security, Security::Tls);
        assert_eq!(u.user, "bounce@example.com");
        assert_eq!(u.port, 993);
        assert_eq!(u.mailbox, "Bounces");
        let u = ImapUrl::parse("imap://u@127.0.0.1:1143").unwrap();
        assert_eq!((u.port, u.mailbox.as_str()), (1143, "INBOX"));
        assert!(u.is_loopback());
        assert!(ImapUrl::parse("imaps://u:secret@h/").is_err());
        assert!(ImapUrl::parse("http://u@h/").is_err());
        assert!(ImapUrl::parse("imaps://h/").is_err());
    }

    #[test]
    fn fetch_items_and_untagged_numbers_are_read_from_response_text() {
        let text = b"* 12 FETCH (UID 345 RFC822.SIZE 6789 FLAGS (\\Seen))";
        assert_eq!(untagged_number(text), Some((12, &b"FETCH"[..])));
        assert_eq!(fetch_item(text, b"UID"), Some(345));
        assert_eq!(fetch_item(text, b"rfc822.size"), Some(6789));
        assert_eq!(fetch_item(b"* 1 FETCH (XUID 3)", b"UID"), None);
        assert_eq!(fetch_item(b"* 1 FETCH (UID x)", b"UID"), None);
        assert_eq!(untagged_number(b"* OK [UIDVALIDITY 3]"), None);
        assert_eq!(untagged_number(b"* 99999999999 EXISTS"), None);
    }

    #[test]
    fn expunges_below_the_cursor_move_it_down() {
        let mut p = Position {
            exists: 10,
            cursor: 5,
        };
        p.follow(b"* 2 EXPUNGE");
        assert_eq!(
            p,
            Position {
                exists: 9,
                cursor: 4
            }
        );
        // At or above the cursor: that message was not listed yet, so nothing moves.
        p.follow(b"* 4 EXPUNGE");
        assert_eq!(
            p,
            Position {
                exists: 8,
                cursor: 4
            }
        );
        p.follow(b"* 12 EXISTS");
        p.follow(b"* OK still here");
        assert_eq!(
            p,
            Position {
                exists: 12,
                cursor: 4
            }
        );
    }

    #[test]
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote(r#"a"b\c"#).unwrap().as_str(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb").is_err());
    }
}
