//! Bounce parsing against the real-world corpus, `bounces import` into a real SQLite ledger from
//! Maildir and mbox, and the suppression list.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailroom::bounce;
use mailroom::model::FeedbackKind;

mod common;

fn corpus_dir() -> PathBuf {
    fixture_set("corpus")
}

fn fixture_set(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name)
}

struct Expected {
    file: String,
    recipient: String,
    reason: String,
    status: String,
    kind: String,
    action: String,
}

/// The rows of a set's `expected.tsv` (tab-separated, never quoted: one recipient of the second
/// set has a quoted local part).
fn expectations(dir: &Path) -> Vec<Expected> {
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
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
            // The sets leave hard_or_soft empty for what is not a bounce; the kind names it.
            let kind = match (c[h], c[re]) {
                ("", "feedback") => "complaint",
                ("", "vacation") => "auto_reply",
                ("", "delivered") => "delivered",
                (hs, _) => hs,
            };
            Expected {
                file: c[f].to_owned(),
                recipient: c[r].to_owned(),
                reason: c[re].to_owned(),
                status: c[s].to_owned(),
                kind: kind.to_owned(),
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

/// Parses every message of a fixture set, compares each expected row with the report for the
/// same recipient (else the report at the same position), prints the misses on stderr and the
/// per-field accuracy on stdout, and returns the scores by field.
fn score_set(name: &str) -> BTreeMap<&'static str, Score> {
    let dir = fixture_set(name);
    let expected = expectations(&dir);
    let mut by_file: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for e in &expected {
        by_file.entry(e.file.as_str()).or_default().push(e);
    }
    let mut scores: BTreeMap<&'static str, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut extra = 0;
    for (file, rows) in &by_file {
        let raw = std::fs::read(dir.join(file)).unwrap();
        let reports = bounce::parse(&raw);
        extra += reports.len().saturating_sub(rows.len());
        for (i, e) in rows.iter().enumerate() {
            // Addresses compare case-insensitively: the sets keep an MTA's upper-case domain
            // as written.
            let got = reports
                .iter()
                .find(|r| r.recipient.eq_ignore_ascii_case(&e.recipient))
                .or_else(|| reports.get(i));
            let diagnostic: String = got
                .map(|r| r.diagnostic.chars().take(160).collect())
                .unwrap_or_default();
            let (recipient, status, reason, kind, action) = match got {
                Some(r) => (
                    r.recipient.clone(),
                    r.status.clone().unwrap_or_default(),
                    r.reason.as_str().to_owned(),
                    r.kind.as_str().to_owned(),
                    match r.kind {
                        FeedbackKind::Complaint | FeedbackKind::AutoReply => String::new(),
                        _ => r.action.map(|a| a.as_str().to_owned()).unwrap_or_default(),
                    },
                ),
                None => Default::default(),
            };
            let ok_rcpt = recipient.eq_ignore_ascii_case(&e.recipient);
            scores.entry("recipient").or_default().add(ok_rcpt);
            scores.entry("kind").or_default().add(kind == e.kind);
            scores.entry("reason").or_default().add(reason == e.reason);
            scores.entry("status").or_default().add(status == e.status);
            scores.entry("action").or_default().add(action == e.action);
            if !ok_rcpt || reason != e.reason || status != e.status || kind != e.kind {
                misses.push(format!(
                    "{file}: rcpt {recipient} (want {}) reason {reason} (want {}) status {status} \
                     (want {}) {kind} (want {})\n    {diagnostic}",
                    e.recipient, e.reason, e.status, e.kind
                ));
            }
        }
    }
    for m in &misses {
        eprintln!("{name} miss {m}");
    }
    for (field, s) in &scores {
        println!(
            "{name} {field:<10} {:>3}/{:<3} {:>5.1}%",
            s.right,
            s.total,
            s.ratio() * 100.0
        );
    }
    println!("{name} reports beyond the expected rows: {extra}");
    scores
}

/// Fails with the field's name when a score falls below its floor. Floors are raised as the
/// parser improves; they never fall.
fn assert_floors(name: &str, scores: &BTreeMap<&'static str, Score>, floors: &[(&str, usize)]) {
    for (field, floor) in floors {
        let s = &scores[field];
        assert!(
            s.right >= *floor,
            "{name}: {field} {}/{} is below its floor of {floor}",
            s.right,
            s.total
        );
    }
}

/// The first development set (`tests/fixtures/bounces/corpus`, 180 messages, 187 rows).
#[test]
fn dev_set_scores_hold_their_floor() {
    let scores = score_set("corpus");
    assert_eq!(
        scores["recipient"].total, 187,
        "corpus not found or truncated"
    );
    assert_floors(
        "corpus",
        &scores,
        &[("recipient", 186), ("kind", 187), ("reason", 187)],
    );
}

/// The second development set (`tests/fixtures/bounces/more`, 241 messages, 255 rows).
#[test]
fn more_set_scores_hold_their_floor() {
    let scores = score_set("more");
    assert_eq!(scores["recipient"].total, 255, "set not found or truncated");
    assert_floors(
        "more",
        &scores,
        &[("recipient", 255), ("kind", 253), ("reason", 251)],
    );
}

// ---------------------------------------------------------------------------------------------
// Import into a real ledger.

use mailroom::bounce::import::{self, MailboxMessage, Matcher};
use mailroom::bounce::{mailbox, suppress};

const RETURN_PATH: &str = "bounces+{token}@news.example.com";

/// Upstream samples of formats the development corpus lacks, with our own expectations.
#[test]
fn extra_fixtures_parse_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces/extra");
    let tsv = std::fs::read_to_string(dir.join("expected.tsv")).unwrap();
    let mut checked = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let (file, recipient, reason, hs) = (c[0], c[1], c[2], c[3]);
        let reports = bounce::parse(&std::fs::read(dir.join(file)).unwrap());
        assert_eq!(reports.len(), 1, "{file}: {reports:?}");
        let r = &reports[0];
        assert_eq!(r.recipient, recipient, "{file}");
        assert_eq!(r.reason.as_str(), reason, "{file}");
        assert_eq!(hard_or_soft(r.kind), hs, "{file}");
        checked += 1;
    }
    assert!(checked > 0, "no extra fixtures listed");
}

fn import_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bounces/import");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// A ledger with campaign `spring` and four recipients the relay accepted, as the sender
/// leaves it.
fn seeded_ledger(dir: &Path) -> (PathBuf, rusqlite::Connection) {
    let path = dir.join("mailroom.db");
    let conn = mailroom_test_conn(&path);
    conn.execute(
        "INSERT INTO campaigns (id, name, created_at) VALUES (1, 'spring', 0)",
        [],
    )
    .unwrap();
    for (i, (email, token)) in [
        ("alice@example.org", "o1ew71l5i58h9r8m"),
        ("bob@example.net", "024jvi2rro9dg5ih"),
        ("carol@example.com", "6db3bbetipcagduc"),
        ("dave@example.org", "dmxb4aw96av7rrl6"),
    ]
    .into_iter()
    .enumerate()
    {
        conn.execute(
            "INSERT INTO recipients (campaign_id, email, line, token, fields, state,
                                     relay_accepted)
             VALUES (1, ?1, ?2, ?3, '{}', 'accepted', 1)",
            rusqlite::params![email, i as i64 + 2, token],
        )
        .unwrap();
    }
    (path, conn)
}

