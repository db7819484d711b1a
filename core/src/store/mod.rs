//! The storage contract: a versioned key-value store with atomic conditional
//! batches.
//!
//! Adapters know nothing about users or devices; the core owns the key layout
//! ([`key`]) and the record encoding ([`record`]). Everything a domain rule
//! needs from a database is three calls:
//!
//! * [`Store::get`] — one key, with its [`Versioned::version`];
//! * [`Store::scan`] — keys under a prefix, ascending, resumable with an
//!   `after` cursor;
//! * [`Store::commit`] — a [`Batch`] of puts, deletes and pure checks, each
//!   with a [`Precondition`]. Either every precondition holds and every write
//!   applies, or nothing applies and the error is [`StorageError::Conflict`]
//!   naming the first (smallest) key whose precondition failed. `Ok` carries
//!   the version the batch's puts took ([`Committed`]).
//!
//! # Versions
//!
//! Every write gives a key a new version. Versions are at least 1, unique and
//! strictly increasing *per key*, and never repeat for a key — not even after
//! it is deleted and re-created — so `Version(v)` compare-and-swap has no ABA
//! problem: a `Version(v)` that once held can never hold again after the key
//! changed. All keys put by one batch get the same version, the one
//! [`Committed::version`] returns.
//!
//! There is **no store-wide, gap-free numbering**, and nothing may rely on
//! one: versions of different keys say nothing about the order of their
//! commits, a backend may skip numbers (a failed or retried commit can burn
//! one), and commits to disjoint keys must be able to proceed in parallel — a
//! deployment-wide counter row or lock is a scaling bug, not a design.
//!
//! How each backend guarantees "never repeats after delete": the embedded
//! backends ([`MemoryStore`], SQLite, sled) have one writer at a time anyway,
//! so they keep a counter inside that writer (it costs no parallelism there);
//! PostgreSQL draws versions from a non-transactional sequence, taken only
//! once the commit holds the locks of all its keys, so every later writer of
//! a key — including one that re-creates it after a delete — draws a larger
//! number (see `keystead-postgres`). Tombstones were rejected: they would keep
//! a row for every key ever deleted (every purged token) for ever.
//!
//! # Limits
//!
//! Keys are 1 to [`MAX_KEY_LEN`] bytes, values at most [`MAX_VALUE_LEN`]
//! bytes, and a key appears at most once per batch. The [`Batch`] builder
//! enforces this ([`BatchError`]), so a backend never sees an invalid batch
//! and every backend accepts exactly the same batches.
//!
//! # Durability and threads
//!
//! `commit` returns `Ok` only once the write survives a process crash (see
//! each adapter for power loss). Blocking I/O never runs on the caller's async
//! executor: adapters move it to their own threads.

pub(crate) mod decoded;
pub mod key;
mod memory;
pub mod record;
pub mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use memory::MemoryStore;

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Longest key a [`Batch`] accepts, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value a [`Batch`] accepts, in bytes (4 MiB).
pub const MAX_VALUE_LEN: usize = 4 * 1024 * 1024;

/// A stored value with the version of the commit that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version of the last write of this key (≥ 1); see the
    /// [module docs](self#versions).
    pub version: u64,
}

/// What a successful [`Store::commit`] did: the version its puts took.
///
/// Why callers want it: a caller that keeps what it wrote (a refresh
/// remembering the family it just rotated) can later write again with
/// `Precondition::Version(version)` without reading the key first — the
/// precondition, checked by the store, is what proves nothing changed in
/// between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// The version every key the batch put now has. `Some` whenever the
    /// batch wrote anything (for a batch of deletes only, a fresh version no
    /// key has); `None` when it wrote nothing (an empty batch, or only
    /// checks).
    pub version: Option<u64>,
}

/// What must be true of a key for a batch to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precondition {
    /// No condition.
    Any,
    /// The key must not exist (uniqueness indexes, create-once records).
    Absent,
    /// The key must exist with exactly this version (compare-and-swap).
    Version(u64),
}

impl Precondition {
    /// Whether the precondition holds for a key whose current version is
    /// `current` (`None` if the key is absent).
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::Absent => current.is_none(),
            Precondition::Version(v) => current == Some(v),
        }
    }
}

/// What a batch does to one key once every precondition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Store this value (creating or replacing the key).
    Put(Vec<u8>),
    /// Remove the key (a no-op if it is absent).
    Delete,
    /// Write nothing; only the precondition matters.
    Check,
}

