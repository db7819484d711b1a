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
