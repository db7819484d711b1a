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
//!   BIGINT)`, a one-row `commit_counter` table holding the store-wide commit
//!   number that versions come from, and a `keystead_schema` table recording
//!   applied migrations — in the schema named by [`PostgresOptions::schema`],
//!   or wherever the connection's `search_path` points. PostgreSQL compares
//!   `BYTEA` with `memcmp` then length, which is exactly the contract's
//!   unsigned byte order, so scans are index range scans (`key >= prefix AND
//!   key < prefix_end ORDER BY key LIMIT n`).
//! * **Atomic conditional batches.** A batch with writes runs as one
//!   `READ COMMITTED` transaction that first increments the counter row
//!   (`UPDATE … RETURNING`). That row lock serialises every writing commit —
//!   across connections, processes and machines — for as long as the
//!   transaction lasts, which the gap-free commit numbering needs anyway. The
//!   statement after it (pipelined in the same round trip) reads the versions
//!   of the batch's conditioned keys from a snapshot taken once the lock is
//!   held; since no other writer can commit until this one ends, that
//!   snapshot stays current, including for keys that do not exist yet (the
//!   `Absent` race that `SELECT … FOR UPDATE` cannot cover: there is no row to
//!   lock). Keys under [`Precondition::Any`] are not read at all.
//!   Preconditions are checked in key order and the first failure
//!   rolls back with [`StorageError::Conflict`] naming that key — the counter
//!   increment rolls back with it, so numbering matches every other backend.
//!   Puts are one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO UPDATE`,
//!   deletes one `DELETE … WHERE key = ANY(…)`. PostgreSQL never reports a
//!   serialization failure at `READ COMMITTED`, so no database retry can leak
//!   out as a spurious `Conflict`.
//! * **Check-only batches** take no commit number and no lock: one `SELECT`
//!   reads every conditioned key from a single snapshot. Writers commit in
//!   counter order, so that snapshot is a consistent cut and the batch is
//!   linearised at the moment it was taken.
//! * **Durability.** `Ok` is returned only after PostgreSQL acknowledged
//!   `COMMIT`. With PostgreSQL's default `synchronous_commit = on`, that
//!   means the commit record was flushed to the WAL (and to synchronous
//!   standbys, if configured): it survives a crash of the server and of the
//!   machine. [`PostgresStore::connect_with`] refuses a session whose
//!   `synchronous_commit` is `off` unless
//!   [`PostgresOptions::allow_asynchronous_commit`] is set.
//! * **Several processes.** Any number of processes may connect to the same
//!   database and schema: every guarantee above is enforced by PostgreSQL
//!   locks, not by this process. Writing commits are serialised on the
//!   counter row, so write throughput is bounded by one commit's round trips
//!   plus its WAL flush; reads never wait. Each store opens up to
//!   [`PostgresOptions::pool_size`] connections: size the server's
//!   `max_connections` for every instance. Statements are prepared once per
//!   connection and cached, so a pooler in front of PostgreSQL must support
//!   prepared statements (PgBouncer ≥ 1.21 in transaction mode, or session
//!   mode).
//! * **Migrations.** On connect, missing migrations are applied in one
//!   transaction holding an advisory lock, so processes starting together
//!   migrate once; a schema written by a newer keystead-postgres is refused
//!   rather than misread.
//! * **Failures.** An unreachable server, a dropped connection, a timed-out
//!   pool checkout and every other database failure surface as
//!   [`StorageError::Backend`] with a message naming the cause; nothing is
//!   applied. If the connection is lost after `COMMIT` was sent, the outcome
//!   is unknown and the error wraps [`CommitOutcomeUnknown`] — never `Ok`,
//!   never `Conflict`. A row that breaks the schema's invariants is
//!   [`StorageError::Corrupt`] naming its key.
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

