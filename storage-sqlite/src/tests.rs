use super::*;
use keystead::store::Precondition;

fn put(key: &[u8], value: &[u8]) -> Batch {
    let mut batch = Batch::new();
    batch
        .put(key.to_vec(), value.to_vec(), Precondition::Any)
        .unwrap();
    batch
}

#[tokio::test]
async fn malformed_rows_are_corrupt_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.commit(put(b"good", b"v")).await.unwrap();
    store.close().await.unwrap();

    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO kv VALUES (?1, 'text, not a blob', 1)",
        [b"bad-value".as_slice()],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO kv VALUES (?1, x'00', -4)",
        [b"bad-version".as_slice()],
    )
    .unwrap();
    drop(raw);

    let store = SqliteStore::open(&path).await.unwrap();
    for key in [b"bad-value".as_slice(), b"bad-version"] {
        match store.get(key).await {
            Err(StorageError::Corrupt { key: named, .. }) => assert_eq!(named, key),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(
        store.scan(b"bad", None, 10).await,
        Err(StorageError::Corrupt { .. })
    ));
    // A commit whose precondition reads a corrupt version fails the same way,
    // writing nothing.
    let mut batch = put(b"another", b"x");
    batch
        .check(b"bad-version".to_vec(), Precondition::Any)
        .unwrap();
    assert!(matches!(
        store.commit(batch).await,
        Err(StorageError::Corrupt { .. })
    ));
    assert_eq!(store.get(b"another").await.unwrap(), None);
    assert_eq!(store.get(b"good").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    SqliteStore::open(&path)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO keystead_schema VALUES (?1, 'from the future')",
        [schema::LATEST + 1],
    )
    .unwrap();
    drop(raw);
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StorageError::Backend(_)));
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn reopening_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    for _ in 0..3 {
        SqliteStore::open(&path)
            .await
            .unwrap()
            .close()
            .await
            .unwrap();
    }
    let raw = Connection::open(&path).unwrap();
    let applied: i64 = raw
        .query_row("SELECT COUNT(*) FROM keystead_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(applied, schema::LATEST);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StorageError::Backend(_))
    ));
}

#[tokio::test]
async fn normal_synchronous_and_in_memory_work() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        synchronous: Synchronous::Normal,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path().join("n.db"), options)
        .await
        .unwrap();
    store.commit(put(b"k", b"v")).await.unwrap();
    let sync: i64 = {
        let conn = connect(store.path(), &store.inner.options).unwrap();
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(sync, 1, "NORMAL");
    let memory = SqliteStore::open_in_memory().await.unwrap();
    assert_eq!(memory.path(), None);
    let committed = memory.commit(put(b"k", b"v")).await.unwrap();
    assert_eq!(
        Some(memory.get(b"k").await.unwrap().unwrap().version),
        committed.version
    );
}

fn conditioned(key: &[u8], value: &[u8], pre: Precondition) -> Batch {
    let mut batch = Batch::new();
    batch.put(key.to_vec(), value.to_vec(), pre).unwrap();
    batch
}

/// One group: preconditions are judged in arrival order against the state
/// including the earlier batches of the same group, a failing batch is
/// rolled back alone (its other key too), and the rest commit with
/// versions of their own, increasing in arrival order.
#[tokio::test]
async fn a_group_commit_judges_batches_in_arrival_order_and_rolls_back_only_the_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("g.db")).await.unwrap();
    let first = conditioned(b"k", b"first", Precondition::Absent);
    // Absent on `k` fails only because `first` wrote it earlier in the group.
    let mut loser = conditioned(b"k", b"second", Precondition::Absent);
    loser
        .put(b"loser-other".to_vec(), b"x".to_vec(), Precondition::Any)
        .unwrap();
    let after = conditioned(b"j", b"third", Precondition::Absent);
    let results = store
        .inner
        .with_writer(|conn| Ok(commit_group(conn, &[&first, &loser, &after])))
        .unwrap();
    assert_eq!(results.len(), 3);
    let v1 = results[0].as_ref().unwrap().version.unwrap();
    assert!(matches!(&results[1], Err(StorageError::Conflict { key }) if key == b"k"));
    let v3 = results[2].as_ref().unwrap().version.unwrap();
    assert!(v3 > v1);
    let k = store.get(b"k").await.unwrap().unwrap();
    assert_eq!((k.value.as_slice(), k.version), (b"first".as_slice(), v1));
    assert_eq!(store.get(b"loser-other").await.unwrap(), None);
    assert_eq!(store.get(b"j").await.unwrap().unwrap().version, v3);
}

/// 64 commits started at once on disjoint keys all commit, each with its
/// own version, in fewer write transactions than commits: while one group's
/// fsync runs, the others queue and go together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_all_commit_through_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("c.db")).await.unwrap();
    let tasks: Vec<_> = (0..64u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit(conditioned(&i.to_be_bytes(), b"v", Precondition::Absent))
                    .await
            })
        })
        .collect();
    let mut versions = std::collections::BTreeSet::new();
    for task in tasks {
        assert!(versions.insert(task.await.unwrap().unwrap().version.unwrap()));
    }
    assert_eq!(versions.len(), 64);
    let groups = store.inner.groups.load(Ordering::Relaxed);
    assert!(groups < 64, "{groups} write transactions for 64 commits");
}

/// Every key `store` holds, with its value and version.
async fn contents(store: &SqliteStore) -> Vec<(Vec<u8>, Vec<u8>, u64)> {
    store
        .scan(b"", None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(key, v)| (key, v.value, v.version))
        .collect()
}

