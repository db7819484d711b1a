//! keystead-sqlite against raw rusqlite doing the same work with the same
//! pragmas (WAL, `synchronous=FULL`, busy timeout) in the same run:
//! conditional put, point get on 100k keys, 100-op batch, and compare-and-swap
//! increments from 8 concurrent writers.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::{Criterion, criterion_group, criterion_main};
use keystead::store::conformance::put;
use keystead::store::{Precondition, Store};
use keystead_benches::{
    INCREMENTS_PER_WRITER, WRITERS, batch_of, key, runtime, time_cas_rounds, value,
};
use keystead_sqlite::SqliteStore;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: u64 = 100_000;

/// A raw connection configured like the adapter's, on its own schema.
fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS kv (key BLOB NOT NULL PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
         INSERT OR IGNORE INTO counter VALUES (0, 0);",
    )
    .unwrap();
    conn
}

/// The raw equivalent of one conditional commit: lock, check each key's
/// version, bump the commit counter, write, commit.
fn raw_commit(conn: &mut Connection, keys: std::ops::Range<u64>, absent: bool) {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    for i in keys.clone() {
        let existing: Option<i64> = tx
            .prepare_cached("SELECT version FROM kv WHERE key = ?1")
            .unwrap()
            .query_row([key(i)], |r| r.get(0))
            .optional()
            .unwrap();
        assert!(!absent || existing.is_none());
    }
    let version: i64 = tx
        .prepare_cached("UPDATE counter SET n = n + 1 RETURNING n")
        .unwrap()
        .query_row([], |r| r.get(0))
        .unwrap();
    for i in keys {
        tx.prepare_cached(
            "INSERT INTO kv VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
        )
        .unwrap()
        .execute(params![key(i), value(), version])
        .unwrap();
    }
    tx.commit().unwrap();
}

/// A fresh adapter store and a raw database side by side.
struct Fixture {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    raw_path: std::path::PathBuf,
    raw: Connection,
}

fn fixture() -> Fixture {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(dir.path().join("keystead.db")))
        .unwrap();
    let raw_path = dir.path().join("raw.db");
    let raw = raw_connection(&raw_path);
    Fixture {
        rt,
        _dir: dir,
        store: Arc::new(store),
        raw_path,
        raw,
    }
}

fn commits(c: &mut Criterion) {
    let Fixture {
        rt,
        store,
        mut raw,
        _dir,
        ..
    } = fixture();
    let mut group = c.benchmark_group("sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));

    // Conditional put (Absent), one commit each, fsynced.
    let mut n = 1_000_000_000u64;
    group.bench_function("put_absent/keystead", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(store.commit(put(&key(n), &value(), Precondition::Absent)))
                .unwrap();
        });
    });
    group.bench_function("put_absent/raw_rusqlite", |b| {
        b.iter(|| {
            n += 1;
            raw_commit(&mut raw, n..n + 1, true);
        });
    });
    // The same raw commit moved off the executor, as the contract requires:
    // separates the thread hop from the adapter's own overhead.
    let shared_raw = Arc::new(std::sync::Mutex::new(raw));
    group.bench_function("put_absent/raw_rusqlite_unblock", |b| {
        b.iter(|| {
            n += 1;
            let conn = Arc::clone(&shared_raw);
            let i = n;
            rt.block_on(blocking::unblock(move || {
                raw_commit(&mut conn.lock().unwrap(), i..i + 1, true);
            }));
        });
    });
    let mut raw = Arc::try_unwrap(shared_raw)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();

    // 100 puts in one commit.
    group.bench_function("batch_100/keystead", |b| {
        b.iter(|| {
            n += 100;
            rt.block_on(store.commit(batch_of(n, 100))).unwrap();
        });
    });
    group.bench_function("batch_100/raw_rusqlite", |b| {
        b.iter(|| {
            n += 100;
            raw_commit(&mut raw, n..n + 100, false);
        });
    });

    group.finish();
}

fn gets(c: &mut Criterion) {
    let Fixture {
        rt,
        store,
        mut raw,
        raw_path,
        _dir,
    } = fixture();
    let mut group = c.benchmark_group("sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    // Point get among 100k keys.
    for start in (0..KEYS).step_by(10_000) {
        rt.block_on(store.commit(batch_of(start, 10_000))).unwrap();
        raw_commit(&mut raw, start..start + 10_000, false);
    }
    let mut i = 0u64;
    group.bench_function("get/keystead", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(rt.block_on(store.get(&key(i))).unwrap());
        });
    });
    let get_raw = |conn: &Connection, i: u64| -> Option<(Vec<u8>, i64)> {
        conn.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
            .unwrap()
            .query_row([key(i)], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .unwrap()
    };
    group.bench_function("get/raw_rusqlite", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(get_raw(&raw, i));
        });
    });
    // The same raw read moved off the executor, as the contract requires:
    // separates the thread hop from the adapter's own overhead.
    let shared_raw = Arc::new(std::sync::Mutex::new(raw_connection(&raw_path)));
    group.bench_function("get/raw_rusqlite_unblock", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let conn = Arc::clone(&shared_raw);
            black_box(rt.block_on(blocking::unblock(move || get_raw(&conn.lock().unwrap(), i))));
        });
    });

    group.finish();
}

fn cas(c: &mut Criterion) {
    let Fixture {
        rt,
        store,
        raw_path,
        _dir,
        ..
    } = fixture();
    let mut group = c.benchmark_group("sqlite");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    // 8 writers × 10 increments of one counter.
    group.bench_function("cas_8_writers/keystead", |b| {
        b.iter_custom(|iters| time_cas_rounds(&rt, &store, iters));
    });
    group.bench_function("cas_8_writers/raw_rusqlite", |b| {
        let connections: Vec<_> = (0..WRITERS)
            .map(|_| std::sync::Mutex::new(raw_connection(&raw_path)))
            .collect();
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                std::thread::scope(|scope| {
                    for conn in &connections {
                        scope.spawn(move || {
                            let mut conn = conn.lock().unwrap();
                            for _ in 0..INCREMENTS_PER_WRITER {
                                let tx = conn
                                    .transaction_with_behavior(TransactionBehavior::Immediate)
                                    .unwrap();
                                tx.execute(
                                    "INSERT INTO kv VALUES (x'00', x'0000000000000000', 1)
                                     ON CONFLICT (key) DO UPDATE SET version = version + 1",
                                    [],
                                )
                                .unwrap();
                                tx.commit().unwrap();
                            }
                        });
                    }
                });
            }
            start.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, commits, gets, cas);
criterion_main!(benches);
