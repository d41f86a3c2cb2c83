//! The one shared test module (`mod common;` in each test crate): the seam to the pipeline API,
//! a renderer, contacts, ledger queries, campaign folders, and the sandbox as the relay every
//! delivery test talks to.
//!
//! `prepare` and `try_run_once` are the only places tests call `pipeline::prepare`,
//! `store::Writer::spawn` and `pipeline::run`: when that API changes, only they change. Every
//! other test goes through them or through the `mailroom` binary.
//!
//! Submodules: `fixture` (a campaign folder to break one way), `relay` (a sandbox with its CA and a ledger in one temporary folder),
//! `refusal` (the table of runs a relay refuses), `sandbox` (a raw SMTP client for protocol
//! tests of the sandbox), `ledger` (a ledger builder for report tests), `screen` (the dashboard
//! in a TestBackend).
#![allow(dead_code, clippy::unwrap_used)]

pub mod auth;
pub mod fixture;
pub mod ledger;
pub mod oauth;
pub mod refusal;
pub mod relay;
pub mod sandbox;
pub mod screen;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailroom::pipeline::{self, Options, Outgoing, RateOptions, Render, Summary};
use mailroom::shutdown::Shutdown;
use mailroom::store::{DueRow, ImportCount, NewRecipient};
use mailroom::transport::{Security, Settings};

/// Renders a plain message from the ledger row (the campaign loader is tested on its own).
pub struct PlainRender {
    pub from: String,
}

impl Render for PlainRender {
    fn render(&self, row: &DueRow) -> Result<Outgoing, String> {
        let message_id = format!("{}@mailroom.test", row.token);
        let bytes = format!(
            "From: {from}\r\nTo: {to}\r\nSubject: hello\r\nMessage-ID: <{message_id}>\r\n\
             X-Mailroom-Token: {token}\r\n\r\nHello {to}, fields {fields}.\r\n",
            from = self.from,
            to = row.email,
            token = row.token,
            fields = row.fields,
        );
        Ok(Outgoing {
            envelope_from: self.from.clone(),
            envelope_to: row.email.clone(),
            message_id,
            bytes: bytes.into_bytes(),
        })
    }
}

/// A [`PlainRender`] from `news@sender.test`.
pub fn plain() -> Arc<dyn Render> {
    Arc::new(PlainRender {
        from: "news@sender.test".into(),
    })
}

/// Contacts `local@example.test` (or the address itself when it has an `@`), in the shape the
/// ledger imports, with CSV lines from 2.
pub fn contacts(locals: &[&str]) -> Vec<NewRecipient> {
    locals
        .iter()
        .enumerate()
        .map(|(i, local)| {
            let email = if local.contains('@') {
                (*local).to_owned()
            } else {
                format!("{local}@example.test")
            };
            NewRecipient {
                email,
                name: None,
                line: i as u64 + 2,
                token: format!("tok{i:04}x{}", local.len()),
                fields: format!("{{\"n\":\"{i}\"}}"),
            }
        })
        .collect()
}

/// [`contacts`] of owned local parts.
pub fn people(locals: &[String]) -> Vec<NewRecipient> {
    let refs: Vec<&str> = locals.iter().map(String::as_str).collect();
    contacts(&refs)
}

/// `prefix0`, `prefix1`, ... `prefix{n-1}`.
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Settings for `host:port` with 5-second timeouts and no credentials.
pub fn settings(host: &str, port: u16, security: Security) -> Settings {
    Settings {
        host: host.into(),
        port,
        security,
        username: None,
        password: None,
        oauth: None,
        ca_file: None,
        hello_name: Some("client.test".into()),
        fallback_ports: vec![],
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        messages_per_connection: 100,
    }
}

/// `connections` workers, a rate that never binds, short throttle back-offs.
pub fn options(connections: usize) -> Options {
    Options {
        connections,
        rate: RateOptions {
            per_second: Some(100_000.0),
            ..RateOptions::default()
        },
        throttle_backoff: Duration::from_millis(50),
        throttle_max: Duration::from_millis(400),
        ..Options::default()
    }
}

/// `pipeline::prepare` of `campaign` with `people` against a loopback relay without TLS: crash
/// recovery of the whole ledger, then the import.
pub fn prepare(path: &Path, campaign: &str, people: Vec<NewRecipient>) -> pipeline::Prepared {
    prepare_for(path, campaign, people, "127.0.0.1", "none")
}

fn prepare_for(
    path: &Path,
    campaign: &str,
    people: Vec<NewRecipient>,
    host: &str,
    security: &str,
) -> pipeline::Prepared {
    let rows = people.into_iter().map(Ok::<_, String>);
    pipeline::prepare(path, campaign, rows, host, security).unwrap()
}

/// What one run of the pipeline left.
pub struct Ran {
    /// What `pipeline::run` returned.
    pub result: Result<Summary, pipeline::Error>,
    /// What the import before the run did.
    pub imported: ImportCount,
    /// The run's row in `runs`.
    pub run_id: mailroom::model::RunId,
    /// How the ledger writer thread ended.
    pub writer: Result<(), mailroom::store::Error>,
}

