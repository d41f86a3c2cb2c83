//! Test sends (`send --test`) and seed copies (`[seeds]`) in the ledger: their own table
//! (`migrations/0010_test_sends.sql`), written and read by the typed functions here. They are
//! not recipients: nothing here touches `recipients`, `attempts` or the counter tables, so a test
//! send can never change a recipient's state, a rate, a cap or a report total.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::model::{CampaignId, RunId};

/// What kind of copy a test send is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// `mailroom send CAMPAIGN --test ADDR`.
    Test,
    /// A `[seeds]` address, at the start or the end of a run.
    Seed,
}

impl TestKind {
    /// The ledger's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TestKind::Test => "test",
            TestKind::Seed => "seed",
        }
    }
}

/// One test send to record.
#[derive(Debug, Clone)]
pub struct TestSend {
    pub campaign: CampaignId,
    pub run: Option<RunId>,
    pub kind: TestKind,
    pub at: i64,
    pub address: String,
    /// The contacts row whose message was sent: its line and address.
    pub source_line: Option<u64>,
    pub source_email: Option<String>,
    pub message_id: String,
    pub port: Option<u16>,
    pub step: String,
    pub code: Option<u16>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    /// accepted, deferred, refused, unknown or failed.
    pub outcome: String,
}

/// One recorded test send, as reports list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestSendRow {
    pub at: i64,
    pub kind: String,
    pub address: String,
    pub source_line: Option<u64>,
    pub source_email: Option<String>,
    pub message_id: String,
    pub code: Option<i64>,
    pub enhanced: Option<String>,
    pub reply: Option<String>,
    pub outcome: String,
}

pub(super) fn insert(conn: &Connection, t: &TestSend) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO test_sends (campaign_id, run_id, kind, at, address, source_line,
            source_email, message_id, port, step, code, enhanced, reply, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        t.campaign,
        t.run,
        t.kind.as_str(),
        t.at,
        t.address,
        t.source_line.and_then(|l| i64::try_from(l).ok()),
        t.source_email,
        t.message_id,
        t.port,
        t.step,
        t.code,
        t.enhanced,
        t.reply,
        t.outcome
    ])?;
    Ok(())
}

/// The newest `limit` test sends of a campaign, newest first.
pub(super) fn list(
    conn: &Connection,
    campaign: CampaignId,
    limit: usize,
) -> rusqlite::Result<Vec<TestSendRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at, kind, address, source_line, source_email, message_id, code, enhanced, reply,
            outcome
         FROM test_sends WHERE campaign_id = ?1 ORDER BY at DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![campaign, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(TestSendRow {
                at: r.get(0)?,
                kind: r.get(1)?,
                address: r.get(2)?,
                source_line: r
                    .get::<_, Option<i64>>(3)?
                    .and_then(|l| u64::try_from(l).ok()),
                source_email: r.get(4)?,
                message_id: r.get(5)?,
                code: r.get(6)?,
                enhanced: r.get(7)?,
                reply: r.get(8)?,
                outcome: r.get(9)?,
            })
        },
    )?;
    rows.collect()
}

/// How many test sends a campaign has.
pub(super) fn count(conn: &Connection, campaign: CampaignId) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM test_sends WHERE campaign_id = ?1",
        params![campaign],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_test_send_changes_no_recipient_and_no_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut ledger = crate::store::Ledger::open(&path).unwrap();
        let c = ledger.ensure_campaign("spring").unwrap();
        let rows = vec![Ok::<_, ()>(crate::store::NewRecipient {
            email: "ann@x.example".into(),
            name: None,
            line: 2,
            token: "tok".into(),
            fields: "{}".into(),
        })];
        ledger.import(c, rows).unwrap();
        let snapshot = |conn: &Connection| -> (String, i64, i64, i64) {
            conn.query_row(
                "SELECT (SELECT group_concat(state || attempts) FROM recipients),
                        (SELECT count(*) FROM attempts),
                        (SELECT coalesce(sum(n), 0) FROM report_counts),
                        (SELECT count(*) FROM report_minutes)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
        };
        let before = snapshot(&ledger.conn);
        // Even to the address of a recipient of the campaign.
        for (kind, address) in [
            (TestKind::Test, "ann@x.example"),
            (TestKind::Seed, "seed@y.example"),
        ] {
            ledger
                .record_test_send(&TestSend {
                    campaign: c,
                    run: None,
                    kind,
                    at: 5,
                    address: address.into(),
                    source_line: Some(2),
                    source_email: Some("ann@x.example".into()),
                    message_id: "test-1@x.example".into(),
                    port: Some(587),
                    step: "message".into(),
                    code: Some(250),
                    enhanced: Some("2.0.0".into()),
                    reply: Some("ok".into()),
                    outcome: "accepted".into(),
                })
                .unwrap();
        }
        assert_eq!(snapshot(&ledger.conn), before);
        let reader = crate::store::Reader::open(&path).unwrap();
        let listed = reader.test_sends(c, 10).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].kind, "seed");
        assert_eq!(reader.test_send_count(c).unwrap(), 2);
    }
}
