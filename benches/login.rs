//! Login, lockout and registration on SQLite, against raw argon2id in the
//! same run.
//!
//! * `login/keystead_sqlite`: `Users::authenticate` with the correct
//!   password, realm defaults (argon2id m=19456 KiB, t=2, p=1): realm,
//!   counter, username index and user reads, the attempt's counter
//!   compare-and-swap, argon2 verify off the executor, and one fsynced
//!   commit (session + index + counter reset).
//! * `login/raw_argon2_verify`: `argon2` verifying the same PHC string on the
//!   calling thread; `…_unblock` does the same on the `blocking` pool, to
//!   separate the thread hop from keystead's own cost.
//! * `locked_out/keystead_sqlite`: a login for a hard-locked account: refused
//!   before any hashing.
//! * `register/…`: registration with the default cost and with the
//!   cheapest cost the policy allows (storage + validation overhead only).
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use criterion::{Criterion, criterion_group, criterion_main};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::realm::{LockoutPolicy, RealmSettings};
use keystead::secret::SecretString;
use keystead::user::{LoginOutcome, Users};
use keystead_benches::runtime;
use keystead_sqlite::SqliteStore;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const PASSWORD: &str = "correct horse battery staple";
/// Rounds of the interleaved login / raw-verify comparison.
const PAIRED_ROUNDS: usize = 60;

fn secret() -> SecretString {
    SecretString::from(PASSWORD)
}

/// A keystead on a fresh SQLite file, and a realm with `settings`.
fn fixture(settings: RealmSettings) -> (Runtime, tempfile::TempDir, Users) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let users = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("login.db"))
            .await
            .unwrap();
        let ks = Keystead::builder()
            .store(store)
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let realm = ks.realms().create("bench", settings).await.unwrap();
        ks.users(realm.id)
    });
    (rt, dir, users)
}

fn login(c: &mut Criterion) {
    let (rt, _dir, users) = fixture(RealmSettings::default());
    rt.block_on(users.register("alice", None, secret()))
        .unwrap();
    let params = argon2::Params::new(19_456, 2, 1, Some(32)).unwrap();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let phc = argon
        .hash_password_with_salt(PASSWORD.as_bytes(), b"0123456789abcdef")
        .unwrap()
        .to_string();

    let mut group = c.benchmark_group("login");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(12));
    group.bench_function("keystead_sqlite", |b| {
        b.iter(|| {
            let outcome = rt.block_on(users.authenticate("alice", secret())).unwrap();
            assert!(matches!(outcome, LoginOutcome::Authenticated(_)));
        });
    });
    group.bench_function("raw_argon2_verify", |b| {
        b.iter(|| {
            let parsed = PasswordHash::new(&phc).unwrap();
            argon.verify_password(PASSWORD.as_bytes(), &parsed).unwrap();
        });
    });
    group.bench_function("raw_argon2_verify_unblock", |b| {
        b.iter(|| {
            let phc = phc.clone();
            let argon = argon.clone();
            rt.block_on(blocking::unblock(move || {
                let parsed = PasswordHash::new(&phc).unwrap();
                argon.verify_password(PASSWORD.as_bytes(), &parsed).unwrap();
            }));
        });
    });
    group.finish();

    // The same three, interleaved round by round, so load from other
    // processes hits all of them alike; prints medians and ratios.
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..PAIRED_ROUNDS {
        let start = Instant::now();
        let outcome = rt.block_on(users.authenticate("alice", secret())).unwrap();
        assert!(matches!(outcome, LoginOutcome::Authenticated(_)));
        samples[0].push(start.elapsed());
        let start = Instant::now();
        let parsed = PasswordHash::new(&phc).unwrap();
        argon.verify_password(PASSWORD.as_bytes(), &parsed).unwrap();
        samples[1].push(start.elapsed());
        let start = Instant::now();
        let (a, p) = (argon.clone(), phc.clone());
        rt.block_on(blocking::unblock(move || {
            let parsed = PasswordHash::new(&p).unwrap();
            a.verify_password(PASSWORD.as_bytes(), &parsed).unwrap();
        }));
        samples[2].push(start.elapsed());
    }
    let [login, inline, unblock] = samples.map(|mut v| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    });
    println!(
        "login/paired medians over {PAIRED_ROUNDS} rounds: keystead_sqlite {login:.2} ms, \
         raw_argon2_verify {inline:.2} ms ({:.3}x), raw_argon2_verify_unblock {unblock:.2} ms ({:.3}x)",
        login / inline,
        login / unblock
    );
}

fn locked_out(c: &mut Criterion) {
    let (rt, _dir, users) = fixture(RealmSettings {
        lockout: LockoutPolicy {
            free_attempts: 1,
            hard_cap: 2,
            ..LockoutPolicy::default()
        },
        ..RealmSettings::default()
    });
    rt.block_on(users.register("mallory", None, secret()))
        .unwrap();
    for _ in 0..2 {
        let r = rt.block_on(users.authenticate("mallory", SecretString::from("wrong")));
        assert_eq!(r.unwrap_err().code(), "INVALID_CREDENTIALS");
        // Past the 1 s back-off after the first failure.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let mut group = c.benchmark_group("locked_out");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("keystead_sqlite", |b| {
        b.iter(|| {
            let r = rt.block_on(users.authenticate("mallory", secret()));
            assert_eq!(black_box(r).unwrap_err().code(), "TOO_MANY_ATTEMPTS");
        });
    });
    group.finish();
}

fn register(c: &mut Criterion) {
    let mut group = c.benchmark_group("register");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(6));
    // argon2id at its minimum (m=8 KiB, t=1, p=1).
    let cheap = keystead::suite::user::cheap_settings();
    for (name, settings) in [
        ("keystead_sqlite_default_cost", RealmSettings::default()),
        ("keystead_sqlite_min_cost", cheap),
    ] {
        let (rt, _dir, users) = fixture(settings);
        let mut n = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(users.register(&format!("user{n}"), None, secret()))
                    .unwrap();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, login, locked_out, register);
criterion_main!(benches);
