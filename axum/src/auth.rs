//! Who is calling the seed routes: the scopes of the server's own APIs
//! over the [`extract`](super::extract) extractors, and the admin token.
//!
//! The seeds' device, account and portal paths carry no realm, so the
//! realm comes from the token's issuer ([`Auth::by_issuer`](super::extract::Auth::by_issuer));
//! the issuer index ([`directory`](super::directory)) is filled by
//! `POST /admin/realms`, which refuses an issuer another realm already
//! has. Every failure is a 401.
//!
//! # Admin
//!
//! `KEYSTEAD_ADMIN_TOKEN` enables the admin API. The presented bearer is
//! compared with it in constant time (over SHA-256 digests, so the length
//! does not leak either). The seeds' admin-only device paths
//! (`…/realm/admin/…`) carry no realm, so an admin names it in the
//! [`REALM_HEADER`] header; an ordinary user's valid token there is a 403.

use super::error::ApiError;
pub use super::extract::{RouteScope, Verified, bearer};
use super::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use keystead::id::RealmId;
use subtle::ConstantTimeEq as _;

/// The header an admin uses to name the realm on the seeds' admin paths.
pub const REALM_HEADER: &str = "x-keystead-realm";

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

/// A caller of one of the seed routes: a verified access token with the
/// route group's scope `S` ([`RequireScope`](super::extract::RequireScope)).
pub type Caller<S> = super::extract::RequireScope<S>;

/// Verify the request's bearer access token: route by `iss`, then full
/// verification by that realm for the server's audience.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Verified, ApiError> {
    Ok(state.auth.verify(parts).await?.0)
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
