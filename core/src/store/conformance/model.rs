//! Model-based property test: random sequences of batches and scans run
//! against the backend and against a tiny `BTreeMap` model written from the
//! contract's words; after every step the results and the whole contents
//! (values and versions) must be identical.

use super::Opener;
use crate::store::{Batch, Precondition, StorageError, Versioned};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;

/// Keys drawn from a small set so that batches collide often; includes
/// zero and 0xFF bytes and keys that are prefixes of each other.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        vec![0x00],
        vec![0x00, 0x00],
        vec![0xFF],
        vec![0xFF, 0x01],
    ])
}

/// A precondition relative to the key's state when the batch runs.
#[derive(Debug, Clone, Copy)]
enum Pre {
    Any,
    Absent,
    Current,
    Stale,
}

#[derive(Debug, Clone)]
enum Mut {
    Put(Vec<u8>),
    Delete,
    Check,
}

#[derive(Debug, Clone)]
enum Step {
    Commit(Vec<(Vec<u8>, Pre, Mut)>),
    Scan {
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let pre = prop_oneof![
        Just(Pre::Any),
        Just(Pre::Absent),
        Just(Pre::Current),
        Just(Pre::Stale)
    ];
    let mutation = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..4).prop_map(Mut::Put),
        1 => Just(Mut::Delete),
        1 => Just(Mut::Check),
    ];
    let op = (key(), pre, mutation);
    let prefix = prop_oneof![Just(Vec::new()), key(), Just(vec![0x00]), Just(vec![0xFF])];
    prop_oneof![
        4 => prop::collection::vec(op, 0..5).prop_map(Step::Commit),
        1 => (prefix, prop::option::of(key()), 0usize..5)
            .prop_map(|(prefix, after, limit)| Step::Scan { prefix, after, limit }),
    ]
}

#[derive(Default)]
struct Model {
    entries: BTreeMap<Vec<u8>, Versioned>,
    last_commit: u64,
}

impl Model {
    fn precondition(&self, key: &[u8], pre: Pre) -> Precondition {
        let current = self.entries.get(key).map(|v| v.version);
        match pre {
            Pre::Any => Precondition::Any,
            Pre::Absent => Precondition::Absent,
            Pre::Current => current.map_or(Precondition::Absent, Precondition::Version),
            Pre::Stale => Precondition::Version(current.unwrap_or(0) + 1),
        }
    }

    /// The contract in its plainest words: all preconditions hold or nothing
    /// changes; writes share the next commit number, which is returned.
    fn commit(&mut self, ops: &[(Vec<u8>, Precondition, Mut)]) -> Result<Option<u64>, Vec<u8>> {
        let mut sorted: Vec<_> = ops.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, pre, _) in &sorted {
            if !pre.holds(self.entries.get(key).map(|v| v.version)) {
                return Err(key.clone());
            }
        }
        if ops.iter().all(|(_, _, m)| matches!(m, Mut::Check)) {
            return Ok(None);
        }
        self.last_commit += 1;
        for (key, _, m) in ops {
            match m {
                Mut::Put(value) => {
                    self.entries.insert(
                        key.clone(),
                        Versioned {
                            value: value.clone(),
                            version: self.last_commit,
                        },
                    );
                }
                Mut::Delete => {
                    self.entries.remove(key);
                }
                Mut::Check => {}
            }
        }
        Ok(Some(self.last_commit))
    }

    fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Versioned)> {
        self.entries
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Run the property test against the backend opened by `open`.
#[allow(clippy::needless_pass_by_value)] // called as `check(opener(..))`
pub fn check(open: Opener) {
    let rt = super::runtime();
    let config = Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(step(), 1..24), |steps| {
        let harness = super::Harness::new(open.clone());
        rt.block_on(async {
            let store = harness.open().await;
            let mut model = Model::default();
            for step in steps {
                match step {
                    Step::Commit(ops) => {
                        // Keys must be unique per batch: keep the first of each.
                        let mut seen = std::collections::BTreeSet::new();
                        let ops: Vec<_> = ops
                            .into_iter()
                            .filter(|(k, _, _)| seen.insert(k.clone()))
                            .map(|(k, pre, m)| {
                                let pre = model.precondition(&k, pre);
                                (k, pre, m)
                            })
                            .collect();
                        let mut batch = Batch::new();
                        for (key, pre, m) in &ops {
                            match m {
                                Mut::Put(v) => batch.put(key.clone(), v.clone(), *pre),
                                Mut::Delete => batch.delete(key.clone(), *pre),
                                Mut::Check => batch.check(key.clone(), *pre),
                            }
                            .expect("generated batch is valid");
                        }
                        let expected = model.commit(&ops);
                        let actual = store.commit(batch).await;
                        match (&expected, actual) {
                            (Ok(version), Ok(committed)) => {
                                prop_assert_eq!(*version, committed.version, "commit number");
                            }
                            (Err(key), Err(StorageError::Conflict { key: got })) => {
                                prop_assert_eq!(key, &got, "conflict key");
                            }
                            (expected, actual) => {
                                prop_assert!(
                                    false,
                                    "model {expected:?} vs backend {actual:?} for {ops:?}"
                                );
                            }
                        }
                    }
                    Step::Scan {
                        prefix,
                        after,
                        limit,
                    } => {
                        let got = store.scan(&prefix, after.as_deref(), limit).await.unwrap();
                        prop_assert_eq!(got, model.scan(&prefix, after.as_deref(), limit));
                    }
                }
                let all = store.scan(&[], None, usize::MAX).await.unwrap();
                prop_assert_eq!(all, model.scan(&[], None, usize::MAX));
            }
            store.close().await.unwrap();
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("backend diverged from the model: {e}");
    }
}