/// One run of the real pipeline, as `mailroom send` wires it minus the CLI: imports `people`
/// into the ledger at `path` as campaign `campaign`, sends what is due through `settings`, and
/// waits for the ledger writer to commit and stop.
pub async fn try_run_once(
    path: &Path,
    campaign: &str,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    render: Arc<dyn Render>,
    shutdown: Shutdown,
) -> Ran {
    let prepared = prepare_for(
        path,
        campaign,
        people,
        &settings.host,
        settings.security.as_str(),
    );
    let (imported, run_id) = (prepared.imported, prepared.run_id);
    let (writer, thread) = mailroom::store::Writer::spawn(prepared.ledger).unwrap();
    let transport = mailroom::transport::Transport::new(settings).await.unwrap();
    let result = pipeline::run(pipeline::Run {
        ledger: path.to_owned(),
        writer,
        campaign_id: prepared.campaign_id,
        run_id,
        relays: transport.into(),
        render,
        options,
        shutdown,
        counters: Arc::new(pipeline::Counters::default()),
        events: None,
    })
    .await;
    let writer = tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap();
    Ran {
        result,
        imported,
        run_id,
        writer,
    }
}

/// One run through the library's entry point, `Prepared::send` (which also records the run's
/// From domain from `options`): imports `people`, sends, waits for the ledger writer.
pub async fn send_prepared(
    path: &Path,
    campaign: &str,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    render: Arc<dyn Render>,
) -> Summary {
    let prepared = prepare_for(
        path,
        campaign,
        people,
        &settings.host,
        settings.security.as_str(),
    );
    let transport = mailroom::transport::Transport::new(settings).await.unwrap();
    prepared
        .send(pipeline::Outbound {
            relays: transport.into(),
            render,
            options,
            shutdown: Shutdown::new(),
            counters: Arc::new(pipeline::Counters::default()),
            events: None,
        })
        .await
        .unwrap()
}

/// One run through `Prepared::send` over `relays` (several `[[relay]]`s, or one): imports
/// `people`, sends, waits for the ledger writer.
pub async fn send_relays(
    path: &Path,
    campaign: &str,
    people: Vec<NewRecipient>,
    relays: pipeline::Relays,
    options: Options,
    render: Arc<dyn Render>,
) -> Summary {
    let prepared = prepare_for(path, campaign, people, "relays", "none");
    prepared
        .send(pipeline::Outbound {
            relays,
            render,
            options,
            shutdown: Shutdown::new(),
            counters: Arc::new(pipeline::Counters::default()),
            events: None,
        })
        .await
        .unwrap()
}

/// [`try_run_once`] that must succeed; returns the run's summary and what the import reported.
pub async fn run_once(
    path: &Path,
    campaign: &str,
    people: Vec<NewRecipient>,
    settings: Settings,
    options: Options,
    render: Arc<dyn Render>,
    shutdown: Shutdown,
) -> (Summary, ImportCount) {
    let ran = try_run_once(path, campaign, people, settings, options, render, shutdown).await;
    ran.writer.unwrap();
    (ran.result.unwrap(), ran.imported)
}

/// (state, count) for a campaign, by state name.
pub fn states(path: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT state, count(*) FROM recipients GROUP BY state")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A state map from pairs, to compare with [`states`].
pub fn state_map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The state, attempts, last code and last enhanced code of one address.
pub fn recipient(path: &Path, email: &str) -> (String, i64, Option<i64>, Option<String>) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT state, attempts, last_code, last_enhanced FROM recipients WHERE email = ?1",
        [email],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

/// (step, code, enhanced, outcome) of every attempt of one address, in order.
pub fn attempts(path: &Path, email: &str) -> Vec<(String, Option<i64>, Option<String>, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT a.step, a.code, a.enhanced, a.outcome FROM attempts a
             JOIN recipients r ON r.id = a.recipient_id WHERE r.email = ?1 ORDER BY a.id",
        )
        .unwrap();
    stmt.query_map([email], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The outcome of the latest run of the ledger.
pub fn last_run_outcome(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(
        "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Writes a minimal campaign folder (campaign.toml, body template, contacts.csv) and returns it.
/// `smtp` is the body of the `[smtp]` table; the rate limit is out of the way.
pub fn write_campaign(
    dir: &Path,
    name: &str,
    from: &str,
    smtp: &str,
    emails: &[String],
) -> PathBuf {
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("campaign.toml"),
        format!(
            "[campaign]\nname = \"{name}\"\nfrom = \"News <{from}>\"\nsubject = \"Hello {{{{name}}}}\"\n\
             text = \"body.txt.hbs\"\n\n[contacts]\npath = \"contacts.csv\"\n\n[smtp]\n{smtp}\n\n\
             [rate]\nper_second = 100000\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("body.txt.hbs"),
        "Hi {{name}},\n\nthis is campaign {{campaign}} for {{email}}.\n",
    )
    .unwrap();
    let mut csv = String::from("email,name\n");
    for (i, e) in emails.iter().enumerate() {
        csv.push_str(&format!("{e},Reader {i}\n"));
    }
    std::fs::write(root.join("contacts.csv"), csv).unwrap();
    root
}

/// Runs `mailroom send CAMPAIGN --yes` with stdout and stderr piped.
pub fn spawn_send(root: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .arg("send")
        .arg(root)
        .arg("--yes")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `text` with `dir` (as given and canonical) written `[DIR]`.
pub fn redact_dir(text: &str, dir: &Path) -> String {
    let mut out = text.to_owned();
    let canonical = dir.canonicalize().ok();
    for form in [Some(dir.to_path_buf()), canonical].into_iter().flatten() {
        let form = form.display().to_string();
        if !form.is_empty() {
            out = out.replace(&form, "[DIR]");
        }
    }
    out
}
