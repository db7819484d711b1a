//! Token service costs, each against the raw primitive in the same run.
//!
//! * `access_issue/keystead_memory`: `Tokens::create_scoped_token` on the
//!   in-memory store — realm, session, user and signing-key reads, claims
//!   serialization and an Ed25519 JWS signature (an access token without
//!   the refresh family's commit); vs `raw_ring_sign` of a signing input of
//!   the same length and vs `jsonwebtoken` encoding equivalent claims.
//! * `access_verify/keystead_memory`: `Tokens::verify_access_token` — shape,
//!   realm and key-record reads, signature, claims, expire-all and session
//!   checks; vs `raw_ring_verify` of the same signature and vs
//!   `jsonwebtoken` decoding the same token from the JWKS.
//! * `refresh_rotation/keystead_sqlite`: `Tokens::refresh` on SQLite of the
//!   token the same instance handed out — it starts from the rotation it
//!   remembers, so it makes one store call, the commit (which checks family,
//!   session, realm, expire-all marks, user, signing keys and client), and
//!   signs the new access token while the commit is in flight.
//!   `keystead_sqlite_read`: the same with two instances taking turns, so
//!   every refresh is of a token the other handed out and reads first.
//!   Raw sides on the same store: `sqlite_refresh_commit_raw`, the
//!   refresh's own commit replayed (recorded from a real refresh through
//!   `keystead::suite::probe::ProbeStore`: the same
//!   keys and preconditions, the family rewritten beside itself, a new
//!   index entry each time); `sqlite_refresh_commit_and_sign_raw`, that
//!   commit with a ring Ed25519 signature of an access token's signing input
//!   made while it is in flight (the two primitives a remembered refresh
//!   combines); `sqlite_read_then_commit_raw`, one read of every
//!   record that commit checks, then the commit; `sqlite_single_commit`, one
//!   fsynced batch of three 150-byte records (the baseline of earlier runs).
//!   The run ends with paired medians of the same comparisons.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration as ChronoDuration;
use criterion::{Criterion, criterion_group, criterion_main};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::crypto::jws::{JwsAlgorithm, SigningKey};
use keystead::secret::SecretString;
use keystead::store::key::Key;
use keystead::store::{Batch, MemoryStore, Mutation, Precondition, Store};
use keystead::suite::probe::ProbeStore;
use keystead::token::{AccessRequest, NewScopedToken, Tokens};
use keystead::user::LoginOutcome;
use keystead_benches::{paired_medians, runtime};
use keystead_sqlite::SqliteStore;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

const ISSUER: &str = "https://id.example/realms/bench";
const AUDIENCE: &str = "https://api.example";

fn request() -> AccessRequest {
    AccessRequest::public("web", vec!["read".into(), "write".into()])
}

/// A realm with one logged-in user on `store`; returns the instance, its
/// token handle and the session id.
fn fixture(rt: &Runtime, store: Arc<dyn Store>) -> (Keystead, Tokens, keystead::id::SessionId) {
    rt.block_on(async {
        let ks = Keystead::builder()
            .shared_store(store)
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let settings = keystead::realm::RealmSettings {
            issuer_url: Some(ISSUER.into()),
            ..keystead::suite::user::cheap_settings()
        };
        let realm = ks.realms().create("bench", settings).await.unwrap();
        ks.oauth(realm.id)
            .create_client(keystead::oauth::NewClient::first_party(
                "web",
                AUDIENCE,
                vec!["read".into(), "write".into()],
            ))
            .await
            .unwrap();
        let users = ks.users(realm.id);
        users
            .register("alice", None, SecretString::from("correct horse"))
            .await
            .unwrap();
        let LoginOutcome::Authenticated(session) = users
            .authenticate("alice", SecretString::from("correct horse"))
            .await
            .unwrap()
        else {
            panic!("no MFA in the bench realm");
        };
        let tokens = ks.tokens(realm.id);
        tokens
            .ensure_signing_key(JwsAlgorithm::EdDsa)
            .await
            .unwrap();
        (ks, tokens, session.id)
    })
}

