//! The authorization-code flow (issue #12) over real HTTP, as a browser and
//! a relying party would run it against the example server:
//!
//! * by hand over reqwest, never following redirects: client registration
//!   through the admin API, `/auth` with PKCE S256, the HTML password and
//!   TOTP forms (the code computed by totp-rs from the otpauth URI), the
//!   redirect with `code`, `state` and `iss`, redemption with
//!   `client_secret_basic`, the ID and access tokens verified by
//!   jsonwebtoken from the served JWKS alone; code reuse revoking the first
//!   tokens; wrong verifier, redirect-URI look-alikes, unknown clients,
//!   public clients, cancel, client credentials and confidential refresh;
//! * with a real OpenID Connect client library (`openidconnect`):
//!   discovery, the authorization URL with PKCE and nonce, code exchange
//!   and ID-token validation against the server on loopback.

// A flow reads best as one story, top to bottom.
#![allow(clippy::too_many_lines)]

mod common;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use keystead::id::UserId;
use keystead::realm::MfaPolicy;
use keystead::secret::SecretString;
use keystead::user::Authority;
use openidconnect::url::Url;
use serde_json::{Value, json};
use support::{PASSWORD, answer, call, realm, totp_next, totp_now, verify_with_jwks};

const AUDIENCE: &str = keystead_axum::DEFAULT_AUDIENCE;
/// The relying party's redirect URI: nothing listens there — the test reads
/// the `Location` header instead of following it.
const REDIRECT: &str = "http://127.0.0.1:9/cb";

/// A client that never follows redirects: the test is the browser.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A PKCE verifier and its S256 challenge (RFC 7636 §4.2), computed here.
fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    (verifier, URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("random");
    bytes
}

/// The value of the hidden field `name` in an HTML page.
fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// The parameters of a redirect's query.
fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    Url::parse(location)
        .expect("an absolute redirect")
        .query_pairs()
        .into_owned()
        .collect()
}

/// A page: status, the headers, the body.
async fn page(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, String) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// The test's realm: a user with an active TOTP key, and its otpauth URI.
struct Setup {
    server: common::TestServer,
    issuer: String,
    alice: UserId,
    otpauth: String,
    /// `webapp`'s secret.
    secret: String,
}

