//! The ledger: a SQLite database (WAL) that is the checkpoint of every campaign, and the only
//! door to it. Every SQL statement of mailroom lives under `store`; other modules call typed
//! functions and get plain values back. No `rusqlite` type leaves this module.
//!
//! Two handles: [`Ledger`] opens for writing (creating the file, applying migrations, marking it
//! as a mailroom ledger) and [`Reader`] opens for reading only: it never migrates, never writes,
//! refuses a file that is not a mailroom ledger, and works on read-only media. During a send the
//! [`Writer`] thread owns the `Ledger`.
//!
//! Migrations are the files in `migrations/`, applied in order; `PRAGMA user_version` records
//! how many have run, so opening an old ledger for writing upgrades it and a ledger from a newer
//! mailroom is refused rather than misread. `PRAGMA application_id` marks the file as ours.
//!
//! Submodules: `ledger` (the SQL for import, claims, outcomes, crash recovery), `read` (every
//! query behind reports, the dashboard and the dispatcher), `providers` (the MX/provider cache),
//! `feedback` (bounce import and suppressions), `relays` (the relays of `[[relay]]` runs: names, cool-offs, per-relay figures), `state` (the recipient state machine), `writer` (the one thread that owns
//! the write connection during a send and batches commits), `journal` (the in-flight file that
//! tells recovery which claimed rows had started their transaction) and `lock` (one send per
//! ledger). This module must not know about SMTP, templates or terminals: callers store what
//! they learnt, in the shapes of `migrations/0001_init.sql`.

mod feedback;
pub mod journal;
pub mod ledger;
pub mod lock;
mod providers;
mod read;
mod relays;
pub mod state;
mod test_sends;
pub mod writer;

pub use feedback::{Evidence, FeedbackTarget, FeedbackTx, NewEvent, Suppression};
pub use ledger::{
    AttemptRecord, Claim, ClaimResult, DueRow, ImportCount, NewRecipient, Outcome, Recovered,
    Release,
};
pub use lock::RunLock;
pub use providers::ProviderRecord;
pub use read::{
    CampaignRecord, ComplaintCount, CountRef, DiagnosisRecord, EntryKind, HistoryEntry,
    MinuteCount, Reader, ReasonRecord, RecipientRef, RecipientRow,
};
pub use relays::{Cooloff, RelayFigures};
pub use test_sends::{TestKind, TestSend, TestSendRow};
pub use writer::{Writer, WriterThread};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::model::{CampaignId, RecipientId, RelayId, RunId, RunOutcome, Shard};

/// The schema, in order. Never edit a file that has landed; append a new one.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("store/migrations/0001_init.sql")),
    (
        "0002_delivery",
        include_str!("store/migrations/0002_delivery.sql"),
    ),
    (
        "0004_report",
        include_str!("store/migrations/0004_report.sql"),
    ),
    (
        "0005_reconcile",
        include_str!("store/migrations/0005_reconcile.sql"),
    ),
    (
        "0006_hot_path",
        include_str!("store/migrations/0006_hot_path.sql"),
    ),
    (
        "0007_identity",
        include_str!("store/migrations/0007_identity.sql"),
    ),
    (
        "0008_shards",
        include_str!("store/migrations/0008_shards.sql"),
    ),
    (
        "0009_deliverability",
        include_str!("store/migrations/0009_deliverability.sql"),
    ),
    (
        "0010_test_sends",
        include_str!("store/migrations/0010_test_sends.sql"),
    ),
    (
        "0011_from_domain",
        include_str!("store/migrations/0011_from_domain.sql"),
    ),
    (
        "0012_relays",
        include_str!("store/migrations/0012_relays.sql"),
    ),
    ("0013_slim", include_str!("store/migrations/0013_slim.sql")),
    (
        "0014_settled_counts",
        include_str!("store/migrations/0014_settled_counts.sql"),
    ),
];

/// The SQLite header's application id of a mailroom ledger ("MLRM"), set by `0007_identity`.
const APPLICATION_ID: i64 = 0x4D4C_524D;

