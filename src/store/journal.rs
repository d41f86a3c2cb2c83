//! The in-flight journal: a small append-only file next to the ledger (`<ledger>-inflight`)
//! with one line, `s <run id> <recipient id>`, per SMTP transaction a worker is about to start.
//!
//! Why it exists: the delivery pipeline claims recipients (`sending`, committed) in blocks, so
//! that one commit covers many rows instead of one. After a crash, a `sending` row is either a
//! message whose transaction had started (the relay may have it: `unknown`) or one still queued
//! behind it (never sent: back to where it was). The journal tells them apart. It is written
//! with one `write(2)` before the first byte of each transaction, or, for a transaction opened
//! behind the previous message (RFC 2920), before its message, the first byte that could deliver
//! it (MAIL, RCPT and DATA alone deliver nothing). A line survives the death of the process
//! exactly as the WAL's commits do (`synchronous = NORMAL`: both sit in the OS page
//! cache, neither is fsynced per message).
//!
//! The file is only meaningful together with the ledger's `sending` rows: recovery reads it
//! (under the send lock), and a missing or unreadable journal makes every `sending` row
//! `unknown`, the safe answer. This module must not touch SQLite.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What recovery learns from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// No journal, or one that cannot be read in full: every `sending` row may have gone out.
    Unknown,
    /// The (run id, recipient id) pairs whose transaction started.
    These(HashSet<(i64, i64)>),
}

impl Started {
    /// Whether the transaction of `recipient_id`, claimed by `run_id`, may have started.
    pub fn may_have_started(&self, run_id: Option<i64>, recipient_id: i64) -> bool {
        match (self, run_id) {
            (Started::These(set), Some(run)) => set.contains(&(run, recipient_id)),
            _ => true,
        }
    }
}

/// The journal of a running send (append-only).
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

/// The journal's path for the ledger at `ledger`.
pub fn path_for(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push("-inflight");
    PathBuf::from(name)
}

/// Reads the journal of `ledger` for recovery.
///
/// # Errors
/// Never for a missing file (that is [`Started::Unknown`]); an I/O error reading an existing one.
pub fn read(ledger: &Path) -> io::Result<Started> {
    let text = match std::fs::read(path_for(ledger)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Started::Unknown),
        Err(e) => return Err(e),
    };
    // Every line is written whole, newline last: a file that does not end in one holds a
    // write that was cut short, and what it was about cannot be known.
    let Ok(text) = String::from_utf8(text) else {
        return Ok(Started::Unknown);
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return Ok(Started::Unknown);
    }
    let mut started = HashSet::new();
    for line in text.lines() {
        // The leading "s" makes a line glued to the rest of a short write unreadable (a cut
        // "s 1" followed by "s 12 46" reads "s 1s 12 46", not a valid pair).
        let mut parts = line.split(' ');
        let parsed = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("s"), Some(run), Some(id), None) => run.parse().ok().zip(id.parse().ok()),
            _ => None,
        };
        // A line this code did not write: the file cannot be trusted to be complete.
        let Some(pair) = parsed else {
            return Ok(Started::Unknown);
        };
        started.insert(pair);
    }
    Ok(Started::These(started))
}

/// Empties (or creates) the journal of `ledger`. Only after recovery has committed what it
/// learnt from it, and before the next run claims anything.
///
/// # Errors
/// When the file cannot be created or truncated.
pub fn reset(ledger: &Path) -> io::Result<()> {
    File::create(path_for(ledger)).map(drop)
}

impl Journal {
    /// Opens the journal of `ledger` for appending, creating it if needed.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(ledger: &Path) -> io::Result<Journal> {
        let path = path_for(ledger);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Journal { file, path })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes that the transaction for `recipient_id` in `run_id` starts now. One `write(2)` of
    /// the whole line (`O_APPEND`), so concurrent workers never interleave.
    ///
    /// # Errors
    /// When the write fails or is short: the caller must not start the transaction.
    pub fn started(
        &self,
        run_id: crate::model::RunId,
        recipient_id: crate::model::RecipientId,
    ) -> io::Result<()> {
        let line = format!("s {run_id} {recipient_id}\n");
        let written = (&self.file).write(line.as_bytes())?;
        if written == line.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write to the in-flight journal",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_journal_means_anything_may_have_started() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        let started = read(&ledger).unwrap();
        assert_eq!(started, Started::Unknown);
        assert!(started.may_have_started(Some(1), 7));
    }

    #[test]
    fn appended_lines_are_read_back_and_reset_empties_them() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        reset(&ledger).unwrap();
        let journal = Journal::open(&ledger).unwrap();
        use crate::model::{RecipientId, RunId};
        journal.started(RunId(3), RecipientId(10)).unwrap();
        journal.started(RunId(3), RecipientId(11)).unwrap();
        let started = read(&ledger).unwrap();
        assert!(started.may_have_started(Some(3), 10));
        assert!(started.may_have_started(Some(3), 11));
        assert!(!started.may_have_started(Some(3), 12));
        // Another run's claim of the same row is not this one.
        assert!(!started.may_have_started(Some(2), 10));
        // A claim without a run (an older ledger) is never trusted to be unsent.
        assert!(started.may_have_started(None, 12));
        reset(&ledger).unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::These(HashSet::new()));
    }

    #[test]
    fn a_line_it_did_not_write_makes_the_whole_journal_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        std::fs::write(path_for(&ledger), "s 3 10\n").unwrap();
        assert!(read(&ledger).unwrap().may_have_started(Some(3), 10));
        // A line cut short at the end ("s 3 10" written as "s 3 1") must not be read as row 1.
        std::fs::write(path_for(&ledger), "s 3 10\ns 3 1").unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::Unknown);
        // Nor a cut line that another worker's line was appended to.
        std::fs::write(path_for(&ledger), "s 3 10\ns 1s 12 46\n").unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::Unknown);
        std::fs::write(path_for(&ledger), "s 3 10\ns 3 1s 3 46\n").unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::Unknown);
        std::fs::write(path_for(&ledger), "s 3 10\nthree\n").unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::Unknown);
        // Lines in the older form without the marker are not this format either.
        std::fs::write(path_for(&ledger), "3 10\n").unwrap();
        assert_eq!(read(&ledger).unwrap(), Started::Unknown);
    }
}
