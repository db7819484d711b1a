//! Seeds 001/002 over real HTTP: password login → TOTP key created
//! (password re-checked) and activated with a code totp-rs computes from
//! the otpauth URI → MFA login in one step and in two → trusted devices
//! (listed, used, deleted) → key deletion → refresh and application-token
//! logins; statuses, types, and every endpoint's refusals.

// A flow reads best as one story, top to bottom.
#![allow(clippy::too_many_lines)]

mod common;
mod support;

use keystead::realm::MfaPolicy;
use keystead::secret::SecretString;
use keystead::user::Authority;
use keystead_axum::auth::REALM_HEADER;
use serde_json::{Value, json};
use support::{PASSWORD, call, realm, totp_next, totp_now};

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

/// `POST /api/v1/authenticate` in realm `realm`.
async fn login(server: &common::TestServer, realm: &str, body: &Value) -> (u16, Value) {
    call(
        server
            .http
            .post(server.url("/api/v1/authenticate"))
            .header(REALM_HEADER, realm)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn account_flow_with_totp_and_trusted_devices() {
    let server = common::start().await;
    let (realm_id, _) = realm(&server, "acme", MfaPolicy::Optional).await;
    let users = server.ks().users(realm_id);
    let alice = users
        .register("alice", None, SecretString::new(PASSWORD.into()))
        .await
        .unwrap();
    let bob = users
        .register("bob", None, SecretString::new(PASSWORD.into()))
        .await
        .unwrap();

    // Password login.
    let (status, tokens) = login(
        &server,
        "acme",
        &json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let token = s(&tokens["auth_token"]);
    assert!(tokens["refresh_token"].is_string());

    // Statuses and types, with the seed's numbering.
    let (status, statuses) = call(
        server
            .http
            .get(server.url("/api/v1/user/mfa/status"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        statuses,
        json!([{"id": 2, "description": "ACTIVATION_PENDING"}, {"id": 1, "description": "ACTIVE"}])
    );
    let (status, types) = call(
        server
            .http
            .get(server.url("/api/v1/user/mfa/type"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        (status, types),
        (200, json!([{"id": 1, "description": "TOTP"}]))
    );

    // Create a key: the password is checked again.
    let create = server.url("/api/v1/user/mfa");
    let (status, body) = call(
        server
            .http
            .post(&create)
            .bearer_auth(&token)
            .json(&json!({"type": {"id": 1}, "password": "wrong password"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("INVALID_CREDENTIALS"))
    );
    let (status, body) = call(
        server
            .http
            .post(&create)
            .bearer_auth(&token)
            .json(&json!({"type": {"id": 9}, "password": PASSWORD})),
    )
    .await;
    assert_eq!((status, body["field"].clone()), (400, json!("type.id")));
    let (status, key) = call(
        server
            .http
            .post(&create)
            .bearer_auth(&token)
            .json(&json!({"type": {"id": 1}, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(
        key["status"],
        json!({"id": 2, "description": "ACTIVATION_PENDING"})
    );
    assert_eq!(key["activation_date"], Value::Null);
    let otpauth = s(&key["otpauth"]);
    assert!(otpauth.contains(&format!("secret={}", s(&key["secret_key"]))));
    let key_id = s(&key["id"]);
    let (status, body) = call(
        server
            .http
            .post(&create)
            .bearer_auth(&token)
            .json(&json!({"type": {"id": 1}, "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("MFA_PENDING_KEY_EXISTS"))
    );

    // Activate it with a code from the URI.
    let activate = server.url(&format!("/api/v1/user/mfa/{key_id}"));
    let (status, _) = call(
        server
            .http
            .patch(&activate)
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 2}, "code": "123456"})),
    )
    .await;
    assert_eq!(status, 400, "only ACTIVE (1) can be set");
    let (status, _) = call(
        server
            .http
            .patch(server.url("/api/v1/user/mfa/not-an-id"))
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 1}, "code": "123456"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        server
            .http
            .patch(&activate)
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 1}, "code": "12345x"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED"))
    );
    let (status, _) = call(
        server
            .http
            .patch(&activate)
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 1}, "code": totp_now(&otpauth)})),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(
        server
            .http
            .patch(&activate)
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 1}, "code": totp_next(&otpauth)})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("MFA_KEY_ALREADY_ACTIVE"))
    );

    // The password alone now stops at the second factor…
    let (status, pending) = login(
        &server,
        "acme",
        &json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, pending["code"].clone()),
        (401, json!("MFA_REQUIRED"))
    );
    assert!(
        pending["factors"]
            .as_array()
            .unwrap()
            .contains(&json!("totp"))
    );
    // …which the challenge id and a fresh code finish, asking to trust the device.
    let (status, mfa) = call(
        server
            .http
            .post(server.url("/api/v1/authenticate"))
            .header(REALM_HEADER, "acme")
            .header("user-agent", "e2e-browser/1.0")
            .json(&json!({"challenge_id": pending["challenge_id"], "code": totp_next(&otpauth), "trust_device": true})),
    )
    .await;
    assert_eq!(status, 200, "{mfa}");
    let fingerprint = s(&mfa["fingerprint"]);
    let mfa_token = s(&mfa["auth_token"]);

    // The trusted device, through all three paths.
    let mine = [
        "/api/v1/user/mfa/trusted_device".to_owned(),
        "/api/v1/user/my/mfa/trusted_device".to_owned(),
        format!("/api/v1/user/{}/mfa/trusted_device", alice.id),
    ];
    for path in &mine {
        let (status, devices) =
            call(server.http.get(server.url(path)).bearer_auth(&mfa_token)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(devices.as_array().unwrap().len(), 1, "{path}");
        assert_eq!(devices[0]["description"], "e2e-browser/1.0");
    }
    let (_, devices) = call(
        server
            .http
            .get(server.url(&mine[0]))
            .bearer_auth(&mfa_token),
    )
    .await;
    let device_id = s(&devices[0]["id"]);
    // Another user's devices: 403; the administrator may look.
    let (status, body) = call(
        server
            .http
            .get(server.url(&format!("/api/v1/user/{}/mfa/trusted_device", bob.id)))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("NOT_YOUR_ACCOUNT"))
    );
    let (status, listed) = call(
        server
            .http
            .get(server.url(&format!("/api/v1/user/{}/mfa/trusted_device", alice.id)))
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "acme"),
    )
    .await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(1)));

    // The fingerprint answers the second factor on its own.
    let (status, remembered) = login(
        &server,
        "acme",
        &json!({"username": "alice", "password": PASSWORD, "fingerprint": fingerprint}),
    )
    .await;
    assert_eq!(status, 200, "{remembered}");
    // Two answers at once are refused.
    let (status, _) = login(&server, "acme", &json!({"username": "alice", "password": PASSWORD, "fingerprint": fingerprint, "code": "123456"})).await;
    assert_eq!(status, 400);

    // Delete the device: its token stops working.
    let (status, _) = call(
        server
            .http
            .delete(server.url(&format!("/api/v1/user/mfa/trusted_device/{device_id}")))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(
        server
            .http
            .delete(server.url(&format!("/api/v1/user/my/mfa/trusted_device/{device_id}")))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("TRUSTED_DEVICE_NOT_FOUND"))
    );
    let (status, body) = login(
        &server,
        "acme",
        &json!({"username": "alice", "password": PASSWORD, "fingerprint": fingerprint}),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Delete the key (someone else may not); then the password is enough again.
    let (status, _) = call(
        server
            .http
            .delete(server.url(&format!("/api/v1/user/{}/mfa/{key_id}", bob.id)))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        server
            .http
            .delete(server.url(&format!("/api/v1/user/{}/mfa/{key_id}", alice.id)))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(
        server
            .http
            .delete(server.url(&format!("/api/v1/user/my/mfa/{key_id}")))
            .bearer_auth(&mfa_token),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("MFA_KEY_NOT_FOUND"))
    );
    let (status, plain) = login(
        &server,
        "acme",
        &json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{plain}");

    // Refresh rotates; reuse is refused.
    let refresh = s(&plain["refresh_token"]);
    let (status, rotated) = login(&server, "acme", &json!({"refresh_token": refresh})).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, reused) = login(&server, "acme", &json!({"refresh_token": refresh})).await;
    assert_eq!(
        (status, reused["code"].clone()),
        (400, json!("REFRESH_TOKEN_REUSED"))
    );

    // An application token logs in with its scopes — those the account
    // API's client is registered for (an administrator grants them).
    server
        .ks()
        .oauth(users.realm())
        .update_client(
            keystead_axum::account::ACCOUNT_CLIENT_ID,
            keystead::oauth::ClientUpdate {
                scopes: Some(vec!["openid".into(), "read".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let app = users
        .create_app_token(alice.id, "ci", vec!["read".into()], Authority::Operator)
        .await
        .unwrap();
    let (status, by_app) = login(
        &server,
        "acme",
        &json!({"application_token": app.secret.expose()}),
    )
    .await;
    assert_eq!(status, 200, "{by_app}");
    let claims = server
        .ks()
        .tokens(realm_id)
        .verify_access_token(&s(&by_app["auth_token"]), &server.state.audience)
        .await
        .unwrap();
    assert_eq!(claims.scope, "read");
    users
        .revoke_app_token(alice.id, app.token.id)
        .await
        .unwrap();
    let (status, _) = login(
        &server,
        "acme",
        &json!({"application_token": app.secret.expose()}),
    )
    .await;
    assert_eq!(status, 401);

    server.stop().await;
}

#[tokio::test]
async fn refusals_of_the_account_api() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    let (realm_id, _) = realm(&server, "acme", MfaPolicy::Required).await;
    server
        .ks()
        .users(realm_id)
        .register("carol", None, SecretString::new(PASSWORD.into()))
        .await
        .unwrap();

    // No realm header, an unknown realm, an empty or unknown body.
    let (status, body) = call(
        server
            .http
            .post(server.url("/api/v1/authenticate"))
            .json(&json!({"username": "carol", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("x-keystead-realm"))
    );
    let (status, body) = login(
        &server,
        "nope",
        &json!({"username": "carol", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("REALM_NOT_FOUND"))
    );
    let (status, _) = login(&server, "acme", &json!({})).await;
    assert_eq!(status, 400);
    let (status, _) = login(&server, "acme", &json!({"user": "carol"})).await;
    assert_eq!(status, 400);
    let (status, body) = login(
        &server,
        "acme",
        &json!({"username": "carol", "password": "wrong password"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("INVALID_CREDENTIALS"))
    );
    let (status, _) = login(
        &server,
        "acme",
        &json!({"challenge_id": "nope", "code": "123456"}),
    )
    .await;
    assert_eq!(status, 400);

    // The realm requires MFA: the setup path, named by challenge_id.
    let (status, body) = login(
        &server,
        "acme",
        &json!({"username": "carol", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("MFA_ENROLLMENT_REQUIRED"))
    );
    let challenge = s(&body["challenge_id"]);
    let (status, key) = call(
        server
            .http
            .get(server.url("/realms/acme/login-actions/setup-otp"))
            .bearer_auth(&challenge),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    let (status, done) = call(
        server
            .http
            .post(server.url("/realms/acme/login-actions/verify-otp"))
            .bearer_auth(&challenge)
            .json(&json!({"code": totp_now(&s(&key["otpauth_url"]))})),
    )
    .await;
    assert_eq!(status, 200, "{done}");

    // Every user path needs a valid bearer.
    for (method, path) in [
        ("GET", "/api/v1/user/mfa/status"),
        ("GET", "/api/v1/user/mfa/type"),
        ("POST", "/api/v1/user/mfa"),
        ("GET", "/api/v1/user/my/mfa/trusted_device"),
    ] {
        let request = match method {
            "GET" => server.http.get(server.url(path)),
            _ => server
                .http
                .post(server.url(path))
                .json(&json!({"type": {"id": 1}, "password": PASSWORD})),
        };
        let (status, _) = call(request.bearer_auth("not-a-token")).await;
        assert_eq!(status, 401, "{path}");
    }
    // A malformed user id; the admin without naming a user.
    let token = s(&done["access_token"]);
    let (status, _) = call(
        server
            .http
            .get(server.url("/api/v1/user/42/mfa/trusted_device"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        server
            .http
            .get(server.url("/api/v1/user/my/mfa/trusted_device"))
            .bearer_auth(&server.admin_token)
            .header(REALM_HEADER, "acme"),
    )
    .await;
    assert_eq!(status, 400);

    server.stop().await;
}