mod listen;
mod schema;
#[cfg(feature = "test-server")]
pub mod testing;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures::StreamExt as _;
use keystead::store::watch::{Notifier, Watch};
use keystead::store::{
    Batch, Committed, Mutation, Precondition, StorageError, Store, Versioned, prefix_end,
};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;
use tokio_postgres::error::Severity;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Row};

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
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(30),
            schema: None,
            allow_asynchronous_commit: false,
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
    bump: String,
    versions: String,
    put: String,
    delete: String,
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
            bump: String::new(),
            versions: String::new(),
            put: String::new(),
            delete: String::new(),
        };
        sql.get = sql.expand("SELECT value, version FROM {s}kv WHERE key = $1");
        sql.get_many = sql.expand("SELECT key, value, version FROM {s}kv WHERE key = ANY($1)");
        for (i, lower) in [">=", ">"].into_iter().enumerate() {
            for (j, upper) in ["", " AND key < $3"].into_iter().enumerate() {
                sql.scan[i][j] = sql.expand(&format!(
                    "SELECT key, value, version FROM {{s}}kv WHERE key {lower} $1{upper} ORDER BY key LIMIT $2"
                ));
            }
        }
        sql.bump = sql.expand(
            "UPDATE {s}commit_counter SET last_commit = last_commit + 1 WHERE id = 0 RETURNING last_commit",
        );
        sql.versions = sql.expand("SELECT key, version FROM {s}kv WHERE key = ANY($1)");
        sql.put = sql.expand(
            "INSERT INTO {s}kv (key, value, version)
             SELECT k, v, $3 FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version",
        );
        sql.delete = sql.expand("DELETE FROM {s}kv WHERE key = ANY($1)");
        Ok(sql)
    }

    /// `template` with `{s}` replaced by the schema prefix.
    pub(crate) fn expand(&self, template: &str) -> String {
        template.replace("{s}", &self.prefix)
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
}

impl listen::Listening for Inner {
    fn notifier(&self) -> &Notifier {
        &self.notifier
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

    /// The `(key, version)` rows of the precondition read, by key.
    fn decode_versions(rows: &[Row]) -> Result<HashMap<Vec<u8>, u64>, StorageError> {
        let mut versions = HashMap::with_capacity(rows.len());
        for row in rows {
            let key = key_of(row, 0)?;
            let version = version_of(&key, row, 1)?;
            versions.insert(key, version);
        }
        Ok(versions)
    }

    /// The first key of `batch` (in key order) whose precondition fails.
    fn first_conflict(batch: &Batch, versions: &HashMap<Vec<u8>, u64>) -> Option<Vec<u8>> {
        batch
            .iter()
            .find(|(key, pre, _)| !pre.holds(versions.get(*key).copied()))
            .map(|(key, _, _)| key.to_vec())
    }

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
        let rows = client
            .query(&read, &[&checked])
            .await
            .map_err(|e| statement_failed("reading the batch's versions", &e))?;
        let versions = Self::decode_versions(&rows)?;
        match Self::first_conflict(batch, &versions) {
            Some(key) => Err(StorageError::Conflict { key }),
            None => Ok(()),
        }
    }

