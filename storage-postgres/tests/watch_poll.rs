//! The watch guarantee without notifications: a commit whose `NOTIFY` is
//! lost still wakes watches within the poll interval. Its own test binary,
//! so its throwaway cluster has no other writers: on an idle cluster only
//! the commit can change the snapshot the listener polls, so a wake-up in
//! time is the poll finding that commit, not another test's traffic.

use keystead::store::{Batch, Precondition, Store};
use keystead_postgres::testing::server_url;
use keystead_postgres::{PostgresOptions, PostgresStore};
use std::time::{Duration, Instant};

fn put(key: &[u8], value: &[u8], pre: Precondition) -> Batch {
    let mut batch = Batch::new();
    batch.put(key.to_vec(), value.to_vec(), pre).unwrap();
    batch
}

async fn open(schema: &str, options: PostgresOptions) -> PostgresStore {
    PostgresStore::connect_with(&server_url().unwrap(), options.with_schema(schema))
        .await
        .unwrap()
}

/// A commit whose `NOTIFY` is never sent (a writer that crashed between
/// `COMMIT` and `NOTIFY`, simulated by the test hook) still reaches a watch
/// in another instance through the listener's snapshot poll, within about
/// one poll interval — and only through it: a second watcher that polls
/// hourly stays asleep, which shows that no notification was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_notification_is_lost_still_wakes_watches_within_the_poll_interval() {
    let schema = "lost_notify";
    let poll = Duration::from_millis(300);
    let polling = open(
        schema,
        PostgresOptions::default().with_watch_poll_interval(poll),
    )
    .await;
    let deaf = open(
        schema,
        PostgresOptions::default().with_watch_poll_interval(Duration::from_secs(3600)),
    )
    .await;
    let writer = open(schema, PostgresOptions::default()).await;
    keystead_postgres::testing::suppress_notifications(&writer, true);
    let mut watch = polling.watch(b"outbox/").await.unwrap();
    let mut unpolled = deaf.watch(b"outbox/").await.unwrap();
    for w in [&mut watch, &mut unpolled] {
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .expect("the listener came up")
            .unwrap();
    }
    // Let the polling listener take a few readings of an idle database, so
    // a leftover wake-up from its start cannot pass for the commit's.
    tokio::time::sleep(poll * 3).await;
    let _ = futures::FutureExt::now_or_never(watch.changed());
    let committed = Instant::now();
    writer
        .commit(put(b"outbox/1", b"event", Precondition::Absent))
        .await
        .unwrap();
    tokio::time::timeout(poll * 2 + Duration::from_millis(500), watch.changed())
        .await
        .expect("the poll found the un-notified commit within the interval")
        .unwrap();
    assert!(committed.elapsed() < poll * 2 + Duration::from_millis(500));
    assert!(
        tokio::time::timeout(Duration::from_secs(2), unpolled.changed())
            .await
            .is_err(),
        "a watch woke although no NOTIFY should have been sent"
    );
    // With notifications back on, the hourly watcher wakes by NOTIFY.
    keystead_postgres::testing::suppress_notifications(&writer, false);
    writer
        .commit(put(b"outbox/2", b"event", Precondition::Absent))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), unpolled.changed())
        .await
        .expect("notified")
        .unwrap();
}
