//! SPF (RFC 7208) as a sender can check it without knowing its relay's address: exactly one
//! `v=spf1` record, that it parses (mail-auth's parser), the DNS-querying terms counted through
//! `include:` and `redirect=` (at most 10, §4.6.4), and how it ends (`-all`/`~all`; `?all` is a
//! warning, `+all` an error). Whether the relay's address is authorised needs that address:
//! `doctor --inspect` on a received copy shows the receiver's result.

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf};
use serde::Serialize;

use crate::dns::{LookupError, Resolver};

/// RFC 7208 §4.6.4: more than 10 DNS-querying terms is a permanent error.
pub const MAX_LOOKUPS: usize = 10;

/// Includes followed at most (a loop or a very deep chain stops here; counting is past 10 by then).
const MAX_RECORDS: usize = 24;

/// How a domain's SPF ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// `-all`: everything else fails.
    Fail,
    /// `~all`: everything else soft-fails.
    SoftFail,
    /// `?all` or no `all` at all: everything else is neutral, as if there were no SPF.
    Neutral,
    /// `+all` (or `all`): anyone may send as this domain.
    Pass,
}

/// What one domain's SPF looks like.
#[derive(Debug, Clone, Serialize)]
pub struct SpfReport {
    pub domain: String,
    /// Every `v=spf1` record found at the domain (one is right).
    pub records: Vec<String>,
    /// The terms of the record, in order.
    pub terms: Vec<String>,
    /// DNS-querying terms, includes and redirects followed.
    pub lookups: usize,
    /// Each counted term, as `domain: term`.
    pub counted: Vec<String>,
    pub ending: Option<Ending>,
    /// Parse errors, missing included records, macros that cannot be followed.
    pub problems: Vec<String>,
    /// A lookup that got no answer: the report is incomplete.
    pub failed: Option<LookupError>,
}

/// Fetches and evaluates `domain`'s SPF.
pub async fn check(resolver: &Resolver, domain: &str) -> SpfReport {
    let mut report = SpfReport {
        domain: domain.to_owned(),
        records: Vec::new(),
        terms: Vec::new(),
        lookups: 0,
        counted: Vec::new(),
        ending: None,
        problems: Vec::new(),
        failed: None,
    };
    let txt = match resolver.txt(domain).await {
        Ok(t) => t,
        Err(e) => {
            report.failed = Some(e);
            return report;
        }
    };
    report.records = spf_records(&txt);
    let [record] = report.records.as_slice() else {
        return report;
    };
    report.terms = record
        .split_ascii_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let spf = match Spf::parse(record.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            report
                .problems
                .push(format!("the record does not parse: {e}"));
            return report;
        }
    };
    report.ending = ending(&spf);
    // Breadth-first through includes and redirects, counting as a receiver would.
    let mut queue = vec![(domain.to_owned(), spf)];
    let mut seen = 1;
    while let Some((at, spf)) = queue.pop() {
        let mut next = Vec::new();
        for d in spf.directives.iter() {
            let (term, target) = match &d.mechanism {
                Mechanism::Include { macro_string } => ("include", Some(macro_string)),
                Mechanism::A { macro_string, .. } => ("a", Some(macro_string)),
                Mechanism::Mx { macro_string, .. } => ("mx", Some(macro_string)),
                Mechanism::Ptr { macro_string } => ("ptr", Some(macro_string)),
                Mechanism::Exists { macro_string } => ("exists", Some(macro_string)),
                Mechanism::All | Mechanism::Ip4 { .. } | Mechanism::Ip6 { .. } => continue,
            };
            report.lookups += 1;
            let shown = target
                .and_then(literal)
                .map_or_else(|| term.to_owned(), |t| format!("{term}:{t}"));
            report.counted.push(format!("{at}: {shown}"));
            if term == "include" {
                next.push(target.and_then(literal));
            }
        }
        if let Some(r) = &spf.redirect {
            report.lookups += 1;
            report.counted.push(format!(
                "{at}: redirect={}",
                literal(r).unwrap_or_else(|| "(macro)".into())
            ));
            next.push(literal(r));
        }
        for target in next {
            let Some(target) = target else {
                report.problems.push(format!(
                    "{at}: an include or redirect uses a macro, which is not followed"
                ));
                continue;
            };
            if seen >= MAX_RECORDS {
                report.problems.push(format!(
                    "stopped following includes after {MAX_RECORDS} records"
                ));
                break;
            }
            seen += 1;
            let txt = match resolver.txt(&target).await {
                Ok(t) => t,
                Err(e) => {
                    report.failed = Some(e);
                    return report;
                }
            };
            let records = spf_records(&txt);
            match records.as_slice() {
                [] => report.problems.push(format!(
                    "{target} (included by {at}) has no SPF record: receivers return permerror"
                )),
                [one] => match Spf::parse(one.as_bytes()) {
                    Ok(s) => queue.insert(0, (target, s)),
                    Err(e) => report.problems.push(format!(
                        "{target} (included by {at}): its record does not parse: {e}"
                    )),
                },
                _ => report.problems.push(format!(
                    "{target} (included by {at}) has {} SPF records: receivers return permerror",
                    records.len()
                )),
            }
        }
    }
    report
}

/// The TXT records that are SPF records (RFC 7208 §4.5: `v=spf1` followed by a space or the end).
fn spf_records(txt: &[Vec<u8>]) -> Vec<String> {
    txt.iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .filter(|r| {
            let lower = r.to_ascii_lowercase();
            lower == "v=spf1" || lower.starts_with("v=spf1 ")
        })
        .collect()
}

/// A macro string that is a plain domain.
fn literal(m: &Macro) -> Option<String> {
    match m {
        Macro::Literal(bytes) => Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('.')
                .to_owned(),
        ),
        _ => None,
    }
}

/// The qualifier of the record's `all`, or neutral when it has none and no redirect.
fn ending(spf: &Spf) -> Option<Ending> {
    let all = spf
        .directives
        .iter()
        .find(|d| d.mechanism == Mechanism::All)
        .map(|d| match d.qualifier {
            Qualifier::Fail => Ending::Fail,
            Qualifier::SoftFail => Ending::SoftFail,
            Qualifier::Neutral => Ending::Neutral,
            Qualifier::Pass => Ending::Pass,
        });
    match (all, &spf.redirect) {
        (Some(e), _) => Some(e),
        // The redirected record decides; it is counted and followed above.
        (None, Some(_)) => None,
        (None, None) => Some(Ending::Neutral),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Spf {
        Spf::parse(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn endings() {
        assert_eq!(
            ending(&parsed("v=spf1 ip4:192.0.2.1 -all")),
            Some(Ending::Fail)
        );
        assert_eq!(ending(&parsed("v=spf1 mx ~all")), Some(Ending::SoftFail));
        assert_eq!(ending(&parsed("v=spf1 mx ?all")), Some(Ending::Neutral));
        assert_eq!(ending(&parsed("v=spf1 +all")), Some(Ending::Pass));
        assert_eq!(ending(&parsed("v=spf1 mx")), Some(Ending::Neutral));
        assert_eq!(ending(&parsed("v=spf1 redirect=_spf.example.com")), None);
    }

    #[test]
    fn only_spf1_records_count() {
        let txt = vec![
            b"v=spf1 -all".to_vec(),
            b"google-site-verification=x".to_vec(),
            b"v=spf10".to_vec(),
            b"V=SPF1 ~all".to_vec(),
        ];
        assert_eq!(spf_records(&txt), ["v=spf1 -all", "V=SPF1 ~all"]);
    }
}
