//! The character set of the contacts file (not to be confused with `encoding`, which owns the
//! Content-Transfer-Encoding of message parts). It owns `[contacts] encoding`: the WHATWG labels
//! encoding_rs knows ("windows-1252", "iso-8859-1", "utf-16", ...), a reader that turns such a
//! file into UTF-8 as it streams (flat memory), and the check `Campaign::load` makes of the whole
//! file before any row is used:
//!
//! - no `encoding` (UTF-8 expected): one byte that is not UTF-8 refuses the whole file, naming
//!   the byte, its offset and line, and the fix. A wrong byte says the file's encoding is wrong,
//!   not that one row is: reading the rest as UTF-8 would send garbled names (mojibake).
//! - a UTF-16 byte order mark is unambiguous and is honoured without any setting.
//! - `encoding` set to a one-byte encoding on a file that is valid UTF-8 with non-ASCII text is
//!   refused too: decoding UTF-8 as windows-1252 turns "é" into "Ã©".
//! - `encoding = "utf-16"` (or BE/LE) decodes strictly: a malformed sequence is an error with its
//!   offset, never a replacement character.
//!
//!
//! It also owns [`utf8_text`], the check of the other text files a user writes (templates,
//! campaign.toml, seed and suppression lists): UTF-8 only, a byte order mark dropped, a wrong
//! byte named by line and column with how to convert the file.
//!
//! No I/O beyond reading the contacts file; nothing here knows CSV.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use encoding_rs::{DecoderResult, Encoding, UTF_8, UTF_16BE, UTF_16LE};

use super::Error;

/// Bytes read from the file per refill, and decoded bytes handed out per decode call.
const CHUNK: usize = 64 * 1024;

/// The encoding `label` names (a WHATWG label, case-insensitive), `None` for UTF-8.
///
/// # Errors
/// The reason, when no encoding has that label (or it is the "replacement" encoding, which
/// decodes everything to U+FFFD).
pub(crate) fn resolve(label: &str) -> Result<Option<&'static Encoding>, String> {
    match Encoding::for_label_no_replacement(label.trim().as_bytes()) {
        Some(e) if e == UTF_8 => Ok(None),
        Some(e) => Ok(Some(e)),
        None => Err(format!("{label:?} is not an encoding mailroom knows")),
    }
}

