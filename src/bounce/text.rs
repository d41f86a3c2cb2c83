//! Scanners over bounce text: e-mail addresses, RFC 3463 status codes, SMTP reply codes, and the
//! per-recipient segments of a non-standard bounce. Pure functions over `&str`; no regex engine
//! (the shapes are simple and this runs on every message of a mailbox).

use std::collections::{HashMap, HashSet};

/// Local parts the parser never reports as a failed recipient when anyone else is named: they
/// are the daemons and role accounts that bounce texts mention in passing.
const ROLE_LOCAL_PARTS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "abuse",
    "noreply",
    "no-reply",
];

/// Lines whose addresses are message identifiers or trace data, not recipients.
const SKIP_LINE_PREFIXES: &[&str] = &[
    "message-id:",
    "in-reply-to:",
    "references:",
    "x-message-id:",
    "received:",
    "from:",
    "reply-to:",
    "return-path:",
    "sender:",
    "mail from:",
    ">>> mail from",
    // MailMarshal's "Additional Information" block names the sender, not a recipient.
    "original sender:",
];

/// Words right before an address that name it as the address a recipient was expanded from,
/// or as the help desk to write to.
const ALIAS_MARKERS: &[&str] = &[
    "expanded from",
    "generated from",
    "contact",
    "contact us at",
];

/// Lines that quote the original's recipient headers: weaker evidence than a line that names
/// the failed recipient.
const WEAK_LINE_PREFIXES: &[&str] = &["to:", "cc:"];

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

/// Every address-shaped token `local@domain.tld` with its byte offset, in order.
pub(crate) fn addresses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut search_from = 0;
    while let Some(rel) = text[search_from..].find('@') {
        let at = search_from + rel;
        search_from = at + 1;
        let mut start = at;
        while start > 0 {
            let c = bytes[start - 1] as char;
            if bytes[start - 1].is_ascii() && is_local_char(c) {
                start -= 1;
            } else {
                break;
            }
        }
        let mut end = at + 1;
        while end < bytes.len() && bytes[end].is_ascii() && is_domain_char(bytes[end] as char) {
            end += 1;
        }
        // RFC 5321 §4.1.2: a local part may be a quoted string ("a..b"@example.org).
        if let Some(open) = quoted_local_start(text, at) {
            let domain = text[at + 1..end].trim_end_matches(['.', '-']);
            if domain.contains('.') && (3..=255).contains(&domain.len()) {
                out.push((open, format!("{}@{domain}", &text[open..at])));
            }
            continue;
        }
        let local = text[start..at].trim_start_matches(['.', '=', '\'', '`', '/', '|']);
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        // RFC 5321 §4.5.3.1: a local part of 64 octets, a domain of 255 at most.
        if local.is_empty()
            || local.len() > 64
            || domain.len() < 3
            || domain.len() > 255
            || !domain.contains('.')
        {
            continue;
        }
        // mailto:user@x and rfc822;user@x glue a scheme to the address.
        let local = local.rsplit([':', ';']).next().unwrap_or(local);
        // Exchange 2003 writes X.400-style `cat:SMTP=user@example.org`.
        let local = match local.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("smtp=") => &local[5..],
            _ => local,
        };
        if local.is_empty() || domain.split('.').any(str::is_empty) {
            continue;
        }
        let tld = domain.rsplit('.').next().unwrap_or("");
        if !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        out.push((start, format!("{local}@{domain}")));
    }
    out
}

/// The offset of the opening quote when the local part ending at `at` is a quoted string: a `"`
/// right before the `@`, its partner on the same line within 64 bytes, nothing in between that
/// would end an address, and no address character glued before the opening quote.
fn quoted_local_start(text: &str, at: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    if at < 2 || bytes[at - 1] != b'"' {
        return None;
    }
    let from = at.saturating_sub(66);
    let inner = &bytes[from..at - 1];
    let open = from + inner.iter().rposition(|&b| b == b'"')?;
    let quoted = &bytes[open + 1..at - 1];
    let clean = !quoted.is_empty()
        && quoted
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'\\' | b'@'));
    let bounded =
        open == 0 || !(bytes[open - 1].is_ascii_alphanumeric() || bytes[open - 1] == b'.');
    (clean && bounded).then_some(open)
}

pub(crate) fn first_address(text: &str) -> Option<String> {
    addresses(text).into_iter().next().map(|(_, a)| a)
}

