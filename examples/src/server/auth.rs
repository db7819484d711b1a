//! Who is calling: axum extractors for bearer access tokens and for the
//! admin token.
//!
//! # Finding the realm of a token
//!
//! The seeds' device, account and portal paths carry no realm, so the
//! realm comes from the token. The server reads the token's `iss` claim
//! *without* trusting it, only to choose which realm's
//! [`Tokens`](keystead::token::Tokens) verifies it:
//!
//! * `urn:keystead:realm:<id>` (a realm without an issuer URL) names the
//!   realm directly;
//! * any other issuer is looked up in the server's issuer index
//!   ([`directory`]), filled by `POST /admin/realms`,
//!   which refuses an issuer another realm already has.
//!
//! Then the chosen realm verifies the token completely: signature against
//! *that realm's* keys only, `typ`, `iss` equal to that realm's issuer,
//! `aud`, times, expire-all marks and the live session. A forged `iss`
//! therefore only selects which keys the forgery is checked against — it
//! fails there. Every failure is a 401.
//!
//! # Admin
//!
//! `KEYSTEAD_ADMIN_TOKEN` enables the admin API. The presented bearer is
//! compared with it in constant time (over SHA-256 digests, so the length
//! does not leak either). The seeds' admin-only device paths
//! (`…/realm/admin/…`) carry no realm, so an admin names it in the
//! [`REALM_HEADER`] header; an ordinary user's valid token there is a 403.

use super::directory;
use super::error::ApiError;
use super::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::id::RealmId;
use keystead::token::{AccessClaims, TokenError};
use subtle::ConstantTimeEq as _;

/// The header an admin uses to name the realm on the seeds' admin paths.
pub const REALM_HEADER: &str = "x-keystead-realm";

/// Prefix of the issuer of a realm without an issuer URL.
const URN_ISSUER: &str = "urn:keystead:realm:";

/// Largest bearer token accepted (matches the library's JWS bound).
const MAX_BEARER_LEN: usize = 8 * 1024;

/// A verified access token of some realm: its realm and claims (`sub` is
/// the user id), before any route's scope is checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The realm that issued and verified the token.
    pub realm: RealmId,
    /// The verified claims.
    pub claims: AccessClaims,
}

/// The scope a group of routes needs: each route names one in the
/// [`Caller`] it takes, so a token is good only for the APIs it was
/// issued for.
pub trait RouteScope {
    /// The scope value the token must carry.
    const SCOPE: &'static str;
}

/// The account API (`/api/v1/user/…`): scope `account`.
#[derive(Debug, Clone, Copy)]
pub struct AccountScope;
impl RouteScope for AccountScope {
    const SCOPE: &'static str = "account";
}

/// The device API (`/devices…`, `/realm/…`): scope `devices`.
#[derive(Debug, Clone, Copy)]
pub struct DeviceScope;
impl RouteScope for DeviceScope {
    const SCOPE: &'static str = "devices";
}

/// The app-portal API (`/api/v1/auth/…`): scope `portal`.
#[derive(Debug, Clone, Copy)]
pub struct PortalScope;
impl RouteScope for PortalScope {
    const SCOPE: &'static str = "portal";
}

/// Every scope of the server's own APIs: what a login through the
/// server's pages asks for when it names none (bounded, as always, by what
/// the client registered).
pub const API_SCOPES: [&str; 3] = [AccountScope::SCOPE, DeviceScope::SCOPE, PortalScope::SCOPE];

/// A caller with a verified access token that carries the scope `S` of the
/// route (`sub` is the user id). A named (scoped, "message") token is for
/// the resource server it was made for, never the server's own APIs: a
/// 403 here, like a token without the scope.
#[derive(Debug, Clone)]
pub struct Caller<S> {
    /// The realm that issued and verified the token.
    pub realm: RealmId,
    /// The verified claims.
    pub claims: AccessClaims,
    scope: std::marker::PhantomData<fn() -> S>,
}

impl<S: RouteScope> Caller<S> {
    /// `verified` if its token may call a route of scope `S`.
    pub fn admit(verified: Verified) -> Result<Self, ApiError> {
        let claims = &verified.claims;
        if claims.token_name.is_some() || !claims.scopes().any(|s| s == S::SCOPE) {
            return Err(keystead::Error::from(TokenError::InsufficientScope).into());
        }
        Ok(Self {
            realm: verified.realm,
            claims: verified.claims,
            scope: std::marker::PhantomData,
        })
    }
}

