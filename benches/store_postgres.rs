//! keystead-postgres against raw tokio-postgres statements doing the same
//! work on the same server in the same run: conditional put, point get on
//! 100k keys, 100-op batch, and compare-and-swap increments from 8 concurrent
//! writers.
//!
//! The server is a throwaway cluster started by
//! `keystead_postgres::testing` (unix socket, `fsync=on`, default
//! `synchronous_commit=on`), or `KEYSTEAD_TEST_POSTGRES_URL` if set. The
//! adapter and the raw side each get their own schema with the same tables.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::{Criterion, criterion_group, criterion_main};
use keystead::store::conformance::put;
use keystead::store::{Precondition, Store};
use keystead_benches::{
    INCREMENTS_PER_WRITER, WRITERS, batch_of, cas_increment, key, paired_medians, runtime,
    time_cas_rounds, value,
};
use keystead_postgres::testing::{raw_client, server_url};
use keystead_postgres::{PostgresOptions, PostgresStore};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, IsolationLevel};

const KEYS: u64 = 100_000;

/// A schema no earlier run used (matters with an external server).
fn schema(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench_{name}_{}_{nanos:x}", std::process::id())
}

/// The raw side: the adapter's tables and statements, on one connection.
struct Raw {
    client: Client,
    get: tokio_postgres::Statement,
    bump: tokio_postgres::Statement,
    versions: tokio_postgres::Statement,
    put: tokio_postgres::Statement,
}

impl Raw {
    async fn connect(schema: &str) -> Self {
        let client = raw_client(&server_url().unwrap()).await.unwrap();
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 SET search_path TO {schema};
                 CREATE TABLE IF NOT EXISTS kv (key BYTEA PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL);
                 CREATE TABLE IF NOT EXISTS commit_counter (id SMALLINT PRIMARY KEY, last_commit BIGINT NOT NULL);
                 INSERT INTO commit_counter VALUES (0, 0) ON CONFLICT DO NOTHING;"
            ))
            .await
            .unwrap();
        let get = client
            .prepare("SELECT value, version FROM kv WHERE key = $1")
            .await
            .unwrap();
        let bump = client
            .prepare("UPDATE commit_counter SET last_commit = last_commit + 1 WHERE id = 0 RETURNING last_commit")
            .await
            .unwrap();
        let versions = client
            .prepare("SELECT key, version FROM kv WHERE key = ANY($1)")
            .await
            .unwrap();
        let put = client
            .prepare(
                "INSERT INTO kv (key, value, version)
                 SELECT k, v, $3 FROM unnest($1::bytea[], $2::bytea[]) AS t(k, v)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version",
            )
            .await
            .unwrap();
        Self {
            client,
            get,
            bump,
            versions,
            put,
        }
    }

    /// One conditional commit, as the adapter runs it: take the counter,
    /// read the conditioned keys' versions, check, write, commit. `expect`
    /// is the version each conditioned key must have (`None`: absent).
    /// Returns whether it applied.
    async fn commit(
        &mut self,
        keys: &[Vec<u8>],
        values: &[Vec<u8>],
        checked: &[(&[u8], Option<i64>)],
    ) -> bool {
        let tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .unwrap();
        let number: i64 = tx.query_one(&self.bump, &[]).await.unwrap().get(0);
        if !checked.is_empty() {
            let check_keys: Vec<&[u8]> = checked.iter().map(|(k, _)| *k).collect();
            let rows = tx.query(&self.versions, &[&check_keys]).await.unwrap();
            for (key, expected) in checked {
                let current = rows
                    .iter()
                    .find(|r| r.get::<_, &[u8]>(0) == *key)
                    .map(|r| r.get::<_, i64>(1));
                if current != *expected {
                    tx.rollback().await.unwrap();
                    return false;
                }
            }
        }
        tx.execute(&self.put, &[&keys, &values, &number])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        true
    }

    async fn get(&self, key: &[u8]) -> Option<(Vec<u8>, i64)> {
        self.client
            .query_opt(&self.get, &[&key])
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    /// Compare-and-swap increment with retry, like `cas_increment`.
    async fn increment(&mut self, key: &[u8]) {
        loop {
            let (count, expected) = match self.get(key).await {
                Some((value, version)) => (
                    u64::from_be_bytes(value.as_slice().try_into().unwrap()),
                    Some(version),
                ),
                None => (0, None),
            };
            let keys = [key.to_vec()];
            let values = [(count + 1).to_be_bytes().to_vec()];
            if self.commit(&keys, &values, &[(key, expected)]).await {
                return;
            }
        }
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Arc<PostgresStore>,
    raw: Raw,
    raw_schema: String,
}

fn fixture() -> Fixture {
    let rt = runtime();
    let url = server_url().unwrap();
    let store = rt
        .block_on(PostgresStore::connect_with(
            &url,
            PostgresOptions::default().with_schema(schema("keystead")),
        ))
        .unwrap();
    let raw_schema = schema("raw");
    let raw = rt.block_on(Raw::connect(&raw_schema));
    Fixture {
        rt,
        store: Arc::new(store),
        raw,
        raw_schema,
    }
}

fn group(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("postgres");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    group
}

fn commits(c: &mut Criterion) {
    let Fixture {
        rt, store, mut raw, ..
    } = fixture();
    let mut group = group(c);

    // Conditional put (Absent), one commit each, acknowledged = durable.
    let mut n = 1_000_000_000u64;
    group.bench_function("put_absent/keystead", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(store.commit(put(&key(n), &value(), Precondition::Absent)))
                .unwrap();
        });
    });
    group.bench_function("put_absent/raw_tokio_postgres", |b| {
        b.iter(|| {
            n += 1;
            let k = key(n).to_vec();
            let applied = rt.block_on(raw.commit(
                std::slice::from_ref(&k),
                &[value()],
                &[(k.as_slice(), None)],
            ));
            assert!(applied);
        });
    });

    // 100 unconditional puts in one commit.
    group.bench_function("batch_100/keystead", |b| {
        b.iter(|| {
            n += 100;
            rt.block_on(store.commit(batch_of(n, 100))).unwrap();
        });
    });
    group.bench_function("batch_100/raw_tokio_postgres", |b| {
        b.iter(|| {
            n += 100;
            let keys: Vec<Vec<u8>> = (n..n + 100).map(|i| key(i).to_vec()).collect();
            let values: Vec<Vec<u8>> = (0..100).map(|_| value()).collect();
            assert!(rt.block_on(raw.commit(&keys, &values, &[])));
        });
    });
    group.finish();
}

