//! The Content-Transfer-Encoding of one body part, written straight into the message buffer.
//! It reproduces byte for byte what lettre's `Body::new(String)` writes: the encoding that
//! email-encoding 0.4 chooses without SMTPUTF8, LF turned into CRLF, then quoted_printable
//! 0.5's encoder or email-encoding's 76-column base64. The tests compare both on generated
//! text. lettre's path copies the body three times and inserts every CR with a memmove; here
//! the CRLF conversion happens inside the single encoding pass. Every line written is at most
//! 76 octets, which is why the message's 998-octet check can skip the body. No I/O here.

use std::fmt;

/// Line length limit of quoted-printable and base64 (RFC 2045 §6.7, §6.8).
const LIMIT: usize = 76;

/// A body's Content-Transfer-Encoding (never 8bit or binary: no SMTPUTF8 assumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cte {
    SevenBit,
    QuotedPrintable,
    Base64,
}

impl fmt::Display for Cte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cte::SevenBit => "7bit",
            Cte::QuotedPrintable => "quoted-printable",
            Cte::Base64 => "base64",
        })
    }
}

/// The encoding lettre picks for `s` (email-encoding's `Encoding::choose(s, false)`): 7bit for
/// ASCII without long lines, else quoted-printable unless over a third of the bytes need
/// escaping, else base64. Measured on the text before CRLF conversion, as lettre does.
pub(crate) fn choose(s: &str) -> Cte {
    let b = s.as_bytes();
    if b.is_ascii() && !line_too_long(b) {
        return Cte::SevenBit;
    }
    let escaped = b
        .iter()
        .filter(|&&c| !matches!(c, b'\t' | b' '..=b'~'))
        .count();
    if escaped <= b.len() / 3 {
        Cte::QuotedPrintable
    } else {
        Cte::Base64
    }
}

/// email-encoding measures from one LF's index to the next, so the LF counts on every line
/// but the first; kept exactly, since it decides between 7bit and quoted-printable.
fn line_too_long(b: &[u8]) -> bool {
    let mut lines = b.split(|c| *c == b'\n');
    lines.next().is_some_and(|first| first.len() >= LIMIT) || lines.any(|l| l.len() + 1 >= LIMIT)
}

/// Appends `s` encoded with `cte`, with CRLF line ends (the CR is added before every LF that
/// lacks one). No CRLF after the last line.
pub(crate) fn push(out: &mut Vec<u8>, cte: Cte, s: &str) {
    match cte {
        Cte::SevenBit => push_crlf(out, s.as_bytes()),
        Cte::QuotedPrintable => QuotedPrintable::new(out).push(s.as_bytes()),
        Cte::Base64 => {
            let mut crlf = Vec::with_capacity(s.len() + s.len() / 16);
            push_crlf(&mut crlf, s.as_bytes());
            push_base64(out, &crlf);
        }
    }
}

fn push_crlf(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        if c == b'\n' && (i == 0 || s[i - 1] != b'\r') {
            out.extend_from_slice(&s[start..i]);
            out.push(b'\r');
            start = i;
        }
    }
    out.extend_from_slice(&s[start..]);
}

/// email-encoding's body base64: 57-byte chunks, one 76-char line each, CRLF between lines.
fn push_base64(out: &mut Vec<u8>, b: &[u8]) {
    use base64::Engine as _;
    let mut line = String::with_capacity(LIMIT);
    for (i, chunk) in b.chunks(LIMIT / 4 * 3).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        line.clear();
        base64::engine::general_purpose::STANDARD.encode_string(chunk, &mut line);
        out.extend_from_slice(line.as_bytes());
    }
}

/// quoted_printable 0.5's text-mode encoder (`encode`, 76 columns), ported to append to a
/// `Vec<u8>` and to treat a bare LF as CRLF. Its quirks are kept on purpose: they decide where
/// soft line breaks fall, and the output must not change.
struct QuotedPrintable<'a> {
    out: &'a mut Vec<u8>,
    /// Where this part starts in `out`: nothing before it belongs to the encoder.
    start: usize,
    on_line: usize,
    /// Position of the last piece appended, where a soft break goes if the line is full.
    backup: usize,
}

