//! keystead's [`Store`] contract on [sled] 0.34.7: a pure-Rust embedded
//! key-value backend.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use keystead::store::{Batch, Precondition, Store};
//! use keystead_sled::{SledOptions, SledStore};
//!
//! let store = SledStore::open("/var/lib/myapp/keystead.sled").await?;
//! let mut batch = Batch::new();
//! batch.put(b"user/alice".to_vec(), b"...".to_vec(), Precondition::Absent)?;
//! store.commit(batch).await?;
//! store.close().await?;
//!
//! // A cache you can afford to lose: skip the per-commit flush.
//! let cache = SledOptions::new()
//!     .flush_on_commit(false)
//!     .cache_capacity(64 * 1024 * 1024)
//!     .open("/var/cache/myapp/keystead.sled")
//!     .await?;
//! # drop(cache);
//! # Ok(())
//! # }
//! ```
//!
//! # When to pick it
//!
//! `keystead-sled` needs no C toolchain and no SQLite. It meets the whole
//! [`Store`] contract and passes keystead's conformance, crash and
//! two-process suites. **`keystead-sqlite` stays the durable default**;
//! read the [durability](#durability) section before choosing sled.
//!
//! # Durability
//!
//! By default every [`Store::commit`] calls sled's `Db::flush` before it
//! returns `Ok`. On Linux, sled 0.34.7's flush writes its log with
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, **not `fsync`**: the
//! data pages reach the kernel and the device queue, but the file's metadata
//! is not synced and no cache-flush command is sent to the disk. So:
//!
//! * an acknowledged commit survives a **process crash** (panic, `SIGKILL`,
//!   OOM kill) — the crash test in `tests/crash.rs` kills a writer at random
//!   moments and checks this;
//! * on **power loss or a kernel crash**, sled promises less than SQLite with
//!   `synchronous=FULL` (which `fsync`s every commit): recently acknowledged
//!   commits may be lost.
//!
//! [`SledOptions::flush_on_commit`]`(false)` skips the per-commit flush and
//! relies on sled's background flusher (every 500 ms): commits get much
//! faster, but a commit acknowledged right before a crash — even a mere
//! process crash — may be lost. Atomicity is kept either way: a batch is
//! applied whole or not at all.
//!
//! # Concurrent commits
//!
//! Commits apply one at a time (sled serialises its transactions, and a
//! gate keeps scans consistent), but their flushes overlap: the flush runs
//! after the gate is released, and sled's `flush` makes the log stable up
//! to the point reached when it was called, returning at once when another
//! caller's flush already got there. Concurrent commits therefore share
//! flushes without a queue of our own; SQLite-style group commit (one
//! transaction for many batches) would save nothing here, since the
//! transactions themselves are in-memory and cheap — the flush is the
//! cost, and it is already shared. `benches/store_scaling.rs` measures
//! what this gives on one machine (BENCHMARKS.md, "Write scaling").
//!
//! # One process at a time
//!
//! sled takes an exclusive `flock` on its data file. A second process (or a
//! second [`SledStore`] in the same process) opening the same path while the
//! first is open gets a [`StorageError::Backend`] ("could not acquire lock")
//! instead of corrupting the store. To share a store between processes, run
//! it behind one process, or use `keystead-sqlite`.
//!
//! sled lets go of the lock a moment after the last handle is dropped, so
//! `open` retries for [`SledOptions::lock_timeout`] (1 s by default) before
//! refusing: closing a store and reopening the path at once in the same
//! process just works, and a path held by another process is refused after
//! that delay.
//!
//! # On-disk layout
//!
//! The path is a sled directory. keystead uses two sled trees in it and
//! leaves sled's default tree empty:
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `keystead/data` | the store key, as given | 8-byte big-endian version ++ the stored bytes |
//! | `keystead/meta` | `format` | the layout marker, `keystead-sled/1` |
//! | `keystead/meta` | `last_commit` | the commit counter, 8-byte big-endian (absent = 0) |
//!
//! The marker is written when a store is first opened in an empty (or new)
//! directory. Opening a directory whose marker is anything else — a newer
//! layout, say — fails with [`StorageError::Backend`] naming the marker, so an
//! old binary never misreads a newer store; a sled database with other
//! content and no marker is refused the same way, and left untouched. A stored value shorter than
//! its 8-byte version header is reported as [`StorageError::Corrupt`] naming
//! the key, by `get`, `scan`, and by a `commit` whose precondition on that key
//! is not `Any`; an unconditional (`Any`) put does not read the old value and
//! so overwrites, repairing it. Nothing panics on bad stored bytes.
//!
//! # Commits and threads
//!
//! A commit is one sled multi-tree transaction over the data and meta trees:
//! it checks every precondition in key order (the first failing key is the
//! [`StorageError::Conflict`] key, as in every backend), then, if the batch
//! writes anything, takes the next commit number from `last_commit` and
//! applies the puts and deletes with that version. sled serialises
//! transactions and retries them on conflict, so concurrent compare-and-swap
//! loses no update.
//!
//! Each `scan` call reads its whole page between two commits, so a page
//! never holds part of a multi-key commit. sled's own iterators lock only per
//! step, so the store adds a lock that commits hold exclusively while their
//! transaction applies (not while they flush) and scans hold shared for their
//! page: a very long scan delays commits. Successive pages of a paginated
//! scan are, as in every backend, not one snapshot.
//!
//! If the flush after an applied transaction fails, `commit` returns
//! [`StorageError::Backend`] although the batch is already visible to later
//! reads and may or may not survive a crash — the same ambiguity as a
//! database whose `fsync` fails after commit.
//!
//! sled's API is blocking. Every call ([`SledStore::open`], `get`, `scan`,
//! `commit`, `close`) runs on the [`blocking`] crate's thread pool, never on
//! the caller's async executor.
//!
//! [sled]: https://docs.rs/sled/0.34.7
#![forbid(unsafe_code)]

