//! Attachments: `[campaign] attachments` (every message) and `[contacts] attachment_column`
//! (per row, `;`-separated). It owns where a file may come from (relative to the campaign
//! folder and confined to it: no absolute path, no `..`, no symbolic link that leads outside),
//! the content type by extension, RFC 2231 file names (non-ASCII names, continuations that keep
//! every header line short), and the encoded MIME part: base64 in 76-column lines, built once
//! per file and shared by every message that carries it (`Arc`), so a 10 MB brochure sent to a
//! thousand people is read and encoded once.
//!
//! It must not decide how parts are nested (that is `message`) or read the contacts.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The largest attachment accepted: past it no relay takes the message anyway (Gmail's limit is
/// 25 MB), and it bounds what a wrong path can make mailroom hold in memory.
pub const MAX_ATTACHMENT: u64 = 50 << 20;

/// Encoded per-row attachments kept for reuse, at most this many bytes in all: beyond it a part
/// is encoded for its message and dropped with it.
const ROW_CACHE_BYTES: usize = 64 << 20;

/// One attachment file, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentFile {
    /// As written in campaign.toml or the contacts file.
    pub written: String,
    /// Canonical, inside the campaign folder.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Resolves `written` against the campaign folder `root`, refusing anything that could read a
/// file outside it. The reason, when refused, completes "attachment `x`: ...".
pub(crate) fn confine(root: &Path, written: &str) -> Result<AttachmentFile, String> {
    let rel = written.trim();
    if rel.is_empty() {
        return Err("the path is empty".into());
    }
    let p = Path::new(rel);
    let windows_drive = rel.len() >= 2 && rel.as_bytes()[1] == b':';
    if p.is_absolute() || rel.starts_with(['/', '\\']) || windows_drive {
        return Err("an absolute path is not allowed: name a file inside the campaign folder, relative to it".into());
    }
    if p.components().any(|c| matches!(c, Component::ParentDir))
        || rel.split(['/', '\\']).any(|s| s == "..")
    {
        return Err("`..` is not allowed: attachments stay inside the campaign folder".into());
    }
    let joined = root.join(p);
    let meta = match std::fs::metadata(&joined) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", joined.display()));
        }
        Err(e) => return Err(format!("{} cannot be read: {e}", joined.display())),
    };
    if meta.is_dir() {
        return Err(format!("{} is a folder, not a file", joined.display()));
    }
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", joined.display()));
    }
    let canonical = joined
        .canonicalize()
        .map_err(|e| format!("{} cannot be resolved: {e}", joined.display()))?;
    let root = root.canonicalize().map_err(|e| {
        format!(
            "the campaign folder {} cannot be resolved: {e}",
            root.display()
        )
    })?;
    if !canonical.starts_with(&root) {
        return Err(format!(
            "{} is a symbolic link to {}, outside the campaign folder",
            joined.display(),
            canonical.display()
        ));
    }
    if meta.len() > MAX_ATTACHMENT {
        return Err(format!(
            "{} is {} MB, more than the {} MB any relay accepts",
            joined.display(),
            meta.len() / 1_000_000,
            MAX_ATTACHMENT / 1_000_000
        ));
    }
    Ok(AttachmentFile {
        written: rel.to_owned(),
        path: canonical,
        bytes: meta.len(),
    })
}

/// The content type of a file by its extension; `application/octet-stream` when unknown.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "ics" => "text/calendar",
        "json" => "application/json",
        "xml" => "application/xml",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        "ods" => "application/vnd.oasis.opendocument.spreadsheet",
        "epub" => "application/epub+zip",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// `name="x"` for `param`, or RFC 2231 `param*0*=utf-8''...` continuations when the name is not
/// plain printable ASCII or is long. Each returned piece goes on its own folded line (at most
/// 78 columns), so no file name can make a header line too long.
fn parameter(param: &str, value: &str) -> Vec<String> {
    let plain = value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain && param.len() + value.len() + 4 <= 70 {
        return vec![format!("{param}=\"{value}\"")];
    }
    // attr-char (RFC 2231 §7): ALPHA / DIGIT / "!#$&+-.^_`|~"
    let mut encoded = Vec::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b).to_string());
        } else {
            encoded.push(format!("%{b:02X}"));
        }
    }
    let mut pieces = Vec::new();
    let mut current = String::from("utf-8''");
    for e in encoded {
        if current.len() + e.len() > 56 {
            pieces.push(std::mem::take(&mut current));
        }
        current.push_str(&e);
    }
    pieces.push(current);
    if pieces.len() == 1 {
        return vec![format!("{param}*={}", pieces[0])];
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, p)| format!("{param}*{i}*={p}"))
        .collect()
}

