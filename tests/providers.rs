//! Mailbox providers, diagnoses and trends in the reports and the dashboard, over a real SQLite
//! ledger of six monthly campaigns to Gmail, Outlook.com, Yahoo and a Microsoft 365 company
//! (`common::ledger::provider_ledger`): the provider table with each provider's thresholds and
//! its drill-down, "What the providers are telling you", the funnel of confirmed deliveries,
//! `report --all` with the Outlook.com bounce rate rising, and dashboard snapshots at 80x24 and
//! 160x48.
#![allow(clippy::unwrap_used)]

mod common;

use assert_cmd::Command;
use common::ledger::provider_ledger;
use common::screen::{app_on, draw};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mailroom::provider::Provider;
use mailroom::report::{self, Focus, Level};

/// 2026-06-05 12:00 UTC: the dashboard's clock in the snapshots.
const TAKEN_AT: i64 = 1_780_660_800_000;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn the_provider_table_adds_up_domains_with_each_providers_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let r = report::load(&b.path, Some("june")).unwrap();
    let order: Vec<(Provider, u64)> = r
        .providers
        .iter()
        .map(|p| (p.provider, p.totals.recipients))
        .collect();
    assert_eq!(
        order,
        [
            (Provider::Google, 40),
            (Provider::Microsoft, 20),
            (Provider::Yahoo, 15),
            (Provider::Microsoft365, 10),
            (Provider::Unknown, 5),
        ],
        "consumer domains by name, corp.example by its cached MX, the rest unknown"
    );
    let google = &r.providers[0];
    assert_eq!(google.totals.delivered, 30);
    assert_eq!(google.totals.deferred, 2);
    // One complaint of 38 accepted: far above Gmail's 0.3%.
    assert_eq!(google.levels.complaint, Level::Alarm);
    assert_eq!(
        (
            google.thresholds.complaint_warn,
            google.thresholds.complaint_alarm
        ),
        (0.001, 0.003)
    );
    let outlook = &r.providers[1];
    assert_eq!(
        (outlook.totals.bounced_hard, outlook.totals.bounced_soft),
        (2, 4)
    );
    assert_eq!(outlook.levels.bounce, Level::Alarm, "2 of 20: 10%");
    assert_eq!(
        r.domains
            .iter()
            .find(|d| d.domain == "corp.example")
            .map(|d| d.provider),
        Some(Provider::Microsoft365)
    );
    // Every recipient is in exactly one provider row.
    let sum: u64 = r.providers.iter().map(|p| p.totals.recipients).sum();
    assert_eq!(sum, r.totals.recipients);

    // The funnel of what the relay accepted.
    let f = r.funnel;
    assert_eq!(
        (f.relay_accepted, f.delivered, f.bounced_later, f.no_news),
        (74, 30, 1, 43)
    );
    assert_eq!(f.delivered + f.bounced_later + f.no_news, f.relay_accepted);
}

#[test]
fn the_report_says_what_the_providers_are_telling_you() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let r = report::load(&b.path, Some("june")).unwrap();
    let seen: Vec<(&str, u64)> = r
        .diagnoses
        .iter()
        .map(|d| (d.key.as_str(), d.count))
        .collect();
    assert_eq!(
        seen,
        [
            ("microsoft-5.7.515", 4),
            ("yahoo-tss04", 3),
            ("gmail-4.7.28", 2),
            ("user-unknown", 2),
            ("complaint", 1),
        ]
    );
    let outlook = &r.diagnoses[0];
    assert_eq!(outlook.provider, Some(Provider::Microsoft));
    assert!(outlook.fix.contains("DKIM"), "{}", outlook.fix);
    assert!(outlook.example.as_deref().unwrap().contains("5.7.515"));

    let mut text = Vec::new();
    report::write_text(&r, &mut text).unwrap();
    insta::assert_snapshot!("report_text_providers", String::from_utf8(text).unwrap());
    let mut md = Vec::new();
    report::write_markdown(&r, &mut md).unwrap();
    let md = String::from_utf8(md).unwrap();
    assert!(md.contains("## What the providers are telling you"), "{md}");
    assert!(
        md.contains("- **Yahoo: deferred for volume or complaints** (3 times)"),
        "{md}"
    );
    assert!(md.contains("| Google | 1 | 40 | 38 | 30 |"), "{md}");
    let mut html = Vec::new();
    report::write_html(&r, &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<h2>Providers</h2>"));
    assert!(html.contains("<h3>Outlook.com: authentication requirements not met"));

    let mut json = Vec::new();
    report::write_json(&r, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["providers"][0]["provider"], "google");
    assert_eq!(json["providers"][0]["delivered"], 30);
    assert_eq!(json["providers"][0]["levels"]["complaint"], "alarm");
    assert_eq!(json["providers"][0]["thresholds"]["complaint_alarm"], 0.003);
    assert_eq!(json["diagnoses"][0]["key"], "microsoft-5.7.515");
    assert_eq!(json["diagnoses"][0]["count"], 4);
    assert!(json["diagnoses"][0]["fix"].is_string());
    assert_eq!(json["funnel"]["delivered"], 30);
    assert_eq!(json["funnel"]["no_news"], 43);
    assert_eq!(json["totals"]["delivered"], 30);
    assert_eq!(json["domains"][0]["provider"], "google");
}

