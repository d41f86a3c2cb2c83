//! Mailbox providers: who hosts a recipient domain's mail, as data. A well-known consumer domain
//! (gmail.com, outlook.com, yahoo.com, ...) names its provider with no lookup at all; any other
//! domain is named by its MX host (`aspmx.l.google.com` → Google, `*.mail.protection.outlook.com`
//! → Microsoft 365, `*.pphosted.com` → Proofpoint, ...). Both are tables below: add a row, not
//! code. Each provider has the rate thresholds its own sender guidelines publish
//! ([`thresholds`]).
//!
//! This module owns the mapping only. Looking MX records up, with bounded concurrency and a
//! cache, is `resolve` (behind a trait, so the DNS client is plugged in by the caller); the cache
//! itself is a ledger table (`store::providers`). It must not do I/O.

pub mod resolve;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A mailbox provider (or a mail security gateway in front of a domain). The names
/// (`as_str`) are stored in the ledger's provider cache and printed in reports: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "&'static str")]
pub enum Provider {
    /// Gmail and Google Workspace.
    Google,
    /// Outlook.com, Hotmail, Live, MSN: Microsoft's consumer mail.
    Microsoft,
    /// Microsoft 365 / Exchange Online tenants.
    Microsoft365,
    /// Yahoo Mail and AOL (one platform), and the ISPs it hosts (AT&T, Verizon).
    Yahoo,
    /// iCloud Mail (icloud.com, me.com, mac.com).
    Apple,
    Proton,
    /// GMX, web.de and mail.com (United Internet).
    Gmx,
    MailRu,
    Yandex,
    Zoho,
    Fastmail,
    Comcast,
    /// Mimecast's email security gateway in front of a company domain.
    Mimecast,
    /// Proofpoint's gateway (pphosted.com).
    Proofpoint,
    /// Barracuda Email Security Service.
    Barracuda,
    /// Cisco Secure Email (IronPort) cloud gateway.
    Cisco,
    /// The domain's MX is in the domain itself: a mail server of its own.
    SelfHosted,
    /// An MX that the table does not know.
    Other,
    /// Not looked up (yet), or the lookup failed.
    Unknown,
}

impl Provider {
    /// Every provider, in report order (the named ones, then self-hosted, other, unknown).
    pub const ALL: [Provider; 19] = [
        Provider::Google,
        Provider::Microsoft,
        Provider::Microsoft365,
        Provider::Yahoo,
        Provider::Apple,
        Provider::Proton,
        Provider::Gmx,
        Provider::MailRu,
        Provider::Yandex,
        Provider::Zoho,
        Provider::Fastmail,
        Provider::Comcast,
        Provider::Mimecast,
        Provider::Proofpoint,
        Provider::Barracuda,
        Provider::Cisco,
        Provider::SelfHosted,
        Provider::Other,
        Provider::Unknown,
    ];

    /// The name stored in the ledger and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Microsoft => "microsoft",
            Provider::Microsoft365 => "microsoft365",
            Provider::Yahoo => "yahoo",
            Provider::Apple => "apple",
            Provider::Proton => "proton",
            Provider::Gmx => "gmx",
            Provider::MailRu => "mailru",
            Provider::Yandex => "yandex",
            Provider::Zoho => "zoho",
            Provider::Fastmail => "fastmail",
            Provider::Comcast => "comcast",
            Provider::Mimecast => "mimecast",
            Provider::Proofpoint => "proofpoint",
            Provider::Barracuda => "barracuda",
            Provider::Cisco => "cisco",
            Provider::SelfHosted => "self_hosted",
            Provider::Other => "other",
            Provider::Unknown => "unknown",
        }
    }

    /// The name people know it by, for tables.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Google => "Google",
            Provider::Microsoft => "Outlook.com",
            Provider::Microsoft365 => "Microsoft 365",
            Provider::Yahoo => "Yahoo/AOL",
            Provider::Apple => "Apple iCloud",
            Provider::Proton => "Proton",
            Provider::Gmx => "GMX/web.de",
            Provider::MailRu => "Mail.ru",
            Provider::Yandex => "Yandex",
            Provider::Zoho => "Zoho",
            Provider::Fastmail => "Fastmail",
            Provider::Comcast => "Comcast",
            Provider::Mimecast => "Mimecast",
            Provider::Proofpoint => "Proofpoint",
            Provider::Barracuda => "Barracuda",
            Provider::Cisco => "Cisco",
            Provider::SelfHosted => "self-hosted",
            Provider::Other => "other",
            Provider::Unknown => "unknown",
        }
    }
}

