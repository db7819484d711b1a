//! Seed 004, the app-portal authentication API, under `/api/v1/auth/…`:
//! portal access by magic link, one-time tokens, scoped ("message")
//! tokens, expire-all with a grace period, and logout.
//!
//! An application (`{app_id}`) is an OAuth client of the realm: tokens
//! handed out for it carry `client_id = app_id`, which is what
//! `expire-all` cuts off. The realm comes from the bearer token
//! ([`Caller`]).
//!
//! | method | path | library call | answer |
//! |---|---|---|---|
//! | POST | `/api/v1/auth/app-portal-access/{app_id}` | `Tokens::app_portal_access` | `{"url", "token"}`: a magic link for the caller, `url` carrying it in the fragment |
//! | POST | `/api/v1/auth/dashboard-access/{app_id}` | `Tokens::create_one_time_token` | `{"url", "token"}`: a one-time token (deprecated in the seed) |
//! | POST | `/api/v1/auth/one-time-token` | `Tokens::exchange_one_time_token` | `{"token"}`: an access token of the app |
//! | POST | `/api/v1/auth/app/{app_id}/create-message-token` | `Tokens::create_scoped_token` | the seed's `AuthTokenOut` |
//! | POST | `/api/v1/auth/app/{app_id}/expire-all` | `Tokens::expire_all_for_client` | 204; admin only |
//! | POST | `/api/v1/auth/logout` | `Tokens::logout` | 204 |
//!
//! * The portal opens the magic link with seed 003's
//!   `GET /realms/{realm}/login-actions/verify-magic-link?token_id=…&magic_token=…&client_id={app_id}`
//!   — its URL is `/realms/{realm}/app-portal/{app_id}#id=…&token=…`.
//! * `one-time-token` is called by whoever holds the one-time token, which
//!   may have no bearer yet: then the realm is named in the
//!   `x-keystead-realm` header.
//! * `expiry` is in seconds everywhere. In `app-portal-access` it is the
//!   link's lifetime (default and maximum 7 days); in
//!   `create-message-token` the token's (default and maximum 30 days; the
//!   seed's `0` means the default); in `expire-all` the grace before the
//!   cut (0 to 7 days, default 0).
//! * The seed's `application`, `featureFlags` and `readOnly` describe a
//!   portal's UI, which this example has none of: they are accepted and not
//!   used. The `idempotency-key` header is not used either: every call here
//!   either makes a fresh credential or is idempotent by nature.
//! * Message tokens carry the scope [`MESSAGE_SCOPE`] and the name given;
//!   a resource server checks it with `Tokens::verify_scoped_token`.
//! * Expire-all cuts off every application's user: only the administrator
//!   ([`RealmAdmin`]) may call it.

use super::auth::{Caller, PortalScope, REALM_HEADER, RealmAdmin, authenticate};
// `Path` with the server's rejections (a 400 with a code, not axum's text).
use super::body::{JsonBody, PathParams as Path};
use super::error::ApiError;
use super::oidc::realm_base;
use super::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Duration;
use keystead::id::RealmId;
use keystead::secret::SecretString;
use keystead::token::grants::{
    MAGIC_LINK_MAX_TTL_SECS, ONE_TIME_MAX_TTL_SECS, SCOPED_MAX_TTL_SECS,
};
use keystead::token::{AccessRequest, NewScopedToken};
use serde::Deserialize;
use serde_json::{Value, json};

/// The scope of message tokens.
pub const MESSAGE_SCOPE: &str = "message:create";
/// Longest expire-all grace, in seconds (7 days).
pub const MAX_GRACE_SECS: u32 = 7 * 24 * 3600;
/// Lifetime of a dashboard-access one-time token (15 minutes).
pub const DASHBOARD_TOKEN_TTL_SECS: i64 = 15 * 60;

/// The seed-004 routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/auth/app-portal-access/{app_id}",
            post(app_portal_access),
        )
        .route(
            "/api/v1/auth/dashboard-access/{app_id}",
            post(dashboard_access),
        )
        .route("/api/v1/auth/one-time-token", post(one_time_token))
        .route(
            "/api/v1/auth/app/{app_id}/create-message-token",
            post(create_message_token),
        )
        .route("/api/v1/auth/app/{app_id}/expire-all", post(expire_all))
        .route("/api/v1/auth/logout", post(logout))
}

/// The request of an application's tokens: client `app_id`, the server's
/// audience. The application must be a client of `realm`: an unknown one
/// is `404 OAUTH_CLIENT_NOT_FOUND` — the library would refuse it as a
/// failed client authentication (401), which tells a caller with a valid
/// bearer that its token is bad.
async fn app_request(
    state: &AppState,
    realm: RealmId,
    app_id: &str,
    scope: Vec<String>,
) -> Result<AccessRequest, ApiError> {
    let request = AccessRequest::public(app_id, scope);
    request
        .validate()
        .map_err(|e| ApiError::bad_request("app_id", e.problem))?;
    state.ks.oauth(realm).get_client(app_id).await?;
    Ok(request)
}

/// `AppPortalAccessIn`: only `expiry` is used (see the [module docs](self)).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    expiry: Option<u32>,
}

