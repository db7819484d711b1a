//! Decoded records kept per library instance, so the hot paths (token
//! verification and issue, refresh) do not decode the same realm, session
//! and user records on every call.
//!
//! An entry is found by its store key and trusted only if the stored bytes
//! just read are *identical* to the bytes it was decoded from: decoding is
//! a pure function of those bytes, so a hit is exactly what decoding would
//! give. Nothing here relies on versions, on invalidation or on other
//! instances: every caller still reads the record from the store on every
//! call (that read is what sees revocations), and a changed record is a
//! miss. The cost of a hit is one hash of the key and one comparison of the
//! bytes (a few hundred at most), against a postcard decode with RFC 3339
//! timestamps.
//!
//! The cache is bounded ([`MAX_ENTRIES`] per shard); when a shard is full an
//! arbitrary entry makes room, so a deployment with more live records than
//! that decodes some of them again — never wrongly.
//!
//! The same bounded map, through [`Decoded::remember`] and
//! [`Decoded::take`], keeps the last rotation of each refresh family this
//! instance made, checked by the digest of the family's live token instead
//! of stored bytes (see `token::service`).

use std::any::Any;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

/// Shards, so concurrent verifications on many cores rarely share a lock.
const SHARDS: usize = 16;

/// Entries per shard: 16 × 4,096 records of a few hundred bytes each keeps
/// the cache within tens of megabytes at worst.
pub(crate) const MAX_ENTRIES: usize = 4096;

struct Entry {
    /// The stored bytes the value was decoded from.
    bytes: Vec<u8>,
    value: Arc<dyn Any + Send + Sync>,
}

/// Decoded records by store key; see the [module docs](self).
pub(crate) struct Decoded {
    hasher: RandomState,
    /// Entries per shard before an arbitrary one makes room.
    capacity: usize,
    shards: [Mutex<HashMap<Vec<u8>, Entry>>; SHARDS],
}

impl Default for Decoded {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

impl Decoded {
    /// An empty cache holding at most `capacity` entries per shard.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            capacity: capacity.max(1),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        // Truncation is fine: only the low bits pick a shard.
        #[allow(clippy::cast_possible_truncation)]
        let index = self.hasher.hash_one(key) as usize % SHARDS;
        &self.shards[index]
    }

    /// The value `decode` makes of `bytes` (the record stored at `key`),
    /// decoded now or earlier from identical bytes. `T` tells apart the
    /// different views callers take of one record: a cached value of
    /// another type is a miss and is replaced.
    pub(crate) fn get_or_decode<T, E>(
        &self,
        key: &[u8],
        bytes: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let shard = self.shard(key);
        {
            let entries = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get(key).filter(|entry| entry.bytes == bytes)
                && let Ok(value) = Arc::clone(&entry.value).downcast::<T>()
            {
                return Ok(value);
            }
        }
        // Decoded outside the lock: other keys of the shard stay readable.
        let value = Arc::new(decode(bytes)?);
        self.insert(key, bytes, Arc::clone(&value) as Arc<dyn Any + Send + Sync>);
        Ok(value)
    }

    /// Keep `value` at `key`, to be handed out once by [`take`](Self::take)
    /// with the same `check` bytes.
    pub(crate) fn remember<T: Any + Send + Sync>(&self, key: &[u8], check: &[u8], value: T) {
        self.insert(key, check, Arc::new(value));
    }

    /// Remove and return the value at `key` if it was kept with exactly
    /// `check` and is a `T`; otherwise leave the entry and return `None`.
    /// Taking (rather than reading) hands an entry to one caller only.
    pub(crate) fn take<T: Any + Send + Sync>(&self, key: &[u8], check: &[u8]) -> Option<Arc<T>> {
        let mut entries = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !entries
            .get(key)
            .is_some_and(|entry| entry.bytes == check && entry.value.is::<T>())
        {
            return None;
        }
        entries.remove(key)?.value.downcast::<T>().ok()
    }

    fn insert(&self, key: &[u8], bytes: &[u8], value: Arc<dyn Any + Send + Sync>) {
        let mut entries = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity
            && !entries.contains_key(key)
            && let Some(victim) = entries.keys().next().cloned()
        {
            entries.remove(&victim);
        }
        entries.insert(
            key.to_vec(),
            Entry {
                bytes: bytes.to_vec(),
                value,
            },
        );
    }

    /// Entries held, over all shards (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn decode_len(calls: &Cell<u32>) -> impl FnOnce(&[u8]) -> Result<usize, ()> + '_ {
        move |bytes| {
            calls.set(calls.get() + 1);
            Ok(bytes.len())
        }
    }

    #[test]
    fn identical_bytes_hit_and_changed_bytes_decode_again() {
        let cache = Decoded::default();
        let calls = Cell::new(0);
        assert_eq!(
            *cache
                .get_or_decode(b"k", b"abc", decode_len(&calls))
                .unwrap(),
            3
        );
        assert_eq!(
            *cache
                .get_or_decode(b"k", b"abc", decode_len(&calls))
                .unwrap(),
            3
        );
        assert_eq!(calls.get(), 1, "identical bytes are a hit");
        // Same length, other content: never served from the cache.
        assert_eq!(
            *cache
                .get_or_decode(b"k", b"abd", decode_len(&calls))
                .unwrap(),
            3
        );
        assert_eq!(calls.get(), 2, "changed bytes are decoded again");
        assert_eq!(
            *cache
                .get_or_decode(b"k2", b"abd", decode_len(&calls))
                .unwrap(),
            3
        );
        assert_eq!(calls.get(), 3, "another key is another entry");
    }

    #[test]
    fn another_view_of_the_same_record_is_a_miss() {
        let cache = Decoded::default();
        let as_len = cache
            .get_or_decode(b"k", b"abc", |b| Ok::<_, ()>(b.len()))
            .unwrap();
        let as_string = cache
            .get_or_decode(b"k", b"abc", |b| {
                Ok::<_, ()>(String::from_utf8_lossy(b).into_owned())
            })
            .unwrap();
        assert_eq!((*as_len, as_string.as_str()), (3, "abc"));
    }

    #[test]
    fn errors_are_returned_and_not_cached() {
        let cache = Decoded::default();
        let failed: Result<Arc<u8>, &str> = cache.get_or_decode(b"k", b"x", |_| Err("corrupt"));
        assert_eq!(failed.unwrap_err(), "corrupt");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_remembered_value_is_taken_once_and_only_with_its_check() {
        let cache = Decoded::with_capacity(4);
        cache.remember(b"family", b"digest-1", 7u32);
        assert!(cache.take::<u32>(b"family", b"digest-2").is_none());
        assert!(
            cache.take::<u64>(b"family", b"digest-1").is_none(),
            "another type"
        );
        assert_eq!(
            cache.take::<u32>(b"family", b"digest-1").as_deref(),
            Some(&7)
        );
        assert!(
            cache.take::<u32>(b"family", b"digest-1").is_none(),
            "taken values are gone"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let small = Decoded::with_capacity(2);
        for i in 0..100u32 {
            small.remember(&i.to_be_bytes(), b"c", i);
        }
        assert!(small.len() <= SHARDS * 2, "{} entries", small.len());

        let cache = Decoded::default();
        let total = SHARDS * MAX_ENTRIES + 500;
        for i in 0..total {
            let key = (i as u64).to_be_bytes();
            cache
                .get_or_decode(&key, b"v", |b| Ok::<_, ()>(b.len()))
                .unwrap();
        }
        assert!(
            cache.len() <= SHARDS * MAX_ENTRIES,
            "{} entries",
            cache.len()
        );
    }
}
