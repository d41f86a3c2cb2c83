//! The doctor's raw SMTP client: reads replies (multi-line, bounded), sends commands with a
//! timeout, parses EHLO extensions. It speaks only what a probe needs (EHLO, STARTTLS, AUTH,
//! QUIT) and never MAIL, RCPT or DATA, so a probe can never send a message.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512 octets; servers exceed it).
const MAX_LINE: u64 = 4096;
/// Most lines accepted in one reply, so a hostile server cannot feed us forever.
const MAX_LINES: usize = 200;

/// One SMTP reply: the code and the text of each line (without the code and separator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as the server sent it, lines joined with " / " ("535 5.7.8 Error: …").
    pub fn text(&self) -> String {
        let body = self.lines.join(" / ");
        if body.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {}", self.code, body)
        }
    }
}

/// Why a step of the dialogue failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error(
        "the server sent data after its 220 to STARTTLS, before the TLS handshake (possible command injection)"
    )]
    Injected,
}

/// A line-oriented SMTP connection over any byte stream (TCP or TLS).
pub struct Conn<S> {
    reader: BufReader<S>,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, timeout: Duration) -> Conn<S> {
        Conn {
            reader: BufReader::new(stream),
            timeout,
        }
    }

    /// Reads one complete (possibly multi-line) reply within the step timeout.
    pub async fn read_reply(&mut self) -> Result<Reply, StepError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.read_reply_inner())
            .await
            .map_err(|_| StepError::Timeout(timeout))?
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, StepError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut raw)
                .await?;
            if n == 0 {
                return Err(StepError::Closed);
            }
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
                return Err(StepError::Malformed(line.chars().take(120).collect()));
            }
            let this: u16 = line[..3]
                .parse()
                .map_err(|_| StepError::Malformed(line.to_owned()))?;
            if *code.get_or_insert(this) != this {
                return Err(StepError::Malformed(line.chars().take(120).collect()));
            }
            let more = bytes.get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if !more {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(StepError::Malformed(format!(
                    "more than {MAX_LINES} lines in one reply"
                )));
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, StepError> {
        let timeout = self.timeout;
        let stream = self.reader.get_mut();
        tokio::time::timeout(timeout, async {
            stream.write_all(line.as_bytes()).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await
        })
        .await
        .map_err(|_| StepError::Timeout(timeout))??;
        self.read_reply().await
    }

    /// QUIT politely; errors are irrelevant at this point (the probe's findings are made).
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
        let _ = tokio::time::timeout(self.timeout, self.reader.get_mut().shutdown()).await;
    }

    /// The stream back, for the TLS upgrade. Fails when the server already sent more bytes:
    /// anything buffered before the handshake would otherwise be trusted as if sent over TLS.
    pub fn into_inner(self) -> Result<S, StepError> {
        if !self.reader.buffer().is_empty() {
            return Err(StepError::Injected);
        }
        Ok(self.reader.into_inner())
    }
}

/// What an EHLO reply advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extensions {
    /// Every extension line as sent ("SIZE 10240000", "AUTH PLAIN LOGIN", …).
    pub raw: Vec<String>,
    pub starttls: bool,
    pub auth: Vec<String>,
    /// SIZE advertised: `Some(None)` without a limit (or 0 = no limit), `Some(Some(n))` with one.
    pub size: Option<Option<u64>>,
    pub pipelining: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub enhancedstatuscodes: bool,
    pub dsn: bool,
    pub chunking: bool,
}

