//! keystead's [`Store`] contract on SQLite — the embedded default backend.
//!
//! [`SqliteStore::open`] creates or opens one database file; no server, no
//! setup. It is the default because SQLite with WAL and `synchronous=FULL`
//! gives the strongest durability of the embedded options: a commit that
//! returned `Ok` survives both a process crash and power loss.
//!
//! # How it meets the contract
//!
//! * **Layout.** One `WITHOUT ROWID` table `kv(key BLOB PRIMARY KEY, value
//!   BLOB, version INTEGER)`, a one-row `commit_counter` table holding the
//!   store-wide commit number that versions come from, and a
//!   `keystead_schema` table recording applied migrations. SQLite compares
//!   BLOBs with `memcmp` then length, which is exactly the contract's byte order.
//! * **Atomic conditional batches, by group commit.** Concurrent commits
//!   of one store are coalesced: each call queues its batch and takes the
//!   writer connection; the call that gets it first commits everything
//!   queued (up to 256 batches, in arrival order) as one `BEGIN IMMEDIATE`
//!   transaction — one WAL fsync for the whole group — and the others find
//!   their result waiting. Inside the group each batch runs under a
//!   `SAVEPOINT`: its preconditions are read in key order against the state
//!   so far, which includes the earlier batches of the same group; if one
//!   fails, `ROLLBACK TO` undoes that batch alone with
//!   [`StorageError::Conflict`] naming the first failing key, and the
//!   others go on. Each writing batch bumps the commit counter, so batches
//!   of one group get distinct versions, increasing in arrival order. No
//!   call returns before the group's `COMMIT` returned (fsync included): if
//!   the `COMMIT` — or anything SQLite answers by ending the transaction,
//!   such as a full disk — fails, every batch of the group fails with
//!   [`StorageError::Backend`] and none was applied (a `Conflict` judged
//!   against the group's own writes would be wrong then, so it is not
//!   reported either). `IMMEDIATE` takes the write lock up front, so two
//!   writers — threads or processes — never interleave between the check
//!   and the write. A lone batch runs without a savepoint, as before.
//! * **Durability.** WAL journal with `synchronous=FULL` by default: the WAL
//!   is fsynced before `COMMIT` returns. [`Synchronous::Normal`] is an opt-in
//!   that survives a process crash but may lose the last commits on power
//!   loss, in exchange for several times faster commits.
//! * **Threads.** SQLite calls block, so every call runs on the `blocking`
//!   crate's thread pool, never on the caller's async executor. One writer
//!   connection (behind a mutex) runs the group commits of this process;
//!   reads
//!   use a small pool of reader connections, which in WAL mode see the last
//!   committed state without waiting for the writer.
//! * **Several processes.** Processes may share the file: SQLite's file locks
//!   and `BEGIN IMMEDIATE` keep it consistent, and a writer that finds the
//!   lock held waits up to [`SqliteOptions::busy_timeout`] before failing with
//!   [`StorageError::Backend`].
//! * **Migrations.** On open, missing migrations are applied in one
//!   transaction; a database written by a newer schema than this crate knows
//!   is refused rather than misread.
//!
//! ```
//! # async fn demo() -> Result<(), keystead::Error> {
//! use keystead::store::{Batch, Precondition, Store};
//! let store = keystead_sqlite::SqliteStore::open_in_memory().await?;
//! let mut batch = Batch::new();
//! batch.put(b"greeting".to_vec(), b"hello".to_vec(), Precondition::Absent)?;
//! store.commit(batch).await?;
//! assert_eq!(store.get(b"greeting").await?.unwrap().value, b"hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod schema;

use async_trait::async_trait;
use keystead::store::watch::{Notifier, Watch};
use keystead::store::{
    Batch, Committed, DEFAULT_POLL_INTERVAL, Mutation, StorageError, Store, Versioned, prefix_end,
};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, params};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

/// How hard SQLite works to make a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync the WAL on every commit: survives process crash and power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a process crash; the last commits
    /// may be lost on power loss. Several times faster commits.
    Normal,
}