use async_trait::async_trait;
use keystead::StorageError;
use keystead::store::watch::{Notifier, Watch};
use keystead::store::{Batch, Committed, Mutation, Precondition, Store, Versioned, prefix_end};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Name of the sled tree holding key → (version, value).
const DATA_TREE: &[u8] = b"keystead/data";
/// Name of the sled tree holding the format marker and the commit counter.
const META_TREE: &[u8] = b"keystead/meta";
/// Key of the layout marker in the meta tree.
const FORMAT_KEY: &[u8] = b"format";
/// The only layout marker this version reads and writes.
pub const FORMAT: &[u8] = b"keystead-sled/1";
/// Key of the store-wide commit counter in the meta tree.
const COUNTER_KEY: &[u8] = b"last_commit";
/// Length of the big-endian version header in front of every stored value.
const VERSION_LEN: usize = 8;
/// Default of [`SledOptions::lock_timeout`].
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// How to open a [`SledStore`]: durability, cache size, and how long to wait
/// for sled's file lock.
///
/// Built with [`SledOptions::new`] and its setters, then consumed by
/// [`SledOptions::open`] or [`SledOptions::temporary`]. The defaults are the
/// safe ones; [`SledStore::open`] uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SledOptions {
    flush_on_commit: bool,
    cache_capacity: Option<u64>,
    lock_timeout: Duration,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            flush_on_commit: true,
            cache_capacity: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

impl SledOptions {
    /// The defaults: flush on every commit, sled's default cache (1 GiB,
    /// lowered to the cgroup memory limit where there is one), wait up to
    /// 1 s for the file lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Store::commit`] flushes sled's log before returning `Ok`
    /// (default `true`).
    ///
    /// With `false`, commits return as soon as they are applied in memory and
    /// sled's background flusher writes them within about 500 ms: a commit
    /// acknowledged right before a crash may be lost. Only turn it off for
    /// data you can afford to lose, such as caches or tests. See the
    /// [crate docs](crate#durability) for what a flush does guarantee.
    #[must_use]
    pub fn flush_on_commit(mut self, flush: bool) -> Self {
        self.flush_on_commit = flush;
        self
    }