impl From<Provider> for &'static str {
    fn from(p: Provider) -> &'static str {
        p.as_str()
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ledger held a provider name this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// Consumer domains whose provider needs no lookup: they are the provider's own.
const CONSUMER_DOMAINS: &[(&str, Provider)] = &[
    ("gmail.com", Provider::Google),
    ("googlemail.com", Provider::Google),
    ("outlook.com", Provider::Microsoft),
    ("hotmail.com", Provider::Microsoft),
    ("live.com", Provider::Microsoft),
    ("msn.com", Provider::Microsoft),
    ("passport.com", Provider::Microsoft),
    ("windowslive.com", Provider::Microsoft),
    ("hotmail.co.uk", Provider::Microsoft),
    ("hotmail.fr", Provider::Microsoft),
    ("hotmail.de", Provider::Microsoft),
    ("hotmail.it", Provider::Microsoft),
    ("hotmail.es", Provider::Microsoft),
    ("live.co.uk", Provider::Microsoft),
    ("live.fr", Provider::Microsoft),
    ("live.de", Provider::Microsoft),
    ("live.nl", Provider::Microsoft),
    ("outlook.fr", Provider::Microsoft),
    ("outlook.de", Provider::Microsoft),
    ("outlook.es", Provider::Microsoft),
    ("yahoo.com", Provider::Yahoo),
    ("yahoo.co.uk", Provider::Yahoo),
    ("yahoo.fr", Provider::Yahoo),
    ("yahoo.de", Provider::Yahoo),
    ("yahoo.it", Provider::Yahoo),
    ("yahoo.es", Provider::Yahoo),
    ("yahoo.ca", Provider::Yahoo),
    ("yahoo.com.au", Provider::Yahoo),
    ("yahoo.com.br", Provider::Yahoo),
    ("yahoo.in", Provider::Yahoo),
    ("ymail.com", Provider::Yahoo),
    ("rocketmail.com", Provider::Yahoo),
    ("aol.com", Provider::Yahoo),
    ("aim.com", Provider::Yahoo),
    ("verizon.net", Provider::Yahoo),
    ("att.net", Provider::Yahoo),
    ("sbcglobal.net", Provider::Yahoo),
    ("icloud.com", Provider::Apple),
    ("me.com", Provider::Apple),
    ("mac.com", Provider::Apple),
    ("proton.me", Provider::Proton),
    ("protonmail.com", Provider::Proton),
    ("protonmail.ch", Provider::Proton),
    ("pm.me", Provider::Proton),
    ("gmx.de", Provider::Gmx),
    ("gmx.net", Provider::Gmx),
    ("gmx.at", Provider::Gmx),
    ("gmx.ch", Provider::Gmx),
    ("gmx.com", Provider::Gmx),
    ("gmx.fr", Provider::Gmx),
    ("web.de", Provider::Gmx),
    ("mail.com", Provider::Gmx),
    ("mail.ru", Provider::MailRu),
    ("inbox.ru", Provider::MailRu),
    ("list.ru", Provider::MailRu),
    ("bk.ru", Provider::MailRu),
    ("internet.ru", Provider::MailRu),
    ("yandex.ru", Provider::Yandex),
    ("yandex.com", Provider::Yandex),
    ("ya.ru", Provider::Yandex),
    ("yandex.ua", Provider::Yandex),
    ("yandex.by", Provider::Yandex),
    ("yandex.kz", Provider::Yandex),
    ("zoho.com", Provider::Zoho),
    ("zohomail.com", Provider::Zoho),
    ("zohomail.eu", Provider::Zoho),
    ("fastmail.com", Provider::Fastmail),
    ("fastmail.fm", Provider::Fastmail),
    ("comcast.net", Provider::Comcast),
];