/// How long a connection waits for another process's write lock before giving up. Readers never
/// block in WAL mode; this covers two writers (e.g. `bounces import` during a `send`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors opening, reading or writing the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot open ledger {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger {path} does not exist\n\nRun `mailroom send` first, or pass the right path.")]
    Missing { path: PathBuf },
    #[error("cannot migrate ledger {path} to schema {migration}")]
    Migrate {
        path: PathBuf,
        migration: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "ledger {path} has schema version {found}, newer than this mailroom knows ({known})\n\n\
         Upgrade mailroom to read it."
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error(
        "ledger {path} was written by an older mailroom (schema {found} of {known}) and must be \
         upgraded before it can be read\n\nRun `mailroom upgrade --db {path}` (or any `mailroom \
         send`), which upgrades it in place; reading never changes a ledger."
    )]
    NeedsUpgrade {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error(
        "{path} is not a mailroom ledger ({why})\n\nPass the ledger mailroom made beside \
         campaign.toml (mailroom.db by default), or the path set in [store] path."
    )]
    NotALedger { path: PathBuf, why: String },
    #[error("ledger {path} {damaged}", damaged = DAMAGED)]
    Corrupt { path: PathBuf },
    #[error("ledger {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot start the ledger writer for {path}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path}: {reason}")]
    Writer { path: PathBuf, reason: String },
    #[error(
        "ledger {path} sends campaign `{campaign}` as {recorded}, and this send asks for \
         {requested}\n\nA ledger keeps one shard of a campaign for good (another split would send \
         some recipients twice across hosts): run this shard with its own ledger ([store] path), \
         or send `{campaign}` again as {recorded}."
    )]
    ShardMismatch {
        path: PathBuf,
        campaign: String,
        recorded: String,
        requested: String,
    },
    #[error(
        "another `mailroom send` (pid {pid}) is running on ledger {ledger}\n\n\
         Wait for it to finish (or stop it with Ctrl-C), then run this again."
    )]
    Busy { ledger: PathBuf, pid: u32 },
    #[error("cannot manage the send lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

macro_rules! sql_id {
    ($($id:ty),*) => {$(
        impl rusqlite::ToSql for $id {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl rusqlite::types::FromSql for $id {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(value).map(Self)
            }
        }
    )*};
}
sql_id!(CampaignId, RunId, RecipientId, RelayId);

/// Maps SQLite errors of the ledger at `path` into [`Error::Sqlite`].
fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| {
        damaged(path, &source).unwrap_or_else(|| Error::Sqlite {
            path: path.to_owned(),
            source,
        })
    }
}

/// What [`Error::Corrupt`] says of the ledger after naming it; the ledger writer's reason when a
/// batch meets the damage mid-send, after "ledger PATH: it".
pub(crate) const DAMAGED: &str = "is damaged: SQLite finds part of it corrupt (a disk or file \
     system fault, or a copy taken while a send wrote it), so mailroom neither reads nor writes \
     it\n\nKeep a copy of it (with its -wal file, if there is one) and put back the latest \
     backup of the ledger; `mailroom report --db BACKUP` shows what it holds. Do not start this \
     campaign over with a new ledger: it would mail every recipient again.";

/// [`Error::Corrupt`] when `source` is SQLite finding the file corrupt: its own words ("database
/// disk image is malformed") say neither which file nor what to do.
fn damaged(path: &Path, source: &rusqlite::Error) -> Option<Error> {
    is_corrupt(source).then(|| Error::Corrupt {
        path: path.to_owned(),
    })
}

/// Whether `e` is SQLite finding the ledger file corrupt.
fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseCorrupt)
}

/// [`Error::Open`], or [`Error::Corrupt`].
fn cannot_open(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| {
        damaged(path, &source).unwrap_or_else(|| Error::Open {
            path: path.to_owned(),
            source,
        })
    }
}

