//! A small IMAP4rev1 (RFC 3501) client that reads every message of one mailbox without
//! changing it: LOGIN, EXAMINE (read-only SELECT), UID SEARCH ALL, UID FETCH BODY.PEEK[] (PEEK leaves `\Seen`
//! alone), LOGOUT. Literals (`{n}`) are read byte-exact.
//!
//! Security: `imaps://` is implicit TLS; `imap://` upgrades with STARTTLS, and only a loopback
//! server may be used in plain text. Certificates are verified against the system's CA bundle
//! (plus `--imap-ca`). The password is sent only inside TLS (or to loopback) and never logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::import::MailboxMessage;

/// Every read and write must finish within this; a stalled server ends the import.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest response line (without literals) accepted: a hostile server cannot exhaust memory.
const MAX_LINE: usize = 1 << 20;
/// Largest literal (message) accepted.
const MAX_LITERAL: usize = 100 << 20;

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
    #[error("the IMAP user name or password contains a line break")]
    BadCredentials,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// imaps://: TLS from the first byte.
    Implicit,
    /// imap://: STARTTLS, required unless the host is loopback.
    StartTls,
}

/// A parsed `imaps://user@host:port/mailbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    pub security: Security,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub mailbox: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ImapUrl {
    /// # Errors
    /// When the scheme, user or host is missing or the port is not a number.
    pub fn parse(url: &str) -> Result<ImapUrl, Error> {
        let bad = |why| Error::Url {
            url: url.to_owned(),
            why,
        };
        let (security, rest) = if let Some(r) = url.strip_prefix("imaps://") {
            (Security::Implicit, r)
        } else if let Some(r) = url.strip_prefix("imap://") {
            (Security::StartTls, r)
        } else {
            return Err(bad("the scheme must be imaps:// or imap://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("the user name is missing (user@host)"))?;
        if user.is_empty() {
            return Err(bad("the user name is missing (user@host)"));
        }
        if user.contains(':') {
            return Err(bad(
                "do not put the password in the URL; set MAILROOM_IMAP_PASSWORD",
            ));
        }
        let default_port = match security {
            Security::Implicit => 993,
            Security::StartTls => 143,
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
                None => default_port,
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| bad("the port is not a number"))?,
                ),
                None => (hostport.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let mailbox = percent_decode(path.trim_end_matches('/'));
        Ok(ImapUrl {
            security,
            user: percent_decode(user),
            host,
            port,
            mailbox: if mailbox.is_empty() {
                "INBOX".to_owned()
            } else {
                mailbox
            },
        })
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

enum Stream {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<TlsStream<TcpStream>>>),
}

struct Session<'a> {
    stream: Stream,
    host: &'a str,
    tag: u32,
}

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
fn quote(s: &str) -> Result<String, Error> {
    if s.contains(['\r', '\n']) {
        return Err(Error::BadCredentials);
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// One response line with its literals: the text has each `{n}` literal replaced by `{}`.
struct Line {
    text: String,
    literals: Vec<Vec<u8>>,
}

impl Session<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let host = self.host.to_owned();
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
        tokio::time::timeout(IO_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout { host: host.clone() })?
            .map_err(|source| Error::Io { host, source })
    }

    async fn read_raw_line(&mut self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let host = self.host.to_owned();
        let fut = async {
            match &mut self.stream {
                Stream::Plain(s) => (&mut *s).take(MAX_LINE as u64).read_until(b'\n', buf).await,
                Stream::Tls(s) => {
                    (&mut **s)
                        .take(MAX_LINE as u64)
                        .read_until(b'\n', buf)
                        .await
                }
            }
        };
        let n = tokio::time::timeout(IO_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout { host: host.clone() })?
            .map_err(|source| Error::Io {
                host: host.clone(),
                source,
            })?;
        if n == 0 {
            return Err(Error::Closed { host });
        }
        if !buf.ends_with(b"\n") {
            return Err(Error::Protocol {
                host,
                why: "response line too long".into(),
            });
        }
        Ok(())
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, Error> {
        let host = self.host.to_owned();
        let mut buf = vec![0; n];
        let fut = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read_exact(&mut buf).await,
                Stream::Tls(s) => s.read_exact(&mut buf).await,
            }
        };
        tokio::time::timeout(IO_TIMEOUT, fut)
            .await
            .map_err(|_| Error::Timeout { host: host.clone() })?
            .map_err(|source| Error::Io { host, source })?;
        Ok(buf)
    }

    /// Reads one logical response line, following `{n}` literals.
    async fn read_line(&mut self) -> Result<Line, Error> {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut raw = Vec::new();
            self.read_raw_line(&mut raw).await?;
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(open) = line.rfind('{')
                && line.ends_with('}')
                && let Ok(n) = line[open + 1..line.len() - 1]
                    .trim_end_matches('+')
                    .parse::<usize>()
            {
                if n > MAX_LITERAL {
                    return Err(Error::Protocol {
                        host: self.host.to_owned(),
                        why: format!("literal of {n} bytes is too large"),
                    });
                }
                text.push_str(&line[..open]);
                text.push_str("{}");
                literals.push(self.read_exact(n).await?);
                continue;
            }
            text.push_str(line);
            return Ok(Line { text, literals });
        }
    }

    /// Sends a tagged command and collects untagged responses until its completion.
    async fn command(&mut self, name: &'static str, args: &str) -> Result<Vec<Line>, Error> {
        self.tag += 1;
        let tag = format!("m{}", self.tag);
        let line = if args.is_empty() {
            format!("{tag} {name}\r\n")
        } else {
            format!("{tag} {name} {args}\r\n")
        };
        self.write(line.as_bytes()).await?;
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line().await?;
            if let Some(rest) = line.text.strip_prefix(&format!("{tag} ")) {
                if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case("OK") {
                    return Ok(untagged);
                }
                return Err(Error::Refused {
                    host: self.host.to_owned(),
                    command: name,
                    reply: rest.to_owned(),
                });
            }
            untagged.push(line);
        }
    }
}

