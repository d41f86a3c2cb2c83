//! Streams the contacts CSV through one reused `ByteRecord` and turns each row into a verdict:
//! valid, invalid (line + reason) or duplicate (line + first line). Memory stays flat: the only
//! state that grows is the duplicate index, 16 bytes per distinct address. A broken header is
//! fatal; a broken row is data. The file's bytes become UTF-8 through `charset` (which also
//! refuses a file that is not in the encoding it is read as, before any row is used). This
//! module must not render or send anything.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::io::Read;
use std::path::Path;

use encoding_rs::Encoding;

use super::Error;
use super::{address, charset};

/// One CSV row's verdict, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactEntry {
    Valid(Contact),
    /// `email` is the raw cell (lossy UTF-8), empty when the row had no such cell.
    Invalid {
        line: u64,
        email: String,
        reason: String,
    },
    /// Same normalised address (local part compared case-insensitively) as `first_line`.
    Duplicate {
        line: u64,
        first_line: u64,
        email: String,
    },
}

/// A recipient that passed every row-level check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// 1-based CSV line where the record starts (the header is line 1).
    pub line: u64,
    /// Normalised: lower-cased, IDN domain as punycode (see `normalize_address`).
    pub email: String,
    pub name: Option<String>,
    /// Every CSV column of the row, by header name.
    pub fields: BTreeMap<String, String>,
}

impl Contact {
    /// The (normalised, ASCII) domain part of `email`.
    pub fn domain(&self) -> &str {
        self.email.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// The parsed header: column names and which index holds the address and the name.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// The file's encoding (`None`: UTF-8); see `charset`.
    pub(crate) encoding: Option<&'static Encoding>,
    /// The file ends lines with CRLF. csv-core counts a line at each LF, and a record that
    /// ends at CR leaves its LF to the next record, so start positions lag one line behind.
    pub(crate) crlf: bool,
    pub(crate) columns: Vec<String>,
    pub(crate) email: usize,
    pub(crate) name: Option<usize>,
}

/// The columns `[contacts]` names, as `read_header` checks them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Named<'a> {
    pub(crate) email: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) attachment: Option<&'a str>,
    pub(crate) timezone: Option<&'a str>,
}

/// Iterator over every row of the contacts file; see [`ContactEntry`].
///
/// After a fatal error (an I/O error mid-file) it yields that `Err` once and then ends.
pub struct Contacts<'a> {
    reader: csv::Reader<Bounded>,
    budget: Budget,
    record: csv::ByteRecord,
    header: &'a Header,
    path: &'a Path,
    /// Hash of the case-folded address → first line. A 64-bit SipHash keeps 1M rows at ~40 MB
    /// peak instead of storing every address; a collision (odds ~1e-8 at 1M rows) would
    /// report a false duplicate, which is visible in the output and therefore acceptable.
    seen: HashMap<u64, u64>,
    done: bool,
    /// The field separator, to tell a row swallowed by an open quote from a line break in a
    /// field.
    delimiter: u8,
}

/// The most bytes one contact record (every field of a row together) may take: far beyond any
/// real contact, and it keeps a hostile or broken file (a quote never closed, a field of
/// gigabytes without a line end) from being read into memory whole.
pub const MAX_RECORD: u64 = 1 << 20;

/// What the CSV reader may pull from the file beyond the record itself (its buffer).
const READ_AHEAD: u64 = 64 * 1024;

/// The file under the CSV reader, cut off when one record reads more than [`MAX_RECORD`]:
/// `arm` is called before each record, and the budget counts what the reader pulls after it.
struct Bounded {
    inner: Box<dyn Read + Send>,
    left: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The error a [`Bounded`] read ends with, found again in the csv error by its type.
#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a contact record longer than the limit")
    }
}

