//! Authorization-code redemption against access-token issue alone, in the
//! same run, on the in-memory store (so the figures are keystead's work,
//! not a disk's).
//!
//! * `code_redemption/keystead_memory_openid`: `Tokens::exchange` of a
//!   fresh `Grant::AuthorizationCode` whose request had `openid` — client
//!   lookup, code read, redirect and PKCE S256 check (one SHA-256, constant
//!   time compare), session read, the compare-and-swap commit that marks
//!   the code redeemed and creates the refresh family, then two Ed25519
//!   signatures (access token and ID token).
//! * `code_redemption/keystead_memory`: the same without `openid` (one
//!   signature).
//! * `code_redemption/issue_with_refresh`: `Tokens::issue` — session read,
//!   refresh-family commit, one signature: what a redemption does minus the
//!   OAuth checks.
//! * `code_redemption/access_issue_alone`: `Tokens::create_scoped_token` —
//!   an access token with no commit (the `access_issue` figure of
//!   `benches/tokens.rs`).
//!
//! Codes are made in untimed setup (authorize + password login).
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use chrono::Duration as ChronoDuration;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::crypto::jws::JwsAlgorithm;
use keystead::oauth::code::pkce_challenge;
use keystead::oauth::{AuthorizationRequest, LoginStep, NewClient, OAuth};
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::token::{AccessRequest, ExchangeOutcome, Grant, NewScopedToken, Tokens};
use keystead::user::LoginOutcome;
use keystead_benches::runtime;
use std::hint::black_box;
use std::time::Duration;
use tokio::runtime::Runtime;

const ISSUER: &str = "https://id.example/realms/bench";
const REDIRECT: &str = "https://app.example.com/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

struct Fixture {
    oauth: OAuth,
    tokens: Tokens,
    session: keystead::id::SessionId,
}

fn fixture(rt: &Runtime) -> Fixture {
    rt.block_on(async {
        let ks = Keystead::builder()
            .store(MemoryStore::new())
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
        let oauth = ks.oauth(realm.id);
        oauth
            .create_client(NewClient {
                scopes: vec!["openid".into(), "read".into()],
                ..NewClient::public("spa", REDIRECT)
            })
            .await
            .unwrap();
        let tokens = ks.tokens(realm.id);
        tokens
            .ensure_signing_key(JwsAlgorithm::EdDsa)
            .await
            .unwrap();
        Fixture {
            oauth,
            tokens,
            session: session.id,
        }
    })
}

/// A fresh code for `scope` (authorize + password login).
fn code(rt: &Runtime, f: &Fixture, scope: &str) -> SecretString {
    rt.block_on(async {
        let tx = f
            .oauth
            .authorize(&AuthorizationRequest {
                response_type: Some("code".into()),
                client_id: Some("spa".into()),
                redirect_uri: Some(REDIRECT.into()),
                scope: Some(scope.into()),
                state: Some("s".into()),
                nonce: Some("n".into()),
                code_challenge: Some(pkce_challenge(VERIFIER)),
                code_challenge_method: Some("S256".into()),
            })
            .await
            .unwrap();
        match f
            .oauth
            .login_password(&tx.handle, "alice", SecretString::from("correct horse"))
            .await
            .unwrap()
        {
            LoginStep::Authorized(response) => response.code,
            other => panic!("unexpected {other:?}"),
        }
    })
}

fn redeem(rt: &Runtime, f: &Fixture, code: SecretString) {
    let outcome = rt
        .block_on(f.tokens.exchange(Grant::AuthorizationCode {
            code,
            redirect_uri: REDIRECT.into(),
            client_id: "spa".into(),
            code_verifier: Some(SecretString::from(VERIFIER)),
            client_secret: None,
        }))
        .unwrap();
    let ExchangeOutcome::Tokens(tokens) = outcome else {
        panic!("a public client's code gives tokens");
    };
    black_box(tokens);
}

fn code_redemption(c: &mut Criterion) {
    let rt = runtime();
    let f = fixture(&rt);
    let request = AccessRequest::public("spa", vec!["read".into()]);
    let scoped = NewScopedToken {
        name: "bench".into(),
        request: request.clone(),
        expires_in: ChronoDuration::minutes(5),
    };
    let mut g = c.benchmark_group("code_redemption");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("keystead_memory_openid", |b| {
        b.iter_batched(
            || code(&rt, &f, "openid read"),
            |code| redeem(&rt, &f, code),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("keystead_memory", |b| {
        b.iter_batched(
            || code(&rt, &f, "read"),
            |code| redeem(&rt, &f, code),
            BatchSize::SmallInput,
        );
    });
    g.bench_function("issue_with_refresh", |b| {
        b.iter(|| black_box(rt.block_on(f.tokens.issue(f.session, &request)).unwrap()));
    });
    g.bench_function("access_issue_alone", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(f.tokens.create_scoped_token(f.session, &scoped))
                    .unwrap(),
            )
        });
    });
    g.finish();
}

criterion_group!(benches, code_redemption);
criterion_main!(benches);
