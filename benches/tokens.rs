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
//! * `refresh_rotation/keystead_sqlite`: `Tokens::refresh` on SQLite (reads,
//!   the family compare-and-swap commit, a new access token) vs
//!   `sqlite_refresh_commit_raw`, the refresh's own commit made raw on the
//!   same store (the family's record rewritten at its key, a new index
//!   entry at a random digest under the index's prefix, the session's
//!   record checked), and vs
//!   `sqlite_single_commit`, one fsynced batch of three sequential
//!   150-byte records (the baseline of earlier runs).
//!   `sqlite_read_then_commit_raw` is the storage a refresh needs without
//!   keystead (one read, then that commit) and `sqlite_get_many_7` one
//!   read of seven keys alone.
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
use keystead::store::{Batch, MemoryStore, Precondition, Store};
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
    AccessRequest {
        client_id: "web".into(),
        audience: AUDIENCE.into(),
        scope: vec!["read".into(), "write".into()],
    }
}

/// A realm with one logged-in user on `store`; returns the token handle and
/// the session id.
fn fixture(rt: &Runtime, store: Arc<dyn Store>) -> (Tokens, keystead::id::SessionId) {
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
        (tokens, session.id)
    })
}

fn access_tokens(c: &mut Criterion) {
    let rt = runtime();
    let (tokens, session) = fixture(&rt, Arc::new(MemoryStore::new()));
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
    let store: Arc<dyn Store> = Arc::new(
        rt.block_on(SqliteStore::open(dir.path().join("tokens.db")))
            .unwrap(),
    );
    let (tokens, session) = fixture(&rt, Arc::clone(&store));
    let mut current = rt
        .block_on(tokens.issue(session, &request()))
        .unwrap()
        .refresh_token
        .unwrap();
    let mut g = c.benchmark_group("refresh_rotation");
    g.sample_size(30).measurement_time(Duration::from_secs(6));
    g.bench_function("keystead_sqlite", |b| {
        b.iter(|| {
            let pair = rt.block_on(tokens.refresh(&current, "web")).unwrap();
            current = pair.refresh_token.unwrap();
        });
    });
    let (family_key, family_value, index_prefix) = last_refresh_commit(&rt, store.as_ref());
    // The raw side writes a family-sized record beside the real family
    // (same prefix, another id): rewriting the real one with old bytes
    // would roll its live digest back and make the next refresh a reuse.
    let decoy_key = sibling(&family_key, [0xAB; 16]);
    let session_key = find_key_containing(&rt, store.as_ref(), session.to_bytes().as_slice());
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
    // The refresh's own commit, raw: a record of the family's bytes
    // rewritten beside it, a new index entry at a random digest under the
    // index's prefix, the session's record checked.
    let rng = ring::rand::SystemRandom::new();
    let refresh_batch = || {
        let digest: [u8; 32] = ring::rand::generate(&rng).unwrap().expose();
        let mut batch = Batch::new();
        batch
            .put(decoy_key.clone(), family_value.clone(), Precondition::Any)
            .unwrap()
            .put(
                index_prefix.clone().push(digest),
                vec![0x5A; 16],
                Precondition::Absent,
            )
            .unwrap()
            .check(session_key.clone(), Precondition::Any)
            .unwrap();
        batch
    };
    g.bench_function("sqlite_refresh_commit_raw", |b| {
        b.iter(|| rt.block_on(store.commit(refresh_batch())).unwrap());
    });
    // The storage a refresh needs, raw: one read of the family and
    // session, then the commit above — without any of keystead's work.
    g.bench_function("sqlite_read_then_commit_raw", |b| {
        b.iter(|| {
            let refs: [&[u8]; 2] = [&decoy_key, &session_key];
            black_box(rt.block_on(store.get_many(&refs)).unwrap());
            rt.block_on(store.commit(refresh_batch())).unwrap();
        });
    });
    let keys: Vec<Vec<u8>> = (0..7u64)
        .map(|i| [b"bench/".as_slice(), &(i * 4).to_be_bytes()].concat())
        .collect();
    g.bench_function("sqlite_get_many_7", |b| {
        b.iter(|| {
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            black_box(rt.block_on(store.get_many(&refs)).unwrap());
        });
    });
    g.finish();

    paired_refresh(
        &rt,
        &tokens,
        &mut current,
        store.as_ref(),
        &refresh_batch,
        [&decoy_key, &session_key],
    );
}

/// The refresh comparisons again, with the two sides alternating in every
/// round, so the fsync's drift between criterion's groups cancels out.
fn paired_refresh(
    rt: &Runtime,
    tokens: &Tokens,
    current: &mut SecretString,
    store: &dyn Store,
    refresh_batch: &dyn Fn() -> Batch,
    read: [&[u8]; 2],
) {
    let mut refresh = || {
        let pair = rt.block_on(tokens.refresh(current, "web")).unwrap();
        *current = pair.refresh_token.unwrap();
    };
    let (keystead_commit, raw_commit) = paired_medians(PAIRED_ROUNDS, &mut refresh, || {
        rt.block_on(store.commit(refresh_batch())).unwrap();
    });
    let (keystead_read, raw_read) = paired_medians(PAIRED_ROUNDS, &mut refresh, || {
        black_box(rt.block_on(store.get_many(&read)).unwrap());
        rt.block_on(store.commit(refresh_batch())).unwrap();
    });
    println!("\npaired medians ({PAIRED_ROUNDS} rounds each, sides alternating):\n");
    println!("| keystead refresh | raw | raw side | ratio |");
    println!("| ---: | ---: | --- | ---: |");
    for (ours, raw, what) in [
        (keystead_commit, raw_commit, "the refresh's commit"),
        (keystead_read, raw_read, "read, then the refresh's commit"),
    ] {
        println!(
            "| {ours:.1?} | {raw:.1?} | {what} | {:.2}x |",
            ours.as_secs_f64() / raw.as_secs_f64()
        );
    }
}

/// Rounds of each paired comparison (about two seconds each on SQLite).
const PAIRED_ROUNDS: usize = 2000;

/// The two records the store's last commit (a refresh) wrote: the family
/// (key and value) and the new index entry, whose key minus its last
/// segment is the index's prefix.
fn last_refresh_commit(rt: &Runtime, store: &dyn Store) -> (Vec<u8>, Vec<u8>, Key) {
    let all = rt.block_on(store.scan(b"", None, 1_000_000)).unwrap();
    let last = all.iter().map(|(_, v)| v.version).max().unwrap();
    let mut written: Vec<_> = all.into_iter().filter(|(_, v)| v.version == last).collect();
    written.sort_by_key(|(_, v)| std::cmp::Reverse(v.value.len()));
    let [(family_key, family), (index_key, _)] = <[_; 2]>::try_from(written).unwrap();
    (family_key, family.value, parent(&index_key))
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

/// The key of the record whose key contains `id` as a segment and whose
/// value is largest (a session's record, not its index entries).
fn find_key_containing(rt: &Runtime, store: &dyn Store, id: &[u8]) -> Vec<u8> {
    let all = rt.block_on(store.scan(b"", None, 1_000_000)).unwrap();
    all.into_iter()
        .filter(|(k, _)| {
            keystead::store::key::segments(k)
                .unwrap()
                .iter()
                .any(|s| s == id)
        })
        .max_by_key(|(_, v)| v.value.len())
        .unwrap()
        .0
}

criterion_group!(benches, access_tokens, refresh_rotation);
criterion_main!(benches);
