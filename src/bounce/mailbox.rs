//! Reading local mailboxes: Maildir (`new/` then `cur/`) and mbox (From_ line splitting with
//! mboxrd `>From` unescaping). Read-only: a message is never moved, flagged or deleted, so
//! an import can be repeated and other readers of the mailbox are unaffected.
//!
//! Bounded like the IMAP reader: a message larger than [`MAX_MESSAGE`] is skipped and reported
//! ([`Error::TooLarge`], the import goes on), never held in memory; an mbox line is read in
//! pieces of at most [`LINE_PIECE`] bytes, so a file without line ends cannot exhaust memory.

use std::fs;
use std::io::{self, BufRead, BufReader, Read as _};
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
    #[error(
        "{path} is not an mbox file: {why}\n\nPass an mbox file (each message starts with a \
         `From ` line), or --maildir DIR for a Maildir. A single message saved as .eml can be \
         read with `mailroom bounces parse FILE`."
    )]
    NotMbox { path: PathBuf, why: &'static str },
    #[error("{source_name}: skipped, not read: {}", too_large(*size))]
    TooLarge { source_name: String, size: u64 },
}

/// Why a message of `size` bytes is skipped. A file read up to the cap (a device, or one that
/// grew while it was read) has no known size: `size` is then the cap plus one, not said.
fn too_large(size: u64) -> String {
    let cap = format!(
        "over the {} MiB cap on one message (no bounce or complaint is that large)",
        MAX_MESSAGE >> 20
    );
    if size > MAX_MESSAGE + 1 {
        format!("{size} bytes, {cap}")
    } else {
        cap
    }
}

/// The largest message read from a mailbox (the same cap as IMAP's): bounces carry at most a
/// few hundred kB of the original (Postfix 50 kB, Exim 100 kB), a complaint one newsletter.
pub const MAX_MESSAGE: u64 = 25 << 20;
/// The most bytes of one mbox line read at a time.
pub const LINE_PIECE: u64 = 64 << 10;

/// The message files of a Maildir, `new/` then `cur/`, each sorted by name (Maildir names
/// start with the delivery time, so this is arrival order).
///
/// # Errors
/// When the folder cannot be listed or has neither `new/` nor `cur/`.
pub fn maildir_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
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
        if !dir.exists() {
            return Err(Error::Read {
                path: dir.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such folder"),
            });
        }
        if !dir.is_dir() {
            return Err(Error::NotMaildir {
                path: dir.to_owned(),
            });
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
        let source = format!("maildir:{}", path.display());
        let raw = read_message(&path, &source)?;
        Ok(MailboxMessage { source, raw })
    }))
}

/// One message file, read whole unless it is over [`MAX_MESSAGE`] (a file that grows while it
/// is read included): then [`Error::TooLarge`] naming it as `source_name`.
///
/// # Errors
/// When the file cannot be read, or is too large.
pub fn read_message(path: &Path, source_name: &str) -> Result<Vec<u8>, Error> {
    let failed = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let too_large = |size| Error::TooLarge {
        source_name: source_name.to_owned(),
        size,
    };
    let file = fs::File::open(path).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    if size > MAX_MESSAGE {
        return Err(too_large(size));
    }
    // The file may grow while it is read (or be a device): never read past the cap.
    crate::bounded::read_to_end(file, MAX_MESSAGE, size)
        .map_err(failed)?
        .ok_or_else(|| too_large(MAX_MESSAGE + 1))
}

/// Streams the messages of an mbox file.
pub struct Mbox<R> {
    reader: R,
    path: PathBuf,
    /// The From_ line that starts the next message, once seen.
    pending: bool,
    index: usize,
    /// The piece of a line last read (at most [`LINE_PIECE`] bytes).
    line: Vec<u8>,
    /// Whether `line` starts a line (the piece before it ended with a line end).
    line_start: bool,
    done: bool,
}

/// Opens an mbox file for streaming.
///
/// # Errors
/// When the file cannot be opened.
pub fn mbox(path: &Path) -> Result<Mbox<BufReader<fs::File>>, Error> {
    let not_mbox = |why| Error::NotMbox {
        path: path.to_owned(),
        why,
    };
    if path.is_dir() {
        return Err(not_mbox("it is a folder (for a Maildir, use --maildir)"));
    }
    let failed = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(fs::File::open(path).map_err(failed)?);
    // Every message of an mbox starts with a From_ line, the first one too: a file that starts
    // with anything else (one message saved as .eml, a Maildir file, not mail at all) would
    // otherwise be read as an empty mailbox, "0 messages", as if there were nothing to import.
    let head = reader.fill_buf().map_err(failed)?;
    let first = head.iter().position(|b| !b.is_ascii_whitespace());
    if let Some(at) = first
        && !is_from_line(&head[at..])
    {
        return Err(not_mbox("it does not start with a `From ` line"));
    }
    Ok(Mbox::new(reader, path))
}

impl<R: BufRead> Mbox<R> {
    pub fn new(reader: R, path: &Path) -> Self {
        Mbox {
            reader,
            path: path.to_owned(),
            pending: false,
            index: 0,
            line: Vec::new(),
            line_start: true,
            done: false,
        }
    }

