//! The server side of the SMTP DSN extension (RFC 3461) for the sandbox's `[session] dsn = true`:
//! checking the `RET`/`ENVID` parameters of MAIL and `NOTIFY`/`ORCPT` of RCPT as a strict MTA
//! would (every error is a 501 reply), and keeping them with the transaction so tests can see
//! what the client sent and success or failure reports can echo them.
//!
//! Pure: parses one parameter at a time, no I/O.

/// DSN parameters of one MAIL command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `RET=FULL` or `RET=HDRS`, upper case.
    pub ret: Option<String>,
    /// `ENVID`, as sent (xtext).
    pub envid: Option<String>,
}

/// DSN parameters of one RCPT command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY`, upper case (`NEVER` or a comma list).
    pub notify: Option<String>,
    /// `ORCPT`, as sent (`rfc822;` + xtext).
    pub orcpt: Option<String>,
}

impl RcptParams {
    /// Whether the client asked for a success report.
    pub fn wants_success(&self) -> bool {
        self.notify
            .as_deref()
            .is_some_and(|n| n.split(',').any(|w| w == "SUCCESS"))
    }
}

/// Whether `value` is RFC 3461 xtext.
fn is_xtext(value: &str) -> bool {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                if !b
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            0x21..=0x7e => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

/// Takes one MAIL parameter if it is a DSN one: `Some(Ok(()))` when taken, `Some(Err(why))`
/// when malformed or repeated, `None` when it is not a DSN parameter.
pub fn mail_param(
    params: &mut MailParams,
    key: &str,
    value: Option<&str>,
) -> Option<Result<(), &'static str>> {
    Some(match (key, value) {
        ("RET", Some(v)) if params.ret.is_none() => {
            let v = v.to_ascii_uppercase();
            if v == "FULL" || v == "HDRS" {
                params.ret = Some(v);
                Ok(())
            } else {
                Err("RET must be FULL or HDRS")
            }
        }
        ("ENVID", Some(v)) if params.envid.is_none() => {
            if v.len() <= 100 && is_xtext(v) {
                params.envid = Some(v.to_owned());
                Ok(())
            } else {
                Err("ENVID must be xtext of at most 100 characters")
            }
        }
        ("RET" | "ENVID", _) => Err("RET and ENVID take one value, once"),
        _ => return None,
    })
}

/// Takes one RCPT parameter if it is a DSN one (see [`mail_param`]).
pub fn rcpt_param(
    params: &mut RcptParams,
    key: &str,
    value: Option<&str>,
) -> Option<Result<(), &'static str>> {
    Some(match (key, value) {
        ("NOTIFY", Some(v)) if params.notify.is_none() => {
            let v = v.to_ascii_uppercase();
            let words: Vec<&str> = v.split(',').collect();
            let known = words
                .iter()
                .all(|w| matches!(*w, "NEVER" | "SUCCESS" | "FAILURE" | "DELAY"));
            if known && !(words.contains(&"NEVER") && words.len() > 1) {
                params.notify = Some(v);
                Ok(())
            } else {
                Err("NOTIFY must be NEVER, or a list of SUCCESS, FAILURE, DELAY")
            }
        }
        ("ORCPT", Some(v)) if params.orcpt.is_none() => match v.split_once(';') {
            Some((kind, addr)) if !kind.is_empty() && is_xtext(addr) && v.len() <= 500 => {
                params.orcpt = Some(v.to_owned());
                Ok(())
            }
            _ => Err("ORCPT must be addr-type;xtext"),
        },
        ("NOTIFY" | "ORCPT", _) => Err("NOTIFY and ORCPT take one value, once"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mail_parameters() {
        let mut p = MailParams::default();
        assert_eq!(mail_param(&mut p, "RET", Some("hdrs")), Some(Ok(())));
        assert_eq!(mail_param(&mut p, "ENVID", Some("abc+2B1")), Some(Ok(())));
        assert_eq!(p.ret.as_deref(), Some("HDRS"));
        assert_eq!(p.envid.as_deref(), Some("abc+2B1"));
        assert!(
            matches!(mail_param(&mut p, "RET", Some("FULL")), Some(Err(_))),
            "repeated"
        );
        assert_eq!(mail_param(&mut p, "SIZE", Some("10")), None);
        let mut q = MailParams::default();
        for bad in ["a=b", "a+zz", "", &"x".repeat(101)] {
            assert!(
                matches!(mail_param(&mut q, "ENVID", Some(bad)), Some(Err(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            mail_param(&mut q, "RET", Some("SOME")),
            Some(Err(_))
        ));
    }

    #[test]
    fn rcpt_parameters() {
        let mut p = RcptParams::default();
        assert_eq!(
            rcpt_param(&mut p, "NOTIFY", Some("success,failure")),
            Some(Ok(()))
        );
        assert_eq!(
            rcpt_param(&mut p, "ORCPT", Some("rfc822;a+2Bb@x.org")),
            Some(Ok(()))
        );
        assert!(p.wants_success());
        let mut q = RcptParams::default();
        assert!(matches!(
            rcpt_param(&mut q, "NOTIFY", Some("NEVER,DELAY")),
            Some(Err(_))
        ));
        assert!(matches!(
            rcpt_param(&mut q, "NOTIFY", Some("sometimes")),
            Some(Err(_))
        ));
        assert!(matches!(
            rcpt_param(&mut q, "ORCPT", Some("a@x.org")),
            Some(Err(_))
        ));
        assert!(matches!(
            rcpt_param(&mut q, "ORCPT", Some("rfc822;a b")),
            Some(Err(_))
        ));
        assert_eq!(
            rcpt_param(&mut q, "NOTIFY", Some("FAILURE,DELAY")),
            Some(Ok(()))
        );
        assert!(!q.wants_success());
        assert_eq!(rcpt_param(&mut q, "BODY", None), None);
    }
}
