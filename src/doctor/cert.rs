//! Reads the few X.509 fields the doctor reports (subject, issuer, expiry, subject alternative
//! names) straight from DER, and matches a host name against them.
//!
//! This is for display only: it never decides whether a certificate is trusted (rustls/webpki
//! does that). A certificate this reader cannot parse yields `None`, never a panic.

use std::net::IpAddr;

/// What the report shows about a peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// One DER TLV: tag byte and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Splits the first TLV off `input`; returns it and the rest.
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags (low 5 bits all set) never occur in the fields we read.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first & 0x80 == 0 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            body: &rest[..len],
        },
        &rest[len..],
    ))
}

/// All TLVs inside a constructed value, in order.
fn children(body: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (tlv, tail) = next(rest)?;
        out.push(tlv);
        rest = tail;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;

/// Parses an X.509 certificate's DER. `None` when it is not one this reader understands.
pub fn parse(der: &[u8]) -> Option<CertSummary> {
    let (cert, _) = next(der)?;
    if cert.tag != SEQUENCE {
        return None;
    }
    let (tbs, _) = next(cert.body)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let fields = children(tbs.body)?;
    // version [0] is optional; serial, signature, issuer, validity, subject follow.
    let start = usize::from(fields.first()?.tag == 0xa0);
    let issuer = fields.get(start + 2)?;
    let validity = fields.get(start + 3)?;
    let subject = fields.get(start + 4)?;
    let times = children(validity.body)?;
    let not_before = parse_time(times.first()?)?;
    let not_after = parse_time(times.get(1)?)?;
    let mut summary = CertSummary {
        subject: format_name(subject.body)?,
        issuer: format_name(issuer.body)?,
        not_before,
        not_after,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    };
    // Extensions are in [3], after the optional unique identifiers [1] and [2].
    if let Some(ext) = fields.iter().skip(start + 6).find(|f| f.tag == 0xa3) {
        read_san(ext.body, &mut summary);
    }
    Some(summary)
}

/// subjectAltName, OID 2.5.29.17.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

fn read_san(explicit: &[u8], summary: &mut CertSummary) {
    let Some((list, _)) = next(explicit) else {
        return;
    };
    let Some(extensions) = children(list.body) else {
        return;
    };
    for ext in extensions {
        let Some(parts) = children(ext.body) else {
            continue;
        };
        if parts.first().map(|p| p.body) != Some(OID_SAN) {
            continue;
        }
        // The value is the last part (an OCTET STRING), after an optional `critical` BOOLEAN.
        let Some(value) = parts.last() else { continue };
        let Some((names, _)) = next(value.body) else {
            continue;
        };
        for name in children(names.body).unwrap_or_default() {
            match name.tag {
                0x82 => summary
                    .dns_names
                    .push(String::from_utf8_lossy(name.body).into_owned()),
                0x87 => {
                    if let Ok(v4) = <[u8; 4]>::try_from(name.body) {
                        summary.ip_addresses.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(name.body) {
                        summary.ip_addresses.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Short names for the attribute types people recognise; others print as dotted OIDs.
fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return None,
    })
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < oid.len() {
                let (first, second) = if value < 80 {
                    (value / 40, value % 40)
                } else {
                    (2, value - 80)
                };
                parts.push(first.to_string());
                parts.push(second.to_string());
            } else {
                parts.push(value.to_string());
            }
            value = 0;
        }
    }
    parts.join(".")
}

/// RFC 4514-like rendering, most significant RDN first as certificates store it ("C=.., O=.., CN=..").
fn format_name(rdn_sequence: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    for set in children(rdn_sequence)? {
        for attr in children(set.body)? {
            let parts = children(attr.body)?;
            let oid = parts.first()?;
            let value = parts.get(1)?;
            let key = attribute_name(oid.body)
                .map(str::to_owned)
                .unwrap_or_else(|| dotted_oid(oid.body));
            let text = match value.tag {
                // BMPString: UTF-16BE.
                0x1e => {
                    let units: Vec<u16> = value
                        .body
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect();
                    String::from_utf16_lossy(&units)
                }
                _ => String::from_utf8_lossy(value.body).into_owned(),
            };
            out.push(format!("{key}={text}"));
        }
    }
    Some(out.join(", "))
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to unix seconds.
fn parse_time(tlv: &Tlv<'_>) -> Option<i64> {
    let text = std::str::from_utf8(tlv.body).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match (tlv.tag, digits.len()) {
        (0x17, 12) => {
            let yy = num(&digits[..2])?;
            // RFC 5280 §4.1.2.5.1: 50..99 are 19xx, 00..49 are 20xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (0x18, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return None,
    };
    let month = num(&rest[..2])?;
    let day = num(&rest[2..4])?;
    let hour = num(&rest[4..6])?;
    let minute = num(&rest[6..8])?;
    let second = num(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether `host` (a DNS name or an IP address) is one the certificate names, RFC 6125 style:
/// a `*.` wildcard matches exactly one leftmost label. CN is ignored when SANs exist, as rustls does;
/// rustls ignores CN altogether, and so do we.
pub fn name_matches(summary: &CertSummary, host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return summary.ip_addresses.contains(&ip);
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    summary.dns_names.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => pattern == host,
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn make(names: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mail.example.test");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Org");
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_subject_issuer_validity_and_sans() {
        let der = make(&["mail.example.test", "*.relay.example.test", "127.0.0.1"]);
        let s = parse(&der).unwrap();
        assert!(s.subject.contains("CN=mail.example.test"), "{}", s.subject);
        assert!(s.subject.contains("O=Example Org"), "{}", s.subject);
        assert_eq!(s.subject, s.issuer, "self-signed");
        assert_eq!(s.not_before, 1_704_153_600); // 2024-01-02T00:00:00Z
        assert_eq!(s.not_after, 2_561_500_800); // 2051-03-04T00:00:00Z (GeneralizedTime)
        assert_eq!(
            s.dns_names,
            vec!["mail.example.test", "*.relay.example.test"]
        );
        assert_eq!(s.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn name_matching_follows_rfc_6125() {
        let s = parse(&make(&[
            "mail.example.test",
            "*.relay.example.test",
            "127.0.0.1",
        ]))
        .unwrap();
        assert!(name_matches(&s, "mail.example.test"));
        assert!(name_matches(&s, "MAIL.example.test."));
        assert!(name_matches(&s, "a.relay.example.test"));
        assert!(!name_matches(&s, "relay.example.test"));
        assert!(!name_matches(&s, "a.b.relay.example.test"));
        assert!(!name_matches(&s, "other.example.test"));
        assert!(name_matches(&s, "127.0.0.1"));
        assert!(!name_matches(&s, "127.0.0.2"));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        let der = make(&["a.test"]);
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(parse(&der[..cut]), None, "truncated at {cut}");
        }
        assert_eq!(parse(b"not a certificate at all"), None);
    }

    #[test]
    fn utc_time_century_rule() {
        let t = Tlv {
            tag: 0x17,
            body: b"491231235959Z",
        };
        assert_eq!(parse_time(&t), Some(2_524_607_999)); // 2049-12-31T23:59:59Z
        let t = Tlv {
            tag: 0x17,
            body: b"500101000000Z",
        };
        assert_eq!(parse_time(&t), Some(-631_152_000)); // 1950-01-01
    }

    #[test]
    fn unknown_attribute_types_print_as_dotted_oids() {
        assert_eq!(
            dotted_oid(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
        assert_eq!(dotted_oid(&[0x55, 0x04, 0x03]), "2.5.4.3");
    }
}
