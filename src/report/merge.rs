//! One campaign's report over several ledgers (the shards of a campaign sent from several
//! hosts, `report --db A --db B`): every view summed, recipient counts taken once.
//!
//! Attempts, replies, diagnoses, per-relay figures and the per-minute series really happened in
//! each ledger, so they add up. Recipients are counted once: a recipient present in two ledgers
//! (shards that overlap because they were cut differently, or a contacts file sent twice) is
//! flagged in [`Overlap`], and only its most advanced state counts (a complaint or a bounce
//! outranks a delivery, which outranks an acceptance, and so on), so the totals never claim a
//! person twice. It must not write any ledger; it reads through [`Ledger`] like the single report.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CampaignReport, Error, Ledger, MinutePoint, RECENT_LIMIT, Rates, deliverability};
use crate::model::{DeliveryState, Shard};

/// Addresses listed in [`Overlap::examples`] at most.
pub const OVERLAP_EXAMPLES: usize = 20;

/// One ledger's share of a merged report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerPart {
    pub path: PathBuf,
    /// Recipients of the campaign in this ledger (before taking overlaps once).
    pub recipients: u64,
}

/// Recipients found in more than one ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// Distinct addresses present in two or more ledgers.
    pub recipients: u64,
    /// The first few of them, with the ledgers (indices into `ledgers`) holding each.
    pub examples: Vec<OverlapExample>,
}

/// One address in several ledgers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlapExample {
    pub email: String,
    pub ledgers: Vec<usize>,
}

/// How far a state says a recipient got: of two copies of one person, the higher one counts.
fn rank(state: DeliveryState) -> u8 {
    match state {
        DeliveryState::Pending => 0,
        DeliveryState::Sending => 1,
        DeliveryState::Deferred => 2,
        DeliveryState::Unknown => 3,
        DeliveryState::Suppressed => 4,
        DeliveryState::Failed => 5,
        DeliveryState::Accepted => 6,
        DeliveryState::BouncedSoft => 7,
        DeliveryState::Delivered => 8,
        DeliveryState::BouncedHard => 9,
        DeliveryState::Complained => 10,
    }
}

/// The copy of a recipient that counts so far.
#[derive(Clone, Copy)]
struct Kept {
    ledger: usize,
    state: DeliveryState,
    relay_accepted: bool,
}

fn digest(email: &str) -> u64 {
    // SipHash with fixed keys: the same on every run. A collision is checked against the
    // first ledger before anything is taken away, so it can only cost a lookup.
    let mut h = std::hash::DefaultHasher::new();
    email.hash(&mut h);
    h.finish()
}

/// The report of campaign `name` (or the only campaign, when every ledger holds just one and
/// they agree) over `paths`.
///
/// # Errors
/// A ledger that cannot be read or does not hold the campaign (named in the error), or
/// ledgers holding different single campaigns without `name`.
pub fn load(paths: &[PathBuf], name: Option<&str>) -> Result<Merged, Error> {
    load_from(&open_all(paths)?, paths, name)
}

fn open_all(paths: &[PathBuf]) -> Result<Vec<Ledger>, Error> {
    paths.iter().map(|p| Ledger::open(p)).collect()
}