#[test]
fn drill_downs_by_provider_and_by_diagnosis() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let ledger = report::Ledger::open(&b.path).unwrap();
    let june = ledger.find_campaign(Some("june")).unwrap();
    let microsoft = ledger
        .drill_down(june.id, &Focus::Provider(Provider::Microsoft365))
        .unwrap();
    assert_eq!(microsoft.entries.len(), 10);
    assert!(
        microsoft
            .entries
            .iter()
            .all(|e| e.email.ends_with("@corp.example"))
    );
    let tss04 = ledger
        .drill_down(june.id, &Focus::Diagnosis("yahoo-tss04".into()))
        .unwrap();
    assert_eq!(tss04.entries.len(), 3);
    assert!(tss04.entries.iter().all(|e| e.text.contains("[TSS04]")));
    let complaint = ledger
        .drill_down(june.id, &Focus::Diagnosis("complaint".into()))
        .unwrap();
    assert_eq!(complaint.entries.len(), 1);
    assert!(complaint.entries[0].is_feedback());
}

#[test]
fn dashboard_shows_the_provider_table_at_80x24_and_160x48() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let mut app = app_on(&b.path, "june", None, TAKEN_AT);
    let wide = draw(&app, 160, 48);
    assert!(wide.contains("Providers (5)"), "{wide}");
    assert!(
        wide.contains("What the providers are telling you"),
        "{wide}"
    );
    insta::assert_snapshot!("dashboard_providers_160x48", wide);
    // Small terminals show one table: Shift-Tab from the domains reaches the providers.
    app.handle_key(key(KeyCode::BackTab));
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.pane, mailroom::tui::app::Pane::Providers);
    let small = draw(&app, 80, 24);
    assert!(small.contains("Outlook.com"), "{small}");
    insta::assert_snapshot!("dashboard_providers_80x24", small);
    // Enter drills into the selected provider.
    app.handle_key(key(KeyCode::Down));
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        Some(mailroom::tui::Action::Reload)
    );
    assert_eq!(app.request().1, Some(Focus::Provider(Provider::Microsoft)));
}

#[test]
fn dashboard_reasons_pane_leads_with_the_diagnoses_and_drills_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let mut app = app_on(&b.path, "june", None, TAKEN_AT);
    app.handle_key(key(KeyCode::Tab));
    app.handle_key(key(KeyCode::Down));
    insta::assert_snapshot!("dashboard_diagnoses_80x24", draw(&app, 80, 24));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        app.request().1,
        Some(Focus::Diagnosis("yahoo-tss04".into()))
    );
    let drilled = app_on(
        &b.path,
        "june",
        Some(Focus::Diagnosis("yahoo-tss04".into())),
        TAKEN_AT,
    );
    let screen = draw(&drilled, 160, 48);
    assert!(
        screen.contains("Slow down, mail only engaged subscribers"),
        "{screen}"
    );
    insta::assert_snapshot!("dashboard_diagnosis_drill_160x48", screen);
}