/// The encoding the file will actually be read with: the one set, else UTF-16 when the file
/// starts with a UTF-16 byte order mark, else UTF-8 (`None`).
fn effective(
    path: &Path,
    declared: Option<&'static Encoding>,
) -> Result<Option<&'static Encoding>, Error> {
    if declared.is_some() {
        return Ok(declared);
    }
    let mut head = [0u8; 2];
    let n = read_up_to(&mut open_raw(path)?, &mut head).map_err(|e| read_error(path, e))?;
    Ok(match &head[..n] {
        [0xFF, 0xFE] => Some(UTF_16LE),
        [0xFE, 0xFF] => Some(UTF_16BE),
        _ => None,
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn open_raw(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(path).map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, source: io::Error) -> Error {
    Error::Read {
        path: path.to_owned(),
        source,
    }
}

/// The contacts file as UTF-8: the file itself when it is UTF-8, else a decoding reader.
pub(crate) fn open(
    path: &Path,
    declared: Option<&'static Encoding>,
) -> Result<Box<dyn Read + Send>, Error> {
    let file = open_raw(path)?;
    Ok(match effective(path, declared)? {
        None => Box::new(file),
        Some(encoding) => Box::new(DecodeReader::new(file, encoding)),
    })
}

/// Reads the whole file once and refuses it when its bytes are not what they will be read as
/// (see the module doc). Memory stays flat: 64 KiB at a time.
pub(crate) fn verify(path: &Path, declared: Option<&'static Encoding>) -> Result<(), Error> {
    match effective(path, declared)? {
        None => match scan_utf8(path)? {
            Utf8Scan::Invalid { byte, offset, line } => Err(not_utf8(path, byte, offset, line)),
            _ => Ok(()),
        },
        Some(e) if e == UTF_16LE || e == UTF_16BE => {
            let mut reader = DecodeReader::new(open_raw(path)?, e);
            io::copy(&mut reader, &mut io::sink())
                .map(drop)
                .map_err(|err| malformed_error(path, err))
        }
        Some(e) => match scan_utf8(path)? {
            Utf8Scan::NonAscii { line } => Err(Error::Csv {
                path: path.to_owned(),
                line: Some(line),
                message: format!(
                    "the file is UTF-8 (it is all valid UTF-8, with non-ASCII text from this line \
                     on), but [contacts] encoding = \"{}\": read that way, \"é\" would become \
                     \"Ã©\" in every message",
                    e.name().to_ascii_lowercase()
                ),
                fix: "Remove `encoding` from [contacts] in campaign.toml (UTF-8 is the default)."
                    .into(),
            }),
            _ => Ok(()),
        },
    }
}

/// What a UTF-8 scan of a file found.
enum Utf8Scan {
    /// Only ASCII.
    Ascii,
    /// Valid UTF-8 with non-ASCII text, first on `line`.
    NonAscii { line: u64 },
    /// `byte` at `offset` (0-based, from the start of the file) on `line` is not UTF-8.
    Invalid { byte: u8, offset: u64, line: u64 },
}

fn scan_utf8(path: &Path) -> Result<Utf8Scan, Error> {
    let mut file = open_raw(path)?;
    let mut buf = vec![0u8; CHUNK + 4];
    // Bytes of a character cut by the end of the previous chunk, moved to the front.
    let mut carry = 0usize;
    // File offset of buf[0].
    let mut base = 0u64;
    let mut line = 1u64;
    let mut non_ascii: Option<u64> = None;
    loop {
        let n = read_up_to(&mut file, &mut buf[carry..carry + CHUNK])
            .map_err(|e| read_error(path, e))?;
        let end = carry + n;
        let eof = n == 0;
        let chunk = &buf[..end];
        let (valid, bad) = match std::str::from_utf8(chunk) {
            Ok(_) => (end, None),
            // An incomplete character at the end of a chunk continues in the next one.
            Err(e) if e.error_len().is_none() && !eof => (e.valid_up_to(), None),
            Err(e) => (e.valid_up_to(), Some(e.valid_up_to())),
        };
        if non_ascii.is_none()
            && let Some(i) = chunk[..valid].iter().position(|b| !b.is_ascii())
        {
            non_ascii = Some(line + newlines(&chunk[..i]));
        }
        if let Some(at) = bad {
            return Ok(Utf8Scan::Invalid {
                byte: chunk[at],
                offset: base + at as u64,
                line: line + newlines(&chunk[..at]),
            });
        }
        line += newlines(&chunk[..valid]);
        if eof {
            return Ok(match non_ascii {
                Some(line) => Utf8Scan::NonAscii { line },
                None => Utf8Scan::Ascii,
            });
        }
        buf.copy_within(valid..end, 0);
        base += valid as u64;
        carry = end - valid;
    }
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// What `byte` is in windows-1252 (Excel's "CSV" on Windows, the usual encoding of a file that
/// is not UTF-8), when it is a printable character there: a hint at what the file holds.
fn in_windows_1252(byte: u8) -> Option<char> {
    let one = [byte];
    let (text, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(&one);
    text.chars().next().filter(|c| !c.is_control())
}

fn not_utf8(path: &Path, byte: u8, offset: u64, line: u64) -> Error {
    let hint = in_windows_1252(byte)
        .map_or_else(String::new, |c| format!(", where 0x{byte:02X} is \"{c}\""));
    Error::Csv {
        path: path.to_owned(),
        line: Some(line),
        message: format!(
            "the file is not UTF-8: byte 0x{byte:02X} at byte {} of the file is not part of any \
             UTF-8 character. One wrong byte means the whole file is in another encoding, so \
             none of it is used (mailroom never sends garbled names)",
            offset + 1
        ),
        fix: format!(
            "Set encoding = \"windows-1252\" in [contacts] of campaign.toml (what Excel on Windows \
             writes{hint}) or the file's real encoding (\"iso-8859-15\", \"utf-16\", ...), or \
             re-save the file as UTF-8 (\"CSV UTF-8\" in Excel)."
        ),
    }
}

/// A text file's bytes as text: UTF-8, without the byte order mark some Windows editors and
/// Excel's "CSV UTF-8" put first (it would otherwise reach a message as an invisible character,
/// or hide the `email` header of a list). Else why not, said after the file's name, with the
/// line and column of the first wrong byte and how to convert the file.
///
/// # Errors
/// The reason, when the bytes are not UTF-8.
pub fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, String> {
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    let e = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(e) => e,
    };
    let bytes = e.as_bytes();
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(
            "it is UTF-16 (it starts with a UTF-16 byte order mark), and mailroom reads \
                    this file as UTF-8: save it as UTF-8 (in Notepad: Save as, Encoding \
                    UTF-8)"
                .into(),
        );
    }
    let at = e.utf8_error().valid_up_to();
    let byte = bytes[at];
    let before = &bytes[..at];
    let line = newlines(before) + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Valid UTF-8 up to `at`, so the column counts characters.
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    let seen =
        in_windows_1252(byte).map_or_else(String::new, |c| format!(" (\"{c}\" in windows-1252)"));
    let name = path
        .file_name()
        .map_or_else(|| "FILE".to_owned(), |n| shell_word(&n.to_string_lossy()));
    Err(format!(
        "it is not UTF-8: byte 0x{byte:02X}{seen} on line {line}, column {column} is not part \
         of any UTF-8 character, so the file is in another encoding. Save it as UTF-8, or \
         convert it (with the file's real encoding if it is not windows-1252): \
         iconv -f windows-1252 -t utf-8 {name} > {name}.utf8 && mv {name}.utf8 {name}"
    ))
}

/// `name` as one word of a shell command, to paste: as it is when plain, else single-quoted;
/// control characters escaped (see [`crate::display`]).
fn shell_word(name: &str) -> String {
    let name = crate::display::text(name);
    // A leading `-` would be read as an option by the command it is pasted into.
    let name = if name.starts_with('-') {
        format!("./{name}").into()
    } else {
        name
    };
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+@%/".contains(c))
    {
        return name.into_owned();
    }
    format!("'{}'", name.replace('\'', "'\\''"))
}

/// A sequence the declared encoding cannot decode.
#[derive(Debug)]
pub(crate) struct Malformed {
    pub(crate) encoding: &'static str,
    /// 0-based offset in the file of the first byte of the sequence.
    pub(crate) offset: u64,
    pub(crate) line: u64,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the file is not valid {}: the bytes at byte {} of the file are not a character",
            self.encoding,
            self.offset + 1
        )
    }
}

