//! The delivery pipeline against a real Postfix (started by scripts/ci-servers.sh, which exports
//! the MAILROOM_TEST_* variables): STARTTLS + SASL AUTH on the submission port, implicit TLS on
//! the SMTPS port, certificate verification, and the ledger checked against the Maildirs.
//!
//! Without the variables these tests skip with a loud message; with `CI=true` a missing server
//! is a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{PlainRender, recipient, states};
use mailroom::pipeline::{End, Options, RateOptions, Stop, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::store::NewRecipient;
use mailroom::transport::{Secret, Security, Settings};

/// The rig's coordinates, or None (after a loud message) when it is not running here.
struct Rig {
    host: String,
    submission: u16,
    smtps: u16,
    ca: PathBuf,
    user: String,
    password: String,
    maildirs: PathBuf,
    ok: String,
    unknown: String,
    defer451: String,
    defer452: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn rig() -> Option<Rig> {
    let Some(host) = var("MAILROOM_TEST_POSTFIX_HOST") else {
        assert!(
            var("CI").as_deref() != Some("true"),
            "CI=true but MAILROOM_TEST_POSTFIX_HOST is not set: source scripts/ci-servers.sh"
        );
        eprintln!(
            "SKIPPED: no Postfix rig (MAILROOM_TEST_POSTFIX_HOST unset); \
             run `source scripts/ci-servers.sh` as root to test against a real MTA"
        );
        return None;
    };
    let need = |name: &str| var(name).unwrap_or_else(|| panic!("{name} is not set"));
    Some(Rig {
        host,
        submission: need("MAILROOM_TEST_POSTFIX_SUBMISSION_PORT")
            .parse()
            .unwrap(),
        smtps: need("MAILROOM_TEST_POSTFIX_SMTPS_PORT").parse().unwrap(),
        ca: need("MAILROOM_TEST_POSTFIX_CA").into(),
        user: need("MAILROOM_TEST_POSTFIX_USER"),
        password: need("MAILROOM_TEST_POSTFIX_PASSWORD"),
        maildirs: need("MAILROOM_TEST_POSTFIX_MAILDIR_ROOT").into(),
        ok: need("MAILROOM_TEST_DOMAIN_OK"),
        unknown: need("MAILROOM_TEST_UNKNOWN_USER"),
        defer451: need("MAILROOM_TEST_DOMAIN_DEFER451"),
        defer452: need("MAILROOM_TEST_DOMAIN_DEFER452"),
    })
}

fn settings(rig: &Rig, port: u16, security: Security) -> Settings {
    Settings {
        host: rig.host.clone(),
        port,
        security,
        username: Some(rig.user.clone()),
        password: Some(Secret::new(rig.password.clone())),
        oauth: None,
        ca_file: Some(rig.ca.clone()),
        hello_name: Some("client.mailroom.test".into()),
        fallback_ports: vec![],
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(30),
        data_timeout: Duration::from_secs(60),
        messages_per_connection: 50,
    }
}

fn options() -> Options {
    Options {
        connections: 4,
        rate: RateOptions {
            per_second: Some(100_000.0),
            ..RateOptions::default()
        },
        throttle_backoff: Duration::from_millis(200),
        throttle_max: Duration::from_secs(2),
        ..Options::default()
    }
}

/// A marker unique to one test run, carried in every message body (via the fields JSON), so
/// Maildir files can be attributed even though other tests deliver to the same mailboxes.
fn marker(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        mailroom::store::ledger::now_ms()
    )
}

fn contact(i: usize, email: String, marker: &str) -> NewRecipient {
    NewRecipient {
        token: format!("{marker}-{i}"),
        email,
        name: None,
        line: i as u64 + 2,
        fields: format!("{{\"marker\":\"{marker}\"}}"),
    }
}

async fn send(path: &Path, campaign: &str, people: Vec<NewRecipient>, s: Settings) -> Summary {
    let render = Arc::new(PlainRender {
        from: "sender@mailroom.test".into(),
    });
    common::run_once(
        path,
        campaign,
        people,
        s,
        options(),
        render,
        Shutdown::new(),
    )
    .await
    .0
}

/// For each address, how many Maildir files (new/ or cur/) carry `marker`.
fn delivered(root: &Path, marker: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let Ok(domains) = std::fs::read_dir(root) else {
        return counts;
    };
    for domain in domains.flatten() {
        let Ok(users) = std::fs::read_dir(domain.path()) else {
            continue;
        };
        for user in users.flatten() {
            for sub in ["new", "cur"] {
                let Ok(files) = std::fs::read_dir(user.path().join(sub)) else {
                    continue;
                };
                for file in files.flatten() {
                    let Ok(text) = std::fs::read_to_string(file.path()) else {
                        continue;
                    };
                    if text.contains(marker) {
                        let address = format!(
                            "{}@{}",
                            user.file_name().to_string_lossy(),
                            domain.file_name().to_string_lossy()
                        );
                        *counts.entry(address).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    counts
}

/// Postfix delivers to the Maildir asynchronously after its 250: wait (bounded) for the files.
async fn wait_for_delivery(root: &Path, marker: &str, expected: usize) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = delivered(root, marker);
        if counts.values().sum::<usize>() >= expected || tokio::time::Instant::now() > deadline {
            return counts;
        }
        // Polling a directory written by another process: there is no event to wait on.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submission_with_starttls_and_auth_matches_the_maildir() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    let mark = marker("submission");
    let mut people: Vec<NewRecipient> = (1..=30)
        .map(|i| contact(i, format!("user{:04}@{}", 4000 + i, rig.ok), &mark))
        .collect();
    people.push(contact(100, rig.unknown.clone(), &mark));
    people.push(contact(101, format!("someone@{}", rig.defer451), &mark));
    people.push(contact(102, format!("someone@{}", rig.defer452), &mark));
    let s = settings(&rig, rig.submission, Security::StartTls);
    let summary = send(&path, &mark, people, s.clone()).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 30);
    assert_eq!(summary.port, Some(rig.submission));

    let hard = recipient(&path, &rig.unknown);
    assert_eq!(
        (hard.0.as_str(), hard.2, hard.3.as_deref()),
        ("bounced_hard", Some(550), Some("5.1.1"))
    );
    let d451 = recipient(&path, &format!("someone@{}", rig.defer451));
    assert_eq!((d451.0.as_str(), d451.2), ("deferred", Some(451)));
    let d452 = recipient(&path, &format!("someone@{}", rig.defer452));
    assert_eq!((d452.0.as_str(), d452.2), ("deferred", Some(452)));

    let counts = wait_for_delivery(&rig.maildirs, &mark, 30).await;
    assert_eq!(counts.len(), 30, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    // Exactly once under re-run: nothing more reaches the Maildir.
    let again = send(&path, &mark, Vec::new(), s).await;
    assert_eq!(again.accepted, 0);
    assert_eq!(delivered(&rig.maildirs, &mark).values().sum::<usize>(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_on_the_smtps_port_works() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    let mark = marker("smtps");
    let people = (1..=3)
        .map(|i| contact(i, format!("user{:04}@{}", 4100 + i, rig.ok), &mark))
        .collect();
    let summary = send(
        &path,
        &mark,
        people,
        settings(&rig, rig.smtps, Security::Tls),
    )
    .await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.accepted, 3);
    assert_eq!(summary.port, Some(rig.smtps));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_aborts_and_marks_nothing() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    let mark = marker("badpass");
    let people = (1..=5)
        .map(|i| contact(i, format!("user{:04}@{}", 4200 + i, rig.ok), &mark))
        .collect();
    let mut s = settings(&rig, rig.submission, Security::StartTls);
    s.password = Some(Secret::new("not-the-password".into()));
    let summary = send(&path, &mark, people, s).await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Auth(reply)) if reply.code == Some(535)),
        "{:?}",
        summary.end
    );
    assert!(!format!("{:?}", summary.end).contains("not-the-password"));
    assert_eq!(states(&path).get("pending"), Some(&5));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let attempts: i64 = conn
        .query_row("SELECT count(*) FROM attempts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(attempts, 0, "nothing recorded against any recipient");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_before_auth() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.db");
    let mark = marker("untrusted");
    let people = vec![contact(1, format!("user4301@{}", rig.ok), &mark)];
    let mut s = settings(&rig, rig.submission, Security::StartTls);
    s.ca_file = None;
    let summary = send(&path, &mark, people, s).await;
    assert!(
        matches!(&summary.end, End::Aborted(Stop::Tls(_))),
        "{:?}",
        summary.end
    );
    assert_eq!(states(&path).get("pending"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_a_2000_recipient_send_then_rerun_leaves_no_duplicates() {
    use std::io::BufRead;

    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mark = marker("kill9");
    let emails: Vec<String> = (1..=2000)
        .map(|i| format!("user{i:04}@{}", rig.ok))
        .collect();
    let smtp = format!(
        "host = \"{}\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{}\"\n\
         password_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{}\"\nconnections = 4",
        rig.host,
        rig.submission,
        rig.user,
        rig.ca.display()
    );
    let root = common::write_campaign(dir.path(), &mark, &rig.user, &smtp, &emails);
    let ledger_path = root.join("mailroom.db");
    let send = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .arg("send")
            .arg(&root)
            .arg("--yes")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    // First run: read its per-message log lines and kill -9 it after 300 acceptances.
    let mut child = send();
    let stdout = child.stdout.take().unwrap();
    let seen_accepted = tokio::task::spawn_blocking(move || {
        let mut accepted = 0;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("accepted") {
                accepted += 1;
                if accepted == 300 {
                    break;
                }
            }
        }
        accepted
    })
    .await
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        seen_accepted, 300,
        "the first run ended before 300 acceptances"
    );
    let after_crash = states(&ledger_path);
    assert!(
        after_crash.get("pending").copied().unwrap_or(0) > 0,
        "killed too late to test anything: {after_crash:?}"
    );

    // Second run to completion.
    let out = send().wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let finals = states(&ledger_path);
    let accepted = finals.get("accepted").copied().unwrap_or(0);
    let unknown = finals.get("unknown").copied().unwrap_or(0);
    assert_eq!(
        accepted + unknown,
        2000,
        "every recipient accounted for: {finals:?}"
    );
    // Rows claimed at the kill were either in a transaction (now `unknown`) or still queued
    // (the in-flight journal shows they never started: given back, and sent by the second run).
    let claimed_at_kill = after_crash.get("sending").copied().unwrap_or(0);
    assert!(
        unknown <= claimed_at_kill,
        "{finals:?} after {after_crash:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if claimed_at_kill > unknown {
        assert!(
            stderr.contains(&format!(
                "{} recipients claimed by a previous run that stopped were never sent",
                claimed_at_kill - unknown
            )),
            "{stderr}"
        );
    }

    // The Maildirs: nobody twice; every accepted message there; unknown ones at most once.
    let counts = wait_for_delivery(&rig.maildirs, &mark, accepted as usize).await;
    assert!(
        counts.values().all(|n| *n == 1),
        "duplicates in the Maildir"
    );
    let on_disk = counts.len() as i64;
    assert!(
        (accepted..=accepted + unknown).contains(&on_disk),
        "{on_disk} on disk, {finals:?}"
    );
    let conn = rusqlite::Connection::open(&ledger_path).unwrap();
    let mut stmt = conn
        .prepare("SELECT email FROM recipients WHERE state = 'accepted'")
        .unwrap();
    let accepted_emails: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for email in &accepted_emails {
        assert_eq!(
            counts.get(email),
            Some(&1),
            "{email} accepted but not in its Maildir"
        );
    }
}

/// Success DSNs from a real MTA: `[bounces] notify = ["success", "failure"]` makes mailroom ask
/// Postfix (which offers DSN) for `NOTIFY=SUCCESS,FAILURE` with `ENVID` and `ORCPT`; Postfix
/// delivers to the Maildirs and sends an RFC 3464 "delivered" report to the VERP return path;
/// `bounces import` reads them and exactly those recipients become `delivered`. The DSN domain's
/// failure report still makes its recipient a hard bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_success_dsns_mark_exactly_the_delivered_recipients() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let need = |name: &str| var(name).unwrap_or_else(|| panic!("{name} is not set"));
    let bounce_maildir = PathBuf::from(need("MAILROOM_TEST_POSTFIX_BOUNCE_MAILDIR"));
    let dir = tempfile::tempdir().unwrap();
    // A campaign name of its own: its tokens (and so its DSNs) belong to no other run.
    let name = marker("successdsn").replace('-', "");
    let ok: Vec<String> = (1..=5)
        .map(|i| format!("user{:04}@{}", 4800 + i, rig.ok))
        .collect();
    let failing = format!("someone@{}", need("MAILROOM_TEST_DOMAIN_DSN"));
    let mut emails = ok.clone();
    emails.push(failing.clone());
    emails.push(rig.unknown.clone());
    let smtp = format!(
        "host = \"{}\"\nport = {}\nsecurity = \"starttls\"\nusername = \"{}\"\n\
         password_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{}\"",
        rig.host,
        rig.submission,
        rig.user,
        rig.ca.display()
    );
    let root = common::write_campaign(dir.path(), &name, &rig.user, &smtp, &emails);
    let toml = root.join("campaign.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[bounces]\nreturn_path = \"{}\"\nnotify = [\"success\", \"failure\"]\n",
        need("MAILROOM_TEST_BOUNCE_RETURN_PATH")
    ));
    std::fs::write(&toml, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(&root)
        .arg("--yes")
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let db = root.join("mailroom.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let token_of = |email: &str| -> String {
        conn.query_row(
            "SELECT token FROM recipients WHERE email = ?1",
            [email],
            |r| r.get(0),
        )
        .unwrap()
    };
    let expected: Vec<String> = ok.iter().chain([&failing]).map(|e| token_of(e)).collect();
    // Reports arrive asynchronously, after local delivery: poll the shared bounce Maildir for
    // one per token (there is no event to wait on in another process's folder).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let files = mailroom::bounce::mailbox::maildir(&bounce_maildir)
            .map(|it| {
                it.filter_map(Result::ok)
                    .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let arrived = expected
            .iter()
            .filter(|t| files.iter().any(|f| f.contains(&format!("bounces+{t}@"))))
            .count();
        if arrived == expected.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{arrived} of {} reports within 60 s",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
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
    let st = states(&db);
    assert_eq!(st.get("delivered"), Some(&5), "{st:?}");
    assert_eq!(st.get("bounced_hard"), Some(&2), "{st:?}");
    assert_eq!(st.get("accepted"), None, "{st:?}");
    for email in &ok {
        assert_eq!(recipient(&db, email).0, "delivered", "{email}");
    }
    // The reports were matched by what mailroom put in the envelope.
    let envids: i64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE kind = 'delivered' AND action = 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(envids, 5);
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["report", "--format", "json"])
        .arg(&root)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["totals"]["delivered"], 5);
    assert_eq!(json["totals"]["accepted"], 0);
    assert_eq!(json["totals"]["relay_accepted"], 6);
}

/// `n` bytes covering every byte value (a deterministic xorshift), so a lossy step shows.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Maildir files that carry `marker`, with the address they were delivered to.
fn delivered_files(root: &Path, marker: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for domain in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for user in std::fs::read_dir(domain.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            for sub in ["new", "cur"] {
                for file in std::fs::read_dir(user.path().join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let Ok(bytes) = std::fs::read(file.path()) else {
                        continue;
                    };
                    if bytes.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                        let address = format!(
                            "{}@{}",
                            user.file_name().to_string_lossy(),
                            domain.file_name().to_string_lossy()
                        );
                        out.push((address, file.path()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_reach_the_maildir_byte_identical_after_base64_decoding() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mark = marker("attach");
    let root = dir.path().join("campaign");
    std::fs::create_dir_all(root.join("files")).unwrap();
    // The rig's Postfix takes 10,240,000 bytes: 4 MB + 1 MB encode to about 6.8 MB.
    let brochure = noise(4_000_000, 7);
    let personal = noise(1_000_000, 8);
    std::fs::write(root.join("files/brochure.pdf"), &brochure).unwrap();
    std::fs::write(root.join("files/Prospekt für Zoë.pdf"), &personal).unwrap();
    std::fs::write(
        root.join("body.txt.hbs"),
        "Hello {{name}}, your brochure is attached.\n",
    )
    .unwrap();
    let people = [
        (format!("user4301@{}", rig.ok), "files/Prospekt für Zoë.pdf"),
        (format!("user4302@{}", rig.ok), ""),
    ];
    let mut csv = String::from("email,name,files\n");
    for (i, (email, files)) in people.iter().enumerate() {
        csv.push_str(&format!("{email},Reader {i},{files}\n"));
    }
    std::fs::write(root.join("contacts.csv"), csv).unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!(
            "[campaign]\nname = \"{mark}\"\nfrom = \"Sender <{user}>\"\nsubject = \"Brochure for {{{{name}}}}\"\n\
             text = \"body.txt.hbs\"\nattachments = [\"files/brochure.pdf\"]\n\n\
             [contacts]\npath = \"contacts.csv\"\nattachment_column = \"files\"\n\n\
             [smtp]\nhost = \"{host}\"\nport = {port}\nsecurity = \"starttls\"\nusername = \"{user}\"\n\
             password_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{ca}\"\n\
             hello_name = \"client.mailroom.test\"\n\n[rate]\nper_second = 1000\n",
            user = rig.user,
            host = rig.host,
            port = rig.submission,
            ca = rig.ca.display(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["send", "--yes"])
        .arg(&root)
        .env("MAILROOM_TEST_POSTFIX_PASSWORD", &rig.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_delivery(&rig.maildirs, &mark, 2).await;
    let files = delivered_files(&rig.maildirs, &mark);
    assert_eq!(files.len(), 2, "{files:?}");
    for (address, file) in files {
        let bytes = std::fs::read(&file).unwrap();
        let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        use mail_parser::MimeHeaders as _;
        let got: Vec<(String, Vec<u8>)> = m
            .attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap().to_owned(),
                    a.contents().to_vec(),
                )
            })
            .collect();
        let mut want = vec![("brochure.pdf".to_owned(), brochure.clone())];
        if address == people[0].0 {
            want.push(("Prospekt für Zoë.pdf".to_owned(), personal.clone()));
        }
        assert!(
            got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g == w),
            "{address}: the Maildir copy's attachments differ from the files ({} found)",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_reaches_the_maildir_through_starttls_and_auth_and_no_recipient_is_touched() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mark = marker("testsend");
    let root = dir.path().join("campaign");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("body.txt.hbs"), "Hello {{name}}, {{campaign}}.\n").unwrap();
    std::fs::write(
        root.join("contacts.csv"),
        format!(
            "email,name\nuser4330@{ok},Reader Zero\nuser4331@{ok},Reader One\n",
            ok = rig.ok
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!(
            "[campaign]\nname = \"{mark}\"\nfrom = \"Sender <{user}>\"\nsubject = \"News for {{{{name}}}}\"\n\
             text = \"body.txt.hbs\"\n\n[contacts]\npath = \"contacts.csv\"\n\n\
             [smtp]\nhost = \"{host}\"\nport = {port}\nsecurity = \"starttls\"\nusername = \"{user}\"\n\
             password_env = \"MAILROOM_TEST_POSTFIX_PASSWORD\"\nca_file = \"{ca}\"\n\
             hello_name = \"client.mailroom.test\"\n",
            user = rig.user,
            host = rig.host,
            port = rig.submission,
            ca = rig.ca.display(),
        ),
    )
    .unwrap();
    let tester = format!("user4339@{}", rig.ok);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["send", "--line", "3", "--test", &tester])
        .arg(&root)
        .env("MAILROOM_TEST_POSTFIX_PASSWORD", &rig.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_delivery(&rig.maildirs, &mark, 1).await;
    let files = delivered_files(&rig.maildirs, &mark);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].0, tester);
    let bytes = std::fs::read(&files[0].1).unwrap();
    let m = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    assert_eq!(m.subject(), Some("[TEST] News for Reader One"));
    // The ledger has the test send and no recipient at all (nothing was imported).
    let conn = rusqlite::Connection::open(root.join("mailroom.db")).unwrap();
    let (tests, recipients): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM test_sends WHERE outcome = 'accepted'),
                    (SELECT count(*) FROM recipients)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((tests, recipients), (1, 0));
}

/// Several relays (issue 16): a sandbox that dies after ten messages and the real Postfix
/// (STARTTLS + AUTH) as two `[[relay]]`s. Everyone arrives exactly once, across the sandbox and
/// the Maildirs; Postfix carries the rest; the ledger says who went where; nobody is charged
/// more than the one attempt that went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dying_sandbox_and_postfix_as_two_relays_deliver_everyone_exactly_once() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let Some(rig) = rig() else { return };
    let sandbox = common::relay::Relay::plain("[session]\ndie_after_messages = 10\n").await;
    let path = sandbox.ledger();
    let mark = marker("relays");
    let people: Vec<NewRecipient> = (1..=40)
        .map(|i| contact(i, format!("user{:04}@{}", 4200 + i, rig.ok), &mark))
        .collect();
    let spec = |name: &str, settings: Settings| {
        let name = name.to_owned();
        async move {
            mailroom::pipeline::RelaySpec {
                name,
                weight: 1,
                rate: RateOptions {
                    per_second: None,
                    ..RateOptions::default()
                },
                daily_cap: None,
                cooloff: Duration::from_secs(300),
                transport: mailroom::transport::Transport::new(settings).await.unwrap(),
            }
        }
    };
    let relays = mailroom::pipeline::Relays::several(
        spec("sandbox", sandbox.plain_settings()).await,
        vec![
            spec(
                "postfix",
                settings(&rig, rig.submission, Security::StartTls),
            )
            .await,
        ],
    );
    let render = Arc::new(PlainRender {
        from: "sender@mailroom.test".into(),
    });
    let summary = common::send_relays(&path, &mark, people, relays, options(), render).await;
    assert_eq!(summary.end, End::Finished);
    assert_eq!(states(&path).get("accepted"), Some(&40));
    let in_sandbox = sandbox.accepted_per_address();
    assert!(in_sandbox.len() >= 10, "{in_sandbox:?}");
    assert!(in_sandbox.values().all(|n| *n == 1));
    let counts = wait_for_delivery(&rig.maildirs, &mark, 40 - in_sandbox.len()).await;
    assert_eq!(counts.len(), 40 - in_sandbox.len(), "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(counts.keys().all(|a| !in_sandbox.contains_key(a)));
    let reports: BTreeMap<&str, (u64, u64)> = summary
        .relays
        .iter()
        .map(|r| (r.name.as_str(), (r.accepted, r.cooloffs)))
        .collect();
    assert_eq!(reports["sandbox"], (in_sandbox.len() as u64, 1));
    assert_eq!(reports["postfix"], (counts.len() as u64, 0));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let charged: i64 = conn
        .query_row("SELECT max(attempts) FROM recipients", [], |r| r.get(0))
        .unwrap();
    assert_eq!(charged, 1);
    let through_postfix: i64 = conn
        .query_row(
            "SELECT count(*) FROM attempts a JOIN relays l ON l.id = a.relay_id \
             WHERE l.name = 'postfix' AND a.outcome = 'accepted'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(through_postfix as usize, counts.len());
}
