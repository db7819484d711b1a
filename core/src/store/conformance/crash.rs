//! Process-level tests for file backends: SIGKILL in the middle of commits,
//! and two processes sharing one store.
//!
//! A backend adds a test target with `harness = false` whose `main` calls
//! [`main`] with its opener. The same binary plays both parts: started without
//! arguments it is the parent, which re-executes itself as children with a
//! role argument.

use super::{Opener, put};
use crate::store::key::Key;
use crate::store::{Precondition, Store};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHILD_COMMITS: &str = "--keystead-crash-child";
const CHILD_CAS: &str = "--keystead-cas-child";
const CHILD_WATCHED: &str = "--keystead-watched-child";
const CHILD_CONCURRENT: &str = "--keystead-concurrent-crash-child";
const CRASH_ROUNDS: usize = 4;
/// Writers committing at once in the concurrent crash rounds (what group
/// commit coalesces).
const CONCURRENT_WRITERS: u64 = 16;
const CONCURRENT_ROUNDS: usize = 3;
const CAS_CHILDREN: usize = 2;
const CAS_INCREMENTS: u64 = 150;

/// Entry point of a backend's crash test binary.
#[allow(clippy::needless_pass_by_value)] // called as `main(opener(..))`
pub fn main(open: Opener) {
    let args: Vec<String> = std::env::args().collect();
    let rt = super::runtime();
    match args.get(1).map(String::as_str) {
        Some(CHILD_COMMITS) => rt.block_on(child_commits(&open, PathBuf::from(&args[2]))),
        Some(CHILD_CAS) => rt.block_on(child_cas(&open, PathBuf::from(&args[2]))),
        Some(CHILD_WATCHED) => rt.block_on(child_watched(&open, PathBuf::from(&args[2]))),
        Some(CHILD_CONCURRENT) => rt.block_on(child_concurrent(&open, PathBuf::from(&args[2]))),
        _ => {
            let dir = tempfile::tempdir().expect("temporary directory");
            for round in 0..CRASH_ROUNDS {
                rt.block_on(crash_round(&open, dir.path(), round));
            }
            println!("crash test: {CRASH_ROUNDS} SIGKILL rounds kept every acknowledged commit");
            let concurrent = tempfile::tempdir().expect("temporary directory");
            for round in 0..CONCURRENT_ROUNDS {
                rt.block_on(concurrent_crash_round(&open, concurrent.path(), round));
            }
            println!(
                "crash test: {CONCURRENT_ROUNDS} SIGKILL rounds with {CONCURRENT_WRITERS} concurrent writers \
                 kept every acknowledged batch whole and no failed or half batch"
            );
            let shared = tempfile::tempdir().expect("temporary directory");
            rt.block_on(two_processes(&open, shared.path()));
            let watched = tempfile::tempdir().expect("temporary directory");
            rt.block_on(watch_across_processes(&open, watched.path()));
        }
    }
}

fn record_key(i: u64) -> Vec<u8> {
    Key::new().push("crash").push(i.to_be_bytes()).into_bytes()
}

/// Number of crash records present; they must be exactly `0..n`.
async fn contiguous_records(store: &dyn Store) -> u64 {
    let prefix = Key::new().push("crash").into_bytes();
    let mut count = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(&prefix, after.as_deref(), 1000)
            .await
            .expect("scan");
        let Some((last, _)) = page.last() else {
            return count;
        };
        after = Some(last.clone());
        for (key, versioned) in page {
            assert_eq!(
                key,
                record_key(count),
                "records are contiguous: a commit vanished"
            );
            assert_eq!(
                versioned.value,
                count.to_le_bytes(),
                "record {count} has the wrong value"
            );
            count += 1;
        }
    }
}

/// Child: commit numbered records forever, printing each acknowledged one.
async fn child_commits(open: &Opener, dir: PathBuf) {
    let store = open(dir).await.expect("child opens the store");
    let mut next = contiguous_records(&*store).await;
    let stdout = std::io::stdout();
    loop {
        store
            .commit(put(
                &record_key(next),
                &next.to_le_bytes(),
                Precondition::Absent,
            ))
            .await
            .expect("child commit");
        let mut out = stdout.lock();
        writeln!(out, "{next}")
            .and_then(|()| out.flush())
            .expect("report ack");
        next += 1;
    }
}

fn random_millis(max: u64) -> u64 {
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).expect("randomness");
    u64::from_le_bytes(bytes) % max
}

fn spawn_child(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("own executable"))
        .arg(role)
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