/// [`load`] over ledgers already open (`paths` are theirs, in the same order).
fn load_from(ledgers: &[Ledger], paths: &[PathBuf], name: Option<&str>) -> Result<Merged, Error> {
    let first = ledgers
        .first()
        .ok_or_else(|| Error::NoCampaigns {
            path: PathBuf::new(),
        })?
        .find_campaign(name)?;
    let name = first.name.clone();
    let mut summaries = Vec::with_capacity(ledgers.len());
    for ledger in ledgers {
        summaries.push(ledger.find_campaign(Some(&name))?);
    }
    let mut reports = Vec::with_capacity(ledgers.len());
    let mut shards = Vec::with_capacity(ledgers.len());
    for (ledger, summary) in ledgers.iter().zip(&summaries) {
        reports.push(ledger.campaign_report(summary)?);
        shards.push(ledger.reader.campaign_shard(summary.id)?);
    }

    // Recipients seen so far across ledgers, by address digest.
    let mut seen: HashMap<u64, Kept> = HashMap::new();
    // Copies that do not count: (domain, state, relay_accepted), and the overlap list.
    let mut dropped: Vec<(String, DeliveryState, bool)> = Vec::new();
    let mut overlap: HashMap<String, Vec<usize>> = HashMap::new();
    let mut overlap_order: Vec<String> = Vec::new();
    // Distinct shards of one split cannot share a recipient (see `disjoint_shards`): the walk
    // over every recipient of every ledger that finds shared ones is skipped for them (two
    // ledgers of 1,000,000 recipients: about 3 s and 170 MiB here).
    let walk: &[Ledger] = if disjoint_shards(&shards) {
        &[]
    } else {
        ledgers
    };
    for (index, (ledger, summary)) in walk.iter().zip(&summaries).enumerate() {
        let walked = ledger.for_each_recipient(summary.id, |r| -> Result<(), Error> {
            let state = r.state.parse().unwrap_or(DeliveryState::Unknown);
            let here = Kept {
                ledger: index,
                state,
                relay_accepted: r.relay_accepted,
            };
            match seen.entry(digest(r.email)) {
                Entry::Vacant(v) => {
                    v.insert(here);
                }
                Entry::Occupied(mut o) => {
                    let kept = *o.get();
                    if kept.ledger == index {
                        // The same digest twice in one ledger: two addresses that collide,
                        // since a ledger holds an address once per campaign.
                        return Ok(());
                    }
                    let other = &ledgers[kept.ledger];
                    if other
                        .reader
                        .recipient(summaries[kept.ledger].id, r.email)?
                        .is_none()
                    {
                        return Ok(());
                    }
                    let domain = r.email.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
                    let loser = if rank(here.state) > rank(kept.state) {
                        o.insert(here);
                        kept
                    } else {
                        here
                    };
                    dropped.push((domain, loser.state, loser.relay_accepted));
                    let holders = overlap.entry(r.email.to_owned()).or_default();
                    if holders.is_empty() {
                        overlap_order.push(r.email.to_owned());
                        holders.push(kept.ledger);
                    }
                    holders.push(index);
                }
            }
            Ok(())
        });
        match walked {
            Ok(()) => {}
            Err(Ok(e) | Err(e)) => return Err(e),
        }
    }

    let parts = paths
        .iter()
        .zip(&reports)
        .map(|(p, r)| LedgerPart {
            path: p.clone(),
            recipients: r.totals.recipients,
        })
        .collect();
    let mut report = combine(reports);
    let domain_at: HashMap<&str, usize> = report
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| (d.domain.as_str(), i))
        .collect();
    let mut domain_drops = Vec::with_capacity(dropped.len());
    for (domain, state, relay_accepted) in &dropped {
        report.totals.remove(*state, *relay_accepted);
        if let Some(&i) = domain_at.get(domain.as_str()) {
            domain_drops.push((i, *state, *relay_accepted));
        }
    }
    for (i, state, relay_accepted) in domain_drops {
        report.domains[i].totals.remove(state, relay_accepted);
    }
    finish(&mut report);
    let examples = overlap_order
        .iter()
        .take(OVERLAP_EXAMPLES)
        .map(|email| OverlapExample {
            email: email.clone(),
            ledgers: overlap[email].clone(),
        })
        .collect();
    Ok(Merged {
        report,
        ledgers: parts,
        overlap: Overlap {
            recipients: overlap.len() as u64,
            examples,
        },
    })
}

/// Whether the ledgers hold distinct shards of the same split (`K/N` with one `N` and no `K`
/// twice): a recipient's shard is a function of the campaign and its address, and a shard's
/// ledger holds only its own recipients, so such ledgers share nobody.
fn disjoint_shards(shards: &[Option<Shard>]) -> bool {
    let mut seen = HashSet::new();
    let count = shards.first().copied().flatten().map(|s| s.count);
    shards
        .iter()
        .all(|s| s.is_some_and(|s| Some(s.count) == count && seen.insert(s.index)))
}

/// A campaign's report over several ledgers.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    #[serde(flatten)]
    pub report: CampaignReport,
    pub ledgers: Vec<LedgerPart>,
    pub overlap: Overlap,
}