impl std::error::Error for RecordTooLong {}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        let left = self.left.load(Ordering::Relaxed);
        if left == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                RecordTooLong,
            ));
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left.store(left - n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A CSV reader over `path` whose every record is bounded; the handle re-arms the budget.
fn bounded_reader(
    path: &Path,
    delimiter: u8,
    encoding: Option<&'static Encoding>,
) -> Result<(csv::Reader<Bounded>, Budget), Error> {
    let left = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let inner = Bounded {
        inner: charset::open(path, encoding)?,
        left: left.clone(),
    };
    let budget = Budget(left);
    budget.arm();
    Ok((reader_builder(delimiter).from_reader(inner), budget))
}

/// Re-arms a [`Bounded`] reader before the next record.
struct Budget(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Budget {
    fn arm(&self) {
        self.0.store(
            MAX_RECORD + READ_AHEAD,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// `csv_error`, naming the record that ran past [`MAX_RECORD`] by the line it starts on.
fn record_error(path: &Path, e: &csv::Error, start_line: u64) -> Error {
    if let csv::ErrorKind::Io(io) = e.kind()
        && io
            .get_ref()
            .is_some_and(|inner| inner.is::<RecordTooLong>())
    {
        return Error::Csv {
            path: path.to_owned(),
            line: Some(start_line),
            message: format!(
                "the record starting here is longer than {} MiB (a quote that is never closed, or a field that never ends)",
                MAX_RECORD >> 20
            ),
            fix: "Close the quote or end the line there; every contact must fit in 1 MiB.".into(),
        };
    }
    csv_error(path, e)
}

fn reader_builder(delimiter: u8) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    // Row length is checked here, so a ragged row becomes an invalid contact, not a fatal error.
    b.delimiter(delimiter).has_headers(false).flexible(true);
    b
}

/// Reads and validates the header row (line 1). The whole file is checked against its encoding
/// first (`charset::verify`): a file that is not what it is read as is refused here.
pub(crate) fn read_header(
    path: &Path,
    delimiter: u8,
    named: Named<'_>,
    encoding: Option<&'static Encoding>,
) -> Result<Header, Error> {
    let (email_column, name_column) = (named.email, named.name);
    charset::verify(path, encoding)?;
    let (mut reader, _budget) = bounded_reader(path, delimiter, encoding)?;
    let mut rec = csv::ByteRecord::new();
    let fatal = |message: String, fix: &str| Error::Csv {
        path: path.to_owned(),
        line: Some(1),
        message,
        fix: fix.to_owned(),
    };
    match reader.read_byte_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::Csv {
                path: path.to_owned(),
                line: None,
                message: "the file is empty: no header row".into(),
                fix: format!(
                    "Put a header row naming the columns on line 1, e.g. `{email_column},name`, then one contact per line."
                ),
            });
        }
        Err(e) => return Err(record_error(path, &e, 1)),
    }
    let mut columns = Vec::with_capacity(rec.len());
    // A set beside the list: a header can have many thousand columns, and a linear search per
    // column made reading one quadratic.
    let mut seen = std::collections::HashSet::with_capacity(rec.len());
    for (i, field) in rec.iter().enumerate() {
        let field = if i == 0 {
            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
        } else {
            field
        };
        let name = std::str::from_utf8(field).map_err(|e| {
            fatal(
                format!(
                    "column {} of the header is not valid UTF-8 (byte {})",
                    i + 1,
                    e.valid_up_to() + 1
                ),
                "Save the file as UTF-8.",
            )
        })?;
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(fatal(
                format!("column {} of the header has no name", i + 1),
                "Give every column a name in the header row.",
            ));
        }
        if !seen.insert(name.clone()) {
            return Err(fatal(
                format!("the header names the column `{name}` twice"),
                "Rename one of the two columns.",
            ));
        }
        columns.push(name);
    }
    let email = columns
        .iter()
        .position(|c| c == email_column)
        .ok_or_else(|| {
            fatal(
                format!(
                    "the header has no column `{email_column}` (columns: {})",
                    column_list(&columns)
                ),
                &no_email_column_fix(&columns, email_column, delimiter),
            )
        })?;
    let name = match name_column {
        Some(n) => Some(columns.iter().position(|c| c == n).ok_or_else(|| {
            fatal(
                format!(
                    "the header has no column `{n}`, which name_column names (columns: {})",
                    column_list(&columns)
                ),
                "Fix name_column in [contacts] of campaign.toml, or remove it.",
            )
        })?),
        None => columns.iter().position(|c| c == "name"),
    };
    for (column, key) in [
        (named.attachment, "attachment_column"),
        (named.timezone, "timezone_column"),
    ] {
        if let Some(a) = column
            && !columns.iter().any(|c| c == a)
        {
            return Err(fatal(
                format!(
                    "the header has no column `{a}`, which {key} names (columns: {})",
                    column_list(&columns)
                ),
                &format!("Fix {key} in [contacts] of campaign.toml, or remove it."),
            ));
        }
    }
    Ok(Header {
        encoding,
        crlf: first_line_ends_with_crlf(path, encoding)?,
        columns,
        email,
        name,
    })
}

