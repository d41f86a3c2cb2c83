//! SMTP on the wire, client side: a connection over any byte stream (TCP or TLS) that writes
//! command lines and reads replies with every read bounded, and the EHLO keyword parser. Shared
//! by the delivery engine (`transport`) and the probes (`doctor`), so both obey the same limits.
//!
//! What a hostile or broken server can do to a reader here is bounded by [`MAX_LINE`],
//! [`MAX_LINES`] and [`MAX_REPLY`]: the read buffer has a fixed size and is never grown, a line
//! that does not end within [`MAX_LINE`] bytes is an error (not a longer buffer), and a reply
//! is cut off after [`MAX_LINES`] lines or [`MAX_REPLY`] bytes. [`Conn::into_inner`] refuses to
//! hand the stream over for a TLS upgrade while bytes the server sent are still unread (the
//! STARTTLS response injection of CVE-2011-0411).
//!
//! This module must not open sockets, negotiate TLS or decide what a reply means for a
//! recipient: callers own the stream and `transport::classify` owns the meaning of replies.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest reply line accepted, line ending included. RFC 5321 §4.5.3.1.5 says 512 octets;
/// real servers exceed it (long EHLO keyword lists, verbose rejections), never by this much.
pub const MAX_LINE: usize = 4096;
/// Most lines accepted in one reply.
pub const MAX_LINES: usize = 200;
/// Most bytes accepted in one reply (all its lines together).
pub const MAX_REPLY: usize = 64 * 1024;
/// The read buffer: room for one whole line of [`MAX_LINE`] plus what a pipelined batch of
/// replies brings with it. Fixed: a reply never makes it grow.
const BUFFER: usize = 4 * MAX_LINE;

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

    /// The text of every line without the code, joined with "\n".
    pub fn message(&self) -> String {
        self.lines.join("\n")
    }

    /// A 2xx reply.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Why a read or write on the connection failed. After any of these the connection's state is
/// unknown and it must be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no reply within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("{0}; the connection was dropped")]
    TooLong(String),
    #[error(
        "the server sent data after its 220 to STARTTLS, before the TLS handshake (possible command injection)"
    )]
    Injected,
}

/// A line-oriented SMTP connection over any byte stream, with bounded reads and a deadline on
/// every read and write.
pub struct Conn<S> {
    stream: S,
    /// Bytes read from the stream and not yet consumed are `buf[start..end]`.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// A connection whose every step (one reply, one write) must finish within `timeout`.
    pub fn new(stream: S, timeout: Duration) -> Conn<S> {
        Conn {
            stream,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            timeout,
        }
    }

    /// The stream, for inspection (TLS details of an upgraded connection).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Reads one complete (possibly multi-line) reply within the step timeout.
    ///
    /// # Errors
    /// A timeout, a closed or failed stream, or a reply that breaks the format or the bounds.
    pub async fn read_reply(&mut self) -> Result<Reply, Error> {
        self.read_reply_within(self.timeout).await
    }