impl Merged {
    /// The ledgers as one line for text reports ("3 ledgers: a.db (200), b.db (198), ...").
    pub fn describe(&self) -> String {
        let list: Vec<String> = self
            .ledgers
            .iter()
            .map(|l| format!("{} ({})", short(&l.path), l.recipients))
            .collect();
        format!("{} ledgers: {}", self.ledgers.len(), list.join(", "))
    }
}

fn short(path: &Path) -> String {
    crate::display::one_line(&path.display().to_string())
}

/// The campaign's dates and open runs over two ledgers: the first creation and start, the
/// latest run, every open run.
fn absorb_runs(c: &mut super::CampaignSummary, other: &super::CampaignSummary) {
    c.created_at = c.created_at.min(other.created_at);
    c.started_at = match (c.started_at, other.started_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    c.last_run_at = c.last_run_at.max(other.last_run_at);
    c.open_runs += other.open_runs;
}

/// Adds `rows` into `out`: a row whose key is already there is added to that row (`add`), any
/// other is appended. Indexed by key, so a campaign of 100,000 domains over several ledgers
/// stays linear.
fn merge_rows<T, K: std::hash::Hash + Eq>(
    out: &mut Vec<T>,
    rows: Vec<T>,
    key: impl Fn(&T) -> K,
    add: impl Fn(&mut T, T),
) {
    let mut at: HashMap<K, usize> = out.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
    for row in rows {
        match at.entry(key(&row)) {
            Entry::Occupied(e) => add(&mut out[*e.get()], row),
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(row);
            }
        }
    }
}

/// Adds the reports up view by view (recipient counts still include overlaps).
fn combine(reports: Vec<CampaignReport>) -> CampaignReport {
    let mut iter = reports.into_iter();
    let Some(mut out) = iter.next() else {
        unreachable!("load opens at least one ledger");
    };
    for r in iter {
        // The counts are recomputed from the merged totals in `finish`.
        absorb_runs(&mut out.campaign, &r.campaign);
        out.totals.absorb(&r.totals);
        merge_rows(
            &mut out.domains,
            r.domains,
            |d| d.domain.clone(),
            |d, row| {
                d.totals.absorb(&row.totals);
                if d.provider == crate::provider::Provider::Unknown {
                    d.provider = row.provider;
                }
            },
        );
        merge_rows(
            &mut out.reasons,
            r.reasons,
            |x| (x.source, x.status.clone(), x.outcome.clone()),
            |x, row| x.count += row.count,
        );
        merge_rows(
            &mut out.diagnoses,
            r.diagnoses,
            |x| x.key.clone(),
            |x, row| x.count += row.count,
        );
        merge_rows(
            &mut out.series,
            r.series,
            |p| p.minute,
            |x, p| {
                x.attempts += p.attempts;
                x.accepted += p.accepted;
            },
        );
        merge_rows(
            &mut out.relays,
            r.relays,
            |x| x.name.clone(),
            |x, row| {
                x.attempts += row.attempts;
                x.accepted += row.accepted;
                x.deferred += row.deferred;
                x.bounced += row.bounced;
                x.failures += row.failures;
                x.cooloffs += row.cooloffs;
                if row.last_cooloff.is_some() {
                    x.last_cooloff = row.last_cooloff;
                }
            },
        );
        out.recent.extend(r.recent);
        out.test_sends.extend(r.test_sends);
        out.test_send_count += r.test_send_count;
    }
    // Today's allowance is one From domain's in one ledger: it has no merged meaning.
    out.allowance = None;
    out
}

/// Recomputes what derives from the counts, and sorts every list as the single report does.
fn finish(r: &mut CampaignReport) {
    for d in &mut r.domains {
        d.finish();
    }
    super::sort_domains(&mut r.domains);
    super::sort_reasons(&mut r.reasons);
    r.diagnoses
        .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    r.series.sort_by_key(|p: &MinutePoint| p.minute);
    r.recent.sort_by_key(|e| std::cmp::Reverse(e.at));
    r.recent.truncate(RECENT_LIMIT);
    r.test_sends.sort_by_key(|t| std::cmp::Reverse(t.at));
    r.test_sends.truncate(RECENT_LIMIT);
    r.providers = deliverability::providers(&r.domains);
    r.rates = Rates::of(&r.totals);
    r.funnel = r.totals.funnel();
    let c = &mut r.campaign;
    let t = &r.totals;
    c.recipients = t.recipients;
    c.finished = t.finished();
    c.relay_accepted = t.relay_accepted;
    c.attempted = t.attempted();
    c.delivered = t.delivered;
    c.bounced_hard = t.bounced_hard;
    c.complained = t.complained;
}

