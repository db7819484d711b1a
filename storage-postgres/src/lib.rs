//! keystead's [`Store`] contract on PostgreSQL — for deployments where
//! several instances of an embedder's backend share one keystead state.
//!
//! [`PostgresStore::connect`] takes a connection string (URL or `key=value`
//! form), opens a [`deadpool_postgres`] pool of [`tokio_postgres`]
//! connections and brings the schema up to date. Every call is natively
//! async: nothing blocks the caller's executor and no extra threads are used.
//!
//! # How it meets the contract
//!
//! * **Layout.** One table `kv(key BYTEA PRIMARY KEY, value BYTEA, version
//!   BIGINT)`, a sequence `kv_version` that versions are drawn from, and a
//!   `keystead_schema` table recording applied migrations — in the schema
//!   named by [`PostgresOptions::schema`], or wherever the connection's
//!   `search_path` points. PostgreSQL compares `BYTEA` with `memcmp` then
//!   length, which is exactly the contract's unsigned byte order, so scans
//!   are index range scans (`key >= prefix AND key < prefix_end ORDER BY key
//!   LIMIT n`).
//! * **Versions.** A writing commit draws one number with `nextval` and
//!   gives it to every key it puts. Sequences are not transactional: a
//!   number once drawn is never handed out again, even if its commit rolls
//!   back or its key is later deleted, so numbers may be skipped but never
//!   repeat. Numbers are drawn in real-time order (`CACHE 1`: a cache would
//!   hand each connection its own block), and a commit draws only once it
//!   is protected against every earlier writer of its keys (the advisory
//!   locks below, or SSI's write-write rule at `SERIALIZABLE`), so whoever
//!   writes a key next — re-creating it after a delete included — draws a
//!   larger number. There is no store-wide commit order and nothing waits
//!   for one.
//! * **Atomic conditional batches** ([`Isolation::ReadCommitted`], the
//!   default). A batch with writes is one `READ COMMITTED` transaction of
//!   two round trips: `BEGIN`, the key locks (after an early precondition
//!   check, see *Hot keys*) and the precondition read, pipelined; then the
//!   write and `COMMIT`, pipelined (a batch with no conditioned key sends
//!   all of it in one). PostgreSQL runs pipelined statements in order and
//!   answers the `COMMIT` of a transaction in which a statement failed with
//!   a rollback, so nothing fails half-applied. Since the transaction is
//!   opened by hand, each writing commit runs on a task of its own that
//!   ends it (`COMMIT` or `ROLLBACK`) even when the caller stops waiting: a
//!   dropped `commit` future never returns a connection to the pool inside
//!   a transaction, and its outcome is then, as after a lost connection,
//!   unknown to that caller. The lock statement takes
//!   `pg_advisory_xact_lock` on every written key and
//!   `pg_advisory_xact_lock_shared` on every checked-only key, in ascending
//!   lock-id order (so two batches never deadlock); ids are computed by the
//!   server from SHA-256 of schema and key. Writers of one key queue on its
//!   lock; writers of disjoint keys never wait for each other. The read
//!   (`SELECT key, version … WHERE key = ANY($1)`, only for keys not under
//!   [`Precondition`](keystead::store::Precondition)`::Any`) starts once
//!   every lock is held, and at `READ COMMITTED` it sees every commit made
//!   before — PostgreSQL makes a commit visible before it releases its
//!   locks — and no other writer of these keys can commit until this one
//!   ends. That covers `Absent` too, where there is no row to lock.
//!   Preconditions are checked in key order; the first failure rolls back
//!   with [`StorageError::Conflict`] naming that key. The write is one
//!   statement: a CTE drawing `nextval`, an `INSERT … SELECT FROM unnest(…)
//!   ON CONFLICT DO UPDATE` for the puts and a `DELETE … WHERE key =
//!   ANY(…)`; no notification (see [below](#watch)). PostgreSQL never reports a serialization failure at
//!   `READ COMMITTED` and the lock order rules out deadlocks among
//!   keystead's commits; should either happen anyway (40001, 40P01), the
//!   commit is retried like at `SERIALIZABLE`.
//! * **Check-only batches** and [`Store::get_many`] take no lock and draw no
//!   version: one `SELECT` reads every key from a single snapshot. Writers
//!   of overlapping keys commit in lock order, so a snapshot is a
//!   consistent cut and the read is linearised at the moment it was taken.
//! * <a id="isolation"></a>**`SERIALIZABLE`** ([`Isolation::Serializable`]).
//!   No advisory lock: each writing commit is `BEGIN ISOLATION LEVEL
//!   SERIALIZABLE`; the same read (if any key is conditioned), check and
//!   write statement; `COMMIT`. PostgreSQL's serializable snapshot
//!   isolation aborts one of two transactions that would otherwise race — two
//!   `Absent` claims, two compare-and-swaps, a write under a concurrent
//!   check — with 40001, and two writers of one key never both commit
//!   unless the second saw the first (so its `nextval` is larger). Check-only
//!   batches and `get_many` run as `SERIALIZABLE READ ONLY` transactions
//!   (`BEGIN`, `SELECT`, `COMMIT` pipelined in one round trip), so their
//!   snapshot is ordered by SSI as well: a plain snapshot there could see a
//!   state that no serial order of the writers ever had (the read-only
//!   anomaly). Disjoint keys may still abort each other now and then
//!   (PostgreSQL tracks reads of absent keys per index page), which costs a
//!   retry, never an error.
//! * **Retries.** A transaction aborted with 40001 (serialization failure)
//!   or 40P01 (deadlock), by any statement or by `COMMIT`, applied nothing,
//!   so the adapter runs the whole transaction again — reading the versions
//!   afresh — up to [`PostgresOptions::serialization_retries`] times (20 by
//!   default), waiting a random time below a bound that doubles from 1 ms
//!   to 100 ms between attempts. A precondition found false on a fresh read
//!   is a genuine [`StorageError::Conflict`]; running out of retries is
//!   [`StorageError::Backend`] ("giving up", nothing applied) — a retry
//!   never leaks out as a spurious `Conflict`. Single-key `get` and `scan`
//!   are single statements at the session's isolation and are not retried.
//! * **Hot keys.** The lock statement first compares the conditioned
//!   keys' current versions with the preconditions on its own snapshot
//!   (one uncorrelated subquery, evaluated before any lock is taken); if
//!   one already fails, it takes no lock, and the batch fails with
//!   `Conflict` at once from the read that follows — a compare-and-swap
//!   with a stale `Version(v)` never queues behind the key's writer. Only
//!   attempts that could still win queue on the lock (or, at
//!   `SERIALIZABLE`, on the row, then retry); the read under the lock
//!   decides. Someone always wins: no livelock. Measured limit: when 32
//!   writers read the same version at once, they all pass the early
//!   check, and the 31 losers still cycle through the lock one by one
//!   (`benches/store_scaling.rs`: about 50–80 successful increments/s on
//!   2 shared cores, the same as the raw statements).
//! * **Durability.** `Ok` is returned only after PostgreSQL acknowledged
//!   `COMMIT`. With PostgreSQL's default `synchronous_commit = on`, that
//!   means the commit record was flushed to the WAL (and to synchronous
//!   standbys, if configured): it survives a crash of the server and of the
//!   machine. [`PostgresStore::connect_with`] refuses a session whose
//!   `synchronous_commit` is `off` unless
//!   [`PostgresOptions::allow_asynchronous_commit`] is set.
//! * **Several processes.** Any number of processes may connect to the same
//!   database and schema: every guarantee above is enforced by PostgreSQL
//!   locks and SSI, not by this process. Commits to disjoint keys run in
//!   parallel, across connections, processes and machines; reads never
//!   wait. Each store opens up to [`PostgresOptions::pool_size`]
//!   connections: size the server's `max_connections` for every instance.
//!   Statements are prepared once per connection and cached, so a pooler in
//!   front of PostgreSQL must support prepared statements (PgBouncer ≥ 1.21
//!   in transaction mode, or session mode); advisory locks are
//!   transaction-scoped, which transaction pooling keeps.
//! * <a id="watch"></a>**Watches and notifications.** No write
//!   transaction calls `pg_notify`: PostgreSQL holds a database-wide lock
//!   from a notifying transaction's pre-commit until its commit record is
//!   flushed, which serialised every writing commit on one lock
//!   (`benches/store_scaling.rs` measured it). Instead, after `COMMIT` has
//!   returned, the committing call wakes this process's watches and
//!   signals a background task that sends `SELECT pg_notify(channel, '')`
//!   on a pooled connection — one `NOTIFY` for every commit signalled
//!   while the previous one was in flight or in the 5 ms kept between two
//!   (at most about 200 a second per store, for a few milliseconds of
//!   latency); the call does not wait for it.
//!   Each store with watches `LISTEN`s on a dedicated connection and, every
//!   [`PostgresOptions::watch_poll_interval`] (1 s by default), also reads
//!   `pg_current_snapshot()` and wakes its watches if it changed since the
//!   last reading. The guarantee, precisely: a commit acknowledged with
//!   `Ok` by any process after a watch was made wakes that watch — in the
//!   committing process at once; in every other process when its `NOTIFY`
//!   arrives or, if that `NOTIFY` is never sent or is lost (the writer
//!   crashed, was dropped or lost its connection between `COMMIT` and
//!   `NOTIFY`), at the listener's first snapshot reading after the commit
//!   became visible: at most one poll interval plus one round trip late,
//!   never lost. (A commit already visible when the watch was made is
//!   covered by a wake-up every new watch gets at once, or by the
//!   listener's first one.) While the listener connection is down nothing
//!   is delivered; on reconnecting it takes a reading, then wakes every
//!   watch, so the subscriber's re-read replays what it missed. The cost:
//!   while anything in the cluster writes, every watch wakes about once per
//!   interval (the transaction ids the snapshot shows are cluster-wide),
//!   and each subscriber re-reads its cursor.
//! * **Migrations.** On connect, missing migrations are applied in one
//!   transaction holding an advisory lock, so processes starting together
//!   migrate once; a schema written by a newer keystead-postgres is refused
//!   rather than misread. Schema version 2 replaces the old release's
//!   `commit_counter` row with the sequence, started above both the counter
//!   and every stored version, so every key keeps its version and every new
//!   write gets a larger one. It first locks the counter table, so commits
//!   of the old release still in flight finish before; old-release
//!   instances left running afterwards fail every write with a `Backend`
//!   error (the table is gone) and apply nothing — upgrade every instance.
//! * **Failures.** An unreachable server, a dropped connection, a timed-out
//!   pool checkout and every other database failure surface as
//!   [`StorageError::Backend`] with a message naming the cause; nothing is
//!   applied. If the connection is lost after `COMMIT` was sent, the outcome
//!   is unknown and the error wraps [`CommitOutcomeUnknown`] — never `Ok`,
//!   never `Conflict`. A row that breaks the schema's invariants is
//!   [`StorageError::Corrupt`] naming its key.
//!
//! # Distributed SQL (CockroachDB, YugabyteDB)
//!
//! Both speak PostgreSQL's wire protocol and run `SERIALIZABLE` by default;
//! use [`Isolation::Serializable`] there. What the adapter relies on in that
//! mode, and so what such an engine must provide:
//!
//! * statements: `BEGIN ISOLATION LEVEL SERIALIZABLE [READ ONLY]`,
//!   `COMMIT`, `SELECT … WHERE key = ANY($1)`, `INSERT … SELECT FROM
//!   unnest($1::bytea[], $2::bytea[]) … ON CONFLICT (key) DO UPDATE`,
//!   `DELETE … WHERE key = ANY($1)`, data-modifying CTEs and
//!   `nextval('kv_version')` on a `CREATE SEQUENCE … CACHE 1` sequence
//!   whose numbers increase in real time across nodes;
//!   `BYTEA` ordered bytewise (for scans); no advisory locks;
//! * retry rules: every 40001 (CockroachDB's `RETRY_*` errors, including
//!   those reported by `COMMIT`) and 40P01 re-runs the whole transaction on
//!   the same connection, at most [`PostgresOptions::serialization_retries`]
//!   times with jittered back-off; 40003 (statement completion unknown,
//!   CockroachDB's ambiguous commit) at `COMMIT` is
//!   [`CommitOutcomeUnknown`], like a connection lost during `COMMIT`.
//!
//! **Not tested** — no such server is on the build machine: neither engine
//! has been run against this crate. Known gaps: the migrations use
//! `pg_advisory_xact_lock` (migrate once from PostgreSQL-compatible tooling,
//! or run the first connect alone), the announcer sends `pg_notify` after
//! writing commits and [`Store::watch`] uses `LISTEN` and
//! `pg_current_snapshot()` (CockroachDB and YugabyteDB implement none of
//! them; since the notification is outside the write transaction, a failed
//! `NOTIFY` costs nothing, but a failing `LISTEN` keeps the listener
//! reconnecting instead of polling — a port must make watches poll), and a
//! CockroachDB sequence costs a distributed round trip per commit.
//!
//! # Features
//!
//! * `tls` — `PostgresStore::connect_with_tls`, through the system's TLS
//!   library (`native-tls`); off by default.
//! * `test-server` — the `testing` module: a throwaway PostgreSQL cluster
//!   started from the machine's binaries, for this crate's tests, the
//!   benchmarks and embedders' own tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keystead::Error> {
//! use keystead::store::{Batch, Precondition, Store};
//! let store = keystead_postgres::PostgresStore::connect("postgres://keystead@db/keystead").await?;
//! let mut batch = Batch::new();
//! batch.put(b"greeting".to_vec(), b"hello".to_vec(), Precondition::Absent)?;
//! store.commit(batch).await?;
//! assert_eq!(store.get(b"greeting").await?.unwrap().value, b"hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod commit;
mod listen;
mod schema;
#[cfg(feature = "test-server")]
pub mod testing;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::StreamExt as _;
use keystead::store::watch::{Notifier, Watch};
use keystead::store::{Batch, Committed, StorageError, Store, Versioned, prefix_end};
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::types::ToSql;

