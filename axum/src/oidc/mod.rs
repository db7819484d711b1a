//! Seed 003, the realm auth API, under `/realms/{realm_name}/…`: the
//! OAuth 2.0 / OpenID Connect endpoints and the login actions of one realm,
//! each a call on [`Tokens`](keystead::token::Tokens),
//! [`Users`](keystead::user::Users), [`Mfa`](keystead::mfa::Mfa) or
//! [`Webauthn`](keystead::webauthn::Webauthn).
//!
//! | method | path under `/realms/{realm_name}` | module |
//! |---|---|---|
//! | POST | `/protocol/openid-connect/token` | [`protocol`] (grants `authorization_code`, `client_credentials`, `password`, `refresh_token`, token exchange, one-time token) |
//! | GET | `/protocol/openid-connect/certs`, `/jwks.json` | [`protocol`] |
//! | GET | `/.well-known/openid-configuration` | [`protocol`] |
//! | GET, POST | `/protocol/openid-connect/userinfo` | [`protocol`] |
//! | POST | `/protocol/openid-connect/token/introspect` | [`protocol`] (RFC 7662) |
//! | POST | `/protocol/openid-connect/revoke` | [`protocol`] (RFC 7009) |
//! | GET, POST | `/protocol/openid-connect/logout` | [`protocol`] |
//! | GET | `/protocol/openid-connect/auth` | [`authorize`]: the authorization-code flow's login pages |
//! | POST | `/protocol/openid-connect/registrations` | [`login_actions`] |
//! | POST | `/login-actions/authenticate`, `challenge-otp`, `verify-otp`, `burn-recovery-code` | [`login_actions`] (JSON), [`authorize`] (the flow's form posts) |
//! | POST | `/login-actions/generate-recovery-codes`, `send-magic-link`, `update-password` | [`login_actions`] |
//! | GET | `/login-actions/setup-otp`, `verify-magic-link` | [`login_actions`] |
//! | POST | `/login-actions/webauthn-public-key-create-options`, `-create`, `-request-options`, `-authenticate` | [`webauthn`] |
//!
//! # Dialect
//!
//! Every error is an OAuth error body (RFC 6749 §5.2) — `error`,
//! `error_description` — with the library's stable `code` beside them.
//! Request bodies may be `application/x-www-form-urlencoded` (what OAuth
//! clients send) or `application/json` (what the seed's generated client
//! sends); both parse into the same fields. Responses carrying tokens are
//! marked `Cache-Control: no-store`.
//!
//! # Login tokens
//!
//! A login that needs a second factor (or, in a realm that requires MFA, a
//! first one to be enrolled) stops at a library
//! [`Challenge`]. Its id is the *login token*:
//! the client presents it as `Authorization: Bearer <token>` to
//! `challenge-otp` / `burn-recovery-code` / the WebAuthn request options and
//! authenticate actions (second factor) or `setup-otp` /
//! `verify-otp` (enrolment), which finish the login and answer with the
//! tokens. The same `setup-otp` / `verify-otp` with an *access token* as
//! the bearer enrol a further key for a logged-in user.

pub mod authorize;
pub mod html;
pub mod login_actions;
pub mod mail;
pub mod protocol;
pub mod webauthn;

use super::error::{ApiError, OAuthError};
use super::state::AppState;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json, Router};
use keystead::id::ChallengeId;
use keystead::realm::Realm;
use keystead::token::{AccessClaims, AccessRequest, TokenResponse};
use keystead::user::Challenge;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The path prefix of seed 003.
pub const PREFIX: &str = "/realms/{realm_name}";

/// The `client_id` of tokens issued where the client names none (login
/// actions, registration).
pub const DEFAULT_CLIENT_ID: &str = "keystead-login";

/// The seed-003 routes.
pub fn routes() -> Router<AppState> {
    Router::new().nest(
        PREFIX,
        protocol::routes()
            .merge(authorize::routes())
            .merge(login_actions::routes())
            .merge(webauthn::routes()),
    )
}

