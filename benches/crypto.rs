//! keystead's crypto core against the raw primitives doing the same work in
//! the same run: envelope seal/open vs HPKE single-shot calls (same suite,
//! `info` and AAD); JWS `EdDSA` sign/verify of an RFC 9068 access token vs
//! `ring` Ed25519 over the same signing input (and verify vs `ed25519-dalek`,
//! which keystead verifies Ed25519 with), and vs `jsonwebtoken` (on
//! aws-lc-rs) signing and verifying the same claims; at-rest seal/open vs
//! XChaCha20-Poly1305; bearer tokens vs `SystemRandom` + SHA-256.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use chacha20poly1305::aead::{Aead as _, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use ed25519_dalek::Verifier as _;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keystead::crypto::at_rest::{self, Kek, KeyId, StaticKeyProvider};
use keystead::crypto::envelope::{self, EnvelopeContext, HEADER_LEN};
use keystead::crypto::jws::{self, HeaderParams, JwsAlgorithm, JwsKeySet, SigningKey};
use keystead::crypto::secret::{self, TokenKind};
use keystead::crypto::{DeviceSecretKey, X25519_KEY_LEN};
use keystead::id::{DeviceId, GroupId, RealmId};
use keystead::secret::SecretBytes;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type HpkeAead = hpke::aead::ChaCha20Poly1305;

/// A 32-byte group key, as front-ends generate them.
const GROUP_KEY_LEN: usize = 32;
/// A 32-byte secret sealed at rest (a TOTP seed or an Ed25519 seed).
const SECRET: &[u8; 32] = b"a-32-byte-secret-sealed-at-rest!";
const RECORD_KEY: &[u8] = b"realm/0192f5c4/totp/0192f5c5";

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

/// Drive a future that never waits (a `StaticKeyProvider` call) without an
/// executor, so the figures are the crypto's, not a runtime's.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a StaticKeyProvider call never waits"),
    }
}

/// The raw baseline's RNG for HPKE: `ring`'s `SystemRandom` per request, as
/// a caller of the `hpke` crate would wire it.
struct SysRng;

impl TryRng for SysRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        SystemRandom::new().fill(dst).expect("system RNG");
        Ok(())
    }
}

impl TryCryptoRng for SysRng {}

fn context() -> EnvelopeContext {
    let now = chrono::Utc::now();
    EnvelopeContext {
        realm: RealmId::generate(now),
        group: GroupId::generate(now),
        key_version: 7,
        recipient: DeviceId::generate(now),
    }
}

fn envelopes(c: &mut Criterion) {
    let recipient = DeviceSecretKey::generate().unwrap();
    let public = recipient.public_key();
    let ctx = context();
    let group_key = SecretBytes::new(vec![0x5A; GROUP_KEY_LEN]);
    let sealed = envelope::seal(&group_key, &public, &ctx).unwrap();

    // The raw calls get exactly what keystead passes to HPKE: the same
    // suite, `info` (72 bytes) and AAD (the 75-byte header).
    let info = ctx.info();
    let aad = sealed[..HEADER_LEN].to_vec();
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&public.to_bytes()).unwrap();
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(recipient.to_bytes().as_ref()).unwrap();
    let (enc, raw_ct) = hpke::single_shot_seal_with_rng::<HpkeAead, Kdf, Kem>(
        &OpModeS::Base,
        &pk,
        &info,
        group_key.expose(),
        &aad,
        &mut SysRng,
    )
    .unwrap();
    assert_eq!(enc.to_bytes().len(), X25519_KEY_LEN);

    let mut g = group(c, "envelope");
    g.bench_function("seal/keystead", |b| {
        b.iter(|| black_box(envelope::seal(&group_key, &public, &ctx).unwrap()));
    });
    g.bench_function("seal/raw_hpke", |b| {
        b.iter(|| {
            black_box(
                hpke::single_shot_seal_with_rng::<HpkeAead, Kdf, Kem>(
                    &OpModeS::Base,
                    &pk,
                    &info,
                    group_key.expose(),
                    &aad,
                    &mut SysRng,
                )
                .unwrap(),
            )
        });
    });
    g.bench_function("open/keystead", |b| {
        b.iter(|| black_box(envelope::open(&sealed, &recipient, &ctx).unwrap()));
    });
    g.bench_function("open/raw_hpke", |b| {
        b.iter(|| {
            black_box(
                hpke::single_shot_open::<HpkeAead, Kdf, Kem>(
                    &OpModeR::Base,
                    &sk,
                    &enc,
                    &info,
                    &raw_ct,
                    &aad,
                )
                .unwrap(),
            )
        });
    });
    g.finish();
}

