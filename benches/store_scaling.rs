//! Write scaling (issue 20): commits per second for 1, 8 and 32 concurrent
//! writers on disjoint keys — each commit one put under `Absent` plus an
//! `Absent` check, like a registration — and for 32 writers
//! compare-and-swap-incrementing one hot key, per backend (SQLite with
//! `synchronous=FULL`, sled with flush-on-commit, PostgreSQL at READ
//! COMMITTED), each beside the raw driver running the same statements in the
//! same run. It ends with one line per backend: `scaling <backend> 32/1 =
//! <ratio>` (the adapter's 32-writer disjoint throughput over its 1-writer
//! throughput).
//!
//! A closed-loop driver, not criterion: throughput under a fixed
//! concurrency for a fixed time (`KEYSTEAD_SCALING_SECS`, 2 s by default,
//! per measurement). PostgreSQL is a throwaway cluster from
//! `keystead_postgres::testing` (`fsync=on`, `synchronous_commit=on`), or
//! `KEYSTEAD_TEST_POSTGRES_URL`.
#![allow(missing_docs)]

use futures::future::BoxFuture;
use keystead::store::{Batch, Precondition, StorageError, Store};
use keystead_postgres::testing::{raw_client, server_url};
use keystead_postgres::{PostgresOptions, PostgresStore};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One concurrent writer: its own connection on the raw side, a handle on
/// the shared store on the adapter side.
trait Writer: Send {
    /// One registration commit on keys no other writer touches.
    fn register<'a>(&'a mut self, key: &'a [u8], index: &'a [u8]) -> BoxFuture<'a, ()>;
    /// One read-then-compare-and-swap attempt on the hot key; whether it
    /// committed.
    fn hot(&mut self) -> BoxFuture<'_, bool>;
}

/// Makes writers for one side of one backend.
type Factory = Arc<dyn Fn() -> BoxFuture<'static, Box<dyn Writer>> + Send + Sync>;

const HOT: &[u8] = b"hot";

fn counter_of(value: &[u8]) -> u64 {
    u64::from_be_bytes(value.try_into().expect("8-byte counter"))
}

// ---------------------------------------------------------------- adapter

struct Adapter(Arc<dyn Store>);

impl Writer for Adapter {
    fn register<'a>(&'a mut self, key: &'a [u8], index: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut batch = Batch::new();
            batch
                .put(key.to_vec(), vec![0x5A; 100], Precondition::Absent)
                .unwrap()
                .check(index.to_vec(), Precondition::Absent)
                .unwrap();
            self.0.commit(batch).await.unwrap();
        })
    }

    fn hot(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let (count, pre) = match self.0.get(HOT).await.unwrap() {
                Some(v) => (counter_of(&v.value), Precondition::Version(v.version)),
                None => (0, Precondition::Absent),
            };
            let mut batch = Batch::new();
            batch
                .put(HOT.to_vec(), (count + 1).to_be_bytes().to_vec(), pre)
                .unwrap();
            match self.0.commit(batch).await {
                Ok(_) => true,
                Err(StorageError::Conflict { .. }) => false,
                Err(e) => panic!("hot-key commit failed: {e}"),
            }
        })
    }
}

fn adapter(store: Arc<dyn Store>) -> Factory {
    Arc::new(move || {
        let store = Arc::clone(&store);
        Box::pin(async move { Box::new(Adapter(store)) as Box<dyn Writer> })
    })
}

// ---------------------------------------------------------------- PostgreSQL raw

/// The adapter's READ COMMITTED statements (fail-fast lock included), on
/// one connection per writer —
/// without the `NOTIFY` the adapter sends after its commits (outside the
/// write transaction, coalesced), so this is the data path's ceiling.
struct RawPostgres {
    client: tokio_postgres::Client,
    get: tokio_postgres::Statement,
    lock: tokio_postgres::Statement,
    versions: tokio_postgres::Statement,
    write: tokio_postgres::Statement,
}

