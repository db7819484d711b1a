//! Seed 003's WebAuthn actions over real HTTP, with a software passkey
//! (`webauthn-authenticator-rs`) as the browser: the administrator sets the
//! realm's relying party; a logged-in user registers a passkey; a password
//! login's challenge is answered by the passkey (tokens with `amr` `pwd` +
//! `hwk`/`swk`, verified from the served JWKS alone); passwordless
//! (discoverable) login once the realm allows it; replays, wrong origins,
//! unknown credentials, wrong bearers and malformed bodies refused with the
//! library's codes.

// A flow reads best as one story, top to bottom.
#![allow(clippy::too_many_lines)]

mod common;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::id::UserId;
use keystead::realm::MfaPolicy;
use serde_json::{Value, json};
use support::{PASSWORD, call, realm, verify_with_jwks};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const AUDIENCE: &str = keystead_axum::DEFAULT_AUDIENCE;
const RP_ID: &str = "example.com";
/// Where the "browser" runs the ceremonies: an origin of the relying party.
const ORIGIN: &str = "https://login.example.com";
/// A sibling subdomain: a browser allows it for rp id `example.com`, the
/// relying party does not list it.
const EVIL_ORIGIN: &str = "https://evil.example.com";

/// A software passkey that verifies its user (PIN or biometric).
type Browser = WebauthnAuthenticator<SoftPasskey>;

