//! Background provider resolution against send throughput (issue 14): a campaign of
//! `MAILROOM_BENCH_DOMAINS` recipients (default 100,000), each at a distinct domain, sent through
//! the real pipeline (4 connections, ledger, journal) to Postfix's `smtp-sink`, alternating runs
//! without and with MX resolution of every domain in the background. The resolver is a stand-in
//! for the DNS client (which the `[dns] resolver` work plugs in): each lookup answers after
//! `MAILROOM_BENCH_MX_MS` milliseconds (default 2, a loopback resolver's order of magnitude), at
//! most 16 in flight, as `[providers]` would run them; its answers go through the same path to
//! the ledger as real ones.
//!
//! Reported per run: the delivery throughput (messages / delivery time, as `mailroom send`
//! reports it) and how many domains were resolved and cached before the run ended.
//!
//! With `MAILROOM_BENCH_DNS=HOST:PORT` the lookups go instead through mailroom's real DNS client
//! (`Lookup::dns`: `dns::BulkMx` on the idle-priority lookup thread) to that server, as
//! `[dns] resolver` makes `send` do: `scripts/bench-providers-dns.sh` starts an unbound on
//! loopback with an MX record for each of the 100,000 domains and runs this bench against it.
//!
//! Reported at the end: the median over rounds of each round's with/without ratio (the pair of
//! a round runs back to back, in alternating order).
//!
//! Run: `MAILROOM_TEST_SMTP_SINK_PORT=2626 cargo bench --bench providers` (with the CI rig's
//! smtp-sink; `MAILROOM_BENCH_ROUNDS` pairs of runs, default 5).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailroom::pipeline::{self, Lookup, Options, Outbound, Outgoing, RateOptions, Render};
use mailroom::provider::resolve::{LookupFuture, MxAnswer, MxLookup};
use mailroom::shutdown::Shutdown;
use mailroom::store::{DueRow, NewRecipient};
use mailroom::transport::{Security, Settings, Transport};

/// Answers every MX lookup after a fixed delay: Google for even domains, Microsoft 365 for odd.
struct SlowTable {
    delay: Duration,
}

impl MxLookup for SlowTable {
    fn mx<'a>(&'a self, domain: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            let even = domain.bytes().rfind(u8::is_ascii_digit).unwrap_or(b'0') % 2 == 0;
            let host = if even {
                "aspmx.l.google.com".to_owned()
            } else {
                format!("{}.mail.protection.outlook.com", domain.replace('.', "-"))
            };
            Ok(MxAnswer {
                exchanges: vec![(10, host)],
                ttl: Duration::from_secs(3600),
            })
        })
    }
}

/// A small fixed message per recipient (the campaign renderer is measured elsewhere).
struct Plain;

impl Render for Plain {
    fn render(&self, row: &DueRow) -> Result<Outgoing, String> {
        Ok(Outgoing {
            envelope_from: "news@sender.example".into(),
            envelope_to: row.email.clone(),
            message_id: format!("{}@sender.example", row.token),
            bytes: format!(
                "From: news@sender.example\r\nTo: {}\r\nSubject: bench\r\nMessage-ID: <{}@sender.example>\r\n\r\n{}\r\n",
                row.email,
                row.token,
                "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n".repeat(40)
            )
            .into_bytes(),
        })
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One send of the whole campaign into a fresh ledger; (messages per second, domains cached).
async fn run(path: &Path, n: usize, port: u16, lookup: Option<Lookup>) -> (f64, usize) {
    let rows = (0..n).map(|i| {
        Ok::<_, String>(NewRecipient {
            email: format!("reader@d{i}.example"),
            name: None,
            line: i as u64 + 2,
            token: format!("t{i:015}"),
            fields: "{}".into(),
        })
    });
    let prepared = pipeline::prepare(path, "bench", rows, "127.0.0.1", "none").unwrap();
    let settings = Settings {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        oauth: None,
        ca_file: None,
        hello_name: Some("bench.example".into()),
        fallback_ports: vec![],
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(30),
        messages_per_connection: 1000,
    };
    let options = Options {
        connections: 4,
        rate: RateOptions {
            per_second: Some(1_000_000.0),
            ..RateOptions::default()
        },
        providers: lookup,
        ..Options::default()
    };
    let started = std::time::Instant::now();
    let summary = prepared
        .send(Outbound {
            relays: Transport::new(settings).await.unwrap().into(),
            render: Arc::new(Plain),
            options,
            shutdown: Shutdown::new(),
            counters: Arc::new(pipeline::Counters::default()),
            events: None,
        })
        .await
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert_eq!(summary.accepted, n as u64, "{:?}", summary.end);
    let cached = mailroom::store::Reader::open(path)
        .unwrap()
        .cached_providers()
        .unwrap()
        .len();
    (n as f64 / took, cached)
}

fn main() {
    let Some(port) = std::env::var("MAILROOM_TEST_SMTP_SINK_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    else {
        eprintln!(
            "SKIPPED: set MAILROOM_TEST_SMTP_SINK_PORT to an smtp-sink (scripts/ci-servers.sh)"
        );
        return;
    };
    let n: usize = env("MAILROOM_BENCH_DOMAINS", 100_000);
    let delay = Duration::from_millis(env("MAILROOM_BENCH_MX_MS", 2));
    let rounds: usize = env("MAILROOM_BENCH_ROUNDS", 5).max(1);
    let dns: Option<std::net::SocketAddr> = std::env::var("MAILROOM_BENCH_DNS")
        .ok()
        .map(|a| a.parse().expect("MAILROOM_BENCH_DNS is HOST:PORT"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Each round is a pair measured back to back, in alternating order: the machine's speed
        // drifts between rounds (other builds share it), so pairs are compared, not best runs.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let mut pair = [0.0f64; 2];
        for resolve in order {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bench.db");
            let lookup = resolve.then(|| match &dns {
                Some(server) => Lookup::dns(
                    mailroom::dns::Resolver::open(Some(*server), mailroom::dns::DEFAULT_TIMEOUT)
                        .unwrap(),
                    true,
                ),
                None => Lookup {
                    resolver: Arc::new(SlowTable { delay }),
                    concurrency: 16,
                },
            });
            let (rate, cached) = runtime.block_on(run(&path, n, port, lookup));
            eprintln!(
                "round {round}: {} lookups: {rate:.0} msg/s, {cached} of {n} domains cached",
                if resolve { "with" } else { "without" }
            );
            pair[usize::from(resolve)] = rate;
            if resolve {
                with.push((rate, cached));
            } else {
                without.push(rate);
            }
        }
        let ratio = pair[1] / pair[0];
        eprintln!("round {round}: with / without = {ratio:.3}");
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let best_without = without.iter().copied().fold(0.0, f64::max);
    let best_with = with.iter().map(|(r, _)| *r).fold(0.0, f64::max);
    let cached = with.iter().map(|(_, c)| *c).min().unwrap_or(0);
    let resolver = dns.map_or_else(
        || format!("stand-in answering in {} ms", delay.as_millis()),
        |d| format!("DNS server {d}"),
    );
    println!(
        "domains={n} resolver=({resolver}) concurrency=16 rounds={rounds}: median of the rounds' with/without \
         ratios {median:.3} ({:+.1}%); best runs: without {best_without:.0} msg/s, with \
         {best_with:.0} msg/s; resolved and cached in every run with lookups: at least {cached} of {n}",
        (median - 1.0) * 100.0
    );
}
