//! keystead-postgres runs the storage conformance suite unchanged, at the
//! default `READ COMMITTED` (`conformance_serializable.rs` runs it again at
//! `SERIALIZABLE`). Each case gets its own schema (derived from the case's
//! private directory) on the cluster shared by this test binary; see
//! `keystead_postgres::testing`.

use std::path::PathBuf;

keystead::store_conformance_tests!(persistent: |dir: PathBuf| async move {
    keystead_postgres::testing::open_in(&dir).await
});

keystead::domain_tests!(
    |dir: PathBuf| async move { keystead_postgres::testing::open_in(&dir).await }
);
