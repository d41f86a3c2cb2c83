//! `send --shard K/N`: N hosts share one contacts file, each with its own ledger, and every
//! recipient is sent exactly once across them; a ledger keeps its shard for good.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::relay::Relay;
use common::write_campaign;

fn send(root: &Path, shard: &str) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(root)
        .args(["--yes", "--shard", shard])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn ledger_emails(root: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(root.join("mailroom.db")).unwrap();
    let mut stmt = conn.prepare("SELECT email FROM recipients").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_send_every_recipient_exactly_once() {
    let relay = Relay::plain("").await;
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = (0..60).map(|i| format!("r{i}@example.test")).collect();
    // Three hosts: the same campaign and contacts file, a ledger each.
    let hosts: Vec<PathBuf> = (0..3)
        .map(|k| {
            let host = dir.path().join(format!("host{k}"));
            write_campaign(
                &host,
                "news",
                "news@sender.test",
                &relay.smtp_table(""),
                &emails,
            )
        })
        .collect();
    let mut seen = Vec::new();
    for (k, root) in hosts.iter().enumerate() {
        let root = root.clone();
        let (code, out) = tokio::task::spawn_blocking(move || send(&root, &format!("{k}/3")))
            .await
            .unwrap();
        assert_eq!(code, 0, "shard {k}: {out}");
        assert!(out.contains(&format!("in shard {k}/3")), "{out}");
        let mine = ledger_emails(&hosts[k]);
        assert!(
            !mine.is_empty(),
            "shard {k} got nobody: the split is uneven"
        );
        seen.extend(mine);
    }
    // Every address once across the ledgers and once at the relay.
    seen.sort();
    let mut all = emails.clone();
    all.sort();
    assert_eq!(seen, all);
    let counts = relay.maildir_counts();
    assert_eq!(counts.len(), 60, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    // A ledger keeps its shard: another shard (or none) is refused before anything is sent.
    let (code, out) = send(&hosts[0], "1/3");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("sends campaign `news` as shard 0/3"), "{out}");
    assert!(out.contains("asks for shard 1/3"), "{out}");
    assert_eq!(relay.maildir_counts().len(), 60);
    // The same shard again is fine (and has nothing left to send).
    let (code, out) = send(&hosts[0], "0/3");
    assert_eq!(code, 0, "{out}");
}
