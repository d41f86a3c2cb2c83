//! Bounce parsing against the real-world corpus, `bounces import` into a real SQLite ledger from
//! Maildir and mbox, and the suppression list.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailroom::bounce;
use mailroom::model::FeedbackKind;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces/corpus")
}

struct Expected {
    file: String,
    recipient: String,
    reason: String,
    status: String,
    hard_or_soft: String,
    action: String,
}

fn expectations() -> Vec<Expected> {
    let tsv = std::fs::read_to_string(corpus_dir().join("expected.tsv")).unwrap();
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (f, r, re, s, h, a) = (
        col("file"),
        col("recipient"),
        col("reason"),
        col("status"),
        col("hard_or_soft"),
        col("action"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Expected {
                file: c[f].to_owned(),
                recipient: c[r].to_owned(),
                reason: c[re].to_owned(),
                status: c[s].to_owned(),
                hard_or_soft: c[h].to_owned(),
                action: c[a].to_owned(),
            }
        })
        .collect()
}

/// The corpus's hard/soft column: empty for non-bounces (feedback, vacation, delivered).
fn hard_or_soft(kind: FeedbackKind) -> &'static str {
    match kind {
        FeedbackKind::Hard => "hard",
        FeedbackKind::Soft => "soft",
        _ => "",
    }
}

#[derive(Default)]
struct Score {
    right: usize,
    total: usize,
}

impl Score {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.right += usize::from(ok);
    }
    fn ratio(&self) -> f64 {
        self.right as f64 / self.total.max(1) as f64
    }
}

#[test]
fn corpus_accuracy_meets_the_bar() {
    let expected = expectations();
    assert!(expected.len() > 150, "corpus not found or truncated");
    let mut by_file: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for e in &expected {
        by_file.entry(e.file.as_str()).or_default().push(e);
    }
    let mut scores: BTreeMap<&str, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    for (file, rows) in &by_file {
        let raw = std::fs::read(corpus_dir().join(file)).unwrap();
        let reports = bounce::parse(&raw);
        for (i, e) in rows.iter().enumerate() {
            // Match by recipient where possible (order can differ), else by position.
            let got = reports
                .iter()
                .find(|r| r.recipient.eq_ignore_ascii_case(&e.recipient))
                .or_else(|| reports.get(i));
            let diagnostic: String = got
                .map(|r| r.diagnostic.chars().take(160).collect())
                .unwrap_or_default();
            let (recipient, status, reason, hs, action) = match got {
                Some(r) => (
                    r.recipient.clone(),
                    r.status.clone().unwrap_or_default(),
                    r.reason.as_str().to_owned(),
                    hard_or_soft(r.kind).to_owned(),
                    match r.kind {
                        FeedbackKind::Complaint | FeedbackKind::AutoReply => String::new(),
                        _ => r.action.map(|a| a.as_str().to_owned()).unwrap_or_default(),
                    },
                ),
                None => Default::default(),
            };
            let ok_rcpt = recipient.eq_ignore_ascii_case(&e.recipient);
            scores.entry("recipient").or_default().add(ok_rcpt);
            // Addresses compare case-insensitively: the corpus keeps an MTA's upper-case
            // domain as written.
            scores.entry("status").or_default().add(status == e.status);
            scores.entry("reason").or_default().add(reason == e.reason);
            scores.entry("hard/soft").or_default().add(hs == e.hard_or_soft);
            scores.entry("action").or_default().add(action == e.action);
            if !ok_rcpt || reason != e.reason || status != e.status || hs != e.hard_or_soft {
                misses.push(format!(
                    "{file}: rcpt {recipient} (want {}) reason {reason} (want {}) status {status} (want {}) {hs} (want {})\n    {diagnostic}",
                    e.recipient, e.reason, e.status, e.hard_or_soft
                ));
            }
        }
    }
    for m in &misses {
        eprintln!("miss {m}");
    }
    for (field, s) in &scores {
        println!(
            "corpus {field:<10} {:>3}/{:<3} {:>5.1}%",
            s.right,
            s.total,
            s.ratio() * 100.0
        );
    }
    assert!(scores["recipient"].ratio() >= 0.95, "recipient accuracy below 95%");
    assert!(scores["hard/soft"].ratio() >= 0.90, "hard/soft accuracy below 90%");
    assert!(scores["reason"].ratio() >= 0.90, "reason accuracy below 90%");
}
