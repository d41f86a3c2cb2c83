//! Where in campaign.toml a problem is: byte offsets to lines and columns, the table and key
//! at a position, the line where a key is assigned, and serde/toml errors turned into
//! [`Error`]s that name the line and the fix. It must not validate values (that is `config`).

use std::ops::Range;
use std::path::Path;

use super::super::Error;

/// Converts a byte offset in `text` to a 1-based (line, column) pair; the column counts chars.
pub(crate) fn line_col(text: &str, offset: usize) -> (u64, u64) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) as u64 + 1;
    (line, col)
}

/// The `[table]` header in force at `offset`, for messages like "unknown key in [smtp]".
pub(super) fn section_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    // An error inside a table's own header (`[smpt]`, an unknown table) is about a key of the
    // table above it: the top level for `[smpt]`, `[rate]` for `[rate.per_domian]`.
    let line = line_at(text, offset).trim();
    if let Some(name) = line
        .strip_prefix('[')
        .map(|l| l.trim_start_matches('[').trim_end_matches(']').trim())
    {
        return name
            .rsplit_once('.')
            .map(|(parent, _)| format!("[{}]", parent.trim()));
    }
    let before = text.get(..offset)?;
    before.lines().rev().find_map(|l| {
        // A header may carry a comment: `[smtp]  # the relay`.
        let t = header(l);
        (t.starts_with('[') && t.ends_with(']')).then(|| t.to_owned())
    })
}

/// The whole line of `text` that holds byte `offset`.
pub(super) fn line_at(text: &str, offset: usize) -> &str {
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    &text[start..end]
}

/// The key assigned on the line holding `offset` (`port = "587"` → `port`), if any.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let (key, _) = line_at(text, offset.min(text.len())).split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// The table a required key belongs to (serde's "missing field" error points at the top).
pub(super) fn section_of_required(key: &str) -> Option<&'static str> {
    match key {
        "name" | "from" | "subject" => Some("[campaign]"),
        "path" => Some("[contacts]"),
        "url" => Some("[unsubscribe]"),
        "domain" | "selector" | "private_key_file" => Some("[dkim]"),
        _ => None,
    }
}

/// The 1-based line where `key` is assigned inside `[section]` (dotted sections included).
/// Used to point validation errors, which serde cannot locate, at the offending line.
pub(crate) fn key_line(text: &str, section: &str, key: &str) -> Option<u64> {
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            current = header(l)
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        if current == section && k == key {
            return Some(i as u64 + 1);
        }
    }
    None
}

/// A toml/serde error as an [`Error`] naming the line, the table and the fix.
pub(super) fn toml_error(e: &toml::de::Error, text: &str, path: &Path) -> Error {
    let span: Option<Range<usize>> = e.span();
    let (line, column) = span.as_ref().map_or((None, None), |s| {
        let (l, c) = line_col(text, s.start);
        (Some(l), Some(c))
    });
    let mut message = e.message().trim().to_owned();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
        .and_then(section_of_required);
    let section = missing
        .map(str::to_owned)
        .or_else(|| span.as_ref().and_then(|s| section_at(text, s.start)))
        .unwrap_or_else(|| "the top level".to_owned());
    // A value of the wrong type: say which key, not only where.
    let wrong_value = message.starts_with("invalid type") || message.starts_with("invalid value");
    if wrong_value && let Some(key) = span.as_ref().and_then(|s| key_at(text, s.start)) {
        message = format!("`{key}`: {message}");
    }
    if message.starts_with("duplicate key")
        && let Some((what, first)) = span.as_ref().and_then(|s| first_definition(text, s.start))
    {
        return Error::Toml {
            path: path.to_owned(),
            line,
            column,
            message: format!("{what} is written twice: here and at line {first}"),
            fix: if what.starts_with("the table") {
                format!(
                    "A table is written once: move the keys under this header into the table \
                     at line {first}, then delete this header."
                )
            } else {
                format!("Keep one of the two: delete this line or the one at line {first}.")
            },
        };
    }
    let fix = if message.starts_with("unknown field `password`") {
        return Error::Config {
            path: path.to_owned(),
            line,
            key: "smtp.password".into(),
            message: "a password in campaign.toml is not allowed".into(),
            fix: "Passwords must come from the environment or a file: set password_env = \"MAILROOM_SMTP_PASSWORD\" and export that variable, or password_file = \"/path/to/secret\".".into(),
        };
    } else if message.starts_with("unknown field") {
        format!(
            "Remove or rename this key in {section}; every valid key is listed in docs/campaign-toml.md."
        )
    } else if message.starts_with("missing field") {
        format!("Add the missing key to {section} (see docs/campaign-toml.md).")
    } else if wrong_value
        || message.contains(": invalid type")
        || message.contains(": invalid value")
    {
        // The syntax is fine there; the value is not what the key takes.
        "Give this key a value of the kind it takes (named above; every key and its values are \
         in docs/campaign-toml.md)."
            .to_owned()
    } else {
        "Fix the TOML syntax at that position (see docs/campaign-toml.md).".to_owned()
    };
    Error::Toml {
        path: path.to_owned(),
        line,
        column,
        message: format!("{message} (in {section})"),
        fix,
    }
}