fn states(conn: &rusqlite::Connection) -> BTreeMap<String, String> {
    let mut stmt = conn.prepare("SELECT email, state FROM recipients").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Everything import may touch, for "the second import changes nothing".
fn dump(conn: &rusqlite::Connection) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "SELECT recipient_id || '|' || kind || '|' || ifnull(action,'') || '|' || ifnull(status,'') || '|' || ifnull(reason,'') || '|' || fingerprint FROM events ORDER BY id",
        "SELECT email || '|' || reason || '|' || campaign FROM suppressions ORDER BY email",
        "SELECT email || '|' || state FROM recipients ORDER BY email",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        out.extend(
            stmt.query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    out
}

fn write_maildir(dir: &Path) -> PathBuf {
    let maildir = dir.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (i, (name, raw)) in import_fixtures().into_iter().enumerate() {
        // Half already seen by a mail client (cur/ with flags), half new.
        let sub = if i % 2 == 0 { "new" } else { "cur" };
        let file = if sub == "cur" {
            format!("{name}:2,S")
        } else {
            name
        };
        std::fs::write(maildir.join(sub).join(file), raw).unwrap();
    }
    maildir
}

fn write_mbox(dir: &Path) -> PathBuf {
    let path = dir.join("bounces.mbox");
    let mut out = Vec::new();
    for (_, raw) in import_fixtures() {
        out.extend_from_slice(b"From MAILER-DAEMON Sat Nov 28 10:00:00 2026\n");
        for line in raw.split_inclusive(|&b| b == b'\n') {
            // mboxrd escaping, as a delivery agent writes it.
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if line[quotes..].starts_with(b"From ") {
                out.push(b'>');
            }
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn maildir_import_records_events_states_and_suppressions_once() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = seeded_ledger(dir.path());
    let mut ledger = mailroom::store::open(&path).unwrap();
    let maildir = write_maildir(dir.path());
    let matcher = Matcher::new(&ledger, "spring", Some(RETURN_PATH)).unwrap();
    let messages: Vec<MailboxMessage> = mailbox::maildir(&maildir)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(messages.len(), 7);
    let s = import::import(&mut ledger, &matcher, messages.clone()).unwrap();
    assert_eq!(s.read, 7);
    assert_eq!(
        s.not_feedback, 1,
        "the reader's thank-you note is not feedback"
    );
    assert_eq!(s.reports, 6);
    assert_eq!(s.matched, 5);
    assert_eq!(s.unmatched, 1, "the stranger's bounce matches no send");
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.by_kind.get("hard"), Some(&1));
    assert_eq!(s.by_kind.get("soft"), Some(&1));
    assert_eq!(s.by_kind.get("complaint"), Some(&1));
    assert_eq!(s.by_kind.get("auto_reply"), Some(&1));
    assert_eq!(s.by_kind.get("delayed"), Some(&1));
    let st = states(&conn);
    assert_eq!(st["alice@example.org"], "bounced_hard", "VERP match, 5.1.1");
    assert_eq!(
        st["bob@example.net"], "bounced_soft",
        "X-Mailroom-Token match, 5.2.2"
    );
    assert_eq!(
        st["carol@example.com"], "complained",
        "Message-ID match, ARF"
    );
    assert_eq!(
        st["dave@example.org"], "accepted",
        "an auto-reply and a delay notice change no state"
    );
    let suppressed: Vec<suppress::Entry> = mailroom::store::open(&path)
        .unwrap()
        .suppressions()
        .unwrap();
    let by_email: BTreeMap<&str, &str> = suppressed
        .iter()
        .map(|e| (e.email.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        by_email,
        BTreeMap::from([
            ("alice@example.org", "hard_bounce"),
            ("carol@example.com", "complaint")
        ])
    );
    assert!(
        suppressed
            .iter()
            .all(|e| e.campaign.as_deref() == Some("spring"))
    );
    let dave_events: Vec<String> = conn
        .prepare(
            "SELECT kind FROM events JOIN recipients r ON r.id = events.recipient_id
             WHERE r.email = 'dave@example.org' ORDER BY kind",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(dave_events, ["auto_reply", "delayed"]);

    // The same mailbox again: nothing changes.
    let before = dump(&conn);
    let again = import::import(&mut ledger, &matcher, messages).unwrap();
    assert_eq!(again.matched, 0);
    assert_eq!(again.duplicates, 5);
    assert_eq!(again.state_changes, 0);
    assert_eq!(dump(&conn), before);
}

#[test]
fn mbox_import_unescapes_and_dedupes_against_the_same_messages_from_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = seeded_ledger(dir.path());
    let mut ledger = mailroom::store::open(&path).unwrap();
    let mbox = write_mbox(dir.path());
    let matcher = Matcher::new(&ledger, "spring", Some(RETURN_PATH)).unwrap();
    let from_mbox: Vec<MailboxMessage> =
        mailbox::mbox(&mbox).unwrap().map(Result::unwrap).collect();
    let originals = import_fixtures();
    assert_eq!(from_mbox.len(), originals.len());
    for (m, (name, raw)) in from_mbox.iter().zip(&originals) {
        assert_eq!(&m.raw, raw, "{name} must come back byte for byte");
    }
    let s = import::import(&mut ledger, &matcher, from_mbox).unwrap();
    assert_eq!((s.matched, s.unmatched, s.not_feedback), (5, 1, 1));
    // The Maildir copy of the same mail is recognised as already recorded.
    let maildir = write_maildir(dir.path());
    let before = dump(&conn);
    let s = import::import(
        &mut ledger,
        &matcher,
        mailbox::maildir(&maildir).unwrap().map(Result::unwrap),
    )
    .unwrap();
    assert_eq!((s.matched, s.duplicates), (0, 5));
    assert_eq!(dump(&conn), before);
}

#[test]
fn without_verp_or_headers_a_bounce_matches_by_address_and_hard_beats_soft() {
    let dir = tempfile::tempdir().unwrap();
    let (path, conn) = seeded_ledger(dir.path());
    let mut ledger = mailroom::store::open(&path).unwrap();
    // No return path configured: alice's bounce still matches by its returned Message-ID.
    let matcher = Matcher::new(&ledger, "spring", None).unwrap();
    let raw = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bounces/import/01-hard-verp.eml"),
    )
    .unwrap();
    let soft = b"From: MAILER-DAEMON@mx.example.org\nTo: news@news.example.com\n\
Subject: failure notice\n\n<alice@example.org>:\nRemote host said: 552 5.2.2 Mailbox full\n"
        .to_vec();
    let msgs = vec![
        MailboxMessage {
            source: "test:1".into(),
            raw,
        },
        MailboxMessage {
            source: "test:2".into(),
            raw: soft,
        },
    ];
    let s = import::import(&mut ledger, &matcher, msgs).unwrap();
    assert_eq!(s.matched, 2);
    assert_eq!(
        states(&conn)["alice@example.org"],
        "bounced_hard",
        "a later soft bounce must not downgrade a hard one"
    );
}

// ---------------------------------------------------------------------------------------------
// The commands, as a user runs them.

use assert_cmd::Command as Cmd;

fn mailroom() -> Cmd {
    Cmd::cargo_bin("mailroom").unwrap()
}

/// A real campaign folder (`mailroom init`) named `spring` with our VERP return path; its
/// ledger is `<dir>/campaign/mailroom.db`, seeded as the sender leaves it.
fn campaign_with_ledger(dir: &Path) -> (PathBuf, PathBuf) {
    let folder = dir.join("campaign");
    let out = mailroom().arg("init").arg(&folder).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = folder.join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text
        .replacen("name = \"first-newsletter\"", "name = \"spring\"", 1)
        .replacen(
            "# return_path = \"bounces+{token}@example.com\"",
            &format!("return_path = \"{RETURN_PATH}\""),
            1,
        );
    assert!(text.contains("name = \"spring\"") && text.contains("return_path = \"bounces"));
    std::fs::write(&toml, text).unwrap();
    let (db, conn) = seeded_ledger(&folder);
    drop(conn);
    (folder, db)
}

#[test]
fn bounces_parse_json_prints_one_object_per_report() {
    let corpus = corpus_dir();
    let out = mailroom()
        .args(["bounces", "parse", "--json"])
        .arg(corpus.join("dev-067.eml"))
        .arg(corpus.join("dev-035.eml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "two recipients in dev-067, one auto-reply in dev-035"
    );
    for key in [
        "file",
        "recipient",
        "action",
        "status",
        "kind",
        "reason",
        "diagnostic",
    ] {
        assert!(lines.iter().all(|l| l.get(key).is_some()), "missing {key}");
    }
    assert_eq!(lines[0]["recipient"], "mailboxfull@example.jp");
    assert_eq!(lines[0]["kind"], "soft");
    assert_eq!(lines[1]["status"], "5.1.1");
    assert_eq!(lines[1]["kind"], "hard");
    assert_eq!(lines[2]["kind"], "auto_reply");
    assert!(lines[2]["file"].as_str().unwrap().ends_with("dev-035.eml"));
}

#[test]
fn bounces_parse_reads_every_file_of_a_folder() {
    let out = mailroom()
        .args(["bounces", "parse", "--json"])
        .arg(corpus_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: std::collections::BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["file"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(files.len() > 170, "{} files gave reports", files.len());
}

#[test]
fn bounces_parse_text_table_and_unreadable_file() {
    let out = mailroom()
        .args(["bounces", "parse"])
        .arg(corpus_dir().join("dev-006.eml"))
        .arg("/nonexistent/bounce.eml")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreadable file is a problem"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("FILE"), "{stdout}");
    assert!(stdout.contains("userunknown@example.jp") && stdout.contains("hard"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bounce.eml"));
}

#[test]
fn bounces_parse_reads_a_file_only_up_to_the_message_cap() {
    // /dev/zero never ends: it is read up to the cap and skipped, as a mailbox's oversized
    // message is (before, it was read whole until memory ran out).
    let out = mailroom()
        .args(["bounces", "parse", "/dev/zero"])
        .arg(corpus_dir().join("dev-006.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a skipped file is a problem");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/zero: skipped, not read: over the 25 MiB cap"),
        "{stderr}"
    );
    // The files after it are still read.
    assert!(String::from_utf8_lossy(&out.stdout).contains("userunknown@example.jp"));
}

#[test]
fn bounces_parse_says_when_a_folder_holds_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("saved");
    let maildir = dir.path().join("Maildir");
    std::fs::create_dir(&plain).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let out = mailroom()
        .args(["bounces", "parse"])
        .arg(&plain)
        .arg(&maildir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "an empty folder is no error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("saved: no messages in this folder\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "Maildir: no messages in this folder (a Maildir whose new/ and cur/ are empty)"
        ),
        "{stderr}"
    );
}

#[test]
fn bounces_import_command_reads_a_maildir_twice_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (campaign, db) = campaign_with_ledger(dir.path());
    let maildir = write_maildir(dir.path());
    // The ledger comes from the campaign's [store] path: no --db.
    let run = || {
        mailroom()
            .args(["bounces", "import"])
            .arg(&campaign)
            .arg("--maildir")
            .arg(&maildir)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(text.contains("messages read       7"), "{text}");
    assert!(text.contains("unmatched (left)    1"), "{text}");
    assert!(text.contains("recorded            5"), "{text}");
    let conn = mailroom_test_conn(&db);
    let before = dump(&conn);
    drop(conn);
    let second = run();
    assert!(second.status.success());
    let text = String::from_utf8(second.stdout).unwrap();
    assert!(text.contains("already recorded    5"), "{text}");
    assert!(text.contains("recorded            0"), "{text}");
    assert_eq!(dump(&mailroom_test_conn(&db)), before);
    // The suppression list of the campaign's ledger now holds the hard bounce and complaint.
    let out = mailroom()
        .args(["suppress", "--campaign"])
        .arg(&campaign)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("\"alice@example.org\"") && listed.contains("\"hard_bounce\""));
    assert!(listed.contains("\"carol@example.com\"") && listed.contains("\"complaint\""));
}

#[test]
fn bounces_import_without_password_names_the_variable_and_never_reads_argv() {
    let dir = tempfile::tempdir().unwrap();
    let (campaign, _) = campaign_with_ledger(dir.path());
    let out = mailroom()
        .env_remove("MAILROOM_IMAP_PASSWORD")
        .args(["bounces", "import"])
        .arg(&campaign)
        .args(["--imap", "imaps://bounces@127.0.0.1:1/INBOX"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAILROOM_IMAP_PASSWORD"));
}

#[test]
fn suppress_commands_add_list_remove_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let run = |args: &[&str]| {
        mailroom()
            .arg("suppress")
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .unwrap()
    };
    // Nothing to remove from a ledger that is not there: refused, and none is created.
    let out = run(&["remove", "someone@example.org"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger at"));
    assert!(!db.exists());
    let out = run(&["add", "Someone@Example.ORG", "--reason", "unsubscribe"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new ledger is said to be new (a mistyped --db must not pass unnoticed), once.
    assert!(String::from_utf8_lossy(&out.stderr).contains("a new one was created"));
    let out = run(&["add", "someone@example.org"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("a new one was created"));
    let out = run(&["add", "not-an-address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an e-mail address"));
    let out = run(&["add", "x@example.org", "--reason", "because"]);
    assert_eq!(out.status.code(), Some(2), "an unknown reason is an error");

    let list = dir.path().join("list.csv");
    std::fs::write(
        &list,
        "name,email\nA,a@example.com\nB,broken\nC,Someone@example.org\n",
    )
    .unwrap();
    let out = run(&["import", list.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "one invalid line");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 added, 1 already suppressed, 1 invalid"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("list.csv:3"));
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "# bounced elsewhere\nb@example.com\n\n").unwrap();
    assert!(
        run(&["import", plain.to_str().unwrap(), "--reason", "hard_bounce"])
            .status
            .success()
    );
    // Excel's "CSV UTF-8" starts with a byte order mark: the `email` header is still found.
    let excel = dir.path().join("excel.csv");
    std::fs::write(&excel, b"\xEF\xBB\xBFEmail,Name\nc@example.com,C\n").unwrap();
    let out = run(&["import", excel.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("1 added, 0 already suppressed, 0 invalid"),
        "{stdout}"
    );
    // A file in another encoding is refused whole, with where and how to convert it.
    let latin1 = dir.path().join("latin 1.txt");
    std::fs::write(&latin1, b"d@example.com\n# Ren\xE9\ne@example.com\n").unwrap();
    let out = run(&["import", latin1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in [
        "latin 1.txt: it is not UTF-8: byte 0xE9 (\"é\" in windows-1252) on line 2, column 6",
        "iconv -f windows-1252 -t utf-8 'latin 1.txt' > 'latin 1.txt'.utf8",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }

    let out = run(&["list", "--json"]);
    assert!(out.status.success());
    let entries: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: BTreeMap<String, (String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["email"].as_str().unwrap().to_owned(),
                (
                    e["reason"].as_str().unwrap().to_owned(),
                    e["source"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(
        got["someone@example.org"],
        ("unsubscribe".into(), "cli".into())
    );
    assert_eq!(got["a@example.com"].0, "manual");
    assert!(got["a@example.com"].1.starts_with("file:"));
    assert_eq!(got["b@example.com"].0, "hard_bounce");
    assert_eq!(got["c@example.com"].0, "manual");
    assert_eq!(got.len(), 4, "nothing of the refused file: {got:?}");
    // A pipe is read like a file (`suppress import /dev/stdin`, `<(...)`).
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, "f@example.com\n").unwrap())
    };
    let out = run(&["import", fifo.to_str().unwrap()]);
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 added"), "{stdout}");
    // A device is refused, not read without end.
    let out = run(&["import", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/dev/zero: not a file or a pipe"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert!(run(&["remove", "Someone@EXAMPLE.org"]).status.success());
    assert_eq!(
        run(&["remove", "Someone@example.org"]).status.code(),
        Some(1)
    );
    let text = String::from_utf8(run(&["list"]).stdout).unwrap();
    assert!(
        text.contains("a@example.com") && !text.contains("Someone@"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// IMAP against a real Dovecot on loopback (Debian: dovecot-imapd).

struct Dovecot {
    child: std::process::Child,
    dir: tempfile::TempDir,
    starttls_port: u16,
    imaps_port: u16,
    ca_pem: String,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a private Dovecot (own config, ports, TLS certificate and Maildir) holding `messages`
/// for user `bounces` / password `s3cret`. `None` (with a loud message) when Dovecot is not
/// installed or we cannot run it as root; under CI=true that is a failure.
fn start_dovecot(messages: &[(String, Vec<u8>)]) -> Option<Dovecot> {
    start_dovecot_with(messages, None)
}

/// [`start_dovecot`], and with `userinfo` also AUTHENTICATE XOAUTH2: Dovecot's oauth2 passdb
/// asks that URL (with the token as a Bearer header) whom a token belongs to.
fn start_dovecot_with(messages: &[(String, Vec<u8>)], userinfo: Option<&str>) -> Option<Dovecot> {
    use std::os::unix::fs::{PermissionsExt, chown};
    let binary = Path::new("/usr/sbin/dovecot");
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    let is_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
    if !binary.exists() || !Path::new("/usr/lib/dovecot/imap").exists() || !is_root {
        let msg = "SKIPPED: Dovecot IMAP test needs /usr/sbin/dovecot + dovecot-imapd, run as root \
                   (apt-get install dovecot-imapd)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} (CI=true)"
        );
        eprintln!("{msg}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Test CA and server certificate for 127.0.0.1 / localhost.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(d.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(d.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(d.join("passwd"), "bounces:{PLAIN}s3cret::::::\n").unwrap();
    let maildir = d.join("home/bounces/Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for (i, (_, raw)) in messages.iter().enumerate() {
        std::fs::write(
            maildir
                .join("new")
                .join(format!("17000000{i:02}.M1P1.test")),
            raw,
        )
        .unwrap();
    }
    for entry in ["home", "home/bounces", "home/bounces/Maildir"] {
        chown(d.join(entry), Some(65534), Some(65534)).unwrap();
    }
    for sub in ["new", "cur", "tmp"] {
        chown(maildir.join(sub), Some(65534), Some(65534)).unwrap();
        for f in std::fs::read_dir(maildir.join(sub)).unwrap() {
            chown(f.unwrap().path(), Some(65534), Some(65534)).unwrap();
        }
    }
    // A port picked free can be taken by another test before Dovecot binds it; Dovecot's master
    // then exits at once, saying so on stderr (its log is not open yet). Try fresh ports, and
    // name the cause if it keeps failing.
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let (starttls_port, imaps_port) = (free_port(), free_port());
        let p = d.display();
        let (mechanisms, oauth_passdb) = match userinfo {
            None => ("plain", String::new()),
            Some(url) => {
                std::fs::write(
                    d.join("oauth2.conf"),
                    format!(
                        "introspection_mode = auth\nintrospection_url = {url}\n\
                         force_introspection = yes\nusername_attribute = email\n"
                    ),
                )
                .unwrap();
                (
                    "plain xoauth2",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {p}/oauth2.conf\n}}\n"
                    ),
                )
            }
        };
        let conf = format!(
            "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
             protocols = imap\nlisten = 127.0.0.1\nssl = required\n\
             ssl_cert = <{p}/cert.pem\nssl_key = <{p}/key.pem\n\
             disable_plaintext_auth = yes\nauth_mechanisms = {mechanisms}\n\
             default_internal_user = dovecot\ndefault_login_user = dovenull\n\
             first_valid_uid = 1\nmail_location = maildir:~/Maildir\n{oauth_passdb}\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {p}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=65534 gid=65534 home={p}/home/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {starttls_port}\n  }}\n\
               inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n\
             service stats {{\n  unix_listener stats-reader {{\n    mode = 0666\n  }}\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n"
        );
        std::fs::write(d.join("dovecot.conf"), conf).unwrap();
        let stderr = std::fs::File::create(d.join("stderr.log")).unwrap();
        let mut child = std::process::Command::new(binary)
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Ready when the IMAP greeting arrives (polled with a deadline, not slept on).
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let ready = loop {
            if let Ok(Some(status)) = child.try_wait() {
                last_error = format!(
                    "dovecot exited ({status}): {}{}",
                    std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
                );
                break false;
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", starttls_port)) {
                use std::io::Read;
                s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                    .unwrap();
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"* OK" {
                    break true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not start: {}{}",
                std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default(),
                std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
            );
            std::thread::yield_now();
        };
        if ready {
            return Some(Dovecot {
                child,
                ca_pem: ca.pem(),
                dir,
                starttls_port,
                imaps_port,
            });
        }
    }
    panic!("dovecot did not start in three tries: {last_error}");
}

use std::time::Instant;

#[test]
fn imap_import_from_dovecot_over_starttls_and_implicit_tls_leaves_mail_unread() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let fixtures = import_fixtures();
    let Some(server) = start_dovecot(&fixtures) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (campaign, db) = campaign_with_ledger(dir.path());
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let import = |url: String, password: &str| {
        mailroom()
            .env("MAILROOM_IMAP_PASSWORD", password)
            .args(["bounces", "import"])
            .arg(&campaign)
            .arg("--imap")
            .arg(url)
            .arg("--imap-ca")
            .arg(&ca)
            .output()
            .unwrap()
    };
    let starttls = format!("imap://bounces@127.0.0.1:{}/INBOX", server.starttls_port);
    let out = import(starttls.clone(), "wrong");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LOGIN refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = import(starttls, "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("messages read       7"), "{text}");
    assert!(text.contains("recorded            5"), "{text}");
    assert!(text.contains("unmatched (left)    1"), "{text}");
    let st = states(&mailroom_test_conn(&db));
    assert_eq!(st["alice@example.org"], "bounced_hard");
    assert_eq!(st["carol@example.com"], "complained");
    // Same mailbox over implicit TLS: every report is already recorded.
    let out = import(
        format!("imaps://bounces@127.0.0.1:{}/INBOX", server.imaps_port),
        "s3cret",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("already recorded    5"), "{text}");
    // EXAMINE + BODY.PEEK: nothing was marked seen or moved out of new/.
    let maildir = server.dir.path().join("home/bounces/Maildir");
    let seen = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(",S")
        })
        .count();
    assert_eq!(seen, 0, "no message may be flagged \\Seen");
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 7);
}

/// `bounces import --imap-auth xoauth2` against a real Dovecot whose oauth2 passdb validates
/// the token at a loopback userinfo endpoint; the token comes from the campaign's `[smtp]`
/// refresh-token settings via a loopback token endpoint. A wrong token is refused by Dovecot.
#[test]
fn imap_import_with_xoauth2_from_dovecot() {
    use common::oauth::{Issuer, TokenEndpoint};
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let issue = |access_token: &str| Issuer {
        client_id: "imap-client".into(),
        client_secret: "imap-secret".into(),
        refresh_token: "1//imap-refresh".into(),
        access_token: access_token.into(),
        expires_in: 3600,
        user: "bounces".into(),
        rotate: false,
    };
    let endpoint = runtime.block_on(TokenEndpoint::start(issue("ya29.imap-token")));
    let userinfo = endpoint.url.replace("/token", "/userinfo");
    let fixtures = import_fixtures();
    let Some(server) = start_dovecot_with(&fixtures, Some(&userinfo)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (campaign, db) = campaign_with_ledger(dir.path());
    let toml = campaign.join("campaign.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replacen(
        "password_env = \"MAILROOM_SMTP_PASSWORD\"",
        &format!(
            "auth = \"xoauth2\"\nprovider = \"google\"\ntoken_url = \"{}\"\n\
             client_id_env = \"T_CLIENT\"\nclient_secret_env = \"T_SECRET\"\n\
             refresh_token_env = \"T_REFRESH\"",
            endpoint.url
        ),
        1,
    );
    std::fs::write(&toml, text).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let import = |refresh: &str| {
        mailroom()
            .env_remove("MAILROOM_IMAP_PASSWORD")
            .env("T_CLIENT", "imap-client")
            .env("T_SECRET", "imap-secret")
            .env("T_REFRESH", refresh)
            .args(["bounces", "import"])
            .arg(&campaign)
            .arg("--imap")
            .arg(format!(
                "imaps://bounces@127.0.0.1:{}/INBOX",
                server.imaps_port
            ))
            .args(["--imap-auth", "xoauth2", "--imap-ca"])
            .arg(&ca)
            .output()
            .unwrap()
    };
    let out = import("1//imap-refresh");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("recorded            5"), "{text}");
    assert_eq!(
        states(&mailroom_test_conn(&db))["alice@example.org"],
        "bounced_hard"
    );
    assert_eq!(endpoint.requests(), 1);
    assert!(!text.contains("ya29.imap-token") && !stderr.contains("ya29.imap-token"));

    // The endpoint now hands out a token Dovecot's userinfo check does not know.
    let wrong = runtime.block_on(TokenEndpoint::start(issue("ya29.unknown")));
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace(&endpoint.url, &wrong.url);
    std::fs::write(&toml, text).unwrap();
    let out = import("1//imap-refresh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("AUTHENTICATE refused"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// End to end with the CI Postfix (scripts/ci-servers.sh): `mailroom send` to a domain Postfix
// accepts and then bounces with a real RFC 3464 DSN to our VERP return path; `bounces import`
// reads the bounce Maildir and marks the recipient.

fn rig_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[test]
fn postfix_dsn_after_acceptance_is_imported_as_a_hard_bounce() {
    let Some(host) = rig_var("MAILROOM_TEST_POSTFIX_HOST") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but MAILROOM_TEST_POSTFIX_HOST is not set: source scripts/ci-servers-env.sh"
        );
        eprintln!(
            "SKIPPED: no Postfix rig (MAILROOM_TEST_POSTFIX_HOST unset); see docs/testing.md"
        );
        return;
    };
    let need = |n: &str| rig_var(n).unwrap_or_else(|| panic!("{n} is not set"));
    let bounce_maildir = PathBuf::from(need("MAILROOM_TEST_POSTFIX_BOUNCE_MAILDIR"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("campaign");
    assert!(
        mailroom()
            .arg("init")
            .arg(&root)
            .output()
            .unwrap()
            .status
            .success()
    );
    // A campaign name of its own: tokens (and so DSNs) from other runs never match it.
    let name = format!(
        "bounce-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dsn_rcpt = format!("someone@{}", need("MAILROOM_TEST_DOMAIN_DSN"));
    let ok_rcpt = format!("alice@{}", need("MAILROOM_TEST_DOMAIN_OK"));
    std::fs::write(
        root.join("contacts.csv"),
        format!("email,name,city\n{dsn_rcpt},Some One,\n{ok_rcpt},Alice,\n"),
    )
    .unwrap();
    let toml = std::fs::read_to_string(root.join("campaign.toml")).unwrap();
    let smtp = format!(
        "[smtp]\nhost = \"{host}\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{}\"\n\
         password_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{}\"\n",
        need("MAILROOM_TEST_POSTFIX_SUBMISSION_PORT"),
        need("MAILROOM_TEST_POSTFIX_USER"),
        need("MAILROOM_TEST_POSTFIX_CA"),
    );
    let start = toml.find("[smtp]").unwrap();
    let end = toml.find("[rate]").unwrap();
    let toml = format!("{}{smtp}\n{}", &toml[..start], &toml[end..])
        .replacen(
            "name = \"first-newsletter\"",
            &format!("name = \"{name}\""),
            1,
        )
        .replacen(
            "from = \"Example News <news@example.com>\"",
            &format!("from = \"News <{}>\"", need("MAILROOM_TEST_POSTFIX_USER")),
            1,
        )
        .replacen(
            "# return_path = \"bounces+{token}@example.com\"",
            &format!(
                "return_path = \"{}\"",
                need("MAILROOM_TEST_BOUNCE_RETURN_PATH")
            ),
            1,
        );
    std::fs::write(root.join("campaign.toml"), toml).unwrap();
    let out = mailroom()
        .arg("send")
        .arg(&root)
        .arg("--yes")
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "send failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let db = root.join("mailroom.db");
    let token: String = {
        let conn = mailroom_test_conn(&db);
        let st = states(&conn);
        assert_eq!(
            st[&dsn_rcpt], "accepted",
            "Postfix accepts it before bouncing: {st:?}"
        );
        conn.query_row(
            "SELECT token FROM recipients WHERE email = ?1",
            [&dsn_rcpt],
            |r| r.get(0),
        )
        .unwrap()
    };
    // The DSN arrives asynchronously: poll the bounce Maildir for our token, with a deadline.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let arrived = mailbox::maildir(&bounce_maildir)
            .map(|it| {
                it.filter_map(Result::ok)
                    .any(|m| String::from_utf8_lossy(&m.raw).contains(&format!("bounces+{token}@")))
            })
            .unwrap_or(false);
        if arrived {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DSN for token {token} within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = mailroom()
        .args(["bounces", "import"])
        .arg(&root)
        .arg("--maildir")
        .arg(&bounce_maildir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = mailroom_test_conn(&db);
    let st = states(&conn);
    assert_eq!(
        st[&dsn_rcpt],
        "bounced_hard",
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        st[&ok_rcpt], "accepted",
        "the delivered recipient keeps its state"
    );
    let (kind, status): (String, String) = conn
        .query_row(
            "SELECT e.kind, e.status FROM events e JOIN recipients r ON r.id = e.recipient_id
             WHERE r.email = ?1",
            [&dsn_rcpt],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((kind.as_str(), status.as_str()), ("hard", "5.1.1"));
    let suppressed = mailroom::store::open(&db).unwrap().suppressions().unwrap();
    assert!(
        suppressed
            .iter()
            .any(|e| e.email == dsn_rcpt && e.reason == "hard_bounce")
    );
}

// ---------------------------------------------------------------------------------------------
// The reports our own sandbox writes (used by `mailroom demo`) parse as what they are.

#[test]
fn sandbox_dsn_and_arf_reports_parse_with_their_tokens() {
    use mailroom::sandbox::report::{Original, arf, dsn};
    let message = b"From: News <news@news.example.com>\r\nTo: ann@example.org\r\n\
Message-ID: <m-ann@news.example.com>\r\nX-Mailroom-Campaign: spring\r\n\
X-Mailroom-Token: tok123abc\r\nSubject: Hello\r\n\r\nBody\r\n";
    let o = Original {
        mail_from: "bounces+tok123abc@news.example.com",
        rcpt_to: "ann@example.org",
        message,
        reporting_host: "sandbox.localhost",
        arrival_date: "Sat, 28 Nov 2026 10:00:00 +0000",
        unique: "u1",
        source_ip: "127.0.0.1",
    };
    let reports = bounce::parse(&dsn(
        &o,
        "5.1.1",
        "550 5.1.1 <ann@example.org>: User unknown",
    ));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].recipient, "ann@example.org");
    assert_eq!(reports[0].kind, FeedbackKind::Hard);
    assert_eq!(reports[0].original.token.as_deref(), Some("tok123abc"));
    assert_eq!(
        reports[0].original.message_id.as_deref(),
        Some("m-ann@news.example.com")
    );
    let reports = bounce::parse(&dsn(&o, "5.2.2", "552 5.2.2 Mailbox full"));
    assert_eq!(reports[0].kind, FeedbackKind::Soft);
    assert_eq!(reports[0].reason.as_str(), "mailboxfull");
    let reports = bounce::parse(&arf(&o, "abuse"));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].kind, FeedbackKind::Complaint);
    assert_eq!(reports[0].recipient, "ann@example.org");
    assert_eq!(reports[0].feedback_type.as_deref(), Some("abuse"));
    assert_eq!(reports[0].original.token.as_deref(), Some("tok123abc"));
}

/// Hostile or damaged input never panics: every corpus message truncated at many points
/// (including inside multi-byte characters and MIME boundaries) and with bytes flipped.
#[test]
fn damaged_messages_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut parsed = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        for cut in [1, 7, raw.len() / 3, raw.len() / 2, raw.len() * 9 / 10] {
            let _ = bounce::parse(&raw[..cut.min(raw.len())]);
        }
        let mut flipped = raw.clone();
        for _ in 0..32 {
            let i = (next() as usize) % flipped.len().max(1);
            flipped[i] = (next() & 0xff) as u8;
        }
        let _ = bounce::parse(&flipped);
        parsed += 1;
    }
    assert!(parsed > 150);
    // Pathological shapes: no headers, endless header line, deep nesting.
    assert!(bounce::parse(b"\n\n\n").is_empty());
    let long = vec![b'a'; 1 << 20];
    let _ = bounce::parse(&long);
    let mut nested = String::from(
        "From: MAILER-DAEMON@x.example\nContent-Type: multipart/mixed; boundary=b0\n\n",
    );
    for i in 0..60 {
        nested.push_str(&format!(
            "--b{i}\nContent-Type: multipart/mixed; boundary=b{}\n\n",
            i + 1
        ));
    }
    let _ = bounce::parse(nested.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// IMAP against hostile servers over real TCP (plain text, which mailroom allows to loopback
// only): the real binary's peak RSS stays under 200 MiB whatever the server sends, a flood ends
// at a documented cap with a message naming the server, and a message over the cap is skipped,
// never read, while the import goes on with the next one.

/// What the hostile server does; everything else it answers as a small, honest server holding
/// two messages: UID 1 (what the behaviour is about) and UID 2, a real hard bounce for alice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hostile {
    /// Answers EXAMINE with `* OK` lines, forever.
    FloodAfterExamine,
    /// Answers the fetch of UID 1 with `* 1 EXISTS` lines, forever.
    ExistsFloodDuringFetch,
    /// Answers LOGIN with one line that never ends.
    EndlessLine,
    /// Lists UID 1 as 2000 bytes, then answers its fetch with `BODY[] {5000000000}` and bytes,
    /// forever.
    GiantLiteral,
    /// Lists UID 1 truthfully as 5000000000 bytes; its fetch would get the giant literal.
    ListedGiant,
}

const HOSTILE_BOUNCE: &str = "01-hard-verp.eml";

/// Every command line the server received, in order, over all connections.
type CommandLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Serves `behaviour` on 127.0.0.1 (any number of connections, one thread each).
fn start_hostile_imap(behaviour: Hostile) -> (u16, CommandLog) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = CommandLog::default();
    let bounce = import_fixtures()
        .into_iter()
        .find(|(name, _)| name == HOSTILE_BOUNCE)
        .unwrap()
        .1;
    let server_log = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (log, bounce) = (server_log.clone(), bounce.clone());
            // A write error means the client went away, which ends the conversation.
            std::thread::spawn(move || {
                let _ = serve_hostile(stream, behaviour, &log, &bounce);
            });
        }
    });
    (port, log)
}

/// Writes `chunk` until the client goes away.
fn forever(out: &mut std::net::TcpStream, chunk: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    loop {
        out.write_all(chunk)?;
    }
}

fn serve_hostile(
    stream: std::net::TcpStream,
    behaviour: Hostile,
    log: &CommandLog,
    bounce: &[u8],
) -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    let mut out = stream.try_clone()?;
    let mut lines = std::io::BufReader::new(stream);
    let flood = |line: &[u8]| line.repeat(64 * 1024 / line.len());
    out.write_all(b"* OK hostile IMAP ready\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        log.lock().unwrap().push(line.to_owned());
        let (tag, command) = line.split_once(' ').unwrap_or((line, ""));
        let command = command.to_ascii_uppercase();
        let ok = format!("{tag} OK done\r\n");
        if command.starts_with("CAPABILITY") {
            out.write_all(format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{ok}").as_bytes())?;
        } else if command.starts_with("LOGIN") {
            if behaviour == Hostile::EndlessLine {
                out.write_all(b"* OK ")?;
                forever(&mut out, &[b'a'; 64 * 1024])?;
            }
            out.write_all(ok.as_bytes())?;
        } else if command.starts_with("EXAMINE") {
            if behaviour == Hostile::FloodAfterExamine {
                forever(
                    &mut out,
                    &flood(b"* OK [ALERT] still examining, please wait\r\n"),
                )?;
            }
            out.write_all(format!("* 2 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n{ok}").as_bytes())?;
        } else if command.starts_with("UID SEARCH") {
            // What the client before the streaming change asked.
            out.write_all(format!("* SEARCH 1 2\r\n{ok}").as_bytes())?;
        } else if command.starts_with("FETCH 1:2 (UID RFC822.SIZE)") {
            let size = if behaviour == Hostile::ListedGiant {
                5_000_000_000u64
            } else {
                2000
            };
            let listing = format!(
                "* 1 FETCH (UID 1 RFC822.SIZE {size})\r\n* 2 FETCH (UID 2 RFC822.SIZE {})\r\n{ok}",
                bounce.len()
            );
            out.write_all(listing.as_bytes())?;
        } else if command.starts_with("UID FETCH 1 ") {
            if behaviour == Hostile::ExistsFloodDuringFetch {
                forever(&mut out, &flood(b"* 1 EXISTS\r\n"))?;
            }
            out.write_all(b"* 1 FETCH (UID 1 BODY[] {5000000000}\r\n")?;
            forever(&mut out, &flood(b"From: flood\r\n"))?;
        } else if command.starts_with("UID FETCH 2 ") {
            out.write_all(format!("* 2 FETCH (UID 2 BODY[] {{{}}}\r\n", bounce.len()).as_bytes())?;
            out.write_all(bounce)?;
            out.write_all(format!(")\r\n{ok}").as_bytes())?;
        } else if command.starts_with("LOGOUT") {
            out.write_all(format!("* BYE bye\r\n{ok}").as_bytes())?;
            return Ok(());
        } else {
            out.write_all(format!("{tag} BAD unknown command\r\n").as_bytes())?;
        }
    }
}

const RSS_CAP_KIB: u64 = 200 * 1024;

/// The child's high-water RSS in KiB (`VmHWM`), once it runs `mailroom`: until its exec, a
/// spawned child still reports the test process's memory.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Name:"))?
        .ends_with("\tmailroom")
        .then_some(())?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `mailroom bounces import CAMPAIGN --imap URL` against the hostile server and returns
/// its exit code, stdout, stderr and peak RSS. The peak is the kernel's high-water mark, read
/// every millisecond while the child runs; past the cap the child is killed at once (exit code
/// `None`), so a client that buffers without bound fails this fast instead of filling memory.
fn import_measured(campaign: &Path, port: u16) -> (Option<i32>, String, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .env("MAILROOM_IMAP_PASSWORD", "hostile")
        .args(["bounces", "import"])
        .arg(campaign)
        .arg("--imap")
        .arg(format!("imap://bounces@127.0.0.1:{port}/INBOX"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut peak = 0;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if peak > RSS_CAP_KIB || Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        // The poll interval, not a synchronisation: the loop ends on the child's exit.
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (code, read(&out_path), read(&err_path), peak)
}

fn assert_bounded(peak_kib: u64, stderr: &str) {
    eprintln!("peak RSS of `mailroom bounces import`: {peak_kib} KiB");
    assert!(
        peak_kib > 0 && peak_kib <= RSS_CAP_KIB,
        "peak RSS {peak_kib} KiB, the cap is {RSS_CAP_KIB} KiB (200 MiB; the child is killed \
         when over it); stderr: {stderr}"
    );
}

#[test]
fn imap_untagged_flood_ends_at_the_command_cap_with_memory_bounded() {
    for (behaviour, expected) in [
        (
            Hostile::FloodAfterExamine,
            "IMAP server 127.0.0.1 sent more than 4 MiB in reply to EXAMINE",
        ),
        (
            Hostile::ExistsFloodDuringFetch,
            "IMAP server 127.0.0.1 sent more than 4 MiB in reply to UID FETCH",
        ),
        (
            Hostile::EndlessLine,
            "IMAP server 127.0.0.1 sent a response line longer than 64 KiB in reply to LOGIN",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (campaign, _) = campaign_with_ledger(dir.path());
        let (port, _) = start_hostile_imap(behaviour);
        let (code, _, stderr, peak) = import_measured(&campaign, port);
        assert_bounded(peak, &stderr);
        assert_eq!(code, Some(2), "{behaviour:?}: {stderr}");
        assert!(stderr.contains(expected), "{behaviour:?}: {stderr}");
        assert!(
            stderr.contains("check that the URL points at your mail provider's IMAP server"),
            "{stderr}"
        );
    }
}

#[test]
fn imap_giant_literal_is_skipped_unread_and_the_next_message_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (campaign, db) = campaign_with_ledger(dir.path());
    let (port, log) = start_hostile_imap(Hostile::GiantLiteral);
    let (code, stdout, stderr, peak) = import_measured(&campaign, port);
    assert_bounded(peak, &stderr);
    assert_eq!(
        code,
        Some(1),
        "a skipped message is a problem to report: {stderr}"
    );
    assert!(
        stderr.contains(
            "imap://bounces@127.0.0.1/INBOX;UID=1: skipped, not read: the server says it is \
             5000000000 bytes, over the 25 MiB cap on one message"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--maildir or --mbox"), "{stderr}");
    assert!(stdout.contains("messages read       1"), "{stdout}");
    assert!(stdout.contains("recorded            1"), "{stdout}");
    assert_eq!(
        states(&mailroom_test_conn(&db))["alice@example.org"],
        "bounced_hard"
    );
    // The connection was dropped mid-literal and a second one went on with UID 2.
    let log = log.lock().unwrap();
    let logins = log.iter().filter(|l| l.contains(" LOGIN ")).count();
    assert_eq!(logins, 2, "{log:?}");
    assert!(
        log.iter().any(|l| l.ends_with("UID FETCH 2 BODY.PEEK[]")),
        "{log:?}"
    );
}

#[test]
fn imap_message_listed_over_the_cap_is_never_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (campaign, db) = campaign_with_ledger(dir.path());
    let (port, log) = start_hostile_imap(Hostile::ListedGiant);
    let (code, stdout, stderr, peak) = import_measured(&campaign, port);
    assert_bounded(peak, &stderr);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(";UID=1: skipped, not read: the server says it is 5000000000 bytes"),
        "{stderr}"
    );
    assert!(stdout.contains("recorded            1"), "{stdout}");
    assert_eq!(
        states(&mailroom_test_conn(&db))["alice@example.org"],
        "bounced_hard"
    );
    let log = log.lock().unwrap();
    assert!(!log.iter().any(|l| l.contains("UID FETCH 1 ")), "{log:?}");
    assert!(log.iter().any(|l| l.ends_with("LOGOUT")), "{log:?}");
    // Read-only: EXAMINE, never SELECT; BODY.PEEK[], never BODY[].
    assert!(log.iter().any(|l| l.contains(" EXAMINE ")), "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l.contains("SELECT") || l.contains(" BODY[]")),
        "{log:?}"
    );
}

/// The ledger at `path`, created and migrated by mailroom, as a raw connection for seeding and
/// inspecting it in tests (mailroom itself never hands out its connection).
#[allow(dead_code)]
fn mailroom_test_conn(path: &std::path::Path) -> rusqlite::Connection {
    drop(mailroom::store::open(path).unwrap());
    rusqlite::Connection::open(path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Hostile sizes: the work per message is linear and the output bounded.

/// A DSN of `n` recipient groups (about 100 bytes each), every address also named in the
/// human-readable part, as an MTA writes it.
fn huge_dsn(n: usize) -> Vec<u8> {
    let mut human = String::new();
    let mut groups = String::new();
    for i in 0..n {
        human.push_str(&format!(
            "<user{i}@example.net>: host mx.example.net said: 550 5.1.1 no such user\r\n"
        ));
        groups.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; user{i}@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
    }
    format!(
        "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces@news.example.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\n{human}\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\
         {groups}\r\n--B--\r\n"
    )
    .into_bytes()
}

#[test]
fn a_dsn_with_a_hundred_thousand_recipients_yields_the_capped_number_of_reports() {
    let raw = huge_dsn(100_000);
    assert!(raw.len() > 10_000_000, "{} bytes", raw.len());
    let reports = bounce::parse(&raw);
    assert_eq!(reports.len(), bounce::MAX_REPORTS);
    // The first recipients, each once, each classified from its own group.
    assert_eq!(reports[0].recipient, "user0@example.net");
    assert_eq!(reports[999].recipient, "user999@example.net");
    let distinct: std::collections::HashSet<&str> =
        reports.iter().map(|r| r.recipient.as_str()).collect();
    assert_eq!(distinct.len(), reports.len());
    assert!(reports.iter().all(|r| r.kind == FeedbackKind::Hard));
}

/// Twenty times the cap: enough to show the cap and the linear segmentation, small enough for a
/// debug build.
#[test]
fn a_text_bounce_naming_twenty_thousand_addresses_yields_the_capped_number_of_reports() {
    let mut raw = String::from(
        "From: MAILER-DAEMON@mail.example.com\nTo: news@example.com\nSubject: failure notice\n\n\
         Hi. This is the qmail-send program at mail.example.com.\n\
         I'm afraid I wasn't able to deliver your message to the following addresses.\n\n",
    );
    let mut failed = String::from("X-Failed-Recipients: ");
    for i in 0..20_000 {
        raw.push_str(&format!(
            "<user{i}@example.org>:\nRemote host said: 550 5.1.1 no such user\n\n"
        ));
        if i < 10_000 {
            failed.push_str(&format!("user{i}@example.org, "));
        }
    }
    let reports = bounce::parse(raw.as_bytes());
    assert_eq!(reports.len(), bounce::MAX_REPORTS);
    // The same with a header that names half of them.
    let with_header = raw.replacen("Subject:", &format!("{failed}\nSubject:"), 1);
    let reports = bounce::parse(with_header.as_bytes());
    assert_eq!(reports.len(), bounce::MAX_REPORTS);
    assert!(
        reports
            .iter()
            .all(|r| r.diagnostic.len() <= bounce::MAX_DIAGNOSTIC)
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: whatever the bytes, parsing never panics and stays within its bounds.

use proptest::prelude::*;

/// Every message of both development sets, read once.
fn fixture_messages() -> &'static [Vec<u8>] {
    static MESSAGES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    MESSAGES.get_or_init(|| {
        let mut out = Vec::new();
        for set in ["corpus", "more"] {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_set(set))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                .collect();
            paths.sort();
            out.extend(paths.iter().map(|p| std::fs::read(p).unwrap()));
        }
        out
    })
}

/// The documented bounds of `bounce::parse`'s output.
fn assert_within_bounds(reports: &[bounce::Report]) {
    assert!(
        reports.len() <= bounce::MAX_REPORTS,
        "{} reports",
        reports.len()
    );
    for r in reports {
        // RFC 5321 §4.5.3.1: local part 64 octets (66 quoted), domain 255, and the `@`.
        assert!(r.recipient.len() <= 66 + 1 + 255, "{}", r.recipient);
        assert!(r.recipient.contains('@'), "{}", r.recipient);
        assert!(r.diagnostic.len() <= bounce::MAX_DIAGNOSTIC);
        assert!(r.remote_mta.as_ref().is_none_or(|m| m.len() <= 255));
        let o = &r.original;
        for field in [&o.message_id, &o.token, &o.campaign, &o.to, &o.from] {
            assert!(field.as_ref().is_none_or(|v| v.len() <= 998));
        }
    }
}

/// Pieces real bounces are made of, so that random messages reach the DSN, ARF, transcript and
/// text paths rather than stopping at the header parser.
const PIECES: &[&str] = &[
    "From: MAILER-DAEMON@mx.example.org\r\n",
    "Subject: Undelivered Mail Returned to Sender\r\n",
    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n",
    "Content-Type: message/delivery-status\r\n",
    "Content-Type: message/feedback-report\r\n",
    "Content-Type: message/rfc822\r\n",
    "Content-Type: text/plain; charset=utf-8\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "X-Failed-Recipients: a@example.net, b@example.net\r\n",
    "\r\n",
    "\n",
    "--B\r\n",
    "--B--\r\n",
    "Reporting-MTA: dns; mx.example.org\r\n",
    "Final-Recipient: rfc822; a@example.net\r\n",
    "Original-Recipient: rfc822;\"q..q\"@example.net\r\n",
    "Action: failed\r\n",
    "Status: 5.1.1\r\n",
    "Diagnostic-Code: smtp; 550 5.1.1 <a@example.net>: User unknown\r\n",
    "    continued (in reply to RCPT TO command)\r\n",
    "... while talking to mx.example.net.:\r\n",
    ">>> DATA\r\n",
    "<<< 550-5.7.1 first line\r\n",
    "<<< 554 5.0.0 Service unavailable\r\n",
    "<b@example.net>:\r\nRemote host said: 552 mailbox full\r\n",
    "  c@example.net\r\n    (generated from d@example.com)\r\n",
    "SMTP error from remote mail server after initial connection:\r\n",
    "Feedback-Type: abuse\r\nOriginal-Rcpt-To: e@example.net\r\n",
    "{\"notificationType\":\"Bounce\",\"bounce\":{\"bouncedRecipients\":[{\"emailAddress\":\"f@example.net\"}]}}",
    "--- Below this line is a copy of the message.\r\n",
    "Auto-Submitted: auto-replied\r\n",
    "é日本\u{0}\u{7f}",
    "@@@..@.@",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
        assert_within_bounds(&bounce::parse(&raw));
    }

    #[test]
    fn messages_built_from_bounce_pieces_never_panic_and_stay_bounded(
        pieces in proptest::collection::vec(0..PIECES.len(), 0..64),
    ) {
        let raw: String = pieces.into_iter().map(|i| PIECES[i]).collect();
        assert_within_bounds(&bounce::parse(raw.as_bytes()));
    }

    #[test]
    fn mutated_real_bounces_never_panic_and_stay_bounded(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
        cut in any::<prop::sample::Index>(),
        splice in any::<prop::sample::Index>(),
        piece in 0..PIECES.len(),
    ) {
        let messages = fixture_messages();
        let mut raw = messages[which.index(messages.len())].clone();
        for (at, byte) in flips {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        let at = splice.index(raw.len() + 1);
        raw.splice(at..at, PIECES[piece].bytes());
        assert_within_bounds(&bounce::parse(&raw));
        let end = cut.index(raw.len() + 1);
        assert_within_bounds(&bounce::parse(&raw[..end]));
    }
}
