//! Seed 003 over real HTTP: registration → password grant → TOTP enrolment
//! (codes computed by totp-rs from the otpauth URI) → MFA login → refresh
//! with reuse detection → recovery codes → token exchange → introspection
//! → revocation → logout; the enrolment path of an MFA-required realm;
//! magic links; discovery, JWKS (verified by jsonwebtoken alone), userinfo
//! and every endpoint's refusals.

// A flow reads best as one story, top to bottom.
#![allow(clippy::too_many_lines)]

mod common;
mod support;

use keystead::realm::MfaPolicy;
use keystead_axum::oidc::mail;
use serde_json::{Value, json};
use support::{PASSWORD, call, realm, totp_next, totp_now, verify_with_jwks};

const AUDIENCE: &str = keystead_axum::DEFAULT_AUDIENCE;

/// `POST <token endpoint>` with a form.
async fn grant(server: &common::TestServer, realm: &str, form: &[(&str, &str)]) -> (u16, Value) {
    call(
        server
            .http
            .post(server.url(&format!("/realms/{realm}/protocol/openid-connect/token")))
            .form(form),
    )
    .await
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

#[tokio::test]
async fn the_whole_oidc_flow() {
    let server = common::start().await;
    let (_, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let base = "/realms/acme";

    // Discovery points at this server's endpoints.
    let (status, doc) = call(
        server
            .http
            .get(server.url(&format!("{base}/.well-known/openid-configuration"))),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], issuer.as_str());
    let token_endpoint = s(&doc["token_endpoint"]);
    let jwks_uri = s(&doc["jwks_uri"]);
    assert!(
        doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:token-exchange"))
    );
    // certs and jwks.json serve the same set.
    let (_, certs) = call(server.http.get(&jwks_uri)).await;
    let (_, jwks) = call(
        server
            .http
            .get(server.url(&format!("{base}/protocol/openid-connect/jwks.json"))),
    )
    .await;
    assert_eq!(certs, jwks);
    assert!(!certs["keys"].as_array().unwrap().is_empty());

    // Registration answers tokens; the same name again is a 409.
    let registration = server.url(&format!("{base}/protocol/openid-connect/registrations"));
    let (status, registered) = call(server.http.post(&registration).json(&json!({
        "username": "alice", "email": "alice@example.com", "password": PASSWORD,
        "first_name": "Alice", "last_name": "Liddell",
    })))
    .await;
    assert_eq!(status, 201, "{registered}");
    assert!(registered["refresh_token"].is_string());
    let (status, taken) = call(server.http.post(&registration).json(&json!({
        "username": "ALICE", "password": PASSWORD,
    })))
    .await;
    assert_eq!(status, 409);
    assert_eq!(taken["code"], "USERNAME_TAKEN");
    let (status, weak) = call(server.http.post(&registration).json(&json!({
        "username": "bob", "password": "short",
    })))
    .await;
    assert_eq!(status, 400);
    assert_eq!(weak["error"], "invalid_request");

    // Password grant (form-encoded), verified by jsonwebtoken from the JWKS alone.
    let (status, first) = call(server.http.post(&token_endpoint).form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("client_id", "web"),
    ]))
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["token_type"], "Bearer");
    let access = s(&first["access_token"]);
    let claims = verify_with_jwks(&server.http, &jwks_uri, &access, AUDIENCE, &issuer)
        .await
        .expect("jsonwebtoken accepts the token");
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(
        verify_with_jwks(&server.http, &jwks_uri, &access, "someone-else", &issuer)
            .await
            .is_err(),
        "another audience is refused"
    );

    // Userinfo.
    let userinfo = server.url(&format!("{base}/protocol/openid-connect/userinfo"));
    let (status, info) = call(server.http.get(&userinfo).bearer_auth(&access)).await;
    assert_eq!(status, 200);
    assert_eq!(info["preferred_username"], "alice");
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["name"], "Alice Liddell");
    assert_eq!(info["sub"], claims["sub"]);

    // TOTP enrolment as a logged-in user; the code comes from the URI.
    let setup = server.url(&format!("{base}/login-actions/setup-otp"));
    let verify = server.url(&format!("{base}/login-actions/verify-otp"));
    let (status, key) = call(server.http.get(&setup).bearer_auth(&access)).await;
    assert_eq!(status, 200, "{key}");
    let otpauth = s(&key["otpauth_url"]);
    assert!(otpauth.starts_with("otpauth://totp/"));
    let (status, wrong) = call(
        server
            .http
            .post(&verify)
            .bearer_auth(&access)
            .json(&json!({"code": "000000x"})),
    )
    .await;
    assert_eq!(status, 400, "{wrong}");
    let (status, verified) = call(
        server
            .http
            .post(&verify)
            .bearer_auth(&access)
            .json(&json!({"code": totp_now(&otpauth), "key_id": key["key_id"]})),
    )
    .await;
    assert_eq!(status, 200, "{verified}");

    // Now the password alone is not enough: 403 mfa_required with a login token.
    let password_grant = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("client_id", "web"),
    ];
    let (status, pending) = grant(&server, "acme", &password_grant).await;
    assert_eq!(status, 403, "{pending}");
    assert_eq!(pending["error"], "mfa_required");
    let mfa_token = s(&pending["mfa_token"]);
    let challenge = server.url(&format!("{base}/login-actions/challenge-otp"));
    let (status, bad) = call(
        server
            .http
            .post(&challenge)
            .bearer_auth(&mfa_token)
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert!(
        bad["code"] == "MFA_INVALID_CODE" && status == 401,
        "{status} {bad}"
    );
    let (status, mfa) = call(
        server
            .http
            .post(&challenge)
            .bearer_auth(&mfa_token)
            .json(&json!({"code": totp_next(&otpauth), "client_id": "web"})),
    )
    .await;
    assert_eq!(status, 200, "{mfa}");
    assert_eq!(mfa["status"], "Success");
    let mfa_access = s(&mfa["access_token"]);
    let claims = verify_with_jwks(&server.http, &jwks_uri, &mfa_access, AUDIENCE, &issuer)
        .await
        .unwrap();
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    // The login token is single-use.
    let (status, _) = call(
        server
            .http
            .post(&challenge)
            .bearer_auth(&mfa_token)
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert_eq!(status, 401);

    // Recovery codes for later logins.
    let (status, codes) = call(
        server
            .http
            .post(server.url(&format!("{base}/login-actions/generate-recovery-codes")))
            .bearer_auth(&mfa_access)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 200, "{codes}");
    let codes: Vec<String> = codes["codes"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(codes.len(), 10);

    // Refresh rotates; presenting the old token again is reuse and kills
    // the family and its session.
    let old_refresh = s(&mfa["refresh_token"]);
    let refresh = |token: String| {
        [
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", token),
            ("client_id", "web".to_owned()),
        ]
    };
    let (status, rotated) = call(
        server
            .http
            .post(&token_endpoint)
            .form(&refresh(old_refresh.clone())),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_refresh = s(&rotated["refresh_token"]);
    assert_ne!(new_refresh, old_refresh);
    let (status, reused) = call(
        server
            .http
            .post(&token_endpoint)
            .form(&refresh(old_refresh)),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(reused["error"], "invalid_grant");
    assert_eq!(reused["code"], "REFRESH_TOKEN_REUSED");
    let (status, dead) = call(
        server
            .http
            .post(&token_endpoint)
            .form(&refresh(new_refresh)),
    )
    .await;
    assert_eq!(
        (status, dead["code"].clone()),
        (400, json!("INVALID_GRANT"))
    );
    let (status, _) = call(server.http.get(&userinfo).bearer_auth(&mfa_access)).await;
    assert_eq!(status, 401, "the session ended with the family");

    // A recovery code answers the next challenge; ask for the introspect scope.
    let (_, pending) = grant(&server, "acme", &password_grant).await;
    let (status, recovered) = call(
        server
            .http
            .post(server.url(&format!("{base}/login-actions/burn-recovery-code")))
            .bearer_auth(s(&pending["mfa_token"]))
            .json(&json!({"recovery_code": codes[0], "client_id": "web", "scope": "introspect openid"})),
    )
    .await;
    assert_eq!(status, 200, "{recovered}");
    let b_access = s(&recovered["access_token"]);
    let b_refresh = s(&recovered["refresh_token"]);

    // Token exchange (RFC 8693): only an authenticated confidential client
    // registered for it; without credentials, nothing is issued.
    let exchange_form = |client_id: &'static str, secret: &str, audience: &'static str| {
        vec![
            (
                "grant_type".to_owned(),
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token".to_owned(), b_access.clone()),
            (
                "subject_token_type".to_owned(),
                "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            ),
            ("audience".to_owned(), audience.to_owned()),
            ("scope".to_owned(), "openid".to_owned()),
            ("client_id".to_owned(), client_id.to_owned()),
            ("client_secret".to_owned(), secret.to_owned()),
        ]
    };
    let token_endpoint = server.url(&format!("{base}/protocol/openid-connect/token"));
    let (status, anonymous) = call(server.http.post(&token_endpoint).form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", b_access.as_str()),
        ("audience", "https://api.other.test"),
    ]))
    .await;
    assert_eq!(
        (status, anonymous["error"].clone()),
        (401, json!("invalid_client"))
    );
    let realm_id = server.ks().realms().get_by_name("acme").await.unwrap().id;
    let registered = server
        .ks()
        .oauth(realm_id)
        .create_client(keystead::oauth::NewClient {
            kind: keystead::oauth::ClientKind::Confidential,
            grant_types: vec![keystead::oauth::GrantType::TokenExchange],
            subject_audiences: vec![server.state.audience.to_string()],
            ..keystead::oauth::NewClient::first_party(
                "other-api",
                "https://api.other.test",
                vec!["openid".into()],
            )
        })
        .await
        .unwrap();
    let secret = registered.secret.unwrap().expose().to_owned();
    let (status, wrong) = call(server.http.post(&token_endpoint).form(&exchange_form(
        "other-api",
        "kscs_wrong",
        "https://api.other.test",
    )))
    .await;
    assert_eq!(
        (status, wrong["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (status, target) = call(server.http.post(&token_endpoint).form(&exchange_form(
        "other-api",
        &secret,
        "payments-api",
    )))
    .await;
    assert_eq!(
        (status, target["error"].clone()),
        (400, json!("invalid_target"))
    );
    let (status, exchanged) = call(server.http.post(&token_endpoint).form(&exchange_form(
        "other-api",
        &secret,
        "https://api.other.test",
    )))
    .await;
    assert_eq!(status, 200, "{exchanged}");
    assert_eq!(
        exchanged["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let narrow = verify_with_jwks(
        &server.http,
        &jwks_uri,
        &s(&exchanged["access_token"]),
        "https://api.other.test",
        &issuer,
    )
    .await
    .unwrap();
    assert_eq!(narrow["scope"], "openid");
    assert_eq!(narrow["client_id"], "other-api");
    assert_eq!(narrow["act"], json!({"sub": "other-api"}), "RFC 8693 §4.1");
    let (status, wider) = grant(
        &server,
        "acme",
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &b_access),
            ("scope", "admin"),
            ("client_id", "other-api"),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(
        (status, wider["error"].clone()),
        (400, json!("invalid_scope"))
    );

    // Introspection: the admin or an `introspect`-scoped token of the realm.
    let introspect = server.url(&format!("{base}/protocol/openid-connect/token/introspect"));
    let (status, active) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&b_access)
            .form(&[("token", b_refresh.as_str())]),
    )
    .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "refresh_token");
    let (status, by_admin) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&server.admin_token)
            .form(&[("token", b_access.as_str())]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_admin["active"], true);
    assert_eq!(by_admin["sub"], claims["sub"]);
    let (_, garbage) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&server.admin_token)
            .form(&[("token", "nonsense")]),
    )
    .await;
    assert_eq!(garbage, json!({"active": false}));
    let (status, _) = call(server.http.post(&introspect).form(&[("token", "x")])).await;
    assert_eq!(status, 401);
    let (status, unscoped) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&access)
            .form(&[("token", "x")]),
    )
    .await;
    // `access` (the first login) is alive but carries no introspect scope.
    assert_eq!(status, 403, "{unscoped}");

    // Revocation (RFC 7009): the client authenticates (a public one by its
    // id) and ends only its own tokens; the refresh token ends its session;
    // unknown tokens succeed too.
    let revoke = server.url(&format!("{base}/protocol/openid-connect/revoke"));
    let anonymous = call(
        server
            .http
            .post(&revoke)
            .form(&[("token", b_refresh.as_str())]),
    )
    .await;
    assert_eq!(
        (anonymous.0, anonymous.1["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (status, _) = call(
        server
            .http
            .post(&revoke)
            .form(&[("token", b_refresh.as_str()), ("client_id", "cli")]),
    )
    .await;
    assert_eq!(
        status, 200,
        "another client's token: a success that ends nothing"
    );
    let (_, still) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&server.admin_token)
            .form(&[("token", b_refresh.as_str())]),
    )
    .await;
    assert_eq!(still["active"], true);
    let (status, _) = call(
        server
            .http
            .post(&revoke)
            .form(&[("token", b_refresh.as_str()), ("client_id", "web")]),
    )
    .await;
    assert_eq!(status, 200);
    let (_, gone) = call(
        server
            .http
            .post(&introspect)
            .bearer_auth(&server.admin_token)
            .form(&[("token", b_access.as_str())]),
    )
    .await;
    assert_eq!(gone, json!({"active": false}));
    let (status, _) = call(
        server
            .http
            .post(&revoke)
            .form(&[("token", "nonsense"), ("client_id", "web")]),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        server
            .http
            .post(&revoke)
            .form(&[("nottoken", "x"), ("client_id", "web")]),
    )
    .await;
    assert_eq!(status, 400);

    // Logout: the session of the hint ends; the redirect keeps `state`.
    let logout = server.url(&format!("{base}/protocol/openid-connect/logout"));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (status, _) = call(no_redirects.get(&logout).query(&[
        ("id_token_hint", access.as_str()),
        ("post_logout_redirect_uri", "https://evil.test/"),
    ]))
    .await;
    assert_eq!(status, 400, "foreign redirects are refused");
    let (status, _) = call(server.http.get(&userinfo).bearer_auth(&access)).await;
    assert_eq!(status, 200, "a refused logout ends nothing");
    let response = no_redirects
        .get(&logout)
        .query(&[
            ("id_token_hint", access.as_str()),
            ("post_logout_redirect_uri", &format!("{issuer}/bye")),
            ("state", "s 1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        format!("{issuer}/bye?state=s%201").as_str()
    );
    let (status, _) = call(server.http.get(&userinfo).bearer_auth(&access)).await;
    assert_eq!(status, 401);
    let (status, _) = call(server.http.post(&logout).form(&[("state", "x")])).await;
    assert_eq!(status, 400, "no session named");
    let (status, _) = call(
        server
            .http
            .post(&logout)
            .form(&[("id_token_hint", access.as_str())]),
    )
    .await;
    assert_eq!(status, 400, "an ended session is not active");

    server.stop().await;
}

#[tokio::test]
async fn an_mfa_required_realm_enrols_at_first_login() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    let (_, issuer) = realm(&server, "strict", MfaPolicy::Required).await;
    let base = "/realms/strict";

    // Registration opens no session: enrol first.
    let (status, pending) = call(
        server
            .http
            .post(server.url(&format!("{base}/protocol/openid-connect/registrations")))
            .json(&json!({"username": "carol", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 403, "{pending}");
    assert_eq!(pending["error"], "mfa_enrollment_required");
    // So does the password grant, and login-actions/authenticate.
    let (status, pending) = grant(
        &server,
        "strict",
        &[
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", PASSWORD),
            ("client_id", "web"),
        ],
    )
    .await;
    assert_eq!(
        (status, pending["code"].clone()),
        (403, json!("MFA_ENROLLMENT_REQUIRED"))
    );
    let (status, actions) = call(
        server
            .http
            .post(server.url(&format!("{base}/login-actions/authenticate")))
            .json(&json!({"username": "carol", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(actions["status"], "RequiresActions");
    assert_eq!(actions["required_actions"], json!(["configure_otp"]));
    let login_token = s(&actions["token"]);

    // The login token can't answer a second-factor challenge…
    let (status, refused) = call(
        server
            .http
            .post(server.url(&format!("{base}/login-actions/challenge-otp")))
            .bearer_auth(&login_token)
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert_eq!(
        (status, refused["code"].clone()),
        (403, json!("MFA_ENROLLMENT_REQUIRED"))
    );
    // …but it sets up a key, and the first code finishes the login.
    let (status, key) = call(
        server
            .http
            .get(server.url(&format!("{base}/login-actions/setup-otp")))
            .bearer_auth(&login_token),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    let otpauth = s(&key["otpauth_url"]);
    let (status, done) = call(
        server
            .http
            .post(server.url(&format!("{base}/login-actions/verify-otp")))
            .bearer_auth(&login_token)
            .json(&json!({"code": totp_now(&otpauth), "client_id": "cli"})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "Success");
    let claims = verify_with_jwks(
        &server.http,
        &server.url(&format!("{base}/protocol/openid-connect/certs")),
        &s(&done["access_token"]),
        AUDIENCE,
        &issuer,
    )
    .await
    .unwrap();
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    assert_eq!(claims["client_id"], "cli");
    // The challenge was consumed.
    let (status, _) = call(
        server
            .http
            .get(server.url(&format!("{base}/login-actions/setup-otp")))
            .bearer_auth(&login_token),
    )
    .await;
    assert_eq!(status, 401);

    server.stop().await;
}

#[tokio::test]
async fn magic_links_log_in_once_and_never_reveal_addresses() {
    let server = common::start_on(keystead_axum::Backend::Sled).await;
    let (realm_id, issuer) = realm(&server, "links", MfaPolicy::Optional).await;
    let base = "/realms/links";
    let (status, _) = call(
        server
            .http
            .post(server.url(&format!("{base}/protocol/openid-connect/registrations")))
            .json(&json!({"username": "dave", "email": "dave@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201);

    let send = server.url(&format!("{base}/login-actions/send-magic-link"));
    let (status, known) = call(
        server
            .http
            .post(&send)
            .json(&json!({"email": "Dave@Example.com"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, unknown) = call(
        server
            .http
            .post(&send)
            .json(&json!({"email": "eve@example.com"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(known, unknown, "the same answer for unknown addresses");
    assert!(mail::take(realm_id, "eve@example.com").is_none());
    let (status, _) = call(
        server
            .http
            .post(&send)
            .json(&json!({"email": "not an address"})),
    )
    .await;
    assert_eq!(status, 400);

    // A forged Host (or forwarding header) never steers the link: it is
    // built from the realm's issuer URL.
    let (status, _) = call(
        server
            .http
            .post(&send)
            .header("host", "evil.example")
            .header("x-forwarded-host", "evil.example")
            .json(&json!({"email": "dave@example.com"})),
    )
    .await;
    assert_eq!(status, 200);
    let forged = mail::take(realm_id, "dave@example.com").expect("a link was sent");
    assert!(
        forged
            .url
            .expose()
            .starts_with(&server.url(&format!("{base}/login-actions/verify-magic-link?"))),
        "the link points at the issuer, not the sender's host"
    );
    assert!(!forged.url.expose().contains("evil.example"));
    let mail = mail::take(realm_id, "dave@example.com").expect("a link was sent");
    let url = mail.url.expose().to_owned();
    assert!(url.starts_with(&server.url(&format!("{base}/login-actions/verify-magic-link?"))));
    let (status, opened) = call(server.http.get(format!("{url}&client_id=portal"))).await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["status"], "Success");
    let claims = verify_with_jwks(
        &server.http,
        &server.url(&format!("{base}/protocol/openid-connect/certs")),
        &s(&opened["access_token"]),
        AUDIENCE,
        &issuer,
    )
    .await
    .unwrap();
    assert_eq!(claims["amr"], json!(["magic_link"]));
    // Once only; a tampered secret and a malformed id fail too.
    let (status, again) = call(server.http.get(&url)).await;
    assert_eq!(
        (status, again["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let (status, _) = call(server.http.get(server.url(&format!(
        "{base}/login-actions/verify-magic-link?token_id=nope&magic_token=x"
    ))))
    .await;
    assert_eq!(status, 400);

    server.stop().await;
}

#[tokio::test]
async fn refusals_of_the_realm_endpoints() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    realm(&server, "acme", MfaPolicy::Optional).await;
    let url = |p: &str| server.url(&format!("/realms/acme{p}"));

    // Unknown realm: 404 everywhere.
    let (status, body) = call(
        server
            .http
            .get(server.url("/realms/nope/protocol/openid-connect/certs")),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("REALM_NOT_FOUND"))
    );
    let (status, _) = grant(&server, "nope", &[("grant_type", "password")]).await;
    assert_eq!(status, 404);

    // Token endpoint: missing and unsupported grants, missing fields, bad
    // credentials (400 invalid_grant per RFC 6749), wrong content type.
    let (status, body) = grant(&server, "acme", &[("client_id", "web")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request"))
    );
    let (status, body) = grant(&server, "acme", &[("grant_type", "not_a_grant")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("unsupported_grant_type"))
    );
    // client_credentials without a client (e2e_authcode.rs has the rest).
    let (status, body) = grant(&server, "acme", &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client"))
    );
    // The library knows the code grant; a request without a code is malformed.
    let (status, body) = grant(&server, "acme", &[("grant_type", "authorization_code")]).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request"))
    );
    let (status, body) = grant(
        &server,
        "acme",
        &[("grant_type", "password"), ("username", "x")],
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED"))
    );
    let (status, body) = grant(
        &server,
        "acme",
        &[
            ("grant_type", "password"),
            ("username", "ghost"),
            ("password", "wrong password"),
            ("client_id", "web"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let (status, _) = call(
        server
            .http
            .post(url("/protocol/openid-connect/token"))
            .header("content-type", "text/plain")
            .body("grant_type=password"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = grant(
        &server,
        "acme",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "ksrt_nope"),
            ("client_id", "web"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );

    // Userinfo without or with a bad bearer: 401 with WWW-Authenticate.
    let response = server
        .http
        .get(url("/protocol/openid-connect/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, _) = call(
        server
            .http
            .get(url("/protocol/openid-connect/userinfo"))
            .bearer_auth("a.b.c"),
    )
    .await;
    assert_eq!(status, 401);

    // Login actions: wrong credentials, unknown login tokens, the wrong
    // kind of bearer, a wrong recovery-code amount.
    let (status, body) = call(
        server
            .http
            .post(url("/login-actions/authenticate"))
            .json(&json!({"username": "ghost", "password": "nope"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("INVALID_CREDENTIALS"))
    );
    let unknown = keystead::id::ChallengeId::generate(chrono::Utc::now()).to_string();
    let (status, body) = call(
        server
            .http
            .post(url("/login-actions/challenge-otp"))
            .bearer_auth(&unknown)
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("CHALLENGE_NOT_FOUND"))
    );
    let (status, _) = call(
        server
            .http
            .post(url("/login-actions/challenge-otp"))
            .bearer_auth("a.b.c")
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        server
            .http
            .post(url("/login-actions/generate-recovery-codes"))
            .bearer_auth(&unknown)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(server.http.get(url("/login-actions/setup-otp"))).await;
    assert_eq!(status, 401);
    let (_, token) = server
        .user_with_token(
            server.ks().realms().get_by_name("acme").await.unwrap().id,
            "frank",
        )
        .await;
    let (status, _) = call(
        server
            .http
            .post(url("/login-actions/generate-recovery-codes"))
            .bearer_auth(&token)
            .json(&json!({"amount": 3})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        server
            .http
            .post(url("/login-actions/verify-otp"))
            .bearer_auth(&token)
            .json(&json!({"code": "123456"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("MFA_KEY_NOT_FOUND"))
    );
    let (status, body) = call(
        server
            .http
            .post(url("/login-actions/update-password"))
            .bearer_auth(&token)
            .json(&json!({"value": "a new passphrase", "current_password": "wrong one"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("INVALID_CREDENTIALS"))
    );
    let (status, body) = call(server.http.post(url("/login-actions/update-password")).bearer_auth(&token).json(&json!({"value": "a new passphrase", "current_password": "correct horse battery staple"}))).await;
    assert_eq!(status, 200, "{body}");

    // The authorization endpoint refuses an unregistered client with an
    // error page, never a redirect (the flow itself: e2e_authcode.rs).
    let response = server
        .http
        .get(url("/protocol/openid-connect/auth"))
        .query(&[("response_type", "code"), ("client_id", "web")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // Discovery of a realm without an issuer URL: 404.
    let response = server
        .http
        .post(server.url("/admin/realms"))
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "bare"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (status, body) = call(
        server
            .http
            .get(server.url("/realms/bare/.well-known/openid-configuration")),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("ISSUER_NOT_CONFIGURED"))
    );
    // Sign-up is off unless the realm opens it: nobody is created.
    let (status, body) = call(
        server
            .http
            .post(server.url("/realms/bare/protocol/openid-connect/registrations"))
            .json(&json!({"username": "walk-in", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("REGISTRATION_CLOSED"))
    );
    let bare = server.ks().realms().get_by_name("bare").await.unwrap();
    assert!(matches!(
        server.ks().users(bare.id).get_by_username("walk-in").await,
        Err(keystead::Error::User(keystead::user::UserError::NotFound))
    ));

    server.stop().await;
}

/// A realm that signs up by verified address answers a new and a
/// registered address alike; only the mailbox differs, and the mailed link
/// creates the account once.
#[tokio::test]
async fn verified_sign_up_never_reveals_addresses() {
    let server = common::start().await;
    let issuer = server.url("/realms/club");
    let (status, created) = call(
        server
            .http
            .post(server.url("/admin/realms"))
            .bearer_auth(&server.admin_token)
            .json(&json!({"name": "club", "issuer": issuer, "sign_up": "verified_email"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["signUp"], "verified_email");
    let realm: keystead::id::RealmId = created["id"].as_str().unwrap().parse().unwrap();
    server
        .ks()
        .users(realm)
        .register("member", Some("member@example.com"), PASSWORD.into())
        .await
        .unwrap();
    let registrations = server.url("/realms/club/protocol/openid-connect/registrations");
    let mut answers = Vec::new();
    for (username, email) in [
        ("newcomer", "new@example.com"),
        ("impostor", "member@example.com"),
    ] {
        answers.push(
            call(
                server
                    .http
                    .post(&registrations)
                    .json(&json!({"username": username, "email": email, "password": PASSWORD})),
            )
            .await,
        );
    }
    assert_eq!(answers[0], answers[1], "the same answer for both addresses");
    assert_eq!(answers[0].0, 202);
    let note = mail::take(realm, "member@example.com").expect("the owner is told");
    assert_eq!(note.subject, "already-registered");
    let confirm = mail::take(realm, "new@example.com").expect("a confirmation link");
    assert_eq!(confirm.subject, "sign-up");
    let link = confirm.url.expose().to_owned();
    assert!(link.starts_with(&format!(
        "{issuer}/login-actions/confirm-sign-up?token=kssu_"
    )));
    let path = link.strip_prefix(&server.base).unwrap();
    let (status, body) = call(server.http.get(server.url(path))).await;
    assert_eq!(
        (status, body["username"].clone()),
        (201, json!("newcomer")),
        "{body}"
    );
    let (status, body) = call(server.http.get(server.url(path))).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("SIGN_UP_NOT_FOUND"))
    );
    server.stop().await;
}