    /// The most memory, in bytes, sled's page cache may use (sled's
    /// `Config::cache_capacity`). Lower it on small machines; raise it so a
    /// large store's hot records stay in memory.
    #[must_use]
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache_capacity = Some(bytes);
        self
    }

    /// How long [`SledOptions::open`] keeps retrying while sled's file lock
    /// is held (default 1 s).
    ///
    /// sled releases its lock a moment *after* the last handle to a database
    /// is dropped (its background threads let go of the file last), so
    /// reopening a path right after closing it in the same process can find
    /// it still locked. Retrying hides that race; the price is that a path
    /// held by another process is refused only after this long.
    /// `Duration::ZERO` refuses at once.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Open (creating if needed) the store in the sled directory at `path`.
    ///
    /// Fails with [`StorageError::Backend`] if another process (or another
    /// open [`SledStore`]) still holds the directory after
    /// [`SledOptions::lock_timeout`], if its layout marker is not [`FORMAT`],
    /// or on any I/O error.
    pub async fn open(self, path: impl AsRef<Path>) -> Result<SledStore, StorageError> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let config = self.sled_config().path(&path);
        blocking::unblock(move || SledStore::start(&self, &config, &path)).await
    }

    /// A store in a fresh temporary sled directory that is deleted when the
    /// store is closed or dropped (sled's `Config::temporary`). For tests.
    pub async fn temporary(self) -> Result<SledStore, StorageError> {
        let config = self.sled_config().temporary(true);
        blocking::unblock(move || SledStore::start(&self, &config, Path::new("<temporary>"))).await
    }

    fn sled_config(&self) -> sled::Config {
        let config = sled::Config::new();
        match self.cache_capacity {
            Some(bytes) => config.cache_capacity(bytes),
            None => config,
        }
    }
}

/// A [`Store`] on a sled database; see the [crate docs](crate) for
/// durability, locking and the on-disk layout.
///
/// The store owns the only handles to its sled database. [`Store::close`]
/// waits for calls in progress, then flushes and drops them; every later
/// call fails with [`StorageError::closed`]. Dropping the last reference to
/// the store drops them too. Either way sled then releases its file lock
/// (a moment later, which [`SledOptions::lock_timeout`] waits out), so the
/// same path can be opened again in the same process.
#[derive(Debug)]
pub struct SledStore {
    /// `None` once closed. Every call holds the read lock for its whole
    /// blocking section, so `close` (write lock) waits for calls in progress
    /// and, once it returns, no handle to the database remains.
    handles: Arc<RwLock<Option<Handles>>>,
    flush_on_commit: bool,
    /// Wakes watches after each commit; sled is single-process, so
    /// in-process fan-out reaches every committer.
    notifier: Arc<Notifier>,
}

/// The open database and the two trees keystead uses in it.
#[derive(Debug)]
struct Handles {
    db: sled::Db,
    data: sled::Tree,
    meta: sled::Tree,
    /// Commits hold it exclusively while their transaction applies, scans
    /// shared for their whole page. sled applies a transaction atomically
    /// for point reads but its iterators lock per step, so without this a
    /// scan could return part of a multi-key commit.
    scan_gate: RwLock<()>,
}

