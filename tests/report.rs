//! Reports and the dashboard over real SQLite ledgers filled by `common/ledger.rs`: numbers are
//! checked against the builder's own tally, formats for their shape, the dashboard by rendering
//! snapshots into ratatui's TestBackend, and the CLI end to end.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use assert_cmd::Command;
use common::ledger::{LedgerBuilder, Written, mixed_ledger};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mailroom::model::DeliveryState;
use mailroom::report::{self, Focus, Ledger, Source, Thresholds, Totals};
use mailroom::tui::{self, App, Status};
use predicates::prelude::PredicateBooleanExt as _;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Expected totals from the builder's tally, without SQL.
fn tally(rows: &[&Written]) -> Totals {
    let mut t = Totals::default();
    for w in rows {
        t.recipients += 1;
        t.relay_accepted += u64::from(w.relay_accepted);
        let slot = match w.state.as_str() {
            "pending" => &mut t.pending,
            "sending" => &mut t.sending,
            "accepted" => &mut t.accepted,
            "deferred" => &mut t.deferred,
            "bounced_hard" => &mut t.bounced_hard,
            "bounced_soft" => &mut t.bounced_soft,
            "complained" => &mut t.complained,
            "suppressed" => &mut t.suppressed,
            "failed" => &mut t.failed,
            _ => &mut t.unknown,
        };
        *slot += 1;
    }
    t
}

fn open(b: &LedgerBuilder) -> Ledger {
    Ledger::open(&b.path).unwrap()
}

fn spring(b: &LedgerBuilder) -> report::CampaignReport {
    report::load(&b.path, Some("spring")).unwrap()
}

#[test]
fn totals_domains_and_rates_match_an_independent_tally() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let r = spring(&b);
    let rows = b.of("spring");
    let expected = tally(&rows);
    assert_eq!(r.totals, expected);
    let sum: u64 = DeliveryState::ALL.iter().map(|s| r.totals.get(*s)).sum();
    assert_eq!(
        sum, r.totals.recipients,
        "each recipient in exactly one state"
    );
    // The builder's scenario, spelled out: 22 accepted by the relay, of which 3 came back later.
    assert_eq!(r.totals.relay_accepted, 22);
    assert_eq!(r.totals.bounced_later(), 3);
    assert_eq!(r.totals.bounced_hard, 6);

    let attempted = expected.recipients - expected.pending - expected.sending - expected.suppressed;
    assert_eq!(
        r.rates.acceptance,
        Some(expected.relay_accepted as f64 / attempted as f64)
    );
    assert_eq!(
        r.rates.hard_bounce,
        Some(expected.bounced_hard as f64 / attempted as f64)
    );
    assert_eq!(r.rates.complaint, Some(1.0 / 22.0));

    let mut by_domain: BTreeMap<&str, Vec<&Written>> = BTreeMap::new();
    for w in &rows {
        by_domain.entry(w.domain.as_str()).or_default().push(w);
    }
    assert_eq!(r.domains.len(), by_domain.len());
    for d in &r.domains {
        assert_eq!(
            d.totals,
            tally(&by_domain[d.domain.as_str()]),
            "{}",
            d.domain
        );
    }
    let sizes: Vec<u64> = r.domains.iter().map(|d| d.totals.recipients).collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "largest domain first"
    );

    // The other campaign's rows never leak in.
    let older = report::load(&b.path, Some("older")).unwrap();
    assert_eq!(older.totals, tally(&b.of("older")));
    assert!(older.reasons.is_empty());
}