fn access_tokens(c: &mut Criterion) {
    let rt = runtime();
    let (_, tokens, session) = fixture(&rt, Arc::new(MemoryStore::new()));
    let scoped = NewScopedToken {
        name: "bench".into(),
        request: request(),
        expires_in: ChronoDuration::hours(1),
    };
    let token = rt
        .block_on(tokens.create_scoped_token(session, &scoped))
        .unwrap()
        .token
        .expose()
        .to_owned();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let jwks = rt.block_on(tokens.jwks()).unwrap();
    let x = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let raw_key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();

    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    let pkcs8 = SigningKey::generate(JwsAlgorithm::EdDsa)
        .unwrap()
        .to_pkcs8();
    let encoding = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.expose());
    let claims: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some("k".into());

    let mut g = c.benchmark_group("access_issue");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("keystead_memory", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(tokens.create_scoped_token(session, &scoped))
                    .unwrap(),
            )
        });
    });
    g.bench_function("raw_ring_sign", |b| {
        b.iter(|| black_box(raw_key.sign_raw(input.as_bytes()).unwrap()));
    });
    g.bench_function("jsonwebtoken", |b| {
        b.iter(|| black_box(jsonwebtoken::encode(&header, &claims, &encoding).unwrap()));
    });
    g.finish();

    let mut g = c.benchmark_group("access_verify");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("keystead_memory", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(tokens.verify_access_token(&token, AUDIENCE))
                    .unwrap(),
            )
        });
    });
    g.bench_function("raw_ring_verify", |b| {
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &x);
        b.iter(|| key.verify(input.as_bytes(), &signature).unwrap());
    });
    g.bench_function("raw_dalek_verify", |b| {
        use ed25519_dalek::Verifier as _;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&x.clone().try_into().unwrap()).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        b.iter(|| key.verify(input.as_bytes(), &sig).unwrap());
    });
    g.bench_function("raw_awslc_verify", |b| {
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x);
        b.iter(|| key.verify(input.as_bytes(), &signature).unwrap());
    });
    g.bench_function("jsonwebtoken", |b| {
        b.iter(|| {
            black_box(
                jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap(),
            )
        });
    });
    g.finish();
}

fn refresh_rotation(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("tokens.db")))
        .unwrap();
    // Keeps one real refresh's batch for the raw side to replay.
    let recording = ProbeStore::new(Arc::new(sqlite));
    let store: Arc<dyn Store> = recording.clone();
    let (ks, tokens, session) = fixture(&rt, Arc::clone(&store));
    // A second instance on the same store: a token one instance handed out
    // is refreshed by the other on a read.
    let twin = ks.second_instance().tokens(tokens.realm());
    let mut current = rt
        .block_on(tokens.issue(session, &request()))
        .unwrap()
        .refresh_token
        .unwrap();
    let refresh = |by: &Tokens, token: &mut SecretString| {
        let pair = rt.block_on(by.refresh(token, "web")).unwrap();
        *token = pair.refresh_token.unwrap();
    };
    // The family's first refresh reads; the second starts from the
    // remembered rotation and its commit is recorded for the raw side.
    refresh(&tokens, &mut current);
    recording.record_next();
    let pair = rt.block_on(tokens.refresh(&current, "web")).unwrap();
    current = pair.refresh_token.unwrap();
    let raw = RawRefresh {
        signing_input: pair
            .access_token
            .expose()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_owned(),
        signer: SigningKey::generate(JwsAlgorithm::EdDsa).unwrap(),
        ..RawRefresh::of(&recording.recorded().expect("a recorded refresh"))
    };

    let mut g = c.benchmark_group("refresh_rotation");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("keystead_sqlite", |b| {
        b.iter(|| refresh(&tokens, &mut current));
    });
    let mut by_twin = false;
    g.bench_function("keystead_sqlite_read", |b| {
        b.iter(|| {
            by_twin = !by_twin;
            refresh(if by_twin { &twin } else { &tokens }, &mut current);
        });
    });
    if by_twin {
        // Hand the family back to `tokens` for the paired runs.
        refresh(&tokens, &mut current);
    }
    let mut i = 0u64;
    g.bench_function("sqlite_single_commit", |b| {
        b.iter(|| {
            i += 1;
            let mut batch = Batch::new();
            for part in 0..3u64 {
                batch
                    .put(
                        [b"bench/".as_slice(), &(i * 4 + part).to_be_bytes()].concat(),
                        vec![0x5A; 150],
                        Precondition::Any,
                    )
                    .unwrap();
            }
            rt.block_on(store.commit(batch)).unwrap();
        });
    });
    g.bench_function("sqlite_refresh_commit_raw", |b| {
        b.iter(|| rt.block_on(store.commit(raw.batch())).unwrap());
    });
    g.bench_function("sqlite_refresh_commit_and_sign_raw", |b| {
        b.iter(|| raw.commit_and_sign(&rt, store.as_ref()));
    });
    g.bench_function("sqlite_read_then_commit_raw", |b| {
        b.iter(|| raw.read_then_commit(&rt, store.as_ref()));
    });
    g.finish();

    paired_refresh(&rt, [&tokens, &twin], &mut current, store.as_ref(), &raw);
}

