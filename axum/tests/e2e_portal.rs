//! Seed 004 over real HTTP: app-portal access by magic link, dashboard
//! access by one-time token, message (scoped) tokens verified from the
//! served JWKS by jsonwebtoken, expire-all per application with and
//! without grace, logout; and every endpoint's refusals.

// A flow reads best as one story, top to bottom.
#![allow(clippy::too_many_lines)]

mod common;
mod support;

use keystead::realm::MfaPolicy;
use keystead_axum::auth::REALM_HEADER;
use serde_json::{Value, json};
use support::{call, realm, verify_with_jwks};

const AUDIENCE: &str = keystead_axum::DEFAULT_AUDIENCE;

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

/// The value of `name` in a URL fragment `#a=1&b=2`.
fn fragment_param(url: &str, name: &str) -> String {
    let (_, fragment) = url.split_once('#').expect("a fragment");
    fragment
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_owned()
}

/// Whether `token` is active, asked of the introspection endpoint as the
/// administrator.
async fn active(server: &common::TestServer, token: &str) -> bool {
    let (status, answer) = call(
        server
            .http
            .post(server.url("/realms/acme/protocol/openid-connect/token/introspect"))
            .bearer_auth(&server.admin_token)
            .form(&[("token", token)]),
    )
    .await;
    assert_eq!(status, 200);
    answer["active"] == true
}

