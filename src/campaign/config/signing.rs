//! The authentication keys of `campaign.toml`: `[dkim]` (signing domain, selector, key file,
//! signed headers, an optional second signature), `[dns]` (the resolver every lookup uses), and
//! the list headers of `[campaign]` (`list_id`, `feedback_id`). It validates what the file
//! alone can show; it must not read the key files (that is `Campaign::load`, through `dkim`) or
//! query DNS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[dkim]`: sign every message (RFC 6376), relaxed/relaxed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DkimSection {
    /// The `d=` domain; DMARC wants it aligned with the From domain.
    pub domain: String,
    /// The `s=` selector: the key record is `selector._domainkey.domain`.
    pub selector: String,
    /// PEM private key, relative to the campaign folder (absolute after load).
    pub private_key_file: PathBuf,
    /// Header names to sign, in order; `None` means `dkim::DEFAULT_SIGNED_HEADERS`.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// A second signature (RSA + Ed25519 dual signing, RFC 8463).
    #[serde(default)]
    pub second: Option<SecondSignature>,
}

/// `[dkim.second]`: another key, usually Ed25519 beside an RSA first key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecondSignature {
    /// Default: the first signature's domain.
    #[serde(default)]
    pub domain: Option<String>,
    pub selector: String,
    pub private_key_file: PathBuf,
}

impl DkimSection {
    /// Every (domain, selector, key file) signature, the first one first.
    pub fn signatures(&self) -> Vec<(&str, &str, &Path)> {
        let mut v = vec![(
            self.domain.as_str(),
            self.selector.as_str(),
            self.private_key_file.as_path(),
        )];
        if let Some(s) = &self.second {
            v.push((
                s.domain.as_deref().unwrap_or(&self.domain),
                s.selector.as_str(),
                s.private_key_file.as_path(),
            ));
        }
        v
    }

    /// The header names to sign.
    pub fn signed_headers(&self) -> Vec<String> {
        self.headers.clone().unwrap_or_else(|| {
            crate::dkim::DEFAULT_SIGNED_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect()
        })
    }

    pub(super) fn resolve(&mut self, root: &Path) {
        self.private_key_file = root.join(&self.private_key_file);
        if let Some(s) = &mut self.second {
            s.private_key_file = root.join(&s.private_key_file);
        }
    }
}

/// `[dns]`: how mailroom resolves names (DKIM checks before `send`, `doctor --dns`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DnsSection {
    /// `IP` or `IP:PORT` of the resolver to ask instead of the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub resolver: Option<String>,
}

/// A problem with one key, for `Config::validate` to place at its line.
pub(super) struct Invalid {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    pub(super) message: String,
    pub(super) fix: &'static str,
}

fn invalid(
    section: &'static str,
    key: &'static str,
    message: String,
    fix: &'static str,
) -> Invalid {
    Invalid {
        section,
        key,
        message,
        fix,
    }
}

/// Checks `[dkim]`, `[dns]` and the list headers of `[campaign]`.
pub(super) fn validate(
    dkim: Option<&DkimSection>,
    dns: &DnsSection,
    list_id: Option<&str>,
    feedback_id: Option<&str>,
) -> Result<(), Invalid> {
    if let Some(d) = dkim {
        for (section, domain, selector) in [("dkim", Some(d.domain.as_str()), d.selector.as_str())]
            .into_iter()
            .chain(
                d.second
                    .iter()
                    .map(|s| ("dkim.second", s.domain.as_deref(), s.selector.as_str())),
            )
        {
            if let Some(domain) = domain
                && !is_domain(domain)
            {
                return Err(invalid(
                    section,
                    "domain",
                    format!("{domain:?} is not a domain name"),
                    "Use the domain that publishes the key, e.g. domain = \"example.com\" (usually the From domain).",
                ));
            }
            if !is_selector(selector) {
                return Err(invalid(
                    section,
                    "selector",
                    format!(
                        "{selector:?} is not a DKIM selector (letters, digits, - and _, dot-separated)"
                    ),
                    "Use a short name such as selector = \"mail2026\"; the key record is SELECTOR._domainkey.DOMAIN.",
                ));
            }
        }
        if let Some(headers) = &d.headers {
            if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
                return Err(invalid(
                    "dkim",
                    "headers",
                    "the signed headers do not include From, which RFC 6376 §5.4 requires".into(),
                    "Add \"From\" to headers, or remove the key to sign the default list.",
                ));
            }
            if let Some(bad) = headers
                .iter()
                .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
            {
                return Err(invalid(
                    "dkim",
                    "headers",
                    format!("{bad:?} is not a header name"),
                    "List header names such as \"Subject\", without colons.",
                ));
            }
        }
    }
    if let Some(r) = &dns.resolver
        && parse_resolver(r).is_none()
    {
        return Err(invalid(
            "dns",
            "resolver",
            format!("{r:?} is not an IP address with an optional port"),
            "Use resolver = \"192.0.2.53\" or \"127.0.0.1:5353\" (an address, not a host name: the resolver cannot look itself up).",
        ));
    }
    if let Some(l) = list_id
        && let Err(why) = check_list_id(l)
    {
        return Err(invalid(
            "campaign",
            "list_id",
            format!("{l:?} is not a List-Id: {why}"),
            "Use list_id = \"news.example.com\" or \"Bakery news <news.example.com>\" (RFC 2919: a dot-atom under a domain you control).",
        ));
    }
    if let Some(f) = feedback_id
        && let Err(why) = check_feedback_id(f)
    {
        return Err(invalid(
            "campaign",
            "feedback_id",
            format!("{f:?} is not a Feedback-ID: {why}"),
            "Use Gmail's form, 2 to 4 colon-separated identifiers ending with a sender id, e.g. feedback_id = \"{campaign}:newsletter:bakery\".",
        ));
    }
    Ok(())
}