/// MX host suffixes (a label boundary before them) and whose exchanges they are; the first
/// match wins, so a more specific suffix comes before a shorter one.
const MX_SUFFIXES: &[(&str, Provider)] = &[
    // Outlook.com's own domains: outlook-com.olc.protection.outlook.com.
    ("olc.protection.outlook.com", Provider::Microsoft),
    // Exchange Online tenants: <tenant>.mail.protection.outlook.com, and the DNSSEC-signed
    // <tenant>.<region>.mx.microsoft introduced in 2024.
    ("mail.protection.outlook.com", Provider::Microsoft365),
    ("mx.microsoft", Provider::Microsoft365),
    ("google.com", Provider::Google),
    ("googlemail.com", Provider::Google),
    ("yahoodns.net", Provider::Yahoo),
    ("mail.icloud.com", Provider::Apple),
    ("protonmail.ch", Provider::Proton),
    ("gmx.net", Provider::Gmx),
    ("gmx.com", Provider::Gmx),
    ("web.de", Provider::Gmx),
    ("mail.com", Provider::Gmx),
    ("mail.ru", Provider::MailRu),
    ("yandex.ru", Provider::Yandex),
    ("yandex.net", Provider::Yandex),
    ("zoho.com", Provider::Zoho),
    ("zoho.eu", Provider::Zoho),
    ("zoho.in", Provider::Zoho),
    ("messagingengine.com", Provider::Fastmail),
    ("comcast.net", Provider::Comcast),
    ("mimecast.com", Provider::Mimecast),
    ("mimecast.co.za", Provider::Mimecast),
    ("pphosted.com", Provider::Proofpoint),
    ("ppe-hosted.com", Provider::Proofpoint),
    ("barracudanetworks.com", Provider::Barracuda),
    ("iphmx.com", Provider::Cisco),
];

/// The provider of a well-known consumer domain (no lookup needed), case-insensitively.
pub fn of_domain(domain: &str) -> Option<Provider> {
    let domain = domain.trim().trim_end_matches('.');
    CONSUMER_DOMAINS
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(domain))
        .map(|(_, p)| *p)
}

/// Whether `host` is `suffix` or ends with `.suffix` (ASCII case-insensitive).
fn ends_with_label(host: &str, suffix: &str) -> bool {
    let (h, s) = (host.as_bytes(), suffix.as_bytes());
    h.len() >= s.len()
        && h[h.len() - s.len()..].eq_ignore_ascii_case(s)
        && (h.len() == s.len() || h[h.len() - s.len() - 1] == b'.')
}

/// The last two labels of a name: its registrable part, approximately (no public suffix list:
/// `example.co.uk` gives `co.uk`, which only makes "self-hosted" a little generous).
fn last_two_labels(name: &str) -> &str {
    let mut dots = name.rmatch_indices('.');
    dots.next();
    match dots.next() {
        Some((at, _)) => &name[at + 1..],
        None => name,
    }
}

/// The provider behind `domain` whose preferred MX is `mx`: a known exchange, else
/// self-hosted when the MX sits in the domain's own name, else other.
pub fn of_mx(domain: &str, mx: &str) -> Provider {
    let mx = mx.trim().trim_end_matches('.');
    let domain = domain.trim().trim_end_matches('.');
    if let Some((_, p)) = MX_SUFFIXES.iter().find(|(s, _)| ends_with_label(mx, s)) {
        return *p;
    }
    if mx.is_empty() {
        return Provider::Unknown;
    }
    if last_two_labels(mx).eq_ignore_ascii_case(last_two_labels(domain)) {
        Provider::SelfHosted
    } else {
        Provider::Other
    }
}

