//! A ledger builder for report and dashboard tests: writes a real SQLite ledger through
//! `store::open` (so migrations and counter triggers run) the way the sender and bounce import
//! do (insert pending, then update), and keeps its own tally of what it wrote so tests can
//! compute expected numbers without the SQL under test.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// What the builder wrote for one recipient.
#[derive(Debug, Clone)]
pub struct Written {
    pub id: i64,
    pub campaign: String,
    pub email: String,
    pub domain: String,
    pub state: String,
    pub relay_accepted: bool,
    pub attempts: Vec<(i64, Option<i64>, Option<String>, String)>, // at, code, enhanced, outcome
    pub events: Vec<(String, Option<String>)>,                     // kind, status
}

pub struct LedgerBuilder {
    pub path: PathBuf,
    conn: Connection,
    pub recipients: Vec<Written>,
    next_line: i64,
}

impl LedgerBuilder {
    pub fn new(path: &Path) -> LedgerBuilder {
        LedgerBuilder {
            path: path.to_owned(),
            conn: mailroom_test_conn(path),
            recipients: Vec::new(),
            next_line: 2,
        }
    }

    pub fn campaign(&mut self, name: &str, created_at: i64) -> i64 {
        self.conn
            .execute(
                "INSERT INTO campaigns (name, created_at) VALUES (?1, ?2)",
                params![name, created_at],
            )
            .unwrap();
        self.conn.last_insert_rowid()
    }

    pub fn run(&mut self, campaign: i64, started_at: i64, finished_at: Option<i64>) {
        self.conn
            .execute(
                "INSERT INTO runs (campaign_id, started_at, finished_at, host, port, security, \
                 outcome) VALUES (?1, ?2, ?3, 'relay.test', 587, 'starttls', NULL)",
                params![campaign, started_at, finished_at],
            )
            .unwrap();
    }

    /// Imports a pending recipient, as `send` does before its first connection.
    pub fn recipient(&mut self, campaign: i64, email: &str) -> usize {
        let domain = email.rsplit('@').next().unwrap().to_owned();
        let line = self.next_line;
        self.next_line += 1;
        self.conn
            .execute(
                "INSERT INTO recipients (campaign_id, email, line, token, fields) \
                 VALUES (?1, ?2, ?3, ?4, '{}')",
                params![campaign, email, line, format!("tok{campaign}x{line}")],
            )
            .unwrap();
        let id = self.conn.last_insert_rowid();
        let name: String = self
            .conn
            .query_row(
                "SELECT name FROM campaigns WHERE id = ?1",
                [campaign],
                |r| r.get(0),
            )
            .unwrap();
        self.recipients.push(Written {
            id,
            campaign: name,
            email: email.to_owned(),
            domain,
            state: "pending".into(),
            relay_accepted: false,
            attempts: Vec::new(),
            events: Vec::new(),
        });
        self.recipients.len() - 1
    }

    /// Records one SMTP attempt and moves the recipient to `outcome` (when it is a state).
    #[allow(clippy::too_many_arguments)]
    pub fn attempt(
        &mut self,
        index: usize,
        at: i64,
        step: &str,
        code: Option<i64>,
        enhanced: Option<&str>,
        reply: &str,
        outcome: &str,
    ) {
        self.attempt_diagnosed(index, at, step, code, enhanced, reply, outcome, None);
    }