#[test]
fn report_all_shows_the_outlook_bounce_rate_rising_over_five_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    let trends = report::Ledger::open(&b.path).unwrap().trends().unwrap();
    let names: Vec<&str> = trends.campaigns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["january", "february", "march", "april", "may", "june"],
        "oldest first"
    );
    let outlook: Vec<Option<f64>> = trends.campaigns[..5]
        .iter()
        .map(|c| c.provider(Provider::Microsoft).unwrap().rates.hard_bounce)
        .collect();
    assert_eq!(
        outlook,
        [Some(0.01), Some(0.02), Some(0.03), Some(0.04), Some(0.05)]
    );
    let out = Command::cargo_bin("mailroom")
        .unwrap()
        .args(["report", "--all", "--db"])
        .arg(&b.path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.lines().any(|l| l.contains("Outlook.com")
            && l.contains("2.00%")
            && l.contains("5.00%")
            && l.ends_with("rising")),
        "{text}"
    );
    insta::assert_snapshot!("report_all_text", text);

    let json = Command::cargo_bin("mailroom")
        .unwrap()
        .args(["report", "--all", "--format", "json", "--db"])
        .arg(&b.path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["campaigns"].as_array().unwrap().len(), 6);
    assert_eq!(json["campaigns"][4]["name"], "may");
    assert_eq!(json["campaigns"][4]["totals"]["bounced_hard"], 5);
    assert_eq!(
        json["campaigns"][4]["providers"][0]["provider"],
        "microsoft"
    );
    assert_eq!(
        json["campaigns"][4]["providers"][0]["rates"]["hard_bounce"],
        0.05
    );

    for (format, marker) in [("html", "<svg"), ("md", "| Outlook.com |"), ("csv", "may,")] {
        let out = Command::cargo_bin("mailroom")
            .unwrap()
            .args(["report", "--all", "--format", format, "--db"])
            .arg(&b.path)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains(marker), "{format}: {out}");
    }
    // The campaign's own HTML report carries the trend chart too.
    let html = Command::cargo_bin("mailroom")
        .unwrap()
        .args(["report", "--campaign", "june", "--format", "html", "--db"])
        .arg(&b.path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<h2>Across campaigns</h2>"));
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "funnel, series and two trend charts"
    );
}

#[test]
fn report_all_conflicts_with_a_campaign_name() {
    let dir = tempfile::tempdir().unwrap();
    let b = provider_ledger(&dir.path().join("l.db"));
    Command::cargo_bin("mailroom")
        .unwrap()
        .args(["report", "--all", "--campaign", "june", "--db"])
        .arg(&b.path)
        .assert()
        .code(2);
}

/// `send` resolves recipient domains through the `[dns] resolver` (the loopback dnsmasq with
/// the fixture zones) in the background, caches each answer in the ledger with its MX, and the
/// report groups by provider: a Google Workspace domain counts as Google beside gmail.com, an
/// Exchange Online tenant as Microsoft 365, a domain that does not exist as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_resolves_recipient_domains_to_providers_through_the_configured_resolver() {
    let Some(dns) = common::auth::dns() else {
        return;
    };
    let (json, root, _) = send_and_report(&dns, true).await;
    assert_eq!(domains(&json, "google"), Some(2), "{}", json["providers"]);
    assert_eq!(
        domains(&json, "microsoft365"),
        Some(1),
        "{}",
        json["providers"]
    );
    assert_eq!(domains(&json, "unknown"), Some(1), "{}", json["providers"]);

    // The cache keeps what the resolver said, for the next run and the next report.
    let conn = rusqlite::Connection::open(root.path().join("providers/mailroom.db")).unwrap();
    let mx: String = conn
        .query_row(
            "SELECT mx FROM domain_providers WHERE domain = 'tenant.test'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        mx.contains("tenant-test.mail.protection.outlook.com"),
        "{mx}"
    );
}