#[test]
fn reasons_series_and_recent_come_from_attempts_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let r = spring(&b);
    let rows = b.of("spring");

    let mut expected: BTreeMap<(Source, String, String), u64> = BTreeMap::new();
    let mut minutes: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for w in &rows {
        for (at, code, enhanced, outcome) in &w.attempts {
            let m = minutes.entry(at / 60_000).or_default();
            m.0 += 1;
            m.1 += u64::from(outcome == "accepted");
            if outcome != "accepted" {
                let status = enhanced
                    .clone()
                    .or(code.map(|c| c.to_string()))
                    .unwrap_or_default();
                *expected
                    .entry((Source::Attempt, status, outcome.clone()))
                    .or_default() += 1;
            }
        }
        for (kind, status) in &w.events {
            if kind != "auto_reply" && kind != "delivered" {
                *expected
                    .entry((
                        Source::Feedback,
                        status.clone().unwrap_or_default(),
                        kind.clone(),
                    ))
                    .or_default() += 1;
            }
        }
    }
    let got: BTreeMap<(Source, String, String), u64> = r
        .reasons
        .iter()
        .map(|x| ((x.source, x.status.clone(), x.outcome.clone()), x.count))
        .collect();
    assert_eq!(got, expected);
    let greylist = r.reasons.iter().find(|x| x.status == "4.7.1").unwrap();
    assert_eq!(
        greylist.count, 4,
        "every deferral counts, not every recipient"
    );
    assert!(greylist.example.as_deref().unwrap().contains("Greylisted"));

    let series: BTreeMap<i64, (u64, u64)> = r
        .series
        .iter()
        .map(|p| (p.minute, (p.attempts, p.accepted)))
        .collect();
    assert_eq!(series, minutes);

    assert!(r.recent.len() <= report::RECENT_LIMIT);
    assert!(
        r.recent.windows(2).all(|w| w[0].at >= w[1].at),
        "newest first"
    );
    assert!(
        r.recent[0].is_feedback(),
        "the complaint 2 h later is the newest"
    );
}

#[test]
fn drill_down_shows_every_attempt_with_full_reply_and_later_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let ledger = open(&b);
    let c = ledger.find_campaign(Some("spring")).unwrap();

    let d = ledger
        .drill_down(c.id, &Focus::Recipient("user03@tiny.example".into()))
        .unwrap();
    assert_eq!(d.entries.len(), 2);
    assert!(d.entries[0].is_feedback(), "the later DSN comes first");
    assert_eq!(d.entries[0].status.as_deref(), Some("5.1.1"));
    assert_eq!(d.entries[1].text, "250 2.0.0 Ok: queued as Q3");
    let rcpt = d.recipient.unwrap();
    assert_eq!(rcpt.state, "bounced_hard");
    assert!(rcpt.relay_accepted);

    let d = ledger
        .drill_down(c.id, &Focus::Recipient("user26@corp.example".into()))
        .unwrap();
    assert!(
        d.entries[0].text.contains('\n'),
        "multi-line replies are kept whole"
    );

    let d = ledger
        .drill_down(c.id, &Focus::Domain("tiny.example".into()))
        .unwrap();
    let expected: usize = b
        .of("spring")
        .iter()
        .filter(|w| w.domain == "tiny.example")
        .map(|w| w.attempts.len() + w.events.len())
        .sum();
    assert_eq!(d.entries.len(), expected);
    assert!(d.entries.iter().all(|e| e.email.ends_with("@tiny.example")));

    let d = ledger
        .drill_down(
            c.id,
            &Focus::Reason {
                source: Source::Attempt,
                status: "4.7.1".into(),
            },
        )
        .unwrap();
    assert_eq!(d.entries.len(), 4);
    let d = ledger
        .drill_down(
            c.id,
            &Focus::Reason {
                source: Source::Feedback,
                status: "5.1.1".into(),
            },
        )
        .unwrap();
    assert_eq!(d.entries.len(), 2);
    assert!(d.entries.iter().all(|e| e.is_feedback()));
    let d = ledger
        .drill_down(
            c.id,
            &Focus::Reason {
                source: Source::Attempt,
                status: String::new(),
            },
        )
        .unwrap();
    assert_eq!(
        d.entries.len(),
        2,
        "the lost connection and the refused one"
    );
}