    /// [`Conn::read_reply`] with a deadline of its own (the reply after the final "." of a
    /// large message may take longer than a command's).
    ///
    /// # Errors
    /// As [`Conn::read_reply`].
    pub async fn read_reply_within(&mut self, limit: Duration) -> Result<Reply, Error> {
        tokio::time::timeout(limit, self.read_reply_inner())
            .await
            .map_err(|_| Error::Timeout(limit))?
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, Error> {
        let mut lines = Vec::new();
        let mut code = None;
        let mut bytes = 0usize;
        loop {
            let (line, raw_len) = self.read_line().await?;
            bytes += raw_len;
            if bytes > MAX_REPLY {
                return Err(Error::TooLong(format!(
                    "a reply longer than {MAX_REPLY} bytes"
                )));
            }
            let (this, more, text) = parse_line(&line)?;
            if *code.get_or_insert(this) != this {
                return Err(Error::Malformed(preview(&line)));
            }
            lines.push(text);
            if !more {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(Error::TooLong(format!(
                    "a reply of more than {MAX_LINES} lines"
                )));
            }
        }
    }

    /// One line, line ending removed, and its length on the wire; at most [`MAX_LINE`] bytes
    /// are ever held for it.
    async fn read_line(&mut self) -> Result<(String, usize), Error> {
        loop {
            let pending = &self.buf[self.start..self.end];
            // Look only as far as a line may go: a line end further away (several replies can
            // arrive in one read) still makes this line too long.
            let window = &pending[..pending.len().min(MAX_LINE)];
            if let Some(at) = window.iter().position(|&b| b == b'\n') {
                let raw = &window[..at];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                let line = String::from_utf8_lossy(raw).into_owned();
                self.start += at + 1;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                return Ok((line, at + 1));
            }
            if pending.len() >= MAX_LINE {
                return Err(Error::TooLong(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            if self.end == self.buf.len() {
                // Move the partial line to the front; it is shorter than MAX_LINE, so at least
                // BUFFER - MAX_LINE bytes are free after it.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(Error::Closed);
            }
            self.end += n;
        }
    }

    /// Writes `bytes` (one or more complete command lines, or a message) and flushes.
    ///
    /// # Errors
    /// A timeout or a failed stream.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.send_within(bytes, self.timeout).await
    }

    /// [`Conn::send`] with a deadline of its own (a large message takes longer to write).
    ///
    /// # Errors
    /// A timeout or a failed stream.
    pub async fn send_within(&mut self, bytes: &[u8], limit: Duration) -> Result<(), Error> {
        let stream = &mut self.stream;
        tokio::time::timeout(limit, async {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
        .map_err(|_| Error::Timeout(limit))??;
        Ok(())
    }

    /// Sends one command line (CRLF added) and reads its reply.
    ///
    /// # Errors
    /// As [`Conn::send`] and [`Conn::read_reply`].
    pub async fn command(&mut self, line: &str) -> Result<Reply, Error> {
        // The line may carry credentials (AUTH): its copy is overwritten once sent.
        let mut wire = zeroize::Zeroizing::new(Vec::with_capacity(line.len() + 2));
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(b"\r\n");
        self.send(&wire).await?;
        drop(wire);
        self.read_reply().await
    }

    /// Whether the server sent bytes that no reply has consumed yet.
    pub fn has_unread(&self) -> bool {
        self.start < self.end
    }

    /// QUIT politely and close; errors are irrelevant at this point.
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
        let _ = tokio::time::timeout(self.timeout, self.stream.shutdown()).await;
    }

    /// The stream back, for the TLS upgrade after a 220 to STARTTLS.
    ///
    /// # Errors
    /// [`Error::Injected`] when the server already sent more bytes: anything read before the
    /// handshake would otherwise be trusted as if it had come over TLS.
    pub fn into_inner(self) -> Result<S, Error> {
        if self.has_unread() {
            return Err(Error::Injected);
        }
        Ok(self.stream)
    }
}

/// Splits a reply line into its code, whether more lines follow, and its text.
fn parse_line(line: &str) -> Result<(u16, bool, String), Error> {
    let bytes = line.as_bytes();
    let code_ok = bytes.len() >= 3
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && (b'2'..=b'5').contains(&bytes[0]);
    let separator = bytes.get(3).copied();
    if !code_ok || !matches!(separator, None | Some(b' ' | b'-')) {
        return Err(Error::Malformed(preview(line)));
    }
    let code = u16::from(bytes[0] - b'0') * 100
        + u16::from(bytes[1] - b'0') * 10
        + u16::from(bytes[2] - b'0');
    Ok((
        code,
        separator == Some(b'-'),
        line[3..].get(1..).unwrap_or("").to_owned(),
    ))
}

/// The start of a bad line, for an error message (never the whole of a hostile line).
fn preview(line: &str) -> String {
    line.chars().take(120).collect()
}

/// Checks an EHLO/HELO argument (RFC 5321 §4.1.1.1): a domain (LDH labels of 1 to 63
/// characters, at most 253 in all), or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`);
/// a bare IP address is accepted too (it is sent as a literal).
///
/// # Errors
/// Why the name cannot be sent: a line break or space would smuggle another command.
pub fn check_hello_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        let ok = match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not an address literal like [192.0.2.1] or [IPv6:2001:db8::1]"
            ))
        };
    }
    let domain = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a domain name (letters, digits, hyphens and dots, no spaces or line breaks)"
        ));
    }
    Ok(())
}