impl SledStore {
    /// Open (creating if needed) the store at `path` with the default
    /// [`SledOptions`]: flush on every commit. Use [`SledOptions::open`] to
    /// change them.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        SledOptions::new().open(path).await
    }

    /// A store in a temporary directory, deleted when the store is closed or
    /// dropped; see [`SledOptions::temporary`]. For tests.
    pub async fn temporary() -> Result<Self, StorageError> {
        SledOptions::new().temporary().await
    }

    /// Blocking: open the sled database, its trees, and check or write the
    /// layout marker.
    fn start(
        options: &SledOptions,
        config: &sled::Config,
        path: &Path,
    ) -> Result<Self, StorageError> {
        let db = open_db(config, options.lock_timeout).map_err(|e| {
            StorageError::backend(format!("cannot open sled store at {}: {e}", path.display()))
        })?;
        // A sled database that is not (yet) a keystead store must be empty:
        // never adopt someone else's data, nor create our trees in it.
        let names = db.tree_names();
        if !names.iter().any(|n| n == META_TREE) {
            let default_tree = db.name();
            let foreign = names.iter().any(|n| *n != default_tree && n != DATA_TREE);
            if foreign || !db.is_empty() {
                return Err(StorageError::backend(format!(
                    "{} holds a sled database that is not a keystead store (no layout marker)",
                    path.display()
                )));
            }
        }
        let data = db.open_tree(DATA_TREE).map_err(sled_error)?;
        let meta = db.open_tree(META_TREE).map_err(sled_error)?;
        match meta.get(FORMAT_KEY).map_err(sled_error)? {
            Some(marker) if marker.as_ref() == FORMAT => {}
            Some(marker) => {
                return Err(StorageError::backend(format!(
                    "sled store at {} has layout marker {:?}; this keystead-sled reads only {:?}",
                    path.display(),
                    String::from_utf8_lossy(&marker),
                    String::from_utf8_lossy(FORMAT),
                )));
            }
            None => {
                if !data.is_empty() || !meta.is_empty() {
                    return Err(StorageError::backend(format!(
                        "sled store at {} holds keystead data but no layout marker",
                        path.display()
                    )));
                }
                meta.insert(FORMAT_KEY, FORMAT).map_err(sled_error)?;
                db.flush().map_err(sled_error)?;
            }
        }
        Ok(Self {
            handles: Arc::new(RwLock::new(Some(Handles {
                db,
                data,
                meta,
                scan_gate: RwLock::new(()),
            }))),
            flush_on_commit: options.flush_on_commit,
            notifier: Arc::new(Notifier::new()),
        })
    }

    /// Run `f` on the open handles on the blocking thread pool, holding the
    /// read lock so `close` waits for it.
    async fn with_handles<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Handles) -> Result<T, StorageError> + Send + 'static,
    {
        let handles = Arc::clone(&self.handles);
        blocking::unblock(move || {
            // The lock only guards the handles; a panic elsewhere while it was
            // held cannot leave them half-updated, so poison is ignored.
            let guard = handles.read().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(h) => f(h),
                None => Err(StorageError::closed()),
            }
        })
        .await
    }
}

