//! The ledger: a SQLite database (WAL) that is the checkpoint of every campaign.
//!
//! This module owns the schema and its migrations and hands out connections. It must not know
//! about SMTP or templates: callers store what they learnt, in the shapes of
//! `migrations/0001_init.sql`.
//!
//! Migrations are the files in `migrations/`, applied in order; `PRAGMA user_version` records
//! how many have run, so opening an old ledger upgrades it and a ledger from a newer mailroom is
//! refused rather than misread.
//!
//! The delivery engine's part lives in submodules: `ledger` (the SQL for import, claims,
//! outcomes, crash recovery), `writer` (the one thread that owns the write connection during a
//! send and batches commits) and `journal` (the in-flight file that tells recovery which claimed
//! rows had started their transaction).

pub mod journal;
pub mod ledger;
pub mod lock;
pub mod writer;

pub use ledger::{
    AttemptRecord, Claim, ClaimResult, DueRow, ImportCount, NewRecipient, Outcome, Release,
};
pub use lock::RunLock;
pub use writer::{Writer, WriterThread};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

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
];

/// How long a connection waits for another process's write lock before giving up. Readers never
/// block in WAL mode; this covers two writers (e.g. `bounces import` during a `send`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors opening or migrating the ledger.
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
    #[error("ledger {path}: {source}")]
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
        "another `mailroom send` (pid {pid}) is running on ledger {ledger}\n\n         Wait for it to finish (or stop it with Ctrl-C), then run this again."
    )]
    Busy { ledger: PathBuf, pid: u32 },
    #[error("cannot manage the send lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Opens (creating if needed) the ledger for writing, with WAL and every migration applied.
///
/// # Errors
/// When the file cannot be opened or created, or a migration fails.
pub fn open(path: &Path) -> Result<Connection, Error> {
    let sqlite = |source| Error::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // WAL lets the dashboard and reports read while a send writes; NORMAL is durable across a
    // process crash (kill -9), which is the failure the checkpoint is for.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sqlite)?;
    // Statement journals (every INSERT that fires a trigger keeps one) and the import's temp
    // table stay in memory instead of a temp file written page by page; a 32 MiB page cache
    // keeps a large import from spilling dirty pages to the WAL mid-transaction.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sqlite)?;
    conn.pragma_update(None, "cache_size", -32_768)
        .map_err(sqlite)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens an existing ledger read-only, for reports and the dashboard.
///
/// # Errors
/// When the file does not exist, cannot be opened, or has a schema newer than this build.
pub fn open_read_only(path: &Path) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(Error::Missing {
            path: path.to_owned(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| Error::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })?;
    let version = user_version(&conn, path)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    Ok(conn)
}

fn user_version(conn: &Connection, path: &Path) -> Result<i64, Error> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|source| Error::Sqlite {
            path: path.to_owned(),
            source,
        })
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let version = user_version(conn, path)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(Error::TooNew {
            path: path.to_owned(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let fail = |source| Error::Migrate {
            path: path.to_owned(),
            migration: name,
            source,
        };
        // Each migration and its version bump commit together, so a crash mid-upgrade leaves
        // the previous, consistent schema.
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
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

    #[test]
    fn open_creates_schema_and_reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let conn = open(&path).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute(
            "INSERT INTO campaigns (name, created_at) VALUES ('c', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM campaigns", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "reopening must not re-run migrations");
        assert_eq!(user_version(&conn, &path).unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn read_only_refuses_missing_file_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.db");
        assert!(matches!(open_read_only(&path), Err(Error::Missing { .. })));
        open(&path).unwrap();
        let ro = open_read_only(&path).unwrap();
        assert!(
            ro.execute(
                "INSERT INTO campaigns (name, created_at) VALUES ('c', 0)",
                []
            )
            .is_err()
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let conn = open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(open(&path), Err(Error::TooNew { found: 99, .. })));
        assert!(matches!(open_read_only(&path), Err(Error::TooNew { .. })));
    }
}
