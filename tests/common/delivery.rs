//! Shared helpers for the delivery tests: a small scripted SMTP server on 127.0.0.1:0 (plain TCP,
//! real sockets) whose behaviour depends on the recipient's local part, a minimal renderer, and
//! ledger queries. The server exists to inject protocol faults (silence after DATA, silence at
//! RCPT, throttling) that a real MTA cannot be told to produce on demand.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom::pipeline::{Outgoing, Render};
use mailroom::store::DueRow;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// (RCPT address, message bytes) for every message answered 250 after DATA.
    pub accepted: Vec<(String, Vec<u8>)>,
    /// Every command line, in order, across sessions.
    pub transcript: Vec<String>,
    pub sessions: usize,
    /// Recipients whose end-of-data the server received (answered or not).
    pub data_received: Vec<String>,
    /// Per-recipient count of RCPT commands.
    pub rcpt_count: BTreeMap<String, usize>,
    /// MAIL commands that arrived with more commands already buffered behind them.
    pub pipelined_mail: usize,
}

/// The scripted server.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub changed: Arc<Notify>,
    thawed: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// Server-wide options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Delay before every end-of-data reply (a slow relay).
    pub data_delay: Duration,
    /// Advertise STARTTLS in EHLO (it is never actually offered by this plain server: used to
    /// check the client stops when STARTTLS is missing, so leave false for that).
    pub advertise_starttls: bool,
    /// After this many accepted messages, never answer an end-of-data again (until
    /// [`Server::thaw`]): a relay that hangs with messages in flight.
    pub freeze_after: Option<usize>,
    /// The first this-many sessions answer their first MAIL with two 250 lines instead of one
    /// (a buggy relay or proxy, or a reply injected before STARTTLS): every later reply on
    /// that connection is one step late.
    pub extra_mail_reply_sessions: usize,
    /// Advertise PIPELINING (RFC 2920).
    pub pipelining: bool,
}