#[test]
fn counters_are_backfilled_when_an_old_ledger_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // A ledger written before 0004 existed: schema 0001 only, rows already in it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(include_str!("../src/store/migrations/0001_init.sql"))
            .unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO campaigns VALUES (1, 'c', 0);
             INSERT INTO recipients (campaign_id, email, domain, line, token, message_id, fields,
                 state, relay_accepted)
             VALUES (1, 'a@x.test', 'x.test', 2, 't1', 'm1', '{}', 'accepted', 1),
                    (1, 'b@x.test', 'x.test', 3, 't2', 'm2', '{}', 'bounced_hard', 0),
                    (1, 'c@y.test', 'y.test', 4, 't3', 'm3', '{}', 'pending', 0);
             INSERT INTO attempts (recipient_id, at, step, code, enhanced, reply, outcome)
             VALUES (1, 60000, 'message', 250, '2.0.0', '250 ok', 'accepted'),
                    (2, 121000, 'rcpt', 550, '5.1.1', '550 5.1.1 no', 'bounced_hard');",
        )
        .unwrap();
    }
    // Reading never upgrades (issue: read paths never write): it says what to run instead.
    let before = std::fs::read(&path).unwrap();
    let err = report::load(&path, None).err().unwrap().to_string();
    assert!(err.contains("mailroom upgrade"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "a read changed the ledger"
    );
    // The upgrade (what `mailroom upgrade` and every writing command do) backfills the counters.
    drop(mailroom::store::open(&path).unwrap());
    let r = report::load(&path, None).unwrap();
    assert_eq!(r.totals.recipients, 3);
    assert_eq!(r.totals.accepted, 1);
    assert_eq!(r.totals.bounced_hard, 1);
    assert_eq!(r.totals.pending, 1);
    assert_eq!(r.totals.relay_accepted, 1);
    assert_eq!(r.series.len(), 2);
    assert_eq!(r.reasons.len(), 1);
    assert_eq!(r.reasons[0].status, "5.1.1");
}

#[test]
fn json_has_the_contract_keys_and_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let r = spring(&b);
    let mut out = Vec::new();
    report::write_json(&r, &mut out).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["campaign"], "spring");
    let expected = tally(&b.of("spring"));
    for (key, value) in [
        ("recipients", expected.recipients),
        ("pending", expected.pending),
        ("sending", expected.sending),
        ("accepted", expected.accepted),
        ("deferred", expected.deferred),
        ("bounced_hard", expected.bounced_hard),
        ("bounced_soft", expected.bounced_soft),
        ("complained", expected.complained),
        ("suppressed", expected.suppressed),
        ("failed", expected.failed),
        ("unknown", expected.unknown),
        ("relay_accepted", expected.relay_accepted),
    ] {
        assert_eq!(json["totals"][key], value, "totals.{key}");
    }
    assert!(json["rates"]["acceptance"].is_f64());
    assert_eq!(json["domains"].as_array().unwrap().len(), 4);
    assert!(json["domains"][0]["domain"].is_string());
    assert!(json["domains"][0]["relay_accepted"].is_u64());
    assert!(json["reasons"][0]["status"].is_string());
    assert!(json["series"][0]["minute"].is_i64());
    assert_eq!(json["bounced_later"], 3);
}