impl std::error::Error for Malformed {}

/// The contacts error for an I/O error of a [`DecodeReader`], when it is a [`Malformed`].
pub(crate) fn malformed(path: &Path, e: &io::Error) -> Option<Error> {
    let m = e.get_ref()?.downcast_ref::<Malformed>()?;
    Some(Error::Csv {
        path: path.to_owned(),
        line: Some(m.line),
        message: m.to_string(),
        fix:
            "Set [contacts] encoding in campaign.toml to the file's real encoding, or re-save the \
              file as UTF-8."
                .into(),
    })
}

fn malformed_error(path: &Path, e: io::Error) -> Error {
    malformed(path, &e).unwrap_or_else(|| read_error(path, e))
}

/// Turns a file in `encoding` into UTF-8 as it is read. Strict: a malformed sequence is an
/// `InvalidData` error carrying a [`Malformed`], never a replacement character. A byte order
/// mark is removed (and a UTF-8 or UTF-16 one overrides the encoding, as browsers do).
pub(crate) struct DecodeReader<R> {
    inner: R,
    encoding: &'static Encoding,
    decoder: encoding_rs::Decoder,
    input: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    eof: bool,
    output: Box<[u8]>,
    out_start: usize,
    out_end: usize,
    /// Input bytes the decoder has consumed.
    consumed: u64,
    /// Line of the next decoded byte.
    line: u64,
    done: bool,
}

