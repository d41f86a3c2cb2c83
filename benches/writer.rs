//! The ledger writer's cost per message: what a send asks of it for every recipient (a claim in
//! a block, then the outcome), through the real `store::Writer` thread on a real SQLite file,
//! against the least SQL that could keep the same facts (a bare table updated twice and a log
//! row appended, same batches, same pragmas, no indexes or triggers) in the same run.
//!
//! Run: `cargo bench --bench writer` (`MAILROOM_BENCH_N` recipients, default 50,000;
//! `MAILROOM_BENCH_ROUNDS` alternating rounds, default 3; the best of each is reported).

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use mailroom::model::{AttemptOutcome, DeliveryState};
use mailroom::store::{self, AttemptRecord, Claim, NewRecipient, Outcome, Writer};

/// Rows claimed per block, as the dispatcher's largest block.
const BLOCK: usize = 128;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Messages per second through the writer: claim blocks, each followed by its outcomes.
fn writer(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let mut ledger = store::open(&path).unwrap();
    let campaign = ledger.ensure_campaign("bench").unwrap();
    let rows = (0..n).map(|i| {
        Ok::<_, String>(NewRecipient {
            email: format!("reader{i}@bench{}.example", i % 50),
            name: Some(format!("Reader {i}")),
            line: i as u64 + 2,
            token: format!("t{i:015}"),
            fields: r#"{"email":0,"name":1,"city":"City"}"#.into(),
        })
    });
    ledger.import(campaign, rows).unwrap();
    let run = ledger.start_run(campaign, "127.0.0.1", "none").unwrap();
    let (writer, thread) = Writer::spawn(ledger).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    runtime.block_on(drive(&writer, run, n));
    let took = started.elapsed().as_secs_f64();
    drop(writer);
    thread.join().unwrap();
    n as f64 / took
}

async fn drive(writer: &Writer, run: mailroom::model::RunId, n: usize) {
    let ids: Vec<i64> = (1..=n as i64).collect();
    for block in ids.chunks(BLOCK) {
        let claims = block
            .iter()
            .map(|&id| Claim {
                recipient_id: mailroom::model::RecipientId(id),
                run_id: run,
                expected_state: DeliveryState::Pending,
                expected_attempts: 0,
            })
            .collect();
        let results = writer.claim_many(claims).await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| matches!(r, store::ClaimResult::Claimed))
        );
        for &id in block {
            writer
                .record(Outcome {
                    recipient_id: mailroom::model::RecipientId(id),
                    run_id: run,
                    state: DeliveryState::Accepted,
                    retry_at: None,
                    attempt: AttemptRecord {
                        at: 1_780_000_000_000 + id,
                        port: Some(2525),
                        step: "message",
                        code: Some(250),
                        enhanced: Some("2.0.0".into()),
                        reply: Some("2.0.0 Ok: queued as ABC123".into()),
                        outcome: AttemptOutcome::Accepted,
                        diagnosis: None,
                        relay: None,
                    },
                })
                .await
                .unwrap();
        }
    }
    writer.sync().await.unwrap();
}

/// The same facts with the least SQL: one table of states, one log table, a commit per block
/// of claims and per block of outcomes.
fn bare(n: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("bare.db")).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE r (id INTEGER PRIMARY KEY, email TEXT, state TEXT, attempts INTEGER,
                         reply TEXT);
         CREATE TABLE a (id INTEGER PRIMARY KEY, r INTEGER, at INTEGER, code INTEGER, reply TEXT);",
    )
    .unwrap();
    {
        let tx = conn.unchecked_transaction().unwrap();
        let mut insert = tx
            .prepare("INSERT INTO r (id, email, state, attempts) VALUES (?1, ?2, 'pending', 0)")
            .unwrap();
        for i in 1..=n as i64 {
            insert
                .execute(rusqlite::params![i, format!("reader{i}@bench.example")])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    let started = Instant::now();
    let ids: Vec<i64> = (1..=n as i64).collect();
    for block in ids.chunks(BLOCK) {
        let tx = conn.unchecked_transaction().unwrap();
        for &id in block {
            tx.prepare_cached("UPDATE r SET state = 'sending' WHERE id = ?1 AND state = 'pending'")
                .unwrap()
                .execute([id])
                .unwrap();
        }
        tx.commit().unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        for &id in block {
            tx.prepare_cached(
                "UPDATE r SET state = 'accepted', attempts = attempts + 1, reply = ?2 WHERE id = ?1",
            )
            .unwrap()
            .execute(rusqlite::params![id, "2.0.0 Ok: queued as ABC123"])
            .unwrap();
            tx.prepare_cached("INSERT INTO a (r, at, code, reply) VALUES (?1, ?2, 250, ?3)")
                .unwrap()
                .execute(rusqlite::params![
                    id,
                    1_780_000_000_000 + id,
                    "2.0.0 Ok: queued as ABC123"
                ])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let n = env("MAILROOM_BENCH_N", 50_000);
    let rounds = env("MAILROOM_BENCH_ROUNDS", 3).max(1);
    let (mut best_writer, mut best_bare) = (0.0f64, 0.0f64);
    for round in 1..=rounds {
        // Alternating order: the machine's speed drifts between runs.
        let (w, b) = if round % 2 == 1 {
            let w = writer(n);
            (w, bare(n))
        } else {
            let b = bare(n);
            (writer(n), b)
        };
        eprintln!("round {round}: writer {w:.0} msg/s, bare SQL {b:.0} msg/s");
        best_writer = best_writer.max(w);
        best_bare = best_bare.max(b);
    }
    println!(
        "messages={n}: store::Writer {best_writer:.0} msg/s ({:.1} µs each), bare SQL {best_bare:.0} msg/s ({:.1} µs each), ratio {:.2}",
        1e6 / best_writer,
        1e6 / best_bare,
        best_writer / best_bare
    );
}
