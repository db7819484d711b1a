//! The extractors an app adds to its own routes, attacked in-process
//! (`tower::ServiceExt::oneshot`): missing, malformed, doubled and oversized
//! headers; tokens of another realm or audience, with a forged issuer,
//! without the scope, named for another resource server, or from a login
//! without a second factor. Every refusal is a 4xx with the RFC 6750 /
//! RFC 9470 challenge a client acts on — never a 500.
#![allow(clippy::too_many_lines)] // attack tables read top to bottom

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::routing::get;
use axum::{Router, response::Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::id::RealmId;
use keystead::mfa::MfaAnswer;
use keystead::oauth::NewClient;
use keystead::realm::{PasswordPolicy, RealmSettings};
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::token::{AccessRequest, NewScopedToken};
use keystead::user::{Authority, LoginOutcome};
use keystead_axum::extract::{Auth, Claims, RequireMfa, RequireScope, RouteScope};
use std::time::Duration;
use tower::ServiceExt as _;

const AUDIENCE: &str = "my-api";
const PASSWORD: &str = "correct horse battery staple";

struct Notes;
impl RouteScope for Notes {
    const SCOPE: &'static str = "notes";
}

fn app(auth: Auth) -> Router {
    Router::new()
        .route(
            "/me",
            get(|Claims(t): Claims| async move { t.claims.sub.to_string() }),
        )
        .route("/notes", get(|_: RequireScope<Notes>| async { "notes" }))
        .route("/mfa", get(|_: RequireMfa| async { "mfa" }))
        .route(
            "/recent",
            get(|claims: Claims| async move {
                // The app's own rule: MFA within 10 minutes.
                claims
                    .require_recent_login(Duration::from_secs(600), chrono::Utc::now())
                    .map(|()| "recent")
            }),
        )
        .route(
            "/recent-tomorrow",
            get(|claims: Claims| async move {
                // The same rule judged a day later: the MFA login is stale.
                let later = chrono::Utc::now() + chrono::Duration::days(1);
                claims
                    .require_recent_login(Duration::from_secs(600), later)
                    .map(|()| "recent")
            }),
        )
        .route(
            "/recent-yesterday",
            get(|claims: Claims| async move {
                // A login time after `now` is not recent either.
                let earlier = chrono::Utc::now() - chrono::Duration::days(1);
                claims
                    .require_recent_login(Duration::from_secs(600), earlier)
                    .map(|()| "recent")
            }),
        )
        .with_state(auth)
}

async fn call(app: &Router, path: &str, authorization: &[&[u8]]) -> Response {
    let mut request = Request::get(path);
    for value in authorization {
        request = request.header(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn challenge(response: &Response) -> String {
    response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

struct Fixture {
    ks: Keystead,
    acme: RealmId,
    other: RealmId,
}

async fn fixture() -> Fixture {
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let settings = RealmSettings {
        password: PasswordPolicy {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..PasswordPolicy::default()
        },
        ..RealmSettings::default()
    };
    let acme = ks
        .realms()
        .create("acme", settings.clone())
        .await
        .unwrap()
        .id;
    let other = ks.realms().create("other", settings).await.unwrap().id;
    for realm in [acme, other] {
        ks.oauth(realm)
            .create_client(NewClient::first_party(
                "web",
                AUDIENCE,
                vec!["notes".into(), "other".into()],
            ))
            .await
            .unwrap();
        ks.oauth(realm)
            .create_client(NewClient::first_party(
                "elsewhere",
                "another-api",
                vec!["notes".into()],
            ))
            .await
            .unwrap();
        ks.users(realm)
            .register("alice", None, SecretString::new(PASSWORD.into()))
            .await
            .unwrap();
    }
    Fixture { ks, acme, other }
}

/// A password-only login's access token of `realm` for `client`, with `scopes`.
async fn token(f: &Fixture, realm: RealmId, client: &str, scopes: &[&str]) -> String {
    let users = f.ks.users(realm);
    let LoginOutcome::Authenticated(session) = users
        .authenticate("alice", SecretString::new(PASSWORD.into()))
        .await
        .unwrap()
    else {
        panic!("no MFA yet");
    };
    let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    let tokens =
        f.ks.tokens(realm)
            .issue(session.id, &AccessRequest::public(client, scopes))
            .await
            .unwrap();
    tokens.access_token.expose().to_owned()
}

#[tokio::test]
async fn malformed_authorization_headers_are_401_never_500() {
    let f = fixture().await;
    let app = app(Auth::for_realm(f.ks.clone(), f.acme, AUDIENCE));
    let good = token(&f, f.acme, "web", &["notes"]).await;
    let huge = format!("Bearer {}", "a".repeat(9000));
    let good_header = format!("Bearer {good}");
    let cases: &[(&str, Vec<&[u8]>)] = &[
        ("no header", vec![]),
        ("empty", vec![b""]),
        ("scheme only", vec![b"Bearer"]),
        ("scheme and space", vec![b"Bearer "]),
        ("basic", vec![b"Basic YWxpY2U6cHc="]),
        ("not ascii", vec![b"Bearer \xff\xfe"]),
        ("two tokens", vec![b"Bearer a b"]),
        ("garbage token", vec![b"Bearer not.a.token"]),
        ("nine KiB", vec![huge.as_bytes()]),
        ("two headers", vec![good_header.as_bytes(), b"Bearer x"]),
    ];
    for (name, headers) in cases {
        for path in ["/me", "/notes", "/mfa"] {
            let response = call(&app, path, headers).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{name} on {path}"
            );
            assert!(
                challenge(&response).starts_with("Bearer"),
                "{name}: {}",
                challenge(&response)
            );
        }
    }
    // No credentials at all: the bare challenge (RFC 6750 §3.1).
    assert_eq!(challenge(&call(&app, "/me", &[]).await), "Bearer");
    // A bad token says so.
    let response = call(&app, "/me", &[b"Bearer not.a.token"]).await;
    assert_eq!(challenge(&response), "Bearer error=\"invalid_token\"");
    // The scheme is case-insensitive (RFC 6750 §2.1 via RFC 9110 §11.1).
    let response = call(&app, "/me", &[format!("bEaReR {good}").as_bytes()]).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn tokens_of_another_realm_audience_or_a_forged_issuer_are_refused() {
    let f = fixture().await;
    let fixed = app(Auth::for_realm(f.ks.clone(), f.acme, AUDIENCE));
    let by_issuer = app(Auth::by_issuer(f.ks.clone(), AUDIENCE));
    let acme = token(&f, f.acme, "web", &["notes"]).await;
    let other = token(&f, f.other, "web", &["notes"]).await;
    let elsewhere = token(&f, f.acme, "elsewhere", &["notes"]).await;
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(
        call(&fixed, "/me", &[bearer(&acme).as_bytes()])
            .await
            .status(),
        200
    );
    assert_eq!(
        call(&by_issuer, "/me", &[bearer(&other).as_bytes()])
            .await
            .status(),
        200
    );
    // Another realm's token on an app fixed to acme.
    assert_eq!(
        call(&fixed, "/notes", &[bearer(&other).as_bytes()])
            .await
            .status(),
        401
    );
    // A token for another resource server.
    assert_eq!(
        call(&fixed, "/me", &[bearer(&elsewhere).as_bytes()])
            .await
            .status(),
        401
    );
    assert_eq!(
        call(&by_issuer, "/me", &[bearer(&elsewhere).as_bytes()])
            .await
            .status(),
        401
    );
    // Other's token with its issuer rewritten to acme's: routed to acme's
    // keys, where the signature fails.
    let acme_iss = claims_of(&acme)["iss"].as_str().unwrap().to_owned();
    let forged = with_claim(&other, "iss", &acme_iss);
    for app in [&fixed, &by_issuer] {
        let response = call(app, "/me", &[bearer(&forged).as_bytes()]).await;
        assert_eq!(response.status(), 401);
        assert_eq!(challenge(&response), "Bearer error=\"invalid_token\"");
    }
    // An issuer naming no realm.
    let nowhere = with_claim(&acme, "iss", "https://evil.example");
    assert_eq!(
        call(&by_issuer, "/me", &[bearer(&nowhere).as_bytes()])
            .await
            .status(),
        401
    );
    // A logged-out session's token dies at once.
    let claims = claims_of(&acme);
    let session = claims["sid"].as_str().unwrap().parse().unwrap();
    f.ks.tokens(f.acme).logout(session).await.unwrap();
    assert_eq!(
        call(&fixed, "/me", &[bearer(&acme).as_bytes()])
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn a_route_scope_needs_the_scope_on_an_ordinary_token() {
    let f = fixture().await;
    let app = app(Auth::for_realm(f.ks.clone(), f.acme, AUDIENCE));
    let with = token(&f, f.acme, "web", &["notes"]).await;
    let without = token(&f, f.acme, "web", &["other"]).await;
    assert_eq!(
        call(&app, "/notes", &[format!("Bearer {with}").as_bytes()])
            .await
            .status(),
        200
    );
    let response = call(&app, "/notes", &[format!("Bearer {without}").as_bytes()]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge(&response),
        "Bearer error=\"insufficient_scope\", scope=\"notes\""
    );
    // A named token carrying the scope is for the resource server it
    // names, not for this route.
    let session = claims_of(&with)["sid"].as_str().unwrap().parse().unwrap();
    let named =
        f.ks.tokens(f.acme)
            .create_scoped_token(
                session,
                &NewScopedToken {
                    name: "notes-bot".into(),
                    request: AccessRequest::public("web", vec!["notes".into()]),
                    expires_in: chrono::Duration::minutes(5),
                },
            )
            .await
            .unwrap();
    let response = call(
        &app,
        "/notes",
        &[format!("Bearer {}", named.token.expose()).as_bytes()],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn mfa_routes_need_a_login_with_a_second_factor() {
    let f = fixture().await;
    let app = app(Auth::for_realm(f.ks.clone(), f.acme, AUDIENCE));
    let password_only = token(&f, f.acme, "web", &[]).await;
    for path in ["/mfa", "/recent"] {
        let response = call(&app, path, &[format!("Bearer {password_only}").as_bytes()]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            challenge(&response).starts_with("Bearer error=\"insufficient_user_authentication\""),
            "{path}: {}",
            challenge(&response)
        );
    }
    let response = call(
        &app,
        "/recent",
        &[format!("Bearer {password_only}").as_bytes()],
    )
    .await;
    assert!(
        challenge(&response).ends_with("max_age=\"600\""),
        "{}",
        challenge(&response)
    );
    // Enrol TOTP and log in with it: `amr` has `otp`.
    let users = f.ks.users(f.acme);
    let alice = users.get_by_username("alice").await.unwrap().id;
    let mfa = f.ks.mfa(f.acme);
    let new = mfa
        .create_totp_key(alice, Authority::Operator)
        .await
        .unwrap();
    let code = SecretString::new(totp(new.otpauth_uri.expose(), 0));
    mfa.activate(alice, new.key.id, &code).await.unwrap();
    let LoginOutcome::MfaRequired { challenge: pending } = users
        .authenticate("alice", SecretString::new(PASSWORD.into()))
        .await
        .unwrap()
    else {
        panic!("MFA is due");
    };
    let code = SecretString::new(totp(new.otpauth_uri.expose(), 30));
    let session = mfa
        .complete_challenge(pending.id, &MfaAnswer::Totp(code))
        .await
        .unwrap();
    let strong =
        f.ks.tokens(f.acme)
            .issue(session.id, &AccessRequest::public("web", vec![]))
            .await
            .unwrap();
    let bearer = format!("Bearer {}", strong.access_token.expose());
    assert_eq!(call(&app, "/mfa", &[bearer.as_bytes()]).await.status(), 200);
    assert_eq!(
        call(&app, "/recent", &[bearer.as_bytes()]).await.status(),
        200
    );
    // The second factor is there, but too long ago (or "in the future").
    for path in ["/recent-tomorrow", "/recent-yesterday"] {
        let response = call(&app, path, &[bearer.as_bytes()]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(challenge(&response).contains("max_age=\"600\""), "{path}");
    }
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `token` with one payload claim replaced, its signature kept.
fn with_claim(token: &str, name: &str, value: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = claims_of(token);
    claims[name] = value.into();
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    parts.join(".")
}

/// The code of the key in `otpauth` `ahead` seconds from now, by totp-rs.
fn totp(otpauth: &str, ahead: u64) -> String {
    let totp = totp_rs::Totp::from_url(otpauth).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + ahead).to_string()
}
