//! Extractors for an app's own routes: a verified access token, a scope, a
//! second factor — added to a handler's arguments, with the rules in the
//! library.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use keystead_axum::extract::{Auth, Claims};
//! # fn demo(ks: keystead::Keystead, realm: keystead::id::RealmId) {
//! async fn me(Claims(token): Claims) -> String {
//!     token.claims.sub.to_string()
//! }
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .with_state(Auth::for_realm(ks, realm, "my-api"));
//! # }
//! ```
//!
//! An app with a state of its own adds `impl FromRef<MyState> for Auth`
//! (or derives `FromRef` on it) and the extractors work the same.
//!
//! * [`Bearer`] is the raw token of `Authorization: Bearer …` (RFC 6750
//!   §2.1: scheme case-insensitive, one token, at most 8 KiB);
//! * [`Claims`] is a token fully verified by its realm — signature against
//!   that realm's keys, `typ`, `iss`, `aud`, times, expire-all marks and
//!   the live session ([`Tokens::verify_access_token`](keystead::token::Tokens::verify_access_token));
//! * [`RequireScope<S>`] also needs the scope [`RouteScope::SCOPE`], and
//!   refuses named (scoped) tokens, which are for the resource server they
//!   name, not for a route's scope; [`Claims::require_scope`] checks a
//!   scope known only at run time;
//! * [`RequireMfa`] also needs a login that proved a second factor
//!   ([`AccessClaims::multi_factor`](keystead::token::AccessClaims::multi_factor));
//!   [`Claims::require_recent_login`] adds a `max_age`.
//!
//! Refusals are [`ApiError`]s: `401` with `WWW-Authenticate: Bearer` (and
//! `error="invalid_token"` when a token was presented) for a missing or bad
//! token, `403` with `error="insufficient_scope", scope="…"` for a missing
//! scope, and `401` with `error="insufficient_user_authentication"` (RFC
//! 9470) for a login without a second factor or too old — never a panic or
//! a 500 on a malformed header.
//!
//! # Which realm verifies a token
//!
//! [`Auth::for_realm`] fixes it: a token of any other realm fails there.
//! [`Auth::by_issuer`] (what the seed routers use, since their paths carry
//! no realm) reads the token's `iss` claim *without* trusting it, only to
//! choose which realm verifies it: `urn:keystead:realm:<id>` names the
//! realm directly; any other issuer is looked up in the issuer index
//! ([`directory`]). A forged `iss` only selects which keys the forgery is
//! checked against — it fails there.

use super::directory;
use super::error::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::Keystead;
use keystead::id::RealmId;
use keystead::token::{AccessClaims, TokenError};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of the issuer of a realm without an issuer URL.
const URN_ISSUER: &str = "urn:keystead:realm:";

/// Largest bearer token accepted (matches the library's JWS bound).
const MAX_BEARER_LEN: usize = 8 * 1024;

/// What the extractors verify tokens with: the library instance, how the
/// realm is chosen, and the audience (`aud`) tokens must be issued for.
/// Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    ks: Keystead,
    realm: Option<RealmId>,
    audience: Arc<str>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("realm", &self.realm)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Tokens of `realm` only, issued for `audience`.
    pub fn for_realm(ks: Keystead, realm: RealmId, audience: impl Into<Arc<str>>) -> Self {
        Self {
            ks,
            realm: Some(realm),
            audience: audience.into(),
        }
    }

    /// Tokens of whichever realm their issuer names (see the [module
    /// docs](self#which-realm-verifies-a-token)), issued for `audience`.
    pub fn by_issuer(ks: Keystead, audience: impl Into<Arc<str>>) -> Self {
        Self {
            ks,
            realm: None,
            audience: audience.into(),
        }
    }

    /// The library instance.
    pub fn keystead(&self) -> &Keystead {
        &self.ks
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Verify the request's bearer access token completely.
    pub async fn verify(&self, parts: &Parts) -> Result<Claims, ApiError> {
        self.verify_token(bearer(parts)?).await
    }

    /// Verify an access token that did not come in an `Authorization`
    /// header (a WebSocket's first message, a queued job), with the same
    /// rules.
    pub async fn verify_token(&self, token: &str) -> Result<Claims, ApiError> {
        let realm = match self.realm {
            Some(realm) => realm,
            None => self.realm_of_token(token).await?,
        };
        let claims = self
            .ks
            .tokens(realm)
            .verify_access_token(token, &self.audience)
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
        Ok(Claims(Verified { realm, claims }))
    }

    /// The realm whose keys must verify `token`, from its unverified `iss`.
    /// Unroutable tokens are a 401.
    async fn realm_of_token(&self, token: &str) -> Result<RealmId, ApiError> {
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
        directory::realm_of_issuer(&**self.ks.store(), &claims.iss)
            .await?
            .ok_or_else(|| keystead::Error::from(TokenError::WrongIssuer).into())
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
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(ApiError::unauthorized(
            "Authorization is not a Bearer token",
        ));
    }
    if parts.headers.get_all(AUTHORIZATION).iter().nth(1).is_some() {
        // Two credentials: which one would a proxy have checked?
        return Err(ApiError::unauthorized("more than one Authorization header"));
    }
    if token.len() > MAX_BEARER_LEN {
        return Err(keystead::Error::from(TokenError::Malformed {
            reason: "longer than 8 KiB",
        })
        .into());
    }
    Ok(token)
}