/// `[providers] lookup = false`: nothing is looked up or cached; only the consumer domain is
/// named, the company domains stay unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_lookups_off_only_consumer_domains_get_a_provider() {
    let Some(dns) = common::auth::dns() else {
        return;
    };
    let (json, root, _) = send_and_report(&dns, false).await;
    assert_eq!(domains(&json, "google"), Some(1), "{}", json["providers"]);
    assert_eq!(
        domains(&json, "microsoft365"),
        None,
        "{}",
        json["providers"]
    );
    assert_eq!(domains(&json, "unknown"), Some(3), "{}", json["providers"]);
    let conn = rusqlite::Connection::open(root.path().join("providers/mailroom.db")).unwrap();
    let cached: i64 = conn
        .query_row("SELECT count(*) FROM domain_providers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cached, 0);
}

/// A resolver that never answers: sending does not wait for it, the run ends, and `send` says
/// how many domains are left for a later send instead of leaving them silently unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_never_answers_leaves_its_domains_to_a_later_send_and_says_so() {
    // A real UDP socket on loopback that reads nothing: every query goes unanswered.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap().to_string();
    let (json, root, stdout) = send_and_report(&dns, true).await;
    // workspace.test, tenant.test and elsewhere.test needed a lookup; gmail.com did not.
    assert!(
        stdout.contains("Mailbox providers: 3 recipient domains were not looked up"),
        "{stdout}"
    );
    assert_eq!(domains(&json, "google"), Some(1), "{}", json["providers"]);
    assert_eq!(domains(&json, "unknown"), Some(3), "{}", json["providers"]);
    let conn = rusqlite::Connection::open(root.path().join("providers/mailroom.db")).unwrap();
    let cached: i64 = conn
        .query_row("SELECT count(*) FROM domain_providers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(cached, 0, "nothing was answered, so nothing is cached");
    drop(silent);
}

