//! Feedback and suppressions in the ledger: the writes of `bounces import` (events, the state
//! changes they cause, suppressions) and of `suppress`, taking plain values. One imported message
//! is one [`FeedbackTx`], so an interrupted import keeps what it recorded and a re-run skips it
//! (each event's fingerprint is unique).
//!
//! This module decides nothing about what a bounce means: callers pass the event kind and, for
//! state changes, a [`state::Feedback`]; the state machine (`store::state`) decides the move.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::state::{self, Event};
use super::{Error, Ledger, sqlite};
use crate::model::{CampaignId, DeliveryState, RecipientId};

/// A recipient that feedback was matched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackTarget {
    pub id: RecipientId,
    pub email: String,
    pub state: Option<DeliveryState>,
}

/// How a report names the message it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence<'a> {
    /// The recipient token (VERP address, `X-Mailroom-Token` or Message-ID of the returned
    /// original).
    Token(&'a str),
    /// The failed address itself (case-insensitive).
    Address(&'a str),
}

/// One `events` row.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub recipient_id: RecipientId,
    pub at: i64,
    /// hard, soft, complaint, delayed, auto_reply, delivered, ...
    pub kind: &'a str,
    pub action: Option<&'a str>,
    pub status: Option<&'a str>,
    pub reason: &'a str,
    pub diagnostic: Option<&'a str>,
    pub remote_mta: Option<&'a str>,
    /// Where the message came from (`maildir:…`, `imap:…`).
    pub source: &'a str,
    /// Unique per message, recipient, kind and status: a second import of it records nothing.
    pub fingerprint: &'a str,
    /// The key of the diagnosis-table row the report matched (`crate::diagnose`), if any.
    pub diagnosis: Option<&'a str>,
}

/// One suppression list entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suppression {
    pub email: String,
    pub reason: String,
    pub source: String,
    pub campaign: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// The writes of one imported message, in one transaction.
pub struct FeedbackTx<'a> {
    tx: Transaction<'a>,
    path: &'a Path,
}

impl Ledger {
    /// The id of a campaign by name, if the ledger has it.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn campaign_id(&self, name: &str) -> Result<Option<CampaignId>, Error> {
        self.conn
            .query_row(
                "SELECT id FROM campaigns WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path))
    }

    /// Starts the transaction of one imported message.
    ///
    /// # Errors
    /// When the ledger cannot be written (it stays busy past the timeout, for example).
    pub fn feedback(&mut self) -> Result<FeedbackTx<'_>, Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite(&self.path))?;
        Ok(FeedbackTx {
            tx,
            path: &self.path,
        })
    }

    /// Every suppression, oldest first.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn suppressions(&self) -> Result<Vec<Suppression>, Error> {
        list_suppressions(&self.conn).map_err(sqlite(&self.path))
    }

    /// Adds addresses (already normalised) to the suppression list in one transaction; returns
    /// how many were new (an address already listed keeps its first entry, which records the
    /// original cause).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn suppress_all<'e>(
        &mut self,
        emails: impl IntoIterator<Item = &'e str>,
        reason: &str,
        source: &str,
        campaign: Option<&str>,
        at: i64,
    ) -> Result<Vec<bool>, Error> {
        let fail = sqlite(&self.path);
        let tx = self.conn.transaction().map_err(&fail)?;
        let mut added = Vec::new();
        for email in emails {
            added
                .push(insert_suppression(&tx, email, reason, source, campaign, at).map_err(&fail)?);
        }
        tx.commit().map_err(&fail)?;
        Ok(added)
    }

    /// Removes an address (already normalised) from the suppression list; `false` when it was
    /// not on it.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn unsuppress(&self, email: &str) -> Result<bool, Error> {
        self.conn
            .execute("DELETE FROM suppressions WHERE email = ?1", [email])
            .map(|n| n == 1)
            .map_err(sqlite(&self.path))
    }
}

impl super::Reader {
    /// Every suppression, oldest first.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn suppressions(&self) -> Result<Vec<Suppression>, Error> {
        list_suppressions(self.connection()).map_err(sqlite(self.path()))
    }
}

