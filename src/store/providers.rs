//! The ledger's provider cache (`domain_providers`, migration 0008): each recipient domain's
//! MX and the mailbox provider it names, with the DNS answer's lifetime. Written by the
//! background resolution of a send (through the writer thread) or by any [`Ledger`] holder;
//! read by reports, the dashboard and the circuit breaker.
//!
//! Plain values in, plain values out: what a provider is, and how an MX maps to one, is
//! `crate::provider`'s; this module only stores the names.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::{Error, Ledger, Reader, sqlite};
use crate::model::CampaignId;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    pub domain: String,
    /// The preferred exchange, when the lookup found one.
    pub mx: Option<String>,
    /// A `provider::Provider` name.
    pub provider: String,
    /// Unix milliseconds.
    pub checked_at: i64,
    pub expires_at: i64,
}

/// Inserts or replaces cache rows (inside the caller's transaction).
pub(super) fn upsert(conn: &Connection, records: &[ProviderRecord]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO domain_providers (domain, mx, provider, checked_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (domain) DO UPDATE SET mx = excluded.mx, provider = excluded.provider,
             checked_at = excluded.checked_at, expires_at = excluded.expires_at",
    )?;
    // In key order: a run's batch is tens of thousands of domains in the order their answers
    // came, and inserting them sorted walks the table's B-tree once instead of at random.
    let mut sorted: Vec<&ProviderRecord> = records.iter().collect();
    sorted.sort_unstable_by(|a, b| a.domain.cmp(&b.domain));
    for r in sorted {
        stmt.execute(params![
            r.domain,
            r.mx,
            r.provider,
            r.checked_at,
            r.expires_at
        ])?;
    }
    Ok(())
}

fn all(conn: &Connection) -> rusqlite::Result<HashMap<String, String>> {
    let mut stmt = conn.prepare_cached("SELECT domain, provider FROM domain_providers")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn stale_domains(
    conn: &Connection,
    campaign: CampaignId,
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    // The campaign's domains from the counter table (one row per domain and state: a few per
    // domain), without a fresh cache row.
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT c.domain FROM report_counts c
         LEFT JOIN domain_providers p ON p.domain = c.domain
         WHERE c.campaign_id = ?1 AND c.n > 0 AND (p.domain IS NULL OR p.expires_at <= ?2)
         ORDER BY c.domain",
    )?;
    let rows = stmt.query_map(params![campaign, now], |r| r.get(0))?;
    rows.collect()
}

impl Ledger {
    /// Stores resolved providers (replacing older answers for the same domains).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn record_providers(&mut self, records: &[ProviderRecord]) -> Result<(), Error> {
        let fail = sqlite(&self.path);
        let tx = self.conn.transaction().map_err(&fail)?;
        upsert(&tx, records).map_err(&fail)?;
        tx.commit().map_err(&fail)
    }
}

impl Reader {
    /// Every cached domain → provider name.
    ///
    /// # Errors
    /// When the query fails.
    pub fn cached_providers(&self) -> Result<HashMap<String, String>, Error> {
        all(self.connection()).map_err(sqlite(self.path()))
    }

    /// The campaign's recipient domains whose provider is not cached, or whose answer expired
    /// at `now`: what a background resolution should look up.
    ///
    /// # Errors
    /// When the query fails.
    pub fn domains_to_resolve(&self, campaign: CampaignId, now: i64) -> Result<Vec<String>, Error> {
        stale_domains(self.connection(), campaign, now).map_err(sqlite(self.path()))
    }

    /// The cache row of one domain.
    ///
    /// # Errors
    /// When the query fails.
    pub fn provider_record(&self, domain: &str) -> Result<Option<ProviderRecord>, Error> {
        use rusqlite::OptionalExtension as _;
        self.connection()
            .query_row(
                "SELECT domain, mx, provider, checked_at, expires_at FROM domain_providers
                 WHERE domain = ?1",
                [domain],
                |r| {
                    Ok(ProviderRecord {
                        domain: r.get(0)?,
                        mx: r.get(1)?,
                        provider: r.get(2)?,
                        checked_at: r.get(3)?,
                        expires_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sqlite(self.path()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::NewRecipient;

    fn record(domain: &str, provider: &str, expires_at: i64) -> ProviderRecord {
        ProviderRecord {
            domain: domain.into(),
            mx: Some(format!("mx.{domain}")),
            provider: provider.into(),
            checked_at: 0,
            expires_at,
        }
    }

    #[test]
    fn the_cache_is_replaced_per_domain_and_stale_answers_are_looked_up_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut ledger = crate::store::open(&path).unwrap();
        let c = ledger.ensure_campaign("c").unwrap();
        let rows = ["a.example", "b.example", "c.example", "gmail.com"]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Ok::<_, ()>(NewRecipient {
                    email: format!("u@{d}"),
                    name: None,
                    line: i as u64 + 2,
                    token: format!("t{i}"),
                    fields: "{}".into(),
                })
            });
        ledger.import(c, rows).unwrap();
        ledger
            .record_providers(&[
                record("a.example", "google", 1_000),
                record("b.example", "microsoft365", 5_000),
            ])
            .unwrap();
        ledger
            .record_providers(&[record("a.example", "other", 9_000)])
            .unwrap();
        let reader = Reader::open(&path).unwrap();
        let cached = reader.cached_providers().unwrap();
        assert_eq!(cached.len(), 2);
        assert_eq!(cached["a.example"], "other", "replaced");
        assert_eq!(
            reader.domains_to_resolve(c, 2_000).unwrap(),
            ["c.example", "gmail.com"],
            "uncached ones (the caller skips consumer domains)"
        );
        assert_eq!(
            reader.domains_to_resolve(c, 6_000).unwrap(),
            ["b.example", "c.example", "gmail.com"],
            "and expired ones"
        );
        assert_eq!(
            reader
                .provider_record("b.example")
                .unwrap()
                .unwrap()
                .mx
                .as_deref(),
            Some("mx.b.example")
        );
    }
}