async fn crash_round(open: &Opener, dir: &Path, round: usize) {
    let mut child = spawn_child(CHILD_COMMITS, dir);
    let stdout = child.stdout.take().expect("piped stdout");
    let (first_ack_tx, first_ack_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            acked.push(line.parse::<u64>().expect("child prints numbers"));
            if acked.len() == 1 {
                let _ = first_ack_tx.send(());
            }
        }
        acked
    });
    // Kill at a random moment after the child has started committing.
    first_ack_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child acknowledged a first commit");
    std::thread::sleep(Duration::from_millis(random_millis(300)));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    let acked = reader.join().expect("reader thread");

    let store = open(dir.to_path_buf())
        .await
        .expect("store opens cleanly after SIGKILL");
    let present = contiguous_records(&*store).await;
    let last_acked = *acked.last().expect("at least one ack");
    assert!(
        present > last_acked,
        "round {round}: acknowledged record {last_acked} lost after SIGKILL ({present} present)"
    );
    // The store still takes writes after the crash.
    store
        .commit(put(
            b"after-crash",
            &[u8::try_from(round).unwrap_or(0)],
            Precondition::Any,
        ))
        .await
        .expect("commit after crash");
    store.close().await.expect("close");
    println!(
        "crash round {round}: {} acks, {present} records present",
        acked.len()
    );
}

/// A key of the concurrent rounds: child `run`'s writer `w`'s batch `i`,
/// half `half`.
fn concurrent_key(run: u64, w: u64, i: u64, half: &str) -> Vec<u8> {
    Key::new()
        .push("crash16")
        .push(run.to_be_bytes())
        .push(w.to_be_bytes())
        .push(i.to_be_bytes())
        .push(half)
        .into_bytes()
}

/// The value of a batch that must fail: it also checks `Absent` on a key
/// its writer committed before.
const DOOMED: &[u8] = b"doomed";

/// Child: `CONCURRENT_WRITERS` tasks, each committing two-key batches
/// (`a` and `b`, both `Absent`) forever and printing `run w i` once batch `i`
/// is acknowledged. Every fourth batch also checks `Absent` on the
/// writer's batch 0, so it fails with `Conflict` — in a group commit, next
/// to batches that succeed.
async fn child_concurrent(open: &Opener, dir: PathBuf) {
    let store: Arc<dyn Store> = open(dir).await.expect("child opens the store");
    // Keys of earlier rounds' children never collide with this one's.
    let mut run = [0u8; 8];
    SystemRandom::new().fill(&mut run).expect("randomness");
    let run = u64::from_le_bytes(run);
    let tasks: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut i = 0;
                loop {
                    let doomed = i != 0 && i % 4 == 0;
                    let value: &[u8] = if doomed { DOOMED } else { b"ok" };
                    let mut batch = crate::store::Batch::new();
                    batch
                        .put(
                            concurrent_key(run, w, i, "a"),
                            value.to_vec(),
                            Precondition::Absent,
                        )
                        .expect("batch")
                        .put(
                            concurrent_key(run, w, i, "b"),
                            value.to_vec(),
                            Precondition::Absent,
                        )
                        .expect("batch");
                    if doomed {
                        batch
                            .check(concurrent_key(run, w, 0, "a"), Precondition::Absent)
                            .expect("batch");
                    }
                    match store.commit(batch).await {
                        Ok(_) => {
                            assert!(!doomed, "a batch with a false precondition committed");
                            let stdout = std::io::stdout();
                            let mut out = stdout.lock();
                            writeln!(out, "{run} {w} {i}")
                                .and_then(|()| out.flush())
                                .expect("report ack");
                        }
                        Err(crate::store::StorageError::Conflict { .. }) if doomed => {}
                        Err(e) => panic!("child commit: {e}"),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // The writers never stop: the parent kills this process.
    let _ = futures::future::join_all(tasks).await;
}

/// SIGKILL a child running `CONCURRENT_WRITERS` writers mid-commit, then
/// check: every acknowledged batch has both keys, no batch has one key
/// without the other (no half-applied batch), and no failed batch is
/// present.
async fn concurrent_crash_round(open: &Opener, dir: &Path, round: usize) {
    let mut child = spawn_child(CHILD_CONCURRENT, dir);
    let stdout = child.stdout.take().expect("piped stdout");
    let (first_ack_tx, first_ack_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split(' ').map(|n| n.parse::<u64>().expect("run w i"));
            let mut next = || parts.next().expect("run w i");
            acked.push((next(), next(), next()));
            if u64::try_from(acked.len()) == Ok(CONCURRENT_WRITERS) {
                let _ = first_ack_tx.send(());
            }
        }
        acked
    });
    first_ack_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child acknowledged first commits");
    std::thread::sleep(Duration::from_millis(random_millis(300)));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    let acked = reader.join().expect("reader thread");

    let store = open(dir.to_path_buf())
        .await
        .expect("store opens cleanly after SIGKILL");
    let prefix = Key::new().push("crash16").into_bytes();
    let mut present = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(&prefix, after.as_deref(), 1000)
            .await
            .expect("scan");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        present.extend(page.into_iter().map(|(k, v)| (k, v.value)));
    }
    for value in present.values() {
        assert_ne!(
            value.as_slice(),
            DOOMED,
            "round {round}: a failed batch is present"
        );
    }
    for (run, w, i) in &acked {
        for half in ["a", "b"] {
            assert!(
                present.contains_key(&concurrent_key(*run, *w, *i, half)),
                "round {round}: acknowledged batch {w}/{i} lost half {half} after SIGKILL"
            );
        }
    }
    // Both halves or neither: a key `a` without its `b` (or the reverse)
    // is a half-applied batch.
    let stems = |half: &str| {
        let suffix = Key::new().push(half).into_bytes();
        present
            .keys()
            .filter(|k| k.ends_with(&suffix))
            .map(|k| k[..k.len() - suffix.len()].to_vec())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (a, b) = (stems("a"), stems("b"));
    assert_eq!(a, b, "round {round}: a half-applied batch is present");
    store.close().await.expect("close");
    println!(
        "concurrent crash round {round}: {} acks, {} batches present",
        acked.len(),
        a.len()
    );
}