/// The fix for a header without the address column: the likely delimiter when the header is
/// one column holding another separator, the likely column when one is named like an address
/// (Mailchimp's `Email Address`), else the general advice.
fn no_email_column_fix(columns: &[String], email_column: &str, delimiter: u8) -> String {
    // UTF-16 without a byte order mark reads as letters with NUL bytes between them.
    if columns.iter().any(|c| c.contains('\0')) {
        return "The header has NUL bytes between its letters: the file is probably UTF-16 \
                without a byte order mark. Set encoding = \"utf-16\" in [contacts] of \
                campaign.toml (\"utf-16be\" if the names still do not read), or re-save the \
                file as UTF-8 (\"CSV UTF-8\" in Excel)."
            .to_owned();
    }
    if let [only] = columns
        && let Some(sep) = [';', ',', '\t', '|']
            .into_iter()
            .filter(|c| u32::from(*c) != u32::from(delimiter))
            .find(|c| only.contains(*c))
    {
        let shown = if sep == '\t' {
            "\\t".to_owned()
        } else {
            sep.to_string()
        };
        return format!(
            "The header is one column, `{only}`: the file is probably separated by `{shown}`. Set delimiter = \"{shown}\" in [contacts] of campaign.toml."
        );
    }
    if let Some(c) = columns.iter().find(|c| {
        let l = c.to_lowercase();
        l.contains("email") || l.contains("e-mail") || l.contains("mail address")
    }) {
        return format!(
            "Set email_column = \"{c}\" in [contacts] of campaign.toml (column names may contain spaces), or rename the column to `{email_column}`."
        );
    }
    format!(
        "Rename the address column to `{email_column}`, or set email_column in [contacts] of campaign.toml to its name."
    )
}

fn first_line_ends_with_crlf(
    path: &Path,
    encoding: Option<&'static Encoding>,
) -> Result<bool, Error> {
    let mut head = Vec::with_capacity(8192);
    charset::open(path, encoding)?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(head
        .iter()
        .position(|b| *b == b'\n')
        .is_some_and(|i| i > 0 && head[i - 1] == b'\r'))
}

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    match e.kind() {
        csv::ErrorKind::Io(io) if charset::malformed(path, io).is_some() => {
            charset::malformed(path, io).unwrap_or_else(|| unreachable!())
        }
        csv::ErrorKind::Io(io) => Error::Read {
            path: path.to_owned(),
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => Error::Csv {
            path: path.to_owned(),
            line: e.position().map(csv::Position::line),
            message: e.to_string(),
            fix: "Fix the CSV at that line.".into(),
        },
    }
}

