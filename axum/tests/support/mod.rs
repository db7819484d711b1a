//! What the end-to-end tests of seeds 001–004 share beyond the harness in
//! `common`: realms with an issuer on the test server, TOTP codes computed
//! independently from an `otpauth` URI (totp-rs, not the library), access
//! tokens verified from the served JWKS alone (jsonwebtoken), and small
//! HTTP helpers.
#![allow(dead_code, clippy::missing_panics_doc)]

use crate::common::TestServer;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use keystead::id::RealmId;
use keystead::realm::{MfaPolicy, PasswordPolicy, RealmSettings};
use serde_json::{Value, json};

/// The password test users register with.
pub const PASSWORD: &str = "correct horse battery staple";

/// Create realm `name` through the admin API with the issuer
/// `<server>/realms/<name>` (so discovery points at this server) and
/// sign-up open, then make password hashing cheap (fast tests) and set the
/// MFA policy.
pub async fn realm(server: &TestServer, name: &str, mfa: MfaPolicy) -> (RealmId, String) {
    let issuer = server.url(&format!("/realms/{name}"));
    let response = server
        .http
        .post(server.url("/admin/realms"))
        .bearer_auth(&server.admin_token)
        .json(&json!({ "name": name, "issuer": issuer, "sign_up": "open" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201, "create realm {name}");
    let body: Value = response.json().await.expect("json");
    let id: RealmId = body["id"].as_str().expect("id").parse().expect("realm id");
    let realms = server.ks().realms();
    let current = realms.get(id).await.expect("realm");
    realms
        .update_settings(
            id,
            RealmSettings {
                password: PasswordPolicy {
                    argon2_memory_kib: 64,
                    argon2_iterations: 1,
                    ..PasswordPolicy::default()
                },
                mfa,
                ..current.settings
            },
        )
        .await
        .expect("cheap settings");
    register_test_clients(server, id).await;
    (id, issuer)
}

/// The first-party clients the end-to-end tests log in with, as an
/// administrator would register them: `web` (its own login page; also
/// allowed `introspect`, standing in for a resource server's client),
/// `cli`, and the portal applications `app_1`, `app_2` (message tokens).
/// Tokens go to registered clients only, bounded by what they registered.
pub async fn register_test_clients(server: &TestServer, realm: RealmId) {
    let oauth = server.ks().oauth(realm);
    let audience = server.state.audience.to_string();
    let api = keystead_axum::auth::API_SCOPES;
    for (id, scopes) in [
        ("web", vec!["openid", "introspect"]),
        ("cli", vec!["openid"]),
        ("app_1", vec!["openid", "message:create"]),
        ("app_2", vec!["openid", "message:create"]),
        ("portal", vec!["openid"]),
    ] {
        // The first-party front-ends may also call the server's own APIs.
        let own = matches!(id, "web" | "cli" | "portal");
        let scopes = scopes
            .into_iter()
            .chain(api.iter().copied().filter(|_| own))
            .map(str::to_owned)
            .collect();
        oauth
            .create_client(keystead::oauth::NewClient::first_party(
                id,
                audience.clone(),
                scopes,
            ))
            .await
            .expect("register a test client");
    }
}

/// A JSON or empty answer: `(status, body or Null)`.
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Send `request` and read the answer.
pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    answer(request.send().await.expect("request")).await
}

/// The current code of the key in `otpauth`, computed by totp-rs from the
/// URI alone.
pub fn totp_now(otpauth: &str) -> String {
    let totp = totp_rs::Totp::from_url(otpauth).expect("an otpauth URI totp-rs reads");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    totp.generate(now).to_string()
}

/// The code of the *next* time step: a key accepts each step once, so a
/// second login in the same 30 s uses the next step's code (within the
/// ±1 step skew).
pub fn totp_next(otpauth: &str) -> String {
    let totp = totp_rs::Totp::from_url(otpauth).expect("an otpauth URI totp-rs reads");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    totp.generate(now + 30).to_string()
}

/// Verify `token` with jsonwebtoken using only the JWKS served at
/// `jwks_uri` (key by `kid`; algorithm pinned to EdDSA, the realms'
/// default — never taken from the token), for `audience` and `issuer`.
/// Returns the claims.
pub async fn verify_with_jwks(
    http: &reqwest::Client,
    jwks_uri: &str,
    token: &str,
    audience: &str,
    issuer: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let (status, jwks) = call(http.get(jwks_uri)).await;
    assert_eq!(status, 200, "JWKS at {jwks_uri}");
    let set: JwkSet = serde_json::from_value(jwks).expect("a JWKS jsonwebtoken reads");
    let header = decode_header(token)?;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("a kid");
    let jwk = set.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    decode::<Value>(token, &key, &validation).map(|data| data.claims)
}
