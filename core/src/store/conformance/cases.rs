//! The conformance cases. Each takes a [`Harness`] and panics on a breach of
//! the contract.

use super::{Harness, put};
use crate::store::key::Key;
use crate::store::{Batch, MAX_VALUE_LEN, Precondition, StorageError, Store, StoreClosed};
use std::collections::BTreeSet;
use std::sync::Arc;

async fn value(store: &dyn Store, key: &[u8]) -> Option<Vec<u8>> {
    store.get(key).await.expect("get").map(|v| v.value)
}

async fn version(store: &dyn Store, key: &[u8]) -> Option<u64> {
    store.get(key).await.expect("get").map(|v| v.version)
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StorageError>, expected_key: &[u8]) {
    match result {
        Err(StorageError::Conflict { key }) => {
            assert_eq!(key, expected_key, "conflict names the failing key");
        }
        other => panic!("expected Conflict at {expected_key:?}, got {other:?}"),
    }
}

/// Put, get and delete one key.
pub async fn get_put_delete_round_trip(h: Harness) {
    let store = h.open().await;
    assert_eq!(store.get(b"k").await.unwrap(), None);
    store
        .commit(put(b"k", b"v1", Precondition::Any))
        .await
        .unwrap();
    let got = store.get(b"k").await.unwrap().expect("present after put");
    assert_eq!(got.value, b"v1");
    assert!(got.version >= 1);
    let mut delete = Batch::new();
    delete.delete(b"k".to_vec(), Precondition::Any).unwrap();
    store.commit(delete).await.unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), None);
    // Deleting an absent key is a no-op, not an error.
    let mut again = Batch::new();
    again.delete(b"k".to_vec(), Precondition::Absent).unwrap();
    store.commit(again).await.unwrap();
    // An empty batch is a no-op and takes no number.
    assert_eq!(store.commit(Batch::new()).await.unwrap().version, None);
}

/// Every write gives a key a new, larger version; the keys of one batch share
/// the version `commit` reports; checks write nothing; an old version never
/// holds again, even after delete and re-create.
pub async fn versions_are_new_per_key(h: Harness) {
    let store = h.open().await;
    let mut both = Batch::new();
    both.put(b"a".to_vec(), b"1".to_vec(), Precondition::Absent)
        .unwrap();
    both.put(b"b".to_vec(), b"1".to_vec(), Precondition::Absent)
        .unwrap();
    let first = store
        .commit(both)
        .await
        .unwrap()
        .version
        .expect("a version");
    assert!(first >= 1, "versions start at 1");
    assert_eq!(
        version(&*store, b"a").await,
        Some(first),
        "commit reports the version its puts got"
    );
    assert_eq!(version(&*store, b"b").await, Some(first));

    let second = store
        .commit(put(b"a", b"2", Precondition::Version(first)))
        .await
        .unwrap()
        .version
        .expect("a version");
    assert!(second > first, "a rewrite takes a larger version");
    assert_eq!(version(&*store, b"a").await, Some(second));
    assert_eq!(
        version(&*store, b"b").await,
        Some(first),
        "untouched key keeps its version"
    );

    let mut checks = Batch::new();
    checks
        .check(b"a".to_vec(), Precondition::Version(second))
        .unwrap();
    assert_eq!(
        store.commit(checks).await.unwrap().version,
        None,
        "a batch of checks writes no version"
    );
    assert_eq!(version(&*store, b"a").await, Some(second));

    let mut delete = Batch::new();
    delete
        .delete(b"a".to_vec(), Precondition::Version(second))
        .unwrap();
    assert!(
        store.commit(delete).await.unwrap().version.is_some(),
        "a batch that deletes wrote something"
    );
    let recreated = store
        .commit(put(b"a", b"3", Precondition::Absent))
        .await
        .unwrap()
        .version
        .expect("a version");
    assert!(recreated > second, "no old version after re-creation");
    assert_eq!(version(&*store, b"a").await, Some(recreated));
    for old in [first, second] {
        assert_conflict(
            store
                .commit(put(b"a", b"x", Precondition::Version(old)))
                .await,
            b"a",
        );
    }
}