async fn raw_postgres(schema: String) -> Box<dyn Writer> {
    let client = raw_client(&server_url().unwrap()).await.unwrap();
    client
        .batch_execute(&format!(
            "SET search_path TO {schema};
             CREATE TABLE IF NOT EXISTS kv (key BYTEA PRIMARY KEY, value BYTEA NOT NULL, version BIGINT NOT NULL);
             CREATE SEQUENCE IF NOT EXISTS kv_version AS BIGINT MINVALUE 1 CACHE 1;"
        ))
        .await
        .unwrap();
    let salt = schema.bytes().fold(String::new(), |mut hex, b| {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
        hex
    });
    let get = client
        .prepare("SELECT value, version FROM kv WHERE key = $1")
        .await
        .unwrap();
    let lock = client
        .prepare(&format!(
            "SELECT CASE WHEN exclusive THEN pg_advisory_xact_lock(id)
                         ELSE pg_advisory_xact_lock_shared(id) END
             FROM (SELECT id, bool_or(exclusive) AS exclusive
                   FROM (SELECT ('x' || encode(substring(sha256(decode('{salt}', 'hex') || k)
                                                         FROM 1 FOR 8), 'hex'))::bit(64)::bigint AS id,
                                e AS exclusive
                         FROM unnest($1::bytea[], $2::bool[]) AS t(k, e)
                         WHERE (SELECT coalesce(bool_and(coalesce(kv.version, 0) = c.expected), true)
                                FROM unnest($3::bytea[], $4::bigint[]) AS c(k, expected)
                                LEFT JOIN kv ON kv.key = c.k)) AS ids
                   GROUP BY id ORDER BY id OFFSET 0) AS sorted"
        ))
        .await
        .unwrap();
    let versions = client
        .prepare("SELECT key, version FROM kv WHERE key = ANY($1)")
        .await
        .unwrap();
    let write = client
        .prepare(
            "WITH v AS (SELECT nextval('kv_version') AS version),
                  put AS (INSERT INTO kv (key, value, version)
                          SELECT k, val, v.version FROM unnest($1::bytea[], $2::bytea[]) AS t(k, val), v
                          ON CONFLICT (key) DO UPDATE
                          SET value = EXCLUDED.value, version = EXCLUDED.version),
                  del AS (DELETE FROM kv WHERE key = ANY($3))
             SELECT version FROM v",
        )
        .await
        .unwrap();
    Box::new(RawPostgres {
        client,
        get,
        lock,
        versions,
        write,
    })
}

impl RawPostgres {
    /// BEGIN, locks and read, pipelined; check; write and COMMIT,
    /// pipelined — as the adapter does. `expected`: the version each
    /// checked key must have.
    async fn commit(
        &mut self,
        locked: &[&[u8]],
        exclusive: &[bool],
        checked: &[(&[u8], Option<i64>)],
        put: (&[u8], &[u8]),
    ) -> bool {
        let client = &self.client;
        let check_keys: Vec<&[u8]> = checked.iter().map(|(k, _)| *k).collect();
        let expected: Vec<i64> = checked.iter().map(|(_, v)| v.unwrap_or(0)).collect();
        let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&locked, &exclusive, &check_keys, &expected];
        let read_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&check_keys];
        let (begun, l, rows) = tokio::join!(
            biased;
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.execute(&self.lock, &lock_params),
            client.query(&self.versions, &read_params)
        );
        begun.unwrap();
        // 0 rows: the fail-fast check took no lock (the read below then
        // shows the mismatch, or the attempt just counts as failed).
        let rows = rows.unwrap();
        let holds = l.unwrap() != 0
            && checked.iter().all(|(key, expected)| {
                let current = rows
                    .iter()
                    .find(|r| r.get::<_, &[u8]>(0) == *key)
                    .map(|r| r.get::<_, i64>(1));
                current == *expected
            });
        if !holds {
            client.batch_execute("ROLLBACK").await.unwrap();
            return false;
        }
        let none: &[&[u8]] = &[];
        let (keys, values) = ([put.0], [put.1]);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&keys.as_slice(), &values.as_slice(), &none];
        let (row, committed) = tokio::join!(
            biased;
            client.query_one(&self.write, &params),
            client.batch_execute("COMMIT")
        );
        row.unwrap();
        committed.unwrap();
        true
    }
}

impl Writer for RawPostgres {
    fn register<'a>(&'a mut self, key: &'a [u8], index: &'a [u8]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let value = [0x5A; 100];
            assert!(
                self.commit(
                    &[index, key],
                    &[false, true],
                    &[(index, None), (key, None)],
                    (key, &value),
                )
                .await
            );
        })
    }

    fn hot(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let row = self.client.query_opt(&self.get, &[&HOT]).await.unwrap();
            let (count, expected) = match row {
                Some(r) => (counter_of(r.get(0)), Some(r.get::<_, i64>(1))),
                None => (0, None),
            };
            let next = (count + 1).to_be_bytes();
            self.commit(&[HOT], &[true], &[(HOT, expected)], (HOT, &next))
                .await
        })
    }
}

// ---------------------------------------------------------------- SQLite raw