#[test]
fn csv_has_one_row_per_recipient_with_the_last_reply() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let ledger = open(&b);
    let c = ledger.find_campaign(Some("spring")).unwrap();
    let mut out = Vec::new();
    report::write_csv(&ledger, c.id, &mut out).unwrap();
    let mut reader = csv::Reader::from_reader(out.as_slice());
    assert_eq!(
        reader.headers().unwrap(),
        vec![
            "email",
            "state",
            "code",
            "enhanced_code",
            "reply",
            "attempts",
            "last_attempt_at",
            "relay_accepted"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let written = b.of("spring");
    assert_eq!(records.len(), written.len());
    for (rec, w) in records.iter().zip(&written) {
        assert_eq!(&rec[0], w.email);
        assert_eq!(&rec[1], w.state);
        assert_eq!(rec[5].parse::<usize>().unwrap(), w.attempts.len());
        assert_eq!(&rec[7], if w.relay_accepted { "1" } else { "0" });
    }
    let soft = records
        .iter()
        .find(|r| &r[0] == "user26@corp.example")
        .unwrap();
    assert_eq!(&soft[2], "552");
    assert_eq!(&soft[3], "5.2.2");
    assert!(
        soft[4].contains("over quota.\n552 5.2.2"),
        "reply kept whole"
    );
    assert!(soft[6].ends_with('Z') && soft[6].contains('T'));
}

#[test]
fn markdown_and_html_are_shareable_and_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let r = spring(&b);

    let mut md = Vec::new();
    report::write_markdown(&r, &mut md).unwrap();
    let md = String::from_utf8(md).unwrap();
    assert!(md.starts_with("# Deliverability report: spring\n"));
    assert!(md.contains("| gmail.test | 10 |"));
    assert!(md.contains("| 5.1.1 | smtp | bounced\\_hard | 4 |"));
    assert!(md.contains("| accepted by the relay | 19 |"));
    assert_no_delivered_claim(&md);

    let mut html = Vec::new();
    report::write_html(&r, &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 2, "funnel and series charts");
    for external in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "no external assets: {external}");
    }
    assert!(html.contains("<td>gmail.test</td><td>10</td>"));
    // Reply text is escaped, not interpreted.
    assert!(html.contains("&lt;user&gt;"));
    assert_no_delivered_claim(&html);

    let mut text = Vec::new();
    report::write_text(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("accepted by the relay"));
    assert!(text.contains("Ever accepted by the relay"));
    assert_no_delivered_claim(&text);
}

/// "delivered" may only appear as "not delivered" (explaining what acceptance means).
fn assert_no_delivered_claim(text: &str) {
    let lower = text.to_lowercase();
    assert_eq!(
        lower.matches("delivered").count(),
        lower.matches("not delivered").count(),
        "a report must never call a relay acceptance delivered"
    );
}

// ---- the dashboard ------------------------------------------------------------------------

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| tui::view::render(app, f)).unwrap();
    terminal.backend().to_string()
}

/// A dashboard on the mixed ledger, with the snapshot time fixed for stable renders.
fn dashboard(b: &LedgerBuilder, focus: Option<Focus>) -> App {
    let ledger = open(b);
    let mut snapshot = tui::snapshot(&ledger, Some("spring"), focus.as_ref()).unwrap();
    snapshot.taken_at = 1_772_366_400_000;
    let mut app = App::new(
        "ledger.db".into(),
        Some("spring".into()),
        Thresholds::default(),
    );
    if let Some(focus) = focus {
        app.drill = Some(tui::app::Drill { focus, scroll: 0 });
    }
    app.apply(Status::Ready(Box::new(snapshot)));
    app
}

#[test]
fn dashboard_renders_at_80x24_and_160x48() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let app = dashboard(&b, None);
    insta::assert_snapshot!("dashboard_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("dashboard_160x48", render(&app, 160, 48));
    let mut app = app;
    app.handle_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    insta::assert_snapshot!("dashboard_80x24_reasons", render(&app, 80, 24));
    app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
    insta::assert_snapshot!("dashboard_80x24_help", render(&app, 80, 24));
}

#[test]
fn dashboard_drill_down_renders_full_replies() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let app = dashboard(&b, Some(Focus::Recipient("user03@tiny.example".into())));
    let screen = render(&app, 160, 48);
    assert!(screen.contains("250 2.0.0 Ok: queued as Q3"));
    assert!(screen.contains("smtp; 550 5.1.1 <user> mailbox unknown"));
    insta::assert_snapshot!("dashboard_drill_160x48", screen);
    let app = dashboard(&b, Some(Focus::Domain("corp.example".into())));
    insta::assert_snapshot!("dashboard_drill_domain_80x24", render(&app, 80, 24));
}

#[test]
fn dashboard_and_report_numbers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let ledger = open(&b);
    let snapshot = tui::snapshot(&ledger, Some("spring"), None).unwrap();
    let dash = snapshot.report.unwrap();
    let rep = spring(&b);
    assert_eq!(dash, rep, "one query module: identical data");
    // And what is on screen is those numbers.
    let app = dashboard(&b, None);
    let screen = render(&app, 160, 48);
    let funnel_line = screen
        .lines()
        .find(|l| l.contains("├ relay accepted"))
        .unwrap();
    assert!(funnel_line.contains(&format!("{:>8}", rep.totals.relay_accepted)));
    let recipients_line = screen.lines().find(|l| l.contains("│Recipients")).unwrap();
    assert!(recipients_line.contains(&format!("{:>8}", rep.totals.recipients)));
}