/// The ledger open for writing: created if needed, migrated, marked. Owned by one command (or,
/// during a send, by the [`Writer`] thread).
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// Opens (creating if needed) the ledger for writing, with WAL and every migration applied.
    ///
    /// # Errors
    /// When the file cannot be opened or created, is not a mailroom ledger, comes from a newer
    /// mailroom, or a migration fails.
    pub fn open(path: &Path) -> Result<Ledger, Error> {
        let fail = sqlite(path);
        let mut conn = Connection::open(path).map_err(cannot_open(path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(&fail)?;
        // Before anything writes: a foreign database must come out of this untouched.
        identify(&conn, path, Access::Write)?;
        // WAL lets the dashboard and reports read while a send writes; NORMAL is durable across
        // a process crash (kill -9), which is the failure the checkpoint is for.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&fail)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(&fail)?;
        // Statement journals (every INSERT that fires a trigger keeps one) and the import's temp
        // table stay in memory instead of a temp file written page by page; a 32 MiB page cache
        // keeps a large import from spilling dirty pages to the WAL mid-transaction.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(&fail)?;
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(&fail)?;
        migrate(&mut conn, path)?;
        Ok(Ledger {
            conn,
            path: path.to_owned(),
        })
    }

    /// The ledger's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checkpoints are the only fsyncs in WAL + synchronous=NORMAL; a send lets the WAL grow to
    /// about 40 MB between them instead of checkpointing every few hundred messages (SQLite
    /// checkpoints when the last connection closes). Failure only costs speed.
    pub fn defer_checkpoints(&self) {
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", 10_000);
    }

    /// Returns the campaign's id, creating the row on first use.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn ensure_campaign(&self, name: &str) -> Result<CampaignId, Error> {
        ledger::ensure_campaign(&self.conn, name).map_err(sqlite(&self.path))
    }

    /// Records which shard of `campaign` this ledger sends, or refuses a send with another one:
    /// the first send of a campaign fixes it (`None`: the whole campaign); every later send
    /// must ask for the same.
    ///
    /// # Errors
    /// [`Error::ShardMismatch`] with the fix, or a ledger failure.
    pub fn claim_shard(
        &self,
        campaign: CampaignId,
        name: &str,
        shard: Option<Shard>,
    ) -> Result<(), Error> {
        let fail = sqlite(&self.path);
        let (recorded, sent): (Option<String>, bool) = self
            .conn
            .query_row(
                "SELECT shard, EXISTS (SELECT 1 FROM recipients WHERE campaign_id = ?1) \
                 FROM campaigns WHERE id = ?1",
                rusqlite::params![campaign],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(&fail)?;
        let requested = shard.map(|s| s.to_string());
        if recorded == requested {
            return Ok(());
        }
        if recorded.is_none() && !sent {
            self.conn
                .execute(
                    "UPDATE campaigns SET shard = ?2 WHERE id = ?1",
                    rusqlite::params![campaign, requested],
                )
                .map_err(&fail)?;
            return Ok(());
        }
        let describe = |s: Option<String>| {
            s.map_or_else(|| "the whole campaign".to_owned(), |s| format!("shard {s}"))
        };
        Err(Error::ShardMismatch {
            path: self.path.clone(),
            campaign: name.to_owned(),
            recorded: describe(recorded),
            requested: describe(requested),
        })
    }

    /// Reconciles a campaign with its contacts file in one transaction (see
    /// [`ledger::import`]); the first `Err` from `rows` rolls everything back.
    ///
    /// # Errors
    /// The ledger's error, or the first error of `rows`.
    pub fn import<I, E>(
        &mut self,
        campaign: CampaignId,
        rows: I,
    ) -> Result<ImportCount, ImportError<E>>
    where
        I: IntoIterator<Item = Result<NewRecipient, E>>,
    {
        ledger::import(&mut self.conn, campaign, rows).map_err(|e| match e {
            ledger::ImportError::Sqlite(source) => ImportError::Store(sqlite(&self.path)(source)),
            ledger::ImportError::Source(e) => ImportError::Source(e),
        })
    }

    /// Crash recovery of every `sending` row left by a run that did not finish (see
    /// [`ledger::recover_interrupted`]). The caller must hold the ledger's [`RunLock`].
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn recover_interrupted(&mut self, started: &journal::Started) -> Result<Recovered, Error> {
        ledger::recover_interrupted(&mut self.conn, started).map_err(sqlite(&self.path))
    }

    /// Starts a run row; the port is filled in once a connection succeeds.
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn start_run(
        &self,
        campaign: CampaignId,
        host: &str,
        security: &str,
    ) -> Result<RunId, Error> {
        ledger::start_run(&self.conn, campaign, host, security).map_err(sqlite(&self.path))
    }

    /// Records the From domain a run sends from (see `migrations/0011_from_domain.sql`).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn set_run_from_domain(&self, run: RunId, domain: &str) -> Result<(), Error> {
        ledger::set_run_from_domain(&self.conn, run, domain).map_err(sqlite(&self.path))
    }

    /// How many of the campaign's recipients are claimed (`sending`) right now.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn sending_count(&self, campaign: CampaignId) -> Result<u64, Error> {
        ledger::sending_count(&self.conn, campaign).map_err(sqlite(&self.path))
    }

    /// Closes a run with its outcome (for a run whose writer failed).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn finish_run(&self, run: RunId, outcome: RunOutcome) -> Result<(), Error> {
        ledger::finish_run(&self.conn, run, outcome).map_err(sqlite(&self.path))
    }

    /// Records one test send or seed copy (never touches a recipient: see `test_sends`).
    ///
    /// # Errors
    /// When the ledger cannot be written.
    pub fn record_test_send(&self, t: &TestSend) -> Result<(), Error> {
        test_sends::insert(&self.conn, t).map_err(sqlite(&self.path))
    }

    /// The schema version (number of migrations applied).
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn schema_version(&self) -> Result<i64, Error> {
        user_version(&self.conn, &self.path)
    }
}

