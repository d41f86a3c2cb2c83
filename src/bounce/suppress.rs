//! The suppression list shared by every campaign of a ledger: addresses never to be mailed
//! again, each with why (`hard_bounce`, `complaint`, `unsubscribe`, `manual`) and where the
//! entry came from. This module checks what users give (addresses, reasons, files) and
//! normalises addresses (domain lower-cased, IDN as punycode) so a lookup is plain equality;
//! the store keeps the list.

use std::path::{Path, PathBuf};

use crate::store::{self, Ledger};

/// The reasons the ledger schema allows.
pub const REASONS: &[&str] = &["hard_bounce", "complaint", "unsubscribe", "manual"];

/// One suppression.
pub type Entry = store::Suppression;

/// Errors managing the list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("`{0}` is not an e-mail address\n\nGive a full address like name@example.org.")]
    BadAddress(String),
    #[error(
        "unknown suppression reason `{0}`\n\nUse one of: hard_bounce, complaint, unsubscribe, manual."
    )]
    BadReason(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Csv { path: PathBuf, cause: csv::Error },
    #[error("suppression list")]
    Store(#[from] store::Error),
}

/// Normalises exactly as campaign contacts are (domain lower-cased, IDN as punycode, local part
/// kept), so that a suppression matches the recipient rows the sender checks; angle brackets
/// and surrounding blanks are dropped first.
///
/// # Errors
/// When the text is not a valid address.
pub fn normalize(address: &str) -> Result<String, Error> {
    let a = address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    crate::campaign::normalize_address(a).map_err(|_| Error::BadAddress(address.to_owned()))
}

fn check_reason(reason: &str) -> Result<(), Error> {
    if REASONS.contains(&reason) {
        Ok(())
    } else {
        Err(Error::BadReason(reason.to_owned()))
    }
}

/// Adds an address; `false` when it was already suppressed (the first entry is kept: it
/// records the original cause).
///
/// # Errors
/// Bad address or reason, or a ledger failure.
pub fn add(
    ledger: &mut Ledger,
    address: &str,
    reason: &str,
    source: &str,
    campaign: Option<&str>,
) -> Result<bool, Error> {
    check_reason(reason)?;
    let email = normalize(address)?;
    let added = ledger.suppress_all(
        [email.as_str()],
        reason,
        source,
        campaign,
        store::ledger::now_ms(),
    )?;
    Ok(added.first().copied().unwrap_or(false))
}

/// Removes an address; `false` when it was not on the list.
///
/// # Errors
/// Bad address or a ledger failure.
pub fn remove(ledger: &Ledger, address: &str) -> Result<bool, Error> {
    let email = normalize(address)?;
    Ok(ledger.unsuppress(&email)?)
}

/// What a file import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    pub added: usize,
    pub already: usize,
    /// (line, text, why) of every line that was not an address.
    pub invalid: Vec<(u64, String, String)>,
}

/// The largest suppression list read: about 20 million addresses, beyond any export, and a
/// bound on what a wrong path (`/dev/zero`) can make mailroom hold.
const MAX_LIST_BYTES: u64 = 1 << 30;

/// A list file's bytes, up to [`MAX_LIST_BYTES`]; a file or a pipe, never a device or a folder.
fn read_list(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    // A pipe (`/dev/stdin`, `<(...)`) is read like a file; a device or a folder is a mistake.
    #[cfg(unix)]
    let pipe = {
        use std::os::unix::fs::FileTypeExt as _;
        meta.file_type().is_fifo()
    };
    #[cfg(not(unix))]
    let pipe = false;
    if !meta.is_file() && !pipe {
        return Err(std::io::Error::other(
            "not a file or a pipe: pass the list saved as a file (one address a line, or a CSV \
             with an `email` column)",
        ));
    }
    let too_large =
        || std::io::Error::other("larger than 1 GiB: split the list and import each part");
    // A file that says so already is refused without reading it.
    if meta.is_file() && meta.len() > MAX_LIST_BYTES {
        return Err(too_large());
    }
    crate::bounded::read_to_end(file, MAX_LIST_BYTES, meta.len())?.ok_or_else(too_large)
}

/// Imports a file of addresses: a CSV whose header has an `email` column, or one address per
/// line (blank lines and `#` comments skipped). One transaction: all or nothing.
///
/// # Errors
/// When the file cannot be read or the ledger written; bad lines are reported, not fatal.
pub fn import_file(
    ledger: &mut Ledger,
    path: &Path,
    reason: &str,
    source: &str,
) -> Result<FileSummary, Error> {
    check_reason(reason)?;
    let read = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |why: String| read(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    let bytes = read_list(path).map_err(read)?;
    let text = crate::campaign::utf8_text(path, bytes).map_err(invalid)?;
    let mut lines = Vec::new();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let header: Vec<String> = first
        .split([',', ';', '\t'])
        .map(|h| h.trim().trim_matches('"').to_ascii_lowercase())
        .collect();
    if let Some(column) = header.iter().position(|h| h == "email" || h == "e-mail") {
        let delimiter = [b',', b';', b'\t']
            .into_iter()
            .find(|d| first.as_bytes().contains(d))
            .unwrap_or(b',');
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(text.as_bytes());
        for record in reader.records() {
            let record = record.map_err(|cause| Error::Csv {
                path: path.to_owned(),
                cause,
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            lines.push((line, record.get(column).unwrap_or("").to_owned()));
        }
    } else {
        for (i, l) in text.lines().enumerate() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            lines.push((i as u64 + 1, l.to_owned()));
        }
    }
    let mut summary = FileSummary::default();
    let mut valid = Vec::new();
    for (line, value) in lines {
        match normalize(&value) {
            Ok(email) => valid.push(email),
            Err(e) => summary.invalid.push((line, value, e.to_string())),
        }
    }
    let added = ledger.suppress_all(
        valid.iter().map(String::as_str),
        reason,
        source,
        None,
        store::ledger::now_ms(),
    )?;
    summary.added = added.iter().filter(|a| **a).count();
    summary.already = added.len() - summary.added;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_list_file_over_1_gib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.csv");
        // Sparse: nothing is written (and the size alone refuses it, without a 1 GiB read).
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_LIST_BYTES + 1).unwrap();
        let err = read_list(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "larger than 1 GiB: split the list and import each part"
        );
        file.set_len(3).unwrap();
        assert_eq!(read_list(&path).unwrap(), [0, 0, 0]);
    }

    #[test]
    fn normalize_lowercases_domain_and_punycodes_idn() {
        assert_eq!(normalize(" <Ann@Example.ORG> ").unwrap(), "ann@example.org");
        assert_eq!(
            normalize("a@bücher.example").unwrap(),
            "a@xn--bcher-kva.example"
        );
        assert!(normalize("no-at-sign").is_err());
        assert!(normalize("a b@example.org").is_err());
        assert!(normalize("a@localhost").is_err());
    }
}