/// A batch that breaks the contract's limits; refused before any I/O.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Keys must have at least one byte.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the rejected key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is larger than [`MAX_VALUE_LEN`].
    #[error(
        "value of {len} bytes for key {} exceeds the limit of {max} bytes",
        key::display(key)
    )]
    ValueTooLarge {
        /// The key the value was meant for.
        key: Vec<u8>,
        /// Length of the rejected value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The same key was added twice to one batch.
    #[error("key {} appears twice in one batch", key::display(key))]
    DuplicateKey {
        /// The repeated key.
        key: Vec<u8>,
    },
}

/// An atomic set of writes and checks; see the [module docs](self).
///
/// Operations are kept ordered by key, so every backend checks and applies them
/// in the same order and reports the same conflicting key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: BTreeMap<Vec<u8>, (Precondition, Mutation)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store `value` at `key` if `precondition` holds.
    pub fn put(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: Vec<u8>,
        precondition: Precondition,
    ) -> Result<&mut Self, BatchError> {
        let key = key.into();
        if value.len() > MAX_VALUE_LEN {
            return Err(BatchError::ValueTooLarge {
                key,
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        self.insert(key, precondition, Mutation::Put(value))
    }

    /// Delete `key` if `precondition` holds.
    pub fn delete(
        &mut self,
        key: impl Into<Vec<u8>>,
        precondition: Precondition,
    ) -> Result<&mut Self, BatchError> {
        self.insert(key.into(), precondition, Mutation::Delete)
    }

    /// Require `precondition` of `key` without writing it.
    pub fn check(
        &mut self,
        key: impl Into<Vec<u8>>,
        precondition: Precondition,
    ) -> Result<&mut Self, BatchError> {
        self.insert(key.into(), precondition, Mutation::Check)
    }

    fn insert(
        &mut self,
        key: Vec<u8>,
        precondition: Precondition,
        mutation: Mutation,
    ) -> Result<&mut Self, BatchError> {
        if key.is_empty() {
            return Err(BatchError::EmptyKey);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(BatchError::KeyTooLarge {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if self.ops.contains_key(&key) {
            return Err(BatchError::DuplicateKey { key });
        }
        self.ops.insert(key, (precondition, mutation));
        Ok(self)
    }

    /// The operations in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Precondition, &Mutation)> {
        self.ops.iter().map(|(k, (pre, m))| (k.as_slice(), *pre, m))
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations (committing it is a no-op).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the batch puts or deletes anything, i.e. takes a version.
    pub fn has_writes(&self) -> bool {
        self.ops
            .values()
            .any(|(_, m)| !matches!(m, Mutation::Check))
    }
}

/// Why a store call failed. The same situation gives the same variant on
/// every backend.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A record the caller required does not exist.
    #[error("no record at key {}", key::display(key))]
    NotFound {
        /// The missing key.
        key: Vec<u8>,
    },
    /// A precondition of the batch did not hold; nothing was written.
    #[error("precondition failed at key {}", key::display(key))]
    Conflict {
        /// The smallest key of the batch whose precondition failed.
        key: Vec<u8>,
    },
    /// Stored bytes could not be decoded.
    #[error("corrupt record at key {}: {reason}", key::display(key))]
    Corrupt {
        /// The key whose bytes are malformed.
        key: Vec<u8>,
        /// What failed to decode.
        reason: String,
    },
    /// The backend itself failed (I/O error, closed store, lock timeout, …).
    #[error("storage backend failed: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// The stable code of this error (see [`crate::Error::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::NotFound { .. } => "NOT_FOUND",
            StorageError::Conflict { .. } => "STORAGE_CONFLICT",
            StorageError::Corrupt { .. } => "STORAGE_CORRUPT",
            StorageError::Backend(_) => "STORAGE_BACKEND",
        }
    }

    /// A [`StorageError::Backend`] wrapping `error`.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StorageError::Backend(error.into())
    }

    /// The error every backend returns once [`Store::close`] has been called.
    pub fn closed() -> Self {
        StorageError::Backend(Box::new(StoreClosed))
    }
}

/// The store was closed with [`Store::close`]; carried in
/// [`StorageError::Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreClosed;

impl fmt::Display for StoreClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store is closed")
    }
}

impl std::error::Error for StoreClosed {}