#[tokio::test]
async fn portal_access_tokens_expire_all_and_logout() {
    let server = common::start().await;
    let (realm_id, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let jwks_uri = format!("{issuer}/protocol/openid-connect/certs");
    let (_, token) = server.user_with_token(realm_id, "owner").await;

    // App-portal access: a magic link in the URL's fragment, which the
    // portal opens with seed 003's verify-magic-link for its app.
    let (status, access) = call(
        server
            .http
            .post(server.url("/api/v1/auth/app-portal-access/app_1"))
            .bearer_auth(&token)
            .json(&json!({"application": {"name": "My first application"}, "expiry": 3600, "readOnly": true})),
    )
    .await;
    assert_eq!(status, 200, "{access}");
    let url = s(&access["url"]);
    assert!(url.starts_with(&server.url("/realms/acme/app-portal/app_1#")));
    assert_eq!(fragment_param(&url, "token"), s(&access["token"]));
    let (status, portal) = call(
        server
            .http
            .get(server.url("/realms/acme/login-actions/verify-magic-link"))
            .query(&[
                ("token_id", fragment_param(&url, "id")),
                ("magic_token", fragment_param(&url, "token")),
                ("client_id", "app_1".to_owned()),
            ]),
    )
    .await;
    assert_eq!(status, 200, "{portal}");
    let portal_token = s(&portal["access_token"]);
    let claims = verify_with_jwks(&server.http, &jwks_uri, &portal_token, AUDIENCE, &issuer)
        .await
        .unwrap();
    assert_eq!(claims["client_id"], "app_1");
    assert_eq!(claims["amr"], json!(["magic_link"]));

    // Dashboard access: a one-time token, exchanged once (realm by header).
    let (status, dashboard) = call(
        server
            .http
            .post(server.url("/api/v1/auth/dashboard-access/app_1"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{dashboard}");
    let one_time = s(&dashboard["token"]);
    assert_eq!(fragment_param(&s(&dashboard["url"]), "key"), one_time);
    let exchange = server.url("/api/v1/auth/one-time-token");
    let (status, _) = call(
        server
            .http
            .post(&exchange)
            .json(&json!({"oneTimeToken": one_time})),
    )
    .await;
    assert_eq!(status, 401, "no bearer and no realm");
    let (status, exchanged) = call(
        server
            .http
            .post(&exchange)
            .header(REALM_HEADER, "acme")
            .json(&json!({"oneTimeToken": one_time})),
    )
    .await;
    assert_eq!(status, 200, "{exchanged}");
    let app_token = s(&exchanged["token"]);
    let claims = verify_with_jwks(&server.http, &jwks_uri, &app_token, AUDIENCE, &issuer)
        .await
        .unwrap();
    assert_eq!(claims["client_id"], "app_1");
    let (status, again) = call(
        server
            .http
            .post(&exchange)
            .bearer_auth(&token)
            .json(&json!({"oneTimeToken": one_time})),
    )
    .await;
    assert_eq!(
        (status, again["code"].clone()),
        (400, json!("INVALID_GRANT"))
    );

    // A message token: a named, scoped access token.
    let (status, message) = call(
        server
            .http
            .post(server.url("/api/v1/auth/app/app_1/create-message-token"))
            .bearer_auth(&token)
            .json(&json!({"name": "ingest", "expiry": 0})),
    )
    .await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["scopes"], json!(["message:create"]));
    let message_token = s(&message["token"]);
    let claims = verify_with_jwks(&server.http, &jwks_uri, &message_token, AUDIENCE, &issuer)
        .await
        .unwrap();
    assert_eq!(claims["token_name"], "ingest");
    assert_eq!(claims["scope"], "message:create");
    assert_eq!(claims["jti"], message["id"]);
    assert!(
        server
            .ks()
            .tokens(realm_id)
            .verify_scoped_token(&message_token, AUDIENCE, "message:read")
            .await
            .is_err(),
        "the token carries only its scope"
    );

    // Expire-all is for the administrator; a grace leaves tokens alive for now.
    let expire = server.url("/api/v1/auth/app/app_1/expire-all");
    let (status, _) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&token)
            .json(&json!({"expiry": 0})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&server.admin_token)
            .json(&json!({"expiry": 0})),
    )
    .await;
    assert_eq!(status, 400, "the admin names the realm");
    let (status, _) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "gone")
            .json(&json!({"expiry": 0})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "acme")
            .json(&json!({"expiry": 99_999_999})),
    )
    .await;
    assert_eq!((status, body["field"].clone()), (400, json!("expiry")));
    let (status, _) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "acme")
            .json(&json!({"expiry": 60})),
    )
    .await;
    assert_eq!(status, 204);
    assert!(active(&server, &portal_token).await, "within the grace");
    // Without grace: every token of app_1 dies; the owner's own token lives.
    let (status, _) = call(
        server
            .http
            .post(&expire)
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "acme")
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 204);
    for dead in [&portal_token, &app_token, &message_token] {
        assert!(!active(&server, dead).await);
    }
    let (status, _) = call(
        server
            .http
            .post(server.url("/api/v1/auth/logout"))
            .bearer_auth(&portal_token),
    )
    .await;
    assert_eq!(status, 401, "an expired token can't log out");
    assert!(active(&server, &token).await);

    // Logout ends the caller's session.
    let (status, _) = call(
        server
            .http
            .post(server.url("/api/v1/auth/logout"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 204);
    assert!(!active(&server, &token).await);
    let (status, _) = call(
        server
            .http
            .post(server.url("/api/v1/auth/dashboard-access/app_1"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 401);

    server.stop().await;
}

#[tokio::test]
async fn refusals_of_the_portal_api() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    let (realm_id, _) = realm(&server, "acme", MfaPolicy::Optional).await;
    let (_, token) = server.user_with_token(realm_id, "owner").await;

    // No bearer: 401 on every path that needs one.
    for path in [
        "/api/v1/auth/app-portal-access/app_1",
        "/api/v1/auth/dashboard-access/app_1",
        "/api/v1/auth/app/app_1/create-message-token",
        "/api/v1/auth/app/app_1/expire-all",
        "/api/v1/auth/logout",
    ] {
        let (status, _) = call(server.http.post(server.url(path)).json(&json!({}))).await;
        assert_eq!(status, 401, "{path}");
    }
    // Bad input: an app id with a space, a message token without a name or
    // too long, an unknown field, a one-time token that isn't one, an
    // unknown realm.
    let (status, _) = call(
        server
            .http
            .post(server.url("/api/v1/auth/dashboard-access/app%201"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400);
    let message = server.url("/api/v1/auth/app/app_1/create-message-token");
    let (status, _) = call(
        server
            .http
            .post(&message)
            .bearer_auth(&token)
            .json(&json!({"expiry": 60})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        server
            .http
            .post(&message)
            .bearer_auth(&token)
            .json(&json!({"name": "x", "expiry": 999_999_999})),
    )
    .await;
    assert_eq!((status, body["field"].clone()), (400, json!("expires_in")));
    let (status, _) = call(
        server
            .http
            .post(&message)
            .bearer_auth(&token)
            .json(&json!({"name": "x", "scopes": ["all"]})),
    )
    .await;
    assert_eq!(status, 400);
    let exchange = server.url("/api/v1/auth/one-time-token");
    let (status, body) = call(
        server
            .http
            .post(&exchange)
            .bearer_auth(&token)
            .json(&json!({"oneTimeToken": "nope"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("INVALID_GRANT"))
    );
    let (status, _) = call(
        server
            .http
            .post(&exchange)
            .header(REALM_HEADER, "nope")
            .json(&json!({"oneTimeToken": "nope"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        server
            .http
            .post(&exchange)
            .bearer_auth("forged.token.here")
            .json(&json!({"oneTimeToken": "nope"})),
    )
    .await;
    assert_eq!(status, 401);

    server.stop().await;
}
