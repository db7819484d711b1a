//! A store wrapper that forces races instead of hoping for them.

use crate::StorageError;
use crate::store::{Batch, Committed, Mutation, Store, Versioned};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A store that holds the first `armed` commits writing a key containing
/// `needle` until that many have arrived, so racing callers have all
/// loaded the same versions before any of them commits: the race is
/// forced, not hoped for. Pure checks never wait.
pub(crate) struct GatedStore {
    inner: Arc<dyn Store>,
    needle: &'static [u8],
    armed: AtomicUsize,
    barrier: tokio::sync::Barrier,
}

impl GatedStore {
    /// Gate `inner` for races of `racers` callers on keys containing
    /// `needle`; disarmed until [`arm`](Self::arm).
    pub(crate) fn new(inner: Arc<dyn Store>, needle: &'static [u8], racers: usize) -> Arc<Self> {
        Arc::new(Self {
            inner,
            needle,
            armed: AtomicUsize::new(0),
            barrier: tokio::sync::Barrier::new(racers),
        })
    }

    /// Hold the next `n` matching commits (n = the racer count).
    pub(crate) fn arm(&self, n: usize) {
        self.armed.store(n, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        self.inner.get_many(keys).await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        self.inner.scan(prefix, after, limit).await
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        let touches = batch.iter().any(|(key, _, m)| {
            !matches!(m, Mutation::Check)
                && key.windows(self.needle.len()).any(|w| w == self.needle)
        });
        if touches
            && self
                .armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.barrier.wait().await;
        }
        self.inner.commit(batch).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.inner.close().await
    }
}
