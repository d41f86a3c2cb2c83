//! The published DKIM keys of a campaign's signatures: the record at
//! `selector._domainkey.domain` exists, parses, has a strong enough key, and verifies a sample
//! message signed with the configured private key (mail-auth's verifier, given the record this
//! lookup fetched, so the check and the lookup see the same record). `send` runs this before
//! its first connection; `doctor --dns` reports it.

use std::sync::Arc;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, Parameters, ResolverCache, Txt};
use serde::Serialize;

use crate::dkim::{KeyKind, Signer};
use crate::dns::{LookupError, Resolver};

/// What the published record of one signature said.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Published {
    /// The record verifies a signature made with the configured key.
    Matches { kind: KeyKind, record: String },
    /// A record exists but the configured key's signature does not verify with it.
    Mismatch {
        kind: Option<KeyKind>,
        record: String,
        reason: String,
    },
    /// No TXT record at the selector name (NXDOMAIN or no data).
    Missing,
    /// A record that is not a DKIM key record (or whose key does not parse).
    Invalid { record: String, reason: String },
    /// `p=` is empty: the key was revoked (RFC 6376 §3.6.1).
    Revoked { record: String },
    /// The lookup got no answer.
    LookupFailed { error: LookupError },
}

/// One signature's check.
#[derive(Debug, Clone, Serialize)]
pub struct KeyCheck {
    pub domain: String,
    pub selector: String,
    /// The configured key.
    pub configured: KeyKind,
    /// `selector._domainkey.domain`.
    pub name: String,
    /// The record the configured key needs, to print as the fix.
    pub expected_record: String,
    pub published: Published,
}

/// A TXT cache holding exactly the records fetched here: mail-auth's verifier reads the key from
/// it and never asks DNS again.
struct Fetched(Vec<(Box<str>, Txt)>);

impl ResolverCache<Box<str>, Txt> for Fetched {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0
            .iter()
            .find(|(k, _)| <Box<str> as std::borrow::Borrow<Q>>::borrow(k) == name)
            .map(|(_, v)| v.clone())
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: std::time::Instant) {}
}

/// The key kind a record declares: `k=` (RSA when absent, RFC 6376 §3.6.1) and, for RSA, the
/// modulus length mail-auth reads from `p=`.
fn declared_kind(record: &str, key: &DomainKey) -> KeyKind {
    let ed = tags(record)
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("k") && v.eq_ignore_ascii_case("ed25519"));
    if ed {
        KeyKind::Ed25519
    } else {
        KeyKind::Rsa {
            bits: key.p.public_key_bits(),
        }
    }
}

/// `tag=value` pairs of a DKIM or DMARC record, whitespace trimmed (RFC 6376 §3.2).
pub(crate) fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .filter_map(|t| {
            let (k, v) = t.split_once('=')?;
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            Some((k.trim().to_owned(), v))
        })
        .collect()
}

/// A message to sign for the check: never sent.
fn sample(domain: &str) -> Vec<u8> {
    format!(
        "From: <postmaster@{domain}>\r\nTo: <postmaster@{domain}>\r\nSubject: mailroom DKIM key check\r\n\
         Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <key-check@{domain}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nSigned only to check the published key; never sent.\r\n"
    )
    .into_bytes()
}

/// Checks every signature of `signer` against DNS, concurrently.
pub async fn check_keys(resolver: &Resolver, signer: &Signer) -> Vec<KeyCheck> {
    let lookups = signer.signatures().map(|public| async move {
        let name = format!("{}._domainkey.{}", public.selector, public.domain);
        (public, resolver.txt(&name).await, name)
    });
    let fetched = futures_util::future::join_all(lookups).await;
    let mut checks = Vec::with_capacity(fetched.len());
    for (public, result, name) in fetched {
        let expected = crate::dkim::TxtRecord {
            name: name.clone(),
            value: format!("v=DKIM1; k={}; p={}", public.kind.record_tag(), public.p),
        };
        let published = match result {
            Err(error) => Published::LookupFailed { error },
            Ok(records) => judge(resolver, signer, public, &name, &records).await,
        };
        checks.push(KeyCheck {
            domain: public.domain.clone(),
            selector: public.selector.clone(),
            configured: public.kind,
            name,
            expected_record: expected.zone_line(),
            published,
        });
    }
    checks
}

async fn judge(
    resolver: &Resolver,
    signer: &Signer,
    public: &crate::dkim::Public,
    name: &str,
    records: &[Vec<u8>],
) -> Published {
    let Some(raw) = records
        .iter()
        .find(|r| {
            let t = String::from_utf8_lossy(r);
            // A key record without v= is valid (RFC 6376 §3.6.1: v= is RECOMMENDED).
            t.contains("p=")
        })
        .or(records.first())
    else {
        return Published::Missing;
    };
    let record = String::from_utf8_lossy(raw).into_owned();
    let key = match DomainKey::parse(raw) {
        Ok(k) => k,
        Err(mail_auth::Error::Dkim(mail_auth::dkim::DkimError::RevokedPublicKey)) => {
            return Published::Revoked { record };
        }
        Err(e) => {
            return Published::Invalid {
                record,
                reason: e.to_string(),
            };
        }
    };
    let kind = declared_kind(&record, &key);
    let message = sample(&public.domain);
    let headers = match signer.each_header(&message) {
        Ok(h) => h,
        Err(e) => {
            return Published::Mismatch {
                kind: Some(kind),
                record,
                reason: e.to_string(),
            };
        }
    };
    let Some((_, header)) = headers
        .into_iter()
        .find(|(p, _)| p.domain == public.domain && p.selector == public.selector)
    else {
        return Published::Missing;
    };
    let mut signed = header;
    signed.extend_from_slice(&message);
    let Some(parsed) = AuthenticatedMessage::parse(&signed) else {
        return Published::Mismatch {
            kind: Some(kind),
            record,
            reason: "the sample message does not parse (a bug in mailroom)".into(),
        };
    };
    let cache = Fetched(vec![(
        format!("{name}.").into_boxed_str(),
        Txt::DomainKey(Arc::new(key)),
    )]);
    // The cache answers the only lookup the verifier makes: no second query.
    let verifier = resolver.authenticator();
    let outputs = verifier
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&cache))
        .await;
    match outputs.first().map(mail_auth::DkimOutput::result) {
        Some(DkimResult::Pass) => Published::Matches { kind, record },
        Some(other) => Published::Mismatch {
            kind: Some(kind),
            record,
            reason: other.to_string(),
        },
        None => Published::Mismatch {
            kind: Some(kind),
            record,
            reason: "no verification result".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_ignore_whitespace_inside_values() {
        let t = tags("v=DKIM1; k=rsa;\r\n p=AB CD\t EF");
        assert_eq!(t[2], ("p".to_owned(), "ABCDEF".to_owned()));
        assert_eq!(t.len(), 3);
    }
}