pub use deadpool_postgres;
pub use tokio_postgres;

/// Tuning for [`PostgresStore::connect_with`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections the pool opens; 16 by default.
    pub pool_size: usize,
    /// How long opening one connection may take; 10 s by default.
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection before failing
    /// with [`StorageError::Backend`] (pool exhausted); 30 s by default.
    pub wait_timeout: Duration,
    /// The schema holding keystead's tables, created if missing. `None` (the
    /// default) uses the connection's `search_path`, normally `public`.
    /// Several keystead states can share one database in separate schemas.
    pub schema: Option<String>,
    /// Accept a session whose `synchronous_commit` is `off`, where an
    /// acknowledged commit may be lost if the server crashes. `false` by
    /// default: such a connection is refused.
    pub allow_asynchronous_commit: bool,
    /// How writing commits are kept exact under concurrency;
    /// [`Isolation::ReadCommitted`] by default. See the
    /// [crate docs](crate#isolation).
    pub isolation: Isolation,
    /// How many times one call re-runs a transaction that PostgreSQL
    /// aborted with a serialization failure (40001) or a deadlock (40P01)
    /// before it fails with [`StorageError::Backend`]; 20 by default. Such
    /// aborts are routine at [`Isolation::Serializable`] and never surface
    /// as [`StorageError::Conflict`].
    pub serialization_retries: u32,
    /// How often a store with watches re-checks the database for commits
    /// whose notification never arrived (its writer crashed between
    /// `COMMIT` and `NOTIFY`, or the notification failed); 1 s by default.
    /// It bounds how late such a commit wakes a watch; see the
    /// [crate docs](crate#watch). Must not be zero.
    pub watch_poll_interval: Duration,
}

