//! Scale benchmark for reports and the dashboard (issue 7): builds a ledger with 1,000,000
//! recipients and 1,500,000 attempts through `store::open` (so the 0004 counter triggers run
//! during the fill, as they do during a real send), then times:
//! - references in the same run: `SELECT count(*)` over recipients and attempts, and the
//!   GROUP BY over recipients that the counters replace;
//! - opening the dashboard (open + first snapshot) and each refresh (snapshot on a kept
//!   connection), plus drill-downs;
//! - `mailroom report --format json` and `--format csv` as processes.
//!
//! Run: `cargo bench --bench ledger_scale` (MAILROOM_BENCH_RECIPIENTS overrides the size).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailroom::report::{Focus, Ledger, Source};
use rusqlite::params;

const T0: i64 = 1_772_355_600_000;

fn main() {
    let recipients: u64 = std::env::var("MAILROOM_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    // MAILROOM_BENCH_DB=path keeps the ledger there (and reuses it when it exists), to iterate
    // on queries without refilling.
    let path = std::env::var_os("MAILROOM_BENCH_DB")
        .map_or_else(|| dir.path().join("bench.db"), std::path::PathBuf::from);

    let started = Instant::now();
    let (attempts, events) = if path.exists() {
        let conn = mailroom_test_conn(&path);
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64;
        (
            count("SELECT count(*) FROM attempts"),
            count("SELECT count(*) FROM events"),
        )
    } else {
        fill(&path, recipients, true)
    };
    let fill_time = started.elapsed();
    let size = std::fs::metadata(&path).unwrap().len()
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    println!(
        "ledger: {recipients} recipients, {attempts} attempts, {events} events, {:.0} MB; \
         fill (one transaction, triggers on) {:.1} s",
        size as f64 / 1e6,
        fill_time.as_secs_f64()
    );

    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let reference = |sql: &str| {
        let t = time(5, || {
            let _: i64 = conn
                .query_row(&format!("SELECT count(*) FROM ({sql})"), [], |r| r.get(0))
                .unwrap();
        });
        println!("reference  {sql}\n           {:<58} {}", "", show(&t));
        median(&t)
    };
    let scan = reference("SELECT count(*) FROM recipients");
    reference("SELECT count(*) FROM attempts");
    let group_by = reference(
        "SELECT domain, state, count(*) FROM recipients WHERE campaign_id = 1 \
         GROUP BY domain, state",
    );
    let csv_reference = time(3, || {
        let mut stmt = conn
            .prepare(
                "SELECT email, state, last_code, last_enhanced, last_reply, attempts, \
                 last_attempt_at, relay_accepted FROM recipients WHERE +campaign_id = 1 \
                 ORDER BY id",
            )
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut bytes = 0usize;
        while let Some(row) = rows.next().unwrap() {
            for i in 0..8 {
                bytes += match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => t.len(),
                    _ => 8,
                };
            }
        }
        assert!(bytes > 0);
    });
    println!(
        "reference  read every CSV column of every recipient (rusqlite, no output)\n           {:<58} {}",
        "",
        show(&csv_reference)
    );
    drop(conn);

    let open = time(5, || {
        let ledger = Ledger::open(&path).unwrap();
        mailroom::tui::snapshot(&ledger, Some("bench"), None).unwrap();
    });
    println!(
        "dashboard  open + first snapshot                                    {}",
        show(&open)
    );

    let ledger = Ledger::open(&path).unwrap();
    let refresh = time(20, || {
        let s = mailroom::tui::snapshot(&ledger, Some("bench"), None).unwrap();
        assert_eq!(s.report.unwrap().totals.recipients, recipients);
    });
    println!(
        "dashboard  refresh (kept connection)                                {}",
        show(&refresh)
    );

    let gmail = Focus::Domain("gmail.test".into());
    let refresh_drill = time(10, || {
        let s = mailroom::tui::snapshot(&ledger, Some("bench"), Some(&gmail)).unwrap();
        assert!(!s.drill.unwrap().entries.is_empty());
    });
    println!(
        "dashboard  refresh with the gmail.test drill-down open               {}",
        show(&refresh_drill)
    );

    let bench = ledger.find_campaign(Some("bench")).unwrap();
    // A recipient with a greylisting deferral and a final outcome, for the single-recipient view.
    let someone: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT email FROM recipients WHERE id >= ?1 AND attempts = 2 ORDER BY id LIMIT 1",
            [(recipients * 7 / 9) as i64],
            |r| r.get(0),
        )
        .unwrap();
    for (label, focus) in [
        (
            "drill-down domain gmail.test (largest)",
            Focus::Domain("gmail.test".into()),
        ),
        (
            "drill-down domain d4321.example (small)",
            Focus::Domain("d4321.example".into()),
        ),
        (
            "drill-down reason 4.7.1 (every deferral)",
            Focus::Reason {
                source: Source::Attempt,
                status: "4.7.1".into(),
            },
        ),
        (
            "drill-down reason 5.1.1 DSNs",
            Focus::Reason {
                source: Source::Feedback,
                status: "5.1.1".into(),
            },
        ),
        (
            "drill-down one recipient",
            Focus::Recipient(someone.clone()),
        ),
    ] {
        let t = time(10, || {
            let d = ledger.drill_down(bench.id, &focus).unwrap();
            assert!(!d.entries.is_empty(), "{label}");
        });
        println!("dashboard  {label:<58} {}", show(&t));
    }
    drop(ledger);

    // What the counters cost writers: the same fill (100,000 recipients) with and without the
    // 0004 triggers.
    for triggers in [false, true] {
        let t = time(1, || {
            let small = tempfile::tempdir().unwrap();
            fill(&small.path().join("w.db"), 100_000, triggers);
        });
        println!(
            "writes     fill 100,000 recipients + attempts, counter triggers {:<5}   {}",
            if triggers { "on" } else { "off" },
            show(&t)
        );
    }

    let exe = env!("CARGO_BIN_EXE_mailroom");
    for format in ["json", "text", "csv"] {
        let t = time(3, || {
            let status = Command::new(exe)
                .args(["report", "--db"])
                .arg(&path)
                .args(["--campaign", "bench", "--format", format])
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        });
        println!(
            "process    mailroom report --format {format:<36} {}",
            show(&t)
        );
    }
    println!(
        "ratios     refresh / count(*) = {:.2}; refresh / GROUP BY = {:.3}; open / GROUP BY = {:.3}",
        median(&refresh).as_secs_f64() / scan.as_secs_f64(),
        median(&refresh).as_secs_f64() / group_by.as_secs_f64(),
        median(&open).as_secs_f64() / group_by.as_secs_f64()
    );
}

