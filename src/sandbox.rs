//! An embedded ESMTP server for tests, the demo and users without a relay: STARTTLS or implicit
//! TLS with a CA generated at start, AUTH PLAIN/LOGIN after TLS, a Maildir for accepted mail, and
//! a script (`Script`) that injects replies and faults per recipient or per session.
//!
//! Shape (as in mini-redis): `session` is the whole SMTP dialogue as an I/O-free state machine;
//! this file is the thin shell that accepts connections, reads lines with limits, sleeps for
//! scripted delays, runs TLS handshakes, writes the Maildir and reports, and carries out what the
//! session decided. It must never decide a reply itself (except "could not write the Maildir").
//!
//! What the sessions saw is kept by `seen::Observer` (counters, stored messages, the freeze);
//! `Sandbox::seen`, `Sandbox::wait_until` and `Sandbox::thaw` expose it, so a test asserts and
//! waits on the one scriptable server that users also run, never on a hand-written stand-in.
//!
//! It listens on loopback only unless `allow_remote` is set: a server that accepts any mail and
//! any sender is not something to expose by accident.

pub mod dsn;
pub mod maildir;
mod policy;
pub mod report;
mod response;
pub mod script;
pub mod seen;
pub mod session;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use script::{Action, Flood, Reply, Rule, Script, SessionFaults, Stage, Target};
pub use seen::{Seen, Stored};
pub use session::{After, Policy, Response, Session};

/// What starting the sandbox can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "refusing to listen on {addr}: not a loopback address\n\nThe sandbox accepts mail from anyone; listen on 127.0.0.1 (or ::1), or pass --allow-remote if other hosts really must reach it."
    )]
    NotLoopback { addr: SocketAddr },
    #[error("could not listen on {addr}\n\nPick another port (port 0 picks a free one).")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("could not create the Maildir {}", path.display())]
    Maildir { path: PathBuf, source: io::Error },
    #[error(
        "the implicit-TLS listener needs TLS\n\nDo not turn TLS off when asking for implicit TLS."
    )]
    ImplicitTlsWithoutTls,
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error(transparent)]
    Script(#[from] script::Error),
}

/// How to run a sandbox. `SandboxConfig::new(maildir)` gives: 127.0.0.1:0, STARTTLS offered, no
/// AUTH, accept everything.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The main listener; 127.0.0.1:0 in tests.
    pub listen: SocketAddr,
    /// The main listener speaks TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// An additional implicit-TLS listener next to a STARTTLS one (`mailroom sandbox --tls-listen`).
    pub tls_listen: Option<SocketAddr>,
    /// Offer STARTTLS (and accept implicit TLS). Without it AUTH is never offered.
    pub tls: bool,
    /// User and password; AUTH is offered only after TLS and then required before MAIL.
    pub auth: Option<(String, String)>,
    /// An OAuth2 access token accepted by AUTH XOAUTH2 for the `auth` user.
    pub xoauth2_token: Option<String>,
    /// Accepted messages, one file each, written atomically.
    pub maildir: PathBuf,
    /// Where scripted DSNs and ARF reports go; defaults to `bounces` next to `maildir`.
    pub bounce_maildir: Option<PathBuf>,
    pub script: Script,
    /// Allow a non-loopback listen address.
    pub allow_remote: bool,
    /// Name in the greeting, EHLO and reports.
    pub hostname: String,
    /// Advertised with SIZE and enforced.
    pub max_message_size: usize,
    /// Concurrent sessions per listener; more are refused with 421 so a runaway client cannot
    /// exhaust memory or file descriptors.
    pub max_connections: usize,
}

