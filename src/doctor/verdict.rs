//! The doctor's verdict: a pure function from probe results to "use this port and security,
//! because …". No I/O, so every rule is unit-tested on hand-made reports.
//!
//! A port is usable only with TLS whose certificate verified, and, when AUTH was tested, with
//! AUTH accepted. Plaintext is never recommended, and neither is a port whose AUTH goes in the clear.

use serde::Serialize;

use super::{Connect, PortReport, Security};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// At least one port is usable securely (the exit status is 0 exactly when this is true).
    pub usable: bool,
    pub port: Option<u16>,
    /// campaign.toml's value: "tls" or "starttls".
    pub security: Option<String>,
    /// The exact lines for campaign.toml's [smtp] section.
    pub toml: Vec<String>,
    /// One sentence: what to do.
    pub summary: String,
    /// Why, port by port, plus hints to fix what failed.
    pub reasons: Vec<String>,
}

/// Preference among equally good ports: implicit TLS on 465 (RFC 8314), then the submission
/// port, then the common fallback, then anything else, and port 25 last (often blocked).
fn port_rank(port: u16) -> u8 {
    match port {
        465 => 0,
        587 => 1,
        2525 => 2,
        25 => 4,
        _ => 3,
    }
}

fn is_candidate(p: &PortReport, auth_tested: bool) -> bool {
    p.reachable
        && p.tls_verified()
        && matches!(p.security, Some(Security::Tls | Security::StartTls))
        && p.error.is_none()
        && (!auth_tested || p.auth_succeeded())
}

/// One line per port saying what was found.
fn describe(p: &PortReport) -> String {
    let port = p.port;
    match p.connect {
        Connect::Refused => return format!("{port}: connection refused"),
        Connect::Timeout => return format!("{port}: timed out (filtered/blocked?)"),
        Connect::Error => {
            return format!(
                "{port}: unreachable: {}",
                p.error.as_deref().unwrap_or("unknown error")
            );
        }
        Connect::Open => {}
    }
    let security = match p.security {
        Some(Security::Tls) => "implicit TLS",
        Some(Security::StartTls) => "STARTTLS",
        Some(Security::None) => "no TLS offered",
        None => "open",
    };
    let mut line = format!("{port}: {security}");
    if let Some(t) = &p.tls {
        if t.verified {
            line.push_str(&format!(" ({}, certificate verified)", t.version));
        } else {
            line.push_str(&format!(
                " but the certificate is NOT trusted: {}",
                t.verify_error.as_deref().unwrap_or("verification failed")
            ));
        }
    }
    if let Some(e) = &p.error {
        line.push_str(&format!("; {e}"));
    }
    if let Some(a) = &p.auth_result {
        if a.attempted {
            line.push_str(&format!(
                "; AUTH {}: {}",
                if a.success { "accepted" } else { "REJECTED" },
                a.reply.as_deref().unwrap_or("")
            ));
        }
    } else if !p.auth_mechanisms.is_empty() && p.tls_verified() {
        line.push_str(&format!("; AUTH offered ({})", p.auth_mechanisms.join(" ")));
    }
    if p.auth_before_tls {
        line.push_str("; warning: AUTH offered before TLS");
    }
    line
}

