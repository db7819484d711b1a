//! Rate limits on the endpoints that take credentials: the token endpoint,
//! every login action (password, OTP, recovery code, passkey, magic link,
//! sign-up), dynamic client registration and the seed's
//! `/api/v1/authenticate`.
//!
//! Two keyed token buckets ([governor](https://docs.rs/governor)), checked
//! on `POST`s to those routes before the handler runs:
//!
//! * **per client IP** — the connection's peer address. Forwarding headers
//!   (`X-Forwarded-For`, `Forwarded`) are *ignored*: anyone can send them,
//!   so trusting them would let an attacker pick a fresh bucket per
//!   request. Behind a proxy, give each instance its own limits or rate
//!   limit at the proxy;
//! * **per username** — the `username` field of the form or JSON body, case
//!   folded, with the path (which names the realm) and the
//!   `x-keystead-realm` header: a password spray from many addresses
//!   against one account still hits one bucket.
//!
//! A refused request is `429 RATE_LIMITED` with `Retry-After` (seconds)
//! and never reaches the library, so it costs no password hash and writes
//! nothing. The library's per-account lockout
//! ([`PasswordPolicy`](keystead::realm::PasswordPolicy)) stays the
//! account-level defence that holds across instances; these limits are
//! per process.

use super::error::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

/// The route suffixes that take credentials (besides every
/// `/login-actions/…`).
const CREDENTIAL_ROUTES: [&str; 3] = [
    "/protocol/openid-connect/token",
    "/protocol/openid-connect/registrations",
    "/api/v1/authenticate",
];

/// How many keys a bucket map holds before idle ones are dropped.
const PRUNE_AT: usize = 100_000;

/// The configured limits: requests per minute, with bursts of the same
/// size. `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Credential requests per minute from one client IP (default 60).
    pub per_ip_per_minute: Option<NonZeroU32>,
    /// Credential requests per minute naming one username (default 10).
    pub per_username_per_minute: Option<NonZeroU32>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_ip_per_minute: NonZeroU32::new(60),
            per_username_per_minute: NonZeroU32::new(10),
        }
    }
}

impl RateLimits {
    /// No limits (tests, benchmarks, a proxy that limits already).
    pub fn off() -> Self {
        Self {
            per_ip_per_minute: None,
            per_username_per_minute: None,
        }
    }
}

/// The buckets of one server process. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    per_ip: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    per_username: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    body_limit: usize,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("per_ip", &self.per_ip.is_some())
            .field("per_username", &self.per_username.is_some())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// Buckets for `limits`; bodies are read up to `body_limit` bytes to
    /// find the username.
    pub fn new(limits: RateLimits, body_limit: usize) -> Self {
        Self {
            per_ip: limits
                .per_ip_per_minute
                .map(|n| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)))),
            per_username: limits
                .per_username_per_minute
                .map(|n| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)))),
            body_limit,
        }
    }
}

/// Whether `route` (a route template) takes credentials.
fn takes_credentials(route: &str) -> bool {
    route.contains("/login-actions/") || CREDENTIAL_ROUTES.iter().any(|r| route.ends_with(r))
}

/// `429 RATE_LIMITED`, retry after `secs`; in the OAuth dialect on the
/// OAuth endpoints.
fn limited(route: &str, secs: u64, what: &str) -> Response {
    let error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many attempts {what}; retry later"),
    )
    .with_retry_after(secs.max(1));
    error.respond(super::error::oauth_route(route))
}

/// Check `key` in `limiter`: `Err(seconds to wait)` when its bucket is
/// empty.
fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), u64>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > PRUNE_AT {
        limiter.retain_recent();
    }
    limiter.check_key(key).map_err(|not_until| {
        not_until
            .wait_time_from(DefaultClock::default().now())
            .as_secs()
            .saturating_add(1)
    })
}

/// The middleware.
pub async fn limit(limiter: Limiter, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(route) = route.filter(|r| request.method() == Method::POST && takes_credentials(r))
    else {
        return next.run(request).await;
    };
    if let Some(per_ip) = &limiter.per_ip {
        // In-process callers (tests) have no peer: one shared bucket.
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if let Err(secs) = check(per_ip, &ip) {
            return limited(&route, secs, "from this address");
        }
    }
    let Some(per_username) = &limiter.per_username else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, limiter.body_limit).await else {
        return super::body::too_large().respond(super::error::oauth_route(&route));
    };
    if let Some(username) = username_in(&bytes) {
        let realm = parts
            .headers
            .get(super::auth::REALM_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let key = format!(
            "{route}\u{0}{}\u{0}{realm}\u{0}{username}",
            parts.uri.path()
        );
        if let Err(secs) = check(per_username, &key) {
            return limited(&route, secs, "for this username");
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The `username` a JSON or form body names, case folded; `None` if none.
fn username_in(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        username: String,
    }
    let from_json = || {
        serde_json::from_slice::<Named>(body)
            .ok()
            .map(|n| n.username)
    };
    let from_form = || {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "username")
            .map(|(_, v)| v)
    };
    from_json()
        .or_else(from_form)
        .map(|name| name.trim().to_lowercase())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_found_in_json_and_forms_and_folded() {
        assert_eq!(
            username_in(br#"{"username":" Alice "}"#).as_deref(),
            Some("alice")
        );
        assert_eq!(
            username_in(b"grant_type=password&username=ALICE&password=x").as_deref(),
            Some("alice")
        );
        assert_eq!(username_in(b"grant_type=refresh_token").as_deref(), None);
        assert_eq!(username_in(b"\xff\xfe").as_deref(), None);
    }

    #[test]
    fn only_credential_routes_are_limited() {
        assert!(takes_credentials(
            "/realms/{realm}/protocol/openid-connect/token"
        ));
        assert!(takes_credentials(
            "/realms/{realm}/login-actions/authenticate"
        ));
        assert!(takes_credentials("/api/v1/authenticate"));
        assert!(!takes_credentials(
            "/realms/{realm}/protocol/openid-connect/certs"
        ));
        assert!(!takes_credentials("/healthz"));
    }
}
