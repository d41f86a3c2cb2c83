//! Campaign operations of issue 15 through the real binary and the sandbox relay: test sends
//! (`send --test`), seeds, send windows and warm-up. Each test asserts what the relay received
//! (the sandbox's transcript and Maildir) and what the ledger says, and that the campaign's
//! recipients are untouched where they must be.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::fixture::Fixture;
use common::relay::{PASSWORD, Relay, USER};
use mail_parser::MessageParser;
use serde_json::Value;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `mailroom ARGS DIR` with the relay's password in the environment, off the test's runtime.
async fn mailroom(args: &[&str], dir: &Path) -> Out {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(&args)
            .arg(&dir)
            .env("RELAY_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The base fixture pointed at `relay` over STARTTLS with AUTH, trusting `ca` (when given).
fn campaign_for(relay: &Relay, ca: Option<&Path>) -> Fixture {
    let f = Fixture::base();
    let ca = ca.map_or_else(String::new, |p| format!("ca_file = \"{}\"\n", p.display()));
    f.append_toml(&format!(
        "[smtp]\nhost = \"localhost\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{USER}\"\n\
         password_env = \"RELAY_PASSWORD\"\n{ca}\n[rate]\nper_second = 1000\n",
        relay.port()
    ));
    f
}

/// (state, attempts) of every recipient, by address.
fn recipients(ledger: &Path) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare("SELECT email, state, attempts FROM recipients ORDER BY email")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_reaches_only_the_test_addresses_and_never_touches_a_recipient() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    let ledger = f.path().join("mailroom.db");

    // Before any send: the first valid row's message, to two test addresses.
    let out = mailroom(
        &["send", "--test", "qa@example.net,Boss@Example.NET"],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("test send to qa@example.net: accepted by the relay"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("boss@example.net"), "{}", out.stdout);
    assert!(recipients(&ledger).is_empty(), "a test send imports no one");
    assert_eq!(relay.rcpts_for("ann@example.com"), 0);
    let copy = relay.body_of("qa@example.net");
    let m = MessageParser::default().parse(copy.as_bytes()).unwrap();
    assert_eq!(m.subject(), Some("[TEST] Grüße, Ann!"));
    assert_eq!(
        m.to().unwrap().first().unwrap().address(),
        Some("qa@example.net")
    );
    // Ann's own message: the same body, but not her Message-ID or token (a bounce of the copy
    // can never be matched to her).
    assert!(m.body_text(0).unwrap().contains("Ann"));
    let ann_token = mailroom::campaign::recipient_token("fixture", "ann@example.com");
    assert!(!copy.contains(&ann_token), "{copy}");
    assert!(copy.contains("Return-Path: <bounces+test"), "{copy}");

    // A real send, then a test send of line 3: every recipient stays as the real send left it.
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let after_send = recipients(&ledger);
    assert!(
        after_send
            .iter()
            .all(|(_, s, n)| s == "accepted" && *n == 1),
        "{after_send:?}"
    );
    let out = mailroom(
        &["send", "--test", "ann@example.com", "--line", "3"],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        recipients(&ledger),
        after_send,
        "a test send to a recipient changes nothing"
    );
    assert_eq!(
        relay.copies_for("ann@example.com"),
        2,
        "her message and the test copy"
    );

    // The report lists the three test sends apart; totals count the campaign only.
    let out = mailroom(&["report", "--format", "json"], f.path()).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["test_send_count"], 3, "{v:#}");
    assert_eq!(v["totals"]["recipients"], after_send.len());
    assert_eq!(v["totals"]["relay_accepted"], after_send.len());
    assert_eq!(v["test_sends"][0]["source_line"], 3);
    assert_eq!(v["test_sends"][0]["address"], "ann@example.com");
    assert_eq!(v["test_sends"][0]["kind"], "test");
    let text = mailroom(&["report"], f.path()).await.stdout;
    assert!(text.contains("Test sends (3)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_refuses_an_untrusted_certificate_and_plaintext_like_a_real_send() {
    let relay = Relay::tls("", |c| c).await;
    // The sandbox's CA is not trusted: the certificate is refused, nothing is sent.
    let f = campaign_for(&relay, None);
    let out = mailroom(&["send", "--test", "qa@example.net"], f.path()).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("TLS failed"), "{}", out.stderr);
    assert!(out.stderr.contains("Nothing was sent"), "{}", out.stderr);
    assert!(!relay.transcript_has("MAIL"));

    // A relay without STARTTLS: refused before AUTH and MAIL.
    let plain = Relay::start("[session]\nstarttls = false\n", |c| c.auth(USER, PASSWORD)).await;
    let f = campaign_for(&plain, Some(&plain.ca));
    let out = mailroom(&["send", "--test", "qa@example.net"], f.path()).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(!plain.transcript_has("AUTH") && !plain.transcript_has("MAIL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_picks_its_row_like_preview() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    let out = mailroom(
        &[
            "send",
            "--test",
            "qa@example.net",
            "--to",
            "BOB@bücher.example",
        ],
        f.path(),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let m_text = relay.body_of("qa@example.net");
    let m = MessageParser::default().parse(m_text.as_bytes()).unwrap();
    assert_eq!(m.subject(), Some("[TEST] Grüße, Bob!"));
    for (args, needle) in [
        (&["--line", "99"][..], "no contact record starts at line 99"),
        (
            &["--to", "nobody@example.com"][..],
            "no valid contact has the address",
        ),
        (&["--limit", "1"][..], "cannot be used with"),
    ] {
        let mut all = vec!["send", "--test", "qa@example.net"];
        all.extend_from_slice(args);
        let out = mailroom(&all, f.path()).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

// ---------------------------------------------------------------------------------------------
// Send windows and warm-up, through the library with an injected clock: no test waits for the
// real time of day.

use std::sync::Arc;

use mailroom::clock::ManualClock;
use mailroom::pipeline::{End, Options};
use mailroom::schedule::Window;
use mailroom::store::NewRecipient;

/// Unix ms of a local time in `zone`.
fn local(s: &str, zone: &str) -> i64 {
    let dt: jiff::civil::DateTime = s.replace(' ', "T").parse().unwrap();
    dt.to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
        .unwrap()
        .timestamp()
        .as_millisecond()
}

/// Mon-Fri 09:00-17:30 in Berlin.
fn office_hours() -> Window {
    let days: Vec<String> = ["mon", "tue", "wed", "thu", "fri"]
        .iter()
        .map(|d| (*d).to_owned())
        .collect();
    Window::new("Europe/Berlin", &days, "09:00-17:30", None).unwrap()
}

/// Options for a window run: one connection, `per_second` pacing, the clock at `now` moving
/// `step` ms per reading.
fn windowed(per_second: f64, now: i64, step: i64) -> Options {
    let mut o = common::options(1);
    o.rate.per_second = Some(per_second);
    o.window = Some(office_hours());
    o.clock = Arc::new(ManualClock::new(now, step));
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_nothing_is_claimed_or_connected_and_the_run_says_when_it_opens() {
    let relay = Relay::plain("").await;
    // Monday 2026-12-07, 08:00 in Berlin.
    let options = windowed(1000.0, local("2026-12-07 08:00", "Europe/Berlin"), 0);
    let people = common::contacts(&["a", "b", "c"]);
    let (summary, _) = common::run_once(
        &relay.ledger(),
        "window",
        people,
        relay.plain_settings(),
        options,
        common::plain(),
        mailroom::shutdown::Shutdown::new(),
    )
    .await;
    assert_eq!(
        summary.end,
        End::Window {
            opens_at: Some(local("2026-12-07 09:00", "Europe/Berlin"))
        }
    );
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("pending", 3)])
    );
    assert_eq!(relay.seen().sessions, 0, "not even a connection");
    assert_eq!(common::last_run_outcome(&relay.ledger()), "window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_the_run_sleeps_by_its_clock_until_the_window_opens() {
    let relay = Relay::plain("").await;
    // Saturday night: the window opens on Monday morning; the clock's wait returns at once.
    let mut options = windowed(1000.0, local("2026-12-05 23:00", "Europe/Berlin"), 0);
    options.wait = true;
    let (summary, _) = common::run_once(
        &relay.ledger(),
        "window",
        common::contacts(&["a", "b", "c"]),
        relay.plain_settings(),
        options,
        common::plain(),
        mailroom::shutdown::Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("accepted", 3)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_stops_claiming_at_the_windows_end_and_leaves_the_rest_uncharged() {
    let relay = Relay::plain("").await;
    // 17:29:00, and every reading of the clock is 20 s later: one claim per reading (20/s on
    // one connection claims one row at a time), so the third claim finds 17:30:00.
    let options = windowed(20.0, local("2026-12-07 17:29", "Europe/Berlin"), 20_000);
    let (summary, _) = common::run_once(
        &relay.ledger(),
        "window",
        common::contacts(&["a", "b", "c", "d", "e", "f"]),
        relay.plain_settings(),
        options,
        common::plain(),
        mailroom::shutdown::Shutdown::new(),
    )
    .await;
    assert_eq!(
        summary.end,
        End::Window {
            opens_at: Some(local("2026-12-08 09:00", "Europe/Berlin"))
        }
    );
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("accepted", 2), ("pending", 4)])
    );
    assert_eq!(relay.stored(), 2);
}

/// `n` contacts whose stored fields carry a time zone in the column `tz`.
fn with_zones(zones: &[(&str, &str)]) -> Vec<NewRecipient> {
    let locals: Vec<&str> = zones.iter().map(|(l, _)| *l).collect();
    let mut people = common::contacts(&locals);
    for (p, (_, zone)) in people.iter_mut().zip(zones) {
        p.fields = format!("{{\"tz\":\"{zone}\"}}");
    }
    people
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipients_own_zone_decides_when_their_message_goes() {
    let relay = Relay::plain("").await;
    // Monday 10:00 in Berlin is 04:00 in New York.
    let people = with_zones(&[
        ("berlin", "Europe/Berlin"),
        ("newyork", "America/New_York"),
        ("default", ""),
    ]);
    let mut options = windowed(1000.0, local("2026-12-07 10:00", "Europe/Berlin"), 0);
    options.timezone_column = Some("tz".into());
    let (summary, _) = common::run_once(
        &relay.ledger(),
        "zones",
        people.clone(),
        relay.plain_settings(),
        options,
        common::plain(),
        mailroom::shutdown::Shutdown::new(),
    )
    .await;
    assert_eq!(
        summary.end,
        End::Window {
            opens_at: Some(local("2026-12-07 09:00", "America/New_York"))
        }
    );
    assert_eq!(
        common::recipient(&relay.ledger(), "newyork@example.test").0,
        "pending"
    );
    assert_eq!(
        common::recipient(&relay.ledger(), "berlin@example.test").0,
        "accepted"
    );
    assert_eq!(
        common::recipient(&relay.ledger(), "default@example.test").0,
        "accepted"
    );

    // At 15:00 in Berlin it is 09:00 in New York.
    let mut options = windowed(1000.0, local("2026-12-07 15:00", "Europe/Berlin"), 0);
    options.timezone_column = Some("tz".into());
    let (summary, _) = common::run_once(
        &relay.ledger(),
        "zones",
        people,
        relay.plain_settings(),
        options,
        common::plain(),
        mailroom::shutdown::Shutdown::new(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(
        common::states(&relay.ledger()),
        common::state_map(&[("accepted", 3)])
    );
}

/// Options with `[rate] warmup` / `daily_cap` for From domain `domain`, the clock at `now`.
fn warming(domain: &str, warmup: &[u64], cap: Option<u64>, now: i64) -> Options {
    let mut o = common::options(2);
    o.rate.warmup = warmup.to_vec();
    o.rate.daily_cap = cap;
    o.from_domain = Some(domain.into());
    o.clock = Arc::new(ManualClock::new(now, 0));
    o
}

fn accepted(ledger: &Path, campaign: &str) -> i64 {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    conn.query_row(
        "SELECT count(*) FROM recipients r JOIN campaigns c ON c.id = r.campaign_id
         WHERE c.name = ?1 AND r.state = 'accepted'",
        [campaign],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_allows_its_day_per_from_domain_and_test_sends_do_not_count() {
    let relay = Relay::plain("").await;
    let ledger = relay.ledger();
    let people = common::people(&common::numbered("w", 20));
    let others: Vec<NewRecipient> = common::people(&common::numbered("o", 20))
        .into_iter()
        .map(|mut p| {
            p.token.push('o');
            p
        })
        .collect();
    let now = mailroom::clock::now_ms();
    let send = |campaign: &'static str, people: Vec<NewRecipient>, options: Options| {
        common::send_prepared(
            &ledger,
            campaign,
            people,
            relay.plain_settings(),
            options,
            common::plain(),
        )
    };

    // Day 1 of a.example: 3 messages.
    let s = send(
        "a",
        people.clone(),
        warming("a.example", &[3, 7], None, now),
    )
    .await;
    assert_eq!((s.end, s.accepted), (End::DailyCap, 3));
    // The same day again: nothing left.
    let s = send(
        "a",
        people.clone(),
        warming("a.example", &[3, 7], None, now + 3_600_000),
    )
    .await;
    assert_eq!((s.end, s.accepted), (End::DailyCap, 0));
    // Another From domain in the same ledger has its own day 1; test sends count nowhere.
    {
        let l = mailroom::store::Ledger::open(&ledger).unwrap();
        let c = l.ensure_campaign("b").unwrap();
        for i in 0..10 {
            l.record_test_send(&mailroom::store::TestSend {
                campaign: c,
                run: None,
                kind: mailroom::store::TestKind::Seed,
                at: now,
                address: format!("seed{i}@example.net"),
                source_line: Some(2),
                source_email: None,
                message_id: format!("seed{i}@x"),
                port: None,
                step: "message".into(),
                code: Some(250),
                enhanced: None,
                reply: None,
                outcome: "accepted".into(),
            })
            .unwrap();
        }
    }
    let s = send("b", others, warming("b.example", &[3, 7], None, now)).await;
    assert_eq!((s.end, s.accepted), (End::DailyCap, 3));
    // A day later a.example is on day 2 (7), the last value holds after the list, and the cap
    // is the lower of the two.
    let day2 = now + mailroom::schedule::DAY_MS + 60_000;
    let s = send(
        "a",
        people.clone(),
        warming("a.example", &[3, 7], Some(5), day2),
    )
    .await;
    assert_eq!((s.end, s.accepted), (End::DailyCap, 5));
    let day9 = now + 8 * mailroom::schedule::DAY_MS + 60_000;
    let s = send("a", people, warming("a.example", &[3, 7], None, day9)).await;
    assert_eq!((s.end, s.accepted), (End::DailyCap, 7));
    assert_eq!(accepted(&ledger, "a"), 15);
    assert_eq!(accepted(&ledger, "b"), 3);
    // What a report shows for a.example at the real time (the attempts above were recorded at
    // the real time, whatever the runs' clock said): day 1, and everything sent within 24 h.
    let r = mailroom::report::Ledger::open(&ledger).unwrap();
    let a = r
        .allowance("a.example", &[3, 7], None, mailroom::clock::now_ms())
        .unwrap()
        .unwrap();
    assert_eq!((a.warmup_day, a.limit, a.sent, a.left), (Some(1), 3, 15, 0));
}

// ---------------------------------------------------------------------------------------------
// Seeds, and what `check` and `send` say about windows and allowances, through the binary.

fn test_sends(ledger: &Path) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(ledger).unwrap();
    let mut stmt = conn
        .prepare("SELECT kind, address, outcome FROM test_sends ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_get_the_message_when_the_run_starts_and_when_it_finishes() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    f.write(
        "seeds.txt",
        "# our own mailboxes\nseed-b@example.net\n\nseed-a@example.net # twice\n",
    );
    f.append_toml("[seeds]\naddresses = [\"Seed-A@example.net\"]\nfile = \"seeds.txt\"");
    let ledger = f.path().join("mailroom.db");
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let campaign = recipients(&ledger);
    assert!(
        campaign.iter().all(|(_, s, n)| s == "accepted" && *n == 1),
        "{campaign:?}"
    );
    // Two seeds, each once at the start and once at the end; never a recipient.
    assert_eq!(relay.copies_for("seed-a@example.net"), 2);
    assert_eq!(relay.copies_for("seed-b@example.net"), 2);
    let sends = test_sends(&ledger);
    assert_eq!(sends.len(), 4, "{sends:?}");
    assert!(
        sends.iter().all(|(k, _, o)| k == "seed" && o == "accepted"),
        "{sends:?}"
    );
    let seed = relay.body_of("seed-a@example.net");
    let m = MessageParser::default().parse(seed.as_bytes()).unwrap();
    assert_eq!(
        m.subject(),
        Some("Grüße, Ann!"),
        "the real subject, no prefix"
    );
    assert_eq!(
        m.to().unwrap().first().unwrap().address(),
        Some("seed-a@example.net")
    );
    // Nothing due: no run claims anyone, no seed copy.
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(test_sends(&ledger).len(), 4);
    // check lists them.
    let out = mailroom(&["check", "--json"], f.path()).await;
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["seeds"],
        serde_json::json!(["seed-a@example.net", "seed-b@example.net"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_outside_its_window_exits_0_saying_when_it_opens_and_check_reports_the_window() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    f.append_toml(
        "[schedule]\ntimezone = \"Europe/Berlin\"\ndays = [\"mon\", \"tue\"]\nhours = \"09:00-17:30\"\n\
         not_before = \"2099-01-05 10:00\"",
    );
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "The send window is closed: it opens at 2099-01-05 10:00 CET (2099-01-05 09:00:00 UTC)"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(relay.seen().sessions, 0);
    assert!(
        recipients(&f.path().join("mailroom.db"))
            .iter()
            .all(|(_, s, _)| s == "pending")
    );
    let out = mailroom(&["check", "--json"], f.path()).await;
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["window"]["open"], false, "{v:#}");
    assert_eq!(v["window"]["opens_at"], "2099-01-05T09:00:00Z");
    assert_eq!(v["window"]["timezone"], "Europe/Berlin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_todays_allowance_and_each_bad_zone_at_its_line() {
    let relay = Relay::tls("", |c| c).await;
    let f = campaign_for(&relay, Some(&relay.ca));
    f.edit_toml(
        "[rate]\nper_second = 1000",
        "[rate]\nper_second = 1000\ndaily_cap = 40\nwarmup = [2, 50]",
    );
    f.edit_toml(
        "path = \"contacts.csv\"\n",
        "path = \"contacts.csv\"\ntimezone_column = \"tz\"\n",
    );
    f.append_toml("[schedule]\ntimezone = \"UTC\"");
    f.csv(
        "email,name,first_name,ref,tz\n\
         ann@example.com,Ann,Ann,a,Europe/Berlin\n\
         bob@example.com,Bob,Bob,b,Mars/Olympus_Mons\n\
         cy@example.com,Cy,Cy,c,\n\
         di@example.com,Di,Di,d,America/New_York\n",
    );
    let out = mailroom(&["check", "--json"], f.path()).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["invalid"][0]["line"], 3, "{v:#}");
    assert!(
        v["invalid"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("column `tz`: \"Mars/Olympus_Mons\" is not a time zone"),
        "{v:#}"
    );
    assert_eq!(v["allowance"]["limit"], 2, "{v:#}");
    assert_eq!(v["allowance"]["warmup_day"], 1);
    assert_eq!(v["allowance"]["from_domain"], "example.com");
    // send prints it, and keeps to it.
    let out = mailroom(&["send", "--yes"], f.path()).await;
    assert!(
        out.stderr
            .contains("Today's allowance for example.com: 2 of 2 left"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("Stopped at today's allowance"),
        "{}",
        out.stdout
    );
    let text = mailroom(&["report"], f.path()).await.stdout;
    assert!(
        text.contains("Today's allowance for example.com: 0 of 2 left"),
        "{text}"
    );
}

/// A test send is signed like the real message: the copy the relay stored verifies with
/// python3-dkim against the loopback DNS fixture (the same key the campaign publishes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_is_dkim_signed_like_the_real_message() {
    use common::auth::{AuthCampaign, Bodies, Signing, dns, python_verify};
    let Some(dns) = dns() else { return };
    let relay = Relay::tls("", |c| c).await;
    let smtp = format!(
        "host = \"localhost\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{USER}\"\n\
         password_env = \"RELAY_PASSWORD\"\nca_file = \"{}\"",
        relay.port(),
        relay.ca.display()
    );
    let c = AuthCampaign::new(
        "signed-test",
        "pass.test",
        "pass.test",
        Signing::Dual,
        Bodies::TextAndHtml,
        &dns,
        &smtp,
        &["ann@example.com", "bob@example.com"],
    );
    let out = mailroom(&["send", "--test", "qa@example.net"], c.path()).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let copy = relay.body_of("qa@example.net");
    assert_eq!(copy.matches("DKIM-Signature:").count(), 2, "{copy}");
    let (ok, text) = python_verify(&dns, copy.as_bytes());
    assert!(ok, "python3-dkim: {text}");
    let m = MessageParser::default().parse(copy.as_bytes()).unwrap();
    assert!(m.subject().unwrap().starts_with("[TEST] "), "{copy}");
}
