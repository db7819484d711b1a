//! keystead-sled runs the storage conformance suite, including the
//! reopen-durability case.

keystead::store_conformance_tests!(persistent: |dir: std::path::PathBuf| async move {
    keystead_sled::SledStore::open(dir.join("db")).await
});

keystead::domain_tests!(|dir: std::path::PathBuf| async move {
    keystead_sled::SledStore::open(dir.join("db")).await
});