fn is_role(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("").to_ascii_lowercase();
    ROLE_LOCAL_PARTS.contains(&local.as_str())
}

/// Splits a bounce text into per-recipient segments: each distinct address (minus `excluded`
/// and lines that carry identifiers) owns the text from the line of its first mention to the
/// line where the next recipient is first mentioned. At most `limit` segments, in text order.
///
/// Linear in the text: one pass over the addresses with a map from address to its entry.
pub(crate) fn segments(text: &str, excluded: &[String], limit: usize) -> Vec<(String, String)> {
    let mut line_starts = vec![0];
    line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    let line_of = |offset: usize| line_starts.partition_point(|&s| s <= offset) - 1;
    let excluded: HashSet<String> = excluded.iter().map(|e| e.to_ascii_lowercase()).collect();
    // Addresses named as an alias or a help desk anywhere are not recipients, anywhere; an
    // alias is kept (line start, address) for a text that names no other address.
    let mut annotations: HashSet<String> = HashSet::new();
    let mut aliases: Vec<(usize, String, bool)> = Vec::new();
    // (line start, address, named only on a quoted `To:`/`Cc:` line so far)
    let mut found: Vec<(usize, String, bool)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (offset, addr) in addresses(text) {
        let line_no = line_of(offset);
        let line_start = line_starts[line_no];
        // A reply quoting the original ("> Message-Id: <...>") quotes its identifiers too.
        let line = text[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches(|c: char| c == '>' || c.is_whitespace());
        let lower = line.get(..32).unwrap_or(line).to_ascii_lowercase();
        if SKIP_LINE_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            continue;
        }
        let key = addr.to_ascii_lowercase();
        // "(expanded from <alias>)" (Postfix, Sendmail), "(generated from alias)" (Exim): the
        // address before aliasing annotates the recipient named before it; it did not fail.
        // Neither did the help desk in "please contact <support@...>".
        let before = text[line_start..offset].trim_end_matches([' ', '<', ':', '"']);
        let before = suffix(before, 16).to_ascii_lowercase();
        if let Some(marker) = ALIAS_MARKERS.iter().find(|m| before.ends_with(*m)) {
            if marker.ends_with(" from") && annotations.len() < limit {
                aliases.push((line_start, addr, false));
            }
            annotations.insert(key);
            continue;
        }
        if excluded.contains(&key) {
            continue;
        }
        let weak = WEAK_LINE_PREFIXES.iter().any(|p| lower.starts_with(p));
        match index.get(&key) {
            Some(&i) => {
                if found[i].2 && !weak {
                    found[i] = (line_start, addr, false);
                }
            }
            None => {
                index.insert(key, found.len());
                found.push((line_start, addr, weak));
            }
        }
    }
    found.retain(|(_, a, _)| !annotations.contains(&a.to_ascii_lowercase()));
    // Exim writes "an undisclosed address (generated from a@example.org)": with no other
    // address named, the one it was generated from is what failed.
    if found.is_empty() {
        let mut seen = HashSet::new();
        aliases.retain(|(_, a, _)| seen.insert(a.to_ascii_lowercase()));
        found = aliases;
    }
    found.sort_by_key(|(start, _, _)| *start);
    // A summary of the original's headers ("To: x" under "Your message") names the address
    // the sender wrote; the text that names the failed recipient elsewhere wins over it.
    if found.iter().any(|(_, a, weak)| !weak && !is_role(a)) {
        found.retain(|(_, _, weak)| !weak);
    }
    let mut found: Vec<(usize, String)> = found.into_iter().map(|(s, a, _)| (s, a)).collect();
    if found.iter().any(|(_, a)| !is_role(a)) {
        found.retain(|(_, a)| !is_role(a));
    }
    // Each segment ends where the next later line starts: one pass from the end.
    let mut ends = vec![text.len(); found.len()];
    let mut next_start = text.len();
    for i in (0..found.len()).rev() {
        ends[i] = next_start;
        if i > 0 && found[i - 1].0 < found[i].0 {
            next_start = found[i].0;
        }
    }
    found
        .into_iter()
        .zip(ends)
        .take(limit)
        .map(|((start, addr), end)| (addr, text[start..end].to_owned()))
        .collect()
}

