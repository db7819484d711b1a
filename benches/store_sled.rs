//! keystead-sled against raw sled 0.34.7 doing the same work in the same run:
//! conditional put, point get on 100k keys, 100-op batch, and
//! compare-and-swap increments from 8 concurrent writers.
//!
//! For commits the raw side is what an application would write on sled by
//! hand for the same guarantees: one multi-tree transaction that checks the
//! precondition, bumps a commit counter and inserts, then `Db::flush` — minus
//! keystead's async thread hop and value encoding. For the CAS race it is
//! sled's single-key, lock-free `compare_and_swap` plus a flush per increment:
//! no commit counter, so no transaction, which is the floor sled allows.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::{Criterion, criterion_group, criterion_main};
use keystead::store::conformance::put;
use keystead::store::{Precondition, Store};
use keystead_benches::{
    INCREMENTS_PER_WRITER, WRITERS, batch_of, key, runtime, time_cas_rounds, value,
};
use keystead_sled::SledStore;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;

/// A raw sled database laid out like the adapter's: data and counter trees.
#[derive(Clone)]
struct Raw {
    db: sled::Db,
    kv: sled::Tree,
    meta: sled::Tree,
}

impl Raw {
    fn open(path: &std::path::Path) -> Self {
        let db = sled::open(path).unwrap();
        let kv = db.open_tree("kv").unwrap();
        let meta = db.open_tree("meta").unwrap();
        Self { db, kv, meta }
    }

    /// The raw equivalent of one conditional commit: in one transaction,
    /// check each key (if `absent`), bump the commit counter, insert; then
    /// flush.
    fn commit(&self, keys: std::ops::Range<u64>, absent: bool) {
        (&self.kv, &self.meta)
            .transaction(|(kv, meta)| {
                if absent {
                    for i in keys.clone() {
                        if kv.get(key(i))?.is_some() {
                            return Err(ConflictableTransactionError::Abort(()));
                        }
                    }
                }
                let last = meta
                    .get(b"n")?
                    .map_or(0, |n| u64::from_be_bytes(n.as_ref().try_into().unwrap()));
                meta.insert(b"n", &(last + 1).to_be_bytes())?;
                for i in keys.clone() {
                    kv.insert(&key(i), value())?;
                }
                Ok(())
            })
            .unwrap();
        self.db.flush().unwrap();
    }
}

/// A fresh adapter store and a raw sled database side by side.
struct Fixture {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Arc<SledStore>,
    raw: Raw,
}

fn fixture() -> Fixture {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SledStore::open(dir.path().join("keystead")))
        .unwrap();
    let raw = Raw::open(&dir.path().join("raw"));
    Fixture {
        rt,
        _dir: dir,
        store: Arc::new(store),
        raw,
    }
}

fn commits(c: &mut Criterion) {
    let Fixture { rt, store, raw, .. } = fixture();
    let mut group = c.benchmark_group("sled");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));

    // Conditional put (Absent), one flushed commit each.
    let mut n = 1_000_000_000u64;
    group.bench_function("put_absent/keystead", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(store.commit(put(&key(n), &value(), Precondition::Absent)))
                .unwrap();
        });
    });
    group.bench_function("put_absent/raw_sled", |b| {
        b.iter(|| {
            n += 1;
            raw.commit(n..n + 1, true);
        });
    });
    // The same raw commit moved off the executor, as the contract requires:
    // separates the thread hop from the adapter's own overhead.
    group.bench_function("put_absent/raw_sled_unblock", |b| {
        b.iter(|| {
            n += 1;
            let (raw, i) = (raw.clone(), n);
            rt.block_on(blocking::unblock(move || raw.commit(i..i + 1, true)));
        });
    });

    // 100 puts in one flushed commit.
    group.bench_function("batch_100/keystead", |b| {
        b.iter(|| {
            n += 100;
            rt.block_on(store.commit(batch_of(n, 100))).unwrap();
        });
    });
    group.bench_function("batch_100/raw_sled", |b| {
        b.iter(|| {
            n += 100;
            raw.commit(n..n + 100, false);
        });
    });

    group.finish();
    rt.block_on(store.close()).unwrap();
}

fn gets(c: &mut Criterion) {
    let Fixture { rt, store, raw, .. } = fixture();
    let mut group = c.benchmark_group("sled");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    // Point get among 100k keys.
    for start in (0..KEYS).step_by(10_000) {
        rt.block_on(store.commit(batch_of(start, 10_000))).unwrap();
        raw.commit(start..start + 10_000, false);
    }
    let mut i = 0u64;
    group.bench_function("get/keystead", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(rt.block_on(store.get(&key(i))).unwrap());
        });
    });
    group.bench_function("get/raw_sled", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(raw.kv.get(key(i)).unwrap());
        });
    });
    // The same raw read moved off the executor, as the contract requires:
    // separates the thread hop from the adapter's own overhead.
    group.bench_function("get/raw_sled_unblock", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let kv = raw.kv.clone();
            black_box(
                rt.block_on(blocking::unblock(move || kv.get(key(i))))
                    .unwrap(),
            );
        });
    });

    group.finish();
    rt.block_on(store.close()).unwrap();
}

fn cas(c: &mut Criterion) {
    let Fixture { rt, store, raw, .. } = fixture();
    let mut group = c.benchmark_group("sled");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    // 8 writers × 10 compare-and-swap increments of one counter.
    group.bench_function("cas_8_writers/keystead", |b| {
        b.iter_custom(|iters| time_cas_rounds(&rt, &store, iters));
    });
    // Raw: sled's own compare_and_swap on the counter value, retried on a
    // lost race, then flushed like a commit.
    group.bench_function("cas_8_writers/raw_sled", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|scope| {
                    for _ in 0..WRITERS {
                        scope.spawn(|| {
                            for _ in 0..INCREMENTS_PER_WRITER {
                                loop {
                                    let current = raw.kv.get(b"counter").unwrap();
                                    let count = current.as_ref().map_or(0, |v| {
                                        u64::from_be_bytes(v.as_ref().try_into().unwrap())
                                    });
                                    let swapped = raw
                                        .kv
                                        .compare_and_swap(
                                            b"counter",
                                            current,
                                            Some(&(count + 1).to_be_bytes()),
                                        )
                                        .unwrap();
                                    if swapped.is_ok() {
                                        break;
                                    }
                                }
                                raw.db.flush().unwrap();
                            }
                        });
                    }
                });
            }
            start.elapsed()
        });
    });
    group.finish();
    rt.block_on(store.close()).unwrap();
}

criterion_group!(benches, commits, gets, cas);
criterion_main!(benches);