/// A key deleted and re-created many times — alone, and in batches with
/// other keys — gets a version above every one it had before each time, so
/// a `Version(v)` read from an earlier incarnation never matches.
pub async fn delete_then_recreate_never_yields_an_old_version(h: Harness) {
    let store = h.open().await;
    let mut seen: Vec<u64> = Vec::new();
    for round in 0u8..20 {
        let mut create = Batch::new();
        create
            .put(b"k".to_vec(), vec![round], Precondition::Absent)
            .unwrap();
        if round % 2 == 1 {
            // Other keys in the batch must not change what `k` gets.
            create
                .put(vec![b'o', round], vec![round], Precondition::Absent)
                .unwrap();
        }
        let v = store
            .commit(create)
            .await
            .unwrap()
            .version
            .expect("a version");
        assert_eq!(version(&*store, b"k").await, Some(v));
        if let Some(&last) = seen.last() {
            assert!(v > last, "round {round}: version {v} after {last}");
        }
        for &old in &seen {
            let mut stale = Batch::new();
            stale
                .check(b"k".to_vec(), Precondition::Version(old))
                .unwrap();
            assert_conflict(store.commit(stale).await, b"k");
        }
        seen.push(v);
        let mut delete = Batch::new();
        delete
            .delete(b"k".to_vec(), Precondition::Version(v))
            .unwrap();
        store.commit(delete).await.unwrap();
        let mut gone = Batch::new();
        gone.put(b"k".to_vec(), b"x".to_vec(), Precondition::Version(v))
            .unwrap();
        assert_conflict(store.commit(gone).await, b"k");
    }
}

/// 32 writers commit registrations (one put under `Absent` plus an `Absent`
/// check on an index key) on keys no other writer touches, all at once:
/// every commit succeeds — disjoint keys never conflict, whatever the
/// backend does to run them in parallel — and every write is there with the
/// version its commit reported.
pub async fn disjoint_key_writers_never_conflict(h: Harness) {
    const WRITERS: u32 = 32;
    const EACH: u32 = 8;
    let store = h.open().await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..EACH {
                let record = Key::new()
                    .push("user")
                    .push(w.to_be_bytes())
                    .push(i.to_be_bytes());
                let index = Key::new()
                    .push("name")
                    .push(w.to_be_bytes())
                    .push(i.to_be_bytes());
                let mut batch = Batch::new();
                batch
                    .put(
                        record.as_bytes().to_vec(),
                        i.to_be_bytes().to_vec(),
                        Precondition::Absent,
                    )
                    .unwrap()
                    .check(index.into_bytes(), Precondition::Absent)
                    .unwrap();
                let committed = store
                    .commit(batch)
                    .await
                    .expect("a disjoint commit succeeds");
                got.push((record.into_bytes(), committed.version.expect("a version")));
            }
            got
        }));
    }
    for task in tasks {
        for (key, v) in task.await.expect("writer panicked") {
            assert_eq!(version(&*store, &key).await, Some(v));
        }
    }
    let all = store
        .scan(Key::new().push("user").as_bytes(), None, usize::MAX)
        .await
        .unwrap();
    assert_eq!(all.len(), (WRITERS * EACH) as usize);
}

/// The hot key: 32 writers each make 16 read-then-compare-and-swap attempts
/// at one counter, without retrying. The only error is `Conflict`, some
/// attempts succeed (no livelock), and the counter ends at exactly the
/// number of successes. Then every writer increments until it succeeds,
/// within a deadline: each gets through.
pub async fn hot_key_counter_ends_at_its_successes(h: Harness) {
    const WRITERS: u64 = 32;
    const ATTEMPTS: u64 = 16;
    let store = h.open().await;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u64;
            for _ in 0..ATTEMPTS {
                let current = store.get(b"hot").await.expect("get the counter");
                let (count, pre) = match &current {
                    Some(v) => (
                        u64::from_be_bytes(v.value.as_slice().try_into().expect("8 bytes")),
                        Precondition::Version(v.version),
                    ),
                    None => (0, Precondition::Absent),
                };
                match store
                    .commit(put(b"hot", &(count + 1).to_be_bytes(), pre))
                    .await
                {
                    Ok(_) => wins += 1,
                    Err(StorageError::Conflict { key }) => assert_eq!(key, b"hot"),
                    Err(e) => panic!("a hot-key commit failed with other than Conflict: {e}"),
                }
                tokio::task::yield_now().await;
            }
            wins
        }));
    }
    let mut successes = 0;
    for task in tasks {
        successes += task.await.expect("writer panicked");
    }
    assert!(
        successes >= ATTEMPTS,
        "only {successes} successes: writers starve each other"
    );
    assert_eq!(super::counter(&*store, b"hot").await, successes);

    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            super::increment(&*store, b"hot").await
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        for task in tasks {
            task.await.expect("writer panicked");
        }
    })
    .await
    .expect("every writer got its increment through (no livelock)");
    assert_eq!(super::counter(&*store, b"hot").await, successes + WRITERS);
}

