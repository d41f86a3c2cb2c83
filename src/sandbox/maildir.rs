//! Writes messages into a Maildir the way delivery agents do: the file is created and synced in
//! `tmp/`, then renamed into `new/`, so a reader never sees half a message. Blocking file I/O:
//! the server calls it from `spawn_blocking`. Does not read or parse messages.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Gives every file written by this process a distinct name, even within one microsecond.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Creates `dir/{tmp,new,cur}` if missing.
pub fn create(dir: &Path) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    Ok(())
}

/// Delivers `bytes` into `dir` atomically and returns the path in `new/`.
pub fn deliver(dir: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    create(dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // The classic unique name: time, microseconds, process id and a per-process sequence number.
    let name = format!(
        "{}.M{}P{}Q{}.mailroom-sandbox",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &new)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| new)
}

/// Every message file in `dir/new` and `dir/cur`, sorted by name (delivery order within this
/// process). A missing Maildir reads as empty.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for sub in ["new", "cur"] {
        match fs::read_dir(dir.join(sub)) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        files.push(entry.path());
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    files.sort_by_key(|p| sequence_of(p));
    Ok(files)
}

fn sequence_of(path: &Path) -> (u64, u64, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let secs = name
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seq = name
        .split('Q')
        .nth(1)
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (secs, seq, name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deliver_writes_into_new_with_unique_names_and_leaves_tmp_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = deliver(dir.path(), b"one").unwrap();
        let b = deliver(dir.path(), b"two").unwrap();
        assert_ne!(a, b);
        assert_eq!(fs::read(&a).unwrap(), b"one");
        assert_eq!(list(dir.path()).unwrap(), vec![a, b]);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