/// Tuning for [`SqliteStore::open_with`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability of each commit; [`Synchronous::Full`] by default.
    pub synchronous: Synchronous,
    /// How long a commit waits for another process's write lock before
    /// failing with [`StorageError::Backend`]; 5 s by default.
    pub busy_timeout: Duration,
    /// Idle reader connections kept open for reuse; 4 by default.
    pub max_idle_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_idle_readers: 4,
        }
    }
}

/// The most batches one group commit takes; the rest wait for the next.
const MAX_GROUP: usize = 256;

/// A batch waiting for a group commit, and where its result goes.
struct Queued {
    batch: Arc<Batch>,
    reply: mpsc::Sender<Result<Committed, StorageError>>,
}

/// A [`Store`] in one SQLite database; see the [crate docs](crate).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for an in-memory database, whose only connection is the writer.
    path: Option<PathBuf>,
    options: SqliteOptions,
    writer: Mutex<Option<Connection>>,
    readers: Mutex<Vec<Connection>>,
    /// Batches waiting for the next group commit, in arrival order.
    queue: Mutex<VecDeque<Queued>>,
    /// Group commits run so far (tests check that commits coalesce).
    groups: AtomicU64,
    closed: AtomicBool,
    notifier: Notifier,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> StorageError {
    StorageError::backend(e)
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageError> {
    mutex
        .lock()
        .map_err(|_| StorageError::backend("sqlite connection lock poisoned by a panic"))
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` with default
    /// options: WAL, `synchronous=FULL`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Open (creating if needed) the database file at `path` with `options`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        blocking::unblock(move || {
            let writer = connect(Some(&path), &options)?;
            schema::migrate(&writer)?;
            Ok(Self::from_parts(Some(path), options, writer))
        })
        .await
    }

    /// A private in-memory database, gone when the store is dropped. Reads
    /// and writes share one connection. For tests and demos.
    pub async fn open_in_memory() -> Result<Self, StorageError> {
        let options = SqliteOptions::default();
        blocking::unblock(move || {
            let writer = connect(None, &options)?;
            schema::migrate(&writer)?;
            Ok(Self::from_parts(None, options, writer))
        })
        .await
    }

    fn from_parts(path: Option<PathBuf>, options: SqliteOptions, writer: Connection) -> Self {
        Self {
            inner: Arc::new(Inner {
                path,
                options,
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(Vec::new()),
                queue: Mutex::new(VecDeque::new()),
                groups: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                notifier: Notifier::new(),
            }),
        }
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Run a read on a pooled reader connection (the writer for in-memory
    /// databases), off the async executor.
    async fn read<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking::unblock(move || inner.read(f)).await
    }
}

impl Inner {
    fn ensure_open(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StorageError::closed())
        } else {
            Ok(())
        }
    }

    /// Commit `batch` by group commit: queue it, then take the writer. If
    /// the previous holder committed it meanwhile, take that result;
    /// otherwise lead: commit everything queued (up to [`MAX_GROUP`]
    /// batches, in arrival order) as one transaction and hand each waiter
    /// its result — only after the group's `COMMIT` returned.
    fn commit(&self, batch: &Arc<Batch>) -> Result<Committed, StorageError> {
        let (reply, result) = mpsc::channel();
        self.queue().push_back(Queued {
            batch: Arc::clone(batch),
            reply,
        });
        loop {
            let mut guard = match self.writer.lock() {
                Ok(guard) => guard,
                Err(poisoned) => {
                    // Holding the lock, so nobody else can take the entry.
                    self.withdraw(batch);
                    drop(poisoned);
                    return Err(StorageError::backend(
                        "sqlite connection lock poisoned by a panic",
                    ));
                }
            };
            if let Ok(done) = result.try_recv() {
                return done;
            }
            let Some(conn) = guard.as_mut() else {
                self.withdraw(batch);
                return Err(StorageError::closed());
            };
            let group: Vec<Queued> = {
                let mut queue = self.queue();
                let n = queue.len().min(MAX_GROUP);
                queue.drain(..n).collect()
            };
            let batches: Vec<&Batch> = group.iter().map(|q| &*q.batch).collect();
            let results = commit_group(conn, &batches);
            self.groups.fetch_add(1, Ordering::Relaxed);
            for (queued, outcome) in group.into_iter().zip(results) {
                // The waiter is blocked on the writer lock until we release
                // it, so the receiver is alive.
                let _ = queued.reply.send(outcome);
            }
            if let Ok(done) = result.try_recv() {
                return done;
            }
            // More than MAX_GROUP were ahead of us: lead another group.
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        // A VecDeque is consistent after any panic: recover it.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take `batch` back out of the queue (the call fails without it).
    fn withdraw(&self, batch: &Arc<Batch>) {
        self.queue().retain(|q| !Arc::ptr_eq(&q.batch, batch));
    }

    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut guard = lock(&self.writer)?;
        let conn = guard.as_mut().ok_or_else(StorageError::closed)?;
        f(conn)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.ensure_open()?;
        let Some(path) = &self.path else {
            return self.with_writer(|conn| f(conn));
        };
        let pooled = lock(&self.readers)?.pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(Some(path), &self.options)?,
        };
        let result = f(&conn);
        let mut idle = lock(&self.readers)?;
        if idle.len() < self.options.max_idle_readers && !self.closed.load(Ordering::Acquire) {
            idle.push(conn);
        }
        result
    }
}

/// Open a connection with the store's pragmas.
fn connect(path: Option<&Path>, options: &SqliteOptions) -> Result<Connection, StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match path {
        Some(path) => Connection::open_with_flags(path, flags),
        None => Connection::open_in_memory_with_flags(flags),
    }
    .map_err(backend)?;
    conn.busy_timeout(options.busy_timeout).map_err(backend)?;
    if path.is_some() {
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::backend(format!(
                "SQLite refused WAL mode (journal_mode is {mode})"
            )));
        }
    }
    let sync = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous={sync};"))
        .map_err(backend)?;
    Ok(conn)
}

fn corrupt(key: &[u8], reason: &str) -> StorageError {
    StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.to_owned(),
    }
}

/// Decode a `version` column: a positive integer.
fn version_of(key: &[u8], version: ValueRef<'_>) -> Result<u64, StorageError> {
    match version {
        ValueRef::Integer(v) => u64::try_from(v).ok().filter(|v| *v > 0),
        _ => None,
    }
    .ok_or_else(|| corrupt(key, "version column is not a positive integer"))
}

/// Decode one `kv` row, naming the key if the row is malformed.
fn versioned(
    key: &[u8],
    value: ValueRef<'_>,
    version: ValueRef<'_>,
) -> Result<Versioned, StorageError> {
    let ValueRef::Blob(value) = value else {
        return Err(corrupt(key, "value column is not a BLOB"));
    };
    Ok(Versioned {
        value: value.to_vec(),
        version: version_of(key, version)?,
    })
}

fn current_version(conn: &Connection, key: &[u8]) -> Result<Option<u64>, StorageError> {
    let mut stmt = conn
        .prepare_cached("SELECT version FROM kv WHERE key = ?1")
        .map_err(backend)?;
    let mut rows = stmt.query([key]).map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => version_of(key, row.get_ref(0).map_err(backend)?).map(Some),
        None => Ok(None),
    }
}

/// One batch inside the group's transaction: its preconditions read
/// against the state so far (earlier batches of the group included), then
/// its writes under a version of its own.
fn apply(conn: &Connection, batch: &Batch) -> Result<Committed, StorageError> {
    for (key, precondition, _) in batch.iter() {
        if !precondition.holds(current_version(conn, key)?) {
            return Err(StorageError::Conflict { key: key.to_vec() });
        }
    }
    let mut committed = Committed::default();
    if batch.has_writes() {
        let version: i64 = conn
            .prepare_cached(
                "UPDATE commit_counter SET last_commit = last_commit + 1 RETURNING last_commit",
            )
            .map_err(backend)?
            .query_row([], |row| row.get(0))
            .map_err(backend)?;
        let mut put = conn
            .prepare_cached(
                "INSERT INTO kv (key, value, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
            )
            .map_err(backend)?;
        let mut delete = conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .map_err(backend)?;
        for (key, _, mutation) in batch.iter() {
            match mutation {
                Mutation::Put(value) => put.execute(params![key, value, version]),
                Mutation::Delete => delete.execute([key]),
                Mutation::Check => continue,
            }
            .map_err(backend)?;
        }
        let version = u64::try_from(version)
            .map_err(|_| StorageError::backend("the commit counter is negative"))?;
        committed.version = Some(version);
    }
    Ok(committed)
}

/// A failure that rolled back a whole group commit: every batch of the
/// group gets it (inside [`StorageError::Backend`]), and none was applied.
#[derive(Debug, Clone)]
struct GroupFailed(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for GroupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (the group commit holding this batch was rolled back: nothing of it was applied)",
            self.0
        )
    }
}

impl std::error::Error for GroupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

impl GroupFailed {
    fn new(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(Arc::from(cause.into()))
    }

    /// From a batch's error that ended the transaction.
    fn from_storage(e: StorageError) -> Self {
        match e {
            StorageError::Backend(inner) => Self(Arc::from(inner)),
            other => Self::new(other.to_string()),
        }
    }

    fn all(&self, n: usize) -> Vec<Result<Committed, StorageError>> {
        (0..n)
            .map(|_| Err(StorageError::backend(self.clone())))
            .collect()
    }
}

/// Commit `group` — batches in arrival order — as one write transaction
/// (one fsync): each batch under a savepoint, so a batch whose
/// precondition fails (or that fails alone) is rolled back alone and the
/// others commit. One result per batch, all decided by the `COMMIT`: if it
/// fails, every batch fails, including those that found a conflict (their
/// conflicts were judged against writes that never happened).
fn commit_group(conn: &Connection, group: &[&Batch]) -> Vec<Result<Committed, StorageError>> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return GroupFailed::new(e).all(group.len());
    }
    let alone = group.len() == 1;
    let mut results = Vec::with_capacity(group.len());
    for batch in group {
        // A lone batch needs no savepoint: its failure rolls back the
        // transaction, which holds nothing else.
        if !alone && let Err(e) = conn.execute_batch("SAVEPOINT batch") {
            return rollback(conn, &GroupFailed::new(e), group.len());
        }
        match apply(conn, batch) {
            Ok(committed) => {
                if !alone && let Err(e) = conn.execute_batch("RELEASE batch") {
                    return rollback(conn, &GroupFailed::new(e), group.len());
                }
                results.push(Ok(committed));
            }
            Err(e) if conn.is_autocommit() => {
                // SQLite ended the transaction itself (disk full, I/O
                // error): the earlier batches are gone too.
                return GroupFailed::from_storage(e).all(group.len());
            }
            Err(e) if alone => {
                // Its writes may be half done: never COMMIT them.
                let _ = conn.execute_batch("ROLLBACK");
                return vec![Err(e)];
            }
            Err(e) => {
                if let Err(e) = conn.execute_batch("ROLLBACK TO batch; RELEASE batch") {
                    return rollback(conn, &GroupFailed::new(e), group.len());
                }
                results.push(Err(e));
            }
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        return rollback(conn, &GroupFailed::new(e), group.len());
    }
    results
}

/// Abandon the group's transaction after `failure`.
fn rollback(
    conn: &Connection,
    failure: &GroupFailed,
    n: usize,
) -> Vec<Result<Committed, StorageError>> {
    if !conn.is_autocommit() {
        // If even this fails, the connection stays in the transaction and
        // the next BEGIN fails: a Backend error, never a wrong answer.
        let _ = conn.execute_batch("ROLLBACK");
    }
    failure.all(n)
}

/// The number of the last commit, which changes whenever anything is written.
fn last_commit(conn: &Connection) -> Result<i64, StorageError> {
    conn.prepare_cached("SELECT last_commit FROM commit_counter")
        .map_err(backend)?
        .query_row([], |row| row.get(0))
        .map_err(backend)
}

fn scan(
    conn: &Connection,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
    // Start at the prefix, or just past `after` if that is further on; stop
    // before the first key that no longer has the prefix.
    let (lower_op, lower) = match after {
        Some(after) if after >= prefix => (">", after),
        _ => (">=", prefix),
    };
    let upper = prefix_end(prefix);
    let upper_clause = if upper.is_some() {
        "AND key < ?3"
    } else {
        "AND ?3 IS NULL"
    };
    let sql = format!(
        "SELECT key, value, version FROM kv WHERE key {lower_op} ?1 {upper_clause} ORDER BY key LIMIT ?2"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
    let mut rows = stmt.query(params![lower, limit, upper]).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        let ValueRef::Blob(key) = row.get_ref(0).map_err(backend)? else {
            return Err(corrupt(&[], "a key column is not a BLOB"));
        };
        let entry = versioned(
            key,
            row.get_ref(1).map_err(backend)?,
            row.get_ref(2).map_err(backend)?,
        )?;
        out.push((key.to_vec(), entry));
    }
    Ok(out)
}

fn get(conn: &Connection, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
    let mut stmt = conn
        .prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
        .map_err(backend)?;
    let mut rows = stmt.query([key]).map_err(backend)?;
    match rows.next().map_err(backend)? {
        Some(row) => versioned(
            key,
            row.get_ref(0).map_err(backend)?,
            row.get_ref(1).map_err(backend)?,
        )
        .map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let key = key.to_vec();
        self.read(move |conn| get(conn, &key)).await
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        // One hop, one read transaction: a consistent snapshot in WAL mode.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(backend)?;
            let values = keys
                .iter()
                .map(|key| get(&tx, key))
                .collect::<Result<Vec<_>, _>>()?;
            // Read-only: ending it either way releases the snapshot.
            tx.rollback().map_err(backend)?;
            Ok(values)
        })
        .await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        if limit == 0 {
            self.inner.ensure_open()?;
            return Ok(Vec::new());
        }
        let prefix = prefix.to_vec();
        let after = after.map(<[u8]>::to_vec);
        self.read(move |conn| scan(conn, &prefix, after.as_deref(), limit))
            .await
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        self.inner.ensure_open()?;
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let inner = Arc::clone(&self.inner);
        let batch = Arc::new(batch);
        let queued = Arc::clone(&batch);
        let committed = blocking::unblock(move || inner.commit(&queued)).await?;
        self.inner.notifier.notify(&batch);
        Ok(committed)
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.inner.closed.store(true, Ordering::Release);
        let inner = Arc::clone(&self.inner);
        blocking::unblock(move || {
            lock(&inner.readers)?.clear();
            // Taking the writer waits for an in-flight commit to finish.
            if let Some(conn) = lock(&inner.writer)?.take() {
                conn.close().map_err(|(_, e)| backend(e))?;
            }
            inner.notifier.close();
            Ok(())
        })
        .await
    }

    /// In-process commits wake watches at once; for a file, the commit
    /// counter is also polled every [`DEFAULT_POLL_INTERVAL`] so commits by
    /// other processes sharing the file wake them too.
    async fn watch(&self, prefix: &[u8]) -> Result<Watch, StorageError> {
        self.inner.ensure_open()?;
        let local = self.inner.notifier.watch(prefix);
        if self.inner.path.is_none() {
            return Ok(local);
        }
        let store = self.clone();
        let seen = self.read(last_commit).await?;
        // The state is the last counter value seen; `None` ends the stream
        // after reporting an error once.
        let polled = futures::stream::unfold(Some(seen), move |seen| {
            let store = store.clone();
            async move {
                let seen = seen?;
                loop {
                    blocking::unblock(|| std::thread::sleep(DEFAULT_POLL_INTERVAL)).await;
                    match store.read(last_commit).await {
                        Ok(now) if now == seen => {}
                        Ok(now) => return Some((Ok(()), Some(now))),
                        Err(e) => return Some((Err(e), None)),
                    }
                }
            }
        });
        Ok(local.merge(Watch::from_stream(Box::pin(polled))))
    }
}

#[cfg(test)]
mod tests;
