//! Reading local mailboxes: Maildir (`new/` then `cur/`) and mbox (From_ line splitting with
//! mboxrd `>From` unescaping). Read-only: a message is never moved, flagged or deleted, so
//! an import can be repeated and other readers of the mailbox are unaffected.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::import::MailboxMessage;

/// Errors reading a mailbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read mailbox {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a Maildir (no new/ or cur/ folder)\n\nPass the Maildir's top folder, or use --mbox for a single file."
    )]
    NotMaildir { path: PathBuf },
}

/// The message files of a Maildir, `new/` then `cur/`, each sorted by name (Maildir names
/// start with the delivery time, so this is arrival order).
///
/// # Errors
/// When the folder cannot be listed or has neither `new/` nor `cur/`.
pub fn maildir_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = |path: &Path| Error::Read {
        path: path.to_owned(),
        source: io::Error::other("unreadable"),
    };
    let mut files = Vec::new();
    let mut found = false;
    for sub in ["new", "cur"] {
        let folder = dir.join(sub);
        if !folder.is_dir() {
            continue;
        }
        found = true;
        let mut names: Vec<PathBuf> = fs::read_dir(&folder)
            .map_err(|source| Error::Read {
                path: folder.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            // Maildir writers use dot-files and tmp/ for messages still being written.
            .filter(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        names.sort();
        files.extend(names);
    }
    if !found {
        if !dir.is_dir() {
            return Err(read(dir));
        }
        return Err(Error::NotMaildir {
            path: dir.to_owned(),
        });
    }
    Ok(files)
}

/// Every message of a Maildir, read lazily.
///
/// # Errors
/// When the folder cannot be listed; each item fails when its file cannot be read.
pub fn maildir(dir: &Path) -> Result<impl Iterator<Item = Result<MailboxMessage, Error>>, Error> {
    let files = maildir_files(dir)?;
    Ok(files.into_iter().map(|path| {
        let raw = fs::read(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        Ok(MailboxMessage {
            source: format!("maildir:{}", path.display()),
            raw,
        })
    }))
}

/// Streams the messages of an mbox file.
pub struct Mbox<R> {
    reader: R,
    path: PathBuf,
    /// The From_ line that starts the next message, once seen.
    pending: bool,
    index: usize,
    line: Vec<u8>,
    done: bool,
}

/// Opens an mbox file for streaming.
///
/// # Errors
/// When the file cannot be opened.
pub fn mbox(path: &Path) -> Result<Mbox<BufReader<fs::File>>, Error> {
    let file = fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(Mbox::new(BufReader::new(file), path))
}

impl<R: BufRead> Mbox<R> {
    pub fn new(reader: R, path: &Path) -> Self {
        Mbox {
            reader,
            path: path.to_owned(),
            pending: false,
            index: 0,
            line: Vec::new(),
            done: false,
        }
    }

    fn read_line(&mut self) -> Result<bool, Error> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|source| Error::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(n > 0)
    }
}

fn is_from_line(line: &[u8]) -> bool {
    line.starts_with(b"From ")
}

/// mboxrd: `>From `, `>>From ` ... lose one `>`.
fn unescape(line: &[u8]) -> &[u8] {
    let quotes = line.iter().take_while(|&&b| b == b'>').count();
    if quotes > 0 && line[quotes..].starts_with(b"From ") {
        &line[1..]
    } else {
        line
    }
}

impl<R: BufRead> Iterator for Mbox<R> {
    type Item = Result<MailboxMessage, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // Skip to the first From_ line (anything before it is not a message).
        while !self.pending {
            match self.read_line() {
                Ok(true) if is_from_line(&self.line) => self.pending = true,
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let mut raw = Vec::new();
        let mut previous_blank = true;
        loop {
            match self.read_line() {
                Ok(true) => {
                    // A From_ line starts a new message only after a blank line; elsewhere it is
                    // body text a non-escaping writer left alone.
                    if is_from_line(&self.line) && previous_blank && !raw.is_empty() {
                        break;
                    }
                    previous_blank = self.line == b"\n" || self.line == b"\r\n";
                    raw.extend_from_slice(unescape(&self.line));
                }
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        // The blank line before the next From_ belongs to the mbox format, not the message.
        if raw.ends_with(b"\n\n") {
            raw.pop();
        } else if raw.ends_with(b"\r\n\r\n") {
            raw.truncate(raw.len() - 2);
        }
        self.index += 1;
        Some(Ok(MailboxMessage {
            source: format!("mbox:{}#{}", self.path.display(), self.index),
            raw,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mbox_splits_on_from_lines_and_unescapes() {
        let data = b"From a@b Thu Jan  1 00:00:00 2026\nSubject: one\n\n>From the start\nbody\n\n\
From c@d Thu Jan  1 00:00:01 2026\nSubject: two\n\n>>From quoted\nFrom inside body\n";
        let msgs: Vec<MailboxMessage> = Mbox::new(&data[..], Path::new("x"))
            .map(Result::unwrap)
            .collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].raw, b"Subject: one\n\nFrom the start\nbody\n");
        assert_eq!(
            msgs[1].raw,
            b"Subject: two\n\n>From quoted\nFrom inside body\n"
        );
        assert_eq!(msgs[1].source, "mbox:x#2");
    }

    #[test]
    fn maildir_reads_new_then_cur_and_refuses_other_folders() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("new")).unwrap();
        fs::create_dir_all(dir.path().join("cur")).unwrap();
        fs::write(dir.path().join("cur/1:2,S"), b"A: 1\n\nx").unwrap();
        fs::write(dir.path().join("new/2"), b"A: 2\n\nx").unwrap();
        fs::write(dir.path().join("new/.tmp"), b"partial").unwrap();
        let files = maildir_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("new/2"));
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            maildir_files(other.path()),
            Err(Error::NotMaildir { .. })
        ));
    }
}
