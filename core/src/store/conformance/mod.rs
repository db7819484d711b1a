//! The storage conformance suite every backend runs (feature `conformance`).
//!
//! A backend's test file expands [`store_conformance_tests!`](crate::store_conformance_tests)
//! with a function that opens its store in a given directory:
//!
//! ```text
//! keystead::store_conformance_tests!(persistent: |dir: std::path::PathBuf| async move {
//!     MyStore::open(dir.join("db")).await
//! });
//! ```
//!
//! The macro writes one `#[test]` per case in [`cases`], plus the model-based
//! proptest in [`model`]. With `persistent:` it adds the reopen-durability case;
//! without it (in-memory backends) that case is not generated. The
//! [`crash`] module holds the SIGKILL crash test and the two-process test that
//! file backends run from a `harness = false` test target.

pub mod cases;
pub mod crash;
pub mod model;

use super::{Batch, Precondition, StorageError, Store};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future opening a store.
pub type OpenFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Store>, StorageError>> + Send>>;

/// Opens a backend's store in a directory.
pub type Opener = Arc<dyn Fn(PathBuf) -> OpenFuture + Send + Sync>;

/// Turn a backend's `|dir| async { open(dir) }` closure into an [`Opener`].
pub fn opener<F, Fut, S>(open: F) -> Opener
where
    F: Fn(PathBuf) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, StorageError>> + Send + 'static,
    S: Store,
{
    let open = Arc::new(open);
    Arc::new(move |dir| {
        let open = Arc::clone(&open);
        Box::pin(async move { open(dir).await.map(|s| Arc::new(s) as Arc<dyn Store>) })
    })
}

/// What a case gets: a private directory and the backend's opener.
pub struct Harness {
    dir: tempfile::TempDir,
    open: Opener,
}

impl Harness {
    /// A harness with a fresh temporary directory.
    pub fn new(open: Opener) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        Self { dir, open }
    }

    /// The case's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Open (or reopen) the store in the case's directory.
    pub async fn open(&self) -> Arc<dyn Store> {
        (self.open)(self.dir.path().to_path_buf())
            .await
            .expect("the backend opens its store")
    }
}

/// Build a multi-threaded runtime, open a harness and run one case in it.
pub fn run<C, Fut>(open: Opener, case: C)
where
    C: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(case(Harness::new(open)));
}

/// The runtime cases run on: several workers, so races are real.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// A batch with one put: the most common shape in the cases.
pub fn put(key: &[u8], value: &[u8], pre: Precondition) -> Batch {
    let mut batch = Batch::new();
    batch
        .put(key.to_vec(), value.to_vec(), pre)
        .expect("test batch is valid");
    batch
}

/// Add one to the big-endian `u64` counter at `key` with compare-and-swap
/// (`Absent` if it does not exist yet, else `Version(v)`), retrying on
/// conflict — the way a domain service updates an admission counter. Returns
/// how many conflicts it retried.
pub async fn increment(store: &dyn Store, key: &[u8]) -> u32 {
    let mut conflicts = 0;
    loop {
        let current = store.get(key).await.expect("get counter");
        let (count, pre) = match &current {
            Some(v) => (
                u64::from_be_bytes(v.value.as_slice().try_into().expect("8-byte counter")),
                Precondition::Version(v.version),
            ),
            None => (0, Precondition::Absent),
        };
        match store
            .commit(put(key, &(count + 1).to_be_bytes(), pre))
            .await
        {
            Ok(_) => return conflicts,
            Err(StorageError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("counter commit failed: {e}"),
        }
    }
}

/// The counter [`increment`] maintains at `key` (0 if absent).
pub async fn counter(store: &dyn Store, key: &[u8]) -> u64 {
    store.get(key).await.expect("get counter").map_or(0, |v| {
        u64::from_be_bytes(v.value.as_slice().try_into().expect("8-byte counter"))
    })
}

/// Expands to one `#[test]` per conformance case for a backend; see the
/// [`conformance`](crate::store::conformance) module docs.
#[macro_export]
macro_rules! store_conformance_tests {
    (persistent: $open:expr) => {
        $crate::store_conformance_tests!($open);
        $crate::store_conformance_tests!(@cases $open, [reopen_keeps_acknowledged_commits]);
    };
    ($open:expr) => {
        $crate::store_conformance_tests!(@cases $open, [
            get_put_delete_round_trip,
            versions_are_new_per_key,
            delete_then_recreate_never_yields_an_old_version,
            disjoint_key_writers_never_conflict,
            hot_key_counter_ends_at_its_successes,
            absent_on_existing_key_conflicts,
            version_mismatch_conflicts,
            failed_precondition_applies_nothing,
            pure_checks_gate_without_writing,
            scan_is_ordered_by_key,
            scan_respects_prefix_boundaries,
            pagination_returns_every_key_once,
            empty_and_one_mebibyte_values,
            binary_keys_with_zero_and_ff_bytes,
            concurrent_cas_increments_lose_no_update,
            absent_race_has_exactly_one_winner,
            closed_store_reports_backend_error,
            watch_wakes_after_commit_under_prefix,
            watch_subscriber_misses_no_record,
            get_many_is_one_snapshot
        ]);
        #[test]
        fn random_batches_match_the_model() {
            $crate::store::conformance::model::check($crate::store::conformance::opener($open));
        }
    };
    (@cases $open:expr, [$($case:ident),* $(,)?]) => {
        $(
            #[test]
            fn $case() {
                $crate::store::conformance::run(
                    $crate::store::conformance::opener($open),
                    $crate::store::conformance::cases::$case,
                );
            }
        )*
    };
}