impl SandboxConfig {
    /// Defaults: 127.0.0.1:0, STARTTLS offered, no AUTH, accept everything, 10 MiB messages.
    pub fn new(maildir: impl Into<PathBuf>) -> SandboxConfig {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            implicit_tls: false,
            tls_listen: None,
            tls: true,
            auth: None,
            xoauth2_token: None,
            maildir: maildir.into(),
            bounce_maildir: None,
            script: Script::accept_all(),
            allow_remote: false,
            hostname: "sandbox.localhost".to_owned(),
            max_message_size: 10 * 1024 * 1024,
            max_connections: 256,
        }
    }

    /// Sets the main listener address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Makes the main listener speak TLS from the first byte (port 465 style).
    pub fn implicit_tls(mut self, on: bool) -> Self {
        self.implicit_tls = on;
        self
    }

    /// Offers TLS (on by default); without it AUTH is never offered.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Requires AUTH (offered after TLS) with this user and password.
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Also accepts AUTH XOAUTH2 with this bearer token for the [`SandboxConfig::auth`] user; a
    /// wrong token is refused the way Gmail does (a 334 with a base64 JSON error, then 535).
    pub fn xoauth2_token(mut self, token: &str) -> Self {
        self.xoauth2_token = Some(token.to_owned());
        self
    }

    /// Sets the replies and faults.
    pub fn script(mut self, script: Script) -> Self {
        self.script = script;
        self
    }

    /// Sets where scripted DSNs and ARF reports are written.
    pub fn bounce_maildir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bounce_maildir = Some(dir.into());
        self
    }

    /// The bounce Maildir actually used.
    pub fn bounce_dir(&self) -> PathBuf {
        self.bounce_maildir.clone().unwrap_or_else(|| {
            self.maildir
                .parent()
                .map(|p| p.join("bounces"))
                .unwrap_or_else(|| PathBuf::from("bounces"))
        })
    }
}

/// Everything a connection task needs.
struct Context {
    policy: Arc<Policy>,
    max_connections: usize,
    acceptor: Option<TlsAcceptor>,
    maildir: PathBuf,
    bounce_maildir: PathBuf,
}

/// A running sandbox. Dropping it stops the listeners; `shutdown` also waits for them.
pub struct Sandbox {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    ca_pem: String,
    maildir: PathBuf,
    bounce_maildir: PathBuf,
    policy: Arc<Policy>,
    /// Flipped to true to stop accept loops; each loop aborts its connection tasks on exit.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the listeners and returns once they accept connections.
pub async fn start(config: SandboxConfig) -> Result<Sandbox, Error> {
    for addr in std::iter::once(config.listen).chain(config.tls_listen) {
        if !config.allow_remote && !addr.ip().is_loopback() {
            return Err(Error::NotLoopback { addr });
        }
    }
    if !config.tls && (config.implicit_tls || config.tls_listen.is_some()) {
        return Err(Error::ImplicitTlsWithoutTls);
    }
    let bounce_maildir = config.bounce_dir();
    for dir in [&config.maildir, &bounce_maildir] {
        maildir::create(dir).map_err(|source| Error::Maildir {
            path: dir.clone(),
            source,
        })?;
    }
    let identity = tls::generate()?;
    let acceptor = config
        .tls
        .then(|| TlsAcceptor::from(identity.server_config.clone()));
    let mut policy = Policy::new(
        &config.hostname,
        config.tls,
        config.auth.clone(),
        config.script.clone(),
    );
    policy.max_message_size = config.max_message_size;
    policy.xoauth2_token = config.xoauth2_token.clone();
    let policy = Arc::new(policy);
    let context = Arc::new(Context {
        policy: policy.clone(),
        max_connections: config.max_connections.max(1),
        acceptor,
        maildir: config.maildir.clone(),
        bounce_maildir: bounce_maildir.clone(),
    });
    let (stop, stopped) = watch::channel(false);

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    };
    let main = bind(config.listen).await?;
    let addr = main.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let implicit_main = config.implicit_tls;
    let mut tasks = vec![tokio::spawn(accept_loop(
        main,
        implicit_main,
        context.clone(),
        stopped.clone(),
    ))];
    let mut tls_addr = None;
    if let Some(listen) = config.tls_listen {
        let listener = bind(listen).await?;
        tls_addr = Some(listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?);
        tasks.push(tokio::spawn(accept_loop(listener, true, context, stopped)));
    }
    Ok(Sandbox {
        addr,
        tls_addr,
        ca_pem: identity.ca_pem,
        maildir: config.maildir,
        bounce_maildir,
        policy,
        stop,
        tasks,
    })
}