/// The isolation level writing commits run at; see the
/// [crate docs](crate#isolation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// `READ COMMITTED` with a transaction-scoped advisory lock on every
    /// key of the batch, taken in one order: writers of the same key queue,
    /// writers of disjoint keys never wait for each other, and PostgreSQL
    /// never aborts a commit to keep it serializable. The default, for
    /// PostgreSQL.
    #[default]
    ReadCommitted,
    /// `SERIALIZABLE` without advisory locks: PostgreSQL's serializable
    /// snapshot isolation keeps preconditions exact, aborting one of two
    /// transactions that would otherwise race, and the adapter re-runs the
    /// aborted one. What CockroachDB and YugabyteDB run by default.
    Serializable,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            schema: None,
            allow_asynchronous_commit: false,
            isolation: Isolation::ReadCommitted,
            serialization_retries: 20,
            watch_poll_interval: Duration::from_secs(1),
        }
    }
}

impl PostgresOptions {
    /// These options with `pool_size` connections at most.
    #[must_use]
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// These options with a connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// These options with a pool checkout timeout.
    #[must_use]
    pub fn with_wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// These options with keystead's tables in `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// These options with writing commits at `isolation`.
    #[must_use]
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// These options with at most `retries` re-runs of an aborted
    /// transaction per call.
    #[must_use]
    pub fn with_serialization_retries(mut self, retries: u32) -> Self {
        self.serialization_retries = retries;
        self
    }

