//! What every session of one sandbox shares: its settings (host name, TLS, credentials, limits,
//! the script) and its live state (greylisting counts, the transcript, queue ids, what it has
//! seen). Sessions read it; only the accept loop creates it. No I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::script::Script;
use super::seen::Observer;
use super::session::TRANSCRIPT_LIMIT;

/// Settings and shared state behind every session of one sandbox.
#[derive(Debug)]
pub struct Policy {
    /// Our name in the greeting, EHLO reply and reports.
    pub hostname: String,
    /// The server can do TLS (STARTTLS is offered unless the script says otherwise).
    pub tls_available: bool,
    /// User and password; AUTH is offered (after TLS) and required before MAIL when set.
    pub auth: Option<(String, String)>,
    /// The OAuth2 access token AUTH XOAUTH2 accepts for the `auth` user (offered next to PLAIN
    /// and LOGIN when set).
    pub xoauth2_token: Option<String>,
    /// Advertised with SIZE; larger messages get 552 5.3.4.
    pub max_message_size: usize,
    /// RCPTs per message before 452 4.5.3.
    pub max_recipients: usize,
    /// Replies and faults.
    pub script: Script,
    /// RCPT attempts per greylisted recipient, across sessions (`std` mutex: never held across
    /// an await).
    greylist: Mutex<HashMap<String, u32>>,
    /// The most recent `TRANSCRIPT_LIMIT` command lines: complete for tests, bounded for a
    /// long-running `mailroom sandbox`.
    transcript: Mutex<VecDeque<String>>,
    sequence: AtomicU64,
    /// What every session saw (counters, stored messages) and the freeze switch.
    pub observer: Observer,
}

impl Policy {
    /// Settings for a sandbox; 10 MiB messages, 100 recipients per message.
    pub fn new(
        hostname: &str,
        tls_available: bool,
        auth: Option<(String, String)>,
        script: Script,
    ) -> Policy {
        Policy {
            hostname: hostname.to_owned(),
            tls_available,
            auth,
            xoauth2_token: None,
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 100,
            script,
            greylist: Mutex::new(HashMap::new()),
            transcript: Mutex::new(VecDeque::new()),
            sequence: AtomicU64::new(1),
            observer: Observer::default(),
        }
    }

    /// Every command line received so far, across sessions, AUTH secrets redacted.
    pub fn transcript(&self) -> Vec<String> {
        let transcript = match self.transcript.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        transcript.iter().cloned().collect()
    }

    /// Adds a line to the transcript (also used by the shell for connection events).
    pub fn record(&self, line: impl Into<String>) {
        let mut transcript = match self.transcript.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if transcript.len() >= TRANSCRIPT_LIMIT {
            transcript.pop_front();
        }
        transcript.push_back(line.into());
    }

    pub(super) fn next_id(&self) -> String {
        format!("SBX{:06}", self.sequence.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts one more attempt for `recipient`; returns the count including this one.
    pub(super) fn greylist_attempt(&self, recipient: &str) -> u32 {
        let mut map = match self.greylist.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = map.entry(recipient.to_ascii_lowercase()).or_insert(0);
        *count += 1;
        *count
    }
}