impl Server {
    pub async fn start(options: Options) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let thawed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, c, t) = (seen.clone(), changed.clone(), thawed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let number = {
                    let mut seen = s.lock().unwrap();
                    seen.sessions += 1;
                    seen.sessions
                };
                tokio::spawn(session(
                    number,
                    stream,
                    s.clone(),
                    c.clone(),
                    t.clone(),
                    options.clone(),
                ));
            }
        });
        Server {
            addr,
            seen,
            changed,
            thawed,
            task,
        }
    }

    /// Ends a `freeze_after` freeze for new end-of-data replies.
    pub fn thaw(&self) {
        self.thawed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn accepted_count(&self) -> usize {
        self.seen.lock().unwrap().accepted.len()
    }

    /// Waits (event-driven, no polling sleep) until `pred` holds on what the server saw.
    pub async fn wait_until(&self, pred: impl Fn(&Seen) -> bool) {
        loop {
            let notified = self.changed.notified();
            if pred(&self.seen.lock().unwrap()) {
                return;
            }
            notified.await;
        }
    }

    /// How many times each address was accepted (must be 1 for exactly-once).
    pub fn accepted_per_address(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (rcpt, _) in &self.seen.lock().unwrap().accepted {
            *counts.entry(rcpt.clone()).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn angle(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

async fn session(
    number: usize,
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    thawed: Arc<std::sync::atomic::AtomicBool>,
    options: Options,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if write
        .write_all(b"220 scripted.test ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    let mut rcpt: Option<String> = None;
    let mut sender_bad = false;
    let mut extra_mail_reply = number <= options.extra_mail_reply_sessions;
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_owned();
        seen.lock().unwrap().transcript.push(cmd.clone());
        changed.notify_waiters();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            let mut r = String::from("250-scripted.test\r\n250-8BITMIME\r\n");
            if options.advertise_starttls {
                r.push_str("250-STARTTLS\r\n");
            }
            if options.pipelining {
                r.push_str("250-PIPELINING\r\n");
            }
            r.push_str("250 ENHANCEDSTATUSCODES");
            r
        } else if upper.starts_with("MAIL FROM:") {
            if !lines.buffer().is_empty() {
                seen.lock().unwrap().pipelined_mail += 1;
            }
            let from = angle(&cmd);
            sender_bad = from.starts_with("bad");
            rcpt = None;
            if sender_bad {
                "553 5.7.1 <bad>: Sender address rejected: not owned by user".into()
            } else if from.starts_with("tempfail") {
                "451 4.3.0 Error: local problem, try again later".into()
            } else if std::mem::take(&mut extra_mail_reply) {
                "250 2.1.0 Ok\r\n250 2.1.0 Ok (extra)".into()
            } else {
                "250 2.1.0 Ok".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            let to = angle(&cmd);
            let n = {
                let mut s = seen.lock().unwrap();
                let n = s.rcpt_count.entry(to.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let local = to.split('@').next().unwrap_or("").to_owned();
            if local.starts_with("silentrcpt") {
                // Never answer: the client's command timeout must fire.
                std::future::pending::<()>().await;
                return;
            } else if local.starts_with("unknown") {
                format!(
                    "550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table"
                )
            } else if local.starts_with("defer") {
                format!("451 4.3.0 <{to}>: Recipient address rejected: try again later")
            } else if local.starts_with("full") {
                "552 5.2.2 mailbox full".into()
            } else if local.starts_with("relaydenied") {
                format!("554 5.7.1 <{to}>: Relay access denied")
            } else if local.starts_with("retryonce") && n == 1 {
                format!("451 4.3.0 <{to}>: temporarily unavailable, try again")
            } else if local.starts_with("throttlealways")
                || (local.starts_with("throttleonce") && n == 1)
            {
                "450 4.7.1 rate limited, slow down".into()
            } else {
                rcpt = Some(to);
                "250 2.1.5 Ok".into()
            }
        } else if upper == "DATA" {
            if rcpt.is_some() && !sender_bad {
                "354 End data with <CR><LF>.<CR><LF>".into()
            } else {
                "554 5.5.1 Error: no valid recipients".into()
            }
        } else if upper == "RSET" {
            rcpt = None;
            "250 2.0.0 Ok".into()
        } else if upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 Bye\r\n").await;
            return;
        } else {
            "502 5.5.2 Error: command not recognized".into()
        };
        if write
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        if reply.starts_with("354") {
            let mut body = Vec::new();
            loop {
                let mut l = String::new();
                match lines.read_line(&mut l).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if l == ".\r\n" {
                    break;
                }
                body.extend_from_slice(l.as_bytes());
            }
            let to = rcpt.take().unwrap_or_default();
            if !options.data_delay.is_zero() {
                tokio::time::sleep(options.data_delay).await;
            }
            // Decide and record under one lock, so "accepted" and "frozen" never race.
            let queued = {
                let mut s = seen.lock().unwrap();
                s.data_received.push(to.clone());
                let frozen = options.freeze_after.is_some_and(|n| {
                    s.accepted.len() >= n && !thawed.load(std::sync::atomic::Ordering::SeqCst)
                });
                if to.starts_with("silentdata") || frozen {
                    None
                } else {
                    s.accepted.push((to.clone(), body));
                    Some(s.accepted.len())
                }
            };
            changed.notify_waiters();
            let Some(queued) = queued else {
                std::future::pending::<()>().await;
                return;
            };
            changed.notify_waiters();
            let reply = if to.starts_with("dot354") {
                // A reply that answers nothing we could have sent after the final dot.
                "354 go ahead\r\n".to_owned()
            } else if to.starts_with("dupqueued") {
                // The real verdict, then a stray second reply the next command would read.
                format!("250 2.0.0 Ok: queued as Q{queued:05}\r\n250 2.0.0 Ok: stray\r\n")
            } else {
                format!("250 2.0.0 Ok: queued as Q{queued:05}\r\n")
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

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

/// Contacts `local{i}@domain` for i in 0..n, in the shape the ledger imports.
pub fn contacts(locals: &[&str]) -> Vec<mailroom::store::NewRecipient> {
    locals
        .iter()
        .enumerate()
        .map(|(i, local)| {
            let email = if local.contains('@') {
                (*local).to_owned()
            } else {
                format!("{local}@example.test")
            };
            mailroom::store::NewRecipient {
                domain: email.split('@').nth(1).unwrap().to_owned(),
                email,
                name: None,
                line: i as u64 + 2,
                token: format!("tok{i:04}x{}", local.len()),
                message_id: format!("tok{i:04}x{}@mailroom.test", local.len()),
                fields: format!("{{\"n\":\"{i}\"}}"),
            }
        })
        .collect()
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

/// Writes a minimal campaign folder (campaign.toml, body template, contacts.csv) and returns it.
/// `smtp` is the body of the `[smtp]` table; the rate limit is out of the way.
pub fn write_campaign(
    dir: &Path,
    name: &str,
    from: &str,
    smtp: &str,
    emails: &[String],
) -> std::path::PathBuf {
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

/// Every `accepted` row's recorded reply names the queue id the server gave *that* address: a
/// connection that went out of step (replies shifted by one after a cancelled command) would
/// record another message's reply.
pub fn assert_replies_in_sync(server: &Server, path: &Path) {
    let expected: BTreeMap<String, String> = server
        .seen
        .lock()
        .unwrap()
        .accepted
        .iter()
        .enumerate()
        .map(|(i, (rcpt, _))| (rcpt.clone(), format!("queued as Q{:05}", i + 1)))
        .collect();
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT email, last_reply FROM recipients WHERE state = 'accepted'")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty());
    for (email, reply) in rows {
        let want = expected
            .get(&email)
            .unwrap_or_else(|| panic!("{email} not at the server"));
        assert!(
            reply.ends_with(want.as_str()),
            "{email}: recorded {reply:?}, server said {want}"
        );
    }
}

/// One run of the real pipeline, as `mailroom send` wires it minus the CLI: imports `people`
/// into the ledger at `path` as campaign `campaign`, sends what is due through `settings`, and
/// waits for the ledger writer to commit and stop. Returns the run's summary and what the import
/// reported.
pub async fn run_once(
    path: &Path,
    campaign: &str,
    people: Vec<mailroom::store::NewRecipient>,
    settings: mailroom::transport::Settings,
    options: mailroom::pipeline::Options,
    render: Arc<dyn Render>,
    shutdown: mailroom::shutdown::Shutdown,
) -> (mailroom::pipeline::Summary, mailroom::store::ImportCount) {
    let prepared = mailroom::pipeline::prepare(
        path,
        campaign,
        people.into_iter().map(Ok::<_, String>),
        &settings.host,
        settings.security.as_str(),
    )
    .unwrap();
    let imported = prepared.imported;
    let transport = mailroom::transport::Transport::new(settings).await.unwrap();
    let summary = prepared
        .send(mailroom::pipeline::Outbound {
            transport,
            render,
            options,
            shutdown,
            counters: Arc::new(mailroom::pipeline::Counters::default()),
            events: None,
        })
        .await
        .unwrap();
    (summary, imported)
}