/// An RFC 9068 access token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    client_id: String,
    scope: String,
    sid: String,
    amr: Vec<String>,
    auth_time: u64,
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://id.example.com/realms/acme".into(),
        sub: "0192f5c4-7d3e-7a10-9b2c-4e5f6a7b8c9d".into(),
        aud: "https://api.example.com".into(),
        exp: 4_000_000_900,
        iat: 4_000_000_000,
        nbf: 1_700_000_000,
        jti: "0192f5c4-7d3e-7a11-8c2d-5f6a7b8c9d0e".into(),
        client_id: "web-app".into(),
        scope: "openid profile email offline_access".into(),
        sid: "0192f5c4-7d3e-7a12-a3e4-6a7b8c9d0e1f".into(),
        amr: vec!["pwd".into(), "otp".into()],
        auth_time: 3_999_999_990,
    }
}

fn jws_tokens(c: &mut Criterion) {
    let key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
    let pkcs8 = key.to_pkcs8();
    let keys: JwsKeySet = [key.verifying_key().clone()].into_iter().collect();
    let params = HeaderParams::with_typ("at+jwt");
    let claims = claims();
    let payload = serde_json::to_vec(&claims).unwrap();
    let token = jws::sign(&key, &params, &payload).unwrap();

    // Raw ring: the same key over the same signing input bytes.
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.expose()).unwrap();
    let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
    let signature = pair.sign(signing_input.as_bytes()).as_ref().to_vec();
    let public = pair.public_key().as_ref().to_vec();

    let lc_pair =
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.expose()).unwrap();
    assert_eq!(
        lc_pair.sign(signing_input.as_bytes()).as_ref(),
        signature.as_slice(),
        "Ed25519 is deterministic"
    );

    // jsonwebtoken: the same key, header members and claims.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("at+jwt".into());
    let encoding = EncodingKey::from_ed_der(pkcs8.expose());
    let decoding = DecodingKey::from_ed_der(&public);
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[&claims.aud]);
    validation.set_issuer(&[&claims.iss]);
    let jwt = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &validation).unwrap();
    assert_eq!(jwt.rsplit_once('.').unwrap().0.len(), signing_input.len());
    assert_eq!(signature_b64.len(), 86);

    let mut g = group(c, "jws_eddsa");
    g.bench_function("sign/keystead", |b| {
        b.iter(|| black_box(jws::sign(&key, &params, &payload).unwrap()));
    });
    g.bench_function("sign/raw_ring", |b| {
        b.iter(|| black_box(pair.sign(signing_input.as_bytes())));
    });
    g.bench_function("sign/raw_aws_lc", |b| {
        b.iter(|| black_box(lc_pair.sign(signing_input.as_bytes())));
    });
    g.bench_function("sign_claims/keystead", |b| {
        b.iter(|| {
            let payload = serde_json::to_vec(&claims).unwrap();
            black_box(jws::sign(&key, &params, &payload).unwrap())
        });
    });
    g.bench_function("sign_claims/jsonwebtoken", |b| {
        b.iter(|| black_box(jsonwebtoken::encode(&header, &claims, &encoding).unwrap()));
    });
    g.bench_function("verify/keystead", |b| {
        b.iter(|| black_box(jws::verify(&token, &keys).unwrap()));
    });
    // Everything verify does except the signature check: the same token
    // against a key set without its kid fails at the last step before it.
    let other_keys: JwsKeySet = [SigningKey::generate(JwsAlgorithm::EdDsa)
        .unwrap()
        .verifying_key()
        .clone()]
    .into_iter()
    .collect();
    g.bench_function("verify_checks_only/keystead", |b| {
        b.iter(|| black_box(jws::verify(&token, &other_keys).unwrap_err()));
    });
    g.bench_function("verify/raw_ring", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(signing_input.as_bytes(), &signature)
                .unwrap();
        });
    });
    // What keystead verifies Ed25519 with: ed25519-dalek, key decoded once.
    let dalek = ed25519_dalek::VerifyingKey::try_from(public.as_slice()).unwrap();
    let dalek_signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
    g.bench_function("verify/raw_dalek", |b| {
        b.iter(|| dalek.verify(signing_input.as_bytes(), &dalek_signature));
    });
    g.bench_function("verify/raw_aws_lc", |b| {
        b.iter(|| {
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, &public)
                .verify(signing_input.as_bytes(), &signature)
                .unwrap();
        });
    });
    // Both sides decode the claims and check exp, aud and iss, as a token
    // service must.
    g.bench_function("verify_claims/keystead", |b| {
        b.iter(|| {
            let verified = jws::verify(&token, &keys).unwrap();
            let claims: AccessClaims = serde_json::from_slice(&verified.payload).unwrap();
            assert!(claims.exp > 1_700_000_000 && claims.aud == "https://api.example.com");
            assert!(claims.iss == "https://id.example.com/realms/acme");
            black_box(claims)
        });
    });
    g.bench_function("verify_claims/jsonwebtoken", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<AccessClaims>(&token, &decoding, &validation).unwrap())
        });
    });
    g.finish();
}