/// The adapter's statements (immediate transaction, version reads, the
/// counter SQLite keeps inside its single writer, upsert), on one connection
/// per writer, run on the blocking pool.
struct RawSqlite(Option<Connection>);

fn sqlite_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(60)).unwrap();
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

fn sqlite_commit(
    conn: &mut Connection,
    checked: &[(&[u8], Option<i64>)],
    put: (&[u8], &[u8]),
) -> bool {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    for (key, expected) in checked {
        let current: Option<i64> = tx
            .prepare_cached("SELECT version FROM kv WHERE key = ?1")
            .unwrap()
            .query_row([key], |r| r.get(0))
            .optional()
            .unwrap();
        if current != *expected {
            return false;
        }
    }
    let version: i64 = tx
        .prepare_cached("UPDATE counter SET n = n + 1 RETURNING n")
        .unwrap()
        .query_row([], |r| r.get(0))
        .unwrap();
    tx.prepare_cached(
        "INSERT INTO kv VALUES (?1, ?2, ?3) ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
    )
    .unwrap()
    .execute(params![put.0, put.1, version])
    .unwrap();
    tx.commit().unwrap();
    true
}

impl RawSqlite {
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> T {
        let mut conn = self.0.take().unwrap();
        let (conn, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut conn);
            (conn, out)
        })
        .await
        .unwrap();
        self.0 = Some(conn);
        out
    }
}

impl Writer for RawSqlite {
    fn register<'a>(&'a mut self, key: &'a [u8], index: &'a [u8]) -> BoxFuture<'a, ()> {
        let (key, index) = (key.to_vec(), index.to_vec());
        Box::pin(async move {
            let ok = self
                .run(move |conn| {
                    sqlite_commit(conn, &[(&index, None), (&key, None)], (&key, &[0x5A; 100]))
                })
                .await;
            assert!(ok);
        })
    }

    fn hot(&mut self) -> BoxFuture<'_, bool> {
        Box::pin(self.run(|conn| {
            let current: Option<(Vec<u8>, i64)> = conn
                .prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
                .unwrap()
                .query_row([HOT], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .unwrap();
            let (count, expected) = match current {
                Some((value, version)) => (counter_of(&value), Some(version)),
                None => (0, None),
            };
            sqlite_commit(conn, &[(HOT, expected)], (HOT, &(count + 1).to_be_bytes()))
        }))
    }
}

// ---------------------------------------------------------------- sled raw

/// What an application would write on sled by hand for the same
/// guarantees: one multi-tree transaction that checks, bumps a counter
/// (for versions) and inserts, then `flush`; on the blocking pool.
#[derive(Clone)]
struct RawSled {
    db: sled::Db,
    kv: sled::Tree,
    meta: sled::Tree,
}

impl RawSled {
    /// `checked`: the counter value (as version) each key must have.
    fn commit(&self, checked: &[(&[u8], Option<u64>)], put: (&[u8], &[u8])) -> bool {
        let result = (&self.kv, &self.meta).transaction(|(kv, meta)| {
            for (key, expected) in checked {
                let current = kv
                    .get(key)?
                    .map(|v| u64::from_be_bytes(v[..8].try_into().unwrap()));
                if current != *expected {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            let last = meta
                .get(b"n")?
                .map_or(0, |n| u64::from_be_bytes(n.as_ref().try_into().unwrap()));
            meta.insert(b"n", &(last + 1).to_be_bytes())?;
            let mut stored = (last + 1).to_be_bytes().to_vec();
            stored.extend_from_slice(put.1);
            kv.insert(put.0, stored)?;
            Ok(())
        });
        match result {
            Ok(()) => {
                self.db.flush().unwrap();
                true
            }
            Err(sled::transaction::TransactionError::Abort(())) => false,
            Err(e) => panic!("{e:?}"),
        }
    }
}

impl Writer for RawSled {
    fn register<'a>(&'a mut self, key: &'a [u8], index: &'a [u8]) -> BoxFuture<'a, ()> {
        let (key, index, raw) = (key.to_vec(), index.to_vec(), self.clone());
        Box::pin(async move {
            let ok = tokio::task::spawn_blocking(move || {
                raw.commit(&[(&index, None), (&key, None)], (&key, &[0x5A; 100]))
            })
            .await
            .unwrap();
            assert!(ok);
        })
    }

    fn hot(&mut self) -> BoxFuture<'_, bool> {
        let raw = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let (count, expected) = match raw.kv.get(HOT).unwrap() {
                    Some(v) => (
                        counter_of(&v[8..]),
                        Some(u64::from_be_bytes(v[..8].try_into().unwrap())),
                    ),
                    None => (0, None),
                };
                raw.commit(&[(HOT, expected)], (HOT, &(count + 1).to_be_bytes()))
            })
            .await
            .unwrap()
        })
    }
}