/// A versioned key-value store with atomic conditional batches; see the
/// [module docs](self) for the full contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value and version at `key`, or `None` if it is absent.
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError>;

    /// Up to `limit` entries whose key starts with `prefix` and (if `after` is
    /// given) is strictly greater than `after`, in ascending byte order.
    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError>;

    /// The values and versions at `keys`, in the same order (`None` where
    /// absent): what `get` would return for each.
    ///
    /// Why it exists: a token refresh or verification needs half a dozen
    /// independent records, and each `get` is a thread hop (embedded
    /// backends) or a network round trip (PostgreSQL). Backends answer the
    /// whole list in one hop or round trip, from one consistent snapshot
    /// (all bundled backends do); the default — one `get` after another —
    /// is correct but slower and reads no snapshot.
    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Apply `batch` atomically, or nothing with [`StorageError::Conflict`].
    /// `Ok` means durable (see the adapter's docs for power loss) and says
    /// which version the batch's puts took ([`Committed`]).
    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError>;

    /// Flush and release the backend. Every later call, except `close`
    /// itself, fails with [`StorageError::Backend`] ([`StoreClosed`]).
    async fn close(&self) -> Result<(), StorageError>;

    /// A [`Watch`](watch::Watch) that wakes after commits writing keys under
    /// `prefix`, from this process or any other sharing the store; see
    /// [`watch`] for the exact guarantee.
    ///
    /// The default polls every [`DEFAULT_POLL_INTERVAL`], which is correct
    /// for every backend (watches may wake spuriously); backends override it
    /// with real notifications.
    async fn watch(&self, prefix: &[u8]) -> Result<watch::Watch, StorageError> {
        let _ = prefix;
        Ok(watch::Watch::polling(DEFAULT_POLL_INTERVAL))
    }
}

/// How often the default [`Store::watch`] wakes a subscriber to re-read.
pub const DEFAULT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        (**self).get(key).await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        (**self).scan(prefix, after, limit).await
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        (**self).get_many(keys).await
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        (**self).commit(batch).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        (**self).close().await
    }

    async fn watch(&self, prefix: &[u8]) -> Result<watch::Watch, StorageError> {
        (**self).watch(prefix).await
    }
}

/// The exclusive upper bound of the keys starting with `prefix`: the prefix
/// with its last non-0xFF byte incremented, or `None` when every key at or
/// after `prefix` matches (empty or all-0xFF prefix). Backends that scan by
/// range use it.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_rejects_bad_input_by_name() {
        let mut b = Batch::new();
        assert_eq!(
            b.put(Vec::new(), vec![], Precondition::Any).unwrap_err(),
            BatchError::EmptyKey
        );
        assert!(matches!(
            b.put(vec![1; MAX_KEY_LEN + 1], vec![], Precondition::Any),
            Err(BatchError::KeyTooLarge { len, .. }) if len == MAX_KEY_LEN + 1
        ));
        assert!(matches!(
            b.put(b"k".to_vec(), vec![0; MAX_VALUE_LEN + 1], Precondition::Any),
            Err(BatchError::ValueTooLarge { .. })
        ));
        b.put(b"k".to_vec(), vec![0; MAX_VALUE_LEN], Precondition::Any)
            .unwrap();
        assert_eq!(
            b.check(b"k".to_vec(), Precondition::Absent).unwrap_err(),
            BatchError::DuplicateKey { key: b"k".to_vec() }
        );
        assert_eq!(b.len(), 1, "a rejected op leaves the batch unchanged");
    }

    #[test]
    fn batch_orders_ops_by_key() {
        let mut b = Batch::new();
        b.check(b"b".to_vec(), Precondition::Absent)
            .unwrap()
            .delete(b"a".to_vec(), Precondition::Any)
            .unwrap();
        let keys: Vec<_> = b.iter().map(|(k, _, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(b.has_writes());
        let mut checks = Batch::new();
        checks.check(b"x".to_vec(), Precondition::Any).unwrap();
        assert!(!checks.has_writes());
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[0x01, 0xFF]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn preconditions() {
        assert!(Precondition::Any.holds(None));
        assert!(Precondition::Absent.holds(None));
        assert!(!Precondition::Absent.holds(Some(1)));
        assert!(Precondition::Version(3).holds(Some(3)));
        assert!(!Precondition::Version(3).holds(Some(4)));
        assert!(!Precondition::Version(3).holds(None));
    }
}