fn domains(json: &serde_json::Value, provider: &str) -> Option<u64> {
    json["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["provider"] == provider)
        .map(|row| row["domains"].as_u64().unwrap())
}

/// Sends five recipients (Google Workspace, gmail.com, Exchange Online, a domain that does not
/// exist) through the sandbox with `[dns] resolver` set and lookups on or off, and returns the
/// JSON report, the folder (the campaign is `providers/` inside it) and what `send` printed.
async fn send_and_report(
    dns: &str,
    lookup: bool,
) -> (serde_json::Value, tempfile::TempDir, String) {
    let relay = common::relay::Relay::plain("").await;
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = [
        "ann@workspace.test",
        "bob@workspace.test",
        "cyd@gmail.com",
        "dee@tenant.test",
        "eve@elsewhere.test",
    ]
    .map(str::to_owned)
    .to_vec();
    let root = common::write_campaign(
        dir.path(),
        "providers",
        "news@sender.test",
        &relay.smtp_table(""),
        &emails,
    );
    let toml = root.join("campaign.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[dns]\nresolver = \"{dns}\"\n\n[providers]\nlookup = {lookup}\n"
    ));
    std::fs::write(&toml, text).unwrap();
    let root2 = root.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("send")
            .arg(&root2)
            .arg("--yes")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(relay.seen().stored.len(), 5);
    let json = Command::cargo_bin("mailroom")
        .unwrap()
        .args(["report", "--format", "json"])
        .arg(&root)
        .output()
        .unwrap();
    (
        serde_json::from_slice(&json.stdout).unwrap(),
        dir,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

// The lean MX client of the background lookups (`dns::BulkMx`), against the DNS fixture server
// and against loopback servers that misbehave on purpose.

use mail_auth::hickory_resolver::proto::op::{Message, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::MX;
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record};
use mailroom::dns::{BulkMx, Failure, Resolver};

/// The lean client gives exactly what the full resolver gives for the fixture zones: the same
/// exchanges in the same order with the same TTL, and "nothing" for a name that does not exist.
#[tokio::test]
async fn the_lean_mx_client_agrees_with_the_full_resolver() {
    let Some(dns) = common::auth::dns() else {
        return;
    };
    let full = Resolver::open(
        Some(dns.parse().unwrap()),
        std::time::Duration::from_secs(4),
    )
    .unwrap();
    let lean = BulkMx::new(&full);
    for domain in [
        "workspace.test",
        "tenant.test",
        "pass.test",
        "gmail.com",
        "WorkSpace.Test",
        "nosuchdomain.test",
    ] {
        let want = full.mx_with_ttl(domain).await.unwrap();
        let got = lean.mx_with_ttl(domain).await.unwrap();
        assert_eq!(got, want, "{domain}");
    }
    let (mx, _) = lean.mx_with_ttl("tenant.test").await.unwrap();
    assert_eq!(mx[0].exchange, "tenant-test.mail.protection.outlook.com");
    assert!(
        lean.mx_with_ttl("nosuchdomain.test")
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

/// How a fake resolver answers each query.
#[derive(Clone, Copy)]
enum Fake {
    /// Garbage, then the answer under another id, then one about another name, then the right
    /// answer (its question in upper case, as 0x20-randomising resolvers echo it).
    NoiseFirst,
    /// A truncated UDP answer with no records; the full answer over TCP on the same port.
    Truncated,
    /// REFUSED.
    Refuses,
}

fn answer(query: &Message, name: &Name, host: &str) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_available = true;
    let mut q = query.queries[0].clone();
    q.set_name(name.clone());
    reply.add_query(q);
    reply.answers.push(Record::from_rdata(
        name.clone(),
        600,
        RData::MX(MX::new(10, Name::from_str_relaxed(host).unwrap())),
    ));
    reply
}

/// A resolver on a loopback port (UDP, and TCP on the same port) that answers as `fake` says.
async fn fake_resolver(fake: Fake) -> std::net::SocketAddr {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..n]).unwrap();
            let name = query.queries[0].name().clone();
            let mut replies = Vec::new();
            match fake {
                Fake::NoiseFirst => {
                    replies.push(b"\x12\x34 not DNS at all".to_vec());
                    let mut wrong_id = answer(&query, &name, "mx.wrong-id.test.");
                    wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
                    replies.push(wrong_id.to_vec().unwrap());
                    let other = Name::from_str_relaxed("other.test.").unwrap();
                    replies.push(answer(&query, &other, "mx.other.test.").to_vec().unwrap());
                    let upper = Name::from_str_relaxed(name.to_ascii().to_uppercase()).unwrap();
                    replies.push(answer(&query, &upper, "mx.right.test.").to_vec().unwrap());
                }
                Fake::Truncated => {
                    let mut cut = answer(&query, &name, "mx.udp.test.");
                    cut.answers.clear();
                    cut.metadata.truncation = true;
                    replies.push(cut.to_vec().unwrap());
                }
                Fake::Refuses => {
                    let mut no = Message::response(query.metadata.id, query.metadata.op_code);
                    no.add_query(query.queries[0].clone());
                    no.metadata.response_code = ResponseCode::Refused;
                    replies.push(no.to_vec().unwrap());
                }
            }
            for reply in replies {
                udp.send_to(&reply, from).await.unwrap();
            }
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        loop {
            let (mut stream, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf).unwrap();
            let name = query.queries[0].name().clone();
            let wire = answer(&query, &name, "mx.over-tcp.test.").to_vec().unwrap();
            let mut framed = u16::try_from(wire.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            stream.write_all(&framed).await.unwrap();
        }
    });
    addr
}

fn lean(addr: std::net::SocketAddr, timeout_ms: u64) -> BulkMx {
    let full = Resolver::open(Some(addr), std::time::Duration::from_millis(timeout_ms)).unwrap();
    BulkMx::new(&full)
}

/// Datagrams that are not the answer to this question (garbage, another id, another name) are
/// dropped and the wait goes on; the real answer is taken, whatever the case of its question.
#[tokio::test]
async fn the_lean_mx_client_takes_only_the_answer_to_its_own_question() {
    let client = lean(fake_resolver(Fake::NoiseFirst).await, 4000);
    for _ in 0..3 {
        // Several lookups on the pooled sockets: each gets its own answer.
        let (mx, ttl) = client.mx_with_ttl("example-company.test").await.unwrap();
        assert_eq!(mx.len(), 1, "{mx:?}");
        assert_eq!(mx[0].exchange, "mx.right.test");
        assert_eq!(ttl, Some(std::time::Duration::from_secs(600)));
    }
}

