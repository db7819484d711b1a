//! keystead-sqlite runs the storage conformance suite, on a database file
//! (WAL, several connections) and in memory.

use std::path::PathBuf;

keystead::store_conformance_tests!(persistent: |dir: PathBuf| async move {
    keystead_sqlite::SqliteStore::open(dir.join("keystead.db")).await
});

mod in_memory {
    keystead::store_conformance_tests!(|_dir: std::path::PathBuf| async {
        keystead_sqlite::SqliteStore::open_in_memory().await
    });
}

keystead::domain_tests!(|dir: PathBuf| async move {
    keystead_sqlite::SqliteStore::open(dir.join("keystead.db")).await
});
