//! The SMTP DSN extension on the client side (RFC 3461): the parameters a transaction carries
//! when the relay's EHLO lists `DSN`. On MAIL, `RET=HDRS` (a report returns the headers only,
//! never the whole newsletter) and `ENVID` (the recipient's token, so a report names the
//! recipient whatever address it was delivered to); on RCPT, `NOTIFY` (when to report) and
//! `ORCPT` (the address as mailroom knows it, `rfc822;` or, for a non-ASCII address, RFC 6533
//! `utf-8;`). Values are encoded as RFC 3461 xtext, so nothing in them can end the command.
//!
//! This module only spells the parameters: whether to send them is `Session::send`'s (the
//! relay's keywords), what to ask for is the caller's (`[bounces] notify`).

use std::fmt::Write as _;

pub use crate::model::DsnNotify;

/// RFC 3461 §4.4: an ENVID is at most 100 characters.
pub const MAX_ENVID: usize = 100;

/// What one transaction asks the relay to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The envelope id (the recipient's token).
    pub envid: &'a str,
    /// The recipient's address as mailroom knows it.
    pub orcpt: &'a str,
    pub notify: DsnNotify,
}

/// RFC 3461 §4 xtext: printable ASCII except `+` and `=` as it is, every other byte `+XX`.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// RFC 6533 §3 `utf-8-addr-xtext`: ASCII printable characters other than `+`, `=`, `\` and
/// space as they are; everything else as `\x{HEX}`. ASCII only, so it needs no SMTPUTF8.
fn utf8_addr_xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_ascii_graphic() && !matches!(c, '+' | '=' | '\\') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// The `ORCPT` value for `address`: `rfc822;` + xtext, or `utf-8;` + RFC 6533 text when the
/// address is not ASCII.
pub fn orcpt(address: &str) -> String {
    if address.is_ascii() {
        format!("rfc822;{}", xtext(address))
    } else {
        format!("utf-8;{}", utf8_addr_xtext(address))
    }
}

/// The parameters to append to `MAIL FROM:<...>`, with a leading space: `RET=HDRS` and the
/// envelope id (left out when its xtext would pass RFC 3461's 100 characters).
pub fn mail_parameters(request: &Request<'_>) -> String {
    let envid = xtext(request.envid);
    if envid.is_empty() || envid.len() > MAX_ENVID {
        " RET=HDRS".to_owned()
    } else {
        format!(" RET=HDRS ENVID={envid}")
    }
}

/// The parameters to append to `RCPT TO:<...>`, with a leading space.
pub fn rcpt_parameters(request: &Request<'_>) -> String {
    format!(
        " NOTIFY={} ORCPT={}",
        request.notify.keyword(),
        orcpt(request.orcpt)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn xtext_escapes_plus_equals_controls_and_non_ascii() {
        let cases = [
            ("abc123", "abc123"),
            ("a+b=c", "a+2Bb+3Dc"),
            ("a b", "a+20b"),
            ("x\r\ny", "x+0D+0Ay"),
            ("é", "+C3+A9"),
            ("", ""),
        ];
        for (raw, encoded) in cases {
            assert_eq!(xtext(raw), encoded, "{raw:?}");
            if !raw.is_empty() {
                assert_eq!(
                    crate::bounce::envelope::decode_xtext(encoded, 1000).as_deref(),
                    Some(raw),
                    "round trip {raw:?}"
                );
            }
        }
    }

    #[test]
    fn orcpt_is_rfc822_for_ascii_and_utf8_otherwise() {
        assert_eq!(
            orcpt("ann+news@example.org"),
            "rfc822;ann+2Bnews@example.org"
        );
        assert_eq!(orcpt("jöran@example.org"), "utf-8;j\\x{F6}ran@example.org");
        assert_eq!(orcpt("a\\b@x.org"), "rfc822;a\\b@x.org");
        for address in [
            "ann+news@example.org",
            "jöran@example.org",
            "用户@例子.广告",
        ] {
            assert_eq!(
                crate::bounce::envelope::original_recipient(&orcpt(address)).as_deref(),
                Some(address),
                "the import reads back what the transport wrote"
            );
        }
    }

    #[test]
    fn parameters_of_a_transaction() {
        let request = Request {
            envid: "0a1b2c3d4e5f6a7b",
            orcpt: "ann@example.org",
            notify: DsnNotify::DEFAULT,
        };
        assert_eq!(
            mail_parameters(&request),
            " RET=HDRS ENVID=0a1b2c3d4e5f6a7b"
        );
        assert_eq!(
            rcpt_parameters(&request),
            " NOTIFY=FAILURE,DELAY ORCPT=rfc822;ann@example.org"
        );
        let long = "x".repeat(101);
        let never = Request {
            envid: &long,
            notify: DsnNotify::NEVER,
            ..request
        };
        assert_eq!(
            mail_parameters(&never),
            " RET=HDRS",
            "no ENVID over 100 characters"
        );
        assert_eq!(
            rcpt_parameters(&never),
            " NOTIFY=NEVER ORCPT=rfc822;ann@example.org"
        );
    }
}