    /// These options with watches re-checking the database every
    /// `interval`.
    #[must_use]
    pub fn with_watch_poll_interval(mut self, interval: Duration) -> Self {
        self.watch_poll_interval = interval;
        self
    }
}

/// The connection to PostgreSQL was lost after `COMMIT` was sent, so whether
/// the batch was applied is unknown. Carried in [`StorageError::Backend`].
///
/// The batch was applied entirely or not at all — never partly — but this
/// process cannot tell which. Callers that must know read the batch's keys
/// back: a key put by the batch carries a version newer than any the caller
/// saw before if (and only if) the batch was applied. Retrying a batch whose
/// preconditions are `Absent` or `Version(v)` is safe: if the first attempt
/// was applied, the retry fails with [`StorageError::Conflict`].
#[derive(Debug)]
pub struct CommitOutcomeUnknown {
    source: tokio_postgres::Error,
}

impl fmt::Display for CommitOutcomeUnknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the connection to PostgreSQL failed after COMMIT was sent, so the batch may or may not have been applied: {}",
            chain(&self.source)
        )
    }
}

impl StdError for CommitOutcomeUnknown {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// A database failure with what keystead was doing when it happened.
#[derive(Debug)]
struct Failure {
    context: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(source) = &self.source {
            write!(f, ": {}", chain(source.as_ref()))?;
        }
        Ok(())
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn StdError + 'static))
    }
}

/// An error and its sources in one line (tokio-postgres puts the cause — the
/// server's message, the OS error — in `source()`, not in `Display`).
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

fn failure(
    context: impl Into<String>,
    source: Option<Box<dyn StdError + Send + Sync>>,
) -> StorageError {
    StorageError::backend(Failure {
        context: context.into(),
        source,
    })
}

/// A failed statement: says whether the connection was lost or the server
/// refused the statement, and while doing what.
pub(crate) fn statement_failed(doing: &str, e: &tokio_postgres::Error) -> StorageError {
    let what = if e.is_closed() {
        "the connection to PostgreSQL was lost"
    } else if let Some(db) = e.as_db_error() {
        return failure(
            format!(
                "PostgreSQL failed while {doing} ({} {})",
                db.severity(),
                db.code().code()
            ),
            Some(Box::new(clone_db_error(e))),
        );
    } else {
        "PostgreSQL request failed"
    };
    failure(
        format!("{what} while {doing}"),
        Some(Box::new(Described(chain(e)))),
    )
}

/// The server's message (tokio-postgres errors are not `Clone`).
fn clone_db_error(e: &tokio_postgres::Error) -> Described {
    Described(match e.as_db_error() {
        Some(db) => db.to_string(),
        None => chain(e),
    })
}

/// An error source kept as its text.
#[derive(Debug)]
struct Described(String);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Described {}

fn pool_failed(e: PoolError, options: &PostgresOptions) -> StorageError {
    use deadpool_postgres::TimeoutType;
    match e {
        PoolError::Closed => StorageError::closed(),
        PoolError::Timeout(TimeoutType::Wait) => failure(
            format!(
                "PostgreSQL connection pool exhausted: all {} connections stayed busy for {:?}",
                options.pool_size, options.wait_timeout
            ),
            None,
        ),
        PoolError::Timeout(TimeoutType::Create) => failure(
            format!(
                "cannot connect to PostgreSQL: no connection within {:?}",
                options.connect_timeout
            ),
            None,
        ),
        PoolError::Timeout(TimeoutType::Recycle) => failure(
            "PostgreSQL did not answer the check of a pooled connection in time",
            None,
        ),
        PoolError::Backend(e) => failure(
            "cannot connect to PostgreSQL",
            Some(Box::new(Described(chain(&e)))),
        ),
        other => failure(
            "PostgreSQL connection pool failed",
            Some(Box::new(Described(other.to_string()))),
        ),
    }
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.into(),
    }
}