#[test]
fn dashboard_explains_missing_and_empty_ledgers() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let (kept, status) = tui::fetch(&missing, None, None, None);
    assert!(kept.is_none());
    assert_eq!(status, Status::Missing);
    let mut app = App::new(missing, None, Thresholds::default());
    app.apply(status);
    let screen = render(&app, 80, 24);
    assert!(screen.contains("No ledger yet"));
    assert!(screen.contains("mailroom send"));

    let empty = dir.path().join("empty.db");
    drop(mailroom::store::open(&empty).unwrap());
    let (_, mut status) = tui::fetch(&empty, None, None, None);
    if let Status::Ready(snapshot) = &mut status {
        snapshot.taken_at = 1_772_366_400_000;
    }
    let mut app = App::new(empty, None, Thresholds::default());
    app.apply(status);
    insta::assert_snapshot!("dashboard_empty_80x24", render(&app, 80, 24));

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, "this is not a database").unwrap();
    let (_, status) = tui::fetch(&garbage, None, None, None);
    assert!(matches!(status, Status::Failed(_)));
    let mut app = App::new(garbage, None, Thresholds::default());
    app.apply(status);
    assert!(render(&app, 80, 24).contains("Cannot read the ledger"));
}

#[test]
fn dashboard_refresh_sees_what_another_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = mixed_ledger(&dir.path().join("l.db"));
    // The dashboard keeps its read-only connection between refreshes.
    let (kept, status) = tui::fetch(&b.path, None, Some("spring"), None);
    let Status::Ready(before) = status else {
        panic!("no snapshot: {status:?}");
    };
    let before = before.report.unwrap().totals;
    // A send in another connection finishes a pending recipient, later than anything else.
    let pending = b
        .recipients
        .iter()
        .position(|w| w.campaign == "spring" && w.state == "pending")
        .unwrap();
    b.attempt(
        pending,
        1_772_391_600_000,
        "message",
        Some(250),
        Some("2.0.0"),
        "250 ok",
        "accepted",
    );
    let (_, status) = tui::fetch(&b.path, kept, Some("spring"), None);
    let Status::Ready(after) = status else {
        panic!("no snapshot: {status:?}");
    };
    let after = after.report.unwrap();
    assert_eq!(after.totals.pending, before.pending - 1);
    assert_eq!(after.totals.accepted, before.accepted + 1);
    assert_eq!(after.totals.relay_accepted, before.relay_accepted + 1);
    assert_eq!(after.recent[0].email, b.recipients[pending].email);
}

#[test]
fn dashboard_survives_tiny_terminals() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let mut app = dashboard(&b, None);
    for (w, h) in [(20, 5), (1, 1), (80, 10), (40, 24)] {
        render(&app, w, h);
    }
    app.help = true;
    render(&app, 10, 4);
}

// ---- the CLI -------------------------------------------------------------------------------

fn mailroom() -> Command {
    Command::cargo_bin("mailroom").unwrap()
}

