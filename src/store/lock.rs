//! One `send` at a time per ledger: a lock file next to the ledger holding the owner's pid.
//!
//! Crash recovery turns every `sending` row into `unknown`, which is only right when no other
//! process is still sending from the same ledger; this lock makes sure of that. A lock left by a
//! process that no longer exists (kill -9) is taken over. Liveness is checked through `/proc`;
//! where that does not exist the lock is treated as stale rather than blocking forever.
//! This module must not touch the database itself.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Error;

/// Held for the duration of a run; removes its file when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".send-lock");
    ledger.with_file_name(name)
}

fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

impl RunLock {
    /// Takes the lock for `ledger`.
    ///
    /// # Errors
    /// [`Error::Busy`] when another live process holds it; I/O errors otherwise.
    pub fn acquire(ledger: &Path) -> Result<RunLock, Error> {
        let path = lock_path(ledger);
        let io = |source| Error::Lock {
            path: path.clone(),
            source,
        };
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id()).map_err(io)?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if pid != std::process::id() && alive(pid) => {
                            return Err(Error::Busy {
                                ledger: ledger.to_owned(),
                                pid,
                            });
                        }
                        // Stale (crashed owner) or unreadable: take it over.
                        _ => match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io(e)),
                        },
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("lock file keeps reappearing")))
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("mailroom.db");
        let first = RunLock::acquire(&ledger).unwrap();
        // Same process: a held lock is re-entrant only by replacing it (tests run sequential
        // sends in one process); a live *other* pid is refused.
        std::fs::write(lock_path(&ledger), "1\n").unwrap();
        let busy = RunLock::acquire(&ledger).unwrap_err();
        assert!(matches!(busy, Error::Busy { pid: 1, .. }), "{busy}");
        assert!(busy.to_string().contains("pid 1"));
        drop(first);
        assert!(!lock_path(&ledger).exists());
        // A pid that cannot exist: stale, taken over.
        std::fs::write(lock_path(&ledger), "4294967294\n").unwrap();
        let taken = RunLock::acquire(&ledger).unwrap();
        drop(taken);
        assert!(!lock_path(&ledger).exists());
    }
}
