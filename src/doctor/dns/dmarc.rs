//! DMARC (RFC 9989, "DMARCbis") as mail-auth applies it: the policy record found by the DNS
//! tree walk from the From domain toward the top-level domain (`psd=y`/`psd=n` stop it), the
//! organisational domain chosen from that walk, and identifier alignment (strict: equal;
//! relaxed: the same organisational domain). mail-auth keeps its walk private, so it is
//! mirrored here over `dns::Resolver`, whose failures must be told apart from "no record".

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::dmarc::{Alignment, Dmarc, Policy, Psd};
use serde::Serialize;

use crate::dns::{LookupError, Resolver};

/// The record that applies to a From domain.
#[derive(Debug, Clone, Serialize)]
pub struct DmarcReport {
    pub from_domain: String,
    /// Where the applying record was found (`_dmarc.<this>`); `None`: no record at all.
    pub found_at: Option<String>,
    pub record: Option<String>,
    /// `p=` (or `sp=` when the record is the organisational domain's).
    pub policy: Option<String>,
    pub pct: Option<u8>,
    pub rua: Vec<String>,
    /// "relaxed" or "strict".
    pub adkim: Option<String>,
    pub aspf: Option<String>,
    /// `t=y`: test mode, the policy is applied one step weaker.
    pub testing: bool,
    pub organisational_domain: String,
    /// The walk got no answer somewhere.
    pub failed: Option<LookupError>,
    #[serde(skip)]
    pub(crate) parsed: Option<Dmarc>,
}

/// Every valid record from `domain` up to the top-level domain, longest name first (RFC 9989
/// §4.10: the starting name, then 7 labels at most, then one label less each time).
async fn tree_walk(
    resolver: &Resolver,
    domain: &str,
) -> Result<Vec<(String, Dmarc, String)>, LookupError> {
    let labels: Vec<&str> = domain.split('.').filter(|l| !l.is_empty()).collect();
    let total = labels.len();
    let mut found = Vec::new();
    if total < 2 {
        return Ok(found);
    }
    let mut count = total;
    loop {
        let name = labels[total - count..].join(".");
        for raw in resolver.txt(&format!("_dmarc.{name}")).await? {
            if let Ok(d) = Dmarc::parse(&raw) {
                let stop = matches!(d.psd, Psd::Yes | Psd::No);
                found.push((name.clone(), d, String::from_utf8_lossy(&raw).into_owned()));
                if stop {
                    return Ok(found);
                }
                break;
            }
        }
        if count == 1 {
            break;
        }
        count = if count >= 8 { 7 } else { count - 1 };
    }
    Ok(found)
}

/// RFC 9989 §4.10.2, as mail-auth selects it: the name with `psd=n`, the one just below a
/// `psd=y`, else the shortest name holding a record; the domain itself without any record.
fn organisational(walk: &[(String, Dmarc, String)], start: &str) -> String {
    for (name, record, _) in walk {
        match record.psd {
            Psd::No => return name.clone(),
            Psd::Yes if name != start => {
                let depth = name.split('.').count() + 1;
                let labels: Vec<&str> = start.split('.').collect();
                return labels[labels.len().saturating_sub(depth)..].join(".");
            }
            _ => {}
        }
    }
    walk.last()
        .map_or_else(|| start.to_owned(), |(n, _, _)| n.clone())
}

/// The organisational domain of `domain`.
pub async fn organisational_domain(
    resolver: &Resolver,
    domain: &str,
) -> Result<String, LookupError> {
    let walk = tree_walk(resolver, domain).await?;
    Ok(organisational(&walk, domain))
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::None => "none",
        Policy::Quarantine => "quarantine",
        Policy::Reject => "reject",
        Policy::Unspecified => "unspecified",
    }
}

/// Looks up the policy that applies to `from_domain`.
pub async fn check(resolver: &Resolver, from_domain: &str) -> DmarcReport {
    let mut report = DmarcReport {
        from_domain: from_domain.to_owned(),
        found_at: None,
        record: None,
        policy: None,
        pct: None,
        rua: Vec::new(),
        adkim: None,
        aspf: None,
        testing: false,
        organisational_domain: from_domain.to_owned(),
        failed: None,
        parsed: None,
    };
    let walk = match tree_walk(resolver, from_domain).await {
        Ok(w) => w,
        Err(e) => {
            report.failed = Some(e);
            return report;
        }
    };
    let org = organisational(&walk, from_domain);
    let own = walk.iter().find(|(n, _, _)| n == from_domain);
    let applying = own
        .or_else(|| walk.iter().find(|(n, _, _)| *n == org))
        .or(walk.last());
    report.organisational_domain = org;
    let Some((name, record, raw)) = applying else {
        return report;
    };
    let policy = if own.is_some() { record.p } else { record.sp };
    report.found_at = Some(name.clone());
    report.record = Some(raw.clone());
    report.policy = Some(policy_name(policy).to_owned());
    report.pct = super::dkim::tags(raw)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("pct"))
        .and_then(|(_, v)| v.parse().ok());
    report.rua = record.rua().iter().map(|u| u.uri().to_owned()).collect();
    let mode = |a: Alignment| match a {
        Alignment::Relaxed => "relaxed".to_owned(),
        Alignment::Strict => "strict".to_owned(),
    };
    report.adkim = Some(mode(record.adkim));
    report.aspf = Some(mode(record.aspf));
    report.testing = record.t;
    report.parsed = Some(record.clone());
    report
}

/// How an identifier domain lines up with the From domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Aligned {
    pub strict: bool,
    pub relaxed: bool,
}

/// Strict and relaxed alignment of `domain` with `from` (RFC 9989 §4.4), `from_org` being
/// the From domain's organisational domain.
pub async fn alignment(
    resolver: &Resolver,
    domain: &str,
    from: &str,
    from_org: &str,
) -> Result<Aligned, LookupError> {
    let domain = domain.to_ascii_lowercase();
    let strict = domain == from;
    let under = domain == from_org || domain.ends_with(&format!(".{from_org}"));
    let relaxed = strict || (under && organisational_domain(resolver, &domain).await? == from_org);
    Ok(Aligned { strict, relaxed })
}

impl DmarcReport {
    /// The alignment mode the record asks for DKIM (`adkim`), relaxed by default.
    pub fn dkim_strict(&self) -> bool {
        self.parsed
            .as_ref()
            .is_some_and(|d| d.adkim == Alignment::Strict)
    }

    /// The alignment mode the record asks for SPF (`aspf`), relaxed by default.
    pub fn spf_strict(&self) -> bool {
        self.parsed
            .as_ref()
            .is_some_and(|d| d.aspf == Alignment::Strict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(s: &str) -> Dmarc {
        Dmarc::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn organisational_domain_follows_the_walk() {
        let plain = vec![(
            "example.com".to_owned(),
            rec("v=DMARC1; p=reject"),
            String::new(),
        )];
        assert_eq!(organisational(&plain, "news.example.com"), "example.com");
        assert_eq!(organisational(&[], "news.example.com"), "news.example.com");
        let psd = vec![(
            "co.uk".to_owned(),
            rec("v=DMARC1; p=none; psd=y"),
            String::new(),
        )];
        assert_eq!(organisational(&psd, "a.shop.co.uk"), "shop.co.uk");
        let own = vec![(
            "a.example.com".to_owned(),
            rec("v=DMARC1; p=none; psd=n"),
            String::new(),
        )];
        assert_eq!(organisational(&own, "a.example.com"), "a.example.com");
    }
}