/// The bearer token of a request, or a 401.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Authorization is not a Bearer token"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::unauthorized(
            "Authorization is not a Bearer token",
        ));
    }
    if token.len() > MAX_BEARER_LEN {
        return Err(keystead::Error::from(TokenError::Malformed {
            reason: "longer than 8 KiB",
        })
        .into());
    }
    Ok(token)
}

/// The realm whose keys must verify `token`, from its unverified `iss`
/// (see the [module docs](self)). Unroutable tokens are a 401.
pub async fn realm_of_token(state: &AppState, token: &str) -> Result<RealmId, ApiError> {
    #[derive(serde::Deserialize)]
    struct Unverified {
        iss: String,
    }
    let untrusted =
        |reason| ApiError::from(keystead::Error::from(TokenError::Malformed { reason }));
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| untrusted("not a compact JWS"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| untrusted("payload is not base64url"))?;
    let claims: Unverified =
        serde_json::from_slice(&bytes).map_err(|_| untrusted("payload has no iss claim"))?;
    if let Some(id) = claims.iss.strip_prefix(URN_ISSUER) {
        return id
            .parse()
            .map_err(|_| keystead::Error::from(TokenError::WrongIssuer).into());
    }
    directory::realm_of_issuer(&**state.ks.store(), &claims.iss)
        .await?
        .ok_or_else(|| keystead::Error::from(TokenError::WrongIssuer).into())
}

/// Verify the request's bearer access token: route by `iss`, then full
/// verification by that realm for the server's audience.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Verified, ApiError> {
    let token = bearer(parts)?;
    let realm = realm_of_token(state, token).await?;
    let claims = state
        .ks
        .tokens(realm)
        .verify_access_token(token, &state.audience)
        .await
        .map_err(|e| {
            // A realm deleted or disabled since issuing: the token is dead.
            let api = ApiError::from(e);
            if api.status() == StatusCode::NOT_FOUND {
                ApiError::unauthorized("the token's realm no longer exists")
            } else {
                api
            }
        })?;
    Ok(Verified { realm, claims })
}

impl<S: RouteScope> FromRequestParts<AppState> for Caller<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Caller::admit(authenticate(parts, state).await?)
    }
}

/// Whether `presented` is the admin token (constant time).
pub(crate) fn is_admin_token(state: &AppState, presented: &str) -> Option<bool> {
    let expected = state.admin_token.as_ref()?;
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(presented), digest(expected.expose()));
    Some(bool::from(a.as_ref().ct_eq(b.as_ref())))
}

/// The server administrator (bearer = `KEYSTEAD_ADMIN_TOKEN`). 404 when the
/// admin API is disabled, 401 for any other bearer.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.admin_token.is_none() {
            return Err(admin_disabled());
        }
        let token = bearer(parts)?;
        match is_admin_token(state, token) {
            Some(true) => Ok(Admin),
            _ => Err(ApiError::unauthorized("not the admin token")),
        }
    }
}

fn admin_disabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ADMIN_API_DISABLED",
        "the admin API is disabled (set KEYSTEAD_ADMIN_TOKEN)",
    )
}

/// The administrator acting on one realm's seed admin paths: admin token
/// plus the [`REALM_HEADER`] naming the realm. A valid user token is a 403
/// (authenticated, not an administrator); anything else a 401.
#[derive(Debug, Clone, Copy)]
pub struct RealmAdmin {
    /// The realm named by the header.
    pub realm: RealmId,
}

impl FromRequestParts<AppState> for RealmAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if is_admin_token(state, token) == Some(true) {
            let name = parts
                .headers
                .get(REALM_HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "x-keystead-realm",
                        "admin calls on realm paths name the realm in this header",
                    )
                })?;
            let realm = state.ks.realms().get_by_name(name).await?;
            return Ok(RealmAdmin { realm: realm.id });
        }
        // Not the admin: a user with a valid token is forbidden, anything
        // else unauthenticated.
        authenticate(parts, state).await?;
        Err(ApiError::forbidden(
            "ADMIN_REQUIRED",
            "this path is for the administrator",
        ))
    }
}