/// The first `max` bytes of `s` at most, cut on a character boundary.
pub(crate) fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last `max` bytes of `s` at most, cut on a character boundary.
pub(crate) fn suffix(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Collapses runs of whitespace into one space.
pub(crate) fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `X.0.0`: the class and nothing more.
pub(crate) fn is_generic_status(status: &str) -> bool {
    status.ends_with(".0.0")
}

/// Every RFC 3463 code `[245].d{1,3}.d{1,3}` standing on its own (not inside an IP address or a
/// version number), in order.
pub(crate) fn statuses(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // "mta-5.5.0" is a version; "550-5.1.1" is a multi-line reply.
        let versioned = i >= 2 && b[i - 1] == b'-' && b[i - 2].is_ascii_alphabetic();
        if matches!(b[i], b'2' | b'4' | b'5')
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.'))
            && !versioned
        {
            let mut j = i + 1;
            let mut parts = 0;
            let mut ok = true;
            while parts < 2 {
                if j < b.len() && b[j] == b'.' {
                    let digits = b[j + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    if digits == 0 || digits > 3 {
                        ok = false;
                        break;
                    }
                    j += 1 + digits;
                    parts += 1;
                } else {
                    ok = false;
                    break;
                }
            }
            let bounded = j >= b.len()
                || !(b[j].is_ascii_alphanumeric()
                    || (matches!(b[j], b'.' | b'-')
                        && b.get(j + 1).is_some_and(u8::is_ascii_digit)));
            if ok && bounded {
                out.push(text[i..j].to_owned());
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The first status code of a diagnostic.
pub(crate) fn find_status(text: &str) -> Option<String> {
    statuses(text).into_iter().next()
}

/// In free text, prefer a specific failure code over `X.0.0` and over success codes that
/// transcripts quote (`250 2.1.0 Sender ok`); of several, the last, which is the innermost
/// cause (`554 4.4.7 Message expired ... <421 4.4.2 Connection timed out>`).
pub(crate) fn find_status_in_text(text: &str) -> Option<String> {
    let all = statuses(text);
    let failures: Vec<&String> = all.iter().filter(|s| !s.starts_with('2')).collect();
    failures
        .iter()
        .rev()
        .find(|s| !is_generic_status(s))
        .or(failures.first())
        .map(|s| (*s).clone())
}

/// The first SMTP reply code (4xx/5xx preferred over 2xx) standing on its own.
pub(crate) fn find_reply_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    let mut success = None;
    for i in 0..b.len().saturating_sub(2) {
        if !matches!(b[i], b'2' | b'4' | b'5')
            || !b[i + 1].is_ascii_digit()
            || !b[i + 2].is_ascii_digit()
        {
            continue;
        }
        let before_ok = i == 0
            || matches!(
                b[i - 1],
                b' ' | b'\t' | b'\n' | b'(' | b'[' | b':' | b';' | b'<' | b'"' | b'#' | b'='
            );
        let after_ok = b
            .get(i + 3)
            .is_none_or(|c| matches!(c, b' ' | b'-' | b')' | b'\r' | b'\n' | b']' | b','));
        if !before_ok || !after_ok {
            continue;
        }
        let code = u16::from(b[i] - b'0') * 100
            + u16::from(b[i + 1] - b'0') * 10
            + u16::from(b[i + 2] - b'0');
        if !(200..=599).contains(&code) || (b[i + 1] - b'0') > 5 {
            continue;
        }
        if code >= 400 {
            return Some(code);
        }
        success.get_or_insert(code);
    }
    success
}

/// A readable one-line diagnostic from a text segment: the first line that carries a reply or
/// status code with the indented lines that continue it (Exim and Postfix fold a long reply
/// onto indented lines), else the segment squeezed; capped so that JSON lines stay short.
pub(crate) fn diagnostic_line(segment: &str) -> String {
    let carries_code = |l: &str| {
        let l = l.trim();
        l.len() > 8
            && (find_status_in_text(l).is_some() || find_reply_code(l).is_some_and(|c| c >= 400))
    };
    let mut lines = segment.lines().skip_while(|l| !carries_code(l));
    let line = match lines.next() {
        Some(first) => {
            let mut joined = first.to_owned();
            for more in lines
                .take_while(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
                .take(8)
            {
                joined.push(' ');
                joined.push_str(more);
            }
            squeeze(&joined)
        }
        None => squeeze(segment),
    };
    cap(line, 500)
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn cap(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_brackets_mailto_and_prose() {
        let t = "to <a.b@example.org>: x mailto:c@ex-ample.net, rfc822;d@e.example. and 1.2@3.4 \
                 p=neko;cat:SMTP=e@example.com; on Fri";
        let found: Vec<String> = addresses(t).into_iter().map(|(_, a)| a).collect();
        assert_eq!(
            found,
            [
                "a.b@example.org",
                "c@ex-ample.net",
                "d@e.example",
                "e@example.com"
            ]
        );
        let quoted: Vec<String> = addresses("550 5.1.1 <\"neko....nyaan\"@example.org>... unknown")
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(quoted, ["\"neko....nyaan\"@example.org"]);
        // A display name in quotes is not a local part.
        let named: Vec<String> = addresses("\"Neko\" <neko@example.org>")
            .into_iter()
            .map(|(_, a)| a)
            .collect();
        assert_eq!(named, ["neko@example.org"]);
    }

    #[test]
    fn status_codes_are_not_taken_from_ip_addresses_or_versions() {
        assert_eq!(
            find_status("host 192.5.1.1 said 550 5.1.1 no"),
            Some("5.1.1".into())
        );
        assert_eq!(find_status("mxl_mta-5.5.0-3"), None);
        assert_eq!(find_status("(#4.4.1)"), Some("4.4.1".into()));
        assert_eq!(find_status("5.7.606 blocked"), Some("5.7.606".into()));
        assert_eq!(
            find_status_in_text("250 2.1.0 ok\n554 5.0.0 failed\n550 5.2.2 full"),
            Some("5.2.2".into())
        );
    }

    #[test]
    fn reply_codes_prefer_failures() {
        assert_eq!(
            find_reply_code("<<< 250 ok\n<<< 550 no such user"),
            Some(550)
        );
        assert_eq!(find_reply_code("id 1550 and 5500"), None);
        assert_eq!(find_reply_code("smtp;550-5.1.1 x"), Some(550));
    }

    #[test]
    fn quoted_to_lines_yield_to_the_line_naming_the_failed_recipient() {
        let t = "Your message\n  To:      sent@example.net\n\ndid not reach:\n\n\
                 failed@example.jp on Thu, 29 Apr 2010\n    unknown recipient\n";
        let s = segments(t, &[], usize::MAX);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "failed@example.jp");
        // With nothing better, the quoted To: is still the recipient.
        let s = segments(
            "Your message\n  To: only@example.net\nwas not delivered\n",
            &[],
            usize::MAX,
        );
        assert_eq!(s[0].0, "only@example.net");
    }

    #[test]
    fn segments_keep_each_address_once_and_at_most_the_limit() {
        // 20,000 mentions of 2,000 addresses: one segment per address, in text order, capped.
        let mut t = String::new();
        for i in 0..20_000 {
            t.push_str(&format!(
                "<user{}@example.org>: 550 no such user\n",
                i % 2_000
            ));
        }
        let all = segments(&t, &[], usize::MAX);
        assert_eq!(all.len(), 2_000);
        assert_eq!(all[0].0, "user0@example.org");
        assert_eq!(all[1_999].0, "user1999@example.org");
        // Each owns its first line up to the next address's first line.
        assert_eq!(all[0].1, "<user0@example.org>: 550 no such user\n");
        let capped = segments(&t, &[], 100);
        assert_eq!(capped.len(), 100);
        assert_eq!(capped[99].0, "user99@example.org");
    }

    #[test]
    fn segments_split_per_recipient_and_skip_excluded_and_roles() {
        let t = "From: sender@example.com\n<a@example.org>:\nno such user\n\
                 contact postmaster@example.org\n<b@example.org>:\nmailbox full\n";
        let s = segments(t, &["sender@example.com".to_owned()], usize::MAX);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "a@example.org");
        assert!(s[0].1.contains("no such user") && !s[0].1.contains("mailbox full"));
        assert_eq!(s[1].0, "b@example.org");
        let t = "  a@example.org\n    (generated from alias@example.com)\n    550 no\n\
                 <b@example.org> (expanded from <list@example.com>): user unknown\n";
        let found: Vec<String> = segments(t, &[], usize::MAX)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(found, ["a@example.org", "b@example.org"]);
        let t = "  an undisclosed address\n    (generated from g@example.org)\n    550 no\n";
        let found: Vec<String> = segments(t, &[], usize::MAX)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        assert_eq!(
            found,
            ["g@example.org"],
            "with nobody else named, the alias failed"
        );
    }
}