/// Why an import failed: the ledger, or the source of the rows.
#[derive(Debug)]
pub enum ImportError<E> {
    Store(Error),
    Source(E),
}

/// Opens (creating if needed) the ledger at `path` for writing: [`Ledger::open`].
///
/// # Errors
/// As [`Ledger::open`].
pub fn open(path: &Path) -> Result<Ledger, Error> {
    Ledger::open(path)
}

/// What a command means to do with the file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Why a database without a table is not a ledger (it becomes one when opened for writing).
const EMPTY_DATABASE: &str = "an empty database";

/// Refuses a file that is not a mailroom ledger, and (for reading) one that needs an upgrade.
fn identify(conn: &Connection, path: &Path, access: Access) -> Result<(), Error> {
    let fail = sqlite(path);
    let not_ours = |why: &str| Error::NotALedger {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|source| match source {
            rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::NotADatabase => {
                not_ours("not an SQLite database")
            }
            source => fail(source),
        })?;
    let version = user_version(conn, path)?;
    let known = MIGRATIONS.len();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' \
             AND name IN ('campaigns', 'recipients', 'attempts')",
            [],
            |r| r.get(0),
        )
        .map_err(&fail)?;
    let any_table: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table')",
            [],
            |r| r.get(0),
        )
        .map_err(&fail)?;
    let ours = match app_id {
        APPLICATION_ID => true,
        // Ledgers from before 0007 carry no mark: they are recognised by their schema.
        0 => version > 0 && tables == 3,
        _ => return Err(not_ours("another application's SQLite database")),
    };
    if !ours {
        if access == Access::Write && version == 0 && !any_table {
            // A new (or empty) file: this open makes it a ledger.
            return Ok(());
        }
        return Err(not_ours(if any_table {
            "an SQLite database with other tables"
        } else {
            EMPTY_DATABASE
        }));
    }
    if version > known as i64 {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    if access == Access::Read && version < known as i64 {
        return Err(Error::NeedsUpgrade {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    Ok(())
}

/// Opens an existing ledger read-only: `mode=ro`, or `immutable=1` when the ledger's folder is
/// read-only and SQLite cannot use the WAL's shared-memory file (read-only media). Never
/// migrates, never writes.
fn open_read_only(path: &Path) -> Result<Connection, Error> {
    if path.is_dir() {
        return Err(Error::NotALedger {
            path: path.to_owned(),
            why: "it is a folder".into(),
        });
    }
    if !path.is_file() {
        return Err(Error::Missing {
            path: path.to_owned(),
        });
    }
    let open = |immutable: bool| -> Result<Connection, rusqlite::Error> {
        let uri = format!(
            "file:{}?mode=ro{}",
            uri_path(path),
            if immutable { "&immutable=1" } else { "" }
        );
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Opening is lazy: the first read is where a missing `-shm` shows.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(conn)
    };
    let conn = match open(false) {
        Ok(conn) => conn,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::SystemIoFailure
            ) =>
        {
            open(true).map_err(cannot_open(path))?
        }
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            return Err(Error::NotALedger {
                path: path.to_owned(),
                why: "not an SQLite database".into(),
            });
        }
        Err(source) => return Err(cannot_open(path)(source)),
    };
    identify(&conn, path, Access::Read)?;
    Ok(conn)
}

/// A path as the path part of an SQLite `file:` URI: `%`, `?` and `#` are percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite(path))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let version = user_version(conn, path)?;
    if version as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    // A table rebuild (0013) cannot run with foreign keys enforced (dropping the old table would
    // fail on the attempts that name its rows): they are off while migrating, and checked in
    // full before each migration commits instead.
    let keys = |conn: &Connection, on: bool| {
        conn.pragma_update(None, "foreign_keys", on)
            .map_err(sqlite(path))
    };
    keys(conn, false)?;
    let migrated = migrate_from(conn, path, version as usize);
    keys(conn, true)?;
    migrated
}