impl<R: Read> DecodeReader<R> {
    pub(crate) fn new(inner: R, encoding: &'static Encoding) -> Self {
        DecodeReader {
            inner,
            encoding,
            decoder: encoding.new_decoder(),
            input: vec![0; CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            eof: false,
            output: vec![0; CHUNK].into_boxed_slice(),
            out_start: 0,
            out_end: 0,
            consumed: 0,
            line: 1,
            done: false,
        }
    }
}

impl<R: Read> Read for DecodeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_start < self.out_end {
                let n = buf.len().min(self.out_end - self.out_start);
                buf[..n].copy_from_slice(&self.output[self.out_start..self.out_start + n]);
                self.out_start += n;
                return Ok(n);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            if self.in_start == self.in_end && !self.eof {
                let n = loop {
                    match self.inner.read(&mut self.input) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other?,
                    }
                };
                self.eof = n == 0;
                self.in_start = 0;
                self.in_end = n;
            }
            let (result, read, written) = self.decoder.decode_to_utf8_without_replacement(
                &self.input[self.in_start..self.in_end],
                &mut self.output,
                self.eof,
            );
            self.in_start += read;
            self.consumed += read as u64;
            self.out_start = 0;
            self.out_end = written;
            match result {
                DecoderResult::InputEmpty if self.eof => self.done = true,
                DecoderResult::InputEmpty | DecoderResult::OutputFull => {}
                DecoderResult::Malformed(bad, extra) => {
                    self.done = true;
                    let line = self.line + newlines(&self.output[..written]);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Malformed {
                            encoding: self.encoding.name(),
                            offset: self
                                .consumed
                                .saturating_sub(u64::from(bad) + u64::from(extra)),
                            line,
                        },
                    ));
                }
            }
            self.line += newlines(&self.output[..written]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn text_files_are_utf8_without_a_bom_or_refused_where_they_go_wrong() {
        let p = Path::new("dir/body.txt.hbs");
        assert_eq!(
            utf8_text(p, b"\xEF\xBB\xBFHi {{name}}".to_vec()).unwrap(),
            "Hi {{name}}"
        );
        assert_eq!(utf8_text(p, "Grüße\n".into()).unwrap(), "Grüße\n");
        let e = utf8_text(p, b"line one\nGr\xFC\xDFe {{name}}".to_vec()).unwrap_err();
        assert!(
            e.contains("byte 0xFC (\"ü\" in windows-1252) on line 2, column 3"),
            "{e}"
        );
        assert!(
            e.contains("iconv -f windows-1252 -t utf-8 body.txt.hbs > body.txt.hbs.utf8"),
            "{e}"
        );
        // The column counts characters, not bytes.
        let e = utf8_text(p, b"\xC3\xA9\xC3\xA9\x80".to_vec()).unwrap_err();
        assert!(
            e.contains("byte 0x80 (\"€\" in windows-1252) on line 1, column 3"),
            "{e}"
        );
        let e = utf8_text(p, b"\xFF\xFEH\0i\0".to_vec()).unwrap_err();
        assert!(e.contains("it is UTF-16"), "{e}");
        // A name a shell would split is quoted, control characters in it escaped.
        let e = utf8_text(Path::new("it's\x1b.txt"), vec![0xE9]).unwrap_err();
        assert!(e.contains("'it'\\''s\\x1b.txt'"), "{e}");
        let e = utf8_text(Path::new("-list.txt"), vec![0xE9]).unwrap_err();
        assert!(e.contains("utf-8 ./-list.txt > ./-list.txt.utf8"), "{e}");
    }

    fn decoded(bytes: &[u8], label: Option<&str>) -> Result<String, Error> {
        let f = file(bytes);
        let enc = label.map(|l| resolve(l).unwrap()).unwrap_or(None);
        verify(f.path(), enc)?;
        let mut s = String::new();
        open(f.path(), enc).unwrap().read_to_string(&mut s).unwrap();
        Ok(s)
    }

    #[test]
    fn labels_resolve_like_browsers() {
        assert_eq!(resolve("UTF-8").unwrap(), None);
        assert_eq!(
            resolve("windows-1252").unwrap(),
            Some(encoding_rs::WINDOWS_1252)
        );
        // WHATWG: ISO-8859-1 is read as its superset windows-1252.
        assert_eq!(
            resolve("iso-8859-1").unwrap(),
            Some(encoding_rs::WINDOWS_1252)
        );
        assert_eq!(resolve(" utf-16 ").unwrap(), Some(UTF_16LE));
        assert!(resolve("klingon").is_err());
        assert!(
            resolve("iso-2022-kr").is_err(),
            "the replacement encoding is refused"
        );
    }

    #[test]
    fn windows_1252_and_utf16_files_become_utf8() {
        assert_eq!(
            decoded(
                b"email,name\r\nz@x.example,Z\xfcrich \x80\r\n",
                Some("windows-1252")
            )
            .unwrap(),
            "email,name\r\nz@x.example,Zürich €\r\n"
        );
        let mut utf16: Vec<u8> = vec![0xFF, 0xFE];
        for u in "email,name\r\nz@x.example,Zoë 😀\r\n".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        // The BOM alone is enough, with or without the setting.
        for label in [None, Some("utf-16")] {
            assert_eq!(
                decoded(&utf16, label).unwrap(),
                "email,name\r\nz@x.example,Zoë 😀\r\n"
            );
        }
    }

    #[test]
    fn a_wrong_byte_refuses_the_whole_file_with_line_offset_and_fix() {
        let text = b"email,name\nann@x.example,Ann\nbea@x.example,B\xe9a\n";
        let e = decoded(text, None).unwrap_err();
        assert_eq!(e.line(), Some(3));
        let s = e.to_string();
        assert!(s.contains("byte 0xE9 at byte 45 of the file"), "{s}");
        assert!(s.contains("encoding = \"windows-1252\""), "{s}");
        assert!(s.contains("where 0xE9 is \"é\""), "{s}");
    }

    #[test]
    fn characters_cut_by_a_chunk_boundary_are_not_errors() {
        let mut text = b"email,name\n".to_vec();
        while text.len() < 3 * CHUNK {
            text.extend_from_slice("ann@x.example,Zoë 😀\n".as_bytes());
        }
        assert!(decoded(&text, None).is_ok());
        // The last byte of a file that ends inside a character is an error.
        text.push(0xC3);
        assert!(decoded(&text, None).is_err());
    }

    #[test]
    fn utf8_declared_as_windows_1252_is_refused_before_it_becomes_mojibake() {
        let e = decoded(
            "email,name\nz@x.example,Zoë\n".as_bytes(),
            Some("windows-1252"),
        )
        .unwrap_err();
        assert_eq!(e.line(), Some(2));
        assert!(e.to_string().contains("Ã©"), "{e}");
        // ASCII is the same in both: fine.
        assert!(decoded(b"email\nz@x.example\n", Some("windows-1252")).is_ok());
    }

    #[test]
    fn malformed_utf16_is_an_error_with_its_line_not_a_replacement_character() {
        let mut utf16: Vec<u8> = vec![0xFF, 0xFE];
        for u in "email\r\nz@x.example\r\n".encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        // A lone low surrogate.
        utf16.extend_from_slice(&0xDC00u16.to_le_bytes());
        let e = decoded(&utf16, Some("utf-16")).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.to_string().contains("not valid UTF-16LE"), "{e}");
    }
}