fn at_rest_blobs(c: &mut Criterion) {
    let kek_bytes = [7u8; 32];
    let id = KeyId::new("kek-1").unwrap();
    let provider = StaticKeyProvider::new(id.clone(), Kek::from_bytes(&kek_bytes).unwrap());
    let blob = now(at_rest::seal(&provider, RECORD_KEY, SECRET)).unwrap();

    // Raw: the same cipher, random nonce and AAD (blob prefix ‖ record key).
    let cipher = XChaCha20Poly1305::new((&kek_bytes).into());
    let prefix_len = 2 + id.as_str().len();
    let mut aad = blob[..prefix_len].to_vec();
    aad.extend_from_slice(RECORD_KEY);
    let nonce = XNonce::try_from(&blob[prefix_len..prefix_len + at_rest::NONCE_LEN]).unwrap();
    let raw_ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: SECRET,
                aad: &aad,
            },
        )
        .unwrap();
    let rng = SystemRandom::new();

    let mut g = group(c, "at_rest");
    g.bench_function("seal/keystead", |b| {
        b.iter(|| black_box(now(at_rest::seal(&provider, RECORD_KEY, SECRET)).unwrap()));
    });
    g.bench_function("seal/raw_xchacha", |b| {
        b.iter(|| {
            let mut nonce = [0u8; at_rest::NONCE_LEN];
            rng.fill(&mut nonce).unwrap();
            black_box(
                cipher
                    .encrypt(
                        &XNonce::from(nonce),
                        Payload {
                            msg: SECRET,
                            aad: &aad,
                        },
                    )
                    .unwrap(),
            )
        });
    });
    g.bench_function("open/keystead", |b| {
        b.iter(|| black_box(now(at_rest::open(&provider, RECORD_KEY, &blob)).unwrap()));
    });
    g.bench_function("open/raw_xchacha", |b| {
        b.iter(|| {
            black_box(
                cipher
                    .decrypt(
                        &nonce,
                        Payload {
                            msg: &raw_ct,
                            aad: &aad,
                        },
                    )
                    .unwrap(),
            )
        });
    });
    g.finish();
}

fn bearer_tokens(c: &mut Criterion) {
    let issued = secret::generate(TokenKind::Refresh).unwrap();
    let presented = issued.token.expose().to_owned();
    let rng = SystemRandom::new();

    let mut g = group(c, "bearer");
    g.bench_function("generate/keystead", |b| {
        b.iter(|| black_box(secret::generate(TokenKind::Refresh).unwrap()));
    });
    // Raw: 32 random bytes, and SHA-256 over a token-sized (48-byte) string.
    g.bench_function("generate/raw_ring", |b| {
        b.iter(|| {
            let mut token = [b'A'; 48];
            rng.fill(&mut token[5..37]).unwrap();
            black_box(ring::digest::digest(&ring::digest::SHA256, &token))
        });
    });
    g.bench_function("digest/keystead", |b| {
        b.iter(|| black_box(secret::digest_of(TokenKind::Refresh, &presented).unwrap()));
    });
    g.bench_function("digest/raw_ring", |b| {
        b.iter(|| {
            black_box(ring::digest::digest(
                &ring::digest::SHA256,
                presented.as_bytes(),
            ))
        });
    });
    g.finish();
}

criterion_group!(benches, envelopes, jws_tokens, at_rest_blobs, bearer_tokens);
criterion_main!(benches);