/// The refresh comparisons again, with the two sides alternating in every
/// round, so the fsync's drift between criterion's groups cancels out.
/// `instances[0]` made the last rotation of `current`'s family.
fn paired_refresh(
    rt: &Runtime,
    instances: [&Tokens; 2],
    current: &mut SecretString,
    store: &dyn Store,
    raw: &RawRefresh,
) {
    let [tokens, twin] = instances;
    let mut remembered = || {
        let pair = rt.block_on(tokens.refresh(current, "web")).unwrap();
        *current = pair.refresh_token.unwrap();
    };
    let (ours_remembered, raw_commit) = paired_medians(PAIRED_ROUNDS, &mut remembered, || {
        rt.block_on(store.commit(raw.batch())).unwrap();
    });
    let (ours_signing, raw_signing) = paired_medians(PAIRED_ROUNDS, &mut remembered, || {
        raw.commit_and_sign(rt, store);
    });
    // Two instances taking turns: every refresh is of a token the other
    // one handed out, so every refresh reads. An even number of rounds
    // ends with the family back at `tokens`.
    let mut turn = 0usize;
    let mut on_read = || {
        turn += 1;
        let by = if turn % 2 == 1 { twin } else { tokens };
        let pair = rt.block_on(by.refresh(current, "web")).unwrap();
        *current = pair.refresh_token.unwrap();
    };
    let (ours_read, raw_read) = paired_medians(PAIRED_ROUNDS, &mut on_read, || {
        raw.read_then_commit(rt, store);
    });
    println!("\npaired medians ({PAIRED_ROUNDS} rounds each, sides alternating):\n");
    println!("| keystead refresh | | raw | raw side | ratio |");
    println!("| --- | ---: | ---: | --- | ---: |");
    for (what_ours, ours, raw, what_raw) in [
        (
            "remembered (same instance)",
            ours_remembered,
            raw_commit,
            "the refresh's commit",
        ),
        (
            "remembered (same instance)",
            ours_signing,
            raw_signing,
            "the refresh's commit ∥ a ring Ed25519 signature",
        ),
        (
            "on a read (other instance)",
            ours_read,
            raw_read,
            "read, then the refresh's commit",
        ),
        (
            "on a read (other instance)",
            ours_read,
            raw_commit,
            "the refresh's commit",
        ),
    ] {
        println!(
            "| {what_ours} | {ours:.1?} | {raw:.1?} | {what_raw} | {:.2}x |",
            ours.as_secs_f64() / raw.as_secs_f64()
        );
    }
}

/// Rounds of each paired comparison (about two seconds each on SQLite).
const PAIRED_ROUNDS: usize = 2000;

/// A refresh's commit made raw: the same keys and preconditions, except
/// that the family's record is rewritten beside the real one (rewriting
/// the real one with old bytes would roll its live digest back and make
/// the next refresh a reuse) and each commit adds its index entry at a new
/// random digest.
struct RawRefresh {
    ops: Vec<(Vec<u8>, Precondition, Mutation)>,
    rng: ring::rand::SystemRandom,
    /// What `commit_and_sign` signs: an access token's signing input.
    signing_input: String,
    signer: SigningKey,
}

impl RawRefresh {
    fn of(recorded: &Batch) -> Self {
        let ops = recorded
            .iter()
            .map(|(key, pre, mutation)| match (mutation, pre) {
                (Mutation::Put(_), Precondition::Version(_)) => (
                    sibling(key, [0xAB; 16]),
                    Precondition::Any,
                    mutation.clone(),
                ),
                _ => (key.to_vec(), pre, mutation.clone()),
            })
            .collect();
        Self {
            ops,
            rng: ring::rand::SystemRandom::new(),
            signing_input: String::new(),
            signer: SigningKey::generate(JwsAlgorithm::EdDsa).unwrap(),
        }
    }

    /// The commit with an Ed25519 signature made on the calling thread
    /// while it is in flight: the two primitives a remembered refresh
    /// combines, without keystead.
    fn commit_and_sign(&self, rt: &Runtime, store: &dyn Store) {
        let (committed, signature) = rt.block_on(async {
            futures::join!(store.commit(self.batch()), async {
                self.signer.sign_raw(self.signing_input.as_bytes())
            })
        });
        committed.unwrap();
        black_box(signature.unwrap());
    }

    fn batch(&self) -> Batch {
        let mut batch = Batch::new();
        for (key, pre, mutation) in &self.ops {
            match mutation {
                Mutation::Put(value) if *pre == Precondition::Absent => {
                    let digest: [u8; 32] = ring::rand::generate(&self.rng).unwrap().expose();
                    batch.put(parent(key).push(digest), value.clone(), *pre)
                }
                Mutation::Put(value) => batch.put(key.clone(), value.clone(), *pre),
                Mutation::Delete => batch.delete(key.clone(), *pre),
                Mutation::Check => batch.check(key.clone(), *pre),
            }
            .unwrap();
        }
        batch
    }

    /// One read of every record the commit checks, then the commit: the
    /// storage a refresh on a read needs, without keystead.
    fn read_then_commit(&self, rt: &Runtime, store: &dyn Store) {
        let keys: Vec<&[u8]> = self
            .ops
            .iter()
            .filter(|(_, pre, _)| *pre != Precondition::Absent)
            .map(|(key, _, _)| key.as_slice())
            .collect();
        black_box(rt.block_on(store.get_many(&keys)).unwrap());
        rt.block_on(store.commit(self.batch())).unwrap();
    }
}

/// `key` without its last segment.
fn parent(key: &[u8]) -> Key {
    let mut segments = keystead::store::key::segments(key).unwrap();
    segments.pop();
    segments.into_iter().fold(Key::new(), Key::push)
}

/// `key` with its last segment replaced by `last`.
fn sibling(key: &[u8], last: [u8; 16]) -> Vec<u8> {
    parent(key).push(last).into_bytes()
}

criterion_group!(benches, access_tokens, refresh_rotation);
criterion_main!(benches);