/// Picks the port to use. `configured` = the campaign's current port (kept when it is among the
/// best); `auth_tested` = credentials were given, so success requires AUTH accepted.
pub fn recommend(
    host: &str,
    ports: &[PortReport],
    configured: Option<u16>,
    auth_tested: bool,
    ca_file: Option<&str>,
) -> Recommendation {
    let mut reasons: Vec<String> = ports.iter().map(describe).collect();
    let mut candidates: Vec<&PortReport> = ports
        .iter()
        .filter(|p| is_candidate(p, auth_tested))
        .collect();
    // Best first: AUTH offered after TLS beats none (a submission service needs it), then rank.
    candidates.sort_by_key(|p| (p.auth_mechanisms.is_empty(), port_rank(p.port)));
    let best = candidates.first().map(|best| {
        configured
            .and_then(|c| {
                candidates.iter().find(|p| {
                    p.port == c && p.auth_mechanisms.is_empty() == best.auth_mechanisms.is_empty()
                })
            })
            .copied()
            .unwrap_or(best)
    });

    let Some(best) = best else {
        reasons.extend(hints(host, ports, auth_tested));
        let summary = if ports.iter().all(|p| !p.reachable) {
            "Nothing answered: check the host name, or your network blocks outgoing SMTP (try from another network, or ask the provider for port 2525).".to_owned()
        } else if auth_tested
            && ports
                .iter()
                .any(|p| p.auth_result.as_ref().is_some_and(|a| a.attempted))
        {
            "The server rejected the credentials: check the username and the password (or, with auth = \"xoauth2\", the token and its scope).".to_owned()
        } else {
            "No port offers TLS with a certificate that verifies; mailroom will not send passwords or mail that way.".to_owned()
        };
        return Recommendation {
            usable: false,
            port: None,
            security: None,
            toml: Vec::new(),
            summary,
            reasons,
        };
    };
    let security = best.security.unwrap_or(Security::StartTls).as_str();
    let mut toml = vec![
        format!("host = {}", toml_string(host)),
        format!("port = {}", best.port),
        format!("security = {}", toml_string(security)),
    ];
    // The sender's fallback convention: 465 is implicit TLS, every other port STARTTLS.
    let fallbacks: Vec<String> = candidates
        .iter()
        .filter(|p| p.port != best.port)
        .filter(|p| p.auth_mechanisms.is_empty() == best.auth_mechanisms.is_empty())
        .filter(|p| {
            let conventional = if p.port == 465 {
                Security::Tls
            } else {
                Security::StartTls
            };
            p.security == Some(conventional)
        })
        .map(|p| p.port.to_string())
        .collect();
    if !fallbacks.is_empty() {
        toml.push(format!("fallback_ports = [{}]", fallbacks.join(", ")));
    }
    if let Some(ca) = ca_file {
        toml.push(format!("ca_file = {}", toml_string(ca)));
    }
    let how = match best.security {
        Some(Security::Tls) => "implicit TLS",
        _ => "STARTTLS",
    };
    let auth = if best.auth_succeeded() {
        ", and AUTH was accepted"
    } else if !best.auth_mechanisms.is_empty() {
        " and offers AUTH (run with --auth to test the credentials)"
    } else {
        " (no AUTH offered: fine only if this relay accepts you without a login)"
    };
    let kept = if configured == Some(best.port) {
        " (the port already configured)"
    } else {
        ""
    };
    let failed: Vec<String> = ports
        .iter()
        .filter(|p| !is_candidate(p, auth_tested))
        .map(|p| match p.connect {
            Connect::Refused => format!("{} refused", p.port),
            Connect::Timeout => format!("{} timed out", p.port),
            Connect::Error => format!("{} unreachable", p.port),
            Connect::Open => format!("{} not usable securely", p.port),
        })
        .collect();
    let prefix = if failed.is_empty() {
        String::new()
    } else {
        format!("{}; ", failed.join(", "))
    };
    let summary = format!(
        "{prefix}{} {how} works with a verified certificate{auth}{kept}: use port = {}, security = \"{security}\"",
        best.port, best.port
    );
    if ports.iter().any(|p| p.auth_before_tls) {
        reasons.push(
            "a port offers AUTH before TLS; mailroom never authenticates in cleartext, but other clients might".to_owned(),
        );
    }
    Recommendation {
        usable: true,
        port: Some(best.port),
        security: Some(security.to_owned()),
        toml,
        summary,
        reasons,
    }
}