/// The provider a reply or DSN text names about itself (Google's replies end in "gsmtp",
/// Microsoft's name protection.outlook.com, ...), for replies whose recipient domain says
/// nothing (a Workspace or 365 customer before any lookup).
pub fn of_reply_text(lowercase_text: &str) -> Option<Provider> {
    const MARKERS: &[(&str, Provider)] = &[
        ("gsmtp", Provider::Google),
        ("support.google.com", Provider::Google),
        ("olc.protection.outlook.com", Provider::Microsoft),
        ("protection.outlook.com", Provider::Microsoft365),
        ("outlook.com", Provider::Microsoft),
        ("hotmail.com", Provider::Microsoft),
        ("yahoodns.net", Provider::Yahoo),
        ("senders.yahooinc.com", Provider::Yahoo),
        ("yahoo.com", Provider::Yahoo),
        ("icloud.com", Provider::Apple),
        ("support.apple.com", Provider::Apple),
        ("comcast.net", Provider::Comcast),
        ("mimecast", Provider::Mimecast),
        ("pphosted.com", Provider::Proofpoint),
        ("proofpoint", Provider::Proofpoint),
        ("barracuda", Provider::Barracuda),
    ];
    MARKERS
        .iter()
        .find(|(m, _)| lowercase_text.contains(m))
        .map(|(_, p)| *p)
}

/// Warning and alarm levels for one provider's rates, as fractions, with where they come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub bounce_warn: f64,
    pub bounce_alarm: f64,
    pub complaint_warn: f64,
    pub complaint_alarm: f64,
    /// The public page the numbers come from (or that none is published).
    pub source: &'static str,
}

/// Bounces 2 % / 5 % (Amazon SES reviews an account at 5 %), complaints 0.1 % / 0.3 %: what
/// large providers tolerate when they publish nothing of their own.
pub const DEFAULT_THRESHOLDS: Thresholds = Thresholds {
    bounce_warn: 0.02,
    bounce_alarm: 0.05,
    complaint_warn: 0.001,
    complaint_alarm: 0.003,
    source: "no published figure: common industry levels (SES review at 5% bounces)",
};

