//! Schema migrations, recorded in `keystead_schema`.
//!
//! Each migration runs once, in order, inside the same `BEGIN IMMEDIATE`
//! transaction that records it, so two processes opening a fresh file at once
//! can't both apply it. Never edit a released migration: append a new one.

use super::backend;
use keystead::StorageError;
use rusqlite::{Connection, TransactionBehavior, params};

/// `(version, description, SQL)`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "kv table and commit counter",
    "CREATE TABLE kv (
         key     BLOB    NOT NULL PRIMARY KEY,
         value   BLOB    NOT NULL,
         version INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE commit_counter (
         id          INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
         last_commit INTEGER NOT NULL
     );
     INSERT INTO commit_counter (id, last_commit) VALUES (0, 0);",
)];

/// The newest schema version this crate knows.
pub(crate) const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Bring the database up to [`LATEST`], or refuse one from the future.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StorageError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS keystead_schema (
             version     INTEGER NOT NULL PRIMARY KEY,
             description TEXT    NOT NULL
         );",
    )
    .map_err(backend)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM keystead_schema",
            [],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if current > LATEST {
        return Err(StorageError::backend(format!(
            "database schema version {current} is newer than this keystead-sqlite supports ({LATEST}); upgrade keystead-sqlite"
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.execute_batch(sql).map_err(backend)?;
        tx.execute(
            "INSERT INTO keystead_schema (version, description) VALUES (?1, ?2)",
            params![version, description],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}