/// A full disk: every commit that needs a page more answers `Backend`
/// naming the cause, applies nothing (a multi-key batch not half), fails
/// the same way when it is part of a group, and the store works again once
/// there is room. The disk is filled with SQLite's own limit on the file's
/// size (`PRAGMA max_page_count` on the writer), which makes SQLite fail
/// with the same `SQLITE_FULL` a full file system gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_backend_error_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("full.db")).await.unwrap();
    store.commit(put(b"before", b"v")).await.unwrap();
    let set_limit = |store: &SqliteStore, sql: &str| {
        store
            .inner
            .with_writer(|conn| conn.execute_batch(sql).map_err(backend))
            .unwrap();
    };
    // No page beyond the ones the file has now.
    let pages: i64 = store
        .inner
        .with_writer(|conn| {
            conn.query_row("PRAGMA page_count", [], |row| row.get(0))
                .map_err(backend)
        })
        .unwrap();
    set_limit(&store, &format!("PRAGMA max_page_count = {pages}"));
    let before = contents(&store).await;
    let big = vec![0xAB; 512 * 1024];
    let mut batch = Batch::new();
    batch
        .put(b"a".to_vec(), big.clone(), Precondition::Absent)
        .unwrap()
        .put(b"b".to_vec(), big.clone(), Precondition::Absent)
        .unwrap();
    match store.commit(batch).await {
        Err(StorageError::Backend(e)) => {
            assert!(e.to_string().contains("full"), "names the cause: {e}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
    assert_eq!(contents(&store).await, before, "nothing applied");
    // Concurrent commits, grouped: each fails alone or with its group,
    // never with a wrong answer, and none half-applies.
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let (store, big) = (store.clone(), big.clone());
            tokio::spawn(async move {
                let mut batch = Batch::new();
                batch
                    .put(vec![b'g', i, 1], big.clone(), Precondition::Absent)
                    .unwrap()
                    .put(vec![b'g', i, 2], big, Precondition::Absent)
                    .unwrap();
                store.commit(batch).await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(StorageError::Backend(_))));
    }
    assert_eq!(contents(&store).await, before, "nothing applied");
    // Room again: the same store commits, and nothing of the refused
    // batches reappears.
    set_limit(&store, "PRAGMA max_page_count = 1073741823");
    let mut batch = Batch::new();
    batch
        .put(b"a".to_vec(), big.clone(), Precondition::Absent)
        .unwrap()
        .put(b"b".to_vec(), big, Precondition::Absent)
        .unwrap();
    let version = store.commit(batch).await.unwrap().version;
    let after = contents(&store).await;
    assert_eq!(after.len(), before.len() + 2);
    assert!(
        after
            .iter()
            .filter(|(k, _, _)| k == b"a" || k == b"b")
            .all(|(_, _, v)| Some(*v) == version)
    );
}

/// A database that became read-only (a file system remounted read-only,
/// permissions taken away) answers every commit with `Backend` naming the
/// cause and applies nothing, and the store works again once writable.
/// Simulated with `PRAGMA query_only`, which makes SQLite refuse writes
/// with `SQLITE_READONLY` like a read-only file does (file permissions
/// cannot be tested here: the tests may run as root, who ignores them).
#[tokio::test]
async fn a_read_only_database_is_a_backend_error_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("ro.db")).await.unwrap();
    store.commit(put(b"before", b"v")).await.unwrap();
    let before = contents(&store).await;
    let set = |store: &SqliteStore, sql: &str| {
        store
            .inner
            .with_writer(|conn| conn.execute_batch(sql).map_err(backend))
            .unwrap();
    };
    set(&store, "PRAGMA query_only = ON");
    for batch in [put(b"before", b"changed"), put(b"new", b"v")] {
        match store.commit(batch).await {
            Err(StorageError::Backend(e)) => {
                assert!(e.to_string().contains("readonly"), "names the cause: {e}");
            }
            other => panic!("expected Backend, got {other:?}"),
        }
    }
    assert_eq!(contents(&store).await, before, "nothing applied");
    set(&store, "PRAGMA query_only = OFF");
    store.commit(put(b"new", b"v")).await.unwrap();
    assert_eq!(contents(&store).await.len(), 2);
}

/// A file written by the release before per-key versions — the same
/// schema version 1, built here by that release's statements (the kv table
/// and the store-wide commit counter): it opens without a migration, keeps
/// every value and version, and new writes — re-creating a deleted key
/// included — take versions above every one it held.
#[tokio::test]
async fn a_file_written_by_the_previous_release_opens_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE keystead_schema (version INTEGER NOT NULL PRIMARY KEY, description TEXT NOT NULL);
             INSERT INTO keystead_schema VALUES (1, 'kv table and commit counter');
             CREATE TABLE kv (key BLOB NOT NULL PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE commit_counter (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 0), last_commit INTEGER NOT NULL);
             -- `c` was written at 9 and deleted; the counter remembers it.
             INSERT INTO commit_counter VALUES (0, 9);
             INSERT INTO kv VALUES (x'61', CAST('old-a' AS BLOB), 3), (x'62', CAST('old-b' AS BLOB), 7);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
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
    let schema: i64 = store
        .inner
        .with_writer(|conn| {
            conn.query_row("SELECT max(version) FROM keystead_schema", [], |row| {
                row.get(0)
            })
            .map_err(backend)
        })
        .unwrap();
    assert_eq!(schema, 1, "no migration was needed");
}