/// `Absent` on an existing key fails and changes nothing.
pub async fn absent_on_existing_key_conflicts(h: Harness) {
    let store = h.open().await;
    store
        .commit(put(b"user/alice", b"first", Precondition::Absent))
        .await
        .unwrap();
    assert_conflict(
        store
            .commit(put(b"user/alice", b"second", Precondition::Absent))
            .await,
        b"user/alice",
    );
    assert_eq!(value(&*store, b"user/alice").await.unwrap(), b"first");
}

/// `Version(v)` holds only for the current version of an existing key.
pub async fn version_mismatch_conflicts(h: Harness) {
    let store = h.open().await;
    assert_conflict(
        store
            .commit(put(b"k", b"v", Precondition::Version(1)))
            .await,
        b"k",
    );
    store
        .commit(put(b"k", b"v1", Precondition::Absent))
        .await
        .unwrap();
    let v = version(&*store, b"k").await.unwrap();
    assert_conflict(
        store
            .commit(put(b"k", b"v2", Precondition::Version(v + 1)))
            .await,
        b"k",
    );
    assert_conflict(
        store
            .commit(put(b"k", b"v2", Precondition::Version(v - 1)))
            .await,
        b"k",
    );
    let mut stale_delete = Batch::new();
    stale_delete
        .delete(b"k".to_vec(), Precondition::Version(v + 7))
        .unwrap();
    assert_conflict(store.commit(stale_delete).await, b"k");
    assert_eq!(value(&*store, b"k").await.unwrap(), b"v1");
    store
        .commit(put(b"k", b"v2", Precondition::Version(v)))
        .await
        .unwrap();
    assert_eq!(value(&*store, b"k").await.unwrap(), b"v2");
}

/// One failed precondition in a multi-key batch applies nothing at all, and
/// the conflict names the smallest failing key.
pub async fn failed_precondition_applies_nothing(h: Harness) {
    let store = h.open().await;
    let mut setup = Batch::new();
    setup
        .put(b"d".to_vec(), b"old".to_vec(), Precondition::Any)
        .unwrap();
    setup
        .put(b"e".to_vec(), b"keep".to_vec(), Precondition::Any)
        .unwrap();
    setup
        .put(b"f".to_vec(), b"taken".to_vec(), Precondition::Any)
        .unwrap();
    store.commit(setup).await.unwrap();
    let before = version(&*store, b"d").await;

    let mut batch = Batch::new();
    batch
        .put(b"a".to_vec(), b"new".to_vec(), Precondition::Absent)
        .unwrap();
    batch
        .put(b"b".to_vec(), b"new".to_vec(), Precondition::Any)
        .unwrap();
    batch
        .put(b"d".to_vec(), b"new".to_vec(), Precondition::Any)
        .unwrap();
    batch.delete(b"e".to_vec(), Precondition::Any).unwrap();
    batch.check(b"f".to_vec(), Precondition::Absent).unwrap(); // fails
    batch
        .put(b"g".to_vec(), b"new".to_vec(), Precondition::Version(99))
        .unwrap(); // fails too
    assert_conflict(store.commit(batch).await, b"f");

    assert_eq!(value(&*store, b"a").await, None);
    assert_eq!(value(&*store, b"b").await, None);
    assert_eq!(value(&*store, b"d").await.unwrap(), b"old");
    assert_eq!(version(&*store, b"d").await, before);
    assert_eq!(value(&*store, b"e").await.unwrap(), b"keep");
    assert_eq!(value(&*store, b"g").await, None);
}