/// Decode a `version` column: a positive integer.
fn version_of(key: &[u8], row: &Row, column: usize) -> Result<u64, StorageError> {
    let version: Option<i64> = row
        .try_get(column)
        .map_err(|e| corrupt(key, format!("version column: {}", chain(&e))))?;
    version
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .ok_or_else(|| corrupt(key, "version column is not a positive integer"))
}

/// Decode the key in `column`.
fn key_of(row: &Row, column: usize) -> Result<Vec<u8>, StorageError> {
    match row.try_get::<_, Option<Vec<u8>>>(column) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(corrupt(&[], "a key column is NULL")),
        Err(e) => Err(corrupt(&[], format!("a key column: {}", chain(&e)))),
    }
}

/// Decode a `(value, version)` pair starting at `column`.
fn versioned(key: &[u8], row: &Row, column: usize) -> Result<Versioned, StorageError> {
    let value = match row.try_get::<_, Option<Vec<u8>>>(column) {
        Ok(Some(value)) => value,
        Ok(None) => return Err(corrupt(key, "value column is NULL")),
        Err(e) => return Err(corrupt(key, format!("value column: {}", chain(&e)))),
    };
    Ok(Versioned {
        value,
        version: version_of(key, row, column + 1)?,
    })
}

/// The statements, with table names qualified by the configured schema.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The quoted schema and a dot, or empty.
    pub(crate) prefix: String,
    /// The unquoted schema name (empty without one); keys the migration lock.
    pub(crate) schema_name: String,
    get: String,
    get_many: String,
    /// Indexed by `[after is the lower bound][prefix has an end]`.
    scan: [[String; 2]; 2],
    /// Takes the advisory lock of every key of a batch
    /// ([`Isolation::ReadCommitted`]).
    lock: String,
    versions: String,
    /// Draws the batch's version and applies its puts and deletes.
    write: String,
    /// Wakes the listeners of every process, sent after commits.
    notify: String,
    /// The version sequence's qualified name as an SQL string literal.
    sequence: String,
    /// The schema name as a hex string: what key locks are salted with.
    lock_salt: String,
}

impl Sql {
    fn new(schema: Option<&str>) -> Result<Self, StorageError> {
        let (prefix, schema_name) = match schema {
            None => (String::new(), String::new()),
            Some(name) => {
                if name.is_empty() || name.len() > 63 || name.contains('\0') {
                    return Err(failure(
                        format!(
                            "invalid PostgreSQL schema name {name:?}: it must have 1 to 63 bytes and no NUL"
                        ),
                        None,
                    ));
                }
                (
                    format!("\"{}\".", name.replace('"', "\"\"")),
                    name.to_owned(),
                )
            }
        };
        let mut sql = Self {
            prefix,
            schema_name,
            get: String::new(),
            get_many: String::new(),
            scan: Default::default(),
            lock: String::new(),
            versions: String::new(),
            write: String::new(),
            notify: String::new(),
            sequence: String::new(),
            lock_salt: String::new(),
        };
        sql.sequence = format!("'{}'", sql.expand("{s}kv_version").replace('\'', "''"));
        sql.lock_salt = sql.schema_name.bytes().fold(String::new(), |mut hex, b| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
            hex
        });
        sql.get = sql.expand("SELECT value, version FROM {s}kv WHERE key = $1");
        sql.get_many = sql.expand("SELECT key, value, version FROM {s}kv WHERE key = ANY($1)");
        for (i, lower) in [">=", ">"].into_iter().enumerate() {
            for (j, upper) in ["", " AND key < $3"].into_iter().enumerate() {
                sql.scan[i][j] = sql.expand(&format!(
                    "SELECT key, value, version FROM {{s}}kv WHERE key {lower} $1{upper} ORDER BY key LIMIT $2"
                ));
            }
        }
        // One lock per distinct lock id, exclusive if any key with that id
        // is written, in ascending id order: two batches never wait for
        // each other in a cycle. `OFFSET 0` keeps the sorted subquery from
        // being flattened, so the locks are taken row by row in that order.
        // The id is the first 8 bytes of SHA-256(schema ‖ key): computed by
        // the server, so every instance (and an operator's psql) agrees.
        // Fail fast: the uncorrelated subquery (an InitPlan, run once before
        // any lock) compares the conditioned keys' current versions ($3,
        // expected in $4, 0 for `Absent`) on the statement's snapshot; if
        // one already differs, no lock is taken and no row returned, so a
        // doomed compare-and-swap does not queue behind the key's writers.
        // The check that decides is still the read under the locks.
        sql.lock = sql.expand(
            "SELECT CASE WHEN exclusive THEN pg_advisory_xact_lock(id)
                         ELSE pg_advisory_xact_lock_shared(id) END
             FROM (SELECT id, bool_or(exclusive) AS exclusive
                   FROM (SELECT ('x' || encode(substring(sha256(decode('{salt}', 'hex') || k)
                                                         FROM 1 FOR 8), 'hex'))::bit(64)::bigint AS id,
                                e AS exclusive
                         FROM unnest($1::bytea[], $2::bool[]) AS t(k, e)
                         WHERE (SELECT coalesce(bool_and(coalesce(kv.version, 0) = c.expected), true)
                                FROM unnest($3::bytea[], $4::bigint[]) AS c(k, expected)
                                LEFT JOIN {s}kv AS kv ON kv.key = c.k)) AS ids
                   GROUP BY id ORDER BY id OFFSET 0) AS sorted",
        );
        sql.versions = sql.expand("SELECT key, version FROM {s}kv WHERE key = ANY($1)");
        // One statement: the version is drawn once (a CTE referenced twice
        // is evaluated once) and every data-modifying CTE runs to
        // completion whether or not it is read. No `pg_notify` here: a
        // notifying transaction holds PostgreSQL's database-wide notify
        // lock through its commit flush, which would serialise every
        // commit; the notification is sent after `COMMIT` (`notify`).
        sql.write = sql.expand(
            "WITH v AS (SELECT nextval({seq}) AS version),
                  put AS (INSERT INTO {s}kv (key, value, version)
                          SELECT k, val, v.version FROM unnest($1::bytea[], $2::bytea[]) AS t(k, val), v
                          ON CONFLICT (key) DO UPDATE
                          SET value = EXCLUDED.value, version = EXCLUDED.version),
                  del AS (DELETE FROM {s}kv WHERE key = ANY($3))
             SELECT version FROM v",
        );
        // Outside any write transaction: it commits on its own, writes no
        // WAL of its own, so it holds the notify lock only for an instant.
        sql.notify = sql.expand("SELECT pg_notify($1, '')");
        Ok(sql)
    }

    /// `template` with `{s}` replaced by the schema prefix, `{seq}` by the
    /// version sequence's name as a string literal and `{salt}` by the
    /// schema name in hex.
    pub(crate) fn expand(&self, template: &str) -> String {
        // One pass, so a schema name that happens to contain `{seq}` is not
        // expanded again.
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let (with, len) = if rest.starts_with("{s}") {
                (self.prefix.as_str(), 3)
            } else if rest.starts_with("{seq}") {
                (self.sequence.as_str(), 5)
            } else if rest.starts_with("{salt}") {
                (self.lock_salt.as_str(), 6)
            } else {
                ("{", 1)
            };
            out.push_str(with);
            rest = &rest[len..];
        }
        out.push_str(rest);
        out
    }
}

