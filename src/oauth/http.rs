//! The one HTTP request mailroom makes: a form POST to an OAuth2 token endpoint, over TLS
//! verified with the same configuration as every relay connection (plain HTTP only to a
//! loopback address, for tests and local token brokers).
//!
//! Everything read from the endpoint is bounded: the status line and headers by
//! [`MAX_HEAD`], the body by [`MAX_BODY`], the whole exchange by the caller's deadline. It
//! speaks just enough HTTP/1.1 for a token response (`Content-Length`, chunked, or read to
//! close; `Connection: close` always). It must not follow redirects (a token endpoint that
//! redirects is misconfigured, and following one would carry the refresh token elsewhere),
//! keep connections, or log a request or response body.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;

/// Status line plus headers.
pub const MAX_HEAD: usize = 64 * 1024;
/// A token response is a few kilobytes; Microsoft's, with an id token, under 10 KiB.
pub const MAX_BODY: usize = 1024 * 1024;

/// A parsed `http://` or `https://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with "/".
    pub target: String,
}

impl Endpoint {
    /// Parses an endpoint URL. `http` is accepted only when the host is a loopback address or
    /// `localhost`: a refresh token never crosses a network in clear text.
    ///
    /// # Errors
    /// A description of what is wrong with the URL (it holds no secret, so it may be echoed).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("it must start with https://".into());
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
            Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err("it must not carry a user name or password".into());
        }
        if target.contains('#') || target.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err("its path has a fragment, a space or a control character".into());
        }
        let (host, port) = split_host_port(authority, if https { 443 } else { 80 })?;
        if !https && !is_loopback(&host) {
            return Err(format!(
                "plain http is allowed only to a loopback address, and {host} is not one; use https://"
            ));
        }
        Ok(Endpoint {
            https,
            host,
            port,
            target,
        })
    }
}

fn split_host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address in it has no closing ]")?;
        (inside.to_owned(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err("its host is missing or not a host name".into());
    }
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("its port is not a number from 1 to 65535")?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes `value` for `application/x-www-form-urlencoded` (everything but the RFC
/// 3986 unreserved characters).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    // Sized for the worst case (every byte escaped) so that it never moves: the values are
    // secrets, and a move would free a copy of them.
    let most = pairs.iter().map(|(k, v)| 3 * (k.len() + v.len()) + 2).sum();
    let mut out = String::with_capacity(most);
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, part) in [key, value].into_iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in part.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// POSTs `body` as a form to `endpoint` and returns the status code and body.
///
/// # Errors
/// A description of the failure (connection, TLS, deadline, malformed or oversized response);
/// it never contains the request body.
pub async fn post_form(
    endpoint: &Endpoint,
    body: &str,
    tls: &Arc<ClientConfig>,
    deadline: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", endpoint.host, endpoint.port))?;
        let _ = tcp.set_nodelay(true);
        if endpoint.https {
            let name = crate::tls::server_name(&endpoint.host)?;
            let stream = TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| crate::tls::explain(&e.to_string()))?;
            exchange(stream, endpoint, body).await
        } else {
            exchange(tcp, endpoint, body).await
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", deadline.as_secs()))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    endpoint: &Endpoint,
    body: &str,
) -> Result<(u16, Vec<u8>), String> {
    let host = if endpoint.host.contains(':') {
        format!("[{}]", endpoint.host)
    } else {
        endpoint.host.clone()
    };
    // Ends with the form, which carries secrets: overwritten when dropped.
    let request = zeroize::Zeroizing::new(format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mailroom/{}\r\n\
         Accept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        endpoint.target,
        env!("CARGO_PKG_VERSION"),
        body.len()
    ));
    let io = |e: std::io::Error| format!("the connection failed: {e}");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut reader = Reader::new(stream);
    let head = reader.head().await?;
    let (status, length, chunked) = parse_head(&head)?;
    let body = if chunked {
        reader.chunked().await?
    } else if let Some(length) = length {
        if length > MAX_BODY {
            return Err(format!("the response body is too large ({length} bytes)"));
        }
        reader.exact(length).await?
    } else {
        reader.until_close().await?
    };
    Ok((status, body))
}

/// Status code, Content-Length, and whether the body is chunked.
fn parse_head(head: &str) -> Result<(u16, Option<usize>, bool), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status.filter(|_| version.starts_with("HTTP/1.")) else {
        return Err("the answer is not an HTTP/1.x response".into());
    };
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| "the response has a malformed Content-Length")?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Ok((status, length, chunked))
}