fn browser() -> Browser {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

/// `navigator.credentials.create()` on the server's options, at `origin`;
/// the response JSON with the ceremony's `challenge_id` added.
fn browser_create(pk: &mut Browser, origin: &str, options: &Value) -> Value {
    let ccr: CreationChallengeResponse =
        serde_json::from_value(options.clone()).expect("creation options a browser reads");
    let response = pk
        .do_registration(Url::parse(origin).expect("origin"), ccr)
        .expect("the passkey registers");
    with_challenge(serde_json::to_value(response).expect("json"), options)
}

/// `navigator.credentials.get()` on the server's options, at `origin`.
fn browser_get(pk: &mut Browser, origin: &str, options: &Value) -> Value {
    let rcr: RequestChallengeResponse =
        serde_json::from_value(options.clone()).expect("request options a browser reads");
    let response = pk
        .do_authentication(Url::parse(origin).expect("origin"), rcr)
        .expect("the passkey signs");
    with_challenge(serde_json::to_value(response).expect("json"), options)
}

/// What a discoverable authenticator does with a usernameless request:
/// pick its own credential `id` for the rp (the soft passkey needs it
/// listed to find it) and return the user handle it stored, `user`.
fn discoverable_get(pk: &mut Browser, options: &Value, id: &str, user: UserId) -> Value {
    let mut listed = options.clone();
    listed["publicKey"]["allowCredentials"] = json!([{"type": "public-key", "id": id}]);
    let mut response = browser_get(pk, ORIGIN, &listed);
    response["response"]["userHandle"] = Value::String(URL_SAFE_NO_PAD.encode(user.to_bytes()));
    response
}

fn with_challenge(mut response: Value, options: &Value) -> Value {
    response["challenge_id"] = options["challenge_id"].clone();
    response
}

struct Flow {
    server: common::TestServer,
    issuer: String,
    jwks_uri: String,
}

impl Flow {
    fn url(&self, path: &str) -> String {
        self.server.url(&format!("/realms/acme{path}"))
    }

    fn action(&self, name: &str) -> String {
        self.url(&format!("/login-actions/webauthn-public-key-{name}"))
    }

    async fn set_relying_party(&self, body: &Value) -> (u16, Value) {
        call(
            self.server
                .http
                .put(self.server.url("/admin/realms/acme/webauthn"))
                .bearer_auth(&self.server.admin_token)
                .json(body),
        )
        .await
    }

    /// `POST` an action with an optional bearer and an optional JSON body.
    async fn post(&self, name: &str, bearer: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.server.http.post(self.action(name));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        call(request).await
    }

    /// A password login that stops at the second factor: its login token.
    async fn password_login(&self) -> String {
        let (status, body) = call(
            self.server
                .http
                .post(self.url("/login-actions/authenticate"))
                .json(&json!({"username": "alice", "password": PASSWORD})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "RequiresOtpChallenge", "{body}");
        assert!(
            body["factors"]
                .as_array()
                .expect("factors")
                .contains(&json!("webauthn")),
            "{body}"
        );
        s(&body["token"])
    }

    /// The claims of a `Success` answer's access token, verified by
    /// jsonwebtoken from the served JWKS alone.
    async fn verified_claims(&self, success: &Value) -> Value {
        assert_eq!(success["status"], "Success", "{success}");
        assert!(success["refresh_token"].is_string());
        verify_with_jwks(
            &self.server.http,
            &self.jwks_uri,
            &s(&success["access_token"]),
            AUDIENCE,
            &self.issuer,
        )
        .await
        .expect("jsonwebtoken accepts the token")
    }
}

fn passkey_amr(amr: &Value) -> bool {
    amr == &json!("hwk") || amr == &json!("swk")
}

#[track_caller]
fn refused(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(
        (answer.0, answer.1["code"].clone()),
        (status, json!(code)),
        "{}",
        answer.1
    );
    assert!(answer.1["error"].is_string(), "an OAuth error body");
}

#[tokio::test]
async fn passkeys_as_second_factor_and_passwordless() {
    let server = common::start().await;
    let (_, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let jwks_uri = server.url("/realms/acme/protocol/openid-connect/certs");
    let f = Flow {
        server,
        issuer,
        jwks_uri,
    };

    // Alice registers and is logged in (password only so far).
    let (status, registered) = call(
        f.server
            .http
            .post(f.url("/protocol/openid-connect/registrations"))
            .json(&json!({"username": "alice", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    let access = s(&registered["access_token"]);
    let claims = verify_with_jwks(&f.server.http, &f.jwks_uri, &access, AUDIENCE, &f.issuer)
        .await
        .expect("jsonwebtoken accepts the token");
    assert_eq!(claims["amr"], json!(["pwd"]));
    let alice: UserId = s(&claims["sub"]).parse().expect("sub is a user id");

    // No relying party yet: every ceremony is a 404.
    refused(
        &f.post("create-options", Some(&access), None).await,
        404,
        "WEBAUTHN_NOT_CONFIGURED",
    );
    refused(
        &f.post("request-options", None, None).await,
        404,
        "WEBAUTHN_NOT_CONFIGURED",
    );

    // The administrator sets it: admin token only, valid origins only.
    let rp = json!({
        "rp_id": RP_ID, "rp_name": "Acme", "origins": [ORIGIN], "passwordless": false,
    });
    let (status, body) = call(
        f.server
            .http
            .put(f.server.url("/admin/realms/acme/webauthn"))
            .bearer_auth(&access)
            .json(&rp),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (401, json!("UNAUTHORIZED")));
    let (status, body) = f
        .set_relying_party(
            &json!({"rp_id": RP_ID, "rp_name": "Acme", "origins": ["http://evil.com"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone(), body["field"].clone()),
        (400, json!("VALIDATION_FAILED"), json!("origins")),
        "{body}"
    );
    let (status, body) = f
        .set_relying_party(&json!({"rp_id": "Example.COM", "rp_name": "Acme", "origins": [ORIGIN]}))
        .await;
    assert_eq!((status, body["field"].clone()), (400, json!("rp_id")));
    let (status, body) = call(
        f.server
            .http
            .put(f.server.url("/admin/realms/nowhere/webauthn"))
            .bearer_auth(&f.server.admin_token)
            .json(&rp),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("REALM_NOT_FOUND"))
    );
    let (status, body) = f.set_relying_party(&rp).await;
    assert_eq!((status, body.clone()), (200, rp.clone()), "{body}");

    // Registration needs an access token of this realm.
    let (status, _) = f.post("create-options", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = f.post("create-options", Some("not-a-token"), None).await;
    assert_eq!(status, 401);
    let (status, options) = f.post("create-options", Some(&access), None).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(options["publicKey"]["rp"]["id"], RP_ID);
    assert!(options["publicKey"]["challenge"].is_string());
    assert!(options["challenge_id"].is_string());
    assert!(options["expires_at"].is_string());

    let mut pk = browser();
    // A response made at an origin the relying party does not list is
    // refused and leaves the ceremony usable. The passkey keeps the key it
    // made there: a credential the server never registered.
    let evil = browser_create(&mut pk, EVIL_ORIGIN, &options);
    let unregistered = s(&evil["id"]);
    refused(
        &f.post("create", Some(&access), Some(&evil)).await,
        401,
        "WEBAUTHN_WRONG_ORIGIN",
    );
    let response = browser_create(&mut pk, ORIGIN, &options);
    let mut no_challenge = response.clone();
    no_challenge
        .as_object_mut()
        .expect("object")
        .remove("challenge_id");
    let (status, body) = f.post("create", Some(&access), Some(&no_challenge)).await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED"))
    );
    let mut labelled = response.clone();
    labelled["label"] = json!("Laptop");
    let (status, credential) = f.post("create", Some(&access), Some(&labelled)).await;
    assert_eq!(status, 201, "{credential}");
    assert_eq!(credential["label"], "Laptop");
    assert_eq!(credential["id"], response["id"]);
    let credential_id = s(&credential["id"]);
    // The ceremony is spent.
    refused(
        &f.post("create", Some(&access), Some(&labelled)).await,
        409,
        "WEBAUTHN_CHALLENGE_NOT_FOUND",
    );

    // A password login now stops at the second factor, which the passkey
    // answers with the login token as the bearer.
    let login = f.password_login().await;
    refused(
        &f.post("request-options", Some(&access), None).await,
        401,
        "UNAUTHORIZED",
    );
    let (status, options) = f.post("request-options", Some(&login), None).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(
        options["publicKey"]["allowCredentials"][0]["id"],
        json!(credential_id)
    );
    // Signed at the wrong origin: refused, and the login goes on.
    let evil = browser_get(&mut pk, EVIL_ORIGIN, &options);
    refused(
        &f.post("authenticate", Some(&login), Some(&evil)).await,
        401,
        "WEBAUTHN_WRONG_ORIGIN",
    );
    // An access token is the wrong bearer for a login.
    let assertion = browser_get(&mut pk, ORIGIN, &options);
    refused(
        &f.post("authenticate", Some(&access), Some(&assertion))
            .await,
        401,
        "UNAUTHORIZED",
    );
    let (status, tokens) = f.post("authenticate", Some(&login), Some(&assertion)).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = f.verified_claims(&tokens).await;
    let amr = claims["amr"].as_array().expect("amr");
    assert_eq!(amr.len(), 2, "{amr:?}");
    assert_eq!(amr[0], "pwd");
    assert!(passkey_amr(&amr[1]), "{amr:?}");
    assert_eq!(claims["sub"], alice.to_string());
    // The same assertion again: the login token is spent...
    refused(
        &f.post("authenticate", Some(&login), Some(&assertion)).await,
        401,
        "CHALLENGE_NOT_FOUND",
    );
    // ...and on a fresh login its ceremony is too: a replay.
    let again = f.password_login().await;
    refused(
        &f.post("authenticate", Some(&again), Some(&assertion)).await,
        409,
        "WEBAUTHN_CHALLENGE_NOT_FOUND",
    );
    // Malformed credential JSON: 400 naming the response.
    let (status, body) = f
        .post(
            "authenticate",
            Some(&again),
            Some(&json!({"challenge_id": options["challenge_id"], "id": "AQID"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED")),
        "{body}"
    );
    let (status, body) = call(
        f.server
            .http
            .post(f.action("authenticate"))
            .bearer_auth(&again)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("VALIDATION_FAILED"))
    );

    // Passwordless login is refused while the realm disallows it: no
    // usernameless options, and no login with a user-bound ceremony.
    refused(
        &f.post("request-options", None, None).await,
        403,
        "WEBAUTHN_PASSWORDLESS_NOT_ALLOWED",
    );
    let (status, options) = f.post("request-options", Some(&again), None).await;
    assert_eq!(status, 200);
    let assertion = browser_get(&mut pk, ORIGIN, &options);
    refused(
        &f.post("authenticate", None, Some(&assertion)).await,
        403,
        "WEBAUTHN_PASSWORDLESS_NOT_ALLOWED",
    );
    // That ceremony still answers the second factor.
    let (status, tokens) = f.post("authenticate", Some(&again), Some(&assertion)).await;
    assert_eq!(status, 200, "{tokens}");

    // Once allowed: a discoverable request; the passkey names its user.
    let (status, _) = f
        .set_relying_party(&json!({
            "rp_id": RP_ID, "rp_name": "Acme", "origins": [ORIGIN], "passwordless": true,
        }))
        .await;
    assert_eq!(status, 200);
    let (status, options) = f.post("request-options", None, None).await;
    assert_eq!(status, 200, "{options}");
    assert_eq!(options["mediation"], "conditional");
    assert_eq!(
        options["publicKey"]["allowCredentials"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "usernameless: no credentials listed"
    );
    let assertion = discoverable_get(&mut pk, &options, &credential_id, alice);
    let (status, tokens) = f.post("authenticate", None, Some(&assertion)).await;
    assert_eq!(status, 200, "{tokens}");
    let claims = f.verified_claims(&tokens).await;
    assert_eq!(claims["sub"], alice.to_string());
    let amr = claims["amr"].as_array().expect("amr");
    assert!(amr.len() == 1 && passkey_amr(&amr[0]), "{amr:?}");
    // The tokens work: userinfo names alice.
    let (status, info) = call(
        f.server
            .http
            .get(f.url("/protocol/openid-connect/userinfo"))
            .bearer_auth(s(&tokens["access_token"])),
    )
    .await;
    assert_eq!(
        (status, info["preferred_username"].clone()),
        (200, json!("alice"))
    );
    // Replayed: 409, no tokens.
    refused(
        &f.post("authenticate", None, Some(&assertion)).await,
        409,
        "WEBAUTHN_CHALLENGE_NOT_FOUND",
    );
    // A passkey the server never registered: 401.
    let (_, options) = f.post("request-options", None, None).await;
    let unknown = discoverable_get(&mut pk, &options, &unregistered, alice);
    refused(
        &f.post("authenticate", None, Some(&unknown)).await,
        401,
        "WEBAUTHN_UNKNOWN_CREDENTIAL",
    );
    // Alice has a passkey now: her password-only login is no longer
    // enough to add another credential (RFC 9470 step-up) ...
    let stale = f.post("create-options", Some(&access), None).await;
    refused(&stale, 401, "STEP_UP_REQUIRED");
    assert_eq!(stale.1["error"], "insufficient_user_authentication");
    assert_eq!(stale.1["needs_mfa"], true);
    // ... the passkey login just made is. A new registration excludes the
    // passkey alice has.
    let fresh = s(&tokens["access_token"]);
    let (_, options) = f.post("create-options", Some(&fresh), None).await;
    assert_eq!(
        options["publicKey"]["excludeCredentials"][0]["id"],
        json!(credential_id)
    );
    // An unknown realm: 404.
    let (status, body) = call(
        f.server.http.post(
            f.server
                .url("/realms/nowhere/login-actions/webauthn-public-key-request-options"),
        ),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (404, json!("REALM_NOT_FOUND"))
    );

    f.server.stop().await;
}