#[test]
fn cli_report_json_and_text_from_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let out = mailroom()
        .args(["report", "--db"])
        .arg(&b.path)
        .args(["--campaign", "spring", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["totals"]["recipients"], 40);
    assert_eq!(json["totals"]["relay_accepted"], 22);

    mailroom()
        .args(["report", "--db"])
        .arg(&b.path)
        .args(["--campaign", "spring"])
        .assert()
        .success()
        .stdout(predicates::str::contains("accepted by the relay"));

    // Two campaigns and no name: say which exist.
    mailroom()
        .args(["report", "--db"])
        .arg(&b.path)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("spring").and(predicates::str::contains("--campaign")));
    mailroom()
        .args(["report", "--db"])
        .arg(&b.path)
        .args(["--campaign", "autumn"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no campaign named `autumn`"));
}

#[test]
fn cli_report_explains_a_campaign_never_sent_and_an_empty_ledger() {
    let dir = tempfile::tempdir().unwrap();
    mailroom()
        .args(["report", "--db"])
        .arg(dir.path().join("missing.db"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains("has not been sent yet"));
    let empty = dir.path().join("empty.db");
    drop(mailroom::store::open(&empty).unwrap());
    mailroom()
        .args(["report", "--db"])
        .arg(&empty)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no campaign yet"));
}

/// Copies the shared campaign fixture into `dir` and returns the folder.
fn campaign_folder(dir: &std::path::Path) -> std::path::PathBuf {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/campaigns/base");
    let dst = dir.join("campaign");
    copy_dir(&src, &dst);
    dst
}

fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

#[test]
fn cli_report_resolves_a_campaign_folder_to_its_ledger_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let folder = campaign_folder(dir.path());
    mailroom()
        .arg("report")
        .arg(&folder)
        .assert()
        .code(2)
        .stderr(
            predicates::str::contains("has not been sent yet")
                .and(predicates::str::contains("mailroom send")),
        );

    // The default store is <folder>/mailroom.db; the ledger also holds another campaign, so the
    // name must come from campaign.toml ("fixture").
    let mut b = LedgerBuilder::new(&folder.join("mailroom.db"));
    let other = b.campaign("other", 1);
    b.recipient(other, "x@other.test");
    let fixture = b.campaign("fixture", 2);
    let r = b.recipient(fixture, "ann@example.org");
    b.attempt(
        r,
        1_772_355_600_000,
        "message",
        Some(250),
        Some("2.0.0"),
        "250 ok",
        "accepted",
    );
    b.recipient(fixture, "bob@example.org");
    let out = mailroom()
        .arg("report")
        .arg(folder.join("campaign.toml"))
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["campaign"], "fixture");
    assert_eq!(json["totals"]["recipients"], 2);
    assert_eq!(json["totals"]["accepted"], 1);
    assert_eq!(json["totals"]["pending"], 1);

    let csv = mailroom()
        .arg("report")
        .arg(&folder)
        .args(["--format", "csv"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + one row per recipient");
    assert!(csv.contains("ann@example.org,accepted,250,2.0.0,250 ok,1,2026-03-01T09:00:00Z,1"));
}

#[test]
fn text_and_markdown_reports_read_well() {
    let dir = tempfile::tempdir().unwrap();
    let b = mixed_ledger(&dir.path().join("l.db"));
    let r = spring(&b);
    let mut text = Vec::new();
    report::write_text(&r, &mut text).unwrap();
    insta::assert_snapshot!("report_text", String::from_utf8(text).unwrap());
    let mut md = Vec::new();
    report::write_markdown(&r, &mut md).unwrap();
    insta::assert_snapshot!("report_md", String::from_utf8(md).unwrap());
}

#[test]
fn counters_stay_equal_to_a_full_recount_under_arbitrary_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let b = mixed_ledger(&path);
    drop(b);
    let conn = mailroom_test_conn(&path);
    // Every kind of write a sender, a bounce import or a manual fix could make, including ones
    // no module does today (moving a recipient to another domain, deleting rows).
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let states = [
        "pending",
        "sending",
        "accepted",
        "deferred",
        "bounced_hard",
        "bounced_soft",
        "complained",
        "suppressed",
        "failed",
        "unknown",
    ];
    for step in 0..120 {
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM recipients")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !ids.is_empty(),
            "the seed deletes too much: every write must have a target"
        );
        let id = ids[next(ids.len() as u64) as usize];
        match next(10) {
            0 | 6 => conn
                .execute(
                    "UPDATE recipients SET state = ?2 WHERE id = ?1",
                    rusqlite::params![id, states[next(10) as usize]],
                )
                .unwrap(),
            1 | 3 => conn
                .execute(
                    "UPDATE recipients SET relay_accepted = 1 - relay_accepted, \
                     state = ?2 WHERE id = ?1",
                    rusqlite::params![id, states[next(10) as usize]],
                )
                .unwrap(),
            2 => conn
                .execute(
                    // The domain is computed from the address: moving the address moves it.
                    "UPDATE recipients SET email = ?2 WHERE id = ?1",
                    rusqlite::params![id, format!("moved{id}@moved{}.example", next(3))],
                )
                .unwrap(),
            5 => conn
                .execute(
                    "UPDATE recipients SET attempts = attempts + 1, last_code = 250 WHERE id = ?1",
                    [id],
                )
                .unwrap(),
            // A claim and a release as the ledger writer makes them (the counters keep a row
            // in flight under the state it was claimed from).
            4 => conn
                .execute(
                    "UPDATE recipients SET state = 'sending', claimed_from = state \
                     WHERE id = ?1 AND state <> 'sending'",
                    [id],
                )
                .unwrap(),
            8 => conn
                .execute(
                    "UPDATE recipients SET state = coalesce(claimed_from, 'pending'), \
                     claimed_from = NULL WHERE id = ?1 AND state = 'sending'",
                    [id],
                )
                .unwrap(),
            _ => {
                conn.execute("DELETE FROM attempts WHERE recipient_id = ?1", [id])
                    .unwrap();
                conn.execute("DELETE FROM events WHERE recipient_id = ?1", [id])
                    .unwrap();
                conn.execute("DELETE FROM recipients WHERE id = ?1", [id])
                    .unwrap()
            }
        };
        if step % 20 == 0 || step == 119 {
            let recount: Vec<(i64, String, String, i64, i64)> = conn
                .prepare(
                    "SELECT campaign_id, domain, state, relay_accepted, count(*) FROM recipients \
                     GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
                )
                .unwrap()
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            // What every report reads: the counters, with the rows in flight moved back
            // under `sending`.
            let mut counters: Vec<(i64, String, String, i64, i64)> = Vec::new();
            mailroom::store::Reader::open(&path)
                .unwrap()
                .for_each_count(None, |row| {
                    counters.push((
                        row.campaign.0,
                        row.domain.to_owned(),
                        row.state.to_owned(),
                        i64::from(row.relay_accepted),
                        i64::try_from(row.n).unwrap(),
                    ));
                })
                .unwrap();
            counters.sort();
            assert_eq!(counters, recount, "after write {step}");
        }
    }
}

