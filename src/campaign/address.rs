//! Address parsing and normalisation for contacts and configured senders: a strict
//! `local@domain` (dot-atom local part and domain lower-cased, IDN → punycode) and
//! the control-character rule that keeps header values single-line. Pure functions, no I/O.

/// Why a header value is unsafe, phrased to complete "the subject would contain …".
pub(crate) fn control_char_problem(value: &str) -> Option<&'static str> {
    for c in value.chars() {
        match c {
            '\r' | '\n' => return Some("a line break"),
            '\t' => {}
            c if c.is_control() => return Some("a control character"),
            '\u{2028}' | '\u{2029}' => return Some("a Unicode line separator"),
            _ => {}
        }
    }
    None
}

/// Normalises an address: trims surrounding spaces, lower-cases the local part and the domain,
/// and converts an IDN domain to punycode.
///
/// The normalised form is the address's identity everywhere (duplicates, the ledger, VERP
/// tokens, the suppression list), so it must not depend on how someone typed it. RFC 5321 lets a
/// server treat local parts case-sensitively, but mailbox providers do not, and the costs are
/// not symmetric: keeping the case would let `Ann@` escape a complaint filed for `ann@`, or get
/// the same newsletter twice after a CSV edit.
pub(crate) fn normalize(raw: &str) -> Result<String, String> {
    normalize_as(raw, LocalPart::Lowercase)
}

/// Whether the local part is folded to lower case (recipients) or kept as typed (our own
/// From and Reply-To, which are shown to people, not compared).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LocalPart {
    Lowercase,
    AsTyped,
}

fn normalize_as(raw: &str, local_part: LocalPart) -> Result<String, String> {
    if let Some(what) = control_char_problem(raw) {
        return Err(format!("the address contains {what}"));
    }
    let a = raw.trim();
    if a.is_empty() {
        return Err("the address is empty".into());
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Err("there is no @".into());
    };
    check_local(local)?;
    let local = match local_part {
        LocalPart::Lowercase => local.to_ascii_lowercase(),
        LocalPart::AsTyped => local.to_owned(),
    };
    let domain = normalize_domain(domain)?;
    let out = format!("{local}@{domain}");
    if out.len() > 254 {
        return Err("the address is longer than 254 characters".into());
    }
    Ok(out)
}

fn check_local(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("the part before @ is empty".into());
    }
    if local.len() > 64 {
        return Err("the part before @ is longer than 64 characters".into());
    }
    if !local.is_ascii() {
        return Err(
            "the part before @ is not ASCII (needs SMTPUTF8, which mailroom does not use)".into(),
        );
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before @ has a misplaced dot".into());
    }
    // RFC 5322 atext plus dots; quoted local parts are rejected on purpose (rare, often abuse).
    if let Some(c) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(*c)))
    {
        return Err(format!("the part before @ contains {c:?}"));
    }
    Ok(())
}

fn normalize_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("the domain is empty".into());
    }
    // Fast path for the common case: plain ASCII letters, digits, '-' and '.', and no
    // punycode label to verify; UTS 46 processing would only lower-case such a name.
    let plain = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !domain.to_ascii_lowercase().contains("xn--");
    let ascii = if plain {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).map_err(|_| {
            format!("the domain {domain:?} is not a valid (international) domain name")
        })?
    };
    if ascii.is_empty() || ascii.len() > 253 {
        return Err(format!("the domain {domain:?} has an invalid length"));
    }
    if !ascii.contains('.') {
        return Err(format!("the domain {domain:?} has no dot"));
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "the domain {domain:?} has an invalid label {label:?}"
            ));
        }
    }
    Ok(ascii)
}

/// Parses `"Name <addr>"` or a bare address into (display name, normalised address).
pub(crate) fn parse_mailbox(raw: &str) -> Result<(Option<String>, String), String> {
    if let Some(what) = control_char_problem(raw) {
        return Err(format!("it contains {what}"));
    }
    let t = raw.trim();
    if let Some(open) = t.rfind('<') {
        let Some(inner) = t.get(open + 1..).and_then(|r| r.strip_suffix('>')) else {
            return Err("the <address> is not closed with >".into());
        };
        let name = t.get(..open).unwrap_or("").trim().trim_matches('"').trim();
        let addr = normalize_as(inner, LocalPart::AsTyped)?;
        let name = (!name.is_empty()).then(|| name.to_owned());
        Ok((name, addr))
    } else {
        Ok((None, normalize_as(t, LocalPart::AsTyped)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn recipients_are_lowercased_and_punycoded() {
        assert_eq!(
            normalize(" Ann.Lee@Example.COM ").unwrap(),
            "ann.lee@example.com"
        );
        assert_eq!(
            normalize("x@Bücher.example").unwrap(),
            "x@xn--bcher-kva.example"
        );
        assert_eq!(
            normalize("a+tag@sub.example.org").unwrap(),
            "a+tag@sub.example.org"
        );
    }

    #[test]
    fn bad_addresses_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("no-at.example.com", "no @"),
            ("@example.com", "before @ is empty"),
            ("a@", "domain is empty"),
            ("a@localhost", "no dot"),
            ("a..b@example.com", "misplaced dot"),
            ("a b@example.com", "contains ' '"),
            ("a@exa mple.com", "domain"),
            ("a@-x.example", "label"),
            ("a@example.com\r\nBcc: x@evil.example", "line break"),
            ("ü@example.com", "not ASCII"),
        ] {
            let e = normalize(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn mailbox_forms() {
        assert_eq!(
            parse_mailbox("News Desk <News@Example.com>").unwrap(),
            (Some("News Desk".into()), "News@example.com".into())
        );
        assert_eq!(
            parse_mailbox("\"Desk, The\" <a@example.com>").unwrap(),
            (Some("Desk, The".into()), "a@example.com".into())
        );
        assert_eq!(
            parse_mailbox("a@example.com").unwrap(),
            (None, "a@example.com".into())
        );
        assert!(parse_mailbox("Name <a@example.com").is_err());
        assert!(parse_mailbox("not an address").is_err());
    }

    #[test]
    fn control_characters_are_named() {
        assert_eq!(control_char_problem("a\nb"), Some("a line break"));
        assert_eq!(control_char_problem("a\u{7}b"), Some("a control character"));
        assert_eq!(control_char_problem("tab\tok"), None);
        assert_eq!(control_char_problem("é ok"), None);
    }
}
