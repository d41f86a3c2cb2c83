//! Several relays (`[[relay]]`, issue 16) over real TCP against sandbox relays: the weighted
//! split and the ledger's record of who went where, a relay that dies mid-run, a relay dead from
//! the start, every relay dead (a typed pause, nobody charged), relays answering "service
//! unavailable", the config errors, and the per-relay figures of `report`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixture::Fixture;
use common::relay::Relay;
use common::{numbered, options, people, send_relays, states};
use mailroom::pipeline::{End, RelaySpec, Relays, Stop};
use mailroom::transport::{Security, Transport};

/// One `[[relay]]` of a test campaign: its name, port and extra keys.
struct R<'a> {
    name: &'a str,
    port: u16,
    extra: &'a str,
}

fn r<'a>(name: &'a str, port: u16, extra: &'a str) -> R<'a> {
    R { name, port, extra }
}

/// A campaign folder sending `emails` through `relays` (plaintext to loopback, no pace).
fn campaign(dir: &Path, relays: &[R<'_>], emails: &[String]) -> PathBuf {
    let root = dir.join("relays-campaign");
    std::fs::create_dir_all(&root).unwrap();
    let mut toml = String::from(
        "[campaign]\nname = \"relays\"\nfrom = \"News <news@sender.test>\"\n\
         subject = \"Hello {{name}}\"\ntext = \"body.txt.hbs\"\n\n[contacts]\npath = \"contacts.csv\"\n\n\
         [rate]\nper_second = 100000\n",
    );
    for r in relays {
        toml.push_str(&format!(
            "\n[[relay]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n{}\n",
            r.name, r.port, r.extra
        ));
    }
    std::fs::write(root.join("campaign.toml"), toml).unwrap();
    std::fs::write(root.join("body.txt.hbs"), "Hi {{name}}, for {{email}}.\n").unwrap();
    let mut csv = String::from("email,name\n");
    for (i, e) in emails.iter().enumerate() {
        csv.push_str(&format!("{e},Reader {i}\n"));
    }
    std::fs::write(root.join("contacts.csv"), csv).unwrap();
    root
}

fn emails(n: usize) -> Vec<String> {
    numbered("reader", n)
        .into_iter()
        .map(|l| format!("{l}@example.test"))
        .collect()
}

/// `mailroom ARGS...` to its end (off the runtime: the sandboxes keep answering meanwhile).
async fn mailroom(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn send(root: &Path) -> Output {
    mailroom(vec![
        "send".into(),
        root.display().to_string(),
        "--yes".into(),
    ])
    .await
}

/// A loopback port nobody listens on: a relay dead from the start.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// (email → relay name) of the accepted attempts, and every attempt's outcome per relay.
fn ledger_relays(path: &Path) -> (BTreeMap<String, String>, BTreeMap<(String, String), i64>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT r.email, l.name FROM attempts a JOIN recipients r ON r.id = a.recipient_id \
             JOIN relays l ON l.id = a.relay_id WHERE a.outcome = 'accepted'",
        )
        .unwrap();
    let who = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut stmt = conn
        .prepare(
            "SELECT coalesce(l.name, '-'), a.outcome, count(*) FROM attempts a \
             LEFT JOIN relays l ON l.id = a.relay_id GROUP BY 1, 2",
        )
        .unwrap();
    let outcomes = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    (who, outcomes)
}

/// Charged attempts per recipient, from the ledger's own counter.
fn charged(path: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT email, attempts FROM recipients")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Cool-offs recorded per relay name.
fn cooloffs(path: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT l.name, count(*) FROM relay_cooloffs c JOIN relays l ON l.id = c.relay_id \
             GROUP BY l.name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every address stored exactly once across the relays, and no other.
fn each_exactly_once(relays: &[&Relay], expected: &[String]) {
    let mut all: BTreeMap<String, usize> = BTreeMap::new();
    for r in relays {
        for (address, n) in r.accepted_per_address() {
            *all.entry(address).or_default() += n;
        }
    }
    let want: BTreeMap<String, usize> = expected.iter().map(|e| (e.clone(), 1)).collect();
    assert_eq!(all, want);
}

/// `mailroom send` exits 0 with every address of `list` stored exactly once across `relays`;
/// returns what it printed.
async fn send_delivers_everyone(root: &Path, relays: &[&Relay], list: &[String]) -> String {
    let out = send(root).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    each_exactly_once(relays, list);
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_weighted_3_to_1_split_the_messages_and_the_ledger_says_who_went_where() {
    let a = Relay::plain("").await;
    let b = Relay::plain("").await;
    let list = emails(40);
    let root = campaign(
        a.dir.path(),
        &[
            r("heavy", a.port(), "weight = 3\nconnections = 1"),
            r("light", b.port(), "connections = 1"),
        ],
        &list,
    );
    let stdout = send_delivers_everyone(&root, &[&a, &b], &list).await;
    // Smooth weighted round-robin: every 4 picks are heavy, heavy, light, heavy.
    assert_eq!((a.seen().stored.len(), b.seen().stored.len()), (30, 10));
    assert!(
        stdout.contains("Relay heavy: 30 transactions, 30 accepted."),
        "{stdout}"
    );
    assert!(
        stdout.contains("Relay light: 10 transactions, 10 accepted."),
        "{stdout}"
    );

    let ledger = root.join("mailroom.db");
    let (who, _) = ledger_relays(&ledger);
    assert_eq!(who.len(), 40);
    for address in a.accepted_per_address().keys() {
        assert_eq!(who[address], "heavy", "{address}");
    }
    for address in b.accepted_per_address().keys() {
        assert_eq!(who[address], "light", "{address}");
    }

    // The report shows the split (the JSON keys are the contract).
    let out = mailroom(vec![
        "report".into(),
        root.display().to_string(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let relays = json["relays"].as_array().unwrap();
    let row = |name: &str| {
        relays
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {relays:?}"))
            .clone()
    };
    let heavy = row("heavy");
    for (key, want) in [
        ("attempts", 30),
        ("accepted", 30),
        ("deferred", 0),
        ("bounced", 0),
        ("failures", 0),
        ("cooloffs", 0),
    ] {
        assert_eq!(heavy[key], want, "heavy.{key}: {heavy}");
    }
    assert_eq!(row("light")["accepted"], 10);
    let out = mailroom(vec![
        "report".into(),
        root.display().to_string(),
        "--format".into(),
        "md".into(),
    ])
    .await;
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("## Relays"), "{md}");
    assert!(
        md.contains("| heavy | 30 | 30 | 0 | 0 | 0 | 0 |  |"),
        "{md}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_mid_run_leaves_the_rest_to_the_survivor_and_nobody_is_charged() {
    let dying = Relay::plain("[session]\ndie_after_messages = 10\n").await;
    let survivor = Relay::plain("").await;
    let list = emails(60);
    let root = campaign(
        dying.dir.path(),
        &[
            r("dying", dying.port(), "connections = 2"),
            r("survivor", survivor.port(), "connections = 2"),
        ],
        &list,
    );
    let stdout = send_delivers_everyone(&root, &[&dying, &survivor], &list).await;
    let died_after = dying.seen().stored.len();
    // Sessions already past MAIL when the tenth message was stored finish theirs (four workers).
    assert!((10..=13).contains(&died_after), "{died_after}");
    assert_eq!(survivor.seen().stored.len(), 60 - died_after);

    let ledger = root.join("mailroom.db");
    // Everyone accepted, each charged exactly the one attempt that went through.
    assert_eq!(states(&ledger), common::state_map(&[("accepted", 60)]));
    assert!(
        charged(&ledger).values().all(|n| *n == 1),
        "{:?}",
        charged(&ledger)
    );
    let (who, outcomes) = ledger_relays(&ledger);
    assert_eq!(
        who.values().filter(|r| *r == "dying").count(),
        died_after,
        "{outcomes:?}"
    );
    // No attempt outcome other than accepted: the dead relay's faults were never charged.
    assert!(
        outcomes.keys().all(|(_, outcome)| outcome == "accepted"),
        "{outcomes:?}"
    );
    assert_eq!(cooloffs(&ledger).get("dying"), Some(&1));
    assert!(stdout.contains("Relay dying:"), "{stdout}");
    assert!(stdout.contains("cool-offs: 1, the last:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_dead_from_the_start_is_reported_and_the_run_still_exits_0() {
    let live = Relay::plain("").await;
    let list = emails(20);
    let root = campaign(
        live.dir.path(),
        &[
            // First and heaviest: the run's first connection and most picks go to it.
            r("dead", closed_port(), "weight = 5"),
            r("live", live.port(), ""),
        ],
        &list,
    );
    let stdout = send_delivers_everyone(&root, &[&live], &list).await;
    assert!(
        stdout.contains("Relay dead: 0 transactions, 0 accepted; DEAD: never took a message"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Relay live: 20 transactions, 20 accepted."),
        "{stdout}"
    );
    let ledger = root.join("mailroom.db");
    assert_eq!(cooloffs(&ledger).get("dead"), Some(&1));
    assert!(charged(&ledger).values().all(|n| *n == 1));

    // The report names it: a relay with cool-offs and no attempt.
    let out = mailroom(vec![
        "report".into(),
        root.display().to_string(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dead = json["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "dead")
        .unwrap()
        .clone();
    assert_eq!(
        (dead["attempts"].clone(), dead["cooloffs"].clone()),
        (0.into(), 1.into())
    );
    assert!(
        dead["last_cooloff"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{dead}"
    );
}

/// `send --test` with the first relay dead hands the copy to the next relay, as a run would;
/// with every relay dead nothing is sent and the first relay's failure is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_goes_through_the_next_relay_when_the_first_is_dead() {
    let live = Relay::plain("").await;
    let root = campaign(
        live.dir.path(),
        &[r("dead", closed_port(), ""), r("live", live.port(), "")],
        &emails(3),
    );
    let out = mailroom(vec![
        "send".into(),
        root.display().to_string(),
        "--test".into(),
        "qa@example.net".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test send to qa@example.net: accepted by the relay"),
        "{stdout}"
    );
    assert_eq!(
        live.accepted_per_address(),
        BTreeMap::from([("qa@example.net".to_owned(), 1)])
    );

    let dead_only = campaign(
        &live.dir.path().join("all-dead"),
        &[
            r("dead", closed_port(), ""),
            r("also-dead", closed_port(), ""),
        ],
        &emails(3),
    );
    let out = mailroom(vec![
        "send".into(),
        dead_only.display().to_string(),
        "--test".into(),
        "qa@example.net".into(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Nothing was sent"), "{stderr}");
    assert_eq!(
        live.accepted_per_address().len(),
        1,
        "nothing more reached the live relay"
    );
}

async fn dead_relay(name: &str) -> RelaySpec {
    let settings = common::settings("127.0.0.1", closed_port(), Security::None);
    RelaySpec {
        name: name.into(),
        weight: 1,
        rate: mailroom::pipeline::RateOptions {
            per_second: None,
            ..Default::default()
        },
        daily_cap: None,
        cooloff: std::time::Duration::from_secs(300),
        transport: Transport::new(settings).await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_relay_is_dead_the_run_pauses_with_a_typed_stop_and_charges_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("mailroom.db");
    let relays = Relays::several(dead_relay("one").await, vec![dead_relay("two").await]);
    let summary = send_relays(
        &ledger,
        "all-dead",
        people(&numbered("reader", 8)),
        relays,
        options(2),
        common::plain(),
    )
    .await;
    let End::Paused(Stop::Relays(why)) = &summary.end else {
        panic!("{:?}", summary.end);
    };
    let names: Vec<&str> = why.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert!(
        why.iter().all(|(_, w)| w.contains("cannot connect")),
        "{why:?}"
    );
    assert_eq!(summary.transactions, 0);
    assert_eq!(states(&ledger), common::state_map(&[("pending", 8)]));
    assert!(charged(&ledger).values().all(|n| *n == 0));
    assert!(
        summary
            .relays
            .iter()
            .all(mailroom::pipeline::RelayReport::is_dead)
    );
    assert_eq!(
        cooloffs(&ledger),
        BTreeMap::from([("one".into(), 1), ("two".into(), 1)])
    );
}

/// One relay refuses every recipient with `reply`, the other is fine: after three refusals in
/// a row (kept as uncharged attempts with `outcome`) the refusing relay cools off and the other
/// takes all 30 recipients, each charged once.
async fn one_relay_refuses_and_the_other_takes_everyone(reply: &str, outcome: &str) {
    let busy = Relay::plain(&format!(
        "[[rule]]\nrecipient = \"*\"\naction = \"reject\"\nreply = \"{reply}\"\n"
    ))
    .await;
    let good = Relay::plain("").await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("mailroom.db");
    let spec = |name: &str, port: u16| {
        let settings = common::settings("127.0.0.1", port, Security::None);
        let name = name.to_owned();
        async move {
            RelaySpec {
                name,
                weight: 1,
                rate: mailroom::pipeline::RateOptions {
                    per_second: None,
                    ..Default::default()
                },
                daily_cap: None,
                cooloff: std::time::Duration::from_secs(300),
                transport: Transport::new(settings).await.unwrap(),
            }
        }
    };
    let relays = Relays::several(
        spec("busy", busy.port()).await,
        vec![spec("good", good.port()).await],
    );
    let list = numbered("reader", 30);
    let summary = send_relays(
        &ledger,
        "busy",
        people(&list),
        relays,
        options(1),
        common::plain(),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(states(&ledger), common::state_map(&[("accepted", 30)]));
    assert!(charged(&ledger).values().all(|n| *n == 1));
    let (_, outcomes) = ledger_relays(&ledger);
    assert_eq!(outcomes.get(&("good".into(), "accepted".into())), Some(&30));
    assert_eq!(
        outcomes.get(&("busy".into(), outcome.into())),
        Some(&3),
        "{outcomes:?}"
    );
    assert_eq!(cooloffs(&ledger).get("busy"), Some(&1));
    assert!(busy.seen().stored.is_empty());
}

/// "Service unavailable" to every recipient: the relay's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_answering_service_unavailable_cools_off_and_the_other_takes_everyone() {
    one_relay_refuses_and_the_other_takes_everyone("421 4.3.2 service not available", "throttled")
        .await;
}

/// Alone, a relay that denies relaying ends the run; beside another it is that relay's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_denies_relaying_cools_off_and_the_other_takes_everyone() {
    one_relay_refuses_and_the_other_takes_everyone("550 5.7.1 Relaying denied", "aborted").await;
}

/// The config errors of `[[relay]]`, each at its line.
#[test]
fn relay_config_errors_name_the_line() {
    let relay = |extra: &str| {
        format!(
            "[[relay]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\n{extra}"
        )
    };
    let cases: [(String, &str, &str); 5] = [
        (
            format!("[smtp]\nhost = \"127.0.0.1\"\n\n{}", relay("")),
            "campaign.toml has both [smtp] (line",
            "and [[relay]] tables: use one or the other",
        ),
        (
            format!("{}\n{}", relay(""), relay("")),
            "two relays are named \"a\"",
            "Give every [[relay]] its own name.",
        ),
        (
            relay("weight = 0"),
            "weight = 0 would never send through this relay",
            "Use weight = 1 or more",
        ),
        (
            relay("").replace("name = \"a\"\n", ""),
            "this [[relay]] has no name",
            "Give every relay a short unique name",
        ),
        (
            "[smtp]\nhost = \"127.0.0.1\"\nweight = 2\n".into(),
            "weight is a [[relay]] key, not an [smtp] one",
            "Remove weight from [smtp]",
        ),
    ];
    for (i, (tables, message, fix)) in cases.iter().enumerate() {
        let f = Fixture::base();
        let base_lines = f.read("campaign.toml").lines().count() + 1;
        f.append_toml(tables);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("check")
            .arg(f.path())
            .output()
            .unwrap();
        let stderr = f.redact(&String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(stderr.contains(message), "case {i}: {stderr}");
        assert!(stderr.contains(fix), "case {i}: {stderr}");
        // The line is the offending key's (or the relay's header), inside the appended tables.
        let line: usize = stderr
            .split("campaign.toml:")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("case {i}: no line in {stderr}"));
        let text = f.read("campaign.toml");
        assert!(line > base_lines, "case {i}: line {line} in {stderr}");
        let at = text.lines().nth(line - 1).unwrap();
        let expected_at = [
            "[[relay]]",
            "name = \"a\"",
            "weight = 0",
            "[[relay]]",
            "weight = 2",
        ][i];
        assert_eq!(at, expected_at, "case {i}: {stderr}");
    }
}

/// `doctor CAMPAIGN` probes every relay: one report each, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_probes_every_relay_of_a_campaign() {
    let live = Relay::plain("").await;
    let dead_port = closed_port();
    let root = campaign(
        live.dir.path(),
        &[r("live", live.port(), ""), r("dead", dead_port, "")],
        &emails(1),
    );
    let out = mailroom(vec![
        "doctor".into(),
        root.display().to_string(),
        "--timeout".into(),
        "5".into(),
        "--json".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Plaintext only: no relay is usable securely.
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = json.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|r| r["relay"].as_str().unwrap()).collect();
    assert_eq!(names, ["live", "dead"]);
    // Each relay is probed on its own configured port first (then the usual ones).
    let first_port = |i: usize| list[i]["report"]["ports"][0].clone();
    assert_eq!(first_port(0)["port"], live.port());
    assert_eq!(first_port(0)["connect"], "open");
    assert_eq!(first_port(1)["port"], dead_port);
    assert_eq!(first_port(1)["connect"], "refused");
}

/// `check` takes `[[relay]]` tables alone: no "[smtp] host is not set" note.
#[test]
fn check_accepts_relays_without_an_smtp_table() {
    let dir = tempfile::tempdir().unwrap();
    let root = campaign(
        dir.path(),
        &[
            r(
                "a",
                2525,
                "password_env = \"MAILROOM_TEST_UNSET_RELAY_PASSWORD\"\nmax_message_size = 100",
            ),
            r("b", 2526, "weight = 2"),
        ],
        &emails(2),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("check")
        .arg(&root)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("host is not set"), "{all}");
    assert!(
        all.contains("MAILROOM_TEST_UNSET_RELAY_PASSWORD (relay.password_env) is not set"),
        "{all}"
    );
    // Relay `a`'s size limit is the campaign's: every message is larger than 100 bytes.
    assert_eq!(out.status.code(), Some(1), "{all}");
}

/// A secret a `[[relay]]` names but the environment lacks: `send` says which relay's table
/// names it, not `[smtp]` (there is none), and sends nothing.
#[test]
fn a_relay_whose_password_variable_is_unset_is_named_in_the_error() {
    let f = Fixture::base();
    f.append_toml(
        "[[relay]]\nname = \"backup\"\nhost = \"127.0.0.1\"\nport = 1\nsecurity = \"starttls\"\n\
         username = \"news\"\npassword_env = \"MAILROOM_TEST_UNSET_RELAY_PASSWORD\"\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["send", "--yes"])
        .arg(f.path())
        .env_remove("MAILROOM_TEST_UNSET_RELAY_PASSWORD")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("[[relay]] \"backup\" password_env names the environment variable MAILROOM_TEST_UNSET_RELAY_PASSWORD"),
        "{err}"
    );
    assert!(!f.path().join("mailroom.db").exists(), "nothing imported");
}