/// The rate thresholds of one provider.
pub fn thresholds(provider: Provider) -> Thresholds {
    match provider {
        // Gmail sender guidelines: keep user-reported spam below 0.10%, never reach 0.30%.
        Provider::Google => Thresholds {
            source: "Gmail sender guidelines (support.google.com/mail/answer/81126): spam rate \
                     below 0.1%, never 0.3%",
            ..DEFAULT_THRESHOLDS
        },
        // Yahoo sender best practices: complaint rate below 0.3%.
        Provider::Yahoo => Thresholds {
            source: "Yahoo sender best practices (senders.yahooinc.com): complaints below 0.3%",
            ..DEFAULT_THRESHOLDS
        },
        // Microsoft publishes no complaint figure for Outlook.com; SNDS colours an IP red from
        // about 10% complaints, far too late: keep the Gmail levels.
        Provider::Microsoft | Provider::Microsoft365 => Thresholds {
            source: "Outlook.com publishes no figure (SNDS): Gmail's levels applied",
            ..DEFAULT_THRESHOLDS
        },
        _ => DEFAULT_THRESHOLDS,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            assert!(seen.insert(p.as_str()), "{p}");
        }
        assert!("hotmail".parse::<Provider>().is_err());
    }

    #[test]
    fn consumer_domains_need_no_lookup() {
        let table: &[(&str, Option<Provider>)] = &[
            ("gmail.com", Some(Provider::Google)),
            ("GMail.Com", Some(Provider::Google)),
            ("googlemail.com", Some(Provider::Google)),
            ("outlook.com", Some(Provider::Microsoft)),
            ("hotmail.co.uk", Some(Provider::Microsoft)),
            ("live.com", Some(Provider::Microsoft)),
            ("yahoo.com", Some(Provider::Yahoo)),
            ("aol.com", Some(Provider::Yahoo)),
            ("icloud.com", Some(Provider::Apple)),
            ("me.com", Some(Provider::Apple)),
            ("proton.me", Some(Provider::Proton)),
            ("web.de", Some(Provider::Gmx)),
            ("gmx.de", Some(Provider::Gmx)),
            ("mail.ru", Some(Provider::MailRu)),
            ("yandex.ru", Some(Provider::Yandex)),
            ("zoho.com", Some(Provider::Zoho)),
            ("fastmail.com", Some(Provider::Fastmail)),
            ("comcast.net", Some(Provider::Comcast)),
            ("gmail.com.", Some(Provider::Google)),
            // Yahoo! Japan is another company; company domains need their MX.
            ("yahoo.co.jp", None),
            ("example.com", None),
            ("notgmail.com", None),
        ];
        for (domain, want) in table {
            assert_eq!(of_domain(domain), *want, "{domain}");
        }
    }

    #[test]
    fn mx_hosts_name_their_provider() {
        let table: &[(&str, &str, Provider)] = &[
            ("example.com", "aspmx.l.google.com", Provider::Google),
            ("example.com", "ALT1.ASPMX.L.GOOGLE.COM.", Provider::Google),
            (
                "hotmail.com",
                "hotmail-com.olc.protection.outlook.com",
                Provider::Microsoft,
            ),
            (
                "corp.example",
                "corp-example.mail.protection.outlook.com",
                Provider::Microsoft365,
            ),
            (
                "corp.example",
                "corp-example.r-v1.mx.microsoft",
                Provider::Microsoft365,
            ),
            ("aol.com", "mx-aol.mail.gm0.yahoodns.net", Provider::Yahoo),
            ("me.com", "mx01.mail.icloud.com", Provider::Apple),
            ("proton.me", "mailsec.protonmail.ch", Provider::Proton),
            ("gmx.de", "mx00.emig.gmx.net", Provider::Gmx),
            ("web.de", "mx-ha03.web.de", Provider::Gmx),
            ("mail.ru", "mxs.mail.ru", Provider::MailRu),
            ("ya.ru", "mx.yandex.ru", Provider::Yandex),
            ("corp.example", "mx.zoho.eu", Provider::Zoho),
            (
                "corp.example",
                "in1-smtp.messagingengine.com",
                Provider::Fastmail,
            ),
            ("comcast.net", "mx1a1.comcast.net", Provider::Comcast),
            (
                "corp.example",
                "eu-smtp-inbound-1.mimecast.com",
                Provider::Mimecast,
            ),
            (
                "corp.example",
                "mx0a-001b2d01.pphosted.com",
                Provider::Proofpoint,
            ),
            (
                "corp.example",
                "d123456a.ess.barracudanetworks.com",
                Provider::Barracuda,
            ),
            ("corp.example", "mx1.hc1234-56.iphmx.com", Provider::Cisco),
            ("corp.example", "mail.corp.example", Provider::SelfHosted),
            ("sub.corp.example", "mx.corp.example", Provider::SelfHosted),
            ("corp.example", "mx.hosting.example", Provider::Other),
            // A label boundary is needed: "notgoogle.com" is not Google.
            ("corp.example", "mx.notgoogle.com", Provider::Other),
            ("corp.example", "", Provider::Unknown),
        ];
        for (domain, mx, want) in table {
            assert_eq!(of_mx(domain, mx), *want, "{domain} {mx}");
        }
    }

    #[test]
    fn reply_texts_name_the_provider_that_wrote_them() {
        let table: &[(&str, Option<Provider>)] = &[
            (
                "550 5.7.26 unauthenticated email ... - gsmtp",
                Some(Provider::Google),
            ),
            (
                "550 5.7.515 access denied ... hotmail-com.olc.protection.outlook.com",
                Some(Provider::Microsoft),
            ),
            ("421 4.7.0 [tss04] messages from 192.0.2.1 ... ", None),
            (
                "see https://senders.yahooinc.com/error-codes",
                Some(Provider::Yahoo),
            ),
            ("550 5.1.1 no such user", None),
        ];
        for (text, want) in table {
            assert_eq!(of_reply_text(text), *want, "{text}");
        }
    }

    #[test]
    fn gmail_complaint_thresholds_are_the_published_ones() {
        let t = thresholds(Provider::Google);
        assert_eq!((t.complaint_warn, t.complaint_alarm), (0.001, 0.003));
        assert!(t.source.contains("81126"));
        assert_eq!(thresholds(Provider::Other), DEFAULT_THRESHOLDS);
    }
}