impl<'a> Contacts<'a> {
    pub(crate) fn open(path: &'a Path, delimiter: u8, header: &'a Header) -> Result<Self, Error> {
        let (mut reader, budget) = bounded_reader(path, delimiter, header.encoding)?;
        let mut record = csv::ByteRecord::new();
        // Skip the header, which `read_header` already validated.
        reader
            .read_byte_record(&mut record)
            .map_err(|e| record_error(path, &e, 1))?;
        Ok(Contacts {
            reader,
            budget,
            record,
            header,
            path,
            seen: HashMap::new(),
            done: false,
            delimiter,
        })
    }

    /// Column names, in file order.
    pub fn columns(&self) -> &[String] {
        &self.header.columns
    }

    fn verdict(&mut self, line: u64) -> Result<ContactEntry, Error> {
        let rec = &self.record;
        let raw_email = rec
            .get(self.header.email)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        // Only a refused row is looked at for rows its quoted field swallowed (a valid row
        // with a line break in a field is common and costs nothing here).
        let delimiter = self.delimiter;
        let invalid = |reason: String| ContactEntry::Invalid {
            line,
            email: raw_email.clone(),
            reason: format!("{reason}{}", swallowed_rows(rec, line, delimiter)),
        };
        if rec.len() != self.header.columns.len() {
            return Ok(invalid(format!(
                "line {line}: the row has {} fields but the header has {}",
                rec.len(),
                self.header.columns.len()
            )));
        }
        let mut fields = BTreeMap::new();
        for (i, (col, bytes)) in self.header.columns.iter().zip(rec.iter()).enumerate() {
            match std::str::from_utf8(bytes) {
                Ok(s) => {
                    fields.insert(col.clone(), s.to_owned());
                }
                Err(e) => {
                    // `charset::verify` checked the whole file at load: it changed since.
                    return Err(Error::Csv {
                        path: self.path.to_owned(),
                        line: Some(line),
                        message: format!(
                            "column `{col}` (field {}) is not valid UTF-8 at byte {} of the field: the file changed after it was checked",
                            i + 1,
                            e.valid_up_to() + 1
                        ),
                        fix: "Run the command again on the finished file.".into(),
                    });
                }
            }
        }
        let email = match address::normalize(&raw_email) {
            Ok(e) => e,
            Err(reason) => return Ok(invalid(format!("line {line}: invalid address: {reason}"))),
        };
        let name = match self.header.name {
            Some(i) => {
                let col = &self.header.columns[i];
                let n = fields.get(col).map_or("", |s| s.trim());
                if let Some(what) = address::control_char_problem(n) {
                    return Ok(invalid(format!(
                        "line {line}: the display name would contain {what} (from column `{col}`)"
                    )));
                }
                (!n.is_empty()).then(|| n.to_owned())
            }
            None => None,
        };
        let mut h = std::hash::DefaultHasher::new();
        // Addresses are ASCII after normalisation, so ASCII folding is complete.
        for b in email.bytes() {
            h.write_u8(b.to_ascii_lowercase());
        }
        let key = h.finish();
        if let Some(&first_line) = self.seen.get(&key) {
            return Ok(ContactEntry::Duplicate {
                line,
                first_line,
                email,
            });
        }
        self.seen.insert(key, line);
        Ok(ContactEntry::Valid(Contact {
            line,
            email,
            name,
            fields,
        }))
    }
}

impl Iterator for Contacts<'_> {
    type Item = Result<ContactEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.budget.arm();
        let start = self.reader.position().line() + u64::from(self.header.crlf);
        match self.reader.read_byte_record(&mut self.record) {
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line)
                    + u64::from(self.header.crlf);
                let verdict = self.verdict(line);
                self.done = verdict.is_err();
                Some(verdict)
            }
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(record_error(self.path, &e, start)))
            }
        }
    }
}

