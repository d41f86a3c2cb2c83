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

fn mailroom(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn db_args(hosts: &[PathBuf]) -> Vec<String> {
    hosts
        .iter()
        .flat_map(|h| {
            [
                "--db".to_owned(),
                h.join("mailroom.db").to_str().unwrap().to_owned(),
            ]
        })
        .collect()
}

/// Three shards, then one report over their three ledgers and one bounce import routed to
/// them: the report counts the whole campaign once, and every DSN lands in the ledger that
/// sent the message it reports on (the others never see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shard_ledgers_report_as_one_campaign_and_feedback_goes_to_the_sender() {
    let relay = Relay::plain("[[rule]]\nrecipient = \"gone*@*\"\naction = \"bounce\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let mut emails: Vec<String> = (0..45).map(|i| format!("r{i}@example.test")).collect();
    emails.extend((0..9).map(|i| format!("gone{i}@example.org")));
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
    for (k, root) in hosts.iter().enumerate() {
        let root = root.clone();
        let (code, out) = tokio::task::spawn_blocking(move || send(&root, &format!("{k}/3")))
            .await
            .unwrap();
        assert_eq!(code, 0, "shard {k}: {out}");
    }
    let dbs = db_args(&hosts);
    let mut args: Vec<&str> = vec!["report", "--format", "json"];
    args.extend(dbs.iter().map(String::as_str));
    let (code, out, err) = mailroom(&args);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["campaign"], "news");
    assert_eq!(json["totals"]["recipients"], 54);
    assert_eq!(json["totals"]["relay_accepted"], 54);
    assert_eq!(json["overlap"]["recipients"], 0);
    let parts: u64 = json["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["recipients"].as_u64().unwrap())
        .sum();
    assert_eq!(parts, 54);
    let domains = json["domains"].as_array().unwrap();
    let org = domains
        .iter()
        .find(|d| d["domain"] == "example.org")
        .unwrap();
    assert_eq!(org["recipients"], 9, "{org}");

    // The text report says it is merged.
    let mut args: Vec<&str> = vec!["report"];
    args.extend(dbs.iter().map(String::as_str));
    let (code, out, err) = mailroom(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Merged from 3 ledgers: "), "{out}");

    // The relay wrote one DSN per gone* address; each goes to its own shard's ledger.
    let bounces = relay.dir.path().join("bounces");
    let mut args: Vec<&str> = vec!["bounces", "import", hosts[0].to_str().unwrap(), "--maildir"];
    args.push(bounces.to_str().unwrap());
    args.extend(dbs.iter().map(String::as_str));
    let (code, out, err) = mailroom(&args);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("recorded            9"), "{out}");
    assert!(out.contains("unmatched (left)    0"), "{out}");
    for host in &hosts {
        let conn = rusqlite::Connection::open(host.join("mailroom.db")).unwrap();
        let (gone, bounced): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM recipients WHERE email LIKE 'gone%'),
                        (SELECT count(*) FROM recipients WHERE state = 'bounced_hard')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            gone,
            bounced,
            "{}: every DSN in its own ledger",
            host.display()
        );
    }
    // The merged report now has the 9 hard bounces, once each.
    let mut args: Vec<&str> = vec!["report", "--format", "json"];
    args.extend(dbs.iter().map(String::as_str));
    let (_, out, _) = mailroom(&args);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["totals"]["bounced_hard"], 9);

    // The dashboard over the three ledgers shows the same campaign as one, and a drill-down
    // into example.org collects its rows from every shard.
    let paths: Vec<PathBuf> = hosts.iter().map(|h| h.join("mailroom.db")).collect();
    let focus = mailroom::report::Focus::Domain("example.org".into());
    let status = mailroom::tui::fetch_merged(&paths, Some("news"), Some(&focus));
    let mailroom::tui::Status::Ready(snapshot) = status else {
        panic!("{status:?}");
    };
    let report = snapshot.report.as_ref().unwrap();
    assert_eq!(report.totals.recipients, 54);
    assert_eq!(report.totals.bounced_hard, 9);
    assert_eq!(snapshot.campaigns.len(), 1);
    assert_eq!(snapshot.campaigns[0].recipients, 54);
    let drill = snapshot.drill.as_ref().unwrap();
    let mut gone: Vec<&str> = drill
        .entries
        .iter()
        .filter(|e| e.outcome == "accepted")
        .map(|e| e.email.as_str())
        .collect();
    gone.sort_unstable();
    gone.dedup();
    assert_eq!(gone.len(), 9, "{gone:?}");
}

/// Ledgers cut differently (shard 0 of 2 and shard 0 of 3) overlap: the merged report counts
/// each shared recipient once and names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_ledgers_count_a_shared_recipient_once_and_flag_it() {
    let relay = Relay::plain("").await;
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = (0..60).map(|i| format!("r{i}@example.test")).collect();
    let hosts: Vec<PathBuf> = ["0/2", "0/3"]
        .iter()
        .enumerate()
        .map(|(k, _)| {
            write_campaign(
                &dir.path().join(format!("host{k}")),
                "news",
                "news@sender.test",
                &relay.smtp_table(""),
                &emails,
            )
        })
        .collect();
    for (root, shard) in hosts.iter().zip(["0/2", "0/3"]) {
        let root = root.clone();
        let (code, out) = tokio::task::spawn_blocking(move || send(&root, shard))
            .await
            .unwrap();
        assert_eq!(code, 0, "{shard}: {out}");
    }
    let a = ledger_emails(&hosts[0]);
    let b = ledger_emails(&hosts[1]);
    let shared: Vec<&String> = a.iter().filter(|e| b.contains(e)).collect();
    assert!(
        !shared.is_empty(),
        "the two cuts share nobody: pick other shards"
    );
    let union = a.len() + b.len() - shared.len();

    let dbs = db_args(&hosts);
    let mut args: Vec<&str> = vec!["report", "--format", "json"];
    args.extend(dbs.iter().map(String::as_str));
    let (code, out, err) = mailroom(&args);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["totals"]["recipients"], union as u64);
    assert_eq!(json["totals"]["accepted"], union as u64);
    assert_eq!(json["overlap"]["recipients"], shared.len() as u64);
    let example = &json["overlap"]["examples"][0];
    assert!(shared.iter().any(|e| **e == example["email"]), "{example}");
    assert_eq!(example["ledgers"], serde_json::json!([0, 1]));
    // The attempts really happened twice: the per-minute series counts both.
    let attempts: u64 = json["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, (a.len() + b.len()) as u64);
    // The text report warns about them.
    let mut args: Vec<&str> = vec!["report"];
    args.extend(dbs.iter().map(String::as_str));
    let (_, out, _) = mailroom(&args);
    assert!(
        out.contains(&format!(
            "warning: {} recipients are in more than one ledger",
            shared.len()
        )),
        "{out}"
    );
}