/// A [`Store`] in a PostgreSQL database; see the [crate docs](crate).
///
/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    options: PostgresOptions,
    sql: Sql,
    closed: AtomicBool,
    /// Local watches; woken by local commits and by the listener.
    notifier: Notifier,
    /// The `LISTEN/NOTIFY` channel of this store's schema.
    channel: String,
    /// Opens the listener's dedicated connection.
    connector: listen::Connector,
    /// The listener task, started by the first `watch`.
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Signals the announcer that commits are waiting to be announced;
    /// signals coalesce while one `NOTIFY` is in flight.
    pending: Arc<tokio::sync::Notify>,
    /// The announcer task, started by the first writing commit.
    announcer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Test hook (`testing::suppress_notifications`): commit without
    /// announcing, as a writer that crashed right after `COMMIT` would.
    silent: AtomicBool,
}

impl Inner {
    /// Have every process's listener woken for a commit that returned: the
    /// announcer task sends one `NOTIFY` for all commits signalled while
    /// the previous one was in flight. The writer does not wait for it.
    fn announce(self: &Arc<Self>) {
        if self.silent.load(Ordering::Relaxed) {
            return;
        }
        self.pending.notify_one();
        let mut task = self
            .announcer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Restarted if its runtime went away (a store used from a later
        // runtime than the one that first wrote).
        if task
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            *task = Some(tokio::spawn(listen::announce(
                Arc::downgrade(self),
                Arc::clone(&self.pending),
            )));
        }
    }