fn gets(c: &mut Criterion) {
    let Fixture {
        rt, store, mut raw, ..
    } = fixture();
    let mut group = group(c);
    // Point get among 100k keys.
    for start in (0..KEYS).step_by(10_000) {
        rt.block_on(store.commit(batch_of(start, 10_000))).unwrap();
        let keys: Vec<Vec<u8>> = (start..start + 10_000).map(|i| key(i).to_vec()).collect();
        let values: Vec<Vec<u8>> = keys.iter().map(|_| value()).collect();
        rt.block_on(raw.commit(&keys, &values, &[]));
    }
    let mut i = 0u64;
    group.bench_function("get/keystead", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(rt.block_on(store.get(&key(i))).unwrap());
        });
    });
    group.bench_function("get/raw_tokio_postgres", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(rt.block_on(raw.get(&key(i))));
        });
    });
    group.finish();
}

fn cas(c: &mut Criterion) {
    let Fixture {
        rt,
        store,
        raw_schema,
        ..
    } = fixture();
    let mut group = group(c);
    // 8 writers × 10 increments of one counter: the adapter with its pool,
    // the raw side with one connection per writer.
    group.bench_function("cas_8_writers/keystead", |b| {
        b.iter_custom(|iters| time_cas_rounds(&rt, &store, iters));
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            Arc::new(tokio::sync::Mutex::new(
                rt.block_on(Raw::connect(&raw_schema)),
            ))
        })
        .collect();
    group.bench_function("cas_8_writers/raw_tokio_postgres", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(async {
                    let tasks: Vec<_> = writers
                        .iter()
                        .map(|raw| {
                            let raw = Arc::clone(raw);
                            tokio::spawn(async move {
                                let mut raw = raw.lock().await;
                                for _ in 0..INCREMENTS_PER_WRITER {
                                    raw.increment(b"counter").await;
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                });
            }
            start.elapsed()
        });
    });
    group.finish();
}

/// The CAS comparison of [`paired`]: medians of one 8 × 10 increment run.
fn paired_cas(
    rt: &tokio::runtime::Runtime,
    store: &Arc<PostgresStore>,
    raw_schema: &str,
) -> (Duration, Duration) {
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            Arc::new(tokio::sync::Mutex::new(
                rt.block_on(Raw::connect(raw_schema)),
            ))
        })
        .collect();
    paired_medians(
        16,
        || {
            rt.block_on(async {
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|_| {
                        let store = Arc::clone(store);
                        tokio::spawn(async move {
                            for _ in 0..INCREMENTS_PER_WRITER {
                                cas_increment(&*store, b"paired-counter").await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        },
        || {
            rt.block_on(async {
                let tasks: Vec<_> = writers
                    .iter()
                    .map(|raw| {
                        let raw = Arc::clone(raw);
                        tokio::spawn(async move {
                            let mut raw = raw.lock().await;
                            for _ in 0..INCREMENTS_PER_WRITER {
                                raw.increment(b"paired-counter").await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            });
        },
    )
}

/// The same four comparisons measured pairwise — each round runs the
/// adapter and the raw statements back to back — so load from other
/// processes on a shared machine hits both sides alike. Prints a markdown
/// table of medians and ratios (adapter / raw).
fn paired(_c: &mut Criterion) {
    let Fixture {
        rt,
        store,
        mut raw,
        raw_schema,
    } = fixture();
    let mut rows = Vec::new();
    let (mut n_store, mut n_raw) = (3_000_000_000u64, 4_000_000_000u64);
    let (a, b) = paired_medians(
        400,
        || {
            n_store += 1;
            rt.block_on(store.commit(put(&key(n_store), &value(), Precondition::Absent)))
                .unwrap();
        },
        || {
            n_raw += 1;
            let k = key(n_raw).to_vec();
            let applied = rt.block_on(raw.commit(
                std::slice::from_ref(&k),
                &[value()],
                &[(k.as_slice(), None)],
            ));
            assert!(applied);
        },
    );
    rows.push(("put_absent", a, b));
    let (a, b) = paired_medians(
        200,
        || {
            n_store += 100;
            rt.block_on(store.commit(batch_of(n_store, 100))).unwrap();
        },
        || {
            n_raw += 100;
            let keys: Vec<Vec<u8>> = (n_raw..n_raw + 100).map(|i| key(i).to_vec()).collect();
            let values: Vec<Vec<u8>> = (0..100).map(|_| value()).collect();
            assert!(rt.block_on(raw.commit(&keys, &values, &[])));
        },
    );
    rows.push(("batch_100", a, b));
    for start in (0..KEYS).step_by(10_000) {
        rt.block_on(store.commit(batch_of(start, 10_000))).unwrap();
        let keys: Vec<Vec<u8>> = (start..start + 10_000).map(|i| key(i).to_vec()).collect();
        let values: Vec<Vec<u8>> = keys.iter().map(|_| value()).collect();
        rt.block_on(raw.commit(&keys, &values, &[]));
    }
    let (mut i_store, mut i_raw) = (0u64, 0u64);
    let (a, b) = paired_medians(
        4000,
        || {
            i_store = (i_store + 7919) % KEYS;
            black_box(rt.block_on(store.get(&key(i_store))).unwrap());
        },
        || {
            i_raw = (i_raw + 7919) % KEYS;
            black_box(rt.block_on(raw.get(&key(i_raw))));
        },
    );
    rows.push(("get", a, b));
    let (a, b) = paired_cas(&rt, &store, &raw_schema);
    rows.push(("cas_8_writers (80 increments)", a, b));
    println!("\npaired medians (adapter and raw alternating in each round):\n");
    println!("| operation | keystead-postgres | raw tokio-postgres | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, a, b) in rows {
        println!(
            "| {name} | {a:.1?} | {b:.1?} | {:.2}x |",
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
}

criterion_group!(benches, commits, gets, cas, paired);
criterion_main!(benches);
