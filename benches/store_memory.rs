//! The in-memory reference store against a raw `Mutex<BTreeMap>` doing the
//! same work: what the contract's bookkeeping (versions, preconditions, async
//! call) costs with no I/O at all.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::{Criterion, criterion_group, criterion_main};
use keystead::store::{MemoryStore, Precondition, Store};
use keystead_benches::{batch_of, key, runtime, value};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;

const KEYS: u64 = 100_000;

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("memory");

    let store = MemoryStore::new();
    rt.block_on(store.commit(batch_of(0, KEYS))).unwrap();
    let raw: Mutex<BTreeMap<Vec<u8>, Vec<u8>>> =
        Mutex::new((0..KEYS).map(|i| (key(i).to_vec(), value())).collect());
    let mut i = 0u64;
    group.bench_function("get/keystead", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(rt.block_on(store.get(&key(i))).unwrap());
        });
    });
    group.bench_function("get/raw_btreemap", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(raw.lock().unwrap().get(key(i).as_slice()).cloned());
        });
    });

    let mut n = KEYS;
    group.bench_function("put_absent/keystead", |b| {
        b.iter(|| {
            n += 1;
            let mut batch = keystead::store::Batch::new();
            batch
                .put(key(n).to_vec(), value(), Precondition::Absent)
                .unwrap();
            rt.block_on(store.commit(batch)).unwrap();
        });
    });
    group.bench_function("put_absent/raw_btreemap", |b| {
        b.iter(|| {
            n += 1;
            let mut map = raw.lock().unwrap();
            assert!(!map.contains_key(key(n).as_slice()));
            map.insert(key(n).to_vec(), value());
        });
    });
    group.finish();
}

criterion_group!(benches, memory);
criterion_main!(benches);