impl Sandbox {
    /// The main listener's address (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The extra implicit-TLS listener's address, if one was configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// PEM of the generated CA; the server certificate has SANs `localhost` and `127.0.0.1`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes `ca_pem` to `path`, for clients configured with a CA file.
    pub fn write_ca(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    /// Where accepted messages are stored.
    pub fn maildir(&self) -> &Path {
        &self.maildir
    }

    /// Where scripted DSNs and ARF reports are stored.
    pub fn bounce_maildir(&self) -> &Path {
        &self.bounce_maildir
    }

    /// Every command line received, in order, across sessions (message text excluded). AUTH
    /// payloads and AUTH continuation lines read `<redacted>`; `<line too long>` and
    /// `<plaintext after STARTTLS discarded>` mark input that was not executed. The most recent
    /// 100 000 lines are kept.
    pub fn transcript(&self) -> Vec<String> {
        self.policy.transcript()
    }

    /// What the sandbox saw so far: sessions, ended and stored messages, pipelined MAILs.
    pub fn seen(&self) -> Seen {
        self.policy.observer.seen()
    }

    /// Returns once `done` holds on what the sandbox saw. Event-driven: every session, message
    /// end and stored message wakes it, so tests wait without sleeping.
    pub async fn wait_until(&self, done: impl Fn(&Seen) -> bool) {
        self.policy.observer.wait_until(done).await;
    }

    /// Ends a `[session] freeze_after_messages` freeze for messages that end from now on;
    /// messages already frozen stay unanswered.
    pub fn thaw(&self) {
        self.policy.observer.thaw();
    }

    /// Stops accepting, closes every connection and waits for the tasks to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    implicit_tls: bool,
    context: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) if connections.len() >= context.max_connections => {
                    tracing::warn!(%peer, "sandbox: too many connections, refusing one");
                    // Detached with a deadline, so a client that does not read cannot stall
                    // the accept loop.
                    if !implicit_tls {
                        tokio::spawn(async move {
                            let refusal = stream.write_all(b"421 4.7.0 too many connections, try later\r\n");
                            let _ = tokio::time::timeout(Duration::from_secs(1), refusal).await;
                        });
                    }
                }
                // `[session] die_after_messages`: a dead relay takes no connection.
                Ok((stream, _))
                    if context
                        .policy
                        .observer
                        .has_died(context.policy.script.session.die_after_messages) =>
                {
                    drop(stream);
                }
                Ok((stream, peer)) => {
                    connections.spawn(handle(stream, peer, implicit_tls, context.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%err, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    connections.shutdown().await;
}

/// A server that waits forever for an idle client is a resource leak; RFC 5321 §4.5.3.2.7 asks
/// for at least 5 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

enum Outcome<S> {
    Done,
    StartTls(S),
}

async fn handle(stream: TcpStream, peer: SocketAddr, implicit_tls: bool, context: Arc<Context>) {
    tracing::debug!(%peer, implicit_tls, "sandbox: connection");
    let mut session = Session::new(context.policy.clone(), implicit_tls);
    if implicit_tls {
        let Some(tls) = handshake(stream, &context).await else {
            return;
        };
        let greeting = session.greeting();
        serve(tls, &mut session, Some(greeting), &context, peer).await;
        return;
    }
    let greeting = session.greeting();
    if let Outcome::StartTls(stream) =
        serve(stream, &mut session, Some(greeting), &context, peer).await
    {
        let Some(tls) = handshake(stream, &context).await else {
            return;
        };
        session.tls_started();
        serve(tls, &mut session, None, &context, peer).await;
    }
}

async fn handshake(
    mut stream: TcpStream,
    context: &Context,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let acceptor = context.acceptor.as_ref()?;
    if context.policy.script.session.abort_tls_handshake {
        // Read (part of) the ClientHello so the client is mid-handshake, then hang up.
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        return None;
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::debug!(%err, "sandbox: TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

enum LineRead {
    Complete,
    Overlong,
    Eof,
}

/// Reads one line (through LF) into `line`; a line longer than `limit` is consumed and discarded.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<LineRead> {
    line.clear();
    let mut overlong = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !overlong {
            if line.len() + take > limit {
                overlong = true;
                line.clear();
            } else {
                line.extend_from_slice(&buf[..take]);
            }
        }
        reader.consume(take);
        if done {
            return Ok(if overlong {
                LineRead::Overlong
            } else {
                LineRead::Complete
            });
        }
    }
}

/// Runs the dialogue on one stream until it ends or STARTTLS hands the raw stream back.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: &mut Session,
    greeting: Option<Response>,
    context: &Context,
    peer: SocketAddr,
) -> Outcome<S> {
    let mut reader = BufReader::new(stream);
    let mut out: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    let mut next = greeting;
    loop {
        let mut response = match next.take() {
            Some(response) => response,
            None => {
                let limit = session.line_limit();
                match tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader, &mut line, limit))
                    .await
                {
                    Ok(Ok(LineRead::Complete)) => {
                        let is_mail =
                            |l: &[u8]| l.get(..5).is_some_and(|v| v.eq_ignore_ascii_case(b"MAIL "));
                        if !session.in_data() && is_mail(&line) && !reader.buffer().is_empty() {
                            context.policy.observer.pipelined_mail();
                        }
                        if session.in_data()
                            && matches!(line.as_slice(), b".\r\n" | b".\n")
                            && is_mail(reader.buffer())
                        {
                            context.policy.observer.mail_behind_message();
                        }
                        session.feed(&line)
                    }
                    Ok(Ok(LineRead::Overlong)) => session.overlong(),
                    Ok(Ok(LineRead::Eof)) | Ok(Err(_)) => return Outcome::Done,
                    Err(_) => {
                        let _ = reader
                            .get_mut()
                            .write_all(b"421 4.4.2 idle too long, closing the connection\r\n")
                            .await;
                        return Outcome::Done;
                    }
                }
            }
        };
        if !response.delay.is_zero() {
            // The client must see every earlier reply before the slow one starts.
            if flush(&mut reader, &mut out).await.is_err() {
                return Outcome::Done;
            }
            tokio::time::sleep(response.delay).await;
        }
        if response.after == session::After::Drop {
            return Outcome::Done;
        }
        if let Some(accepted) = response.accepted.take() {
            let (id, rcpts) = (accepted.id.clone(), accepted.rcpts.clone());
            let (envid, ret, rcpt_dsn) = (
                accepted.envid.clone(),
                accepted.ret.clone(),
                accepted.rcpt_dsn.clone(),
            );
            match deliver(accepted, context, peer).await {
                Ok(file) => context.policy.observer.stored(seen::Stored {
                    id,
                    rcpts,
                    file,
                    envid,
                    ret,
                    rcpt_dsn,
                }),
                Err(err) => {
                    tracing::warn!(%err, "sandbox: could not write the Maildir");
                    context.policy.observer.not_stored();
                    response.reply =
                        "451 4.3.0 could not write the message to the Maildir\r\n".to_owned();
                }
            }
        }
        out.extend_from_slice(response.reply.as_bytes());
        match response.after {
            session::After::Continue => {
                // PIPELINING: answer a batch of commands with one write.
                if reader.buffer().is_empty() && flush(&mut reader, &mut out).await.is_err() {
                    return Outcome::Done;
                }
            }
            session::After::StartTls => {
                // Commands pipelined behind STARTTLS in plaintext must not be executed inside
                // TLS (the CVE-2011-0411 injection): dropping the read buffer discards them.
                // Recorded before the 220 goes out, so a client that saw it sees the record.
                if !reader.buffer().is_empty() {
                    context
                        .policy
                        .record("<plaintext after STARTTLS discarded>");
                }
                if flush(&mut reader, &mut out).await.is_err() {
                    return Outcome::Done;
                }
                return Outcome::StartTls(reader.into_inner());
            }
            session::After::Flood(flood) => {
                let _ = flush(&mut reader, &mut out).await;
                let _ = write_flood(reader.get_mut(), flood).await;
                let _ = reader.get_mut().shutdown().await;
                return Outcome::Done;
            }
            session::After::Hang => {
                let _ = flush(&mut reader, &mut out).await;
                // Silent until the client gives up: its command timeout is what is under test.
                loop {
                    let read = read_line(&mut reader, &mut line, session::MAX_AUTH_LINE);
                    match tokio::time::timeout(IDLE_TIMEOUT, read).await {
                        Ok(Ok(LineRead::Complete | LineRead::Overlong)) => {}
                        _ => return Outcome::Done,
                    }
                }
            }
            session::After::Close | session::After::Drop => {
                let _ = flush(&mut reader, &mut out).await;
                let _ = reader.get_mut().shutdown().await;
                return Outcome::Done;
            }
        }
    }
}

/// Most bytes one scripted flood writes: far beyond any bound a client should keep, and still
/// finite, so a client that never hangs up cannot keep the sandbox writing forever.
const FLOOD_LIMIT: u64 = 8 << 30;

/// Writes the endless reply of `[session] flood` until the client hangs up (the write fails) or
/// [`FLOOD_LIMIT`] bytes went out.
async fn write_flood<S: AsyncWrite + Unpin>(
    stream: &mut S,
    flood: script::Flood,
) -> io::Result<()> {
    let chunk: Vec<u8> = match flood {
        script::Flood::Line => vec![b'x'; 64 * 1024],
        script::Flood::Lines => b"250-flood\r\n".repeat(64 * 1024 / 11),
    };
    if flood == script::Flood::Line {
        stream.write_all(b"250-").await?;
    }
    let mut written = 0u64;
    while written < FLOOD_LIMIT {
        stream.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    stream.flush().await
}

async fn flush<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut BufReader<S>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let stream = reader.get_mut();
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}

/// Writes the message, then any scripted reports, before the 250 is sent: a test that saw the
/// 250 can read both without waiting. Returns the message's Maildir file.
async fn deliver(
    accepted: session::Accepted,
    context: &Context,
    peer: SocketAddr,
) -> io::Result<PathBuf> {
    let maildir = context.maildir.clone();
    let bounce_maildir = context.bounce_maildir.clone();
    let hostname = context.policy.hostname.clone();
    tokio::task::spawn_blocking(move || {
        let path = maildir::deliver(&maildir, &accepted.maildir_bytes())?;
        tracing::info!(
            id = %accepted.id,
            from = %accepted.mail_from,
            to = %accepted.rcpts.join(", "),
            bytes = accepted.data.len(),
            file = %path.display(),
            "sandbox: message accepted and stored"
        );
        let date = chrono::Utc::now().to_rfc2822();
        let ip = peer.ip().to_string();
        for (n, feedback) in accepted.feedback.iter().enumerate() {
            let unique = format!("{}.{n}", accepted.id);
            let original = report::Original {
                mail_from: &accepted.mail_from,
                rcpt_to: &feedback.rcpt,
                message: &accepted.data,
                reporting_host: &hostname,
                arrival_date: &date,
                unique: &unique,
                source_ip: &ip,
            };
            let envelope = report::Envelope {
                envid: feedback.envid.as_deref(),
                orcpt: feedback.orcpt.as_deref(),
            };
            let bytes = match &feedback.kind {
                session::FeedbackReport::Dsn { status, diagnostic } => {
                    report::failed(&original, status, diagnostic, envelope)
                }
                session::FeedbackReport::Arf { feedback_type } => {
                    report::arf(&original, feedback_type)
                }
                session::FeedbackReport::Delivered => report::delivered(&original, envelope),
            };
            let report = maildir::deliver(&bounce_maildir, &bytes)?;
            tracing::info!(rcpt = %feedback.rcpt, file = %report.display(), "sandbox: scripted report written");
        }
        Ok(path)
    })
    .await
    .map_err(io::Error::other)?
}