/// `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
pub fn parse_resolver(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

fn is_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// An ASCII (or punycode) domain name of at least two labels.
fn is_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    d.len() <= 253 && d.split('.').count() >= 2 && d.split('.').all(is_label)
}

fn is_selector(s: &str) -> bool {
    s.len() <= 63 * 2 && s.split('.').all(is_label)
}

/// RFC 2919 §2: `[phrase] <list-label.namespace>` with a dot-atom id of at most 255 octets.
fn check_list_id(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err("it contains a control character".into());
    }
    let id = match value.rsplit_once('<') {
        Some((_, rest)) => rest
            .strip_suffix('>')
            .ok_or("the id in angle brackets is not closed")?,
        None => value.trim(),
    };
    if id.len() > 255 {
        return Err("the id is longer than 255 octets".into());
    }
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    if id.split('.').count() < 2 || !id.split('.').all(|p| !p.is_empty() && p.bytes().all(atext)) {
        return Err("the id must be a dot-atom such as news.example.com".into());
    }
    Ok(())
}

/// Gmail's Feedback-ID: `a:b:c:SenderId`, 2 to 4 non-empty fields; `{campaign}` is replaced by
/// the campaign name when the message is built.
fn check_feedback_id(value: &str) -> Result<(), String> {
    let probe = value.replace("{campaign}", "c");
    let fields: Vec<&str> = probe.split(':').collect();
    if !(2..=4).contains(&fields.len()) {
        return Err(format!(
            "{} colon-separated fields (2 to 4 expected)",
            fields.len()
        ));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if fields.iter().any(|f| f.is_empty() || !f.bytes().all(ok)) {
        return Err("each field must be letters, digits, '-', '_' or '.'".into());
    }
    if probe.len() > 200 {
        return Err("longer than 200 characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_addresses() {
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(parse_resolver("192.0.2.1").map(|a| a.port()), Some(53));
        assert!(parse_resolver("[::1]:53").is_some());
        assert!(parse_resolver("dns.example.com").is_none());
    }

    #[test]
    fn list_ids_follow_rfc_2919() {
        assert!(check_list_id("news.example.com").is_ok());
        assert!(check_list_id("Bakery news <news.example.com>").is_ok());
        assert!(check_list_id("news").is_err());
        assert!(check_list_id("<a..b>").is_err());
        assert!(check_list_id("x <news.example.com").is_err());
    }

    #[test]
    fn feedback_ids_follow_gmail() {
        assert!(check_feedback_id("{campaign}:newsletter:bakery").is_ok());
        assert!(check_feedback_id("a:b:c:d").is_ok());
        assert!(check_feedback_id("single").is_err());
        assert!(check_feedback_id("a::b").is_err());
        assert!(check_feedback_id("a:b c").is_err());
    }

    #[test]
    fn selectors_and_domains() {
        assert!(is_selector("mail2026"));
        assert!(is_selector("a.b"));
        assert!(!is_selector("a b"));
        assert!(is_domain("example.com"));
        assert!(!is_domain("localhost"));
        assert!(!is_domain("-x.com"));
    }
}