    /// [`Self::attempt`] whose reply the sender diagnosed (`mailroom::diagnose` key).
    #[allow(clippy::too_many_arguments)]
    pub fn attempt_diagnosed(
        &mut self,
        index: usize,
        at: i64,
        step: &str,
        code: Option<i64>,
        enhanced: Option<&str>,
        reply: &str,
        outcome: &str,
        diagnosis: Option<&str>,
    ) {
        let id = self.recipients[index].id;
        self.conn
            .execute(
                "INSERT INTO attempts (recipient_id, run_id, at, port, step, code, enhanced, \
                 reply, outcome, diagnosis) VALUES (?1, NULL, ?2, 587, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![id, at, step, code, enhanced, reply, outcome, diagnosis],
            )
            .unwrap();
        let accepted = outcome == "accepted";
        let state = if matches!(outcome, "throttled" | "aborted") {
            "deferred"
        } else {
            outcome
        };
        self.conn
            .execute(
                "UPDATE recipients SET state = ?2, attempts = attempts + 1, \
                 first_attempt_at = COALESCE(first_attempt_at, ?3), last_attempt_at = ?3, \
                 last_code = ?4, last_enhanced = ?5, last_reply = ?6, \
                 relay_accepted = max(relay_accepted, ?7) WHERE id = ?1",
                params![id, state, at, code, enhanced, reply, accepted],
            )
            .unwrap();
        let w = &mut self.recipients[index];
        w.state = state.to_owned();
        w.relay_accepted |= accepted;
        w.attempts
            .push((at, code, enhanced.map(str::to_owned), outcome.to_owned()));
    }

    /// Records later feedback (DSN/ARF) and, for hard/soft/complaint, moves the state.
    pub fn event(
        &mut self,
        index: usize,
        at: i64,
        kind: &str,
        status: Option<&str>,
        diagnostic: &str,
    ) {
        self.event_diagnosed(index, at, kind, status, diagnostic, None);
    }

    /// [`Self::event`] with the import's diagnosis; a `delivered` event (a success DSN) moves
    /// the recipient to `delivered`.
    pub fn event_diagnosed(
        &mut self,
        index: usize,
        at: i64,
        kind: &str,
        status: Option<&str>,
        diagnostic: &str,
        diagnosis: Option<&str>,
    ) {
        let id = self.recipients[index].id;
        let n = self.recipients[index].events.len();
        let action = if kind == "delivered" {
            "delivered"
        } else {
            "failed"
        };
        self.conn
            .execute(
                "INSERT INTO events (recipient_id, at, kind, action, status, reason, diagnostic, \
                 remote_mta, source, fingerprint, diagnosis) \
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, 'mx.test', 'maildir', ?7, ?8)",
                params![
                    id,
                    at,
                    kind,
                    action,
                    status,
                    diagnostic,
                    format!("fp{id}-{n}"),
                    diagnosis
                ],
            )
            .unwrap();
        let state = match kind {
            "hard" => Some("bounced_hard"),
            "soft" => Some("bounced_soft"),
            "complaint" => Some("complained"),
            "delivered" => Some("delivered"),
            _ => None,
        };
        if let Some(state) = state {
            self.conn
                .execute(
                    "UPDATE recipients SET state = ?2 WHERE id = ?1",
                    params![id, state],
                )
                .unwrap();
            self.recipients[index].state = state.to_owned();
        }
        self.recipients[index]
            .events
            .push((kind.to_owned(), status.map(str::to_owned)));
    }

    /// Caches a domain's provider as a resolved MX lookup would.
    pub fn provider(&mut self, domain: &str, mx: &str, provider: &str) {
        self.conn
            .execute(
                "INSERT INTO domain_providers (domain, mx, provider, checked_at, expires_at) \
                 VALUES (?1, ?2, ?3, 0, 9000000000000)",
                params![domain, mx, provider],
            )
            .unwrap();
    }

    /// Sets a state directly (suppressed, sending, unknown after a crash).
    pub fn set_state(&mut self, index: usize, state: &str) {
        let id = self.recipients[index].id;
        self.conn
            .execute(
                "UPDATE recipients SET state = ?2 WHERE id = ?1",
                params![id, state],
            )
            .unwrap();
        self.recipients[index].state = state.to_owned();
    }

    /// The written recipients of one campaign.
    pub fn of(&self, campaign: &str) -> Vec<&Written> {
        self.recipients
            .iter()
            .filter(|w| w.campaign == campaign)
            .collect()
    }
}