/// An answer too large for a datagram comes back truncated and is asked again over TCP.
#[tokio::test]
async fn a_truncated_answer_is_asked_again_over_tcp() {
    let client = lean(fake_resolver(Fake::Truncated).await, 4000);
    let (mx, _) = client.mx_with_ttl("big.test").await.unwrap();
    assert_eq!(mx.len(), 1, "{mx:?}");
    assert_eq!(mx[0].exchange, "mx.over-tcp.test");
}

/// REFUSED and silence are failures naming the resolver ("could not ask"), never "no MX".
#[tokio::test]
async fn refused_and_silent_resolvers_are_failures_not_empty_answers() {
    let addr = fake_resolver(Fake::Refuses).await;
    let e = lean(addr, 4000).mx_with_ttl("any.test").await.unwrap_err();
    assert_eq!(e.failure, Failure::Refused);
    assert_eq!(e.resolver, addr.to_string());
    assert_eq!(e.name, "any.test");

    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let e = lean(silent.local_addr().unwrap(), 300)
        .mx_with_ttl("any.test")
        .await
        .unwrap_err();
    assert_eq!(e.failure, Failure::Timeout);
    assert!(e.to_string().contains("timed out"), "{e}");
    drop(silent);
}

/// Records, from inside a lookup, which thread runs it and in which scheduling class, then
/// answers "no MX".
struct WhereAmI {
    seen: std::sync::Mutex<Vec<(String, u32)>>,
}

impl mailroom::provider::resolve::MxLookup for WhereAmI {
    fn mx<'a>(&'a self, _domain: &'a str) -> mailroom::provider::resolve::LookupFuture<'a> {
        // /proc/thread-self is the calling thread: its name, and field 41 of its stat
        // (`policy`: 0 normal, 5 SCHED_IDLE).
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy: u32 = after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        self.seen
            .lock()
            .unwrap()
            .push((comm.trim().to_owned(), policy));
        Box::pin(async { Err(mailroom::provider::resolve::LookupError::NoRecords { ttl: None }) })
    }
}

/// The background lookups run on their own thread, `mx-lookups`, in Linux's SCHED_IDLE class:
/// never on the threads that send or write the ledger, and only on CPU time they leave.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_lookups_run_on_their_own_idle_priority_thread() {
    use mailroom::pipeline::{self, Lookup, Options, Outbound, RateOptions};
    use mailroom::store::NewRecipient;
    use mailroom::transport::{Security, Settings, Transport};

    let relay = common::relay::Relay::plain("").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    let rows = ["ann@alpha.test", "bob@beta.test", "cyd@gamma.test"]
        .iter()
        .enumerate()
        .map(|(i, email)| {
            Ok::<_, String>(NewRecipient {
                email: (*email).to_owned(),
                name: None,
                line: i as u64 + 2,
                token: format!("t{i:015}"),
                fields: "{}".into(),
            })
        });
    let prepared = pipeline::prepare(&path, "idle", rows, "127.0.0.1", "none").unwrap();
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: relay.port(),
        security: Security::None,
        username: None,
        password: None,
        oauth: None,
        ca_file: None,
        hello_name: Some("test.example".into()),
        fallback_ports: vec![],
        connect_timeout: std::time::Duration::from_secs(5),
        command_timeout: std::time::Duration::from_secs(30),
        data_timeout: std::time::Duration::from_secs(30),
        messages_per_connection: 100,
    };
    let lookup = std::sync::Arc::new(WhereAmI {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let options = Options {
        connections: 1,
        rate: RateOptions {
            per_second: Some(1000.0),
            ..RateOptions::default()
        },
        providers: Some(Lookup {
            resolver: lookup.clone(),
            concurrency: 2,
        }),
        ..Options::default()
    };
    let summary = prepared
        .send(Outbound {
            relays: Transport::new(settings).await.unwrap().into(),
            render: common::plain(),
            options,
            shutdown: mailroom::shutdown::Shutdown::new(),
            counters: std::sync::Arc::new(pipeline::Counters::default()),
            events: None,
        })
        .await
        .unwrap();
    assert_eq!(summary.accepted, 3, "{:?}", summary.end);
    let seen = lookup.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "every domain looked up: {seen:?}");
    for (thread, policy) in &seen {
        assert_eq!(thread, "mx-lookups");
        assert_eq!(*policy, 5, "SCHED_IDLE is policy 5 ({thread})");
    }
}