/// Open the sled database, retrying for up to `lock_timeout` while its file
/// lock is held (see [`SledOptions::lock_timeout`]).
fn open_db(config: &sled::Config, lock_timeout: Duration) -> sled::Result<sled::Db> {
    // A timeout too large to add to `now` waits for as long as it takes.
    let deadline = Instant::now().checked_add(lock_timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        match config.open() {
            Err(e) if is_lock_error(&e) => {
                let left = deadline.map_or(Duration::MAX, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                if left.is_zero() {
                    return Err(e);
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Whether sled refused to open because another handle holds its file lock.
/// sled 0.34.7 reports it only as this `Io` error message.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// A sled failure as a [`StorageError::Backend`].
fn sled_error(e: sled::Error) -> StorageError {
    StorageError::backend(e)
}

/// The error for a stored value too short to hold its version header.
fn too_short(key: &[u8], stored: &[u8]) -> StorageError {
    StorageError::Corrupt {
        key: key.to_vec(),
        reason: format!(
            "stored value is {} bytes, shorter than its {VERSION_LEN}-byte version header",
            stored.len()
        ),
    }
}

/// Split a stored value into (version, bytes).
fn decode(key: &[u8], stored: &[u8]) -> Result<Versioned, StorageError> {
    match stored.split_first_chunk::<VERSION_LEN>() {
        Some((version, value)) => Ok(Versioned {
            value: value.to_vec(),
            version: u64::from_be_bytes(*version),
        }),
        None => Err(too_short(key, stored)),
    }
}

/// Only the version of a stored value, without copying the bytes.
fn stored_version(key: &[u8], stored: &[u8]) -> Result<u64, StorageError> {
    match stored.first_chunk::<VERSION_LEN>() {
        Some(version) => Ok(u64::from_be_bytes(*version)),
        None => Err(too_short(key, stored)),
    }
}

/// Version header ++ value, as stored in the data tree.
fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(VERSION_LEN + value.len());
    stored.extend_from_slice(&version.to_be_bytes());
    stored.extend_from_slice(value);
    stored
}

/// The commit counter's stored bytes as a number (absent = 0).
fn decode_counter(stored: Option<&[u8]>) -> Result<u64, StorageError> {
    match stored {
        None => Ok(0),
        Some(bytes) => bytes.try_into().map(u64::from_be_bytes).map_err(|_| {
            StorageError::backend(format!(
                "commit counter in the sled meta tree is {} bytes, expected 8",
                bytes.len()
            ))
        }),
    }
}

/// Blocking: the whole commit as one transaction over the data and meta
/// trees. The closure may run several times; it touches nothing but the
/// transactional trees.
fn commit_blocking(h: &Handles, batch: &Batch, flush: bool) -> Result<Committed, StorageError> {
    let abort = ConflictableTransactionError::Abort;
    let gate = h.scan_gate.write().unwrap_or_else(PoisonError::into_inner);
    let result = (&h.data, &h.meta).transaction(|(data, meta)| {
        for (key, pre, _) in batch.iter() {
            if pre == Precondition::Any {
                // Holds whatever is stored: no read, so an unconditional put
                // also repairs a corrupt record.
                continue;
            }
            let current = match data.get(key)? {
                Some(stored) => Some(stored_version(key, &stored).map_err(abort)?),
                None => None,
            };
            if !pre.holds(current) {
                return Err(abort(StorageError::Conflict { key: key.to_vec() }));
            }
        }
        if !batch.has_writes() {
            return Ok(None);
        }
        let last = decode_counter(meta.get(COUNTER_KEY)?.as_deref()).map_err(abort)?;
        let version = last
            .checked_add(1)
            .ok_or_else(|| abort(StorageError::backend("commit counter overflowed u64")))?;
        meta.insert(COUNTER_KEY, &version.to_be_bytes())?;
        for (key, _, mutation) in batch.iter() {
            match mutation {
                Mutation::Put(value) => {
                    data.insert(key, encode(version, value))?;
                }
                Mutation::Delete => {
                    data.remove(key)?;
                }
                Mutation::Check => {}
            }
        }
        Ok(Some(version))
    });
    // Scans may run again; the flush does not need to hold them off.
    drop(gate);
    match result {
        Ok(version) => {
            if version.is_some() && flush {
                h.db.flush().map_err(sled_error)?;
            }
            Ok(Committed { version })
        }
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(sled_error(e)),
    }
}

/// Blocking: the range scan behind [`Store::scan`].
fn scan_blocking(
    h: &Handles,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let start = match after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    let end = prefix_end(prefix);
    if let (Bound::Excluded(after), Some(end)) = (start, &end)
        && after >= end.as_slice()
    {
        return Ok(Vec::new());
    }
    let end = match &end {
        Some(end) => Bound::Excluded(end.as_slice()),
        None => Bound::Unbounded,
    };
    let mut out = Vec::new();
    // The whole page is read between two commits, never across one.
    let _gate = h.scan_gate.read().unwrap_or_else(PoisonError::into_inner);
    for entry in h.data.range::<&[u8], _>((start, end)) {
        let (key, stored) = entry.map_err(sled_error)?;
        if !key.starts_with(prefix) {
            break;
        }
        let versioned = decode(&key, &stored)?;
        out.push((key.to_vec(), versioned));
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl Store for SledStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let key = key.to_vec();
        self.with_handles(move |h| match h.data.get(&key).map_err(sled_error)? {
            Some(stored) => decode(&key, &stored).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        // One hop; the scan gate (shared) keeps commits from applying
        // between the reads, so they see one snapshot.
        self.with_handles(move |h| {
            let _gate = h.scan_gate.read().unwrap_or_else(PoisonError::into_inner);
            keys.iter()
                .map(|key| match h.data.get(key).map_err(sled_error)? {
                    Some(stored) => decode(key, &stored).map(Some),
                    None => Ok(None),
                })
                .collect()
        })
        .await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        let prefix = prefix.to_vec();
        let after = after.map(<[u8]>::to_vec);
        self.with_handles(move |h| scan_blocking(h, &prefix, after.as_deref(), limit))
            .await
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        if batch.is_empty() {
            // Still report a closed store.
            return self.with_handles(|_| Ok(Committed::default())).await;
        }
        let flush = self.flush_on_commit;
        let (batch, committed) = self
            .with_handles(move |h| {
                commit_blocking(h, &batch, flush).map(|committed| (batch, committed))
            })
            .await?;
        self.notifier.notify(&batch);
        Ok(committed)
    }

    async fn watch(&self, prefix: &[u8]) -> Result<Watch, StorageError> {
        let watch = self.notifier.watch(prefix);
        // Still report a closed store.
        self.with_handles(|_| Ok(())).await?;
        Ok(watch)
    }

    async fn close(&self) -> Result<(), StorageError> {
        let handles = Arc::clone(&self.handles);
        self.notifier.close();
        blocking::unblock(move || {
            // Waits for every call in progress; afterwards none can start.
            let taken = handles
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match taken {
                // Dropping the handles releases sled's file lock.
                Some(h) => h.db.flush().map(drop).map_err(sled_error),
                None => Ok(()),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> Batch {
        let mut batch = Batch::new();
        batch
            .put(key.to_vec(), value.to_vec(), Precondition::Any)
            .unwrap();
        batch
    }

    /// Write raw bytes into the data tree, bypassing the store.
    fn write_raw(store: &SledStore, key: &[u8], stored: &[u8]) {
        let guard = store.handles.read().unwrap();
        let h = guard.as_ref().unwrap();
        h.data.insert(key, stored).unwrap();
    }

    /// Raw sled open of a path a store or raw handle just let go of, waiting
    /// out sled's delayed lock release like [`SledOptions::open`] does.
    fn raw_open(path: &Path) -> sled::Db {
        open_db(&sled::Config::new().path(path), Duration::from_secs(10)).unwrap()
    }

    fn assert_corrupt(result: Result<impl std::fmt::Debug, StorageError>, expected: &[u8]) {
        match result {
            Err(StorageError::Corrupt { key, reason }) => {
                assert_eq!(key, expected, "Corrupt names the key");
                assert!(reason.contains("version header"), "reason: {reason}");
            }
            other => panic!("expected Corrupt at {expected:?}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn short_stored_value_is_corrupt_not_a_panic() {
        let store = SledStore::temporary().await.unwrap();
        store.commit(put(b"a", b"fine")).await.unwrap();
        write_raw(&store, b"b", &[0, 0, 0, 1]);
        write_raw(&store, b"c", &[]);

        assert_corrupt(store.get(b"b").await, b"b");
        assert_corrupt(store.get(b"c").await, b"c");
        assert_corrupt(store.scan(b"", None, 10).await, b"b");
        assert_corrupt(store.scan(b"", Some(b"b"), 10).await, b"c");
        // Scans that stop before the bad record still work.
        let first = store.scan(b"", None, 1).await.unwrap();
        assert_eq!(first[0].0, b"a");
        assert_eq!(first[0].1.value, b"fine");
        // A commit whose precondition reads the bad record reports it too.
        let mut cas = Batch::new();
        cas.put(b"b".to_vec(), b"x".to_vec(), Precondition::Version(1))
            .unwrap();
        assert_corrupt(store.commit(cas).await, b"b");
        // An unconditional put does not read it, and so repairs it.
        store.commit(put(b"c", b"x")).await.unwrap();
        assert_eq!(store.get(b"c").await.unwrap().unwrap().value, b"x");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn exactly_eight_bytes_is_an_empty_value() {
        let store = SledStore::temporary().await.unwrap();
        write_raw(&store, b"k", &7u64.to_be_bytes());
        let got = store.get(b"k").await.unwrap().unwrap();
        assert_eq!(got.version, 7);
        assert!(got.value.is_empty());
    }

    #[tokio::test]
    async fn unknown_layout_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SledStore::open(&path).await.unwrap();
        store.commit(put(b"k", b"v")).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        {
            let db = raw_open(&path);
            let meta = db.open_tree(META_TREE).unwrap();
            assert_eq!(meta.get(FORMAT_KEY).unwrap().as_deref(), Some(FORMAT));
            meta.insert(FORMAT_KEY, b"keystead-sled/99".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        match SledStore::open(&path).await {
            Err(StorageError::Backend(e)) => {
                let message = e.to_string();
                assert!(message.contains("keystead-sled/99"), "{message}");
                assert!(message.contains("layout marker"), "{message}");
            }
            other => panic!("expected Backend error, got {other:?}"),
        }
    }

    /// A store laid out by the release before per-key versions (the same
    /// `keystead-sled/1` layout: data tree of version-prefixed values, meta
    /// tree with the marker and a store-wide counter), built here with raw
    /// sled calls: it opens without migration, keeps every value and
    /// version, and new writes — re-creating a deleted key included — take
    /// versions above every one it held.
    #[tokio::test]
    async fn a_store_written_by_the_previous_release_opens_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = raw_open(&path);
            let data = db.open_tree(DATA_TREE).unwrap();
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(FORMAT_KEY, b"keystead-sled/1".as_slice())
                .unwrap();
            data.insert(b"a", encode(3, b"old-a")).unwrap();
            data.insert(b"b", encode(7, b"old-b")).unwrap();
            // `c` was written at 9 and deleted; the counter remembers it.
            meta.insert(COUNTER_KEY, 9u64.to_be_bytes().as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(&path).await.unwrap();
        let a = store.get(b"a").await.unwrap().unwrap();
        assert_eq!((a.value.as_slice(), a.version), (b"old-a".as_slice(), 3));
        let mut batch = Batch::new();
        batch
            .put(b"b".to_vec(), b"new-b".to_vec(), Precondition::Version(7))
            .unwrap()
            .put(b"c".to_vec(), b"new-c".to_vec(), Precondition::Absent)
            .unwrap();
        let version = store.commit(batch).await.unwrap().version.unwrap();
        assert!(version > 9, "{version}");
        assert_eq!(store.get(b"c").await.unwrap().unwrap().version, version);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn data_without_marker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = raw_open(&path);
            db.open_tree(DATA_TREE)
                .unwrap()
                .insert(b"k", b"whatever".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        match SledStore::open(&path).await {
            Err(StorageError::Backend(e)) => {
                assert!(e.to_string().contains("no layout marker"), "{e}");
            }
            other => panic!("expected Backend error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn foreign_sled_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for (name, setup) in [
            ("default tree", None),
            ("other tree", Some(b"somebody/else".as_slice())),
        ] {
            let path = dir.path().join(name);
            {
                let db = raw_open(&path);
                match setup {
                    None => db.insert(b"k", b"v".as_slice()).map(drop).unwrap(),
                    Some(tree) => drop(db.open_tree(tree).unwrap()),
                }
                db.flush().unwrap();
            }
            match SledStore::open(&path).await {
                Err(StorageError::Backend(e)) => {
                    assert!(
                        e.to_string().contains("not a keystead store"),
                        "{name}: {e}"
                    );
                }
                other => panic!("{name}: expected Backend error, got {other:?}"),
            }
            let db = raw_open(&path);
            assert!(
                !db.tree_names()
                    .iter()
                    .any(|n| n == META_TREE || n == DATA_TREE),
                "{name}: refused open created no keystead tree"
            );
        }
    }

    #[tokio::test]
    async fn second_open_of_a_locked_path_is_a_backend_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = SledStore::open(&path).await.unwrap();
        let started = Instant::now();
        match SledOptions::new()
            .lock_timeout(Duration::from_millis(200))
            .open(&path)
            .await
        {
            Err(StorageError::Backend(e)) => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
            }
            other => panic!("expected Backend error, got {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "it retried"
        );
        first.close().await.unwrap();
        // After close the path opens again at once, however often.
        for _ in 0..20 {
            let again = SledStore::open(&path).await.unwrap();
            again.commit(put(b"k", b"v")).await.unwrap();
            again.close().await.unwrap();
        }
    }

    #[tokio::test]
    async fn open_waits_for_the_lock_within_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = SledStore::open(&path).await.unwrap();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            first.close().await.unwrap();
        });
        let second = SledOptions::new()
            .lock_timeout(Duration::from_secs(10))
            .open(&path)
            .await
            .unwrap();
        closer.await.unwrap();
        second.close().await.unwrap();
    }

    #[tokio::test]
    async fn options_without_flush_still_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SledOptions::new()
            .flush_on_commit(false)
            .cache_capacity(8 * 1024 * 1024)
            .open(&path)
            .await
            .unwrap();
        let committed = store.commit(put(b"k", b"v")).await.unwrap();
        store.close().await.unwrap();
        let reopened = SledStore::open(&path).await.unwrap();
        let got = reopened.get(b"k").await.unwrap().unwrap();
        assert_eq!(
            (got.value.as_slice(), Some(got.version)),
            (b"v".as_slice(), committed.version)
        );
    }

    /// A scan never sees part of a multi-key commit: all keys of every page
    /// (spanning many sled nodes) come from the same commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn scan_is_atomic_with_respect_to_commits() {
        const KEYS: u16 = 400;
        const COMMITS: u64 = 100;
        let store = Arc::new(
            SledOptions::new()
                .flush_on_commit(false)
                .temporary()
                .await
                .unwrap(),
        );
        let batch = |round: u64| {
            let mut batch = Batch::new();
            for k in 0..KEYS {
                batch
                    .put(
                        [b"p".as_slice(), &k.to_be_bytes()].concat(),
                        [round.to_be_bytes(); 8].concat(),
                        Precondition::Any,
                    )
                    .unwrap();
            }
            batch
        };
        store.commit(batch(0)).await.unwrap();
        let writer = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for round in 1..=COMMITS {
                    store.commit(batch(round)).await.unwrap();
                }
            })
        };
        let mut scans = 0u32;
        while !writer.is_finished() {
            let page = store.scan(b"p", None, usize::MAX).await.unwrap();
            assert_eq!(page.len(), usize::from(KEYS));
            let first = &page[0].1;
            for (key, v) in &page {
                assert_eq!(v, first, "key {key:?} comes from another commit");
            }
            scans += 1;
        }
        writer.await.unwrap();
        assert!(scans > 0);
    }

    #[tokio::test]
    async fn corrupt_counter_is_a_backend_error() {
        let store = SledStore::temporary().await.unwrap();
        {
            let guard = store.handles.read().unwrap();
            let h = guard.as_ref().unwrap();
            h.meta.insert(COUNTER_KEY, b"xyz".as_slice()).unwrap();
        }
        match store.commit(put(b"k", b"v")).await {
            Err(StorageError::Backend(e)) => {
                assert!(e.to_string().contains("commit counter"), "{e}");
            }
            other => panic!("expected Backend error, got {other:?}"),
        }
        assert_eq!(store.get(b"k").await.unwrap(), None);
    }
}
