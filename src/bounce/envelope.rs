//! The RFC 3461 fields a DSN carries back from the SMTP envelope: `Original-Envelope-Id` (the
//! `ENVID` mailroom sent on MAIL: the recipient's token) and `Original-Recipient` (the `ORCPT`
//! sent on RCPT: the address as mailroom knew it). Both are the most certain evidence a DSN
//! has, because mailroom chose them, so the import matches on them first.
//!
//! Decoding is bounded (at most [`MAX_ENVID`] / [`MAX_ORCPT`] bytes are looked at and kept) and
//! total: a value that is not well-formed yields `None`, never a panic or a guess. No I/O.

/// RFC 3461 §4.4: an ENVID is at most 100 characters (of xtext).
pub const MAX_ENVID: usize = 100;
/// The longest `Original-Recipient` value read: an address is at most 254 octets (RFC 5321
/// §4.5.3.1), and xtext can triple it; anything longer is not one of ours.
pub const MAX_ORCPT: usize = 3 * 254 + 16;

/// Decodes RFC 3461 xtext (`+XX` hex escapes; every other character printable ASCII other than
/// `+` and `=`). `None` for anything else or for more than `max` input bytes.
pub fn decode_xtext(value: &str, max: usize) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > max {
        return None;
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = value.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            b @ 0x21..=0x7e => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes RFC 6533's `utf-8-addr-xtext` / `utf-8-addr-unitext`: `\x{HEX}` escapes for what
/// may not appear literally. `None` when malformed or longer than `max` bytes.
fn decode_utf8_addr(value: &str, max: usize) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.len() > max {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("\\x{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let end = after.find('}')?;
        let hex = &after[..end];
        if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (!out.chars().any(char::is_control)).then_some(out)
}

/// The envelope id of a DSN's `Original-Envelope-Id` value, when it has the shape of a
/// mailroom recipient token (ASCII letters and digits): anything else was not set by us.
pub fn envelope_id(value: &str) -> Option<String> {
    decode_xtext(value, MAX_ENVID)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The address of an `Original-Recipient` value: `rfc822;` + xtext (RFC 3461 §4.2), or
/// `utf-8;` + RFC 6533 text. Other address types, and values that are not an address, give
/// `None`.
pub fn original_recipient(value: &str) -> Option<String> {
    let value = value.trim();
    if value.len() > MAX_ORCPT {
        return None;
    }
    let (kind, rest) = value.split_once(';')?;
    let address = match kind.trim().to_ascii_lowercase().as_str() {
        // Real MTAs often copy the address without xtext: it decodes to itself.
        "rfc822" => decode_xtext(rest, MAX_ORCPT)?,
        "utf-8" => decode_utf8_addr(rest, MAX_ORCPT)?,
        _ => return None,
    };
    let address = address.trim().trim_matches(['<', '>']).to_owned();
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !address.contains(char::is_whitespace))
        .then_some(address)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn xtext_decodes_escapes_and_refuses_what_is_not_xtext() {
        let cases: &[(&str, Option<&str>)] = &[
            ("abc123", Some("abc123")),
            ("a+2Bb+3Dc", Some("a+b=c")),
            ("caf+C3+A9", Some("café")),
            ("a+2", None),
            ("a+zz", None),
            ("a=b", None),
            ("a b", None),
            ("", None),
            ("+FF", None), // not UTF-8
        ];
        for (input, want) in cases {
            assert_eq!(decode_xtext(input, 100).as_deref(), *want, "{input}");
        }
        assert_eq!(decode_xtext(&"a".repeat(101), 100), None);
    }

    #[test]
    fn envelope_ids_are_our_tokens_only() {
        assert_eq!(
            envelope_id(" 0a1b2c3d4e5f6a7b ").as_deref(),
            Some("0a1b2c3d4e5f6a7b")
        );
        assert_eq!(envelope_id("abc+2Edef"), None, "a dot is not in our tokens");
        assert_eq!(envelope_id(&"a".repeat(101)), None);
        assert_eq!(envelope_id("<x@y>"), None);
    }

    #[test]
    fn original_recipients_of_each_address_type() {
        let cases: &[(&str, Option<&str>)] = &[
            ("rfc822;ann@example.org", Some("ann@example.org")),
            (
                "RFC822; ann+2Bnews@example.org",
                Some("ann+news@example.org"),
            ),
            ("rfc822;<ann@example.org>", Some("ann@example.org")),
            ("utf-8;j\\x{F6}ran@example.org", Some("jöran@example.org")),
            ("utf-8;jöran@example.org", Some("jöran@example.org")),
            ("utf-8;a\\x{0A}b@example.org", None),
            ("utf-8;a\\x{110000}@example.org", None),
            ("utf-8;a\\x{zz}@example.org", None),
            ("x400;c=us;a=b", None),
            ("rfc822;not an address", None),
            ("rfc822;nobody", None),
            ("ann@example.org", None),
        ];
        for (input, want) in cases {
            assert_eq!(original_recipient(input).as_deref(), *want, "{input}");
        }
        assert_eq!(
            original_recipient(&format!("rfc822;{}@x.org", "a".repeat(MAX_ORCPT))),
            None
        );
    }
}