/// Checks gate a batch without writing the checked key.
pub async fn pure_checks_gate_without_writing(h: Harness) {
    let store = h.open().await;
    store
        .commit(put(b"counter", b"5", Precondition::Any))
        .await
        .unwrap();
    let v = version(&*store, b"counter").await.unwrap();

    let mut gated = Batch::new();
    gated
        .check(b"counter".to_vec(), Precondition::Version(v))
        .unwrap();
    gated
        .check(b"missing".to_vec(), Precondition::Absent)
        .unwrap();
    gated
        .put(b"item".to_vec(), b"x".to_vec(), Precondition::Any)
        .unwrap();
    store.commit(gated).await.unwrap();
    assert_eq!(
        version(&*store, b"counter").await,
        Some(v),
        "a checked key is not written"
    );
    assert_eq!(
        value(&*store, b"missing").await,
        None,
        "a checked key is not created"
    );
    assert_eq!(value(&*store, b"item").await.unwrap(), b"x");

    let mut blocked = Batch::new();
    blocked
        .check(b"counter".to_vec(), Precondition::Version(v + 100))
        .unwrap();
    blocked
        .put(b"other".to_vec(), b"y".to_vec(), Precondition::Any)
        .unwrap();
    assert_conflict(store.commit(blocked).await, b"counter");
    assert_eq!(value(&*store, b"other").await, None);

    let mut only_checks = Batch::new();
    only_checks
        .check(b"missing".to_vec(), Precondition::Version(1))
        .unwrap();
    assert_conflict(store.commit(only_checks).await, b"missing");
}

/// Scan returns keys in ascending byte order whatever the insertion order.
pub async fn scan_is_ordered_by_key(h: Harness) {
    let store = h.open().await;
    let keys: [&[u8]; 6] = [b"p/m", b"p/a", b"p/z", b"p/b", b"p/aa", b"p/"];
    for key in keys {
        store
            .commit(put(key, key, Precondition::Absent))
            .await
            .unwrap();
    }
    let got: Vec<Vec<u8>> = store
        .scan(b"p/", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, v.value, "value belongs to its key");
            k
        })
        .collect();
    let mut expected: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    expected.sort();
    assert_eq!(got, expected);
}