async fn app_portal_access(
    caller: Caller<PortalScope>,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    JsonBody(body): JsonBody<AppPortalAccessIn>,
) -> Result<Json<Value>, ApiError> {
    app_request(&state, caller.realm, &app_id, Vec::new()).await?;
    let ttl = i64::from(body.expiry.unwrap_or(u32::MAX)).min(MAGIC_LINK_MAX_TTL_SECS);
    let realm = state.ks.realms().get(caller.realm).await?;
    let base = format!("{}/app-portal/{app_id}", realm_base(&realm)?);
    let access = state
        .ks
        .tokens(caller.realm)
        .app_portal_access(caller.claims.sub, &base, Duration::seconds(ttl))
        .await?;
    Ok(Json(json!({
        "url": access.url.expose(),
        "token": access.link.token.expose(),
    })))
}

async fn dashboard_access(
    caller: Caller<PortalScope>,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let request = app_request(&state, caller.realm, &app_id, Vec::new()).await?;
    let ttl = DASHBOARD_TOKEN_TTL_SECS.min(ONE_TIME_MAX_TTL_SECS);
    let token = state
        .ks
        .tokens(caller.realm)
        .create_one_time_token(caller.claims.sid, &request, Duration::seconds(ttl))
        .await?;
    let realm = state.ks.realms().get(caller.realm).await?;
    let url = format!(
        "{}/app-portal/{app_id}#key={}",
        realm_base(&realm)?,
        token.token.expose()
    );
    Ok(Json(json!({ "url": url, "token": token.token.expose() })))
}

/// `OneTimeTokenIn`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OneTimeTokenIn {
    one_time_token: String,
}

/// The realm of a call that may come with or without a bearer: the
/// bearer's (verified), else the `x-keystead-realm` header's.
async fn bearer_or_header_realm(state: &AppState, parts: &Parts) -> Result<RealmId, ApiError> {
    if parts.headers.contains_key(AUTHORIZATION) {
        return Ok(authenticate(parts, state).await?.realm);
    }
    let name = parts
        .headers
        .get(REALM_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::unauthorized("send a bearer token or name the realm in x-keystead-realm")
        })?;
    Ok(state.ks.realms().get_by_name(name).await?.id)
}

async fn one_time_token(
    State(state): State<AppState>,
    parts: Parts,
    JsonBody(body): JsonBody<OneTimeTokenIn>,
) -> Result<Json<Value>, ApiError> {
    let realm = bearer_or_header_realm(&state, &parts).await?;
    let tokens = state
        .ks
        .tokens(realm)
        .exchange_one_time_token(&SecretString::new(body.one_time_token))
        .await?;
    Ok(Json(json!({ "token": tokens.access_token.expose() })))
}

/// `CreateMessageTokenIn`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMessageTokenIn {
    name: String,
    expiry: Option<u32>,
}

async fn create_message_token(
    caller: Caller<PortalScope>,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    JsonBody(body): JsonBody<CreateMessageTokenIn>,
) -> Result<Json<Value>, ApiError> {
    let request = app_request(&state, caller.realm, &app_id, vec![MESSAGE_SCOPE.into()]).await?;
    let secs = match body.expiry {
        None | Some(0) => SCOPED_MAX_TTL_SECS,
        Some(secs) => i64::from(secs),
    };
    let tokens = state.ks.tokens(caller.realm);
    let scoped = tokens
        .create_scoped_token(
            caller.claims.sid,
            &NewScopedToken {
                name: body.name.clone(),
                request,
                expires_in: Duration::seconds(secs),
            },
        )
        .await?;
    // The token's own claims give its id and issue time.
    let claims = tokens
        .verify_scoped_token(scoped.token.expose(), &state.audience, MESSAGE_SCOPE)
        .await?;
    Ok(Json(json!({
        "id": claims.jti,
        "name": body.name,
        "scopes": [MESSAGE_SCOPE],
        "token": scoped.token.expose(),
        "createdAt": chrono::DateTime::from_timestamp(claims.iat, 0),
        "expiresAt": scoped.expires_at,
    })))
}

/// `ApplicationTokenExpireIn`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationTokenExpireIn {
    expiry: Option<u32>,
}

async fn expire_all(
    admin: RealmAdmin,
    State(state): State<AppState>,
    Path(app_id): Path<String>,
    JsonBody(body): JsonBody<ApplicationTokenExpireIn>,
) -> Result<StatusCode, ApiError> {
    app_request(&state, admin.realm, &app_id, Vec::new()).await?;
    let grace = body.expiry.unwrap_or(0);
    if grace > MAX_GRACE_SECS {
        return Err(ApiError::bad_request(
            "expiry",
            format!("0 to {MAX_GRACE_SECS} seconds"),
        ));
    }
    state
        .ks
        .tokens(admin.realm)
        .expire_all_for_client(&app_id, Duration::seconds(i64::from(grace)))
        .await?;
    tracing::info!(realm = %admin.realm, app = %app_id, grace, "expired every token of an application");
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(
    caller: Caller<PortalScope>,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    state
        .ks
        .tokens(caller.realm)
        .logout(caller.claims.sid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
