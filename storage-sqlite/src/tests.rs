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
