//! The in-memory reference backend runs the storage conformance suite.

keystead::store_conformance_tests!(|_dir: std::path::PathBuf| async {
    Ok::<_, keystead::StorageError>(keystead::store::MemoryStore::new())
});

keystead::domain_tests!(|_dir: std::path::PathBuf| async {
    Ok::<_, keystead::StorageError>(keystead::store::MemoryStore::new())
});
