//! Text that came from outside mailroom (SMTP replies, DSN diagnostics, mailbox names, contact
//! and suppression file values) made safe to show: every human-readable output (terminal lines,
//! text and Markdown reports, the dashboard, `bounces parse`, `check`) passes such text through
//! here, so a hostile relay or file cannot move the cursor, clear the screen, set the window
//! title, ring the bell or reorder what the reader sees.
//!
//! Escaped, as visible `\x1b` / `\u{202e}` forms: C0 controls (except newline and tab where
//! kept), DEL, C1 controls, and the Unicode format characters that change how text around them
//! is displayed (bidirectional overrides and isolates, line and paragraph separators). Nothing
//! else changes, so ordinary non-ASCII text stays readable.
//!
//! Machine-readable outputs (JSON, CSV) keep the original text: their encoders escape what their
//! formats need. This module must not do I/O.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

fn escape(c: char, out: &mut String) {
    let code = u32::from(c);
    if code < 0x100 {
        let _ = write!(out, "\\x{code:02x}");
    } else {
        let _ = write!(out, "\\u{{{code:x}}}");
    }
}

/// `text` with every unsafe character escaped; newlines and tabs are kept.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' && c != '\t' {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` on one line: runs of whitespace (newlines, tabs, CR) become one space and every other
/// unsafe character is escaped.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() && !matches!(c, '\u{2028}' | '\u{2029}') {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        if is_unsafe(c) {
            escape(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_bells_are_shown_not_played() {
        let hostile = "550 5.1.1 \x1b]0;pwned\x07\x1b[2J";
        assert_eq!(one_line(hostile), "550 5.1.1 \\x1b]0;pwned\\x07\\x1b[2J");
        assert_eq!(text(hostile), "550 5.1.1 \\x1b]0;pwned\\x07\\x1b[2J");
        // C1 controls (a one-byte CSI in some terminals) and DEL too.
        assert_eq!(one_line("a\u{9b}2Jb\u{7f}"), "a\\x9b2Jb\\x7f");
    }

    #[test]
    fn bidi_overrides_cannot_reorder_what_is_read() {
        assert_eq!(
            one_line("user\u{202e}moc.elpmaxe@"),
            "user\\u{202e}moc.elpmaxe@"
        );
        assert_eq!(one_line("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for ok in ["Grüße aus Köln", "日本語のテキスト", "plain ascii"] {
            assert_eq!(text(ok), ok);
            assert!(matches!(text(ok), Cow::Borrowed(_)));
            assert_eq!(one_line(ok), ok);
        }
    }

    #[test]
    fn one_line_joins_lines_and_text_keeps_them() {
        assert_eq!(one_line("  550 no\r\n  such\tuser \n"), "550 no such user");
        assert_eq!(text("a\nb\tc\rd"), "a\nb\tc\\x0dd");
    }
}
