//! Shared helpers for keystead's criterion benchmarks (`cargo bench --workspace`).
//!
//! Every figure in `BENCHMARKS.md` is a ratio against the raw primitive or
//! driver measured in the same run, so the numbers say what keystead adds,
//! independent of the machine.
#![forbid(unsafe_code)]

use keystead::store::{Batch, Precondition};

/// A multi-threaded runtime for driving async store calls from criterion.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The 8-byte big-endian key of item `i`.
pub fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// A 100-byte value, the size of a typical small record.
pub fn value() -> Vec<u8> {
    vec![0x5A; 100]
}

/// A batch putting `n` keys starting at `start`, unconditionally.
pub fn batch_of(start: u64, n: u64) -> Batch {
    let mut batch = Batch::new();
    for i in start..start + n {
        batch
            .put(key(i).to_vec(), value(), Precondition::Any)
            .expect("bench batch is valid");
    }
    batch
}

/// Add one to the big-endian `u64` counter at `key` with compare-and-swap,
/// retrying on conflict — how a domain service updates an admission counter.
pub async fn cas_increment(store: &dyn keystead::store::Store, key: &[u8]) {
    use keystead::store::StorageError;
    loop {
        let current = store.get(key).await.expect("get counter");
        let (count, pre) = match &current {
            Some(v) => (
                u64::from_be_bytes(v.value.as_slice().try_into().expect("8-byte counter")),
                Precondition::Version(v.version),
            ),
            None => (0, Precondition::Absent),
        };
        let mut batch = Batch::new();
        batch
            .put(key.to_vec(), (count + 1).to_be_bytes().to_vec(), pre)
            .expect("valid batch");
        match store.commit(batch).await {
            Ok(()) => return,
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => panic!("counter commit failed: {e}"),
        }
    }
}
