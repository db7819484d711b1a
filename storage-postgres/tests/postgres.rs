//! PostgreSQL-specific behaviour beyond the conformance suite: bad input and
//! failures (unreachable server, pool exhaustion, dropped connections, an
//! unknown commit outcome, corrupt rows, a newer schema), concurrent
//! migrations, the migration from schema version 1, check-only snapshots,
//! races across two pools, disjoint-key commits that never wait for each
//! other and serialization failures retried inside the adapter — the last
//! two at both isolation levels.

use keystead::store::{Batch, Precondition, StorageError, Store};
use keystead_postgres::testing::{raw_client, server_url};
use keystead_postgres::{CommitOutcomeUnknown, Isolation, PostgresOptions, PostgresStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn put(key: &[u8], value: &[u8], pre: Precondition) -> Batch {
    let mut batch = Batch::new();
    batch.put(key.to_vec(), value.to_vec(), pre).unwrap();
    batch
}

/// A schema (and application name) no other test or run uses.
fn fresh(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "kt_{name}_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with one more connection parameter, in either syntax.
fn with_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        let value: String = value
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("{url}{sep}{key}={value}")
    } else {
        format!("{url} {key}='{value}'")
    }
}

fn backend_message(result: Result<impl std::fmt::Debug, StorageError>) -> String {
    match result {
        Err(StorageError::Backend(e)) => e.to_string(),
        other => panic!("expected a Backend error, got {other:?}"),
    }
}

async fn open(schema: &str, options: PostgresOptions) -> PostgresStore {
    PostgresStore::connect_with(&server_url().unwrap(), options.with_schema(schema))
        .await
        .unwrap()
}