    async fn commit_writes(
        &self,
        client: &mut deadpool_postgres::Object,
        batch: &Batch,
        checked: &[&[u8]],
    ) -> Result<u64, StorageError> {
        let sql = &self.inner.sql;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| statement_failed("starting a commit", &e))?;
        let bump = tx
            .prepare_cached(&sql.bump)
            .await
            .map_err(|e| statement_failed("preparing the commit counter", &e))?;
        let (number, rows) = if checked.is_empty() {
            (tx.query_one(&bump, &[]).await, Ok(Vec::new()))
        } else {
            let read = tx
                .prepare_cached(&sql.versions)
                .await
                .map_err(|e| statement_failed("preparing the precondition read", &e))?;
            // Pipelined: both go out in one round trip, and the server runs
            // the read only once the counter update holds the lock, so its
            // snapshot already includes every earlier writer's commit. The
            // order is what makes this correct: `biased` polls — and so sends
            // — the update first.
            let params: [&(dyn ToSql + Sync); 1] = [&checked];
            tokio::join!(
                biased;
                tx.query_one(&bump, &[]),
                tx.query(&read, &params)
            )
        };
        let number: i64 = number
            .and_then(|row| row.try_get(0))
            .map_err(|e| statement_failed("taking the next commit number", &e))?;
        let rows = rows.map_err(|e| statement_failed("reading the batch's versions", &e))?;
        if !checked.is_empty() {
            let versions = Self::decode_versions(&rows)?;
            if let Some(key) = Self::first_conflict(batch, &versions) {
                // Nothing was written; a failed rollback changes nothing
                // either (the server aborts the transaction on disconnect).
                let _ = tx.rollback().await;
                return Err(StorageError::Conflict { key });
            }
        }
        let mut put_keys: Vec<&[u8]> = Vec::new();
        let mut put_values: Vec<&[u8]> = Vec::new();
        let mut delete_keys: Vec<&[u8]> = Vec::new();
        for (key, _, mutation) in batch.iter() {
            match mutation {
                Mutation::Put(value) => {
                    put_keys.push(key);
                    put_values.push(value);
                }
                Mutation::Delete => delete_keys.push(key),
                Mutation::Check => {}
            }
        }
        if !put_keys.is_empty() {
            let put = tx
                .prepare_cached(&sql.put)
                .await
                .map_err(|e| statement_failed("preparing the put", &e))?;
            tx.execute(&put, &[&put_keys, &put_values, &number])
                .await
                .map_err(|e| statement_failed("writing the batch's puts", &e))?;
        }
        if !delete_keys.is_empty() {
            let delete = tx
                .prepare_cached(&sql.delete)
                .await
                .map_err(|e| statement_failed("preparing the delete", &e))?;
            tx.execute(&delete, &[&delete_keys])
                .await
                .map_err(|e| statement_failed("writing the batch's deletes", &e))?;
        }
        // Delivered by PostgreSQL when (and only if) the commit is visible.
        tx.execute(NOTIFY, &[&self.inner.channel, &number.to_string()])
            .await
            .map_err(|e| statement_failed("notifying listeners", &e))?;
        tx.commit().await.map_err(commit_failed)?;
        u64::try_from(number).map_err(|_| StorageError::backend("the commit counter is negative"))
    }
}

/// Sent inside every writing commit; see the `listen` module.
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

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
    let definite = e.as_db_error().is_some_and(|db| {
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
            let rows = client
                .query(&stmt, &[&keys])
                .await
                .map_err(|e| statement_failed("reading keys", &e))?;
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
        // Keys under `Any` need not be read: their precondition always holds.
        let checked: Vec<&[u8]> = batch
            .iter()
            .filter(|(_, pre, _)| *pre != Precondition::Any)
            .map(|(key, _, _)| key)
            .collect();
        let writes = batch.has_writes();
        if !writes && checked.is_empty() {
            return Ok(Committed::default());
        }
        let mut client = self.client().await?;
        let result = if writes {
            self.commit_writes(&mut client, &batch, &checked)
                .await
                .map(Some)
        } else {
            self.commit_checks(&client, &batch, &checked)
                .await
                .map(|()| None)
        };
        let version = settle(client, result)?;
        if writes {
            self.inner.notifier.notify(&batch);
        }
        Ok(Committed { version })
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.inner.closed.store(true, Ordering::Release);
        // Idle connections are closed now; busy ones when their call ends.
        self.inner.pool.close();
        if let Some(task) = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        self.inner.notifier.close();
        Ok(())
    }

    /// Local commits wake watches at once; commits by other processes or
    /// machines arrive through `LISTEN/NOTIFY` (`pg_notify` in every writing commit), started by
    /// the first watch on a dedicated connection. Needs a tokio runtime, as
    /// `tokio-postgres` does.
    async fn watch(&self, prefix: &[u8]) -> Result<Watch, StorageError> {
        self.ensure_open()?;
        let watch = self.inner.notifier.watch(prefix);
        let mut listener = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listener
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            *listener = Some(tokio::spawn(listen::run(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.connector),
                self.inner.channel.clone(),
            )));
        }
        Ok(watch)
    }
}

#[cfg(test)]
mod tests;
