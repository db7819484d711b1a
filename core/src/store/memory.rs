//! The in-memory reference backend.

use super::watch::{Notifier, Watch};
use super::{Batch, Committed, Mutation, StorageError, Store, Versioned};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

/// A [`Store`] kept in a `BTreeMap` behind a mutex.
///
/// It is the reference implementation of the contract: the simplest code that
/// meets it, used by unit tests and as a fast store for embedders' tests.
/// Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<Option<State>>,
    notifier: Notifier,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<Vec<u8>, Versioned>,
    /// The last version handed out. One counter is the simplest way to
    /// never repeat a version for a key (deleted keys included), and it
    /// costs no parallelism here: every commit holds the one lock anyway.
    last_version: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(Some(State::default())),
            notifier: Notifier::new(),
        }
    }

    /// Run `f` on the open state. A panic while the lock was held (poison)
    /// or a closed store is a `Backend` error, never a second panic.
    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut guard: MutexGuard<'_, Option<State>> = self
            .state
            .lock()
            .map_err(|_| StorageError::backend("memory store lock poisoned by a panic"))?;
        match guard.as_mut() {
            Some(state) => f(state),
            None => Err(StorageError::closed()),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        self.with_state(|s| Ok(s.entries.get(key).cloned()))
    }

    async fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Versioned>>, StorageError> {
        // One lock: one snapshot.
        self.with_state(|s| Ok(keys.iter().map(|k| s.entries.get(*k).cloned()).collect()))
    }

    async fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StorageError> {
        self.with_state(|s| {
            let start = match after {
                Some(after) if after >= prefix => Bound::Excluded(after),
                _ => Bound::Included(prefix),
            };
            Ok(s.entries
                .range::<[u8], _>((start, Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        })
    }

    async fn commit(&self, batch: Batch) -> Result<Committed, StorageError> {
        let committed = self.with_state(|s| apply(s, &batch))?;
        self.notifier.notify(&batch);
        Ok(committed)
    }

    async fn close(&self) -> Result<(), StorageError> {
        if let Ok(mut guard) = self.state.lock() {
            *guard = None;
        }
        self.notifier.close();
        Ok(())
    }

    async fn watch(&self, prefix: &[u8]) -> Result<Watch, StorageError> {
        self.with_state(|_| Ok(self.notifier.watch(prefix)))
    }
}

/// Check every precondition, then apply every write under the next version;
/// all or nothing.
fn apply(s: &mut State, batch: &Batch) -> Result<Committed, StorageError> {
    for (key, pre, _) in batch.iter() {
        if !pre.holds(s.entries.get(key).map(|v| v.version)) {
            return Err(StorageError::Conflict { key: key.to_vec() });
        }
    }
    if !batch.has_writes() {
        return Ok(Committed::default());
    }
    s.last_version += 1;
    let version = s.last_version;
    for (key, _, mutation) in batch.iter() {
        match mutation {
            Mutation::Put(value) => {
                s.entries.insert(
                    key.to_vec(),
                    Versioned {
                        value: value.clone(),
                        version,
                    },
                );
            }
            Mutation::Delete => {
                s.entries.remove(key);
            }
            Mutation::Check => {}
        }
    }
    Ok(Committed {
        version: Some(version),
    })
}
