//! The WebAuthn login actions of seed 003: passkey registration, and
//! authentication as the second factor of a login or as passwordless
//! login — each a call on [`Webauthn`](keystead::webauthn::Webauthn) or
//! [`Mfa::complete_challenge`](keystead::mfa::Mfa::complete_challenge).
//!
//! | path under `/realms/{realm_name}/login-actions/` | bearer | library call | answer |
//! |---|---|---|---|
//! | `webauthn-public-key-create-options` | access token | `Webauthn::create_options` | creation options |
//! | `webauthn-public-key-create` | access token | `Webauthn::create` | `201` the credential |
//! | `webauthn-public-key-request-options` | login token | `Webauthn::request_options(Some(user))` | request options |
//! | `webauthn-public-key-request-options` | none | `Webauthn::request_options(None)` | request options (discoverable) |
//! | `webauthn-public-key-authenticate` | login token | `Mfa::complete_challenge` (`MfaAnswer::Webauthn`) | `Success` with tokens |
//! | `webauthn-public-key-authenticate` | none | `Webauthn::login` | `Success` with tokens |
//!
//! All four are `POST`. The realm's relying party (rp id, name, origins,
//! passwordless policy) is set by the administrator with
//! `PUT /admin/realms/{realm}/webauthn` ([`admin`](crate::admin));
//! until then every ceremony answers `404 WEBAUTHN_NOT_CONFIGURED`.
//!
//! # Ceremony ids
//!
//! The options answers are the library's JSON — `{"publicKey": …}` (plus
//! `"mediation": "conditional"` for a discoverable request), what
//! `navigator.credentials.create/get` take once the base64url fields are
//! decoded — with two members beside it: `challenge_id`, naming the stored
//! ceremony, and `expires_at`. The seed's bodies of `…-create` and
//! `…-authenticate` are the browser's `RegistrationResponseJSON` /
//! `AuthenticationResponseJSON`; the client adds `challenge_id` to that
//! object (and may add `label` to name a new credential, or `client_id`
//! and `scope` for the tokens). A ceremony is single use: sending the same
//! response again answers `409 WEBAUTHN_CHALLENGE_NOT_FOUND`.
//!
//! # Which login
//!
//! With the *login token* (`token` of a `RequiresOtpChallenge` answer, or
//! `mfa_token`) as the bearer, the passkey is the second factor of that
//! login: request options list the user's passkeys, and the assertion
//! completes the challenge (`amr` `pwd` + `hwk`/`swk`). Without a bearer it
//! is passwordless login — only where the realm's relying party allows it
//! (`403 WEBAUTHN_PASSWORDLESS_NOT_ALLOWED` otherwise) — with a
//! discoverable request: the passkey names its user (`amr` `hwk`/`swk`).
//! Failed assertions (wrong origin or rp id, tampered data, unknown
//! credential) are `401` with the library's code.

use super::login_actions::success;
use super::{LoginBearer, no_store, realm_named, verify_access, wrong_bearer};
use crate::body::{json_error, parse_id};
use crate::error::{ApiError, OAuthError};
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keystead::id::ChallengeId;
use keystead::mfa::{MfaAnswer, MfaError, MfaFactor};
use keystead::realm::Realm;
use keystead::user::Authority;
use keystead::webauthn::WebauthnCredential;
use serde_json::{Map, Value, json};

/// The label of a credential registered without one.
pub const DEFAULT_LABEL: &str = "Passkey";

/// The WebAuthn routes (relative to `/realms/{realm_name}`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/login-actions/webauthn-public-key-create-options",
            post(create_options),
        )
        .route("/login-actions/webauthn-public-key-create", post(create))
        .route(
            "/login-actions/webauthn-public-key-request-options",
            post(request_options),
        )
        .route(
            "/login-actions/webauthn-public-key-authenticate",
            post(authenticate),
        )
}

/// The bearer of a WebAuthn login action, if there is one: passwordless
/// login runs before the client holds any token.
#[derive(Debug, Clone)]
pub struct OptionalBearer(pub Option<LoginBearer>);