/// For a refused row: the rows its quoted field swallowed, as a note to append to its reason
/// (empty when there are none). A quote left open swallows the lines after it (up to the
/// file's end, or the next stray quote) into one field, and those contacts would vanish
/// without a word. It is told from a line break typed in a field (which the row checks refuse
/// on their own) by what follows the break: another row, with the separator in it.
fn swallowed_rows(rec: &csv::ByteRecord, line: u64, delimiter: u8) -> String {
    let rows_inside = |f: &[u8]| {
        f.split(|&b| b == b'\n')
            .skip(1)
            .any(|l| l.contains(&delimiter))
    };
    if !rec.iter().any(rows_inside) {
        return String::new();
    }
    let mut breaks: u64 = rec
        .iter()
        .map(|f| f.iter().filter(|&&b| b == b'\n').count() as u64)
        .sum();
    // A quote left open to the end of the file takes its last line break too.
    if rec.iter().next_back().is_some_and(|f| f.ends_with(b"\n")) {
        breaks -= 1;
    }
    let lines = match breaks {
        1 => format!("line {} was", line + 1),
        n => format!("lines {}-{} were", line + 1, line + n),
    };
    format!(
        "; a quoted field holds line breaks and more rows: if a closing `\"` is missing, \
         {lines} read into it and not imported either (close the quote)"
    )
}