/// For a duplicate key at `offset`: what is written twice (a `[table]`, or a key of a table)
/// and the 1-based line of its first definition, found by reading the text before it.
fn first_definition(text: &str, offset: usize) -> Option<(String, u64)> {
    let offset = offset.min(text.len());
    let here = line_col(text, offset).0;
    let line = header(line_at(text, offset));
    if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        if name.starts_with('[') {
            return None;
        }
        let name = name.trim();
        let first = text
            .lines()
            .take(usize::try_from(here).ok()?.saturating_sub(1))
            .position(|l| {
                header(l) == format!("[{name}]") || {
                    let t = header(l);
                    t.strip_prefix('[')
                        .and_then(|t| t.strip_suffix(']'))
                        .is_some_and(|t| t.trim() == name)
                }
            })?;
        return Some((format!("the table [{name}]"), first as u64 + 1));
    }
    let key = key_at(text, offset)?;
    let section = section_at(text, offset).unwrap_or_default();
    // In an array of tables (`[[relay]]`) each entry has its own keys: the first `host` of
    // the file may be another relay's.
    if section.starts_with("[[") {
        return None;
    }
    let section = section.trim_matches(|c| c == '[' || c == ']');
    let first = key_line(text, section, &key).filter(|&l| l < here)?;
    let table = if section.is_empty() {
        "the top level".to_owned()
    } else {
        format!("[{section}]")
    };
    Some((format!("the key `{key}` of {table}"), first))
}

/// The 1-based line of the `[name]` table header (or the first `[name.sub]` one), if any.
pub(super) fn table_line(text: &str, name: &str) -> Option<u64> {
    text.lines().enumerate().find_map(|(i, l)| {
        let t = header(l);
        let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
        (!inner.starts_with('[')
            && (inner == name || inner.split('.').next().map(str::trim) == Some(name)))
        .then_some(i as u64 + 1)
    })
}

/// The 1-based line of the `index`-th (from 0) `[[relay]]` header.
pub(super) fn relay_line(text: &str, index: usize) -> Option<u64> {
    relay_headers(text).nth(index)
}

/// The 1-based line where `key` is assigned in the `index`-th `[[relay]]` table.
pub(super) fn relay_key_line(text: &str, index: usize, key: &str) -> Option<u64> {
    let start = usize::try_from(relay_line(text, index)?).ok()?;
    text.lines()
        .enumerate()
        .skip(start)
        .take_while(|(_, l)| !l.trim().starts_with('['))
        .find_map(|(i, l)| {
            let (k, _) = l.trim().split_once('=')?;
            (k.trim().trim_matches('"') == key).then_some(i as u64 + 1)
        })
}

fn relay_headers(text: &str) -> impl Iterator<Item = u64> + '_ {
    text.lines().enumerate().filter_map(|(i, l)| {
        let t = header(l);
        let inner = t.strip_prefix("[[")?.strip_suffix("]]")?;
        (inner.trim() == "relay").then_some(i as u64 + 1)
    })
}

/// A line without its comment, trimmed: a table header as written (`[smtp]  # the relay`).
fn header(line: &str) -> &str {
    line.split('#').next().unwrap_or(line).trim()
}