/// Connects, logs in and returns every message of the mailbox, oldest UID first.
///
/// # Errors
/// Connection, TLS, authentication or protocol failures.
pub async fn fetch_all(
    url: &ImapUrl,
    password: &str,
    extra_ca: Option<&[u8]>,
) -> Result<Vec<MailboxMessage>, Error> {
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
        Security::Implicit => Stream::Tls(Box::new(BufReader::new(
            tls_wrap(tcp, host, extra_ca).await?,
        ))),
        Security::StartTls => Stream::Plain(BufReader::new(tcp)),
    };
    let mut s = Session {
        stream,
        host,
        tag: 0,
    };
    let greeting = s.read_line().await?;
    if !greeting.text.starts_with("* OK") && !greeting.text.starts_with("* PREAUTH") {
        return Err(Error::Refused {
            host: host.to_owned(),
            command: "greeting",
            reply: greeting.text,
        });
    }
    if url.security == Security::StartTls {
        let caps = s.command("CAPABILITY", "").await?;
        let offers = caps
            .iter()
            .any(|l| l.text.to_ascii_uppercase().contains("STARTTLS"));
        if offers {
            s.command("STARTTLS", "").await?;
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
            s.stream = Stream::Tls(Box::new(BufReader::new(tls)));
        } else if !url.is_loopback() {
            return Err(Error::NoStartTls {
                host: host.to_owned(),
            });
        }
    }
    s.command(
        "LOGIN",
        &format!("{} {}", quote(&url.user)?, quote(password)?),
    )
    .await?;
    // EXAMINE is SELECT read-only (RFC 3501 §6.3.2): the server keeps new mail "recent" and
    // unflagged, so the mailbox looks untouched to its other readers.
    s.command("EXAMINE", &quote(&url.mailbox)?).await?;
    let search = s.command("UID SEARCH", "ALL").await?;
    let mut uids: Vec<u32> = search
        .iter()
        .filter_map(|l| l.text.strip_prefix("* SEARCH"))
        .flat_map(|rest| rest.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    let mut messages = Vec::with_capacity(uids.len());
    for uid in uids {
        let lines = s
            .command("UID FETCH", &format!("{uid} BODY.PEEK[]"))
            .await?;
        let body = lines
            .into_iter()
            .filter(|l| l.text.to_ascii_uppercase().contains("FETCH"))
            .find_map(|l| l.literals.into_iter().next());
        let Some(raw) = body else {
            return Err(Error::Protocol {
                host: host.to_owned(),
                why: format!("no message body in the FETCH response for UID {uid}"),
            });
        };
        messages.push(MailboxMessage {
            source: format!("imap://{}@{}/{};UID={uid}", url.user, url.host, url.mailbox),
            raw,
        });
    }
    // A failed LOGOUT changes nothing already read.
    let _ = s.command("LOGOUT", "").await;
    Ok(messages)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_passwords() {
        let u = ImapUrl::parse("imaps://bounce%40example.com@mail.example.com/Bounces").unwrap();
        assert_eq!(u.security, Security::Implicit);
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
    fn quoting_escapes_and_refuses_line_breaks() {
        assert_eq!(quote(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quote("a\r\nb").is_err());
    }
}
