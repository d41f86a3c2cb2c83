//! The relay of the delivery tests: the sandbox (the server `mailroom sandbox` runs, scripted
//! with the same TOML users write) in a temporary folder with its CA on disk and room for a
//! ledger, and what tests read back from it: what it stored per recipient, the bodies, and
//! whether every 250 the ledger recorded names the queue id the sandbox gave that recipient.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailroom::sandbox::{self, Sandbox, SandboxConfig, Script, Seen};
use mailroom::transport::{Secret, Security, Settings};

use super::sandbox::{install_provider, maildir_messages};

/// The AUTH user of [`Relay::tls`].
pub const USER: &str = "mailer";
/// The AUTH password of [`Relay::tls`]; tests look for it where it must never be.
pub const PASSWORD: &str = "s3cret-pass";

/// A relay whose replies depend on the local part of the recipient or sender (`unknown*`,
/// `defer*`, `silentdata*`, `bad*` senders, ...): tests/fixtures/sandbox/relay.toml.
pub const BY_LOCAL_PART: &str = include_str!("../fixtures/sandbox/relay.toml");

/// [`BY_LOCAL_PART`] without PIPELINING: the client's one-command-at-a-time path.
pub const BY_LOCAL_PART_NO_PIPELINING: &str = concat!(
    "[session]\npipelining = false\n",
    include_str!("../fixtures/sandbox/relay.toml")
);

/// A running sandbox, its folder (Maildir, CA, ledger) and its CA file.
pub struct Relay {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub ca: PathBuf,
}

impl Relay {
    /// A sandbox with `script` on 127.0.0.1:0, configured further by `config`.
    pub async fn start(script: &str, config: impl FnOnce(SandboxConfig) -> SandboxConfig) -> Relay {
        install_provider();
        let dir = tempfile::tempdir().unwrap();
        let base = SandboxConfig::new(dir.path().join("maildir"))
            .bounce_maildir(dir.path().join("bounces"))
            .script(Script::parse(script).unwrap());
        let sandbox = sandbox::start(config(base)).await.unwrap();
        let ca = dir.path().join("ca.pem");
        sandbox.write_ca(&ca).unwrap();
        Relay { dir, sandbox, ca }
    }

    /// Plaintext only (no STARTTLS offered, no AUTH), with `script`.
    pub async fn plain(script: &str) -> Relay {
        Relay::start(script, |c| c.tls(false)).await
    }

    /// STARTTLS and AUTH as [`USER`]/[`PASSWORD`], with `script`, configured further by `config`.
    pub async fn tls(script: &str, config: impl FnOnce(SandboxConfig) -> SandboxConfig) -> Relay {
        Relay::start(script, |c| config(c.auth(USER, PASSWORD))).await
    }

    /// Where the test's ledger goes.
    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("mailroom.db")
    }

    pub fn port(&self) -> u16 {
        self.sandbox.addr().port()
    }

    /// Plaintext to 127.0.0.1 at this relay's port, no credentials.
    pub fn plain_settings(&self) -> Settings {
        super::settings("127.0.0.1", self.port(), Security::None)
    }

    /// `security` to `localhost` (a name in the sandbox's certificate) trusting its CA, as
    /// [`USER`]/[`PASSWORD`].
    pub fn tls_settings(&self, security: Security) -> Settings {
        Settings {
            username: Some(USER.into()),
            password: Some(Secret::new(PASSWORD.into())),
            ca_file: Some(self.ca.clone()),
            ..super::settings("localhost", self.port(), security)
        }
    }

    /// The `[smtp]` table of a campaign.toml for this relay in plaintext, plus `extra` lines.
    pub fn smtp_table(&self, extra: &str) -> String {
        format!(
            "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n{extra}",
            self.port()
        )
    }

    pub fn seen(&self) -> Seen {
        self.sandbox.seen()
    }

    /// [`Sandbox::wait_until`], failing the test after a minute instead of hanging it when the
    /// awaited event never comes.
    pub async fn wait_until(&self, done: impl Fn(&Seen) -> bool) {
        let wait = self.sandbox.wait_until(done);
        if tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("the relay never saw it; it saw {:?}", self.seen());
        }
    }

    /// Stored messages per recipient (1 everywhere means "each exactly once").
    pub fn accepted_per_address(&self) -> BTreeMap<String, usize> {
        self.seen().accepted_per_address()
    }

    /// Whether any received command line starts with `verb` (case-insensitive).
    pub fn transcript_has(&self, verb: &str) -> bool {
        self.sandbox
            .transcript()
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with(verb))
    }

    /// How many received command lines start with `verb` (case-insensitive) and contain
    /// `containing`.
    pub fn commands(&self, verb: &str, containing: &str) -> usize {
        self.sandbox
            .transcript()
            .iter()
            .filter(|l| l.to_ascii_uppercase().starts_with(verb) && l.contains(containing))
            .count()
    }

    /// How many RCPT commands named `address`.
    pub fn rcpts_for(&self, address: &str) -> usize {
        self.commands("RCPT", &format!("<{address}>"))
    }

    /// Recipient → number of files in the Maildir, from their Delivered-To lines.
    pub fn maildir_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for message in maildir_messages(self.sandbox.maildir()) {
            let text = String::from_utf8_lossy(&message);
            for line in text.lines().take_while(|l| !l.is_empty()) {
                if let Some(rcpt) = line.strip_prefix("Delivered-To: ") {
                    *counts.entry(rcpt.trim().to_owned()).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// The Maildir files delivered to `email`.
    pub fn copies_for(&self, email: &str) -> usize {
        self.maildir_counts().get(email).copied().unwrap_or(0)
    }

    /// Every file in the Maildir.
    pub fn stored(&self) -> usize {
        maildir_messages(self.sandbox.maildir()).len()
    }

    /// The last message stored for `rcpt`, as the Maildir holds it.
    pub fn body_of(&self, rcpt: &str) -> String {
        let seen = self.seen();
        let stored = seen
            .stored
            .iter()
            .rev()
            .find(|s| s.rcpts.iter().any(|r| r == rcpt))
            .unwrap_or_else(|| panic!("nothing stored for {rcpt}"));
        std::fs::read_to_string(&stored.file).unwrap()
    }

    /// Every `accepted` row's recorded reply names the queue id the sandbox gave *that* address:
    /// a connection that went out of step (replies shifted by one after a cancelled command or
    /// a stray reply) would record another message's reply.
    pub fn assert_replies_in_sync(&self, ledger: &Path) {
        let seen = self.seen();
        let conn = rusqlite::Connection::open(ledger).unwrap();
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
            let id = seen
                .queue_id_of(&email)
                .unwrap_or_else(|| panic!("{email} not at the relay"));
            assert!(
                reply.ends_with(&format!("queued as {id}")),
                "{email}: recorded {reply:?}, the relay said {id}"
            );
        }
    }
}