/// A note when the campaign's configured port speaks a different security than configured
/// (e.g. `security = "starttls"` on a port that answers only with implicit TLS).
pub fn config_mismatch(
    ports: &[PortReport],
    configured_port: u16,
    configured: Security,
) -> Option<String> {
    let p = ports.iter().find(|p| p.port == configured_port)?;
    let actual = p.security?;
    if actual == configured {
        return None;
    }
    let speaks = match actual {
        Security::Tls => "implicit TLS (security = \"tls\")",
        Security::StartTls => "STARTTLS (security = \"starttls\")",
        Security::None => "plaintext only, without STARTTLS",
    };
    Some(format!(
        "campaign.toml has port = {configured_port}, security = \"{}\", but port {configured_port} speaks {speaks}",
        configured.as_str()
    ))
}

/// Fixes for what failed, most useful first.
fn hints(host: &str, ports: &[PortReport], auth_tested: bool) -> Vec<String> {
    let mut out = Vec::new();
    let with_tls: Vec<&PortReport> = ports.iter().filter(|p| p.tls.is_some()).collect();
    if let Some(p) = with_tls.iter().find(|p| {
        p.tls
            .as_ref()
            .is_some_and(|t| !t.verified && !t.name_matches && !t.dns_names.is_empty())
    }) {
        let names = p
            .tls
            .as_ref()
            .map(|t| t.dns_names.join(", "))
            .unwrap_or_default();
        out.push(format!(
            "hint: the certificate names {names}, not {host}: connect to that name (host = \"…\")"
        ));
    }
    if with_tls.iter().any(|p| {
        p.tls
            .as_ref()
            .is_some_and(|t| !t.verified && t.name_matches)
    }) {
        out.push(
            "hint: the certificate chain is not trusted; if this server uses a private CA, pass its certificate with --ca-file (ca_file in campaign.toml)".to_owned(),
        );
    }
    if ports
        .iter()
        .any(|p| p.reachable && p.security == Some(Security::None))
        && with_tls.is_empty()
    {
        out.push("hint: no port offers STARTTLS or implicit TLS; ask the provider for a TLS submission port (465 or 587)".to_owned());
    }
    if auth_tested
        && ports.iter().any(|p| {
            p.auth_result
                .as_ref()
                .is_some_and(|a| a.attempted && !a.success)
        })
    {
        out.push("hint: AUTH was rejected; check username and the password (password_env / password_file, or MAILROOM_SMTP_PASSWORD)".to_owned());
    }
    if ports.iter().any(|p| p.connect == Connect::Timeout) {
        out.push("hint: timeouts usually mean a firewall drops the packets; many ISPs and clouds block port 25, some block 587/465 too".to_owned());
    }
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::doctor::{AuthResult, TlsReport};

    fn refused(port: u16) -> PortReport {
        let mut p = PortReport::new(port, Security::StartTls);
        p.connect = Connect::Refused;
        p.error = Some("connection refused".into());
        p
    }

    fn timed_out(port: u16) -> PortReport {
        let mut p = PortReport::new(port, Security::StartTls);
        p.connect = Connect::Timeout;
        p.error = Some("no answer".into());
        p
    }

    fn tls(verified: bool) -> TlsReport {
        TlsReport {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified,
            verify_error: (!verified).then(|| "invalid peer certificate: UnknownIssuer".into()),
            subject: Some("CN=mx.example.test".into()),
            issuer: Some("CN=Example CA".into()),
            not_after: None,
            days_left: Some(80),
            dns_names: vec!["mx.example.test".into()],
            ip_addresses: vec![],
            name_matches: true,
            chain_length: 1,
        }
    }

    fn secure(port: u16, security: Security, verified: bool, auth: bool) -> PortReport {
        let mut p = PortReport::new(port, Security::StartTls);
        p.connect = Connect::Open;
        p.reachable = true;
        p.security = Some(security);
        p.tls = Some(tls(verified));
        if auth {
            p.auth_mechanisms = vec!["PLAIN".into(), "LOGIN".into()];
        }
        p
    }

    fn plaintext(port: u16, auth: bool) -> PortReport {
        let mut p = PortReport::new(port, Security::StartTls);
        p.connect = Connect::Open;
        p.reachable = true;
        p.security = Some(Security::None);
        if auth {
            p.auth_mechanisms = vec!["PLAIN".into()];
            p.auth_before_tls = true;
        }
        p
    }

    fn auth(p: &mut PortReport, success: bool) {
        p.auth_result = Some(AuthResult {
            attempted: true,
            success,
            mechanism: Some("PLAIN".into()),
            reply: Some(if success {
                "235 2.7.0 Authentication successful".into()
            } else {
                "535 5.7.8 Error: authentication failed".into()
            }),
            skipped: None,
        });
    }

    #[test]
    fn refused_587_and_working_465_recommends_implicit_tls() {
        let ports = [
            refused(587),
            secure(465, Security::Tls, true, true),
            timed_out(2525),
            timed_out(25),
        ];
        let r = recommend("mx.example.test", &ports, None, false, None);
        assert!(r.usable);
        assert_eq!(r.port, Some(465));
        assert_eq!(r.security.as_deref(), Some("tls"));
        assert_eq!(
            r.toml,
            vec![
                "host = \"mx.example.test\"",
                "port = 465",
                "security = \"tls\""
            ]
        );
        assert!(r.summary.starts_with("587 refused"), "{}", r.summary);
        assert!(
            r.summary.contains("use port = 465, security = \"tls\""),
            "{}",
            r.summary
        );
        assert!(
            r.reasons
                .iter()
                .any(|l| l.contains("2525: timed out (filtered/blocked?)"))
        );
    }

    #[test]
    fn prefers_465_then_587_and_lists_fallbacks_that_follow_the_convention() {
        let ports = [
            secure(587, Security::StartTls, true, true),
            secure(465, Security::Tls, true, true),
            secure(2525, Security::StartTls, true, true),
            // Verified TLS but no AUTH (an inbound MX): not a fallback for a submission port.
            secure(25, Security::StartTls, true, false),
        ];
        let r = recommend("h", &ports, None, false, Some("/etc/ca.pem"));
        assert_eq!(r.port, Some(465));
        assert_eq!(
            r.toml,
            vec![
                "host = \"h\"",
                "port = 465",
                "security = \"tls\"",
                "fallback_ports = [587, 2525]",
                "ca_file = \"/etc/ca.pem\""
            ]
        );
    }

    #[test]
    fn keeps_the_configured_port_when_it_is_as_good() {
        let ports = [
            secure(587, Security::StartTls, true, true),
            secure(465, Security::Tls, true, true),
        ];
        let r = recommend("h", &ports, Some(587), false, None);
        assert_eq!(r.port, Some(587));
        assert!(r.summary.contains("already configured"));
        assert!(r.toml.contains(&"fallback_ports = [465]".to_owned()));
    }

    #[test]
    fn a_port_speaking_the_other_security_is_recommended_with_its_real_security() {
        // 2525 answered with implicit TLS: usable, but not as a fallback (the sender would STARTTLS).
        let ports = [
            secure(2525, Security::Tls, true, true),
            secure(587, Security::StartTls, true, true),
        ];
        let r = recommend("h", &ports, Some(2525), false, None);
        assert_eq!(r.port, Some(2525));
        assert_eq!(r.security.as_deref(), Some("tls"));
        assert!(r.toml.contains(&"fallback_ports = [587]".to_owned()));
        let r = recommend("h", &ports, None, false, None);
        assert_eq!(
            r.port,
            Some(587),
            "587 outranks 2525; 2525 as tls is no valid fallback"
        );
        assert!(!r.toml.iter().any(|l| l.starts_with("fallback_ports")));
    }

    #[test]
    fn never_recommends_plaintext_even_with_auth_offered() {
        let ports = [plaintext(587, true), plaintext(25, false), refused(465)];
        let r = recommend("h", &ports, None, false, None);
        assert!(!r.usable);
        assert!(r.toml.is_empty());
        assert!(r.summary.contains("No port offers TLS"), "{}", r.summary);
        assert!(
            r.reasons
                .iter()
                .any(|l| l.contains("AUTH offered before TLS"))
        );
        assert!(
            r.reasons
                .iter()
                .any(|l| l.contains("no port offers STARTTLS"))
        );
    }

    #[test]
    fn an_untrusted_certificate_is_not_usable_and_suggests_ca_file() {
        let ports = [secure(587, Security::StartTls, false, true)];
        let r = recommend("h", &ports, None, false, None);
        assert!(!r.usable);
        assert!(r.reasons.iter().any(|l| l.contains("UnknownIssuer")));
        assert!(r.reasons.iter().any(|l| l.contains("--ca-file")));
    }

    #[test]
    fn a_name_mismatch_suggests_the_certificate_name() {
        let mut p = secure(465, Security::Tls, false, true);
        p.tls.as_mut().unwrap().name_matches = false;
        let r = recommend("1.2.3.4", &[p], None, false, None);
        assert!(!r.usable);
        assert!(
            r.reasons
                .iter()
                .any(|l| l.contains("names mx.example.test, not 1.2.3.4"))
        );
    }

    #[test]
    fn with_auth_tested_only_accepted_credentials_count() {
        let mut a = secure(587, Security::StartTls, true, true);
        auth(&mut a, false);
        let mut b = secure(465, Security::Tls, true, true);
        auth(&mut b, false);
        let r = recommend("h", &[a.clone(), b], None, true, None);
        assert!(!r.usable);
        assert!(
            r.summary.contains("rejected the credentials"),
            "{}",
            r.summary
        );
        assert!(r.reasons.iter().any(|l| l.contains("535 5.7.8")));

        let mut c = secure(465, Security::Tls, true, true);
        auth(&mut c, true);
        let r = recommend("h", &[a, c], None, true, None);
        assert_eq!(r.port, Some(465));
        assert!(r.summary.contains("AUTH was accepted"));
        assert!(
            !r.toml.iter().any(|l| l.starts_with("fallback_ports")),
            "587 rejected AUTH"
        );
    }

    #[test]
    fn a_port_with_auth_beats_a_better_ranked_one_without() {
        let ports = [
            secure(465, Security::Tls, true, false),
            secure(587, Security::StartTls, true, true),
        ];
        let r = recommend("h", &ports, None, false, None);
        assert_eq!(r.port, Some(587));
    }

    #[test]
    fn nothing_reachable_says_so() {
        let r = recommend("h", &[timed_out(587), refused(465)], None, false, None);
        assert!(!r.usable);
        assert!(r.summary.starts_with("Nothing answered"), "{}", r.summary);
        assert!(r.reasons.iter().any(|l| l.contains("firewall")));
    }

    #[test]
    fn a_port_that_failed_midway_is_not_usable() {
        let mut p = secure(587, Security::StartTls, true, true);
        p.error = Some("EHLO after STARTTLS: connection closed by the server".into());
        assert!(!recommend("h", &[p], None, false, None).usable);
    }

    #[test]
    fn a_configured_security_that_the_port_does_not_speak_is_pointed_out() {
        let ports = [secure(465, Security::Tls, true, true), refused(587)];
        let note = config_mismatch(&ports, 465, Security::StartTls).unwrap();
        assert!(note.contains("security = \"starttls\""), "{note}");
        assert!(note.contains("speaks implicit TLS"), "{note}");
        assert_eq!(config_mismatch(&ports, 465, Security::Tls), None);
        assert_eq!(
            config_mismatch(&ports, 587, Security::StartTls),
            None,
            "587 refused: nothing known"
        );
        assert_eq!(
            config_mismatch(&ports, 2525, Security::StartTls),
            None,
            "not probed"
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(toml_string("x\ny"), "\"x\\u000Ay\"");
    }
}