    fn stop_tasks(&self) {
        for task in [&self.listener, &self.announcer] {
            if let Some(task) = task.lock().unwrap_or_else(PoisonError::into_inner).take() {
                task.abort();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The announcer waits on `pending` and would otherwise wait for
        // ever once the store is gone.
        self.stop_tasks();
    }
}

impl listen::Listening for Inner {
    fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    fn pool(&self) -> &Pool {
        &self.pool
    }

    fn notify_statement(&self) -> (&str, &str) {
        (&self.sql.notify, &self.channel)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("options", &self.inner.options)
            .field("pool", &self.inner.pool.status())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connect with default options to the database named by `url`, a
    /// `postgres://…` URL or a `key=value` connection string (as accepted by
    /// [`tokio_postgres::Config`]), without TLS.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connect with `options`, without TLS.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StorageError> {
        Self::connect_inner(url, options, tokio_postgres::NoTls).await
    }

    /// Connect with `options` over TLS through `connector` (feature `tls`);
    /// the connection string's `sslmode` decides whether TLS is required.
    #[cfg(feature = "tls")]
    pub async fn connect_with_tls(
        url: &str,
        options: PostgresOptions,
        connector: native_tls::TlsConnector,
    ) -> Result<Self, StorageError> {
        Self::connect_inner(
            url,
            options,
            postgres_native_tls::MakeTlsConnector::new(connector),
        )
        .await
    }

    async fn connect_inner<T>(
        url: &str,
        options: PostgresOptions,
        tls: T,
    ) -> Result<Self, StorageError>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>
            + Clone
            + Sync
            + Send
            + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let sql = Sql::new(options.schema.as_deref())?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            failure(
                "invalid PostgreSQL connection string",
                Some(Box::new(Described(chain(&e)))),
            )
        })?;
        config.connect_timeout(options.connect_timeout);
        if options.pool_size == 0 {
            return Err(failure(
                "PostgresOptions::pool_size must be at least 1",
                None,
            ));
        }
        if options.watch_poll_interval.is_zero() {
            return Err(failure(
                "PostgresOptions::watch_poll_interval must not be zero",
                None,
            ));
        }
        let connector = listener_connector(config.clone(), tls.clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            // Connecting may take one connect timeout per host in the string.
            .create_timeout(Some(options.connect_timeout.saturating_mul(2)))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| {
                failure(
                    "cannot build the PostgreSQL connection pool",
                    Some(Box::new(Described(e.to_string()))),
                )
            })?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                options,
                channel: listen::channel_name(&sql.schema_name),
                sql,
                closed: AtomicBool::new(false),
                notifier: Notifier::new(),
                connector,
                listener: std::sync::Mutex::new(None),
                pending: Arc::new(tokio::sync::Notify::new()),
                announcer: std::sync::Mutex::new(None),
                silent: AtomicBool::new(false),
            }),
        };
        let mut client = store.client().await?;
        if !store.inner.options.allow_asynchronous_commit {
            let setting: String = client
                .query_one("SELECT current_setting('synchronous_commit')", &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| statement_failed("reading synchronous_commit", &e))?;
            if setting == "off" {
                return Err(failure(
                    "refusing a PostgreSQL session with synchronous_commit = off: acknowledged commits could be lost; \
                     turn it on or set PostgresOptions::allow_asynchronous_commit",
                    None,
                ));
            }
        }
        schema::migrate(&mut client, &store.inner.sql).await?;
        drop(client);
        Ok(store)
    }

    /// The options this store was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.inner.options
    }

    fn ensure_open(&self) -> Result<(), StorageError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(StorageError::closed())
        } else {
            Ok(())
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.ensure_open()?;
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| pool_failed(e, &self.inner.options))
    }

    /// A check-only batch: every conditioned key read from one snapshot,
    /// no lock, no version drawn.
    async fn commit_checks(
        &self,
        client: &deadpool_postgres::Object,
        batch: &Batch,
        checked: &[&[u8]],
    ) -> Result<(), StorageError> {
        let read = client
            .prepare_cached(&self.inner.sql.versions)
            .await
            .map_err(|e| statement_failed("preparing the precondition read", &e))?;
        let rows = commit::read(
            &self.inner,
            client,
            &read,
            &[&checked],
            "reading the batch's versions",
        )
        .await?;
        let versions = commit::decode_versions(&rows)?;
        match commit::first_conflict(batch, &versions) {
            Some(key) => Err(StorageError::Conflict { key }),
            None => Ok(()),
        }
    }
}

/// A [`listen::Connector`] for the store's configuration and TLS.
fn listener_connector<T>(config: tokio_postgres::Config, tls: T) -> listen::Connector
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    std::sync::Arc::new(move || {
        let config = config.clone();
        let tls = tls.clone();
        Box::pin(async move {
            let (client, mut connection) = config.connect(tls).await?;
            let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            Ok((client, messages.boxed()))
        })
    })
}

/// Return `client` to the pool — unless the call failed in the backend or
/// on a corrupt row, in which case the connection may be dead or still in a
/// transaction: it is closed rather than handed to the next caller.
fn settle<T>(
    client: deadpool_postgres::Object,
    result: Result<T, StorageError>,
) -> Result<T, StorageError> {
    if matches!(
        result,
        Err(StorageError::Backend(_) | StorageError::Corrupt { .. })
    ) {
        drop(deadpool_postgres::Object::take(client));
    }
    result
}

