//! `imaps://user@host:port/mailbox` and `imap://…` URLs, as `bounces imap` takes them: the
//! security the scheme asks for, the user and host, the port (993 or 143 by default) and the
//! mailbox (`INBOX` by default), percent-decoded. It must not connect or read secrets: a
//! password in the URL is refused.

use super::{Error, Security};

/// A parsed `imaps://user@host:port/mailbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapUrl {
    pub security: Security,
    pub user: String,
    pub host: String,
    pub port: u16,
    pub mailbox: String,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ImapUrl {
    /// # Errors
    /// When the scheme, user or host is missing or the port is not a number.
    pub fn parse(url: &str) -> Result<ImapUrl, Error> {
        let bad = |why| Error::Url {
            url: url.to_owned(),
            why,
        };
        let (security, rest) = if let Some(r) = url.strip_prefix("imaps://") {
            (Security::Tls, r)
        } else if let Some(r) = url.strip_prefix("imap://") {
            (Security::StartTls, r)
        } else {
            return Err(bad("the scheme must be imaps:// or imap://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("the user name is missing (user@host)"))?;
        if user.is_empty() {
            return Err(bad("the user name is missing (user@host)"));
        }
        if user.contains(':') {
            return Err(bad(
                "do not put the password in the URL; set MAILROOM_IMAP_PASSWORD",
            ));
        }
        let default_port = match security {
            Security::Tls => 993,
            Security::StartTls | Security::None => 143,
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
                None => default_port,
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| bad("the port is not a number"))?,
                ),
                None => (hostport.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let mailbox = percent_decode(path.trim_end_matches('/'));
        Ok(ImapUrl {
            security,
            user: percent_decode(user),
            host,
            port,
            mailbox: if mailbox.is_empty() {
                "INBOX".to_owned()
            } else {
                mailbox
            },
        })
    }

    pub(super) fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}
