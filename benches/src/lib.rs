//! Shared helpers for keystead's criterion benchmarks (`cargo bench --workspace`).
//!
//! Every figure in `BENCHMARKS.md` is a ratio against the raw primitive or
//! driver measured in the same run, so the numbers say what keystead adds,
//! independent of the machine. [`load`] is the closed-loop driver of the
//! example server's load run (`benches/server_load.rs`), which reports
//! throughput and latency percentiles rather than criterion medians.
#![forbid(unsafe_code)]

use keystead::store::{Batch, Precondition};

pub mod load;

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

/// Compare-and-swap increment with retry, shared with the conformance suite.
pub use keystead::store::conformance::increment as cas_increment;

/// Concurrent writers in the compare-and-swap benchmarks.
pub const WRITERS: u64 = 8;
/// Increments each writer makes per round.
pub const INCREMENTS_PER_WRITER: u64 = 10;

/// Time `iters` rounds of [`WRITERS`] tasks each making
/// [`INCREMENTS_PER_WRITER`] compare-and-swap increments of one counter in
/// `store` (for criterion's `iter_custom`).
pub fn time_cas_rounds<S: keystead::store::Store>(
    rt: &tokio::runtime::Runtime,
    store: &std::sync::Arc<S>,
    iters: u64,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        rt.block_on(async {
            let tasks: Vec<_> = (0..WRITERS)
                .map(|_| {
                    let store = std::sync::Arc::clone(store);
                    tokio::spawn(async move {
                        for _ in 0..INCREMENTS_PER_WRITER {
                            cas_increment(&*store, b"counter").await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("writer task");
            }
        });
    }
    start.elapsed()
}

/// Run `a` and `b` alternately for `rounds` rounds (`a` first on even
/// rounds, `b` first on odd ones) and return the median time of each.
/// Slow drift — an fsync's latency, a growing WAL, other load — then hits
/// both sides alike, which criterion's one-after-the-other groups cannot
/// promise.
pub fn paired_medians(
    rounds: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (std::time::Duration, std::time::Duration) {
    let (mut times_a, mut times_b) = (Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut(), into: &mut Vec<std::time::Duration>| {
        let start = std::time::Instant::now();
        f();
        into.push(start.elapsed());
    };
    for round in 0..rounds {
        if round % 2 == 0 {
            time(&mut a, &mut times_a);
            time(&mut b, &mut times_b);
        } else {
            time(&mut b, &mut times_b);
            time(&mut a, &mut times_a);
        }
    }
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    (median(times_a), median(times_b))
}