/// The realm named in the path; `REALM_NOT_FOUND` (404) or
/// `REALM_DISABLED` (403) otherwise.
pub async fn realm_named(state: &AppState, name: &str) -> Result<Realm, OAuthError> {
    let realm = state.ks.realms().get_by_name(name).await?;
    if realm.status != keystead::realm::RealmStatus::Active {
        return Err(ApiError::forbidden("REALM_DISABLED", "the realm is disabled").oauth());
    }
    Ok(realm)
}

/// An OAuth error body of the server's own (not a library error).
pub fn oauth_error(
    status: StatusCode,
    error: &str,
    code: &str,
    description: impl Into<String>,
) -> Response {
    let body = json!({
        "error": error,
        "error_description": description.into(),
        "code": code,
    });
    let mut response = (status, no_store(), Json(body)).into_response();
    response
        .extensions_mut()
        .insert(crate::observe::Outcome(code.to_owned().into()));
    response
}

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1): token
/// responses must not be cached anywhere.
pub fn no_store() -> [(axum::http::HeaderName, HeaderValue); 2] {
    [
        (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

/// The JSON of a token response (the seed's `JwtToken`, RFC 6749 §5.1).
pub fn token_json(tokens: &TokenResponse) -> Value {
    let mut body = json!({
        "access_token": tokens.access_token.expose(),
        "token_type": tokens.token_type,
        "expires_in": tokens.expires_in,
        "scope": tokens.scope.join(" "),
    });
    if let Some(refresh) = &tokens.refresh_token {
        body["refresh_token"] = refresh.expose().into();
    }
    if let Some(id_token) = &tokens.id_token {
        body["id_token"] = id_token.expose().into();
    }
    body
}

/// The OAuth answer to a correct password (or magic link) that needs a
/// second factor — `403 mfa_required` — or, in a realm that requires MFA,
/// an enrolment — `403 mfa_enrollment_required`. `mfa_token` is the login
/// token to continue with (see the [module docs](self)).
pub fn mfa_pending(challenge: &Challenge, enrollment: bool) -> Response {
    let (error, code, description) = if enrollment {
        (
            "mfa_enrollment_required",
            "MFA_ENROLLMENT_REQUIRED",
            "the realm requires MFA: enrol a TOTP key with GET login-actions/setup-otp and \
             POST login-actions/verify-otp, presenting mfa_token as the bearer",
        )
    } else {
        (
            "mfa_required",
            "MFA_REQUIRED",
            "a second factor is required: POST login-actions/challenge-otp (or \
             burn-recovery-code, or webauthn-public-key-request-options then \
             webauthn-public-key-authenticate) with mfa_token as the bearer",
        )
    };
    let body = json!({
        "error": error,
        "error_description": description,
        "code": code,
        "mfa_token": challenge.id.to_string(),
        "factors": challenge.factors.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "expires_at": challenge.expires_at,
    });
    (StatusCode::FORBIDDEN, no_store(), Json(body)).into_response()
}

/// What tokens issued by a login action are for: the named client (or
/// [`DEFAULT_CLIENT_ID`]) and the scope asked for — when none, the
/// server's API scopes the client registered ([`default_scope`]); the
/// library bounds both by the registered client (its default audience).
pub async fn access_request(
    state: &AppState,
    realm: &Realm,
    client_id: Option<&str>,
    scope: Option<&str>,
) -> Result<AccessRequest, OAuthError> {
    let client_id = client_id.unwrap_or(DEFAULT_CLIENT_ID);
    let mut asked = split_scope(scope);
    if asked.is_empty() {
        asked = default_scope(state, realm.id, client_id).await?;
    }
    Ok(AccessRequest::public(client_id, asked))
}

/// The scope a login that names none gets: the server's own API scopes
/// ([`API_SCOPES`](crate::auth::API_SCOPES)) that `client_id`
/// registered — so a first-party login can call the account, device and
/// portal APIs, and a client registered for none of them gets none. An
/// unknown client gets none (and is refused when the token is issued).
pub async fn default_scope(
    state: &AppState,
    realm: keystead::id::RealmId,
    client_id: &str,
) -> Result<Vec<String>, keystead::Error> {
    match state.ks.oauth(realm).get_client(client_id).await {
        Ok(client) => Ok(client
            .scopes
            .into_iter()
            .filter(|s| crate::auth::API_SCOPES.contains(&s.as_str()))
            .collect()),
        Err(e) if e.code() == "OAUTH_CLIENT_NOT_FOUND" => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Space-separated scope values (RFC 6749 §3.3).
pub fn split_scope(scope: Option<&str>) -> Vec<String> {
    scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Verify an access token of `realm` for the server's audience.
pub async fn verify_access(
    state: &AppState,
    realm: &Realm,
    token: &str,
) -> Result<AccessClaims, OAuthError> {
    Ok(state
        .ks
        .tokens(realm.id)
        .verify_access_token(token, &state.audience)
        .await?)
}

/// The base of every URL the server hands out for `realm` (magic links,
/// portal URLs): the realm's configured issuer URL
/// (`…/realms/{realm_name}` on this server), never a request header — a
/// `Host` or `X-Forwarded-*` header is the sender's to choose, and a link
/// built from it would send a victim's secret to the sender's host. A realm
/// without an issuer URL sends no links (`409 ISSUER_NOT_CONFIGURED`).
pub fn realm_base(realm: &Realm) -> Result<&str, ApiError> {
    realm
        .settings
        .issuer_url
        .as_deref()
        .map(|url| url.trim_end_matches('/'))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "ISSUER_NOT_CONFIGURED",
                "the realm has no issuer URL, which links are built from; set one first",
            )
        })
}

/// A request body as `application/x-www-form-urlencoded` or
/// `application/json` (chosen by `Content-Type`); a malformed one is a 400
/// `invalid_request` naming `body`.
#[derive(Debug, Clone)]
pub struct FormOrJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for FormOrJson<T> {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OAuthError> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if json {
            match Json::<T>::from_request(req, state).await {
                Ok(Json(value)) => Ok(Self(value)),
                Err(e) => Err(json_rejection(&e)),
            }
        } else {
            match Form::<T>::from_request(req, state).await {
                Ok(Form(value)) => Ok(Self(value)),
                Err(e) => Err(form_rejection(&e)),
            }
        }
    }
}

fn json_rejection(e: &JsonRejection) -> OAuthError {
    super::body::json_error(e).oauth()
}

fn form_rejection(e: &FormRejection) -> OAuthError {
    match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(e.status(), "PAYLOAD_TOO_LARGE", e.body_text()).oauth()
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::bad_request(
            "body",
            "send application/x-www-form-urlencoded or application/json",
        )
        .oauth(),
        _ => ApiError::bad_request("body", e.body_text()).oauth(),
    }
}

/// The bearer of a login action: a login token (a pending challenge's id)
/// or an access token (see the [module docs](self)).
#[derive(Debug, Clone)]
pub enum LoginBearer {
    /// A pending login challenge.
    Challenge(ChallengeId),
    /// An access token, not yet verified.
    Access(String),
}

impl FromRequestParts<AppState> for LoginBearer {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, OAuthError> {
        let token = super::auth::bearer(parts).map_err(ApiError::oauth)?;
        Ok(match token.parse::<ChallengeId>() {
            Ok(id) => LoginBearer::Challenge(id),
            Err(_) => LoginBearer::Access(token.to_owned()),
        })
    }
}

/// 401 for a login action that needs the other kind of bearer.
pub fn wrong_bearer(expected: &str) -> OAuthError {
    ApiError::unauthorized(format!("this action needs {expected} as the bearer")).oauth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_come_from_the_issuer_only() {
        let mut realm = Realm {
            id: keystead::id::RealmId::from_bytes([
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 1,
            ])
            .unwrap(),
            name: "acme".into(),
            status: keystead::realm::RealmStatus::Active,
            settings: keystead::realm::RealmSettings::default(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            updated_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        assert!(format!("{:?}", realm_base(&realm).unwrap_err()).contains("ISSUER_NOT_CONFIGURED"));
        realm.settings.issuer_url = Some("https://id.example.com/realms/acme/".into());
        assert_eq!(
            realm_base(&realm).unwrap(),
            "https://id.example.com/realms/acme"
        );
    }

    #[test]
    fn scopes_split_on_spaces() {
        assert_eq!(split_scope(Some(" a  b ")), vec!["a", "b"]);
        assert!(split_scope(None).is_empty());
    }
}