/// Poll `sql` (one bigint column) until it returns at least 1.
async fn wait_for(raw: &tokio_postgres::Client, sql: &str, app: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = raw.query_one(sql, &[&app]).await.unwrap().get(0);
        if n > 0 {
            return;
        }
        if Instant::now() >= deadline {
            let rows = raw.query("SELECT coalesce(state,''), coalesce(wait_event_type,''), coalesce(wait_event,''), query FROM pg_stat_activity WHERE application_name = $1", &[&app]).await.unwrap();
            let dump: Vec<(String, String, String, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            panic!("timed out waiting for: {sql}; the store's sessions: {dump:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WAITING_ON_LOCK: &str = "SELECT count(*) FROM pg_stat_activity
     WHERE application_name = $1 AND wait_event_type = 'Lock'";

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_a_backend_error_naming_the_cause() {
    let options = PostgresOptions::default().with_connect_timeout(Duration::from_secs(3));
    // Port 1 on loopback: nothing listens there.
    let message = backend_message(
        PostgresStore::connect_with(
            "host=127.0.0.1 port=1 user=keystead dbname=keystead",
            options,
        )
        .await,
    );
    assert!(
        message.contains("cannot connect to PostgreSQL") && message.contains("refused"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_connection_string_and_options_are_refused() {
    let message = backend_message(PostgresStore::connect("postgres://[::1").await);
    assert!(
        message.contains("invalid PostgreSQL connection string"),
        "{message}"
    );
    let url = server_url().unwrap();
    let message = backend_message(
        PostgresStore::connect_with(&url, PostgresOptions::default().with_pool_size(0)).await,
    );
    assert!(message.contains("pool_size"), "{message}");
    let message = backend_message(
        PostgresStore::connect_with(&url, PostgresOptions::default().with_schema("")).await,
    );
    assert!(message.contains("schema name"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_exhaustion_is_a_backend_error() {
    let schema = fresh("pool");
    let app = fresh("pool_app");
    let url = with_param(&server_url().unwrap(), "application_name", &app);
    let store = PostgresStore::connect_with(
        &url,
        PostgresOptions::default()
            .with_schema(&schema)
            .with_pool_size(1)
            .with_wait_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    // Hold the row of `k` so a commit writing it keeps the store's only
    // connection busy.
    store
        .commit(put(b"k", b"old", Precondition::Absent))
        .await
        .unwrap();
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    raw.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM \"{schema}\".kv WHERE key = 'k' FOR UPDATE"
    ))
    .await
    .unwrap();
    let committer = tokio::spawn({
        let store = store.clone();
        async move { store.commit(put(b"k", b"v", Precondition::Any)).await }
    });
    wait_for(&raw, WAITING_ON_LOCK, &app).await;
    let message = backend_message(store.get(b"k").await);
    assert!(message.contains("pool exhausted"), "{message}");
    raw.batch_execute("ROLLBACK").await.unwrap();
    committer.await.unwrap().unwrap();
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b"v");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_commit_applies_nothing() {
    let schema = fresh("dropped");
    let app = fresh("dropped_app");
    let url = with_param(&server_url().unwrap(), "application_name", &app);
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema))
        .await
        .unwrap();
    // Hold the row of `b` so the commit below stops mid-transaction, after
    // it read `a` and before it wrote anything it can keep.
    store
        .commit(put(b"b", b"old", Precondition::Absent))
        .await
        .unwrap();
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    raw.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM \"{schema}\".kv WHERE key = 'b' FOR UPDATE"
    ))
    .await
    .unwrap();
    let committer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut batch = put(b"a", b"1", Precondition::Absent);
            batch
                .put(b"b".to_vec(), b"2".to_vec(), Precondition::Any)
                .unwrap();
            store.commit(batch).await
        }
    });
    // Polled from another connection: `raw` is inside a transaction, where
    // pg_stat_activity stays the snapshot its first read took.
    let other = raw_client(&server_url().unwrap()).await.unwrap();
    wait_for(&other, WAITING_ON_LOCK, &app).await;
    other
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    let result = committer.await.unwrap();
    match &result {
        Err(StorageError::Backend(e)) => {
            assert!(
                !e.is::<CommitOutcomeUnknown>(),
                "COMMIT was never sent: {e}"
            );
            let message = e.to_string();
            assert!(message.contains("terminating connection"), "{message}");
        }
        other => panic!("expected a Backend error, got {other:?}"),
    }
    raw.batch_execute("ROLLBACK").await.unwrap();
    // Nothing of the batch was applied, and the store works on a new
    // connection.
    assert_eq!(store.get(b"a").await.unwrap(), None);
    assert_eq!(store.get(b"b").await.unwrap().unwrap().value, b"old");
    let again = store
        .commit(put(b"a", b"again", Precondition::Absent))
        .await
        .unwrap();
    let got = store.get(b"a").await.unwrap().unwrap();
    assert_eq!(
        (got.value.as_slice(), Some(got.version)),
        (b"again".as_slice(), again.version)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_during_commit_reports_an_unknown_outcome() {
    let schema = fresh("unknown");
    let app = fresh("unknown_app");
    let url = with_param(&server_url().unwrap(), "application_name", &app);
    let store = PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema))
        .await
        .unwrap();
    // A deferred trigger makes COMMIT itself slow, so the connection can be
    // cut while COMMIT is in flight.
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    raw.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".slow_commit() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON \"{schema}\".kv
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"{schema}\".slow_commit();"
    ))
    .await
    .unwrap();
    let committer = tokio::spawn({
        let store = store.clone();
        async move { store.commit(put(b"k", b"v", Precondition::Absent)).await }
    });
    wait_for(
        &raw,
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
        &app,
    )
    .await;
    raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&app],
    )
    .await
    .unwrap();
    match committer.await.unwrap() {
        Err(StorageError::Backend(e)) => {
            let unknown = e
                .downcast_ref::<CommitOutcomeUnknown>()
                .unwrap_or_else(|| panic!("expected CommitOutcomeUnknown, got {e}"));
            assert!(unknown.to_string().contains("may or may not"), "{unknown}");
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

/// A `COMMIT` the server answers with an `ERROR` rolled the batch back: a
/// definite failure, not an unknown outcome, and nothing is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_refused_by_the_server_is_a_definite_failure() {
    let schema = fresh("refused");
    let store = open(&schema, PostgresOptions::default()).await;
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    raw.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".refuse() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
         CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON \"{schema}\".kv
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"{schema}\".refuse();"
    ))
    .await
    .unwrap();
    match store.commit(put(b"k", b"v", Precondition::Absent)).await {
        Err(StorageError::Backend(e)) => {
            assert!(!e.is::<CommitOutcomeUnknown>(), "{e}");
            assert!(e.to_string().contains("refused at commit"), "{e}");
        }
        other => panic!("expected a Backend error, got {other:?}"),
    }
    assert_eq!(store.get(b"k").await.unwrap(), None);
    raw.batch_execute(&format!("DROP TRIGGER refuse ON \"{schema}\".kv"))
        .await
        .unwrap();
    // The rolled-back commit left no trace: `Absent` still holds.
    let committed = store
        .commit(put(b"k", b"v", Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(
        Some(store.get(b"k").await.unwrap().unwrap().version),
        committed.version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_rows_are_corrupt_with_the_key() {
    let schema = fresh("corrupt");
    let store = open(&schema, PostgresOptions::default()).await;
    store
        .commit(put(b"good", b"v", Precondition::Any))
        .await
        .unwrap();
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    let table = format!("\"{schema}\".kv");
    raw.batch_execute(&format!(
        "ALTER TABLE {table} ALTER COLUMN value DROP NOT NULL"
    ))
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} (key, value, version) VALUES ($1, $2, $3)");
    let empty: &[u8] = b"";
    raw.execute(&insert, &[&b"bad-version".as_slice(), &empty, &-4i64])
        .await
        .unwrap();
    raw.execute(&insert, &[&b"bad-zero".as_slice(), &empty, &0i64])
        .await
        .unwrap();
    raw.execute(&insert, &[&b"bad-value".as_slice(), &None::<&[u8]>, &3i64])
        .await
        .unwrap();
    for key in [b"bad-version".as_slice(), b"bad-zero", b"bad-value"] {
        match store.get(key).await {
            Err(StorageError::Corrupt { key: named, .. }) => assert_eq!(named, key),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    match store.scan(b"bad", None, 10).await {
        Err(StorageError::Corrupt { key, .. }) => assert!(key.starts_with(b"bad")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A commit whose precondition reads a corrupt version fails the same way,
    // writing nothing; so does a check-only batch.
    let mut batch = put(b"another", b"x", Precondition::Absent);
    batch
        .check(b"bad-version".to_vec(), Precondition::Version(1))
        .unwrap();
    assert!(matches!(
        store.commit(batch).await,
        Err(StorageError::Corrupt { key, .. }) if key == b"bad-version"
    ));
    let mut checks = Batch::new();
    checks
        .check(b"bad-zero".to_vec(), Precondition::Absent)
        .unwrap();
    assert!(matches!(
        store.commit(checks).await,
        Err(StorageError::Corrupt { key, .. }) if key == b"bad-zero"
    ));
    assert_eq!(store.get(b"another").await.unwrap(), None);
    let good = store.get(b"good").await.unwrap().unwrap();
    assert_eq!(good.value, b"v");
    // The store still commits, with a version above the good key's.
    let next = store
        .commit(put(b"next", b"", Precondition::Absent))
        .await
        .unwrap()
        .version
        .unwrap();
    assert!(next > good.version, "{next} after {}", good.version);
    assert_eq!(store.get(b"next").await.unwrap().unwrap().version, next);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_is_refused() {
    let schema = fresh("newer");
    open(&schema, PostgresOptions::default())
        .await
        .close()
        .await
        .unwrap();
    let raw = raw_client(&server_url().unwrap()).await.unwrap();
    raw.execute(
        &format!(
            "INSERT INTO \"{schema}\".keystead_schema (version, description) VALUES (1000000, 'from the future')"
        ),
        &[],
    )
    .await
    .unwrap();
    let message = backend_message(
        PostgresStore::connect_with(
            &server_url().unwrap(),
            PostgresOptions::default().with_schema(&schema),
        )
        .await,
    );
    assert!(message.contains("newer"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_connects_migrate_once() {
    let schema = fresh("migrate");
    let url = server_url().unwrap();
    let connects: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            let schema = schema.clone();
            tokio::spawn(async move {
                PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(schema))
                    .await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(connect.await.unwrap().unwrap());
    }
    let raw = raw_client(&url).await.unwrap();
    let applied: i64 = raw
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".keystead_schema"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, 2, "each migration recorded once");
    let committed = stores[0]
        .commit(put(b"k", b"v", Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(
        Some(stores[5].get(b"k").await.unwrap().unwrap().version),
        committed.version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asynchronous_commit_sessions_are_refused_unless_allowed() {
    let schema = fresh("async_commit");
    let url = with_param(
        &server_url().unwrap(),
        "options",
        "-c synchronous_commit=off",
    );
    let message = backend_message(
        PostgresStore::connect_with(&url, PostgresOptions::default().with_schema(&schema)).await,
    );
    assert!(message.contains("synchronous_commit"), "{message}");
    let options = PostgresOptions {
        allow_asynchronous_commit: true,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect_with(&url, options.with_schema(&schema))
        .await
        .unwrap();
    store
        .commit(put(b"k", b"v", Precondition::Absent))
        .await
        .unwrap();
}

/// Two keys always written together keep equal versions; a check-only batch
/// that would only pass on a torn read (one key old, the other new) never
/// succeeds, while a consistent one often does.
#[tokio::test(flavor = "multi_thread")]
async fn check_only_batches_read_one_snapshot() {
    let schema = fresh("snapshot");
    let store = Arc::new(open(&schema, PostgresOptions::default()).await);
    let mut both = Batch::new();
    both.put(b"a".to_vec(), vec![0], Precondition::Absent)
        .unwrap();
    both.put(b"b".to_vec(), vec![0], Precondition::Absent)
        .unwrap();
    let first = store.commit(both).await.unwrap().version.unwrap();
    let writer = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let mut v = first;
            for _ in 0..150 {
                let mut both = Batch::new();
                both.put(b"a".to_vec(), vec![0], Precondition::Version(v))
                    .unwrap();
                both.put(b"b".to_vec(), vec![0], Precondition::Version(v))
                    .unwrap();
                let next = store.commit(both).await.unwrap().version.unwrap();
                assert!(next > v, "version {next} after {v}");
                v = next;
            }
            v
        }
    });
    let mut consistent_ok = 0u32;
    let mut previous = first;
    while !writer.is_finished() {
        let v = store.get(b"a").await.unwrap().unwrap().version;
        // Both keys always share a version, so any check naming two
        // different versions can only pass on a torn read. Probe the likely
        // ones: `b` one commit ahead (the next number of this schema's only
        // writer), and `b` new with `a` at the version read before.
        let mut probes = vec![(v, v + 1)];
        if previous != v {
            probes.push((previous, v));
        }
        previous = v;
        for (a, b) in probes {
            let mut torn = Batch::new();
            torn.check(b"a".to_vec(), Precondition::Version(a)).unwrap();
            torn.check(b"b".to_vec(), Precondition::Version(b)).unwrap();
            assert!(
                matches!(store.commit(torn).await, Err(StorageError::Conflict { .. })),
                "a check-only batch passed on a torn read (a {a}, b {b})"
            );
        }
        let mut same = Batch::new();
        same.check(b"a".to_vec(), Precondition::Version(v)).unwrap();
        same.check(b"b".to_vec(), Precondition::Version(v)).unwrap();
        match store.commit(same).await {
            Ok(_) => consistent_ok += 1,
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let last = writer.await.unwrap();
    assert!(consistent_ok > 0, "consistent checks never passed");
    // Check-only batches wrote nothing: both keys are at the writer's last
    // commit.
    assert_eq!(store.get(b"a").await.unwrap().unwrap().version, last);
    assert_eq!(store.get(b"b").await.unwrap().unwrap().version, last);
}

/// Two stores (two pools, as two instances of an embedder's backend would
/// have) race `Absent` claims and compare-and-swap increments.
#[tokio::test(flavor = "multi_thread")]
async fn two_pools_race_with_one_winner_and_no_lost_increment() {
    const ROUNDS: usize = 10;
    const RACERS: u8 = 16;
    const WRITERS: usize = 4;
    const INCREMENTS: u64 = 25;
    let schema = fresh("pools");
    let stores = [
        Arc::new(open(&schema, PostgresOptions::default()).await),
        Arc::new(open(&schema, PostgresOptions::default()).await),
    ];
    for round in 0..ROUNDS {
        let key = format!("unique/{round}").into_bytes();
        let tasks: Vec<_> = (0..RACERS)
            .map(|i| {
                let store = Arc::clone(&stores[usize::from(i % 2)]);
                let key = key.clone();
                tokio::spawn(async move {
                    match store.commit(put(&key, &[i], Precondition::Absent)).await {
                        Ok(_) => Some(i),
                        Err(StorageError::Conflict { .. }) => None,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        assert_eq!(
            stores[round % 2].get(&key).await.unwrap().unwrap().value,
            vec![winners[0]]
        );
    }
    let tasks: Vec<_> = (0..2 * WRITERS)
        .map(|i| {
            let store = Arc::clone(&stores[i % 2]);
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    keystead::store::conformance::increment(&*store, b"counter").await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let expected = 2 * WRITERS as u64 * INCREMENTS;
    for store in &stores {
        assert_eq!(
            keystead::store::conformance::counter(&**store, b"counter").await,
            expected
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemas_isolate_stores_in_one_database() {
    let one = open(&fresh("iso_one"), PostgresOptions::default()).await;
    let two = open(&fresh("iso_two"), PostgresOptions::default()).await;
    one.commit(put(b"k", b"one", Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(two.get(b"k").await.unwrap(), None);
    let committed = two
        .commit(put(b"k", b"two", Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(one.get(b"k").await.unwrap().unwrap().value, b"one");
    assert_eq!(
        Some(two.get(b"k").await.unwrap().unwrap().version),
        committed.version
    );
}

/// A commit through one pool (standing in for another instance of the
/// embedder's backend) wakes a watch held through another, by `LISTEN/NOTIFY`:
/// the watcher's snapshot poll is an hour apart, so after the listener's
/// first "now listening" wake-up only a notification — sent after the
/// writer's `COMMIT` — can wake the watch again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_for_a_commit_made_by_another_instance() {
    let schema = fresh("listen");
    let watcher = open(
        &schema,
        PostgresOptions::default().with_watch_poll_interval(Duration::from_secs(3600)),
    )
    .await;
    let writer = open(&schema, PostgresOptions::default()).await;
    let mut watch = watcher.watch(b"outbox/").await.unwrap();
    // The listener wakes every watch once LISTEN is in effect (the replay
    // point for anything committed before it).
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the listener came up")
        .unwrap();
    writer
        .commit(put(b"outbox/1", b"event", Precondition::Absent))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .expect("the other instance's commit was notified")
        .unwrap();
    // A closed store ends its watches.
    watcher.close().await.unwrap();
    assert!(watch.changed().await.is_err());
}

/// A compare-and-swap that is already doomed fails at once instead of
/// queueing behind the key's current writer: while a commit on `h` is held
/// open with `h`'s lock (its `COMMIT` stalled in a deferred trigger), a
/// `Version` precondition older than `h`'s current version and an `Absent`
/// on the existing `h` both return `Conflict` within a second, whereas a
/// CAS with the current version does wait (it could still win) and wins
/// once the holder is cancelled — the authoritative check under the lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_doomed_compare_and_swap_fails_without_waiting_for_the_key() {
    for isolation in BOTH {
        let schema = fresh("doomed");
        let app = fresh("doomed_app");
        let url = with_param(&server_url().unwrap(), "application_name", &app);
        let options = PostgresOptions::default()
            .with_schema(&schema)
            .isolation(isolation);
        let store = PostgresStore::connect_with(&url, options).await.unwrap();
        let raw = raw_client(&server_url().unwrap()).await.unwrap();
        raw.batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".stall() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER stall AFTER INSERT OR UPDATE ON \"{schema}\".kv
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                 WHEN (NEW.value = 'stall') EXECUTE FUNCTION \"{schema}\".stall();"
        ))
        .await
        .unwrap();
        let old = store
            .commit(put(b"h", b"0", Precondition::Absent))
            .await
            .unwrap()
            .version
            .unwrap();
        let current = store
            .commit(put(b"h", b"1", Precondition::Version(old)))
            .await
            .unwrap()
            .version
            .unwrap();
        let holder = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .commit(put(b"h", b"stall", Precondition::Version(current)))
                    .await
            }
        });
        wait_for(
            &raw,
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
            &app,
        )
        .await;
        for doomed in [Precondition::Version(old), Precondition::Absent] {
            let outcome = tokio::time::timeout(
                Duration::from_secs(1),
                store.commit(put(b"h", b"2", doomed)),
            )
            .await
            .unwrap_or_else(|_| panic!("{isolation:?}: {doomed:?} waited for the holder"));
            assert!(
                matches!(&outcome, Err(StorageError::Conflict { key }) if key == b"h"),
                "{isolation:?}: {doomed:?}: {outcome:?}"
            );
        }
        let waiter = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .commit(put(b"h", b"3", Precondition::Version(current)))
                    .await
            }
        });
        wait_for(&raw, WAITING_ON_LOCK, &app).await;
        assert!(!waiter.is_finished(), "{isolation:?}: a live CAS waits");
        raw.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
            &[&app],
        )
        .await
        .unwrap();
        assert!(holder.await.unwrap().is_err(), "{isolation:?}");
        let won = waiter.await.unwrap().unwrap().version.unwrap();
        let got = store.get(b"h").await.unwrap().unwrap();
        assert_eq!((got.value.as_slice(), got.version), (b"3".as_slice(), won));
        store.close().await.unwrap();
    }
}

/// `watch_poll_interval` zero would spin the listener: refused.
#[tokio::test]
async fn a_zero_watch_poll_interval_is_refused() {
    let result = PostgresStore::connect_with(
        &server_url().unwrap(),
        PostgresOptions::default().with_watch_poll_interval(Duration::ZERO),
    )
    .await;
    assert!(backend_message(result).contains("watch_poll_interval"));
}

const BOTH: [Isolation; 2] = [Isolation::ReadCommitted, Isolation::Serializable];

/// One store transaction is held open on key `a` — its `COMMIT` stalls in a
/// deferred trigger, with every lock it took still held — while commits on
/// other keys (with `Absent` preconditions, one a multi-key batch) complete
/// at once. A commit on `a` itself waits, which shows the holder really
/// holds `a`; once the holder is cancelled it goes through. With a
/// store-wide commit lock (the old counter row) the other commits would
/// wait out the holder.
/// A commit of `a` (value `stall`) that stalls inside its `COMMIT` for a
/// minute — a deferred trigger sleeps — holding `a`'s lock meanwhile;
/// returned once it is stalled there. Cancel it with `pg_cancel_backend`.
async fn hold_key_a(
    store: &PostgresStore,
    raw: &tokio_postgres::Client,
    schema: &str,
    app: &str,
) -> tokio::task::JoinHandle<Result<keystead::store::Committed, StorageError>> {
    raw.batch_execute(&format!(
        "CREATE FUNCTION \"{schema}\".stall() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER stall AFTER INSERT OR UPDATE ON \"{schema}\".kv
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
             WHEN (NEW.value = 'stall') EXECUTE FUNCTION \"{schema}\".stall();"
    ))
    .await
    .unwrap();
    let holder = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .commit(put(b"a", b"stall", Precondition::Absent))
                .await
        }
    });
    wait_for(
        raw,
        "SELECT count(*) FROM pg_stat_activity
         WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
        app,
    )
    .await;
    holder
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_held_open_on_one_key_never_delays_commits_on_others() {
    for isolation in BOTH {
        let schema = fresh("held");
        let app = fresh("held_app");
        let url = with_param(&server_url().unwrap(), "application_name", &app);
        let options = PostgresOptions::default()
            .with_schema(&schema)
            .isolation(isolation);
        let store = PostgresStore::connect_with(&url, options).await.unwrap();
        let raw = raw_client(&server_url().unwrap()).await.unwrap();
        let holder = hold_key_a(&store, &raw, &schema, &app).await;
        let started = Instant::now();
        let mut batch = put(b"c", b"1", Precondition::Absent);
        batch
            .put(b"d".to_vec(), b"1".to_vec(), Precondition::Any)
            .unwrap()
            .check(b"e".to_vec(), Precondition::Absent)
            .unwrap();
        for batch in [put(b"b", b"1", Precondition::Absent), batch] {
            tokio::time::timeout(Duration::from_secs(10), store.commit(batch))
                .await
                .unwrap_or_else(|_| {
                    panic!("{isolation:?}: a disjoint commit waited for the holder")
                })
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{isolation:?}: {:?}",
            started.elapsed()
        );
        assert!(
            !holder.is_finished(),
            "{isolation:?}: the holder still holds `a`"
        );
        let waiter = tokio::spawn({
            let store = store.clone();
            async move { store.commit(put(b"a", b"after", Precondition::Any)).await }
        });
        wait_for(&raw, WAITING_ON_LOCK, &app).await;
        assert!(
            !waiter.is_finished(),
            "{isolation:?}: a commit on `a` waits"
        );
        raw.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
            &[&app],
        )
        .await
        .unwrap();
        match holder.await.unwrap() {
            Err(StorageError::Backend(e)) => assert!(!e.is::<CommitOutcomeUnknown>(), "{e}"),
            other => panic!("{isolation:?}: expected the cancelled holder to fail, got {other:?}"),
        }
        let after = waiter.await.unwrap().unwrap().version.unwrap();
        let got = store.get(b"a").await.unwrap().unwrap();
        assert_eq!(
            (got.value.as_slice(), got.version),
            (b"after".as_slice(), after)
        );
        store.close().await.unwrap();
    }
}

/// Serialization failures (40001) are retried inside the adapter, whether a
/// statement or the `COMMIT` reports them: a trigger injects a given number
/// of them. Within the retry budget the commit succeeds once; past it the
/// caller gets `Backend` — never `Conflict` — and nothing is applied.
#[tokio::test(flavor = "multi_thread")]
async fn serialization_failures_are_retried_then_reported_as_backend() {
    for isolation in BOTH {
        for deferred in [false, true] {
            let schema = fresh("retry");
            let options = PostgresOptions::default()
                .isolation(isolation)
                .with_serialization_retries(3);
            let store = open(&schema, options).await;
            let raw = raw_client(&server_url().unwrap()).await.unwrap();
            let timing = if deferred {
                "CONSTRAINT TRIGGER inject AFTER INSERT ON \"{schema}\".kv DEFERRABLE INITIALLY DEFERRED"
            } else {
                "TRIGGER inject AFTER INSERT ON \"{schema}\".kv"
            }
            .replace("{schema}", &schema);
            // A sequence counts attempts: unlike a table, it is not rolled
            // back with the failing transaction.
            raw.batch_execute(&format!(
                "CREATE SEQUENCE \"{schema}\".attempts;
                 CREATE TABLE \"{schema}\".failing (n BIGINT NOT NULL);
                 INSERT INTO \"{schema}\".failing VALUES (3);
                 CREATE FUNCTION \"{schema}\".inject() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     IF nextval('\"{schema}\".attempts') <= (SELECT n FROM \"{schema}\".failing) THEN
                         RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure';
                     END IF;
                     RETURN NULL;
                 END $$;
                 CREATE {timing} FOR EACH ROW EXECUTE FUNCTION \"{schema}\".inject();"
            ))
            .await
            .unwrap();
            let attempts = format!("SELECT last_value FROM \"{schema}\".attempts");
            let case = format!("{isolation:?}, deferred {deferred}");
            // Three failures, three retries: the fourth attempt commits.
            let committed = store
                .commit(put(b"k", b"v", Precondition::Absent))
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            let last: i64 = raw.query_one(&attempts, &[]).await.unwrap().get(0);
            assert_eq!(last, 4, "{case}");
            assert_eq!(
                Some(store.get(b"k").await.unwrap().unwrap().version),
                committed.version
            );
            // Failing for ever: four attempts, then `Backend`, nothing applied.
            raw.batch_execute(&format!("UPDATE \"{schema}\".failing SET n = 1000"))
                .await
                .unwrap();
            let message =
                backend_message(store.commit(put(b"j", b"v", Precondition::Absent)).await);
            assert!(message.contains("giving up"), "{case}: {message}");
            let last: i64 = raw.query_one(&attempts, &[]).await.unwrap().get(0);
            assert_eq!(last, 8, "{case}");
            assert_eq!(store.get(b"j").await.unwrap(), None, "{case}");
            // A genuine precondition failure is still `Conflict`.
            assert!(matches!(
                store.commit(put(b"k", b"w", Precondition::Absent)).await,
                Err(StorageError::Conflict { key }) if key == b"k"
            ));
            store.close().await.unwrap();
        }
    }
}

/// Fill `fixture` (`{schema}`: the quoted schema, `{s}`: it and a dot).
fn fixture(sql: &str, schema: &str) -> String {
    let quoted = format!("\"{schema}\"");
    sql.replace("{schema}", &quoted)
        .replace("{s}", &format!("{quoted}."))
}

/// A schema written by the previous release (version 1: a commit counter
/// row) is migrated on connect: every key keeps its value and version, the
/// counter is gone, and every new write — to a kept key, a new key or one
/// the old release deleted — gets a version above every number the old
/// release handed out.
#[tokio::test(flavor = "multi_thread")]
async fn schema_version_1_migrates_keeping_every_version() {
    const OLD: &str = include_str!("fixtures/schema_v1.sql");
    let url = server_url().unwrap();
    let raw = raw_client(&url).await.unwrap();
    for (isolation, bump_a) in [
        (Isolation::ReadCommitted, false),
        (Isolation::Serializable, true),
    ] {
        let schema = fresh("v1");
        raw.batch_execute(&fixture(OLD, &schema)).await.unwrap();
        // A row above the counter (hand-edited, say): the sequence must
        // start above that too.
        let highest: u64 = if bump_a {
            raw.batch_execute(&format!(
                "UPDATE \"{schema}\".kv SET version = 40 WHERE key = 'a'"
            ))
            .await
            .unwrap();
            40
        } else {
            7
        };
        let store = open(&schema, PostgresOptions::default().isolation(isolation)).await;
        let kept = store.scan(b"", None, 10).await.unwrap();
        let kept: Vec<(&[u8], &[u8], u64)> = kept
            .iter()
            .map(|(k, v)| (k.as_slice(), v.value.as_slice(), v.version))
            .collect();
        let a = if bump_a { 40 } else { 3 };
        assert_eq!(
            kept,
            [
                (b"a".as_slice(), [3].as_slice(), a),
                (b"b", &[5], 5),
                (b"c", &[], 1)
            ]
        );
        let counter_gone: bool = raw
            .query_one(
                &format!("SELECT to_regclass('\"{schema}\".commit_counter') IS NULL"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(counter_gone);
        let mut batch = put(b"b", b"6", Precondition::Version(5));
        batch
            .put(b"d".to_vec(), b"new".to_vec(), Precondition::Absent)
            .unwrap()
            .put(b"f".to_vec(), b"new".to_vec(), Precondition::Absent)
            .unwrap();
        let v = store.commit(batch).await.unwrap().version.unwrap();
        assert!(
            v > highest,
            "{isolation:?}: version {v} not above {highest}"
        );
        let again = store
            .commit(put(b"a", b"x", Precondition::Version(a)))
            .await
            .unwrap()
            .version
            .unwrap();
        assert!(again > v);
        // Reopening migrates nothing more.
        store.close().await.unwrap();
        let reopened = open(&schema, PostgresOptions::default()).await;
        assert_eq!(reopened.get(b"a").await.unwrap().unwrap().version, again);
        let applied: i64 = raw
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".keystead_schema"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, 2);
    }
}

/// A caller that stops waiting for a commit (its future dropped, e.g. an
/// HTTP client that hung up) does not strand the connection inside the
/// transaction: the commit runs on to its end on its own task — here it
/// commits once the key it waited for is free — and no pooled connection
/// is left `idle in transaction` for the next caller to inherit.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_caller_gives_up_still_ends_its_transaction() {
    for isolation in BOTH {
        let schema = fresh("gave_up");
        let app = fresh("gave_up_app");
        let url = with_param(&server_url().unwrap(), "application_name", &app);
        let options = PostgresOptions::default()
            .with_schema(&schema)
            .isolation(isolation);
        let store = PostgresStore::connect_with(&url, options).await.unwrap();
        let raw = raw_client(&server_url().unwrap()).await.unwrap();
        let holder = hold_key_a(&store, &raw, &schema, &app).await;
        // The second writer of `a` queues behind the holder; its caller
        // gives up while it is inside its transaction. (Conditioned, so
        // that at READ COMMITTED it waits between the round trip that
        // opened its transaction and the one that would end it.)
        let gave_up = tokio::spawn({
            let store = store.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(60),
                    store.commit(put(b"a", b"after", Precondition::Absent)),
                )
                .await
            }
        });
        wait_for(&raw, WAITING_ON_LOCK, &app).await;
        gave_up.abort();
        assert!(gave_up.await.unwrap_err().is_cancelled());
        raw.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'",
            &[&app],
        )
        .await
        .unwrap();
        assert!(holder.await.unwrap().is_err(), "{isolation:?}: cancelled");
        // The abandoned commit finishes by itself.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = store.get(b"a").await.unwrap().map(|v| v.value);
            if value.as_deref() == Some(b"after".as_slice()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{isolation:?}: the abandoned commit never ended: {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stranded: i64 = raw
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            stranded, 0,
            "{isolation:?}: a pooled connection is inside a transaction"
        );
        // And the pool's connections serve new commits normally.
        for i in 0..32u8 {
            store
                .commit(put(&[b'n', i], b"1", Precondition::Absent))
                .await
                .unwrap();
        }
        store.close().await.unwrap();
    }
}