/// Child: add `CAS_INCREMENTS` to a shared counter with compare-and-swap,
/// then print how many it added. Prints `open-failed` if the backend refuses
/// a second process.
async fn child_cas(open: &Opener, dir: PathBuf) {
    let store: Arc<dyn Store> = match open(dir).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("second process refused: {e}");
            println!("open-failed");
            return;
        }
    };
    for _ in 0..CAS_INCREMENTS {
        super::increment(&*store, b"counter").await;
    }
    store.close().await.expect("close");
    println!("{CAS_INCREMENTS}");
}

/// Two processes increment one counter at once. Backends that allow shared
/// access must lose no update; backends that lock the store must refuse the
/// second process cleanly. Either way the counter equals the sum of what the
/// finished children added.
async fn two_processes(open: &Opener, dir: &Path) {
    let children: Vec<_> = (0..CAS_CHILDREN)
        .map(|_| spawn_child(CHILD_CAS, dir))
        .collect();
    let mut added = 0u64;
    let mut refused = 0usize;
    for child in children {
        let output = child.wait_with_output().expect("child output");
        assert!(
            output.status.success(),
            "CAS child failed: {:?}",
            output.status
        );
        match String::from_utf8_lossy(&output.stdout).trim() {
            "open-failed" => refused += 1,
            n => added += n.parse::<u64>().expect("child prints its count"),
        }
    }
    assert!(
        refused < CAS_CHILDREN,
        "at least one process opened the store"
    );
    let store = open(dir.to_path_buf()).await.expect("reopen");
    let counter = super::counter(&*store, b"counter").await;
    assert_eq!(counter, added, "no update lost across processes");
    println!(
        "two processes: counter {counter}, {refused} process(es) refused by the backend's lock"
    );
}

fn watched_key() -> Vec<u8> {
    Key::new().push("watched").push("1").into_bytes()
}

/// Child: commit one record under the watched prefix, or report that the
/// backend refused a second process.
async fn child_watched(open: &Opener, dir: PathBuf) {
    match open(dir).await {
        Ok(store) => {
            store
                .commit(put(
                    &watched_key(),
                    b"from another process",
                    Precondition::Absent,
                ))
                .await
                .expect("child commit");
            store.close().await.expect("close");
            println!("committed");
        }
        Err(e) => {
            eprintln!("second process refused: {e}");
            println!("open-failed");
        }
    }
}

/// A watch in this process wakes for a commit made by another process
/// (backends that admit a second process at all).
async fn watch_across_processes(open: &Opener, dir: &Path) {
    let store = open(dir.to_path_buf()).await.expect("open");
    let mut watch = store
        .watch(&Key::new().push("watched").into_bytes())
        .await
        .expect("watch");
    let output = spawn_child(CHILD_WATCHED, dir)
        .wait_with_output()
        .expect("child output");
    assert!(output.status.success(), "watched child failed");
    match String::from_utf8_lossy(&output.stdout).trim() {
        "open-failed" => println!("watch across processes: the backend admits one process only"),
        "committed" => {
            tokio::time::timeout(Duration::from_secs(10), watch.changed())
                .await
                .expect("a commit by another process woke the watch")
                .expect("watch delivered");
            let got = store.get(&watched_key()).await.expect("get");
            assert!(got.is_some(), "the other process's commit is visible");
            println!("watch across processes: woke for another process's commit");
        }
        other => panic!("unexpected child output {other:?}"),
    }
    store.close().await.expect("close");
}