fn migrate_from(conn: &mut Connection, path: &Path, version: usize) -> Result<(), Error> {
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version) {
        let fail = |source| Error::Migrate {
            path: path.to_owned(),
            migration: name,
            source,
        };
        // Each migration and its version bump commit together, so a crash mid-upgrade leaves
        // the previous, consistent schema.
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(fail)?;
        if let Some(table) = broken {
            return Err(fail(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                Some(format!(
                    "a row of {table} names a row that does not exist (`sqlite3 {} 'PRAGMA \
                     foreign_key_check'` lists them); mailroom never writes such rows, so the \
                     file was changed by something else: upgrade a copy taken before that, or \
                     remove those rows",
                    path.display()
                )),
            )));
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    /// A ledger as mailroom wrote it before its newest migration: every earlier one applied,
    /// each with its version; returns the version it is at.
    fn ledger_before_the_last_migration(path: &Path) -> (Connection, usize) {
        ledger_before(path, MIGRATIONS.len() - 1)
    }

    /// A ledger with the first `old` migrations applied, as that mailroom left it.
    fn ledger_before(path: &Path, old: usize) -> (Connection, usize) {
        let mut conn = raw(path);
        for (index, (_, sql)) in MIGRATIONS.iter().enumerate().take(old) {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", index as i64 + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        (conn, old)
    }

    #[test]
    fn open_creates_schema_marks_the_file_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        drop(open(&path).unwrap());
        let conn = raw(&path);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let id: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
        conn.execute(
            "INSERT INTO campaigns (name, created_at) VALUES ('c', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let ledger = open(&path).unwrap();
        assert_eq!(ledger.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let n: i64 = raw(&path)
            .query_row("SELECT count(*) FROM campaigns", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "reopening must not re-run migrations");
    }

    #[test]
    fn a_damaged_ledger_is_named_as_such_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let ledger = open(&path).unwrap();
        let campaign = ledger.ensure_campaign("c").unwrap();
        let conn = &ledger.conn;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        for i in 0..2_000 {
            conn.execute(
                "INSERT INTO recipients (campaign_id, email, line, token, fields) \
                 VALUES (?1, ?2, ?3, ?4, '{}')",
                rusqlite::params![
                    campaign,
                    format!("r{i}@example.com"),
                    i + 2,
                    format!("t{i}")
                ],
            )
            .unwrap();
        }
        drop(ledger);
        // Every page but the first (the header and the start of the schema) overwritten, as a
        // disk fault would leave them.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 8 * 4096, "{}", bytes.len());
        for page in bytes.chunks_mut(4096).skip(1) {
            page[..64].fill(0xA5);
        }
        std::fs::write(&path, &bytes).unwrap();
        let said = |e: Error| {
            let text = e.to_string();
            assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
            assert!(
                text.contains("is damaged") && text.contains("latest backup"),
                "{text}"
            );
            assert!(text.contains("would mail every recipient again"), "{text}");
        };
        said(
            Reader::open(&path)
                .and_then(|r| r.suppressions())
                .err()
                .unwrap(),
        );
        said(Ledger::open(&path).err().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "nothing written to it"
        );
    }

    #[test]
    fn reading_refuses_missing_empty_and_foreign_files_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.db");
        assert!(matches!(Reader::open(&missing), Err(Error::Missing { .. })));
        // A folder is not "not sent yet".
        assert!(matches!(
            Reader::open(dir.path()),
            Err(Error::NotALedger { why, .. }) if why == "it is a folder"
        ));
        assert!(!missing.exists());

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            Reader::open(&empty),
            Err(Error::NotALedger { .. })
        ));
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some text\n".repeat(200)).unwrap();
        let before = std::fs::read(&text).unwrap();
        for result in [Reader::open(&text).err(), Ledger::open(&text).err()] {
            assert!(
                matches!(result, Some(Error::NotALedger { .. })),
                "{result:?}"
            );
        }
        assert_eq!(std::fs::read(&text).unwrap(), before);

        let foreign = dir.path().join("app.db");
        raw(&foreign)
            .execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);")
            .unwrap();
        let before = std::fs::read(&foreign).unwrap();
        for result in [Reader::open(&foreign).err(), Ledger::open(&foreign).err()] {
            assert!(
                matches!(result, Some(Error::NotALedger { .. })),
                "{result:?}"
            );
        }
        assert_eq!(std::fs::read(&foreign).unwrap(), before, "untouched");
        assert!(!dir.path().join("app.db-wal").exists());
    }

    #[test]
    fn an_old_ledger_is_upgraded_by_writers_and_never_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let (conn, old) = ledger_before_the_last_migration(&path);
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        drop(conn);
        let err = Reader::open(&path).err().unwrap();
        assert!(
            matches!(err, Error::NeedsUpgrade { found, .. } if found == old as i64),
            "{err:?}"
        );
        assert!(err.to_string().contains("mailroom upgrade"), "{err}");
        assert_eq!(user_version(&raw(&path), &path).unwrap(), old as i64);
        drop(open(&path).unwrap());
        assert!(Reader::open(&path).is_ok());
    }

    #[test]
    fn the_upgrade_to_settled_counters_keeps_every_figure_a_report_shows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let (conn, old) = ledger_before_the_last_migration(&path);
            assert_eq!(MIGRATIONS[old].0, "0014_settled_counts");
            conn.execute_batch(
                "INSERT INTO campaigns (id, name, created_at) VALUES (1, 'spring', 0);
                 INSERT INTO recipients (campaign_id, email, line, token, fields, state)
                 VALUES (1, 'a@x.test', 2, 't1', '{}', 'pending'),
                        (1, 'b@x.test', 3, 't2', '{}', 'deferred'),
                        (1, 'c@y.test', 4, 't3', '{}', 'accepted');
                 UPDATE recipients SET state = 'sending', claimed_from = state
                 WHERE email IN ('a@x.test', 'b@x.test');",
            )
            .unwrap();
        }
        drop(open(&path).unwrap());
        let raw_counts: Vec<(String, String, i64)> = raw(&path)
            .prepare("SELECT domain, state, n FROM report_counts WHERE n > 0 ORDER BY 1, 2")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |d: &str, s: &str, n| (d.to_owned(), s.to_owned(), n);
        assert_eq!(
            raw_counts,
            [
                row("x.test", "deferred", 1),
                row("x.test", "pending", 1),
                row("y.test", "accepted", 1)
            ]
        );
        let mut read = Vec::new();
        Reader::open(&path)
            .unwrap()
            .for_each_count(Some(CampaignId(1)), |r| {
                read.push((r.domain.to_owned(), r.state.to_owned(), r.n as i64));
            })
            .unwrap();
        assert_eq!(
            read,
            [row("x.test", "sending", 2), row("y.test", "accepted", 1)]
        );
    }

    #[test]
    fn an_upgrade_that_would_keep_a_dangling_row_is_refused_and_says_how_to_find_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let slim = MIGRATIONS
            .iter()
            .position(|(name, _)| *name == "0013_slim")
            .unwrap();
        let old = {
            // 0013 rebuilds `recipients` with foreign keys off and checks them before commit.
            let (conn, old) = ledger_before(&path, slim);
            // An attempt of a recipient that is not there, as another tool with foreign keys
            // off could leave it.
            conn.pragma_update(None, "foreign_keys", false).unwrap();
            conn.execute(
                "INSERT INTO attempts (recipient_id, at, step, outcome) \
                 VALUES (99, 0, 'message', 'accepted')",
                [],
            )
            .unwrap();
            old
        };
        let err = open(&path).err().unwrap();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("0013_slim"), "{text}");
        assert!(text.contains("PRAGMA foreign_key_check"), "{text}");
        // Nothing of the refused migration is kept.
        assert_eq!(user_version(&raw(&path), &path).unwrap(), old as i64);
    }

    #[test]
    fn a_ledger_whose_shared_memory_file_cannot_be_made_is_read_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        let ledger = open(&path).unwrap();
        ledger
            .conn
            .execute(
                "INSERT INTO campaigns (name, created_at) VALUES ('c', 0)",
                [],
            )
            .unwrap();
        drop(ledger);
        // What read-only media look like to SQLite: the `-shm` beside the ledger cannot be
        // created or opened (here a directory stands in its way; permission bits would not stop
        // root).
        let _ = std::fs::remove_file(dir.path().join("ro.db-shm"));
        std::fs::create_dir(dir.path().join("ro.db-shm")).unwrap();
        let reader = Reader::open(&path).unwrap();
        assert_eq!(reader.campaigns().unwrap().len(), 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        drop(open(&path).unwrap());
        raw(&path).pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            open(&path).err(),
            Some(Error::TooNew { found: 99, .. })
        ));
        assert!(matches!(
            Reader::open(&path).err(),
            Some(Error::TooNew { .. })
        ));
    }

    #[test]
    fn a_ledger_keeps_the_shard_of_a_campaign_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = open(&dir.path().join("l.db")).unwrap();
        let shard = |s: &str| Some(s.parse::<Shard>().unwrap());
        // Sent whole first: a shard later is refused.
        let whole = ledger.ensure_campaign("whole").unwrap();
        ledger.claim_shard(whole, "whole", None).unwrap();
        let row = NewRecipient {
            email: "a@x.test".into(),
            name: None,
            line: 2,
            token: "t1".into(),
            fields: "{}".into(),
        };
        ledger.import(whole, [Ok::<_, ()>(row)]).unwrap();
        let e = ledger
            .claim_shard(whole, "whole", shard("0/2"))
            .unwrap_err();
        assert!(e.to_string().contains("as the whole campaign"), "{e}");
        // A shard first: the same shard again is fine, another or none is refused.
        let split = ledger.ensure_campaign("split").unwrap();
        ledger.claim_shard(split, "split", shard("1/2")).unwrap();
        ledger.claim_shard(split, "split", shard("1/2")).unwrap();
        for other in [shard("0/2"), shard("1/3"), None] {
            assert!(matches!(
                ledger.claim_shard(split, "split", other),
                Err(Error::ShardMismatch { .. })
            ));
        }
    }

    #[test]
    fn uri_paths_escape_what_sqlite_would_read_as_query() {
        assert_eq!(
            uri_path(Path::new("/a b/c%d?e#f.db")),
            "/a b/c%25d%3fe%23f.db"
        );
    }
}