// ---- `send --dashboard`: the dashboard embedded in a real send, in a real terminal (tmux) ----

/// Writes a campaign that sends `n` messages to `sandbox` over plain loopback SMTP.
fn sandbox_campaign(dir: &std::path::Path, port: u16, n: usize) -> std::path::PathBuf {
    let root = dir.join("live");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!(
            "[campaign]\nname = \"live-dash\"\nfrom = \"news@example.com\"\nsubject = \"Hi\"\n\
             text = \"body.txt.hbs\"\n\n[contacts]\npath = \"contacts.csv\"\n\n[smtp]\n\
             host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\n[rate]\nper_second = 20\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("body.txt.hbs"), "Hello {{email}}\n").unwrap();
    let mut csv = String::from("email\n");
    for i in 0..n {
        csv.push_str(&format!("reader{i}@dash.example\n"));
    }
    std::fs::write(root.join("contacts.csv"), csv).unwrap();
    root
}

#[test]
fn send_dashboard_refuses_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let root = sandbox_campaign(dir.path(), 9, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["send", "--yes", "--dashboard"])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--dashboard needs a terminal"), "{stderr}");
    assert!(!root.join("mailroom.db").exists(), "nothing imported");
}

fn tmux(args: &[&str]) -> std::process::Output {
    std::process::Command::new("tmux")
        .args(args)
        .output()
        .unwrap()
}

