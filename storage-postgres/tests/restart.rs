//! A PostgreSQL server crashed and restarted under a write load (issue 20,
//! "Bad input and faults"): commits in flight when the server dies answer
//! `Backend` (possibly `CommitOutcomeUnknown`), never `Ok` for a write that
//! was lost and never `Conflict`; the pool reconnects by itself, without
//! restarting the process; afterwards every acknowledged write is there.
//!
//! The cluster is this test's own ([`Cluster::start`]), not the shared one,
//! since it is killed (`pg_ctl stop -m immediate`) half-way.

use keystead::store::{Batch, Precondition, StorageError, Store};
use keystead_postgres::testing::Cluster;
use keystead_postgres::{CommitOutcomeUnknown, PostgresOptions, PostgresStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Concurrent writers, each writing its own keys one after another.
const WRITERS: usize = 16;

/// What one writer saw.
#[derive(Default)]
struct Seen {
    /// Keys acknowledged with `Ok`, with the version they took.
    acknowledged: Vec<(Vec<u8>, u64)>,
    /// Commits answered `Backend` (the write may or may not be there).
    failed: usize,
    /// Of those, the ones whose outcome the adapter called unknown.
    unknown: usize,
    /// Anything else: `Conflict`, `Corrupt`, … — must stay empty.
    wrong: Vec<String>,
    /// Acknowledged commits that started after the restart had finished.
    after_restart: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start().unwrap();
    let store = PostgresStore::connect_with(
        cluster.url(),
        PostgresOptions::default()
            .with_schema("restart")
            .with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let (restarted, stop) = (Arc::clone(&restarted), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut seen = Seen::default();
                // A new key for every attempt, failed ones included: a
                // commit whose outcome is unknown may have applied, and
                // writing its key again would rightly conflict.
                for i in 0u64.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let after = restarted.load(Ordering::Acquire);
                    let key = format!("w{w:02}/{i:06}").into_bytes();
                    let mut batch = Batch::new();
                    batch
                        .put(key.clone(), key.clone(), Precondition::Absent)
                        .unwrap();
                    match store.commit(batch).await {
                        Ok(committed) => {
                            let version = committed.version.expect("a put takes a version");
                            seen.acknowledged.push((key, version));
                            seen.after_restart += usize::from(after);
                        }
                        Err(StorageError::Backend(e)) => {
                            seen.failed += 1;
                            seen.unknown += usize::from(e.is::<CommitOutcomeUnknown>());
                            // While the server is down, connecting fails
                            // at once: don't spin.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(other) => seen.wrong.push(format!("{other:?}")),
                    }
                }
                seen
            })
        })
        .collect();

    // Let the load run, crash the server in the middle of it, start it
    // again, and let the load run on.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart().unwrap();
        cluster
    })
    .await
    .unwrap();
    restarted.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut seen = Vec::new();
    stop.store(true, Ordering::Release);
    for writer in writers {
        seen.push(writer.await.unwrap());
    }

    let wrong: Vec<&String> = seen.iter().flat_map(|s| &s.wrong).collect();
    assert!(
        wrong.is_empty(),
        "only Ok or Backend may come back: {wrong:?}"
    );
    let failed: usize = seen.iter().map(|s| s.failed).sum();
    assert!(
        failed > 0,
        "the restart interrupted no commit: the test tested nothing"
    );
    for (w, s) in seen.iter().enumerate() {
        assert!(
            s.after_restart > 0,
            "writer {w} never committed after the restart: the pool did not reconnect \
             ({} failures)",
            s.failed
        );
    }
    // Every acknowledged write survived the crash, with its value and the
    // version it was acknowledged with.
    let mut acknowledged = 0;
    for s in &seen {
        for (key, version) in &s.acknowledged {
            let got = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged {key:?} is gone"));
            assert_eq!((&got.value, got.version), (key, *version));
            acknowledged += 1;
        }
    }
    let unknown: usize = seen.iter().map(|s| s.unknown).sum();
    eprintln!(
        "{acknowledged} acknowledged commits all present; {failed} answered Backend \
         ({unknown} of them CommitOutcomeUnknown)"
    );
    store.close().await.unwrap();
    drop(cluster);
}
