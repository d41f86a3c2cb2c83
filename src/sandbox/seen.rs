//! What a running sandbox has seen, so a test can assert it and wait for it: counters of
//! sessions and messages, the messages it stored, and the freeze of
//! `[session] freeze_after_messages` with its thaw switch.
//!
//! Owns in-memory bookkeeping behind one `std` mutex (short sections, never held across an
//! await) and a `Notify` that wakes waiters on every change, so tests wait on events instead of
//! sleeping. It must not decide replies (the session does) nor touch sockets or files.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// Stored messages remembered (the oldest are forgotten first), so a long-running
/// `mailroom sandbox` stays bounded; the counters keep counting.
pub const STORED_LIMIT: usize = 100_000;

/// One message the sandbox accepted and wrote to its Maildir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The queue id given in the reply (`SBX000001`).
    pub id: String,
    /// The accepted recipients, in RCPT order.
    pub rcpts: Vec<String>,
    /// The Maildir file (in `new/`).
    pub file: PathBuf,
    /// RFC 3461 `ENVID` and `RET` of its MAIL, as sent (`[session] dsn`).
    pub envid: Option<String>,
    pub ret: Option<String>,
    /// RFC 3461 `NOTIFY` and `ORCPT` of each recipient, in RCPT order.
    pub rcpt_dsn: Vec<super::dsn::RcptParams>,
}

/// A snapshot of what the sandbox saw, across every session since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Connections served (those refused for `max_connections` are not counted).
    pub sessions: u64,
    /// Messages whose final "." arrived, whatever the reply (or its absence) was.
    pub messages_ended: u64,
    /// Messages accepted and stored.
    pub messages_accepted: u64,
    /// MAIL commands that arrived with more input already buffered behind them: the client
    /// pipelined (RFC 2920).
    pub pipelined_mail: u64,
    /// MAIL commands that arrived right behind a message's final ".", before its reply: the
    /// client opened its next transaction in the same write (RFC 2920 lets message content
    /// start a command group).
    pub mail_behind_message: u64,
    /// The most recent [`STORED_LIMIT`] stored messages, oldest first.
    pub stored: VecDeque<Stored>,
}

impl Seen {
    /// How many stored messages each recipient has (1 everywhere means "exactly once").
    pub fn accepted_per_address(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for rcpt in self.stored.iter().flat_map(|s| &s.rcpts) {
            *counts.entry(rcpt.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The queue id of the last stored message for `rcpt`.
    pub fn queue_id_of(&self, rcpt: &str) -> Option<&str> {
        self.stored
            .iter()
            .rev()
            .find(|s| s.rcpts.iter().any(|r| r == rcpt))
            .map(|s| s.id.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    seen: Seen,
    /// Messages decided "accept" (stored or being stored): the freeze counts these, so two
    /// sessions finishing at once cannot both slip past the limit while the Maildir is written.
    reserved: u64,
    thawed: bool,
}

/// The shared observer of one sandbox; every session reports to it.
#[derive(Debug, Default)]
pub struct Observer {
    state: Mutex<State>,
    /// Woken (`notify_waiters`) after every change; `wait_until` re-checks its predicate.
    changed: Notify,
}

impl Observer {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.changed.notify_waiters();
        out
    }

    /// A new connection; returns its number, counting from 1.
    pub fn session_started(&self) -> u64 {
        self.update(|s| {
            s.seen.sessions += 1;
            s.seen.sessions
        })
    }

    /// A MAIL command arrived with more input buffered behind it.
    pub fn pipelined_mail(&self) {
        self.update(|s| s.seen.pipelined_mail += 1);
    }

    /// A MAIL command arrived behind a message's final ".", before its reply was sent.
    pub fn mail_behind_message(&self) {
        self.update(|s| s.seen.mail_behind_message += 1);
    }

    /// A message's final "." arrived.
    pub fn message_ended(&self) {
        self.update(|s| s.seen.messages_ended += 1);
    }

    /// Asks to accept one more message. False while frozen: once `freeze_after` messages were
    /// accepted and until [`Observer::thaw`]. True reserves the message's place in the count,
    /// which [`Observer::stored`] confirms or [`Observer::not_stored`] gives back.
    pub fn may_accept(&self, freeze_after: Option<u64>) -> bool {
        self.update(|s| {
            let frozen = freeze_after.is_some_and(|n| s.reserved >= n && !s.thawed);
            if !frozen {
                s.reserved += 1;
            }
            !frozen
        })
    }

    /// A message accepted by [`Observer::may_accept`] is in the Maildir; recorded before its
    /// 250 is sent, so a client that saw the 250 sees the record.
    pub fn stored(&self, stored: Stored) {
        self.update(|s| {
            s.seen.messages_accepted += 1;
            if s.seen.stored.len() >= STORED_LIMIT {
                s.seen.stored.pop_front();
            }
            s.seen.stored.push_back(stored);
        });
    }

    /// A message accepted by [`Observer::may_accept`] could not be written (it got a 451).
    pub fn not_stored(&self) {
        self.update(|s| s.reserved = s.reserved.saturating_sub(1));
    }

    /// Whether `[session] die_after_messages` (`after`) messages were stored: the relay is dead.
    pub fn has_died(&self, after: Option<u64>) -> bool {
        after.is_some_and(|n| self.lock().seen.messages_accepted >= n)
    }

    /// Ends a freeze for messages that end from now on (frozen ones stay unanswered).
    pub fn thaw(&self) {
        self.update(|s| s.thawed = true);
    }

    /// A copy of what was seen so far.
    pub fn seen(&self) -> Seen {
        self.lock().seen.clone()
    }

    /// Returns once `done` holds on what was seen; woken by every change, never polling.
    pub async fn wait_until(&self, done: impl Fn(&Seen) -> bool) {
        loop {
            // Registered before the check: a change between the check and the await still wakes
            // this future (`notify_waiters` reaches futures created before it was called).
            let changed = self.changed.notified();
            if done(&self.lock().seen) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_freeze_counts_reservations_and_a_thaw_lifts_it() {
        let o = Observer::default();
        assert!(o.may_accept(Some(2)));
        assert!(o.may_accept(Some(2)));
        // Two reserved, none stored yet: the third is frozen all the same.
        assert!(!o.may_accept(Some(2)));
        o.not_stored();
        assert!(o.may_accept(Some(2)), "a failed write gives its place back");
        o.thaw();
        assert!(o.may_accept(Some(2)));
        assert!(o.may_accept(None));
    }

    #[test]
    fn stored_messages_are_counted_per_address() {
        let o = Observer::default();
        for (id, rcpts) in [("A", vec!["x@t", "y@t"]), ("B", vec!["x@t"])] {
            o.stored(Stored {
                id: id.to_owned(),
                rcpts: rcpts.into_iter().map(str::to_owned).collect(),
                file: PathBuf::new(),
                envid: None,
                ret: None,
                rcpt_dsn: Vec::new(),
            });
        }
        let seen = o.seen();
        assert_eq!(seen.messages_accepted, 2);
        assert_eq!(seen.accepted_per_address().get("x@t"), Some(&2));
        assert_eq!(seen.queue_id_of("x@t"), Some("B"));
        assert_eq!(seen.queue_id_of("y@t"), Some("A"));
    }

    #[tokio::test]
    async fn wait_until_wakes_on_a_change_from_another_task() {
        let o = std::sync::Arc::new(Observer::default());
        let other = o.clone();
        let waiter = tokio::spawn(async move { other.wait_until(|s| s.sessions >= 2).await });
        o.session_started();
        o.session_started();
        waiter.await.unwrap();
    }
}