/// Polls the tmux pane until `pred` holds (bounded: the send is paced at 20 messages/s).
fn wait_for_pane(session: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = tmux(&["capture-pane", "-p", "-t", session]);
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        if pred(&screen) {
            return screen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; screen:\n{screen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The dashboard runs inside `send`, shows the live campaign while the pipeline sends, and
/// quitting it mid-run stops claiming new recipients, lets in-flight messages finish and still
/// prints the summary; every recipient is accounted for in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dashboard_shows_the_run_and_q_stops_it_gracefully() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        let msg = "SKIPPED: send --dashboard test needs tmux (apt-get install tmux)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{msg} (CI=true)"
        );
        eprintln!("{msg}");
        return;
    }
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let sb = mailroom::sandbox::start(
        mailroom::sandbox::SandboxConfig::new(dir.path().join("maildir")).tls(false),
    )
    .await
    .unwrap();
    // 400 messages at 20/s: the run is still going when q is pressed.
    let root = sandbox_campaign(dir.path(), sb.addr().port(), 400);
    let session = format!("mailroom-dash-{}", std::process::id());
    let done = dir.path().join("done");
    let cmd = format!(
        // stdout stays on the terminal (the dashboard draws there, the summary follows it);
        // the shell lingers so the final screen can be read.
        "{} send --yes --dashboard {} 2> {}/err.txt; echo $? > {}; sleep 60",
        env!("CARGO_BIN_EXE_mailroom"),
        root.display(),
        dir.path().display(),
        done.display()
    );
    let session2 = session.clone();
    let screen = tokio::task::spawn_blocking(move || {
        let started = tmux(&[
            "new-session",
            "-d",
            "-s",
            &session2,
            "-x",
            "120",
            "-y",
            "40",
            "sh",
            "-c",
            &cmd,
        ]);
        assert!(started.status.success(), "{started:?}");
        wait_for_pane(
            &session2,
            "the dashboard with some accepted messages",
            // The whole first frame: tmux can show one half drawn.
            |s| s.contains("live-dash") && s.contains("Funnel") && s.contains("Domains"),
        )
    })
    .await
    .unwrap();
    assert!(screen.contains("Domains"), "{screen}");
    let db = root.join("mailroom.db");
    // Wait until some messages were accepted, then quit the dashboard.
    let accepted_now = || -> i64 {
        let Ok(conn) =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return 0;
        };
        conn.query_row(
            "SELECT count(*) FROM recipients WHERE state = 'accepted'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while accepted_now() < 5 {
        assert!(std::time::Instant::now() < deadline, "nothing accepted");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "send did not stop after q"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let screen =
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned();
    let _ = tmux(&["kill-session", "-t", &session]);
    let code = std::fs::read_to_string(&done).unwrap();
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert_eq!(
        code.trim(),
        "130",
        "a stopped run exits 130:\n{screen}\n{err}"
    );
    assert!(err.contains("dashboard closed"), "{err}");
    // The terminal was restored and the summary printed after the dashboard.
    assert!(screen.contains("accepted by the relay"), "{screen}\n{err}");
    // Stopped early: some accepted, the rest still pending, nobody left `sending`, and the
    // sandbox holds exactly the accepted ones.
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let count = |state: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM recipients WHERE state = ?1",
            [state],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (accepted, pending) = (count("accepted"), count("pending"));
    assert!(
        accepted >= 5 && pending > 0,
        "accepted {accepted}, pending {pending}"
    );
    assert_eq!(accepted + pending, 400);
    assert_eq!(count("sending"), 0);
    let stored = std::fs::read_dir(dir.path().join("maildir/new"))
        .unwrap()
        .count();
    assert_eq!(stored as i64, accepted);
}

#[test]
fn dashboard_without_a_terminal_says_so_and_names_a_missing_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["dashboard", "--db"])
        .arg(&missing)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the dashboard needs a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("does not exist yet"), "{stderr}");
    assert!(stderr.contains("mailroom report"), "{stderr}");
    assert!(!missing.exists(), "nothing created");
}

/// The ledger at `path`, created and migrated by mailroom, as a raw connection for seeding and
/// inspecting it in tests (mailroom itself never hands out its connection).
#[allow(dead_code)]
fn mailroom_test_conn(path: &std::path::Path) -> rusqlite::Connection {
    drop(mailroom::store::open(path).unwrap());
    rusqlite::Connection::open(path).unwrap()
}
