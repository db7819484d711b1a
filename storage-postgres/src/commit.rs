//! The write path: how a batch becomes one transaction, and which database
//! failures are retried. See the crate docs for why it is correct.

use super::{
    Inner, Isolation, StorageError, chain, commit_failed, failure, key_of, statement_failed,
    version_of,
};
use deadpool_postgres::Object;
use keystead::store::{Batch, Mutation, Precondition};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// Why one attempt at a transaction ended without committing.
pub(crate) enum Abort {
    /// PostgreSQL rolled the transaction back to keep transactions
    /// serializable (40001) or to break a deadlock (40P01): nothing was
    /// applied, and running the whole transaction again is safe.
    Retry(StorageError),
    /// Anything else, reported to the caller as is.
    Fail(StorageError),
}

impl From<StorageError> for Abort {
    fn from(e: StorageError) -> Self {
        Abort::Fail(e)
    }
}

/// Whether PostgreSQL (or a PostgreSQL-wire engine) asks for the whole
/// transaction to be run again.
fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A failed statement as an [`Abort`], retryable or not.
pub(crate) fn step(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Abort {
    move |e| {
        let error = statement_failed(doing, &e);
        if retryable(&e) {
            Abort::Retry(error)
        } else {
            Abort::Fail(error)
        }
    }
}

/// A failed `COMMIT` as an [`Abort`]: a serialization failure or deadlock
/// reported at commit rolled everything back, so it is retried like one
/// reported by a statement.
fn commit_abort(e: tokio_postgres::Error) -> Abort {
    if retryable(&e) {
        Abort::Retry(statement_failed(
            "committing (the batch was rolled back)",
            &e,
        ))
    } else {
        Abort::Fail(commit_failed(e))
    }
}

/// The bounded, jittered back-off between attempts of one call.
pub(crate) struct Backoff {
    attempts: u32,
    limit: u32,
}

/// The first back-off bound; it doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(1);
/// The largest back-off bound.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

impl Backoff {
    /// Allow `retries` attempts after the first.
    pub(crate) fn new(retries: u32) -> Self {
        Self {
            attempts: 0,
            limit: retries,
        }
    }

    /// After a retryable abort `error`: wait before the next attempt, or,
    /// once the retries are used up, the error to report. That error is
    /// `Backend`, never `Conflict`: no precondition was found false, the
    /// database just could not run the transaction in time.
    pub(crate) async fn wait(&mut self, error: StorageError) -> Result<(), StorageError> {
        if self.attempts >= self.limit {
            return Err(failure(
                format!(
                    "PostgreSQL aborted the transaction {} times in a row to keep transactions \
                     serializable or break a deadlock; giving up (nothing was applied)",
                    self.attempts + 1
                ),
                Some(Box::new(error)),
            ));
        }
        self.attempts += 1;
        let bound = FIRST_BACKOFF
            .saturating_mul(1 << self.attempts.min(16))
            .min(MAX_BACKOFF);
        // Full jitter: writers that collided once must not collide again
        // in lockstep.
        tokio::time::sleep(jitter(bound)).await;
        Ok(())
    }
}

/// A duration uniformly drawn from `[0, bound]`.
fn jitter(bound: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Jitter needs no secret, only different numbers on different threads
    // and calls: std's `RandomState` is seeded from the OS per thread and
    // advanced on every `new()`, which is exactly that, without a crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.saturating_add(1))
}

/// A batch laid out as the statements' array parameters.
pub(crate) struct Plan<'a> {
    /// Every key of the batch, with whether it is written (exclusive lock)
    /// or only checked (shared lock).
    keys: Vec<&'a [u8]>,
    exclusive: Vec<bool>,
    /// The keys whose precondition is not `Any`: those whose version is
    /// read.
    pub(crate) checked: Vec<&'a [u8]>,
    /// What each checked key's version must be for the fail-fast check of
    /// the lock statement: `Version(v)` is `v`, `Absent` is 0 (versions
    /// start at 1).
    expected: Vec<i64>,
    put_keys: Vec<&'a [u8]>,
    put_values: Vec<&'a [u8]>,
    delete_keys: Vec<&'a [u8]>,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(batch: &'a Batch) -> Self {
        let mut plan = Plan {
            keys: Vec::with_capacity(batch.len()),
            exclusive: Vec::with_capacity(batch.len()),
            checked: Vec::new(),
            expected: Vec::new(),
            put_keys: Vec::new(),
            put_values: Vec::new(),
            delete_keys: Vec::new(),
        };
        for (key, pre, mutation) in batch.iter() {
            match pre {
                Precondition::Any => {}
                Precondition::Absent => {
                    plan.checked.push(key);
                    plan.expected.push(0);
                }
                Precondition::Version(v) => {
                    plan.checked.push(key);
                    // A version beyond i64 exists nowhere: -1 matches no row.
                    plan.expected.push(i64::try_from(v).unwrap_or(-1));
                }
            }
            plan.keys.push(key);
            plan.exclusive.push(!matches!(mutation, Mutation::Check));
            match mutation {
                Mutation::Put(value) => {
                    plan.put_keys.push(key);
                    plan.put_values.push(value);
                }
                Mutation::Delete => plan.delete_keys.push(key),
                Mutation::Check => {}
            }
        }
        plan
    }
}

