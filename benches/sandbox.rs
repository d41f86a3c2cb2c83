//! Throughput of the sandbox SMTP server (issue 4), so that benchmarks of the sender against it
//! know the sandbox is not their bottleneck. Clients speak raw SMTP with PIPELINING over
//! loopback, `CONNECTIONS` sessions at once, `MESSAGES` messages of ~4 KB in total. Measured in
//! the same run:
//! - reference: the same client against a sink that reads lines and answers fixed replies
//!   (no parsing beyond "is this the final dot", no storage): the cost of the loopback and client;
//! - the sandbox in plaintext, storing every message in a Maildir (fsync per message, as a real
//!   delivery agent does);
//! - the sandbox with STARTTLS and AUTH (one handshake per connection).
//!
//! Run: `cargo bench --bench sandbox` (MAILROOM_BENCH_MESSAGES overrides the count).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common/sandbox.rs"]
mod client;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use client::{Client, dot_stuff};
use mailroom::sandbox::{self, SandboxConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const CONNECTIONS: usize = 4;

fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: News <news@example.com>\r\nTo: <reader@example.org>\r\nSubject: bench\r\nMessage-ID: <b@example.com>\r\n\r\n",
    );
    while m.len() < 4096 {
        m.push_str("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n");
    }
    m.into_bytes()
}

/// Answers like an SMTP server without looking at anything but the end of DATA.
async fn sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                write.write_all(b"220 sink\r\n").await.unwrap();
                // Replies to a pipelined batch go out in one write, as the sandbox does;
                // separate small writes would meet Nagle + delayed ACK and measure that instead.
                let mut out: Vec<u8> = Vec::new();
                let mut line = Vec::new();
                let mut in_data = false;
                loop {
                    line.clear();
                    if lines.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if in_data {
                        if line != b".\r\n" {
                            continue;
                        }
                        in_data = false;
                        b"250 2.0.0 ok\r\n"
                    } else if line.starts_with(b"DATA") {
                        in_data = true;
                        b"354 go\r\n"
                    } else if line.starts_with(b"QUIT") {
                        b"221 bye\r\n"
                    } else {
                        b"250 2.0.0 ok\r\n"
                    };
                    out.extend_from_slice(reply);
                    if lines.buffer().is_empty() {
                        if write.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
            });
        }
    });
    addr
}

/// One session: EHLO (STARTTLS + AUTH when `ca` is given), then `count` pipelined transactions.
async fn session(addr: SocketAddr, ca: Option<String>, count: usize, body: &[u8]) {
    let (mut c, greeting) = Client::connect(addr).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO bench.test").await.code, 250);
    if let Some(ca) = ca {
        c = c.starttls(&ca, "localhost").await.unwrap();
        assert_eq!(c.cmd("EHLO bench.test").await.code, 250);
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0bench\0bench");
        assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).await.code, 235);
    }
    let stuffed = dot_stuff(body);
    for i in 0..count {
        let mut batch =
            format!("MAIL FROM:<news@example.com>\r\nRCPT TO:<reader{i}@example.org>\r\nDATA\r\n")
                .into_bytes();
        c.send_raw(&batch).await;
        for _ in 0..3 {
            let r = c.reply().await.unwrap();
            assert!(r.code == 250 || r.code == 354, "{r:?}");
        }
        batch.clear();
        c.send_raw(&stuffed).await;
        assert_eq!(c.reply().await.unwrap().code, 250);
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

async fn measure(addr: SocketAddr, ca: Option<String>, messages: usize) -> Duration {
    let body = message();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (ca, body) = (ca.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            session(addr, ca, messages / CONNECTIONS, &body).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    client::install_provider();
    let messages: usize = std::env::var("MAILROOM_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let messages = messages / CONNECTIONS * CONNECTIONS;
    let dir = tempfile::tempdir().unwrap();

    let reference = measure(sink().await, None, messages).await;

    let plain = sandbox::start(SandboxConfig::new(dir.path().join("plain")).tls(false))
        .await
        .unwrap();
    let plain_time = measure(plain.addr(), None, messages).await;
    assert_eq!(
        sandbox::maildir::list(plain.maildir()).unwrap().len(),
        messages
    );

    let tls = sandbox::start(SandboxConfig::new(dir.path().join("tls")).auth("bench", "bench"))
        .await
        .unwrap();
    let tls_time = measure(tls.addr(), Some(tls.ca_pem().to_owned()), messages).await;
    assert_eq!(
        sandbox::maildir::list(tls.maildir()).unwrap().len(),
        messages
    );

    // Where the sandbox's time goes: the same number of Maildir deliveries alone.
    let body = message();
    let started = Instant::now();
    for _ in 0..messages {
        sandbox::maildir::deliver(&dir.path().join("alone"), &body).unwrap();
    }
    let maildir_alone = started.elapsed();

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("{messages} messages of ~4 KB over {CONNECTIONS} connections, loopback");
    println!(
        "  reference sink (no parsing, no storage) {:>8.0} msg/s",
        rate(reference)
    );
    println!(
        "  sandbox, plaintext, Maildir + fsync       {:>8.0} msg/s  ({:.2}x the reference time)",
        rate(plain_time),
        plain_time.as_secs_f64() / reference.as_secs_f64()
    );
    println!(
        "  sandbox, STARTTLS + AUTH, Maildir + fsync {:>8.0} msg/s  ({:.2}x the reference time)",
        rate(tls_time),
        tls_time.as_secs_f64() / reference.as_secs_f64()
    );
    println!(
        "  Maildir deliver alone (one thread)        {:>8.0} msg/s  ({:.2}x the reference time)",
        rate(maildir_alone),
        maildir_alone.as_secs_f64() / reference.as_secs_f64()
    );
}