impl FromRequestParts<AppState> for OptionalBearer {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OAuthError> {
        if parts.headers.contains_key(AUTHORIZATION) {
            LoginBearer::from_request_parts(parts, state)
                .await
                .map(|b| Self(Some(b)))
        } else {
            Ok(Self(None))
        }
    }
}

/// A browser response with the server's members taken out of it: the
/// ceremony it answers, the rest of the members, and the JSON the library
/// verifies.
#[derive(Debug)]
pub struct CeremonyResponse {
    /// The ceremony (`challenge_id`).
    pub challenge: ChallengeId,
    /// The server's optional members (`label`, `client_id`, `scope`).
    pub extras: Map<String, Value>,
    /// The `PublicKeyCredential` JSON without them.
    pub credential: String,
}

impl CeremonyResponse {
    /// Split `body` (see the [module docs](self)); 400 naming the field
    /// when the body is not an object or `challenge_id` (or an extra) is
    /// missing or not a string.
    pub fn parse(body: Result<Json<Value>, JsonRejection>) -> Result<Self, OAuthError> {
        let Json(body) = body.map_err(|e| json_error(&e).oauth())?;
        let Value::Object(mut members) = body else {
            return Err(bad("body", "a JSON object: the browser's PublicKeyCredential").oauth());
        };
        let challenge = match members.remove("challenge_id") {
            Some(Value::String(id)) => parse_id("challenge_id", &id).map_err(ApiError::oauth)?,
            _ => {
                return Err(bad(
                    "challenge_id",
                    "the challenge_id of the options this response answers",
                )
                .oauth());
            }
        };
        let mut extras = Map::new();
        for name in ["label", "client_id", "scope"] {
            match members.remove(name) {
                None | Some(Value::Null) => {}
                Some(v @ Value::String(_)) => {
                    extras.insert(name.to_owned(), v);
                }
                Some(_) => return Err(bad(name, "a string").oauth()),
            }
        }
        Ok(Self {
            challenge,
            extras,
            credential: Value::Object(members).to_string(),
        })
    }

    /// An optional string member taken out by [`parse`](Self::parse).
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extras.get(name).and_then(Value::as_str)
    }
}

fn bad(field: &'static str, problem: &str) -> ApiError {
    ApiError::bad_request(field, problem)
}

/// Options JSON with the ceremony's id and expiry beside `publicKey`.
fn options_json(
    options: &Value,
    challenge: ChallengeId,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut out = options.clone();
    if let Value::Object(map) = &mut out {
        map.insert("challenge_id".into(), challenge.to_string().into());
        map.insert("expires_at".into(), json!(expires_at));
    }
    out
}

/// The JSON of a registered credential.
pub fn credential_json(c: &WebauthnCredential) -> Value {
    json!({
        "id": c.id.to_string(),
        "label": c.label,
        "algorithm": c.algorithm,
        "transports": c.transports,
        "backup_eligible": c.backup_eligible,
        "backup_state": c.backup_state,
        "sign_count": c.sign_count,
        "created_at": c.created_at,
        "last_used_at": c.last_used_at,
    })
}

/// The user of a verified access-token bearer of `realm` and the
/// authority its token carries (step-up judges it); a login token is the
/// wrong bearer here (registration belongs to a logged-in user).
async fn logged_in_user(
    state: &AppState,
    realm: &Realm,
    bearer: &LoginBearer,
) -> Result<(keystead::id::UserId, Authority), OAuthError> {
    match bearer {
        LoginBearer::Access(token) => {
            let claims = verify_access(state, realm, token).await?;
            Ok((claims.sub, claims.authority()))
        }
        LoginBearer::Challenge(_) => Err(wrong_bearer("an access token")),
    }
}

async fn create_options(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let (user, by) = logged_in_user(&state, &realm, &bearer).await?;
    let options = state.ks.webauthn(realm.id).create_options(user, by).await?;
    let body = options_json(&options.options, options.challenge_id, options.expires_at);
    Ok((no_store(), Json(body)).into_response())
}