/// The `(key, version)` rows of the precondition read, by key.
pub(crate) fn decode_versions(rows: &[Row]) -> Result<HashMap<Vec<u8>, u64>, StorageError> {
    let mut versions = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = key_of(row, 0)?;
        let version = version_of(&key, row, 1)?;
        versions.insert(key, version);
    }
    Ok(versions)
}

/// The first key of `batch` (in key order) whose precondition fails.
pub(crate) fn first_conflict(batch: &Batch, versions: &HashMap<Vec<u8>, u64>) -> Option<Vec<u8>> {
    batch
        .iter()
        .find(|(key, pre, _)| !pre.holds(versions.get(*key).copied()))
        .map(|(key, _, _)| key.to_vec())
}

/// Commit a batch with writes, retrying serialization failures and
/// deadlocks; the version its keys took.
pub(crate) async fn write(
    inner: &Inner,
    client: &Object,
    batch: &Batch,
    plan: &Plan<'_>,
) -> Result<u64, StorageError> {
    let mut backoff = Backoff::new(inner.options.serialization_retries);
    loop {
        match write_once(inner, client, batch, plan).await {
            Ok(version) => return Ok(version),
            Err(Abort::Fail(e)) => return Err(e),
            Err(Abort::Retry(e)) => backoff.wait(e).await?,
        }
    }
}

/// One attempt: the transaction described in the crate docs, in at most
/// two round trips. `BEGIN` is pipelined with the key locks and the
/// precondition read; the write with `COMMIT`. PostgreSQL runs pipelined
/// statements in order and, once one fails, answers every later statement
/// of the transaction with an error and its `COMMIT` with a rollback, so a
/// pipelined `COMMIT` never commits a transaction whose lock or write
/// failed. A batch without conditioned keys sends everything at once.
///
/// The transaction is opened with a plain `BEGIN` (not tokio-postgres's
/// `Transaction`, whose `BEGIN` must be awaited alone), so this future must
/// not be dropped half-way: [`PostgresStore::commit`](crate::PostgresStore)
/// runs it on a task of its own, which ends every transaction it opens.
async fn write_once(
    inner: &Inner,
    client: &Object,
    batch: &Batch,
    plan: &Plan<'_>,
) -> Result<u64, Abort> {
    let sql = &inner.sql;
    let locking = inner.options.isolation == Isolation::ReadCommitted;
    let begin_sql = if locking {
        "BEGIN ISOLATION LEVEL READ COMMITTED"
    } else {
        "BEGIN ISOLATION LEVEL SERIALIZABLE"
    };
    // Prepared once per connection; later attempts find them cached.
    let write = client
        .prepare_cached(&sql.write)
        .await
        .map_err(step("preparing the write"))?;
    let read = if plan.checked.is_empty() {
        None
    } else {
        Some(
            client
                .prepare_cached(&sql.versions)
                .await
                .map_err(step("preparing the precondition read"))?,
        )
    };
    let lock = if locking {
        Some(
            client
                .prepare_cached(&sql.lock)
                .await
                .map_err(step("preparing the key locks"))?,
        )
    } else {
        None
    };
    let lock_params: [&(dyn ToSql + Sync); 4] =
        [&plan.keys, &plan.exclusive, &plan.checked, &plan.expected];
    let write_params: [&(dyn ToSql + Sync); 3] =
        [&plan.put_keys, &plan.put_values, &plan.delete_keys];
    let read_params: [&(dyn ToSql + Sync); 1] = [&plan.checked];
    // The lock statement at `ReadCommitted` (how many locks it took), none
    // at `Serializable`.
    let take_locks = || async {
        match &lock {
            Some(lock) => client.execute(lock, &lock_params).await.map(Some),
            None => Ok(None),
        }
    };
    let Some(read) = read else {
        // Nothing to check: one round trip. `biased` makes `join!` poll —
        // and so send — the statements in order.
        let (begun, locked, row, committed) = tokio::join!(
            biased;
            client.batch_execute(begin_sql),
            take_locks(),
            client.query_one(&write, &write_params),
            client.batch_execute("COMMIT")
        );
        begun.map_err(step("starting a commit"))?;
        locked.map_err(step("locking the batch's keys"))?;
        let row = row.map_err(step("writing the batch"))?;
        committed.map_err(commit_abort)?;
        return version_in(&row);
    };
    // The read runs only once every key lock is held: the server runs the
    // pipelined statements in order.
    let (begun, locked, rows) = tokio::join!(
        biased;
        client.batch_execute(begin_sql),
        take_locks(),
        client.query(&read, &read_params)
    );
    let decided = begun
        .map_err(step("starting a commit"))
        .and_then(|()| locked.map_err(step("locking the batch's keys")))
        .and_then(|locked| Ok((locked, rows.map_err(step("reading the batch's versions"))?)))
        .and_then(|(locked, rows)| {
            check(batch, &rows)?;
            if locked == Some(0) {
                // The fail-fast check found a precondition false and took
                // no lock, yet the read, from a later snapshot of its own,
                // found every one true (an `Absent` key deleted in
                // between; a failing read has already named its key as
                // the `Conflict`, like a check-only batch would): nothing
                // is locked to rely on, so try again.
                return Err(Abort::Retry(StorageError::backend(
                    "a precondition changed between the fail-fast check and the read",
                )));
            }
            Ok(())
        });
    if let Err(abort) = decided {
        return Err(roll_back(client, abort).await);
    }
    let (row, committed) = tokio::join!(
        biased;
        client.query_one(&write, &write_params),
        client.batch_execute("COMMIT")
    );
    let row = row.map_err(step("writing the batch"))?;
    committed.map_err(commit_abort)?;
    version_in(&row)
}

