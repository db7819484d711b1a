//! TOTP verification and recovery-code burns, in memory and on SQLite,
//! against totp-rs's own `check` in the same run.
//!
//! * `totp_verify/keystead_{memory,sqlite}`: `Mfa::verify` of a fresh code
//!   (the clock moves one step per iteration, untimed): realm, user and key
//!   reads, the attempt's lockout compare-and-swap, unsealing the seed
//!   (XChaCha20-Poly1305), three candidate steps compared in constant time,
//!   and the replay compare-and-swap commit (new last step + counter reset).
//! * `totp_verify/raw_totp_rs_check`: `totp_rs::Totp::check` of the same
//!   kind of code with skew 1 — no replay protection, no storage.
//! * `recovery_burn/keystead_{memory,sqlite}`: `Mfa::burn_recovery_code`
//!   (regenerating the set every ten burns, untimed).
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::{Criterion, criterion_group, criterion_main};
use keystead::Keystead;
use keystead::clock::ManualClock;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::id::{MfaKeyId, UserId};
use keystead::mfa::{Mfa, TotpParams};
use keystead::secret::{SecretBytes, SecretString};
use keystead::store::{MemoryStore, Store};
use keystead::user::Authority;
use keystead_benches::runtime;
use keystead_sqlite::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const SEED: &[u8; 20] = b"12345678901234567890";

fn totp() -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_secret(SEED.to_vec())
        .with_skew(1)
        .build()
        .unwrap()
}

fn unix(clock: &ManualClock) -> u64 {
    use keystead::clock::Clock;
    u64::try_from(clock.now().timestamp()).unwrap()
}

struct Fixture {
    clock: ManualClock,
    mfa: Mfa,
    alice: UserId,
    key: MfaKeyId,
}

fn fixture(rt: &Runtime, store: Arc<dyn Store>) -> Fixture {
    rt.block_on(async {
        let clock = ManualClock::new(chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap());
        let ks = Keystead::builder()
            .shared_store(store)
            .clock(clock.clone())
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let settings = keystead::suite::user::cheap_settings();
        let realm = ks.realms().create("bench", settings).await.unwrap();
        let alice = ks
            .users(realm.id)
            .register("alice", None, SecretString::from("correct horse"))
            .await
            .unwrap()
            .id;
        let mfa = ks.mfa(realm.id);
        let new = mfa
            .import_totp_key(
                alice,
                SecretBytes::new(SEED.to_vec()),
                TotpParams::default(),
                Authority::Operator,
            )
            .await
            .unwrap();
        let code = SecretString::new(totp().generate(unix(&clock)).to_string());
        mfa.activate(alice, new.key.id, &code).await.unwrap();
        Fixture {
            clock,
            mfa,
            alice,
            key: new.key.id,
        }
    })
}

fn bench_verify(c: &mut Criterion, rt: &Runtime, name: &str, f: &Fixture) {
    let raw = totp();
    c.benchmark_group("totp_verify").bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                f.clock.advance(chrono::Duration::seconds(30));
                let code = SecretString::new(raw.generate(unix(&f.clock)).to_string());
                let start = Instant::now();
                rt.block_on(f.mfa.verify(f.alice, f.key, &code)).unwrap();
                total += start.elapsed();
            }
            total
        });
    });
}

fn bench_burn(c: &mut Criterion, rt: &Runtime, name: &str, f: &Fixture) {
    c.benchmark_group("recovery_burn")
        .bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut codes = Vec::new();
                for _ in 0..iters {
                    if codes.is_empty() {
                        codes = rt
                            .block_on(f.mfa.generate_recovery_codes(f.alice, Authority::Operator))
                            .unwrap();
                    }
                    let code = codes.pop().unwrap();
                    let start = Instant::now();
                    rt.block_on(f.mfa.burn_recovery_code(f.alice, &code))
                        .unwrap();
                    total += start.elapsed();
                }
                total
            });
        });
}

fn mfa(c: &mut Criterion) {
    let rt = runtime();
    let memory = fixture(&rt, Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    let sqlite_store = rt
        .block_on(SqliteStore::open(dir.path().join("mfa.db")))
        .unwrap();
    let sqlite = fixture(&rt, Arc::new(sqlite_store));

    bench_verify(c, &rt, "keystead_memory", &memory);
    bench_verify(c, &rt, "keystead_sqlite", &sqlite);
    let raw = totp();
    let mut t = 1_750_000_000u64;
    c.benchmark_group("totp_verify")
        .bench_function("raw_totp_rs_check", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    t += 30;
                    let code = raw.generate(t).to_string();
                    let start = Instant::now();
                    assert!(raw.check(&code, t).is_some());
                    total += start.elapsed();
                }
                total
            });
        });
    bench_burn(c, &rt, "keystead_memory", &memory);
    bench_burn(c, &rt, "keystead_sqlite", &sqlite);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    targets = mfa
}
criterion_main!(benches);