/// Parses the lines of a 250 EHLO reply (the first line is the server's name and greeting).
pub fn parse_ehlo(reply: &Reply) -> Extensions {
    let mut ext = Extensions::default();
    for line in reply.lines.iter().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        ext.raw.push(line.to_owned());
        // "AUTH=PLAIN LOGIN" is an old Outlook-era spelling of the AUTH line.
        let (keyword, params) = match line.split_once([' ', '=']) {
            Some((k, p)) => (k.to_ascii_uppercase(), p.trim()),
            None => (line.to_ascii_uppercase(), ""),
        };
        match keyword.as_str() {
            "STARTTLS" => ext.starttls = true,
            "AUTH" => {
                for mech in params.split_whitespace() {
                    let mech = mech.to_ascii_uppercase();
                    if !ext.auth.contains(&mech) {
                        ext.auth.push(mech);
                    }
                }
            }
            "SIZE" => {
                let limit = params
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok());
                ext.size = Some(limit.filter(|&n: &u64| n > 0));
            }
            "PIPELINING" => ext.pipelining = true,
            "8BITMIME" => ext.eightbitmime = true,
            "SMTPUTF8" => ext.smtputf8 = true,
            "ENHANCEDSTATUSCODES" => ext.enhancedstatuscodes = true,
            "DSN" => ext.dsn = true,
            "CHUNKING" => ext.chunking = true,
            _ => {}
        }
    }
    ext
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn replies(server_bytes: &'static [u8]) -> Vec<Result<Reply, String>> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(server_bytes).await.unwrap();
        drop(server);
        let mut conn = Conn::new(client, Duration::from_secs(5));
        let mut out = Vec::new();
        loop {
            match conn.read_reply().await {
                Ok(r) => out.push(Ok(r)),
                Err(StepError::Closed) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn multi_line_replies_and_bare_codes() {
        let got = replies(b"220 mx ESMTP\r\n250-mx\r\n250-SIZE 100\r\n250 DSN\r\n221\r\n").await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().text(), "220 mx ESMTP");
        assert_eq!(
            got[1].as_ref().unwrap().lines,
            vec!["mx", "SIZE 100", "DSN"]
        );
        assert_eq!(got[2].as_ref().unwrap().text(), "221");
    }

    #[tokio::test]
    async fn hostile_replies_are_errors() {
        let got = replies(b"hello there\r\n").await;
        assert!(
            got[0].as_ref().unwrap_err().contains("malformed"),
            "{got:?}"
        );
        let got = replies(b"250-a\r\n354 b\r\n").await;
        assert!(
            got[0].as_ref().unwrap_err().contains("malformed"),
            "{got:?}"
        );
        // A reply that never ends is cut at MAX_LINES.
        let endless: &'static [u8] = "250-x\r\n".repeat(MAX_LINES + 5).leak().as_bytes();
        let got = replies(endless).await;
        assert!(
            got[0].as_ref().unwrap_err().contains("more than"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut conn = Conn::new(client, Duration::from_millis(50));
        assert!(matches!(
            conn.read_reply().await,
            Err(StepError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn data_buffered_before_tls_is_refused() {
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"220 go ahead\r\n250 injected\r\n")
            .await
            .unwrap();
        let mut conn = Conn::new(client, Duration::from_secs(5));
        assert_eq!(conn.read_reply().await.unwrap().code, 220);
        assert!(matches!(conn.into_inner(), Err(StepError::Injected)));
    }

    #[test]
    fn ehlo_extensions() {
        let reply = Reply {
            code: 250,
            lines: [
                "mx.example greets you",
                "PIPELINING",
                "SIZE 10240000",
                "STARTTLS",
                "AUTH PLAIN LOGIN",
                "AUTH=LOGIN CRAM-MD5",
                "ENHANCEDSTATUSCODES",
                "8BITMIME",
                "DSN",
                "SMTPUTF8",
                "CHUNKING",
                "X-UNKNOWN thing",
            ]
            .map(String::from)
            .to_vec(),
        };
        let e = parse_ehlo(&reply);
        assert!(e.starttls && e.pipelining && e.eightbitmime && e.smtputf8);
        assert!(e.enhancedstatuscodes && e.dsn && e.chunking);
        assert_eq!(e.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert_eq!(e.size, Some(Some(10_240_000)));
        assert_eq!(e.raw.len(), 11);
        let bare = parse_ehlo(&Reply {
            code: 250,
            lines: vec!["mx".into(), "SIZE".into()],
        });
        assert_eq!(bare.size, Some(None));
        assert!(!bare.starttls && bare.auth.is_empty());
    }
}