/// End a transaction that will not commit, then report why. If even the
/// `ROLLBACK` fails the connection is broken, and the answer is `Backend`
/// (nothing was applied; the connection is closed rather than pooled).
async fn roll_back(client: &Object, abort: Abort) -> Abort {
    match client.batch_execute("ROLLBACK").await {
        Ok(()) => abort,
        Err(e) => Abort::Fail(statement_failed(
            "rolling back a batch that did not commit",
            &e,
        )),
    }
}

/// The version the write statement drew.
fn version_in(row: &Row) -> Result<u64, Abort> {
    let version: i64 = row.try_get(0).map_err(|e| {
        Abort::Fail(failure(
            "the version sequence returned no number",
            Some(Box::new(super::Described(chain(&e)))),
        ))
    })?;
    u64::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            Abort::Fail(StorageError::backend(
                "the version sequence is not positive",
            ))
        })
}

/// `Conflict` naming the first failing key, if any; the caller then rolls
/// its transaction back (nothing was written).
fn check(batch: &Batch, rows: &[Row]) -> Result<(), Abort> {
    let versions = decode_versions(rows)?;
    match first_conflict(batch, &versions) {
        Some(key) => Err(Abort::Fail(StorageError::Conflict { key })),
        None => Ok(()),
    }
}

/// Run one read statement from one snapshot, retrying serialization
/// failures: alone at `ReadCommitted` (one statement is one snapshot, and
/// lock-ordered writers commit in an order every snapshot respects), and
/// inside a `SERIALIZABLE READ ONLY` transaction at `Serializable`, so that
/// SSI orders the read too — a plain snapshot there could see a state no
/// serial order of the writers ever had (the read-only anomaly).
pub(crate) async fn read(
    inner: &Inner,
    client: &Object,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    doing: &'static str,
) -> Result<Vec<Row>, StorageError> {
    if inner.options.isolation == Isolation::ReadCommitted {
        return client
            .query(statement, params)
            .await
            .map_err(|e| statement_failed(doing, &e));
    }
    let mut backoff = Backoff::new(inner.options.serialization_retries);
    loop {
        // One round trip. If the read fails, the COMMIT ends the failed
        // transaction (PostgreSQL answers it with a rollback).
        let (begun, rows, committed) = tokio::join!(
            biased;
            client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"),
            client.query(statement, params),
            client.batch_execute("COMMIT")
        );
        let result = begun
            .map_err(step("starting a read"))
            .and_then(|()| rows.map_err(step(doing)))
            .and_then(|rows| committed.map(|()| rows).map_err(step("ending a read")));
        match result {
            Ok(rows) => return Ok(rows),
            Err(Abort::Fail(e)) => return Err(e),
            Err(Abort::Retry(e)) => backoff.wait(e).await?,
        }
    }
}
