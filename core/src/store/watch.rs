//! Change notification: how a subscriber learns that a commit may have
//! written keys it follows, without polling the data itself.
//!
//! A [`Watch`] is a *hint*, not a data feed. Its contract:
//!
//! * **No missed wake-up.** If a commit that writes (puts or deletes) a key
//!   under the watched prefix returns `Ok` after [`Store::watch`] returned,
//!   then a later [`Watch::changed`] call returns — promptly for in-process
//!   commits, within the backend's poll interval for commits made by another
//!   process.
//! * **Spurious wake-ups are allowed** and several commits may coalesce into
//!   one wake-up. The subscriber re-reads what it follows after each one.
//!
//! So the pattern that never misses an event is: create the watch, then scan
//! from your cursor and deliver, then `changed().await`, then scan again —
//! the event outbox (a per-group sequence of event records) is the source of
//! truth and the watch only says when to look.
//!
//! Backends provide it in the way that reaches every process that can commit:
//! in-process fan-out ([`Notifier`]) for the embedded stores, plus polling of
//! the commit counter for SQLite files shared between processes, and
//! `LISTEN/NOTIFY` for PostgreSQL. [`Watch::polling`] is the fallback that
//! any backend gets by default.
//!
//! [`Store::watch`]: super::Store::watch

use super::{Batch, Mutation, StorageError};
use futures::channel::mpsc;
use futures::stream::{BoxStream, StreamExt};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A subscription to changes under one key prefix; see the
/// [module docs](self).
pub struct Watch {
    wakeups: BoxStream<'static, Result<(), StorageError>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

impl Watch {
    /// A watch driven by any stream of wake-ups (each `Ok(())` is one).
    /// Backends build theirs with this.
    pub fn from_stream(wakeups: BoxStream<'static, Result<(), StorageError>>) -> Self {
        Self { wakeups }
    }

    /// A watch that wakes every `interval`, whatever happened: correct for
    /// any backend (the subscriber re-reads), at the cost of latency and
    /// reads. The timer runs on the `blocking` thread pool, so it needs no
    /// particular async runtime.
    pub fn polling(interval: Duration) -> Self {
        let ticks = futures::stream::unfold((), move |()| async move {
            blocking::unblock(move || std::thread::sleep(interval)).await;
            Some((Ok(()), ()))
        });
        Self::from_stream(ticks.boxed())
    }

    /// Wake on whichever of `self` and `other` fires first.
    #[must_use]
    pub fn merge(self, other: Watch) -> Self {
        Self::from_stream(futures::stream::select(self.wakeups, other.wakeups).boxed())
    }

    /// Wait for the next wake-up. Fails with [`StorageError::Backend`] if the
    /// backend can no longer deliver notifications (store closed, connection
    /// lost); the subscriber should then re-open its watch and re-read.
    pub async fn changed(&mut self) -> Result<(), StorageError> {
        match self.wakeups.next().await {
            Some(result) => result,
            None => Err(StorageError::closed()),
        }
    }
}

/// A registered watch: its prefix and where its wake-ups go.
type Watcher = (Vec<u8>, mpsc::Sender<Result<(), StorageError>>);

/// In-process fan-out of commit notifications to [`Watch`]es.
///
/// A backend calls [`Notifier::notify`] after every successful commit; each
/// watch whose prefix starts any written key gets a wake-up. Wake-ups
/// coalesce: a watch that has not consumed its last one is not queued
/// another, so a slow subscriber costs no memory.
#[derive(Debug, Default)]
pub struct Notifier {
    watchers: Mutex<Vec<Watcher>>,
}

impl Notifier {
    /// An empty notifier.
    pub fn new() -> Self {
        Self::default()
    }

    /// A watch on keys starting with `prefix`.
    pub fn watch(&self, prefix: &[u8]) -> Watch {
        // Capacity 0 gives each sender one guaranteed slot: one pending
        // wake-up per watch, the rest coalesce.
        let (tx, rx) = mpsc::channel(0);
        self.lock().push((prefix.to_vec(), tx));
        Watch::from_stream(rx.boxed())
    }

    /// Wake every watch whose prefix covers a key `batch` wrote, and forget
    /// watches that were dropped.
    pub fn notify(&self, batch: &Batch) {
        let written: Vec<&[u8]> = batch
            .iter()
            .filter(|(_, _, m)| !matches!(m, Mutation::Check))
            .map(|(key, _, _)| key)
            .collect();
        if written.is_empty() {
            return;
        }
        self.lock().retain_mut(|(prefix, tx)| {
            if written.iter().any(|key| key.starts_with(prefix)) {
                // A full channel already holds a pending wake-up.
                match tx.try_send(Ok(())) {
                    Ok(()) => true,
                    Err(e) => !e.is_disconnected(),
                }
            } else {
                !tx.is_closed()
            }
        });
    }

    /// Wake every watch, whatever its prefix: for notifications that do not
    /// say which keys changed (another process's commit, a reconnect after
    /// which commits may have been missed).
    pub fn notify_all(&self) {
        self.lock().retain_mut(|(_, tx)| match tx.try_send(Ok(())) {
            Ok(()) => true,
            Err(e) => !e.is_disconnected(),
        });
    }

    /// End every watch with an error (the store is closing).
    pub fn close(&self) {
        for (_, mut tx) in self.lock().drain(..) {
            let _ = tx.try_send(Err(StorageError::closed()));
            tx.close_channel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
