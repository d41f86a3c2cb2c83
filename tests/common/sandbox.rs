//! A raw SMTP client for sandbox tests: plain TCP, STARTTLS and implicit TLS with tokio-rustls,
//! verifying the server against a given CA PEM. Speaks bytes, interprets nothing beyond reply
//! framing, so tests see exactly what the server sends.
//!
//! `common::sandbox` in the tests; benches/sandbox.rs includes this file by its path, so it
//! stands alone (its own lint allowances, no `super::`).
#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The bytes under a [`Client`]: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP stream, for STARTTLS; None once TLS runs.
    fn into_plain(self: Box<Self>) -> Option<TcpStream>;
}

impl Io for TcpStream {
    fn into_plain(self: Box<Self>) -> Option<TcpStream> {
        Some(*self)
    }
}

impl Io for tokio_rustls::client::TlsStream<TcpStream> {
    fn into_plain(self: Box<Self>) -> Option<TcpStream> {
        None
    }
}

/// One reply: code and the text of every line (after "ddd-" / "ddd ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

pub struct Client {
    io: BufReader<Box<dyn Io>>,
}

pub fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

impl Client {
    /// Connects in plaintext and returns the client with the greeting.
    pub async fn connect(addr: SocketAddr) -> (Client, Reply) {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut client = Client {
            io: BufReader::new(Box::new(stream)),
        };
        let greeting = client.reply().await.unwrap();
        (client, greeting)
    }

    /// Connects with TLS from the first byte (465 style), verifying against `ca_pem` as `name`.
    pub async fn connect_tls(
        addr: SocketAddr,
        ca_pem: &str,
        name: &str,
    ) -> io::Result<(Client, Reply)> {
        let stream = TcpStream::connect(addr).await?;
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let tls = connector(ca_pem).connect(server_name, stream).await?;
        let mut client = Client {
            io: BufReader::new(Box::new(tls)),
        };
        let greeting = client.reply().await?;
        Ok((client, greeting))
    }

    /// Reads one (possibly multi-line) reply; EOF before a full reply is an error.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.io.read_line(&mut line).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("closed after {lines:?}"),
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                )
            })?;
            lines.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.io.get_mut();
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
    }

    /// Sends one command line and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.unwrap()
    }

    /// True when the server has closed the connection (reads EOF, or a reset).
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.io.read_line(&mut line).await, Ok(0) | Err(_))
    }

    /// STARTTLS and the handshake, verifying against `ca_pem` as `name`.
    pub async fn starttls(self, ca_pem: &str, name: &str) -> io::Result<Client> {
        let mut this = self;
        let reply = this.cmd("STARTTLS").await;
        assert_eq!(reply.code, 220, "{reply:?}");
        let Some(stream) = this.io.into_inner().into_plain() else {
            panic!("already TLS");
        };
        let server_name = ServerName::try_from(name.to_owned()).unwrap();
        let tls = connector(ca_pem).connect(server_name, stream).await?;
        Ok(Client {
            io: BufReader::new(Box::new(tls)),
        })
    }

    /// MAIL, RCPT (each must be accepted), DATA and the dot-stuffed message; returns the final reply.
    pub async fn send_message(&mut self, from: &str, rcpts: &[&str], message: &str) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        for rcpt in rcpts {
            let reply = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            assert_eq!(reply.code, 250, "{rcpt}: {reply:?}");
        }
        assert_eq!(self.cmd("DATA").await.code, 354);
        self.send_raw(&dot_stuff(message.as_bytes())).await;
        self.reply().await.unwrap()
    }
}

/// CRLF-terminated message text → DATA payload: leading dots doubled, then "." line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The files of a Maildir's new/ and cur/, contents in delivery order.
pub fn maildir_messages(dir: &std::path::Path) -> Vec<Vec<u8>> {
    mailroom::sandbox::maildir::list(dir)
        .unwrap()
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// A message's bytes without the trace headers the sandbox prepends (Return-Path, Delivered-To).
pub fn strip_trace(bytes: &[u8]) -> &[u8] {
    let mut rest = bytes;
    while rest.starts_with(b"Return-Path:") || rest.starts_with(b"Delivered-To:") {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        rest = &rest[end..];
    }
    rest
}