impl<'a> QuotedPrintable<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        QuotedPrintable {
            out,
            start,
            on_line: 0,
            backup: start,
        }
    }

    fn push(mut self, input: &[u8]) {
        let mut was_cr = false;
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            i += 1;
            if was_cr {
                was_cr = false;
                if byte == b'\n' {
                    self.line_break();
                    continue;
                }
                // A CR not followed by LF.
                self.append(b"=0D");
            }
            match byte {
                b'\r' => was_cr = true,
                // lettre inserts the CR before a bare LF ahead of encoding.
                b'\n' => self.line_break(),
                _ if self.on_line + 3 <= LIMIT && !needs_encoding(byte) => {
                    let max_run = LIMIT - self.on_line - 2;
                    let run_start = i - 1;
                    while i < input.len() && i - run_start < max_run && !needs_encoding(input[i]) {
                        i += 1;
                    }
                    self.out.extend_from_slice(&input[run_start..i]);
                    self.on_line += i - run_start;
                    self.backup = self.out.len();
                }
                b'=' => self.append(b"=3D"),
                b'\t' | b' '..=b'~' => self.append(&[byte]),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    self.append(&[
                        b'=',
                        HEX[usize::from(byte >> 4)],
                        HEX[usize::from(byte & 0x0F)],
                    ]);
                }
            }
        }
        if was_cr {
            self.append(b"=0D");
        } else {
            self.encode_trailing_space_tab();
        }
    }

    fn line_break(&mut self) {
        self.encode_trailing_space_tab();
        self.out.extend_from_slice(b"\r\n");
        self.on_line = 0;
    }

    fn append(&mut self, piece: &[u8]) {
        if self.on_line + piece.len() > LIMIT {
            if self.on_line == LIMIT {
                // The '=' would not fit: break before the last piece instead.
                self.on_line = self.out.len() - self.backup;
                self.out
                    .splice(self.backup..self.backup, *b"=\r\n")
                    .for_each(drop);
            } else {
                self.out.extend_from_slice(b"=\r\n");
                self.on_line = 0;
            }
        }
        self.out.extend_from_slice(piece);
        self.on_line += piece.len();
        self.backup = self.out.len() - piece.len();
    }

    /// A space or tab must not end an encoded line (RFC 2045 §6.7 rule 3).
    fn encode_trailing_space_tab(&mut self) {
        let last = if self.out.len() > self.start {
            self.out.last().copied()
        } else {
            None
        };
        let encoded: &[u8] = match last {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        self.on_line -= 1;
        self.out.pop();
        self.append(encoded);
    }
}

fn needs_encoding(c: u8) -> bool {
    !matches!(c, b'\t' | b' '..=b'<' | b'>'..=b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What lettre writes for `s`: (encoding, body).
    fn lettre(s: &str) -> (String, Vec<u8>) {
        let body = lettre::message::Body::new(s.to_owned());
        (body.encoding().to_string(), body.as_ref().to_vec())
    }

    fn ours(s: &str) -> (String, Vec<u8>) {
        let cte = choose(s);
        // Something before the part, as in a message: the encoder must not look at it.
        let mut out = b"x: y \r\n\r\n".to_vec();
        push(&mut out, cte, s);
        (cte.to_string(), out.split_off(9))
    }

    fn check(s: &str) {
        let (l, o) = (lettre(s), ours(s));
        assert!(
            l == o,
            "input {s:?}\nlettre {} {:?}\nours   {} {:?}",
            l.0,
            String::from_utf8_lossy(&l.1),
            o.0,
            String::from_utf8_lossy(&o.1)
        );
        for line in o.1.split(|b| *b == b'\n') {
            assert!(line.len() <= LIMIT + 1, "{s:?}: line of {}", line.len());
        }
    }

    #[test]
    fn same_bytes_as_lettre_on_edge_cases() {
        for s in [
            "",
            "\n",
            "\r",
            "\r\n",
            "\n\n\r\r\n\r",
            "Hello, world!",
            "trailing space \nand tab\t\r\nend ",
            "end\t",
            "a=b",
            "héllo wörld",
            "€€€€€€€€€€€€",
            "\0\u{7f}",
        ] {
            check(s);
        }
        for n in 70..=80 {
            for tail in [
                "", " ", "\t", "=", "é", "\r", "\n", "\r\n", " \n", "==", "x\u{7f}",
            ] {
                for head in ["", "\n", "a\n", "é"] {
                    check(&format!("{head}{}{tail}", "x".repeat(n)));
                    check(&format!("{head}{}{tail}x", " ".repeat(n)));
                    check(&format!("{head}{}{tail}", "=".repeat(n / 3)));
                    check(&format!("{head}{}{tail}{}", "y".repeat(n), "z".repeat(n)));
                }
            }
        }
    }

    #[test]
    fn same_bytes_as_lettre_on_generated_text() {
        const PIECES: &[&str] = &[
            "a", "b", "word ", " ", "  ", "\t", "\r", "\n", "\r\n", "\n\n", "=", "é", "€", "😀",
            "~", "\u{7f}", "\0", "x.y", "--", ".",
        ];
        // xorshift64: deterministic, no dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PLAIN: &[&str] = &["word ", "a", "b", "x.y", "Hello, ", "\n"];
        let mut seen = [0usize; 3];
        for _ in 0..4000 {
            let pieces = (next() % 400) as usize;
            // From all plain to all mixed, so every encoding and line shape appears; runs of
            // one piece make long lines.
            let plain = next() % 11;
            let favourite = PIECES[(next() % PIECES.len() as u64) as usize];
            let mut s = String::new();
            for _ in 0..pieces {
                let r = next();
                let piece = if r % 10 < plain {
                    PLAIN[((r >> 8) % PLAIN.len() as u64) as usize]
                } else if r % 3 == 0 {
                    favourite
                } else {
                    PIECES[((r >> 8) % PIECES.len() as u64) as usize]
                };
                s.push_str(piece);
            }
            check(&s);
            seen[choose(&s) as usize] += 1;
        }
        // Each encoding must have been compared many times.
        assert!(seen.iter().all(|n| *n > 200), "{seen:?}");
    }

    #[test]
    fn every_encoding_is_reached() {
        assert_eq!(choose("short\nlines\n"), Cte::SevenBit);
        assert_eq!(choose(&"x".repeat(76)), Cte::QuotedPrintable);
        assert_eq!(choose("ascii with one é"), Cte::QuotedPrintable);
        assert_eq!(choose("ééé"), Cte::Base64);
    }
}
