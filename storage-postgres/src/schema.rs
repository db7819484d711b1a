//! Schema migrations, recorded in `keystead_schema`.
//!
//! Each migration runs once, in order, inside the same transaction that
//! records it. That transaction first takes a transaction-scoped advisory
//! lock derived from the schema name, so two processes opening a fresh
//! database at once queue up: the second sees the first one's migrations as
//! already applied. Never edit a released migration: append a new one.

use super::{Sql, statement_failed};
use keystead::StorageError;
use tokio_postgres::IsolationLevel;

/// `(version, description, SQL)`, in order. `{s}` stands for the quoted
/// schema followed by a dot, or nothing when no schema is configured;
/// `{seq}` for the version sequence's name as a string literal.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "kv table and commit counter",
        "CREATE TABLE {s}kv (
             key     BYTEA  NOT NULL PRIMARY KEY,
             value   BYTEA  NOT NULL,
             version BIGINT NOT NULL
         );
         CREATE TABLE {s}commit_counter (
             id          SMALLINT NOT NULL PRIMARY KEY CHECK (id = 0),
             last_commit BIGINT   NOT NULL
         );
         INSERT INTO {s}commit_counter (id, last_commit) VALUES (0, 0);",
    ),
    // Versions from a sequence instead of the counter row every writer
    // queued on. The lock waits for writers of the old release still in
    // flight, so the sequence starts above every number they drew; after
    // the drop, such writers fail with an error (the table is gone) and
    // write nothing. `CACHE 1` is what keeps versions increasing per key
    // across connections: a cache would hand each session its own block.
    (
        2,
        "versions from a sequence; no commit counter",
        "LOCK TABLE {s}commit_counter IN ACCESS EXCLUSIVE MODE;
         CREATE SEQUENCE {s}kv_version AS BIGINT MINVALUE 1 NO CYCLE CACHE 1;
         SELECT setval({seq},
                       GREATEST((SELECT last_commit FROM {s}commit_counter WHERE id = 0),
                                (SELECT MAX(version) FROM {s}kv),
                                0) + 1,
                       false);
         DROP TABLE {s}commit_counter;",
    ),
];

/// The newest schema version this crate knows.
pub(crate) const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// First half of the advisory lock key: "keys" in ASCII. The second half is
/// `hashtext(schema)`, so stores in different schemas migrate independently.
const LOCK_CLASS: i32 = 0x6b65_7973;

/// Bring the schema up to [`LATEST`], or refuse one from the future.
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::Object,
    sql: &Sql,
) -> Result<(), StorageError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(|e| statement_failed("starting the migration transaction", &e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &sql.schema_name],
    )
    .await
    .map_err(|e| statement_failed("taking the migration lock", &e))?;
    if !sql.prefix.is_empty() {
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            sql.prefix.trim_end_matches('.')
        ))
        .await
        .map_err(|e| statement_failed("creating the schema", &e))?;
    }
    tx.batch_execute(&sql.expand(
        "CREATE TABLE IF NOT EXISTS {s}keystead_schema (
             version     INTEGER     NOT NULL PRIMARY KEY,
             description TEXT        NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         );",
    ))
    .await
    .map_err(|e| statement_failed("creating the schema version table", &e))?;
    let current: i32 = tx
        .query_one(
            &sql.expand("SELECT COALESCE(MAX(version), 0) FROM {s}keystead_schema"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| statement_failed("reading the schema version", &e))?;
    if current > LATEST {
        return Err(StorageError::backend(format!(
            "database schema version {current} is newer than this keystead-postgres supports ({LATEST}); upgrade keystead-postgres"
        )));
    }
    for (version, description, migration) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        tx.batch_execute(&sql.expand(migration))
            .await
            .map_err(|e| statement_failed("applying a schema migration", &e))?;
        tx.execute(
            &sql.expand("INSERT INTO {s}keystead_schema (version, description) VALUES ($1, $2)"),
            &[version, description],
        )
        .await
        .map_err(|e| statement_failed("recording a schema migration", &e))?;
    }
    tx.commit()
        .await
        .map_err(|e| statement_failed("committing the schema migration", &e))
}