/// The complete MIME part of `file`: Content-Type with its name, Content-Disposition, base64
/// body in 76-column lines, and the CRLF that ends it (the caller writes the boundary lines).
///
/// # Errors
/// When the file cannot be read (it was checked when the campaign loaded or the row was read).
pub(crate) fn encode_part(file: &AttachmentFile) -> std::io::Result<Vec<u8>> {
    use base64::Engine as _;
    let name = file.path.file_name().map_or_else(
        || "attachment".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let opened = std::fs::File::open(&file.path)?;
    let Some(raw) = crate::bounded::read_to_end(opened, MAX_ATTACHMENT, file.bytes)? else {
        return Err(std::io::Error::other(format!(
            "{} grew past {} MB",
            file.path.display(),
            MAX_ATTACHMENT / 1_000_000
        )));
    };
    let mut head = String::with_capacity(256);
    head.push_str("Content-Type: ");
    head.push_str(content_type(&file.path));
    for p in parameter("name", &name) {
        head.push_str(";\r\n ");
        head.push_str(&p);
    }
    head.push_str("\r\nContent-Disposition: attachment");
    for p in parameter("filename", &name) {
        head.push_str(";\r\n ");
        head.push_str(&p);
    }
    head.push_str("\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let lines = raw.len().div_ceil(57);
    let mut out = Vec::with_capacity(head.len() + lines * 78 + 2);
    out.extend_from_slice(head.as_bytes());
    let mut line = String::with_capacity(76);
    for chunk in raw.chunks(57) {
        line.clear();
        base64::engine::general_purpose::STANDARD.encode_string(chunk, &mut line);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// Encoded parts of per-row attachments, shared across messages up to [`ROW_CACHE_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct RowParts {
    parts: Mutex<Cached>,
}

/// The cached parts by file, and their total size.
#[derive(Debug, Default)]
struct Cached {
    by_path: HashMap<PathBuf, Arc<[u8]>>,
    bytes: usize,
}

impl RowParts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The encoded part of `file`, from the cache or encoded now.
    pub(crate) fn get(&self, file: &AttachmentFile) -> std::io::Result<Arc<[u8]>> {
        if let Some(part) = self.lock().by_path.get(&file.path).cloned() {
            return Ok(part);
        }
        // Encoded outside the lock: other messages go on meanwhile.
        let part: Arc<[u8]> = encode_part(file)?.into();
        let mut cached = self.lock();
        if cached.bytes + part.len() <= ROW_CACHE_BYTES {
            cached.bytes += part.len();
            cached.by_path.insert(file.path.clone(), part.clone());
        }
        Ok(part)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_confined_to_the_campaign_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        std::fs::create_dir_all(root.join("files")).unwrap();
        std::fs::write(root.join("files/a.pdf"), b"%PDF").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"s").unwrap();
        let ok = confine(&root, " files/a.pdf ").unwrap();
        assert_eq!((ok.written.as_str(), ok.bytes), ("files/a.pdf", 4));
        for (bad, why) in [
            ("../secret.txt", "`..`"),
            ("files/../../secret.txt", "`..`"),
            ("/etc/passwd", "absolute"),
            ("C:\\x.pdf", "absolute"),
            ("files", "folder"),
            ("files/none.pdf", "does not exist"),
            ("", "empty"),
        ] {
            let e = confine(&root, bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("files/link.txt"))
                .unwrap();
            let e = confine(&root, "files/link.txt").unwrap_err();
            assert!(e.contains("outside the campaign folder"), "{e}");
            std::os::unix::fs::symlink(root.join("files/a.pdf"), root.join("inside.pdf")).unwrap();
            assert!(confine(&root, "inside.pdf").is_ok());
        }
    }

    #[test]
    fn file_names_use_rfc_2231_and_keep_lines_short() {
        assert_eq!(parameter("name", "a.pdf"), vec!["name=\"a.pdf\""]);
        assert_eq!(
            parameter("filename", "Prospekt für Zoë.pdf"),
            vec!["filename*=utf-8''Prospekt%20f%C3%BCr%20Zo%C3%AB.pdf"]
        );
        let long = parameter("filename", &"ü".repeat(40));
        assert!(long.len() > 1);
        assert!(long[0].starts_with("filename*0*=utf-8''%C3%BC"), "{long:?}");
        assert!(long[1].starts_with("filename*1*=%C3%BC"), "{long:?}");
        assert!(long.iter().all(|l| l.len() <= 76), "{long:?}");
    }

    #[test]
    fn a_part_decodes_to_the_file_and_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        std::fs::write(dir.path().join("Brochure été.pdf"), &bytes).unwrap();
        let file = confine(dir.path(), "Brochure été.pdf").unwrap();
        let part = encode_part(&file).unwrap();
        let message = [
            b"From: a@x.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n".as_slice(),
            &part,
            b"--b--\r\n",
        ]
        .concat();
        assert!(message.split(|b| *b == b'\n').all(|l| l.len() <= 78));
        let m = mail_parser::MessageParser::default()
            .parse(&message)
            .unwrap();
        let a = m.attachment(0).unwrap();
        use mail_parser::MimeHeaders as _;
        assert_eq!(a.attachment_name(), Some("Brochure été.pdf"));
        assert_eq!(a.contents(), bytes.as_slice());
        assert_eq!(a.content_type().unwrap().ctype(), "application");
    }
}