/// Column names for a message: all of them up to a screenful, else the first ones and a count.
pub fn column_list(columns: &[String]) -> String {
    const SHOWN: usize = 30;
    let shown: Vec<&str> = columns.iter().take(SHOWN).map(String::as_str).collect();
    match columns.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{} and {more} more", shown.join(", ")),
        _ => shown.join(", "),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    const EMAIL: Named<'static> = Named {
        email: "email",
        name: None,
        attachment: None,
        timezone: None,
    };

    fn verdicts(csv: &[u8]) -> Vec<ContactEntry> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(csv).unwrap();
        let h = read_header(f.path(), b',', EMAIL, None).unwrap();
        Contacts::open(f.path(), b',', &h)
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Rows up to the bound are read; the record past it is an error at the line where it
    /// starts, and nothing beyond the bound (plus the read-ahead) was pulled into memory.
    #[test]
    fn a_record_past_the_bound_is_an_error_at_its_first_line() {
        for (crlf, tail) in [(false, &b"\n"[..]), (true, &b"\r\n"[..])] {
            let nl: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut csv = Vec::new();
            for part in [&b"email,note"[..], nl, b"a@example.com,short", nl] {
                csv.extend_from_slice(part);
            }
            // Line 3 opens a quote that is never closed: 3 MiB of one field, many lines.
            csv.extend_from_slice(b"b@example.com,\"");
            let chunk = [b'x'; 1000];
            for _ in 0..3 * 1024 {
                csv.extend_from_slice(&chunk);
                csv.extend_from_slice(tail);
            }
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&csv).unwrap();
            let h = read_header(f.path(), b',', EMAIL, None).unwrap();
            let mut rows = Contacts::open(f.path(), b',', &h).unwrap();
            assert!(matches!(rows.next(), Some(Ok(ContactEntry::Valid(_)))));
            match rows.next() {
                Some(Err(Error::Csv { line, message, .. })) => {
                    assert_eq!(line, Some(3), "crlf {crlf}: {message}");
                    assert!(message.contains("longer than 1 MiB"), "{message}");
                }
                other => panic!("crlf {crlf}: {other:?}"),
            }
            assert!(rows.next().is_none());
        }
        // A record just under the bound is a contact like any other.
        let mut csv = b"email,note\na@example.com,".to_vec();
        csv.extend(std::iter::repeat_n(b'y', (MAX_RECORD - 100) as usize));
        csv.push(b'\n');
        let v = verdicts(&csv);
        assert!(matches!(&v[..], [ContactEntry::Valid(_)]), "{}", v.len());
    }

    #[test]
    fn bom_quotes_and_embedded_newlines() {
        let v = verdicts(b"\xEF\xBB\xBFemail,name,note\na@example.com,\"Lee, Ann\",\"two\nlines\"\nb@example.com,Bo,x\n");
        let ContactEntry::Valid(a) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(a.line, 2);
        assert_eq!(a.name.as_deref(), Some("Lee, Ann"));
        assert_eq!(a.fields["note"], "two\nlines");
        let ContactEntry::Valid(b) = &v[1] else {
            panic!("{v:?}")
        };
        assert_eq!(b.line, 4, "a record's line is where it starts");
        assert_eq!(b.domain(), "example.com");
    }

    #[test]
    fn ragged_rows_and_duplicates_are_row_verdicts() {
        let v = verdicts(
            b"email,name\na@example.com,A\nb@example.com\nc@example.com,C\nA@EXAMPLE.com,again\n",
        );
        assert!(matches!(&v[0], ContactEntry::Valid(c) if c.line == 2));
        assert!(
            matches!(&v[1], ContactEntry::Invalid { line: 3, reason, .. } if reason.contains("1 fields but the header has 2"))
        );
        assert!(matches!(&v[2], ContactEntry::Valid(c) if c.line == 4));
        assert_eq!(
            v[3],
            ContactEntry::Duplicate {
                line: 5,
                first_line: 2,
                email: "a@example.com".into()
            }
        );
    }

    #[test]
    fn a_quote_left_open_names_the_rows_it_swallowed() {
        let reason = |v: &[ContactEntry]| match &v[0] {
            ContactEntry::Invalid {
                line: 2, reason, ..
            } => reason.clone(),
            other => panic!("{other:?}"),
        };
        // Open to the end of the file: bob and carl are inside Ann's name.
        let v = verdicts(
            b"email,name,city\nann@example.com,\"Ann,Oslo\nbob@example.com,Bob,X\ncarl@example.com,Carl,Y\n",
        );
        assert_eq!(v.len(), 1);
        let r = reason(&v);
        assert!(r.contains("2 fields but the header has 3"), "{r}");
        assert!(r.contains("lines 3-4 were read into it"), "{r}");
        // Closed by the next stray quote: one row swallowed, the row after it read again.
        let v = verdicts(
            b"email,name,city\nann@example.com,\"Ann,Oslo\nbob@example.com,Bob\",X\ndan@example.com,Dan,Z\n",
        );
        let r = reason(&v);
        assert!(r.contains("line 3 was read into it"), "{r}");
        assert!(matches!(&v[1], ContactEntry::Valid(c) if c.line == 4));
        // A line break typed in a field is not a swallowed row.
        let v = verdicts(b"email,name,city\nann@example.com,\"Ann\r\nBcc: x@example.org\",Oslo\n");
        let r = reason(&v);
        assert!(r.contains("line break"), "{r}");
        assert!(!r.contains("closing"), "{r}");
    }

    #[test]
    fn header_problems_are_fatal() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"mail,name\n").unwrap();
        let e = read_header(f.path(), b',', EMAIL, None).unwrap_err();
        assert!(e.to_string().contains("no column `email`"), "{e}");
        // UTF-16 (little-endian) without a byte order mark: the encoding is the fix.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let utf16: Vec<u8> = "email,name\na@example.com,A\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        f.write_all(&utf16).unwrap();
        let e = read_header(f.path(), b',', EMAIL, None).unwrap_err();
        assert!(e.to_string().contains("encoding = \"utf-16\""), "{e}");
        let empty = tempfile::NamedTempFile::new().unwrap();
        let e = read_header(empty.path(), b',', EMAIL, None).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn a_header_of_100000_columns_is_read_and_its_duplicate_found() {
        let mut names: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
        names.insert(0, "email".into());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{}", names.join(",")).unwrap();
        let header = read_header(f.path(), b',', EMAIL, None).unwrap();
        assert_eq!(header.columns.len(), 100_001);
        // A duplicate at the very end is still found (every column is compared, once).
        names.push("c7".into());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{}", names.join(",")).unwrap();
        let e = read_header(f.path(), b',', EMAIL, None).unwrap_err();
        assert!(e.to_string().contains("names the column `c7` twice"), "{e}");
        assert!(column_list(&names).ends_with("and 99972 more"));
    }
}