async fn setup() -> Setup {
    let server = common::start().await;
    let (realm_id, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let users = server.ks().users(realm_id);
    let alice = users
        .register("alice", Some("alice@example.com"), PASSWORD.into())
        .await
        .expect("alice")
        .id;
    let mfa = server.ks().mfa(realm_id);
    let key = mfa
        .create_totp_key(alice, Authority::Operator)
        .await
        .expect("totp key");
    let otpauth = key.otpauth_uri.expose().to_owned();
    mfa.activate(alice, key.key.id, &SecretString::new(totp_now(&otpauth)))
        .await
        .expect("activate");

    // Client registration through the admin API; the secret is shown once.
    let clients = server.url("/admin/realms/acme/clients");
    let (status, created) = call(
        server
            .http
            .post(&clients)
            .bearer_auth(&server.admin_token)
            .json(&json!({
                "client_id": "webapp", "kind": "confidential",
                "redirect_uris": [REDIRECT], "scopes": ["openid", "reports"],
            })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert!(secret.starts_with("kscs_"));
    assert_eq!(created["audience"], AUDIENCE);
    let (status, shown) = call(
        server
            .http
            .get(format!("{clients}/webapp"))
            .bearer_auth(&server.admin_token),
    )
    .await;
    assert_eq!(status, 200);
    assert!(shown.get("client_secret").is_none(), "never shown again");
    assert_eq!(shown["redirect_uris"], json!([REDIRECT]));
    Setup {
        server,
        issuer,
        alice,
        otpauth,
        secret,
    }
}

/// `/auth` parameters for `client_id` with the given PKCE challenge.
fn auth_query<'a>(client_id: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid reports"),
        ("state", "st-<&\"'>"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

/// Run the browser part for `client_id`: `/auth`, password, TOTP with
/// `totp`; the final redirect's query.
async fn log_in(
    s: &Setup,
    client_id: &str,
    challenge: &str,
    totp: &str,
) -> std::collections::HashMap<String, String> {
    let http = browser();
    let (status, _, html) = page(
        http.get(s.server.url("/realms/acme/protocol/openid-connect/auth"))
            .query(&auth_query(client_id, challenge))
            .send()
            .await
            .expect("auth"),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let tx = hidden_field(&html, "login_tx").expect("the transaction handle");
    let (status, _, html) = page(
        http.post(s.server.url("/realms/acme/login-actions/authenticate"))
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .expect("password"),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let response = http
        .post(s.server.url("/realms/acme/login-actions/challenge-otp"))
        .form(&[("login_tx", tx.as_str()), ("code", totp)])
        .send()
        .await
        .expect("totp");
    assert_eq!(response.status(), 302);
    query_of(response.headers()["location"].to_str().expect("ascii"))
}

/// Verify an ID token with jsonwebtoken from the served JWKS alone.
async fn verify_id_token(s: &Setup, token: &str, client_id: &str) -> Value {
    let jwks_uri = s.server.url("/realms/acme/protocol/openid-connect/certs");
    let (_, jwks) = call(s.server.http.get(&jwks_uri)).await;
    let set: JwkSet = serde_json::from_value(jwks).expect("JWKS");
    let header = decode_header(token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let key = DecodingKey::from_jwk(set.find(&header.kid.expect("kid")).expect("published"))
        .expect("key");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[client_id]);
    validation.set_issuer(&[&s.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    decode::<Value>(token, &key, &validation)
        .expect("jsonwebtoken accepts the ID token")
        .claims
}

#[tokio::test]
async fn authorization_code_flow_by_hand() {
    let s = setup().await;
    let server = &s.server;
    let http = browser();
    let auth = server.url("/realms/acme/protocol/openid-connect/auth");
    let token = server.url("/realms/acme/protocol/openid-connect/token");

    // Discovery lists what is served, and nothing it is not.
    let (status, doc) = call(
        server
            .http
            .get(server.url("/realms/acme/.well-known/openid-configuration")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["authorization_endpoint"], auth);
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    for grant in ["authorization_code", "client_credentials", "refresh_token"] {
        assert!(
            doc["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(grant)),
            "{grant}"
        );
    }
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert!(doc.get("registration_endpoint").is_none());

    // The login page: HTML with the security headers, the client named
    // and escaped, the transaction in a hidden field.
    let (verifier, challenge) = pkce();
    let (status, headers, html) = page(
        http.get(&auth)
            .query(&auth_query("webapp", &challenge))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(headers["cache-control"], "no-store");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src"), "no script is allowed");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(html.contains("<strong>webapp</strong>"));
    assert!(!html.contains("<script"));
    let tx = hidden_field(&html, "login_tx").expect("handle");
    assert!(tx.starts_with("kslt_"));

    // A wrong password shows the form again (401), the transaction open.
    let password_step = server.url("/realms/acme/login-actions/authenticate");
    let (status, _, html) = page(
        http.post(&password_step)
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "alice<b>"),
                ("password", "not the password"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{html}");
    assert!(html.contains("value=\"alice&lt;b&gt;\""), "echo escaped");
    assert_eq!(
        hidden_field(&html, "login_tx").as_deref(),
        Some(tx.as_str())
    );
    // The right password asks for the second factor.
    let (status, _, html) = page(
        http.post(&password_step)
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("login-actions/challenge-otp"));
    // The password step is over: posting it again is refused with a page.
    let (status, _, _) = page(
        http.post(&password_step)
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    // A wrong TOTP code: the form again; the right one: the redirect.
    let otp_step = server.url("/realms/acme/login-actions/challenge-otp");
    let (status, _, html) = page(
        http.post(&otp_step)
            .form(&[("login_tx", tx.as_str()), ("code", "000000x")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 401 || status == 400, "{status} {html}");
    assert!(html.contains("login-actions/challenge-otp"));
    let response = http
        .post(&otp_step)
        .form(&[("login_tx", tx.as_str()), ("code", &totp_next(&s.otpauth))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=ksac_")),
        "{location}"
    );
    let query = query_of(&location);
    assert_eq!(query["state"], "st-<&\"'>");
    assert_eq!(query["iss"], s.issuer);
    let code = query["code"].clone();
    // The transaction is spent.
    let (status, _, _) = page(
        http.post(&otp_step)
            .form(&[("login_tx", tx.as_str()), ("code", "123456")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);

    // Redemption: a wrong verifier and a redirect-URI look-alike are
    // refused without burning the code; then client_secret_basic with the
    // right verifier gets the tokens.
    let redeem = |verifier: String, redirect: String| {
        let code = code.clone();
        let token = token.clone();
        let secret = s.secret.clone();
        async move {
            call(
                server
                    .http
                    .post(&token)
                    .basic_auth("webapp", Some(secret))
                    .form(&[
                        ("grant_type", "authorization_code"),
                        ("code", code.as_str()),
                        ("redirect_uri", redirect.as_str()),
                        ("code_verifier", verifier.as_str()),
                    ]),
            )
            .await
        }
    };
    let (wrong_verifier, _) = pkce();
    let (status, body) = redeem(wrong_verifier, REDIRECT.into()).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let (status, body) = redeem(verifier.clone(), format!("{REDIRECT}/")).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );
    let (status, tokens) = redeem(verifier.clone(), REDIRECT.into()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid reports");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Both tokens verify from the served JWKS alone.
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let claims = verify_with_jwks(&server.http, jwks_uri, &access, AUDIENCE, &s.issuer)
        .await
        .expect("access token");
    assert_eq!(claims["client_id"], "webapp");
    assert_eq!(claims["sub"], s.alice.to_string());
    let id = verify_id_token(&s, tokens["id_token"].as_str().unwrap(), "webapp").await;
    assert_eq!(id["sub"], s.alice.to_string());
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert!(id["auth_time"].is_i64());
    assert!(id["amr"].as_array().unwrap().contains(&json!("pwd")));
    assert!(id["amr"].as_array().unwrap().len() >= 2, "{id}");
    let userinfo = server.url("/realms/acme/protocol/openid-connect/userinfo");
    let (status, info) = call(server.http.get(&userinfo).bearer_auth(&access)).await;
    assert_eq!(
        (status, info["sub"].clone()),
        (200, json!(s.alice.to_string()))
    );

    // Refresh by a confidential client authenticates it first.
    let (status, body) = call(server.http.post(&token).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", "webapp"),
    ]))
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (status, refreshed) = call(
        server
            .http
            .post(&token)
            .basic_auth("webapp", Some(&s.secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
            ]),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();

    // The code again: refused, and everything the first redemption issued
    // is revoked (RFC 6749 §4.1.2).
    let (status, body) = redeem(verifier.clone(), REDIRECT.into()).await;
    assert_eq!(
        (status, body["error"].clone(), body["code"].clone()),
        (400, json!("invalid_grant"), json!("OAUTH_CODE_REUSED"))
    );
    let (status, _) = call(server.http.get(&userinfo).bearer_auth(&access)).await;
    assert_eq!(status, 401, "the first access token is revoked");
    let (status, body) = call(
        server
            .http
            .post(&token)
            .basic_auth("webapp", Some(&s.secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh2.as_str()),
            ]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );

    // Client authentication failures: 401 invalid_client with a Basic
    // challenge; an unknown client; both methods at once is malformed.
    let response = server
        .http
        .post(&token)
        .basic_auth("webapp", Some("kscs_wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "ksac_x"),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Basic realm=\"acme\""
    );
    let (_, body) = answer(response).await;
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = call(
        server
            .http
            .post(&token)
            .basic_auth("nobody", Some("kscs_x"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "ksac_x"),
                ("redirect_uri", REDIRECT),
            ]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (status, body) = call(server.http.post(&token).form(&[
        ("grant_type", "authorization_code"),
        ("code", "ksac_x"),
        ("redirect_uri", REDIRECT),
        ("client_id", "webapp"),
    ]))
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client")),
        "a confidential client without its secret"
    );
    let (status, body) = call(
        server
            .http
            .post(&token)
            .basic_auth("webapp", Some(&s.secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_secret", s.secret.as_str()),
            ]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_request"))
    );

    // The authorization endpoint: client and redirect-URI errors are pages
    // (400, no redirect); everything else goes back to the client.
    let no_redirect = |query: Vec<(&'static str, String)>| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            let response = http.get(&auth).query(&query).send().await.unwrap();
            assert!(response.headers().get("location").is_none(), "{query:?}");
            let (status, headers, _) = page(response).await;
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html")
            );
            status
        }
    };
    let base = |client: &str, redirect: &str| {
        vec![
            ("response_type", "code".to_owned()),
            ("client_id", client.to_owned()),
            ("redirect_uri", redirect.to_owned()),
            ("code_challenge", challenge.clone()),
            ("code_challenge_method", "S256".to_owned()),
            ("state", "s1".to_owned()),
        ]
    };
    assert_eq!(no_redirect(base("nobody", REDIRECT)).await, 400);
    for look_alike in [
        "http://127.0.0.1:9/cb/",
        "http://127.0.0.1:99/cb",
        "https://127.0.0.1:9/cb",
        "http://user@127.0.0.1:9/cb",
        "http://127.0.0.1:9/CB",
    ] {
        assert_eq!(
            no_redirect(base("webapp", look_alike)).await,
            400,
            "{look_alike}"
        );
    }
    let mut duplicated = base("webapp", REDIRECT);
    duplicated.push(("client_id", "webapp".to_owned()));
    assert_eq!(no_redirect(duplicated).await, 400);
    let redirected = |query: Vec<(&'static str, String)>| {
        let http = http.clone();
        let auth = auth.clone();
        async move {
            let response = http.get(&auth).query(&query).send().await.unwrap();
            assert_eq!(response.status(), 302, "{query:?}");
            query_of(response.headers()["location"].to_str().unwrap())
        }
    };
    let mut bad_scope = base("webapp", REDIRECT);
    bad_scope.push(("scope", "openid admin".to_owned()));
    let q = redirected(bad_scope).await;
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("invalid_scope", "s1")
    );
    assert_eq!(q["iss"], s.issuer);
    let mut plain = base("webapp", REDIRECT);
    plain[4].1 = "plain".to_owned();
    assert_eq!(redirected(plain).await["error"], "invalid_request");
    let mut token_flow = base("webapp", REDIRECT);
    token_flow[0].1 = "token".to_owned();
    assert_eq!(
        redirected(token_flow).await["error"],
        "unsupported_response_type"
    );
    let mut fragment = base("webapp", REDIRECT);
    fragment.push(("response_mode", "fragment".to_owned()));
    assert_eq!(redirected(fragment).await["error"], "invalid_request");
    let mut silent = base("webapp", REDIRECT);
    silent.push(("prompt", "none".to_owned()));
    assert_eq!(redirected(silent).await["error"], "login_required");

    // Cancel answers the client access_denied.
    let (_, _, html) = page(
        http.get(&auth)
            .query(&auth_query("webapp", &challenge))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let tx = hidden_field(&html, "login_tx").unwrap();
    let response = http
        .post(&password_step)
        .form(&[("login_tx", tx.as_str()), ("action", "cancel")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let q = query_of(response.headers()["location"].to_str().unwrap());
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "st-<&\"'>")
    );

    // JSON clients of the same login-action path are unaffected.
    let (status, body) = call(server.http.post(&password_step).json(&json!({
        "username": "alice", "password": PASSWORD,
    })))
    .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("RequiresOtpChallenge"))
    );

    s.server.stop().await;
}

#[tokio::test]
async fn public_clients_client_credentials_and_client_admin() {
    let s = setup().await;
    let server = &s.server;
    let clients = server.url("/admin/realms/acme/clients");
    let token = server.url("/realms/acme/protocol/openid-connect/token");
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(&server.admin_token);

    // A public client (no secret) and a service client.
    let (status, public) = call(admin(server.http.post(&clients)).json(&json!({
        "client_id": "spa", "kind": "public", "redirect_uris": [REDIRECT],
        "scopes": ["openid", "reports"],
    })))
    .await;
    assert_eq!(status, 201, "{public}");
    assert!(public.get("client_secret").is_none());
    let (status, svc) = call(admin(server.http.post(&clients)).json(&json!({
        "client_id": "svc", "kind": "confidential",
        "grant_types": ["client_credentials"], "scopes": ["reports"],
    })))
    .await;
    assert_eq!(status, 201, "{svc}");
    let svc_secret = svc["client_secret"].as_str().unwrap().to_owned();
    let (status, body) = call(admin(server.http.post(&clients)).json(&json!({
        "client_id": "spa", "kind": "public", "redirect_uris": [REDIRECT],
    })))
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("OAUTH_CLIENT_EXISTS"))
    );
    let (status, body) = call(admin(server.http.post(&clients)).json(&json!({
        "client_id": "bad", "kind": "public", "redirect_uris": ["https://x.example/*"],
    })))
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED"))
    );
    let (status, _) = call(server.http.post(&clients).json(&json!({
        "client_id": "anon", "kind": "public",
    })))
    .await;
    assert_eq!(status, 401, "admin only");
    let (status, list) = call(admin(server.http.get(&clients))).await;
    assert_eq!(status, 200);
    let mut ids: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered by id: {ids:?}"
    );
    // Besides the server's first-party clients and the tests' own.
    ids.retain(|id| {
        ![
            "account-api",
            "keystead-login",
            "web",
            "cli",
            "app_1",
            "app_2",
            "portal",
        ]
        .contains(id)
    });
    assert_eq!(ids, ["spa", "svc", "webapp"]);

    // The public client: PKCE and client_id, no secret.
    let (verifier, challenge) = pkce();
    let q = log_in(&s, "spa", &challenge, &totp_next(&s.otpauth)).await;
    let (status, tokens) = call(server.http.post(&token).form(&[
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", "spa"),
    ]))
    .await;
    assert_eq!(status, 200, "{tokens}");
    verify_id_token(&s, tokens["id_token"].as_str().unwrap(), "spa").await;
    // Another client can't redeem spa's code (and a missing verifier fails).
    let (status, body) = call(server.http.post(&token).form(&[
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", "spa"),
    ]))
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_grant"))
    );

    // client_credentials: Basic and client_secret_post; the token verifies
    // from the JWKS (sub = the client).
    let (status, cc) = call(
        server
            .http
            .post(&token)
            .basic_auth("svc", Some(&svc_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "reports")]),
    )
    .await;
    assert_eq!(status, 200, "{cc}");
    assert!(cc.get("refresh_token").is_none());
    let jwks_uri = server.url("/realms/acme/protocol/openid-connect/certs");
    let jwks: JwkSet = serde_json::from_value(call(server.http.get(&jwks_uri)).await.1).unwrap();
    let access = cc["access_token"].as_str().unwrap();
    let header = decode_header(access).unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[&s.issuer]);
    let claims = decode::<Value>(access, &key, &validation).unwrap().claims;
    assert_eq!(
        (claims["sub"].as_str(), claims["scope"].as_str()),
        (Some("svc"), Some("reports"))
    );
    let (status, _) = call(server.http.post(&token).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "svc"),
        ("client_secret", svc_secret.as_str()),
    ]))
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        server
            .http
            .post(&token)
            .basic_auth("webapp", Some(&s.secret))
            .form(&[("grant_type", "client_credentials")]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("unauthorized_client"))
    );
    let (status, body) = call(
        server
            .http
            .post(&token)
            .form(&[("grant_type", "client_credentials"), ("client_id", "spa")]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("invalid_client"))
    );
    let (status, body) = call(
        server
            .http
            .post(&token)
            .basic_auth("svc", Some(&svc_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "openid")]),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("invalid_scope"))
    );

    // Secret rotation: the old one stops working.
    let (status, rotated) = call(admin(server.http.post(format!("{clients}/svc/secret")))).await;
    assert_eq!(status, 200);
    let new_secret = rotated["client_secret"].as_str().unwrap();
    let cc = |secret: String| {
        let token = token.clone();
        async move {
            call(
                server
                    .http
                    .post(&token)
                    .basic_auth("svc", Some(secret))
                    .form(&[("grant_type", "client_credentials")]),
            )
            .await
            .0
        }
    };
    assert_eq!(cc(svc_secret.clone()).await, 401);
    assert_eq!(cc(new_secret.to_owned()).await, 200);

    // Update and delete.
    let (status, updated) = call(
        admin(server.http.patch(format!("{clients}/spa"))).json(&json!({
            "redirect_uris": [REDIRECT, "http://127.0.0.1:9/other"],
        })),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["redirect_uris"].as_array().unwrap().len(), 2);
    let (status, _) = call(admin(server.http.delete(format!("{clients}/svc")))).await;
    assert_eq!(status, 204);
    let (status, body) = call(admin(server.http.get(format!("{clients}/svc")))).await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("OAUTH_CLIENT_NOT_FOUND"))
    );
    assert_eq!(cc(new_secret.to_owned()).await, 401);
    let (status, _) = call(admin(server.http.delete(format!("{clients}/svc")))).await;
    assert_eq!(status, 404);

    s.server.stop().await;
}