impl FeedbackTx<'_> {
    fn fail(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        sqlite(self.path)
    }

    /// The recipient of `campaign` that `evidence` names, if any.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn find(
        &self,
        campaign: CampaignId,
        evidence: Evidence<'_>,
    ) -> Result<Option<FeedbackTarget>, Error> {
        let (condition, value) = match evidence {
            Evidence::Token(t) => ("token = ?2", t),
            Evidence::Address(a) => ("lower(email) = lower(?2)", a),
        };
        self.tx
            .prepare_cached(&format!(
                "SELECT id, email, state FROM recipients \
                 WHERE campaign_id = ?1 AND {condition} LIMIT 1"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![campaign, value], |row| {
                    Ok(FeedbackTarget {
                        id: row.get(0)?,
                        email: row.get(1)?,
                        state: row.get::<_, String>(2)?.parse().ok(),
                    })
                })
                .optional()
            })
            .map_err(self.fail())
    }

    /// Appends an event; `false` when its fingerprint was recorded before (nothing written).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn record_event(&self, e: &NewEvent<'_>) -> Result<bool, Error> {
        self.tx
            .execute(
                "INSERT INTO events (recipient_id, at, kind, action, status, reason, diagnostic,
                                     remote_mta, source, fingerprint, diagnosis)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (fingerprint) DO NOTHING",
                params![
                    e.recipient_id,
                    e.at,
                    e.kind,
                    e.action,
                    e.status,
                    e.reason,
                    e.diagnostic,
                    e.remote_mta,
                    e.source,
                    e.fingerprint,
                    e.diagnosis
                ],
            )
            .map(|n| n == 1)
            .map_err(self.fail())
    }

    /// Moves `target` as the state machine says for `feedback`; returns the new state, or
    /// `None` when the state stays (e.g. a soft bounce after a hard one).
    ///
    /// A confirmed delivery also sets `relay_accepted`: a recipient whose outcome was `unknown`
    /// (no reply after the final ".") was, the success DSN shows, accepted by the relay after
    /// all, so "ever accepted by the relay" keeps counting every delivered recipient.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn apply(
        &self,
        target: &mut FeedbackTarget,
        feedback: state::Feedback,
    ) -> Result<Option<DeliveryState>, Error> {
        // A state this build does not know is left alone.
        let Some(current) = target.state else {
            return Ok(None);
        };
        let Some(next) = state::next(current, Event::Feedback(feedback)) else {
            return Ok(None);
        };
        let confirmed = next == DeliveryState::Delivered;
        let changed = self
            .tx
            .execute(
                "UPDATE recipients SET state = ?3,
                    relay_accepted = CASE WHEN ?4 THEN 1 ELSE relay_accepted END
                 WHERE id = ?1 AND state = ?2",
                params![target.id, current.as_str(), next.as_str(), confirmed],
            )
            .map_err(self.fail())?;
        if changed == 0 {
            return Ok(None);
        }
        target.state = Some(next);
        Ok(Some(next))
    }

    /// Adds an address (already normalised) to the suppression list; `false` when it was there.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn suppress(
        &self,
        email: &str,
        reason: &str,
        source: &str,
        campaign: Option<&str>,
        at: i64,
    ) -> Result<bool, Error> {
        insert_suppression(&self.tx, email, reason, source, campaign, at).map_err(self.fail())
    }

    /// Commits the message's writes.
    ///
    /// # Errors
    /// When the commit fails.
    pub fn commit(self) -> Result<(), Error> {
        let path = self.path;
        self.tx.commit().map_err(sqlite(path))
    }
}

fn insert_suppression(
    conn: &Connection,
    email: &str,
    reason: &str,
    source: &str,
    campaign: Option<&str>,
    at: i64,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "INSERT INTO suppressions (email, reason, source, campaign, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (email) DO NOTHING",
    )?
    .execute(params![email, reason, source, campaign, at])
    .map(|n| n == 1)
}

fn list_suppressions(conn: &Connection) -> rusqlite::Result<Vec<Suppression>> {
    let mut stmt = conn.prepare(
        "SELECT email, reason, source, campaign, created_at FROM suppressions
         ORDER BY created_at, email",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(Suppression {
            email: row.get(0)?,
            reason: row.get(1)?,
            source: row.get(2)?,
            campaign: row.get(3)?,
            created_at: row.get(4)?,
        })
    })?;
    rows.collect()
}