/// Classify a failed `COMMIT`. An `ERROR` answer means the server rolled the
/// transaction back; anything else (I/O failure, closed connection, `FATAL`
/// termination) leaves the outcome unknown.
fn commit_failed(e: tokio_postgres::Error) -> StorageError {
    // 40003 (statement completion unknown) is an ERROR that says the
    // outcome is unknown: what CockroachDB answers when it cannot tell
    // whether a commit it was running took effect.
    let definite = e.code() != Some(&SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN)
        && e.as_db_error().is_some_and(|db| {
            db.parsed_severity()
                .map_or(db.severity() == "ERROR", |s| s == Severity::Error)
        });
    if definite {
        statement_failed("committing (the batch was rolled back)", &e)
    } else {
        StorageError::backend(CommitOutcomeUnknown { source: e })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let client = self.client().await?;
        let result = async {
            let stmt = client
                .prepare_cached(&self.inner.sql.get)
                .await
                .map_err(|e| statement_failed("preparing a get", &e))?;
            let row = client
                .query_opt(&stmt, &[&key])
                .await
                .map_err(|e| statement_failed("reading a key", &e))?;
            row.map(|row| versioned(key, &row, 0)).transpose()
        }
        .await;
        settle(client, result)
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let result = async {
            let stmt = client
                .prepare_cached(&self.inner.sql.get_many)
                .await
                .map_err(|e| statement_failed("preparing a multi-get", &e))?;
            // One statement: one round trip and one snapshot.
            let rows = commit::read(&self.inner, &client, &stmt, &[&keys], "reading keys").await?;
            let mut out = vec![None; keys.len()];
            for row in &rows {
                let key: Vec<u8> = row
                    .try_get(0)
                    .map_err(|e| corrupt(b"", format!("key column: {}", chain(&e))))?;
                let found = versioned(&key, row, 1)?;
                for (slot, wanted) in out.iter_mut().zip(keys) {
                    if *wanted == key.as_slice() {
                        *slot = Some(found.clone());
                    }
                }
            }
            Ok(out)
        }
        .await;
        settle(client, result)
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        if limit == 0 {
            self.ensure_open()?;
            return Ok(Vec::new());
        }
        // Start at the prefix, or just past `after` if that is further on;
        // stop before the first key that no longer has the prefix.
        let (exclusive, lower) = match after {
            Some(after) if after >= prefix => (1, after),
            _ => (0, prefix),
        };
        let upper = prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let result = async {
            let stmt = client
                .prepare_cached(&self.inner.sql.scan[exclusive][usize::from(upper.is_some())])
                .await
                .map_err(|e| statement_failed("preparing a scan", &e))?;
            let rows = match &upper {
                Some(upper) => {
                    let params: [&(dyn ToSql + Sync); 3] = [&lower, &limit, upper];
                    client.query(&stmt, &params).await
                }
                None => client.query(&stmt, &[&lower, &limit]).await,
            }
            .map_err(|e| statement_failed("scanning keys", &e))?;
            rows.iter()
                .map(|row| {
                    let key = key_of(row, 0)?;
                    let entry = versioned(&key, row, 1)?;
                    Ok((key, entry))
                })
                .collect()
        }
        .await;
        settle(client, result)
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        self.ensure_open()?;
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        if !batch.has_writes() {
            let plan = commit::Plan::new(&batch);
            if !plan.checked.is_empty() {
                let client = self.client().await?;
                let result = self.commit_checks(&client, &batch, &plan.checked).await;
                settle(client, result)?;
            }
            return Ok(Committed::default());
        }
        let client = self.client().await?;
        let inner = Arc::clone(&self.inner);
        // On a task of its own: the write opens its transaction with a
        // plain `BEGIN` (pipelined with its first statements), so it must
        // run to its `COMMIT` or `ROLLBACK` even if our caller stops
        // waiting — a dropped future must not hand the pool a connection
        // still inside a transaction. Watches are woken there too, so a
        // commit that happened is announced whether or not anyone waits.
        let task = tokio::spawn(async move {
            let plan = commit::Plan::new(&batch);
            let result = commit::write(&inner, &client, &batch, &plan).await;
            let version = settle(client, result)?;
            inner.notifier.notify(&batch);
            inner.announce();
            Ok::<_, StorageError>(version)
        });
        let version = task.await.map_err(|e| {
            failure(
                "the commit task ended without an answer (the outcome is unknown)",
                Some(Box::new(Described(e.to_string()))),
            )
        })??;
        Ok(Committed {
            version: Some(version),
        })
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.inner.closed.store(true, Ordering::Release);
        // Idle connections are closed now; busy ones when their call ends.
        self.inner.pool.close();
        self.inner.stop_tasks();
        self.inner.notifier.close();
        Ok(())
    }

    /// Local commits wake watches at once; commits by other processes or
    /// machines arrive through `LISTEN/NOTIFY` (a `NOTIFY` sent after each
    /// writing commit returned), on a dedicated connection started by the
    /// first watch, which also re-checks the database every
    /// [`PostgresOptions::watch_poll_interval`] for commits whose
    /// notification was lost; see the [crate docs](crate#watch). Needs a
    /// tokio runtime, as `tokio-postgres` does.
    async fn watch(&self, prefix: &[u8]) -> Result<Watch, StorageError> {
        self.ensure_open()?;
        let mut watch = self.inner.notifier.watch(prefix);
        let mut listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listener.as_ref().is_some_and(|task| !task.is_finished()) {
            // The listener's readings may already have passed a commit that
            // becomes visible now but is acknowledged only after this call
            // returns; if its NOTIFY is lost, nothing else would wake this
            // watch for it. One wake-up at once makes the subscriber read
            // after that commit is visible. (A listener started below wakes
            // every watch once it is up, after its first reading.)
            watch = watch.merge(Watch::from_stream(
                futures::stream::once(async { Ok(()) }).boxed(),
            ));
        } else {
            *listener = Some(tokio::spawn(listen::run(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.connector),
                self.inner.channel.clone(),
                self.inner.options.watch_poll_interval,
            )));
        }
        Ok(watch)
    }
}

#[cfg(test)]
mod tests;
