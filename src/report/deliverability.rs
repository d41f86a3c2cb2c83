//! The views of a campaign by mailbox provider and by diagnosis, built from rows the report
//! already read: the provider table (the domain rows added up per provider, with that
//! provider's own thresholds) and "What the providers are telling you" (the diagnosis counters
//! with each row's meaning and fix from `crate::diagnose`). No queries, no formatting.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DomainRow, Level, Rates, Thresholds, Totals};
use crate::diagnose;
use crate::provider::{self, Provider};
use crate::store::DiagnosisRecord;

/// The provider of a domain as the report knows it: a consumer domain by name, else the
/// ledger's cached MX answer, else unknown.
pub fn provider_of(domain: &str, cached: Option<&str>) -> Provider {
    provider::of_domain(domain)
        .or_else(|| cached.and_then(|name| name.parse().ok()))
        .unwrap_or(Provider::Unknown)
}

/// Whether a level is fine, worth a look, or alarming (JSON: `ok`, `warn`, `alarm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Levels {
    pub bounce: Level,
    pub complaint: Level,
}

/// One row of the provider table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderRow {
    pub provider: Provider,
    /// The name people know it by.
    pub label: &'static str,
    /// Recipient domains it hosts in this campaign.
    pub domains: u64,
    #[serde(flatten)]
    pub totals: Totals,
    pub rates: Rates,
    /// This provider's own warn/alarm levels (fractions).
    pub thresholds: Thresholds,
    pub levels: Levels,
}

impl ProviderRow {
    /// The provider rows of these domain rows (see [`providers`]).
    pub fn sum_of(domains: &[DomainRow]) -> Vec<ProviderRow> {
        providers(domains)
    }

    fn new(provider: Provider) -> ProviderRow {
        let thresholds = Thresholds::for_provider(provider);
        ProviderRow {
            provider,
            label: provider.label(),
            domains: 0,
            totals: Totals::default(),
            rates: Rates::default(),
            thresholds,
            levels: Levels {
                bounce: Level::Ok,
                complaint: Level::Ok,
            },
        }
    }
}

/// The domain rows added up per provider, largest first.
pub fn providers(domains: &[DomainRow]) -> Vec<ProviderRow> {
    let mut by: BTreeMap<Provider, ProviderRow> = BTreeMap::new();
    for d in domains {
        let row = by
            .entry(d.provider)
            .or_insert_with(|| ProviderRow::new(d.provider));
        row.domains += 1;
        row.totals.absorb(&d.totals);
    }
    let mut rows: Vec<ProviderRow> = by.into_values().collect();
    for row in &mut rows {
        row.rates = Rates::of(&row.totals);
        row.levels = Levels {
            bounce: row.thresholds.bounce(row.rates.hard_bounce),
            complaint: row.thresholds.complaint(row.rates.complaint),
        };
    }
    rows.sort_by(|a, b| {
        b.totals
            .recipients
            .cmp(&a.totals.recipients)
            .then_with(|| a.provider.cmp(&b.provider))
    });
    rows
}

/// One diagnosis seen in a campaign: what it means, the fix, how often, an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagnosisRow {
    /// The `crate::diagnose` key.
    pub key: String,
    /// Whose text it is.
    pub provider: Option<Provider>,
    pub title: String,
    pub meaning: String,
    pub fix: String,
    pub source: String,
    /// Replies and reports it explains.
    pub count: u64,
    /// The latest reply or DSN text seen with it.
    pub example: Option<String>,
}

/// The diagnosis counters with their table rows, most frequent first. A key this build does
/// not know (written by a newer mailroom) is shown by its key.
pub fn diagnoses(records: Vec<DiagnosisRecord>) -> Vec<DiagnosisRow> {
    let mut rows: Vec<DiagnosisRow> = records
        .into_iter()
        .map(|r| match diagnose::by_key(&r.diagnosis) {
            Some(d) => DiagnosisRow {
                key: r.diagnosis,
                provider: d.provider,
                title: d.title.to_owned(),
                meaning: d.meaning.to_owned(),
                fix: d.fix.to_owned(),
                source: d.source.to_owned(),
                count: r.n,
                example: r.example,
            },
            None => DiagnosisRow {
                title: r.diagnosis.clone(),
                key: r.diagnosis,
                provider: None,
                meaning: String::new(),
                fix: String::new(),
                source: String::new(),
                count: r.n,
                example: r.example,
            },
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    rows
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn domain(
        name: &str,
        provider: Provider,
        recipients: u64,
        hard: u64,
        complained: u64,
    ) -> DomainRow {
        DomainRow {
            domain: name.to_owned(),
            provider,
            totals: Totals {
                recipients,
                accepted: recipients - hard - complained,
                relay_accepted: recipients - hard,
                bounced_hard: hard,
                complained,
                ..Totals::default()
            },
            acceptance: None,
        }
    }

    #[test]
    fn domains_add_up_per_provider_with_its_thresholds() {
        let rows = providers(&[
            domain("gmail.com", Provider::Google, 1000, 0, 2),
            domain("corp.example", Provider::Google, 500, 10, 0),
            domain("outlook.com", Provider::Microsoft, 800, 80, 0),
            domain("x.example", Provider::Unknown, 10, 0, 0),
        ]);
        let names: Vec<_> = rows.iter().map(|r| r.provider).collect();
        assert_eq!(
            names,
            [Provider::Google, Provider::Microsoft, Provider::Unknown]
        );
        let google = &rows[0];
        assert_eq!((google.domains, google.totals.recipients), (2, 1500));
        assert_eq!(google.totals.complained, 2);
        // 2 of 1490 accepted: 0.13%, above Gmail's 0.1% warning.
        assert_eq!(google.levels.complaint, Level::Warn);
        assert_eq!(google.levels.bounce, Level::Ok);
        assert_eq!(rows[1].levels.bounce, Level::Alarm, "10% hard bounces");
        assert_eq!(rows[1].label, "Outlook.com");
    }

    #[test]
    fn diagnoses_carry_meaning_and_fix_and_unknown_keys_survive() {
        let rows = diagnoses(vec![
            DiagnosisRecord {
                diagnosis: "gmail-5.7.26".into(),
                n: 3,
                example: Some("550 5.7.26 unauthenticated".into()),
            },
            DiagnosisRecord {
                diagnosis: "from-a-newer-mailroom".into(),
                n: 7,
                example: None,
            },
        ]);
        assert_eq!(rows[0].key, "from-a-newer-mailroom");
        assert_eq!(rows[0].title, "from-a-newer-mailroom");
        assert_eq!(rows[1].provider, Some(Provider::Google));
        assert!(rows[1].fix.contains("DKIM"));
    }

    #[test]
    fn consumer_domains_win_over_the_cache() {
        assert_eq!(provider_of("gmail.com", Some("other")), Provider::Google);
        assert_eq!(
            provider_of("corp.example", Some("microsoft365")),
            Provider::Microsoft365
        );
        assert_eq!(
            provider_of("corp.example", Some("nonsense")),
            Provider::Unknown
        );
        assert_eq!(provider_of("corp.example", None), Provider::Unknown);
    }
}