/// With the [`Key`] layout, the children of `a` never include those of `ab`;
/// raw byte prefixes are plain byte prefixes.
pub async fn scan_respects_prefix_boundaries(h: Harness) {
    let store = h.open().await;
    let under_a = Key::new().push("a").push("1");
    let under_ab = Key::new().push("ab").push("1");
    let with_zero = Key::new().push([b'a', 0]).push("1");
    for key in [&under_a, &under_ab, &with_zero] {
        store
            .commit(put(key.as_bytes(), b"", Precondition::Absent))
            .await
            .unwrap();
    }
    store
        .commit(put(b"a", b"", Precondition::Absent))
        .await
        .unwrap();
    let a = Key::new().push("a");
    let got: Vec<Vec<u8>> = store
        .scan(a.as_bytes(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, vec![under_a.into_bytes()]);

    let raw: Vec<Vec<u8>> = store
        .scan(b"a", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        raw.len(),
        4,
        "a raw prefix matches every key starting with its bytes"
    );
    assert!(store.scan(b"b", None, 100).await.unwrap().is_empty());
}

/// Following the `after` cursor visits every key exactly once, in order.
pub async fn pagination_returns_every_key_once(h: Harness) {
    let store = h.open().await;
    let prefix = Key::new().push("page");
    let mut expected = BTreeSet::new();
    let mut batch = Batch::new();
    for i in 0u32..250 {
        let key = prefix.clone().push(i.to_be_bytes()).into_bytes();
        batch
            .put(key.clone(), i.to_be_bytes().to_vec(), Precondition::Absent)
            .unwrap();
        expected.insert(key);
    }
    store.commit(batch).await.unwrap();
    store
        .commit(put(b"zzz-outside", b"", Precondition::Any))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(prefix.as_bytes(), after.as_deref(), 7)
            .await
            .unwrap();
        assert!(page.len() <= 7);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page.into_iter().map(|(k, _)| k));
    }
    assert_eq!(
        seen,
        expected.iter().cloned().collect::<Vec<_>>(),
        "every key once, ascending"
    );

    assert!(
        store
            .scan(prefix.as_bytes(), None, 0)
            .await
            .unwrap()
            .is_empty(),
        "limit 0"
    );
    let from_middle = store
        .scan(prefix.as_bytes(), Some(&seen[100]), 1000)
        .await
        .unwrap();
    assert_eq!(from_middle.len(), 149);
    // A cursor that is not itself a stored key still works.
    let mut between = seen[10].clone();
    between.push(0);
    assert_eq!(
        store
            .scan(prefix.as_bytes(), Some(&between), 1)
            .await
            .unwrap()[0]
            .0,
        seen[11]
    );
    // A cursor before the prefix starts at the prefix; one past it yields nothing.
    assert_eq!(
        store.scan(prefix.as_bytes(), Some(b"a"), 1).await.unwrap()[0].0,
        seen[0]
    );
    assert!(
        store
            .scan(prefix.as_bytes(), Some(b"zz"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Empty values and values of 1 MiB (and the limit itself) round-trip.
pub async fn empty_and_one_mebibyte_values(h: Harness) {
    let store = h.open().await;
    let mebibyte: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let largest = vec![0xAB; MAX_VALUE_LEN];
    store
        .commit(put(b"empty", b"", Precondition::Absent))
        .await
        .unwrap();
    store
        .commit(put(b"mib", &mebibyte, Precondition::Absent))
        .await
        .unwrap();
    store
        .commit(put(b"max", &largest, Precondition::Absent))
        .await
        .unwrap();
    assert_eq!(value(&*store, b"empty").await.unwrap(), b"");
    assert_eq!(value(&*store, b"mib").await.unwrap(), mebibyte);
    assert_eq!(value(&*store, b"max").await.unwrap(), largest);
    let scanned = store.scan(b"mib", None, 1).await.unwrap();
    assert_eq!(scanned[0].1.value, mebibyte);
}

/// Keys are arbitrary bytes, including 0x00 and 0xFF, ordered bytewise.
pub async fn binary_keys_with_zero_and_ff_bytes(h: Harness) {
    let store = h.open().await;
    let keys: Vec<Vec<u8>> = vec![
        vec![0xFF, 0xFF],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0xFF],
        vec![0x00, 0xFF],
        vec![0x01],
        vec![0xFF, 0x00, 0xFF],
        vec![0x7F, 0x00],
    ];
    for key in &keys {
        store
            .commit(put(key, key, Precondition::Absent))
            .await
            .unwrap();
    }
    for key in &keys {
        assert_eq!(value(&*store, key).await.as_ref(), Some(key));
    }
    let mut sorted = keys.clone();
    sorted.sort();
    let all: Vec<Vec<u8>> = store
        .scan(&[], None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(all, sorted);
    let ff: Vec<Vec<u8>> = store
        .scan(&[0xFF], None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        ff,
        vec![vec![0xFF], vec![0xFF, 0x00, 0xFF], vec![0xFF, 0xFF]]
    );
    let ffff: Vec<Vec<u8>> = store
        .scan(&[0xFF, 0xFF], None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(ffff, vec![vec![0xFF, 0xFF]]);
    let zero: Vec<Vec<u8>> = store
        .scan(&[0x00], Some(&[0x00]), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(zero, vec![vec![0x00, 0x00], vec![0x00, 0xFF]]);
}

/// 64 tasks each add one to a counter with compare-and-swap, retrying on
/// conflict: the counter ends at exactly 64.
pub async fn concurrent_cas_increments_lose_no_update(h: Harness) {
    const TASKS: u64 = 64;
    let store = h.open().await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            super::increment(&*store, b"counter").await
        }));
    }
    for task in tasks {
        task.await.expect("task panicked");
    }
    assert_eq!(super::counter(&*store, b"counter").await, TASKS);
}

/// 32 tasks race to create one key with `Absent`: exactly one wins and its
/// value is the one stored.
pub async fn absent_race_has_exactly_one_winner(h: Harness) {
    let store = h.open().await;
    let mut tasks = Vec::new();
    for i in 0u8..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            match store
                .commit(put(b"unique/name", &[i], Precondition::Absent))
                .await
            {
                Ok(_) => Some(i),
                Err(StorageError::Conflict { .. }) => None,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(i) = task.await.expect("task panicked") {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    assert_eq!(
        value(&*store, b"unique/name").await.unwrap(),
        vec![winners[0]]
    );
}

/// After `close`, every call fails with a `Backend` error carrying
/// [`StoreClosed`]; closing twice is fine.
pub async fn closed_store_reports_backend_error(h: Harness) {
    let store = h.open().await;
    store
        .commit(put(b"k", b"v", Precondition::Any))
        .await
        .unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap();
    let is_closed = |e: StorageError| match e {
        StorageError::Backend(inner) => inner.is::<StoreClosed>(),
        _ => false,
    };
    assert!(is_closed(store.get(b"k").await.unwrap_err()));
    assert!(is_closed(store.scan(b"", None, 10).await.unwrap_err()));
    assert!(is_closed(
        store
            .commit(put(b"k", b"w", Precondition::Any))
            .await
            .unwrap_err()
    ));
}

/// Every acknowledged commit is there after the store is dropped and opened
/// again in the same directory (persistent backends only).
pub async fn reopen_keeps_acknowledged_commits(h: Harness) {
    let store = h.open().await;
    for i in 0u32..50 {
        store
            .commit(put(
                &i.to_be_bytes(),
                &i.to_le_bytes(),
                Precondition::Absent,
            ))
            .await
            .unwrap();
    }
    let deleted = version(&*store, &7u32.to_be_bytes()).await.unwrap();
    let mut delete = Batch::new();
    delete
        .delete(7u32.to_be_bytes().to_vec(), Precondition::Any)
        .unwrap();
    store.commit(delete).await.unwrap();
    drop(store);

    let reopened = h.open().await;
    for i in 0u32..50 {
        let expected = (i != 7).then(|| i.to_le_bytes().to_vec());
        assert_eq!(
            value(&*reopened, &i.to_be_bytes()).await,
            expected,
            "key {i}"
        );
    }
    // What versions come from survives too: the deleted key, re-created
    // after the reopen, gets a version above the one it had.
    let recreated = reopened
        .commit(put(&7u32.to_be_bytes(), b"", Precondition::Absent))
        .await
        .unwrap()
        .version
        .expect("a version");
    assert!(
        recreated > deleted,
        "version {recreated} after a reopen, not above the old {deleted}"
    );
    reopened
        .commit(put(b"after", b"", Precondition::Any))
        .await
        .unwrap();
    reopened.close().await.unwrap();
    drop(reopened);
    let third = h.open().await;
    assert_eq!(value(&*third, b"after").await.unwrap(), b"");
}

/// How long a watch may take to wake; generous for polling backends on a
/// loaded CI machine.
const WAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A watch wakes after a commit that writes under its prefix, and every
/// watch covering the key wakes.
pub async fn watch_wakes_after_commit_under_prefix(h: Harness) {
    let store = h.open().await;
    let group = Key::new().push("group").push("g1");
    let mut exact = store.watch(group.as_bytes()).await.unwrap();
    let mut parent = store
        .watch(Key::new().push("group").as_bytes())
        .await
        .unwrap();
    let mut everything = store.watch(&[]).await.unwrap();

    let key = group.clone().push("event").push(1u64.to_be_bytes());
    let writer = Arc::clone(&store);
    let commit = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        writer
            .commit(put(key.as_bytes(), b"e1", Precondition::Absent))
            .await
            .unwrap();
    });
    for watch in [&mut exact, &mut parent, &mut everything] {
        tokio::time::timeout(WAKE_TIMEOUT, watch.changed())
            .await
            .expect("watch woke in time")
            .expect("watch delivered");
    }
    commit.await.unwrap();
}

/// The subscriber pattern — watch, read from a cursor, wait, read again —
/// sees every record a concurrent writer appends, in order, none missed.
pub async fn watch_subscriber_misses_no_record(h: Harness) {
    const RECORDS: u64 = 40;
    let store = h.open().await;
    let outbox = Key::new().push("outbox");
    let mut watch = store.watch(outbox.as_bytes()).await.unwrap();

    let writer = Arc::clone(&store);
    let prefix = outbox.clone();
    let producer = tokio::spawn(async move {
        for i in 0..RECORDS {
            let key = prefix.clone().push(i.to_be_bytes());
            writer
                .commit(put(key.as_bytes(), &i.to_be_bytes(), Precondition::Absent))
                .await
                .unwrap();
            if i % 7 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });

    let mut seen = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    while (seen.len() as u64) < RECORDS {
        for (key, v) in store
            .scan(outbox.as_bytes(), cursor.as_deref(), 1000)
            .await
            .unwrap()
        {
            seen.push(u64::from_be_bytes(v.value.as_slice().try_into().unwrap()));
            cursor = Some(key);
        }
        if (seen.len() as u64) < RECORDS {
            tokio::time::timeout(WAKE_TIMEOUT, watch.changed())
                .await
                .expect("a pending record woke the watch")
                .expect("watch delivered");
        }
    }
    producer.await.unwrap();
    assert_eq!(seen, (0..RECORDS).collect::<Vec<_>>());
}

/// `get_many` answers like `get` for each key — order kept, absent keys
/// `None`, duplicates allowed — and reads one snapshot: while a writer
/// keeps setting two keys to the same new value in one batch, no
/// `get_many` of both sees them differ.
pub async fn get_many_is_one_snapshot(h: Harness) {
    let store = h.open().await;
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    let mut both = Batch::new();
    both.put(b"a".to_vec(), b"0".to_vec(), Precondition::Any)
        .unwrap();
    both.put(b"b".to_vec(), b"0".to_vec(), Precondition::Any)
        .unwrap();
    store.commit(both).await.unwrap();
    let keys: [&[u8]; 4] = [b"b", b"missing", b"a", b"b"];
    let many = store.get_many(&keys).await.unwrap();
    let mut one_by_one = Vec::new();
    for key in keys {
        one_by_one.push(store.get(key).await.unwrap());
    }
    assert_eq!(many, one_by_one);
    assert_eq!(many[1], None);
    // Many keys (a backend may read them in several statements), with the
    // pair at both ends: the same answers as `get`, and below, one snapshot.
    let filler: Vec<Vec<u8>> = (0..38u8).map(|i| vec![b'm', i]).collect();
    let mut wide: Vec<&[u8]> = vec![b"a"];
    wide.extend(filler.iter().map(Vec::as_slice));
    wide.push(b"b");
    let many = store.get_many(&wide).await.unwrap();
    assert_eq!(many.len(), wide.len());
    assert!(many[1..wide.len() - 1].iter().all(Option::is_none));
    assert_eq!(many[0], store.get(b"a").await.unwrap());
    assert_eq!(many[wide.len() - 1], store.get(b"b").await.unwrap());

    let rounds: u32 = 200;
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for n in 1..=rounds {
                let v = n.to_be_bytes().to_vec();
                let mut both = Batch::new();
                both.put(b"a".to_vec(), v.clone(), Precondition::Any)
                    .unwrap();
                both.put(b"b".to_vec(), v, Precondition::Any).unwrap();
                store.commit(both).await.unwrap();
            }
        })
    };
    let mut reads = 0u32;
    loop {
        let narrow = store.get_many(&[b"a", b"b"]).await.unwrap();
        let far = store.get_many(&wide).await.unwrap();
        let ends = [far[0].clone(), far[far.len() - 1].clone()];
        for got in [&narrow[..], &ends[..]] {
            let (a, b) = (got[0].as_ref().unwrap(), got[1].as_ref().unwrap());
            assert_eq!(a.value, b.value, "get_many saw half of a commit");
            assert_eq!(a.version, b.version);
        }
        reads += 1;
        if writer.is_finished() && reads > 10 {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer panicked");
}