#[tokio::test]
async fn openidconnect_relying_party() {
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    };
    use openidconnect::{
        AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
        OAuth2TokenResponse as _, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse as _,
    };

    let s = setup().await;
    let http = browser();

    // Discovery (and the JWKS it names) through the library.
    let provider = CoreProviderMetadata::discover_async(
        IssuerUrl::new(s.issuer.clone()).expect("issuer URL"),
        &http,
    )
    .await
    .expect("openidconnect reads the discovery document and JWKS");
    let client = CoreClient::from_provider_metadata(
        provider,
        ClientId::new("webapp".into()),
        Some(ClientSecret::new(s.secret.clone())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).expect("redirect"));

    let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("reports".into()))
        .set_pkce_challenge(pkce_challenge)
        .url();

    // The browser: the library's URL, the login forms, the redirect.
    let (status, _, html) = page(http.get(url.as_str()).send().await.unwrap()).await;
    assert_eq!(status, 200, "{html}");
    let tx = hidden_field(&html, "login_tx").expect("handle");
    let (status, _, html) = page(
        http.post(s.server.url("/realms/acme/login-actions/authenticate"))
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let response = http
        .post(s.server.url("/realms/acme/login-actions/challenge-otp"))
        .form(&[("login_tx", tx.as_str()), ("code", &totp_next(&s.otpauth))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let q = query_of(response.headers()["location"].to_str().unwrap());
    assert_eq!(
        &q["state"],
        csrf.secret(),
        "the library's CSRF state comes back"
    );
    assert_eq!(q["iss"], s.issuer);

    // Code exchange (client_secret_basic) and ID-token validation by the
    // library: signature from the JWKS (EdDSA), iss, aud, exp, nonce.
    let tokens = client
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .expect("token endpoint from discovery")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("openidconnect redeems the code");
    let id_token = tokens.id_token().expect("an ID token");
    // The verifier takes its algorithms from discovery (EdDSA, ES256).
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("openidconnect validates the ID token");
    assert_eq!(claims.subject().as_str(), s.alice.to_string());
    assert_eq!(claims.issuer().as_str(), s.issuer);
    assert_eq!(claims.nonce().map(Nonce::secret), Some(nonce.secret()));
    // The wrong nonce is refused by the library, and so is the token when
    // the relying party allows RS256 only: the signature check is real.
    assert!(
        id_token
            .claims(&verifier, &Nonce::new("other".into()))
            .is_err()
    );
    let rs256_only = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]);
    assert!(id_token.claims(&rs256_only, &nonce).is_err());
    let scopes: Vec<String> = tokens
        .scopes()
        .map(|granted| granted.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(scopes, ["openid", "reports"]);

    s.server.stop().await;
}

#[tokio::test]
async fn enrolment_page_of_a_realm_that_requires_mfa() {
    let server = common::start().await;
    let (realm_id, issuer) = realm(&server, "strict", MfaPolicy::Required).await;
    server
        .ks()
        .users(realm_id)
        .register("bob", None, PASSWORD.into())
        .await
        .expect("bob");
    let (status, _) = call(
        server
            .http
            .post(server.url("/admin/realms/strict/clients"))
            .bearer_auth(&server.admin_token)
            .json(&json!({"client_id": "spa", "kind": "public", "redirect_uris": [REDIRECT]})),
    )
    .await;
    assert_eq!(status, 201);
    let http = browser();
    let (_, challenge) = pkce();
    let (status, _, html) = page(
        http.get(server.url("/realms/strict/protocol/openid-connect/auth"))
            .query(&[
                ("response_type", "code"),
                ("client_id", "spa"),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let tx = hidden_field(&html, "login_tx").unwrap();
    // The password leads to the enrolment page: a new key's otpauth URI
    // (escaped in the page) and the form for its first code.
    let (status, _, html) = page(
        http.post(server.url("/realms/strict/login-actions/authenticate"))
            .form(&[
                ("login_tx", tx.as_str()),
                ("username", "bob"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("login-actions/verify-otp"));
    let start = html.find("URI: <code>").expect("the otpauth URI") + "URI: <code>".len();
    let end = start + html[start..].find("</code>").unwrap();
    let otpauth = html[start..end].replace("&amp;", "&");
    assert!(otpauth.starts_with("otpauth://totp/"), "{otpauth}");
    let key_id = hidden_field(&html, "key_id").expect("key id");
    let verify = server.url("/realms/strict/login-actions/verify-otp");
    // A wrong code keeps the page (same key); the right one (totp-rs)
    // finishes the login with a redirect carrying the code.
    let (status, _, html) = page(
        http.post(&verify)
            .form(&[
                ("login_tx", tx.as_str()),
                ("key_id", key_id.as_str()),
                ("code", "000000"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 401 || status == 400, "{status} {html}");
    assert_eq!(
        hidden_field(&html, "key_id").as_deref(),
        Some(key_id.as_str())
    );
    assert!(!html.contains("otpauth://"), "the secret is shown once");
    let response = http
        .post(&verify)
        .form(&[
            ("login_tx", tx.as_str()),
            ("key_id", key_id.as_str()),
            ("code", &totp_now(&otpauth)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let q = query_of(response.headers()["location"].to_str().unwrap());
    assert!(q["code"].starts_with("ksac_"));
    assert_eq!(q["iss"], issuer);
    server.stop().await;
}