    /// Reads the next piece of a line (the rest of the line when it is short). False at the
    /// end of the file.
    fn read_line(&mut self) -> Result<bool, Error> {
        self.line_start = self.line.is_empty() || self.line.ends_with(b"\n");
        self.line.clear();
        let n = (&mut self.reader)
            .take(LINE_PIECE)
            .read_until(b'\n', &mut self.line)
            .map_err(|source| Error::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(n > 0)
    }

    /// The current piece is a From_ line (and not the middle of a long line).
    fn at_from_line(&self) -> bool {
        self.line_start && is_from_line(&self.line)
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
                Ok(true) if self.at_from_line() => self.pending = true,
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
        // Bytes of this message; past the cap they are counted, not kept.
        let mut size: u64 = 0;
        let mut previous_blank = true;
        loop {
            match self.read_line() {
                Ok(true) => {
                    // A From_ line starts a new message only after a blank line; elsewhere it is
                    // body text a non-escaping writer left alone.
                    if self.at_from_line() && previous_blank && size > 0 {
                        break;
                    }
                    previous_blank =
                        self.line_start && (self.line == b"\n" || self.line == b"\r\n");
                    let piece = if self.line_start {
                        unescape(&self.line)
                    } else {
                        &self.line
                    };
                    size += piece.len() as u64;
                    if size <= MAX_MESSAGE {
                        raw.extend_from_slice(piece);
                    } else if !raw.is_empty() {
                        raw = Vec::new();
                    }
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
        self.index += 1;
        let source = format!("mbox:{}#{}", self.path.display(), self.index);
        if size > MAX_MESSAGE {
            return Some(Err(Error::TooLarge {
                source_name: source,
                size,
            }));
        }
        // The blank line before the next From_ belongs to the mbox format, not the message.
        if raw.ends_with(b"\n\n") {
            raw.pop();
        } else if raw.ends_with(b"\r\n\r\n") {
            raw.truncate(raw.len() - 2);
        }
        Some(Ok(MailboxMessage { source, raw }))
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
    fn an_oversize_mbox_message_is_skipped_and_the_next_one_read() {
        let big = vec![b'x'; usize::try_from(MAX_MESSAGE).unwrap() + 10];
        let mut data = b"From a@b Thu Jan  1 00:00:00 2026\nSubject: big\n\n".to_vec();
        // One line without any line end, far longer than a piece.
        data.extend_from_slice(&big);
        data.extend_from_slice(b"\n\nFrom c@d Thu Jan  1 00:00:01 2026\nSubject: small\n\nhi\n");
        let items: Vec<_> = Mbox::new(&data[..], Path::new("x")).collect();
        assert_eq!(items.len(), 2);
        assert!(
            matches!(&items[0], Err(Error::TooLarge { size, .. }) if *size > MAX_MESSAGE),
            "{:?}",
            items[0].as_ref().err()
        );
        assert_eq!(items[1].as_ref().unwrap().raw, b"Subject: small\n\nhi\n");
    }

    #[test]
    fn a_from_line_inside_a_long_line_starts_no_message() {
        // "From " lands at the start of the second piece of one long line.
        let line_piece = usize::try_from(LINE_PIECE).unwrap();
        let mut tricky = b"From a@b Thu Jan  1 00:00:00 2026\n\n".to_vec();
        tricky.extend_from_slice(&vec![b'z'; line_piece]);
        tricky.extend_from_slice(b"From inside\n");
        let items: Vec<_> = Mbox::new(&tricky[..], Path::new("x"))
            .map(Result::unwrap)
            .collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].raw.ends_with(b"From inside\n"));
    }

    #[test]
    fn an_oversize_maildir_file_is_skipped_unread() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("new")).unwrap();
        let f = fs::File::create(dir.path().join("new/1")).unwrap();
        // Sparse: the size without the bytes.
        f.set_len(MAX_MESSAGE + 1).unwrap();
        fs::write(dir.path().join("new/2"), b"A: 1\n\nx").unwrap();
        let items: Vec<_> = maildir(dir.path()).unwrap().collect();
        assert!(matches!(&items[0], Err(Error::TooLarge { .. })));
        assert_eq!(items[1].as_ref().unwrap().raw, b"A: 1\n\nx");
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
        // A file is not a Maildir; a path that is not there says so.
        assert!(matches!(
            maildir_files(&dir.path().join("new/2")),
            Err(Error::NotMaildir { .. })
        ));
        let gone = maildir_files(&dir.path().join("nowhere")).unwrap_err();
        assert!(
            matches!(&gone, Error::Read { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{gone:?}"
        );
    }

    #[test]
    fn only_a_file_that_starts_with_a_from_line_is_read_as_an_mbox() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            path
        };
        // One message saved as .eml: not "0 messages read".
        let eml = file(
            "one.eml",
            b"From: MAILER-DAEMON@mx.example\nSubject: x\n\nbody\n",
        );
        assert!(matches!(mbox(&eml), Err(Error::NotMbox { .. })));
        assert!(matches!(mbox(dir.path()), Err(Error::NotMbox { .. })));
        // Blank lines before the first From_ line, and an empty file, are mailboxes.
        let ok = file(
            "ok.mbox",
            b"\n\nFrom a@b Mon Jan  1 00:00:00 2026\nA: 1\n\nx\n",
        );
        assert_eq!(mbox(&ok).unwrap().count(), 1);
        let empty = file("empty.mbox", b"");
        assert_eq!(mbox(&empty).unwrap().count(), 0);
    }
}
