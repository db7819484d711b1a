//! Model-based property test: random sequences of batches and scans run
//! against the backend and against a tiny `BTreeMap` model written from the
//! contract's words; after every step the results and the whole contents
//! must be identical.
//!
//! Versions are compared by what the contract promises, not by number: the
//! model adopts the version the backend reports for each commit, after
//! checking that it is the same for every key the batch put and larger than
//! any version that key ever had (deleted incarnations included). Contents
//! are then compared with versions, so a backend that changes a version it
//! did not write, or gives two keys of one batch different versions, fails.

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
    /// The largest version each key ever had, kept after deletes.
    highest: BTreeMap<Vec<u8>, u64>,
}

/// What a batch must do by the model: fail naming a key, or apply.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Conflict(Vec<u8>),
    /// Applies; `true` if it writes anything (and so must report a version).
    Applies(bool),
}

impl Model {
    fn precondition(&self, key: &[u8], pre: Pre) -> Precondition {
        let current = self.entries.get(key).map(|v| v.version);
        match pre {
            Pre::Any => Precondition::Any,
            Pre::Absent => Precondition::Absent,
            Pre::Current => current.map_or(Precondition::Absent, Precondition::Version),
            // For a deleted key, the version its last incarnation had: that
            // must never hold again (no ABA after re-creation).
            Pre::Stale => match (current, self.highest.get(key)) {
                (Some(v), _) => Precondition::Version(v + 1),
                (None, Some(&old)) => Precondition::Version(old),
                (None, None) => Precondition::Version(1),
            },
        }
    }

    /// The contract in its plainest words: all preconditions hold or nothing
    /// changes.
    fn outcome(&self, ops: &[(Vec<u8>, Precondition, Mut)]) -> Outcome {
        let mut sorted: Vec<_> = ops.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, pre, _) in &sorted {
            if !pre.holds(self.entries.get(key).map(|v| v.version)) {
                return Outcome::Conflict(key.clone());
            }
        }
        Outcome::Applies(ops.iter().any(|(_, _, m)| !matches!(m, Mut::Check)))
    }

    /// Apply a batch the backend committed under `version`, checking that
    /// the version is new for every key it puts.
    fn apply(
        &mut self,
        ops: &[(Vec<u8>, Precondition, Mut)],
        version: u64,
    ) -> Result<(), TestCaseError> {
        prop_assert!(version >= 1, "versions start at 1");
        for (key, _, m) in ops {
            match m {
                Mut::Put(value) => {
                    let highest = self.highest.entry(key.clone()).or_insert(0);
                    prop_assert!(
                        version > *highest,
                        "key {key:?} got version {version}, not above its earlier {highest}"
                    );
                    *highest = version;
                    self.entries.insert(
                        key.clone(),
                        Versioned {
                            value: value.clone(),
                            version,
                        },
                    );
                }
                Mut::Delete => {
                    self.entries.remove(key);
                }
                Mut::Check => {}
            }
        }
        Ok(())
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
                        let expected = model.outcome(&ops);
                        let actual = store.commit(batch).await;
                        match (&expected, actual) {
                            (Outcome::Applies(true), Ok(committed)) => {
                                let Some(version) = committed.version else {
                                    return Err(TestCaseError::fail(format!(
                                        "a writing batch reported no version: {ops:?}"
                                    )));
                                };
                                model.apply(&ops, version)?;
                            }
                            (Outcome::Applies(false), Ok(committed)) => {
                                prop_assert_eq!(committed.version, None, "a check-only batch");
                            }
                            (Outcome::Conflict(key), Err(StorageError::Conflict { key: got })) => {
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