/// The campaign list, the selected campaign's report and its drill-down.
pub type Overview = (
    Vec<super::CampaignSummary>,
    Option<CampaignReport>,
    Option<super::DrillDown>,
);

/// What the dashboard shows over several ledgers: every campaign named in any of them (their
/// counts summed; the selected one's taken from [`load`], so shared recipients count once), the
/// selected campaign's merged report, and the drill-down's rows from every ledger, newest
/// first.
///
/// # Errors
/// As [`load`].
pub fn overview(
    paths: &[PathBuf],
    campaign: Option<&str>,
    focus: Option<&super::Focus>,
) -> Result<Overview, Error> {
    let ledgers = open_all(paths)?;
    let mut campaigns: Vec<super::CampaignSummary> = Vec::new();
    for ledger in &ledgers {
        let (list, _) = ledger.overview(None)?;
        merge_rows(
            &mut campaigns,
            list,
            |c| c.name.clone(),
            |c, s| {
                absorb_runs(c, &s);
                c.recipients += s.recipients;
                c.finished += s.finished;
                c.relay_accepted += s.relay_accepted;
                c.attempted += s.attempted;
                c.delivered += s.delivered;
                c.bounced_hard += s.bounced_hard;
                c.complained += s.complained;
            },
        );
    }
    let Some(selected) = campaign
        .and_then(|name| campaigns.iter().find(|c| c.name == name))
        .or(campaigns.first())
        .map(|c| c.name.clone())
    else {
        return Ok((campaigns, None, None));
    };
    let merged = load_from(&ledgers, paths, Some(&selected))?;
    if let Some(c) = campaigns.iter_mut().find(|c| c.name == selected) {
        let id = c.id;
        *c = merged.report.campaign.clone();
        // The first ledger's id keeps the selection stable between refreshes.
        c.id = id;
    }
    let drill = match focus {
        Some(focus) => {
            let mut all: Option<super::DrillDown> = None;
            for ledger in &ledgers {
                let summary = ledger.find_campaign(Some(&selected))?;
                let d = ledger.drill_down(summary.id, focus)?;
                match &mut all {
                    None => all = Some(d),
                    Some(a) => {
                        a.entries.extend(d.entries);
                        a.truncated |= d.truncated;
                        if a.recipient.is_none() {
                            a.recipient = d.recipient;
                        }
                    }
                }
            }
            all.map(|mut d| {
                d.entries.sort_by_key(|e| std::cmp::Reverse(e.at));
                d.truncated |= d.entries.len() > super::DRILL_LIMIT;
                d.entries.truncate(super::DRILL_LIMIT);
                d
            })
        }
        None => None,
    };
    Ok((campaigns, Some(merged.report), drill))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shards(list: &[Option<&str>]) -> Vec<Option<Shard>> {
        list.iter().map(|s| s.map(|s| s.parse().unwrap())).collect()
    }

    #[test]
    fn only_distinct_shards_of_one_split_are_known_to_share_nobody() {
        for (list, disjoint) in [
            (vec![Some("0/3"), Some("1/3"), Some("2/3")], true),
            (vec![Some("2/3"), Some("0/3")], true),
            // The same shard twice (a contacts file sent from two hosts as shard 0).
            (vec![Some("0/3"), Some("0/3")], false),
            // Two different splits cut the list differently.
            (vec![Some("0/2"), Some("0/3")], false),
            // A whole-campaign ledger can hold anybody.
            (vec![Some("0/2"), None], false),
            (vec![None, None], false),
        ] {
            assert_eq!(disjoint_shards(&shards(&list)), disjoint, "{list:?}");
        }
    }
}