// ---------------------------------------------------------------- driver

fn duration() -> Duration {
    let secs = std::env::var("KEYSTEAD_SCALING_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Commits per second of `writers` concurrent writers from `factory`, for
/// [`duration`]: registrations on disjoint keys, or (`hot`) successful
/// compare-and-swaps of one key.
async fn measure(factory: &Factory, writers: u32, hot: bool, run: u64) -> f64 {
    let mut made = Vec::new();
    for _ in 0..writers {
        made.push(factory().await);
    }
    let commits = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration();
    let tasks: Vec<_> = made
        .into_iter()
        .enumerate()
        .map(|(w, mut writer)| {
            let commits = Arc::clone(&commits);
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let ok = if hot {
                        writer.hot().await
                    } else {
                        let key = format!("user/{run}/{w}/{i}").into_bytes();
                        let index = format!("name/{run}/{w}/{i}").into_bytes();
                        writer.register(&key, &index).await;
                        true
                    };
                    i += 1;
                    if ok {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = commits.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    rate
}

struct Backend {
    name: &'static str,
    keystead: Factory,
    raw: Factory,
}

async fn backends(dir: &Path) -> Vec<Backend> {
    let sqlite: Arc<dyn Store> = Arc::new(
        keystead_sqlite::SqliteStore::open(dir.join("keystead.db"))
            .await
            .unwrap(),
    );
    let raw_sqlite_path: PathBuf = dir.join("raw.db");
    drop(sqlite_connection(&raw_sqlite_path));
    let sled_store: Arc<dyn Store> = Arc::new(
        keystead_sled::SledStore::open(dir.join("keystead-sled"))
            .await
            .unwrap(),
    );
    let db = sled::open(dir.join("raw-sled")).unwrap();
    let raw_sled = RawSled {
        kv: db.open_tree("kv").unwrap(),
        meta: db.open_tree("meta").unwrap(),
        db,
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("{}_{nanos:x}", std::process::id());
    let postgres: Arc<dyn Store> = Arc::new(
        PostgresStore::connect_with(
            &server_url().unwrap(),
            PostgresOptions::default()
                .with_schema(format!("scaling_keystead_{tag}"))
                .with_pool_size(32),
        )
        .await
        .unwrap(),
    );
    let raw_schema = format!("scaling_raw_{tag}");
    raw_client(&server_url().unwrap())
        .await
        .unwrap()
        .batch_execute(&format!("CREATE SCHEMA {raw_schema}"))
        .await
        .unwrap();
    vec![
        Backend {
            name: "sqlite",
            keystead: adapter(sqlite),
            raw: Arc::new(move || {
                let path = raw_sqlite_path.clone();
                Box::pin(async move {
                    Box::new(RawSqlite(Some(sqlite_connection(&path)))) as Box<dyn Writer>
                })
            }),
        },
        Backend {
            name: "sled",
            keystead: adapter(sled_store),
            raw: Arc::new(move || {
                let raw = raw_sled.clone();
                Box::pin(async move { Box::new(raw) as Box<dyn Writer> })
            }),
        },
        Backend {
            name: "postgres",
            keystead: adapter(postgres),
            raw: Arc::new(move || Box::pin(raw_postgres(raw_schema.clone()))),
        },
    ]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects backends.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let mut summary = Vec::new();
        let mut run = 0u64;
        for backend in backends(dir.path()).await {
            if !filter.is_empty() && !filter.iter().any(|f| backend.name.contains(f.as_str())) {
                continue;
            }
            let mut single = 0.0;
            let mut at_32 = 0.0;
            for (writers, hot) in [(1, false), (8, false), (32, false), (32, true)] {
                run += 1;
                let ours = measure(&backend.keystead, writers, hot, run).await;
                run += 1;
                let raw = measure(&backend.raw, writers, hot, run).await;
                let shape = if hot { "hot key" } else { "disjoint" };
                println!(
                    "{:<8} {shape:<8} writers={writers:<2} keystead={ours:>8.0}/s raw={raw:>8.0}/s keystead/raw={:.2}",
                    backend.name,
                    ours / raw
                );
                if !hot && writers == 1 {
                    single = ours;
                }
                if !hot && writers == 32 {
                    at_32 = ours;
                }
            }
            summary.push((backend.name, at_32 / single));
        }
        for (name, ratio) in summary {
            println!("scaling {name} 32/1 = {ratio:.2}");
        }
    });
}
