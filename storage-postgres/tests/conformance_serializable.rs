//! The storage conformance suite and the domain suite again, with writing
//! commits at `SERIALIZABLE` and no advisory locks: what CockroachDB and
//! YugabyteDB run by default. Every race the suite provokes must come out
//! exactly as at `READ COMMITTED` — serialization failures are retried
//! inside the adapter and never reach a case as `Conflict` or `Backend`.

use keystead_postgres::{Isolation, PostgresOptions};
use std::path::PathBuf;

fn options() -> PostgresOptions {
    PostgresOptions::default().isolation(Isolation::Serializable)
}

keystead::store_conformance_tests!(persistent: |dir: PathBuf| async move {
    keystead_postgres::testing::open_in_with(&dir, options()).await
});

keystead::domain_tests!(|dir: PathBuf| async move {
    keystead_postgres::testing::open_in_with(&dir, options()).await
});
