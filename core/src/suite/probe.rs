//! A store wrapper for tests and benches that need to see what a library
//! call did to the store: how many reads it made, and which batch it
//! committed.

use crate::StorageError;
use crate::store::{Batch, Committed, Store, Versioned};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Forwards every call to the wrapped store, counting reads (`get`,
/// `get_many`, `scan`) and, once asked with
/// [`record_next`](Self::record_next), keeping a copy of the next batch
/// committed. Costs one atomic operation per call otherwise.
pub struct ProbeStore {
    inner: Arc<dyn Store>,
    reads: AtomicUsize,
    armed: AtomicBool,
    recorded: Mutex<Option<Batch>>,
}

impl ProbeStore {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            reads: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
            recorded: Mutex::new(None),
        })
    }

    /// Reads made through the wrapper so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Keep a copy of the next batch committed through the wrapper.
    pub fn record_next(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The batch kept since [`record_next`](Self::record_next), if one was
    /// committed.
    pub fn recorded(&self) -> Option<Batch> {
        self.recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for ProbeStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        self.count_read();
        self.inner.get(key).await
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        self.count_read();
        self.inner.get_many(keys).await
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        self.count_read();
        self.inner.scan(prefix, after, limit).await
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::SeqCst) {
            *self.recorded.lock().unwrap_or_else(PoisonError::into_inner) = Some(batch.clone());
        }
        self.inner.commit(batch).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.inner.close().await
    }
}