/// Fills a ledger with a known mixed campaign "spring" (plus an "older" one) and returns it.
/// Times start at 2026-03-01 09:00:00 UTC.
pub fn mixed_ledger(path: &Path) -> LedgerBuilder {
    const T0: i64 = 1_772_355_600_000;
    let mut b = LedgerBuilder::new(path);
    let older = b.campaign("older", T0 - 86_400_000);
    for i in 0..3 {
        let r = b.recipient(older, &format!("old{i}@example.org"));
        b.attempt(
            r,
            T0 - 86_000_000,
            "message",
            Some(250),
            Some("2.0.0"),
            "250 2.0.0 Ok: queued as OLD",
            "accepted",
        );
    }
    let spring = b.campaign("spring", T0);
    b.run(spring, T0, Some(T0 + 600_000));
    let domains = ["gmail.test", "yahoo.test", "corp.example", "tiny.example"];
    for i in 0..40 {
        let domain = domains[i % domains.len()];
        let r = b.recipient(spring, &format!("user{i:02}@{domain}"));
        let at = T0 + (i as i64) * 15_000; // spread over 10 minutes
        match i {
            // Accepted, some bouncing or complaining later.
            0..=21 => {
                b.attempt(r, at, "message", Some(250), Some("2.0.0"), &format!("250 2.0.0 Ok: queued as Q{i}"), "accepted");
                if i == 3 || i == 7 {
                    b.event(r, at + 3_600_000, "hard", Some("5.1.1"), "smtp; 550 5.1.1 <user> mailbox unknown");
                }
                if i == 5 {
                    b.event(r, at + 7_200_000, "complaint", None, "abuse report from feedback loop");
                }
                if i == 9 {
                    b.event(r, at + 60_000, "auto_reply", None, "I am on holiday");
                }
            }
            // Rejected at RCPT.
            22..=25 => b.attempt(r, at, "rcpt", Some(550), Some("5.1.1"), "550 5.1.1 <user>: Recipient address rejected: User unknown in virtual mailbox table", "bounced_hard"),
            26 => b.attempt(r, at, "data", Some(552), Some("5.2.2"), "552-5.2.2 The email account that you tried to reach is over quota.\n552 5.2.2 Please direct the recipient to the help page", "bounced_soft"),
            // Deferred, one of them twice.
            27..=29 => {
                b.attempt(r, at, "rcpt", Some(451), Some("4.7.1"), "451 4.7.1 Greylisted, please try again later", "deferred");
                if i == 29 {
                    b.attempt(r, at + 30_000, "rcpt", Some(451), Some("4.7.1"), "451 4.7.1 Greylisted, please try again later", "deferred");
                }
            }
            30 => {
                b.attempt(r, at, "message", None, None, "connection lost after end of data", "unknown");
            }
            31 => b.attempt(r, at, "connect", None, None, "connection refused", "failed"),
            32 => b.set_state(r, "suppressed"),
            33 => b.set_state(r, "sending"),
            _ => {} // pending
        }
    }
    b
}