/// The raw bearer token of the request, checked only for its form: for a
/// handler that passes it on (introspection, revocation), not one that
/// trusts it — use [`Claims`] for that.
#[derive(Debug, Clone)]
pub struct Bearer(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        bearer(parts).map(|token| Bearer(token.to_owned()))
    }
}

/// A verified access token: the realm that verified it and its claims
/// (`sub` is the user id).
#[derive(Debug, Clone)]
pub struct Verified {
    /// The realm that issued and verified the token.
    pub realm: RealmId,
    /// The verified claims.
    pub claims: AccessClaims,
}

/// The extractor of a [`Verified`] access token.
#[derive(Debug, Clone)]
pub struct Claims(pub Verified);

impl Claims {
    /// `Ok` if the token carries `scope` and is not a named (scoped)
    /// token; else `403 insufficient_scope` naming it.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        let claims = &self.0.claims;
        if claims.token_name.is_some() || !claims.has_scope(scope) {
            return Err(
                ApiError::from(keystead::Error::from(TokenError::InsufficientScope))
                    .with_detail("scope", scope),
            );
        }
        Ok(())
    }

    /// `Ok` if the login behind the token proved a second factor, at most
    /// `max_age` before `now` (pass [`Keystead::now`]); else `401
    /// insufficient_user_authentication` with that `max_age` (RFC 9470).
    pub fn require_recent_login(
        &self,
        max_age: Duration,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ApiError> {
        let claims = &self.0.claims;
        if claims.multi_factor() && claims.authenticated_within(max_age, now) {
            return Ok(());
        }
        Err(step_up(Some(max_age)))
    }
}

/// A `401 insufficient_user_authentication` asking for a login with a
/// second factor, within `max_age` if given.
fn step_up(max_age: Option<Duration>) -> ApiError {
    let error = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "MFA_REQUIRED",
        "this route needs a login with a second factor",
    )
    .with_detail("needs_mfa", true);
    match max_age {
        Some(max_age) => error.with_detail("max_age", max_age.as_secs()),
        None => error,
    }
}

impl<S> FromRequestParts<S> for Claims
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Auth::from_ref(state).verify(parts).await
    }
}

/// The scope a group of routes needs: each route names one in the
/// [`RequireScope`] it takes, so a token is good only for the APIs it was
/// issued for.
pub trait RouteScope {
    /// The scope value the token must carry.
    const SCOPE: &'static str;
}

/// A verified access token that carries the scope `S` of the route and is
/// not a named (scoped) token — those are for the resource server they
/// were made for: `403 insufficient_scope` otherwise.
#[derive(Debug, Clone)]
pub struct RequireScope<S> {
    /// The realm that issued and verified the token.
    pub realm: RealmId,
    /// The verified claims.
    pub claims: AccessClaims,
    scope: PhantomData<fn() -> S>,
}

impl<S: RouteScope> RequireScope<S> {
    /// `verified` if its token may call a route of scope `S`.
    pub fn admit(verified: Verified) -> Result<Self, ApiError> {
        let claims = Claims(verified);
        claims.require_scope(S::SCOPE)?;
        let Claims(Verified { realm, claims }) = claims;
        Ok(Self {
            realm,
            claims,
            scope: PhantomData,
        })
    }
}

impl<St, S> FromRequestParts<St> for RequireScope<S>
where
    Auth: FromRef<St>,
    St: Send + Sync,
    S: RouteScope,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &St) -> Result<Self, ApiError> {
        let Claims(verified) = Auth::from_ref(state).verify(parts).await?;
        Self::admit(verified)
    }
}

/// A verified access token whose login proved a second factor (`amr`
/// holds `otp`, `recovery`, `hwk` or `swk`): `401
/// insufficient_user_authentication` otherwise, so the client sends the
/// user through a login with MFA and retries.
#[derive(Debug, Clone)]
pub struct RequireMfa(pub Verified);

impl<S> FromRequestParts<S> for RequireMfa
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Claims(verified) = Auth::from_ref(state).verify(parts).await?;
        if verified.claims.multi_factor() {
            Ok(RequireMfa(verified))
        } else {
            Err(step_up(None))
        }
    }
}