/// Whether `host` names this machine without a lookup: `localhost` or a loopback address.
/// Plaintext SMTP is allowed only to such a host, so the rule is the same whether or not DNS
/// answers (`check` never resolves names).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case("localhost.")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

impl Extensions {
    /// Whether AUTH offers `mechanism` (upper case).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
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

    async fn replies(server_bytes: &[u8]) -> Vec<Result<Reply, String>> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let bytes = server_bytes.to_vec();
        tokio::spawn(async move {
            let _ = server.write_all(&bytes).await;
        });
        let mut conn = Conn::new(client, Duration::from_secs(5));
        let mut out = Vec::new();
        loop {
            match conn.read_reply().await {
                Ok(r) => out.push(Ok(r)),
                Err(Error::Closed) => return out,
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
    async fn a_bare_lf_ends_a_line_too() {
        let got = replies(b"250-a\n250 b\n").await;
        assert_eq!(got[0].as_ref().unwrap().lines, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn hostile_replies_are_errors() {
        for bad in [
            &b"hello there\r\n"[..],
            b"250-a\r\n354 b\r\n",
            b"25\r\n",
            b"2500 x\r\n",
            b"650 beyond the code classes\r\n",
            b"150 not an SMTP reply class\r\n",
        ] {
            let got = replies(bad).await;
            assert!(
                got[0].as_ref().unwrap_err().contains("malformed"),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_line_that_never_ends_is_cut_at_the_line_limit() {
        let endless = [b"250-".as_slice(), &[b'x'; MAX_LINE * 3]].concat();
        let got = replies(&endless).await;
        let err = got[0].as_ref().unwrap_err();
        assert!(err.contains("longer than 4096 bytes"), "{err}");
    }

    #[tokio::test]
    async fn a_long_line_is_cut_even_when_its_end_arrives_in_the_same_read() {
        // Found by the property test: the line end was searched in the whole buffer.
        let mut bytes = b"250-".to_vec();
        bytes.extend_from_slice(&[b'x'; MAX_LINE + 10]);
        bytes.extend_from_slice(b"\r\n250 ok\r\n");
        let got = replies(&bytes).await;
        let err = got[0].as_ref().unwrap_err();
        assert!(err.contains("longer than 4096 bytes"), "{err}");
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_read() {
        let mut line = b"250 ".to_vec();
        line.resize(MAX_LINE - 2, b'y');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_LINE);
        let got = replies(&line).await;
        assert_eq!(got[0].as_ref().unwrap().lines[0].len(), MAX_LINE - 6);
    }

    #[tokio::test]
    async fn replies_are_cut_at_the_line_count_and_byte_limits() {
        let many = "250-x\r\n".repeat(MAX_LINES + 5);
        let got = replies(many.as_bytes()).await;
        assert!(
            got[0].as_ref().unwrap_err().contains("more than 200 lines"),
            "{got:?}"
        );
        let long_line = format!("250-{}\r\n", "z".repeat(MAX_LINE - 10));
        let big = long_line.repeat(MAX_REPLY / long_line.len() + 2);
        let got = replies(big.as_bytes()).await;
        assert!(
            got[0]
                .as_ref()
                .unwrap_err()
                .contains("longer than 65536 bytes"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn pipelined_replies_arriving_together_are_read_one_by_one() {
        let mut batch = String::new();
        for i in 0..500 {
            batch.push_str(&format!("250 2.1.0 reply {i}\r\n"));
        }
        let got = replies(batch.as_bytes()).await;
        assert_eq!(got.len(), 500);
        assert_eq!(got[499].as_ref().unwrap().lines[0], "2.1.0 reply 499");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (client, _server) = tokio::io::duplex(1024);
        let mut conn = Conn::new(client, Duration::from_millis(50));
        assert!(matches!(conn.read_reply().await, Err(Error::Timeout(_))));
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
        assert!(matches!(conn.into_inner(), Err(Error::Injected)));
    }

    #[tokio::test]
    async fn a_clean_stream_is_handed_over() {
        let (client, mut server) = tokio::io::duplex(1024);
        server.write_all(b"220 go ahead\r\n").await.unwrap();
        let mut conn = Conn::new(client, Duration::from_secs(5));
        assert_eq!(conn.read_reply().await.unwrap().code, 220);
        assert!(conn.into_inner().is_ok());
    }

    #[test]
    fn hello_names_are_domains_or_address_literals() {
        for ok in [
            "mail.example.com",
            "mail.example.com.",
            "a-b.c",
            "localhost",
            "192.0.2.7",
            "[192.0.2.7]",
            "[IPv6:2001:db8::1]",
            "2001:db8::1",
        ] {
            assert!(check_hello_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "mail example.com",
            "evil\r\nMAIL FROM:<x@y>",
            "a..b",
            "-a.b",
            "a-.b",
            "[300.1.1.1]",
            "[IPv6:zz]",
            "a_b.c",
            &"a".repeat(64),
        ] {
            assert!(check_hello_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_hosts_need_no_lookup() {
        for yes in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.5.6.7",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in ["smtp.example.com", "10.0.0.1", "localhost.example.com", ""] {
            assert!(!is_loopback_host(no), "{no}");
        }
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
        assert!(e.offers_auth("LOGIN") && !e.offers_auth("XOAUTH2"));
        assert_eq!(e.size, Some(Some(10_240_000)));
        assert_eq!(e.raw.len(), 11);
        let bare = parse_ehlo(&Reply {
            code: 250,
            lines: vec!["mx".into(), "SIZE".into()],
        });
        assert_eq!(bare.size, Some(None));
        assert!(!bare.starttls && bare.auth.is_empty());
    }

    /// Reads every reply `bytes` holds, as the session would, and checks the bounds on each.
    fn read_all(bytes: Vec<u8>) -> Vec<Result<Reply, String>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, mut server) = tokio::io::duplex(8 * 1024);
            tokio::spawn(async move {
                let _ = server.write_all(&bytes).await;
            });
            let mut conn = Conn::new(client, Duration::from_secs(5));
            let mut out = Vec::new();
            loop {
                match conn.read_reply().await {
                    Ok(reply) => out.push(Ok(reply)),
                    Err(Error::Closed) => return out,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
                // The fixed buffer never grows, whatever was read.
                assert_eq!(conn.buf.len(), BUFFER);
            }
        })
    }

    /// A line's text is at most what the wire held (lossy UTF-8 can triple an invalid byte).
    fn within_bounds(reply: &Reply) -> bool {
        reply.lines.len() <= MAX_LINES
            && reply.lines.iter().all(|l| l.len() <= 3 * MAX_LINE)
            && reply.lines.iter().map(String::len).sum::<usize>() <= 3 * MAX_REPLY
            && (200..600).contains(&reply.code)
    }

    /// Pieces SMTP replies are made of, so that random streams reach the multi-line, bare-code
    /// and bound paths rather than stopping at the first byte.
    fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            Just(b"250-".to_vec()),
            Just(b"250 ".to_vec()),
            Just(b"354 go\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            (0usize..6000).prop_map(|n| vec![b'x'; n]),
            (200u16..600).prop_map(|c| format!("{c}-a\r\n").into_bytes()),
        ]
    }

    proptest::proptest! {
        // A fixed number of cases keeps CI time flat.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_or_pass_the_bounds(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000),
        ) {
            for reply in read_all(bytes).iter().flatten() {
                proptest::prop_assert!(within_bounds(reply), "{reply:?}");
            }
        }

        #[test]
        fn reply_shaped_streams_never_panic_or_pass_the_bounds(
            pieces in proptest::collection::vec(piece(), 0..200),
        ) {
            for reply in read_all(pieces.concat()).iter().flatten() {
                proptest::prop_assert!(within_bounds(reply), "{reply:?}");
            }
        }
    }
}