fn time(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn median(times: &[Duration]) -> Duration {
    let mut v = times.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn show(times: &[Duration]) -> String {
    let max = times.iter().max().copied().unwrap_or_default();
    format!(
        "median {:>8.1} ms  max {:>8.1} ms  (n={})",
        median(times).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        times.len()
    )
}

/// A cheap deterministic generator (xorshift), so every run builds the same ledger.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BIG: [&str; 20] = [
    "gmail.test",
    "yahoo.test",
    "outlook.test",
    "hotmail.test",
    "icloud.test",
    "aol.test",
    "gmx.test",
    "web.test",
    "orange.test",
    "free.test",
    "proton.test",
    "zoho.test",
    "mail.test",
    "yandex.test",
    "comcast.test",
    "att.test",
    "live.test",
    "msn.test",
    "qq.test",
    "163.test",
];

/// Fills the ledger the way a long send would leave it: returns (attempts, events).
fn fill(path: &Path, recipients: u64, triggers: bool) -> (u64, u64) {
    let mut conn = mailroom_test_conn(path);
    if !triggers {
        conn.execute_batch(
            "DROP TRIGGER report_counts_insert; DROP TRIGGER report_counts_update; \
             DROP TRIGGER report_counts_delete; DROP TRIGGER report_attempts_insert; \
             DROP TRIGGER report_events_insert;",
        )
        .unwrap();
    }
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO campaigns (id, name, created_at) VALUES (1, 'bench', ?1), (2, 'small', ?1)",
        [T0],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO runs (campaign_id, started_at, finished_at, host, port) \
         VALUES (1, ?1, NULL, 'relay.test', 587)",
        [T0],
    )
    .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut attempts, mut events) = (0u64, 0u64);
    {
        let mut rcpt = tx
            .prepare(
                "INSERT INTO recipients (id, campaign_id, email, line, token, fields, state, \
                 attempts, last_attempt_at, last_code, last_enhanced, last_reply, \
                 relay_accepted) VALUES (?1, ?2, ?3, ?4, ?5, '{}', ?6, ?7, ?8, ?9, ?10, ?11, \
                 ?12)",
            )
            .unwrap();
        let mut att = tx
            .prepare(
                "INSERT INTO attempts (recipient_id, run_id, at, port, step, code, enhanced, \
                 reply, outcome) VALUES (?1, 1, ?2, 587, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        let mut ev = tx
            .prepare(
                "INSERT INTO events (recipient_id, at, kind, action, status, diagnostic, \
                 remote_mta, source, fingerprint) VALUES (?1, ?2, ?3, 'failed', ?4, ?5, \
                 'mx.test', 'maildir', ?6)",
            )
            .unwrap();
        let small = 10_000;
        for id in 1..=(recipients + small) as i64 {
            let campaign = if id <= recipients as i64 { 1 } else { 2 };
            // 70 % at twenty big providers, 30 % over a long tail of 5,000 domains.
            let domain = if rng.below(10) < 7 {
                BIG[rng.below(20) as usize].to_owned()
            } else {
                format!("d{}.example", rng.below(5_000))
            };
            let email = format!("user{id}@{domain}");
            // Ten sends a second over the run.
            let at = T0 + id * 100;
            let roll = rng.below(1000);
            // Half the recipients were greylisted once before the outcome below.
            let greylisted = roll >= 10 && rng.below(100) < 52;
            let (state, step, code, enhanced, reply): (
                &str,
                &str,
                Option<i64>,
                Option<&str>,
                &str,
            ) = match roll {
                0..=9 => ("pending", "", None, None, ""),
                10..=39 => (
                    "bounced_hard",
                    "rcpt",
                    Some(550),
                    Some("5.1.1"),
                    "550 5.1.1 <user>: Recipient address rejected: User unknown",
                ),
                40..=49 => (
                    "bounced_soft",
                    "data",
                    Some(552),
                    Some("5.2.2"),
                    "552 5.2.2 Mailbox full",
                ),
                50..=79 => (
                    "deferred",
                    "rcpt",
                    Some(451),
                    Some("4.7.1"),
                    "451 4.7.1 Greylisted, try again later",
                ),
                80..=89 => (
                    "unknown",
                    "message",
                    None,
                    None,
                    "connection lost after end of data",
                ),
                90..=94 => ("failed", "connect", None, None, "connection refused"),
                95..=99 => ("suppressed", "", None, None, ""),
                _ => (
                    "accepted",
                    "message",
                    Some(250),
                    Some("2.0.0"),
                    "250 2.0.0 Ok: queued",
                ),
            };
            let tries = if step.is_empty() {
                0
            } else {
                1 + i64::from(greylisted)
            };
            let accepted = state == "accepted";
            // Of the relay-accepted ones, 2 % bounce later by DSN and 0.05 % complain.
            let later = if accepted {
                match rng.below(10_000) {
                    0..=199 => Some(("hard", "bounced_hard", Some("5.1.1"))),
                    200..=204 => Some(("complaint", "complained", None)),
                    _ => None,
                }
            } else {
                None
            };
            rcpt.execute(params![
                id,
                campaign,
                email,
                id + 1,
                format!("t{id:015}"),
                later.map_or(state, |l| l.1),
                tries,
                (tries > 0).then_some(at),
                code,
                enhanced,
                (!reply.is_empty()).then_some(reply),
                accepted
            ])
            .unwrap();
            if greylisted && tries > 1 {
                att.execute(params![
                    id,
                    at - 1_800_000,
                    "rcpt",
                    451,
                    "4.7.1",
                    "451 4.7.1 Greylisted, try again later",
                    "deferred"
                ])
                .unwrap();
                attempts += 1;
            }
            if tries > 0 {
                att.execute(params![id, at, step, code, enhanced, reply, state])
                    .unwrap();
                attempts += 1;
            }
            if let Some((kind, _, status)) = later {
                ev.execute(params![
                    id,
                    at + 3_600_000,
                    kind,
                    status,
                    "smtp; 550 5.1.1 user unknown",
                    format!("fp{id}")
                ])
                .unwrap();
                events += 1;
            }
        }
    }
    tx.commit().unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    (attempts, events)
}

/// The ledger at `path`, created and migrated by mailroom, as a raw connection for seeding and
/// inspecting it in tests (mailroom itself never hands out its connection).
#[allow(dead_code)]
fn mailroom_test_conn(path: &std::path::Path) -> rusqlite::Connection {
    drop(mailroom::store::open(path).unwrap());
    rusqlite::Connection::open(path).unwrap()
}