/// A ledger of six monthly campaigns to real consumer domains (Gmail, Outlook.com, Yahoo) and a
/// company domain whose MX is Microsoft 365, for the provider, diagnosis and trend views. The
/// latest, "june", has success DSNs, complaints and diagnosed replies; at Outlook.com the
/// hard-bounce rate rises campaign after campaign (1% in January to 5% in May). Times start at
/// 2026-01-05 09:00:00 UTC.
pub fn provider_ledger(path: &Path) -> LedgerBuilder {
    const T0: i64 = 1_767_603_600_000;
    const MONTH: i64 = 30 * 86_400_000;
    let mut b = LedgerBuilder::new(path);
    b.provider(
        "corp.example",
        "corp-example.mail.protection.outlook.com",
        "microsoft365",
    );
    let accepted = |b: &mut LedgerBuilder, r: usize, at: i64| {
        b.attempt(
            r,
            at,
            "message",
            Some(250),
            Some("2.0.0"),
            "250 2.0.0 Ok: queued",
            "accepted",
        );
    };
    let unknown_user = "550 5.1.1 The email account that you tried to reach does not exist";
    for (month, name) in ["january", "february", "march", "april", "may"]
        .iter()
        .enumerate()
    {
        let start = T0 + month as i64 * MONTH;
        let c = b.campaign(name, start);
        b.run(c, start, Some(start + 600_000));
        for i in 0..100 {
            let r = b.recipient(c, &format!("reader{i:03}@outlook.com"));
            if i < month + 1 {
                b.attempt_diagnosed(
                    r,
                    start + i as i64,
                    "rcpt",
                    Some(550),
                    Some("5.1.1"),
                    unknown_user,
                    "bounced_hard",
                    Some("user-unknown"),
                );
            } else {
                accepted(&mut b, r, start + i as i64);
            }
        }
        for i in 0..50 {
            let r = b.recipient(c, &format!("reader{i:03}@gmail.com"));
            accepted(&mut b, r, start + 200 + i as i64);
        }
    }
    let start = T0 + 5 * MONTH;
    let june = b.campaign("june", start);
    b.run(june, start, Some(start + 600_000));
    for i in 0..40 {
        let r = b.recipient(june, &format!("fan{i:02}@gmail.com"));
        let at = start + i as i64 * 1000;
        match i {
            0..=29 => {
                accepted(&mut b, r, at);
                b.event_diagnosed(r, at + 60_000, "delivered", Some("2.0.0"), "250 2.0.0 delivered to mailbox", None);
            }
            30 => {
                accepted(&mut b, r, at);
                b.event_diagnosed(r, at + 3_600_000, "complaint", None, "abuse report", Some("complaint"));
            }
            31..=32 => b.attempt_diagnosed(
                r,
                at,
                "rcpt",
                Some(421),
                Some("4.7.28"),
                "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating from your IP address. gsmtp",
                "deferred",
                Some("gmail-4.7.28"),
            ),
            _ => accepted(&mut b, r, at),
        }
    }
    for i in 0..20 {
        let r = b.recipient(june, &format!("pal{i:02}@outlook.com"));
        let at = start + 50_000 + i as i64 * 1000;
        match i {
            0..=3 => b.attempt_diagnosed(
                r,
                at,
                "message",
                Some(550),
                Some("5.7.515"),
                "550 5.7.515 Access denied, sending domain news.example does not meet the required authentication level.",
                "bounced_soft",
                Some("microsoft-5.7.515"),
            ),
            4..=5 => b.attempt_diagnosed(r, at, "rcpt", Some(550), Some("5.1.1"), unknown_user, "bounced_hard", Some("user-unknown")),
            _ => accepted(&mut b, r, at),
        }
    }
    for i in 0..15 {
        let r = b.recipient(june, &format!("friend{i:02}@yahoo.com"));
        let at = start + 80_000 + i as i64 * 1000;
        if i < 3 {
            b.attempt_diagnosed(
                r,
                at,
                "rcpt",
                Some(421),
                Some("4.7.0"),
                "421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected volume or user complaints",
                "deferred",
                Some("yahoo-tss04"),
            );
        } else {
            accepted(&mut b, r, at);
        }
    }
    for i in 0..10 {
        let r = b.recipient(june, &format!("staff{i}@corp.example"));
        accepted(&mut b, r, start + 100_000 + i as i64 * 1000);
    }
    for i in 0..5 {
        b.recipient(june, &format!("someone{i}@tiny.example"));
    }
    b
}

/// The ledger at `path`, created and migrated by mailroom, as a raw connection for seeding and
/// inspecting it in tests (mailroom itself never hands out its connection).
#[allow(dead_code)]
fn mailroom_test_conn(path: &std::path::Path) -> rusqlite::Connection {
    drop(mailroom::store::open(path).unwrap());
    rusqlite::Connection::open(path).unwrap()
}