/// Reads an HTTP response with every read bounded.
struct Reader<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Reader<S> {
    fn new(stream: S) -> Self {
        Reader {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; false at the end of the stream.
    async fn fill(&mut self, limit: usize) -> Result<bool, String> {
        if self.buf.len() >= limit {
            return Err("the response is too large".into());
        }
        let mut chunk = [0u8; 8192];
        let room = (limit - self.buf.len()).min(chunk.len());
        let n = self
            .stream
            .read(&mut chunk[..room])
            .await
            .map_err(|e| format!("the connection failed: {e}"))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The status line and headers (without the blank line), consumed from the buffer.
    async fn head(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 4);
                return Ok(head);
            }
            if !self.fill(MAX_HEAD).await? {
                return Err("the connection closed before the response headers ended".into());
            }
        }
    }

    async fn exact(&mut self, length: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < length {
            if !self.fill(length).await? {
                return Err("the connection closed inside the response body".into());
            }
        }
        self.buf.truncate(length);
        Ok(std::mem::take(&mut self.buf))
    }

    async fn until_close(&mut self) -> Result<Vec<u8>, String> {
        while self.fill(MAX_BODY).await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// A line ending in CRLF, consumed (for chunk sizes and trailers).
    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            if self.buf.len() > 1024 {
                return Err("a chunk size line is too long".into());
            }
            if !self.fill(MAX_BODY).await? {
                return Err("the connection closed inside a chunked body".into());
            }
        }
    }

    async fn chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| "the response has a malformed chunk size")?;
            if size == 0 {
                // Trailers until the blank line; their content is not needed.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err("the response body is too large".into());
            }
            while self.buf.len() < size + 2 {
                if !self.fill(MAX_BODY + 2).await? {
                    return Err("the connection closed inside a chunk".into());
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_plain_http_is_loopback_only() {
        let e = Endpoint::parse("https://login.microsoftonline.com/common/oauth2/v2.0/token")
            .expect("valid");
        assert_eq!(
            (e.https, e.host.as_str(), e.port, e.target.as_str()),
            (
                true,
                "login.microsoftonline.com",
                443,
                "/common/oauth2/v2.0/token"
            )
        );
        let e = Endpoint::parse("http://127.0.0.1:8080?x=1").expect("loopback http");
        assert_eq!((e.port, e.target.as_str()), (8080, "/?x=1"));
        let e = Endpoint::parse("http://[::1]:9/t").expect("v6 loopback");
        assert_eq!(e.host, "::1");
        for bad in [
            "http://oauth2.googleapis.com/token",
            "ftp://x/",
            "https://user:pw@host/",
            "https://host:0/",
            "https://host:99999/",
            "https:///token",
            "https://host/a b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms_encode_everything_but_unreserved() {
        assert_eq!(
            form_encode(&[("grant_type", "refresh_token"), ("scope", "a b/c&d=e+")]),
            "grant_type=refresh_token&scope=a%20b%2Fc%26d%3De%2B"
        );
    }

    async fn respond(raw: &'static [u8]) -> Result<(u16, Vec<u8>), String> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 4096];
            let _ = server.read(&mut sink).await;
            let _ = server.write_all(raw).await;
        });
        let endpoint = Endpoint::parse("http://127.0.0.1/t").expect("valid");
        exchange(client, &endpoint, "a=b").await
    }

    #[tokio::test]
    async fn bodies_by_length_by_chunks_and_to_close() {
        let (s, b) = respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .expect("length");
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        let (s, b) = respond(
            b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await
        .expect("chunked");
        assert_eq!((s, b.as_slice()), (400, b"{\"a\":1}".as_slice()));
        let (_, b) = respond(b"HTTP/1.0 200 OK\r\n\r\nabc").await.expect("close");
        assert_eq!(b, b"abc");
    }

    #[tokio::test]
    async fn malformed_and_oversized_responses_are_errors() {
        assert!(respond(b"SMTP 220 hello\r\n\r\n").await.is_err());
        assert!(
            respond(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n")
                .await
                .is_err()
        );
        assert!(
            respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .await
                .is_err()
        );
        assert!(
            respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .await
                .is_err()
        );
    }
}
