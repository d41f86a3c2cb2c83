//! The [`Reader`] queries of a send and its dry run: which rows are due, what was accepted
//! today for the daily cap and warm-up, which addresses are final, the campaign's test sends.
//! `report` and the dashboard read through the parent module; nothing here formats for people.

use std::collections::{HashMap, HashSet};

use super::super::ledger::{self, DueRow};
use super::{Error, Reader};
use crate::model::{CampaignId, DeliveryState};

impl Reader {
    /// Up to `limit` due rows with `id > after`, in id order: see [`ledger::due_rows`].
    ///
    /// # Errors
    /// When the query fails.
    pub fn due_rows(
        &self,
        campaign: CampaignId,
        after: i64,
        now: i64,
        resend_unknown: bool,
        limit: usize,
    ) -> Result<Vec<DueRow>, Error> {
        ledger::due_rows(&self.conn, campaign, after, now, resend_unknown, limit)
            .map_err(self.fail())
    }

    /// How many rows are due at `now`.
    ///
    /// # Errors
    /// When the query fails.
    pub fn count_due(
        &self,
        campaign: CampaignId,
        now: i64,
        resend_unknown: bool,
    ) -> Result<u64, Error> {
        ledger::count_due(&self.conn, campaign, now, resend_unknown).map_err(self.fail())
    }

    /// Deferred rows not yet due: how many, and the earliest retry time.
    ///
    /// # Errors
    /// When the query fails.
    pub fn deferred_summary(&self, campaign: CampaignId) -> Result<(u64, Option<i64>), Error> {
        ledger::deferred_summary(&self.conn, campaign).map_err(self.fail())
    }

    /// Per-state counts for one campaign, in `DeliveryState::ALL` order.
    ///
    /// # Errors
    /// When the query fails.
    pub fn state_counts(&self, campaign: CampaignId) -> Result<Vec<(DeliveryState, u64)>, Error> {
        ledger::state_counts(&self.conn, campaign).map_err(self.fail())
    }

    /// Messages the relay accepted since `since` (any campaign), for the daily cap.
    ///
    /// # Errors
    /// When the query fails.
    pub fn accepted_since(&self, since: i64) -> Result<u64, Error> {
        ledger::accepted_since(&self.conn, since).map_err(self.fail())
    }

    /// For a dry run: every address the ledger knows in campaign `name`, and whether its state
    /// makes it due at `now` (the same rule as the dispatcher's; a contact the ledger does not
    /// know yet is due).
    ///
    /// # Errors
    /// When the query fails.
    pub fn due_by_address(
        &self,
        name: &str,
        now: i64,
        resend_unknown: bool,
    ) -> Result<HashMap<String, bool>, Error> {
        let fail = self.fail();
        let mut stmt = self
            .conn
            .prepare(concat!(
                "SELECT email, ",
                ledger::due_state!(),
                " FROM recipients WHERE campaign_id = \
                   (SELECT id FROM campaigns WHERE name = :name)"
            ))
            .map_err(&fail)?;
        let rows = stmt
            .query_map(
                rusqlite::named_params! {":name": name, ":now": now, ":resend": resend_unknown},
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)),
            )
            .map_err(&fail)?;
        rows.collect::<Result<_, _>>().map_err(&fail)
    }

    /// For the daily cap and warm-up of From domain `domain`: the time of its first accepted
    /// message, and how many were accepted since `since` (see [`ledger::domain_sending`]).
    ///
    /// # Errors
    /// When the query fails.
    pub fn domain_sending(&self, domain: &str, since: i64) -> Result<(Option<i64>, u64), Error> {
        ledger::domain_sending(&self.conn, domain, since).map_err(self.fail())
    }

    /// The newest `limit` test sends and seed copies of a campaign, newest first.
    ///
    /// # Errors
    /// When the query fails.
    pub fn test_sends(
        &self,
        campaign: CampaignId,
        limit: usize,
    ) -> Result<Vec<super::super::TestSendRow>, Error> {
        super::super::test_sends::list(&self.conn, campaign, limit).map_err(self.fail())
    }

    /// How many test sends and seed copies a campaign has.
    ///
    /// # Errors
    /// When the query fails.
    pub fn test_send_count(&self, campaign: CampaignId) -> Result<u64, Error> {
        super::super::test_sends::count(&self.conn, campaign).map_err(self.fail())
    }

    /// The addresses of a campaign that are final (never sent again).
    ///
    /// # Errors
    /// When the query fails.
    pub fn final_addresses(&self, campaign: &str) -> Result<HashSet<String>, Error> {
        ledger::final_addresses(&self.conn, campaign).map_err(self.fail())
    }
}