async fn create(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let (user, _) = logged_in_user(&state, &realm, &bearer).await?;
    let response = CeremonyResponse::parse(body)?;
    let label = response.extra("label").unwrap_or(DEFAULT_LABEL);
    let credential = state
        .ks
        .webauthn(realm.id)
        .create(user, response.challenge, &response.credential, label)
        .await?;
    tracing::info!(realm = %realm.id, user = %user, "passkey registered");
    Ok((StatusCode::CREATED, Json(credential_json(&credential))).into_response())
}

async fn request_options(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    OptionalBearer(bearer): OptionalBearer,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let user = match &bearer {
        None => None,
        Some(LoginBearer::Challenge(id)) => {
            let challenge = state.ks.users(realm.id).pending_challenge(*id).await?;
            // Only a challenge that a passkey may answer gets options: the
            // completion would refuse the assertion anyway.
            if !challenge.factors.contains(&MfaFactor::Webauthn) {
                return Err(keystead::Error::from(MfaError::FactorNotAllowed).into());
            }
            Some(challenge.user)
        }
        Some(LoginBearer::Access(_)) => {
            return Err(wrong_bearer("the login token (mfa_token), or none"));
        }
    };
    let options = state.ks.webauthn(realm.id).request_options(user).await?;
    let body = options_json(&options.options, options.challenge_id, options.expires_at);
    Ok((no_store(), Json(body)).into_response())
}

async fn authenticate(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    OptionalBearer(bearer): OptionalBearer,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let response = CeremonyResponse::parse(body)?;
    let session = match &bearer {
        None => {
            state
                .ks
                .webauthn(realm.id)
                .login(response.challenge, &response.credential)
                .await?
        }
        Some(LoginBearer::Challenge(id)) => {
            let answer = MfaAnswer::Webauthn {
                ceremony: response.challenge,
                response: response.credential.clone(),
            };
            state
                .ks
                .mfa(realm.id)
                .complete_challenge(*id, &answer)
                .await?
        }
        Some(LoginBearer::Access(_)) => {
            return Err(wrong_bearer("the login token (mfa_token), or none"));
        }
    };
    success(
        &state,
        &realm,
        &session,
        response.extra("client_id"),
        response.extra("scope"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<CeremonyResponse, OAuthError> {
        CeremonyResponse::parse(Ok(Json(body)))
    }

    #[test]
    fn the_servers_members_are_taken_out() {
        let id = ChallengeId::generate(chrono::Utc::now());
        let parsed = parse(json!({
            "id": "AQID", "rawId": "AQID", "type": "public-key",
            "response": {"clientDataJSON": "e30"},
            "challenge_id": id.to_string(), "label": "Laptop", "client_id": null,
        }))
        .unwrap();
        assert_eq!(parsed.challenge, id);
        assert_eq!(parsed.extra("label"), Some("Laptop"));
        assert_eq!(parsed.extra("client_id"), None);
        let rest: Value = serde_json::from_str(&parsed.credential).unwrap();
        assert_eq!(
            rest,
            json!({"id": "AQID", "rawId": "AQID", "type": "public-key",
                   "response": {"clientDataJSON": "e30"}})
        );
    }

    #[test]
    fn bad_bodies_are_400s() {
        let id = ChallengeId::generate(chrono::Utc::now()).to_string();
        for body in [
            json!([]),
            json!({"id": "AQID"}),
            json!({"challenge_id": 5}),
            json!({"challenge_id": "not-an-id"}),
            json!({"challenge_id": id, "label": 7}),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.0.code(), "VALIDATION_FAILED", "{body}");
            assert_eq!(
                e.into_response().status(),
                StatusCode::BAD_REQUEST,
                "{body}"
            );
        }
    }

    #[test]
    fn options_carry_the_ceremony() {
        let id = ChallengeId::generate(chrono::Utc::now());
        let at = chrono::Utc::now();
        let out = options_json(&json!({"publicKey": {"challenge": "abc"}}), id, at);
        assert_eq!(out["publicKey"]["challenge"], "abc");
        assert_eq!(out["challenge_id"], id.to_string());
        assert_eq!(out["expires_at"], json!(at));
    }
}
