//! One `send` at a time per ledger: an OS advisory lock (`flock`) on a file next to the ledger.
//!
//! Crash recovery turns every `sending` row into `unknown`, which is only right when no other
//! process is still sending from the same ledger; this lock makes sure of that. The kernel
//! releases it when its holder exits, however it exits (kill -9 included), so there is no stale
//! lock to detect and no race between two processes taking one over. The file also holds the
//! holder's pid, only to name it in the "busy" message; it is never deleted (deleting a locked
//! file would let a third process lock a new file of the same name while a second still waits
//! on the old one). This module must not touch the database itself.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::Error;

/// How often a lock last held by this same process is tried again, [`OWN_LOCK_PAUSE`] apart.
const OWN_LOCK_RETRIES: u32 = 10;
const OWN_LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Held for the duration of a run; the lock is released when this is dropped (or the process
/// dies).
#[derive(Debug)]
pub struct RunLock {
    /// Holding the open file is what holds the lock.
    _file: File,
}

fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".send-lock");
    ledger.with_file_name(name)
}

impl RunLock {
    /// Takes the lock for `ledger`, without waiting.
    ///
    /// # Errors
    /// [`Error::Busy`] when another process holds it; I/O errors otherwise.
    pub fn acquire(ledger: &Path) -> Result<RunLock, Error> {
        let path = lock_path(ledger);
        let io = |source| Error::Lock {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut text);
                    let pid = text.trim().parse().unwrap_or(0);
                    // A lock this process has just released can outlive its release for a
                    // moment: a child another thread is spawning holds a copy of every
                    // descriptor from its fork until its exec closes them, and an flock belongs
                    // to the open file, not to one descriptor. Only then is it worth a short
                    // wait; another process's lock is reported at once.
                    if pid == std::process::id() && tries < OWN_LOCK_RETRIES {
                        tries += 1;
                        std::thread::sleep(OWN_LOCK_PAUSE);
                        continue;
                    }
                    return Err(Error::Busy {
                        ledger: ledger.to_owned(),
                        pid,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("mailroom.db");
        let first = RunLock::acquire(&ledger).unwrap();
        // flock conflicts between open files even within one process, so this stands in for a
        // second `mailroom send`.
        let busy = RunLock::acquire(&ledger).unwrap_err();
        let me = std::process::id();
        assert!(
            matches!(busy, Error::Busy { pid, .. } if pid == me),
            "{busy}"
        );
        assert!(busy.to_string().contains(&format!("pid {me}")));
        drop(first);
        // Released with its file handle: taken again at once, and again after that.
        drop(RunLock::acquire(&ledger).unwrap());
        let again = RunLock::acquire(&ledger).unwrap();
        drop(again);
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("mailroom.db");
        // What a kill -9 leaves: the file with a pid, but no lock (the kernel dropped it).
        std::fs::write(lock_path(&ledger), "4294967294\n").unwrap();
        drop(RunLock::acquire(&ledger).unwrap());
        let pid: u32 = std::fs::read_to_string(lock_path(&ledger))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            pid,
            std::process::id(),
            "the holder's pid replaces the old one"
        );
    }
}
