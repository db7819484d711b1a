//! One error type for every handler: a library [`keystead::Error`] (or a
//! server-side refusal) as an HTTP status and a JSON body that carries the
//! library's stable code.
//!
//! Two renderers, because the seeds speak two dialects:
//!
//! * [`ApiError`] answers `{"code": "KEY_VERSION_CONFLICT", "message": …}`
//!   (plus details such as `currentVersion` where the client needs them)
//!   — the device, account and portal APIs;
//! * [`OAuthError`] answers RFC 6749 §5.2 `{"error": "invalid_grant",
//!   "error_description": …}` — the OAuth/OIDC endpoints; convert with
//!   [`ApiError::oauth`].
//!
//! Server-side failures (storage backend, corrupt records, key provider)
//! answer 500 with a generic message; the cause goes to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keystead::device::DeviceError;
use keystead::user::AuthError;
use serde_json::{Map, Value, json};

/// An error answer of the JSON APIs.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    oauth_code: &'static str,
    message: String,
    details: Map<String, Value>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error of the server itself (not the library): `status` with a
    /// stable `code` and a message for developers.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let oauth_code = match status {
            StatusCode::UNAUTHORIZED => "invalid_token",
            StatusCode::FORBIDDEN => "access_denied",
            s if s.is_client_error() => "invalid_request",
            _ => "server_error",
        };
        Self {
            status,
            code,
            oauth_code,
            message: message.into(),
            details: Map::new(),
            retry_after: None,
        }
    }

    /// 400 with the library's validation code, naming the field.
    pub fn bad_request(field: &'static str, problem: impl Into<String>) -> Self {
        keystead::Error::from(keystead::ValidationError::new(field, problem)).into()
    }

    /// 401: no or unusable credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 403: authenticated, but not allowed to do this.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// Add a detail field to the body (e.g. `currentVersion`).
    #[must_use]
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// Ask the client to wait `secs` seconds before retrying
    /// (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for developers (generic for server-side failures).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error in the OAuth dialect.
    pub fn oauth(self) -> OAuthError {
        OAuthError(self)
    }

    /// This error in the OAuth dialect if `oauth`, else in the plain one;
    /// see [`oauth_route`]. For answers made outside a handler (rate
    /// limits, axum's own rejections), which cannot ask their handler.
    pub fn respond(self, oauth: bool) -> Response {
        if oauth {
            self.oauth().into_response()
        } else {
            self.into_response()
        }
    }
}

/// Whether the route at `path` (a path or a route template) answers in
/// the OAuth dialect: the realm routes (`/realms/…`: OAuth, OIDC, login
/// actions) do, every other route speaks the plain one.
pub fn oauth_route(path: &str) -> bool {
    path.starts_with("/realms/")
}

/// The HTTP status for a library error code. Codes are stable, so this
/// table is too; unknown (future) codes fall back to 400 for client-side
/// families and 500 otherwise.
pub fn status_for(code: &str) -> StatusCode {
    if let Some(status) = webauthn_status(code).or_else(|| oauth_status(code)) {
        return status;
    }
    match code {
        "INVALID_CREDENTIALS"
        | "SESSION_NOT_FOUND"
        | "APP_TOKEN_NOT_FOUND"
        | "CHALLENGE_NOT_FOUND"
        | "MFA_INVALID_CODE"
        | "MFA_STEP_REQUIRED" => StatusCode::UNAUTHORIZED,
        c if c.starts_with("TOKEN_") => StatusCode::UNAUTHORIZED,
        "INSUFFICIENT_SCOPE"
        | "USER_DISABLED"
        | "REGISTRATION_CLOSED"
        | "REALM_DISABLED"
        | "DEVICE_NOT_ACTIVE"
        | "MFA_ENROLLMENT_REQUIRED"
        | "MFA_FACTOR_NOT_ALLOWED" => StatusCode::FORBIDDEN,
        "NO_KEY_AVAILABLE" | "NOT_FOUND" => StatusCode::NOT_FOUND,
        c if c.ends_with("_NOT_FOUND") => StatusCode::NOT_FOUND,
        "KEY_VERSION_CONFLICT"
        | "DEVICE_LIMIT_REACHED"
        | "INVALID_TRANSITION"
        | "PUBLIC_KEY_IN_USE"
        | "KEY_REQUEST_NOT_PENDING"
        | "MFA_PENDING_KEY_EXISTS"
        | "MFA_KEY_LIMIT_REACHED"
        | "MFA_KEY_ALREADY_ACTIVE"
        | "MFA_KEY_NOT_ACTIVE"
        | "MFA_NO_ACTIVE_FACTOR"
        | "STORAGE_CONFLICT" => StatusCode::CONFLICT,
        c if c.ends_with("_TAKEN") => StatusCode::CONFLICT,
        "TOO_MANY_ATTEMPTS" => StatusCode::TOO_MANY_REQUESTS,
        "STEP_UP_REQUIRED" => StatusCode::UNAUTHORIZED,
        "STORAGE_BACKEND"
        | "STORAGE_CORRUPT"
        | "CRYPTO_KEY_PROVIDER_FAILED"
        | "CRYPTO_RANDOM_UNAVAILABLE"
        | "CRYPTO_SEAL_FAILED"
        | "CRYPTO_UNKNOWN_KEY"
        | "ISSUER_NOT_CONFIGURED" => StatusCode::INTERNAL_SERVER_ERROR,
        "VALIDATION_FAILED"
        | "INVALID_ENVELOPE"
        | "ENVELOPE_SET_MISMATCH"
        | "INVALID_SCOPE"
        | "INVALID_GRANT"
        | "REFRESH_TOKEN_REUSED"
        | "UNSUPPORTED_GRANT_TYPE"
        | "MFA_ACTIVATION_EXPIRED" => StatusCode::BAD_REQUEST,
        c if c.starts_with("CRYPTO_") || c.starts_with("JWS_") => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a WebAuthn code, ahead of the generic suffix rules: a
/// spent or expired ceremony is a 409 (its state moved on: a replay, or the
/// loser of a race), every failed verification a 401 like a wrong
/// password, a policy refusal a 403.
fn webauthn_status(code: &str) -> Option<StatusCode> {
    Some(match code {
        "WEBAUTHN_NOT_CONFIGURED" => StatusCode::NOT_FOUND,
        "WEBAUTHN_PASSWORDLESS_NOT_ALLOWED" | "WEBAUTHN_CREDENTIAL_FLAGGED" => {
            StatusCode::FORBIDDEN
        }
        "WEBAUTHN_CHALLENGE_NOT_FOUND"
        | "WEBAUTHN_CHALLENGE_EXPIRED"
        | "WEBAUTHN_CREDENTIAL_EXISTS"
        | "WEBAUTHN_CREDENTIAL_LIMIT_REACHED"
        | "WEBAUTHN_NO_CREDENTIALS" => StatusCode::CONFLICT,
        "WEBAUTHN_CHALLENGE_MISMATCH"
        | "WEBAUTHN_WRONG_ORIGIN"
        | "WEBAUTHN_WRONG_RP_ID"
        | "WEBAUTHN_USER_NOT_VERIFIED"
        | "WEBAUTHN_INVALID_RESPONSE"
        | "WEBAUTHN_UNKNOWN_CREDENTIAL"
        | "WEBAUTHN_SIGN_COUNT_REGRESSION" => StatusCode::UNAUTHORIZED,
        _ => return None,
    })
}

/// The status of an OAuth-client or authorization-flow code
/// ([`keystead::oauth::OAuthError`]): a failed client authentication is a
/// 401 (RFC 6749 §5.2), a declined login a 403, a taken client id a 409,
/// an unknown client (administration) a 404, and every refused request or
/// grant a 400.
fn oauth_status(code: &str) -> Option<StatusCode> {
    Some(match code {
        "OAUTH_INVALID_CLIENT" => StatusCode::UNAUTHORIZED,
        "OAUTH_ACCESS_DENIED" => StatusCode::FORBIDDEN,
        "OAUTH_CLIENT_EXISTS" => StatusCode::CONFLICT,
        "OAUTH_CLIENT_NOT_FOUND" | "OAUTH_TRANSACTION_NOT_FOUND" => StatusCode::NOT_FOUND,
        "OAUTH_INVALID_REQUEST"
        | "OAUTH_INVALID_REDIRECT_URI"
        | "OAUTH_UNAUTHORIZED_CLIENT"
        | "OAUTH_UNSUPPORTED_RESPONSE_TYPE"
        | "OAUTH_INVALID_SCOPE"
        | "OAUTH_INVALID_TARGET"
        | "OAUTH_INVALID_GRANT"
        | "OAUTH_CODE_REUSED"
        | "OAUTH_WRONG_STEP" => StatusCode::BAD_REQUEST,
        _ => return None,
    })
}

/// The OAuth `error` of a library error whose own
/// ([`keystead::Error::oauth_code`]) is the catch-all `server_error` but
/// whose status is a client error: by status, with a refused proof
/// (WebAuthn assertion, second factor) an `invalid_grant`.
fn oauth_code_for(e: &keystead::Error, status: StatusCode) -> &'static str {
    match e.oauth_code() {
        "server_error" if !status.is_server_error() => match status {
            StatusCode::UNAUTHORIZED => "invalid_grant",
            StatusCode::FORBIDDEN => "access_denied",
            _ => "invalid_request",
        },
        own => own,
    }
}

impl From<keystead::Error> for ApiError {
    fn from(e: keystead::Error) -> Self {
        let code = e.code();
        let status = status_for(code);
        let message = if status.is_server_error() {
            // Backend messages can name tables, hosts or files: log them,
            // answer generically.
            tracing::error!(code, error = %e, "request failed on the server side");
            "internal error".to_owned()
        } else {
            e.to_string()
        };
        let mut out = Self {
            status,
            code,
            oauth_code: oauth_code_for(&e, status),
            message,
            details: Map::new(),
            retry_after: None,
        };
        match &e {
            keystead::Error::Device(DeviceError::KeyVersionConflict { current }) => {
                out = out.with_detail("currentVersion", *current);
            }
            keystead::Error::Device(DeviceError::LimitReached { limit }) => {
                out = out.with_detail("limit", *limit);
            }
            keystead::Error::Validation(v) => {
                out = out.with_detail("field", v.field);
            }
            keystead::Error::Auth(AuthError::TooManyAttempts { retry_after }) => {
                out.retry_after = retry_after.map(|d| d.as_secs().max(1));
            }
            // RFC 9470 §3: the client asks for a new authentication no
            // older than `max_age` (with a second factor when `needs_mfa`).
            keystead::Error::Auth(AuthError::StepUpRequired {
                max_age_secs,
                needs_mfa,
            }) => {
                out = out
                    .with_detail("max_age", *max_age_secs)
                    .with_detail("needs_mfa", *needs_mfa);
            }
            _ => {}
        }
        out
    }
}

impl From<keystead::StorageError> for ApiError {
    fn from(e: keystead::StorageError) -> Self {
        keystead::Error::from(e).into()
    }
}

impl ApiError {
    /// A `WWW-Authenticate` challenge more specific than `Bearer`: RFC
    /// 9470 §3 for a login that is too old or lacks a second factor
    /// (naming the `max_age` to ask for), RFC 6750 §3.1 for a missing
    /// scope (naming it) or a bad token. A request without credentials
    /// gets the bare `Bearer` (RFC 6750 §3.1: no error code then).
    fn challenge(&self) -> Option<String> {
        if self.code == "STEP_UP_REQUIRED" || self.details.contains_key("needs_mfa") {
            let max_age = self
                .details
                .get("max_age")
                .and_then(Value::as_u64)
                .map(|secs| format!(", max_age=\"{secs}\""))
                .unwrap_or_default();
            return Some(format!(
                "Bearer error=\"insufficient_user_authentication\", \
                 error_description=\"a more recent authentication is required\"{max_age}"
            ));
        }
        if self.code == "INSUFFICIENT_SCOPE" {
            let scope = self
                .details
                .get("scope")
                .and_then(Value::as_str)
                .map(|scope| format!(", scope=\"{scope}\""))
                .unwrap_or_default();
            return Some(format!("Bearer error=\"insufficient_scope\"{scope}"));
        }
        (self.status == StatusCode::UNAUTHORIZED && self.code.starts_with("TOKEN_"))
            .then(|| "Bearer error=\"invalid_token\"".to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = self.challenge();
        let outcome = crate::observe::Outcome(self.code.into());
        let mut body = Map::new();
        body.insert("code".into(), self.code.into());
        body.insert("message".into(), self.message.into());
        body.extend(self.details);
        let mut response = finish(
            self.status,
            self.retry_after,
            challenge,
            Json(Value::Object(body)).into_response(),
        );
        response.extensions_mut().insert(outcome);
        response
    }
}

/// An [`ApiError`] rendered as an OAuth 2.0 error response (RFC 6749
/// §5.2): `error`, `error_description`, and the library `code` beside
/// them. 401 answers carry `WWW-Authenticate: Bearer` (RFC 6750 §3).
#[derive(Debug)]
pub struct OAuthError(pub ApiError);

impl From<keystead::Error> for OAuthError {
    fn from(e: keystead::Error) -> Self {
        OAuthError(e.into())
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let e = self.0;
        let mut body = json!({
            "error": e.oauth_code,
            "error_description": e.message,
            "code": e.code,
        });
        let challenge = e.challenge().or_else(|| {
            (e.status == StatusCode::UNAUTHORIZED)
                .then(|| format!("Bearer error=\"{}\"", e.oauth_code))
        });
        if let Some(fields) = body.as_object_mut() {
            fields.extend(e.details);
        }
        let mut response = finish(
            e.status,
            e.retry_after,
            challenge,
            Json(body).into_response(),
        );
        response
            .extensions_mut()
            .insert(crate::observe::Outcome(e.code.into()));
        response
    }
}

fn finish(
    status: StatusCode,
    retry_after: Option<u64>,
    challenge: Option<String>,
    mut response: Response,
) -> Response {
    *response.status_mut() = status;
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::UNAUTHORIZED || challenge.is_some() {
        let value = challenge
            .and_then(|c| HeaderValue::from_str(&c).ok())
            .unwrap_or_else(|| HeaderValue::from_static("Bearer"));
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystead::token::TokenError;

    #[test]
    fn library_codes_map_to_statuses() {
        let cases: [(&str, StatusCode); 14] = [
            ("VALIDATION_FAILED", StatusCode::BAD_REQUEST),
            ("INVALID_ENVELOPE", StatusCode::BAD_REQUEST),
            ("TOKEN_EXPIRED", StatusCode::UNAUTHORIZED),
            ("INVALID_CREDENTIALS", StatusCode::UNAUTHORIZED),
            ("REALM_DISABLED", StatusCode::FORBIDDEN),
            ("DEVICE_NOT_FOUND", StatusCode::NOT_FOUND),
            ("GROUP_NOT_FOUND", StatusCode::NOT_FOUND),
            ("NO_KEY_AVAILABLE", StatusCode::NOT_FOUND),
            ("KEY_VERSION_CONFLICT", StatusCode::CONFLICT),
            ("DEVICE_LIMIT_REACHED", StatusCode::CONFLICT),
            ("REALM_NAME_TAKEN", StatusCode::CONFLICT),
            ("TOO_MANY_ATTEMPTS", StatusCode::TOO_MANY_REQUESTS),
            ("STORAGE_BACKEND", StatusCode::INTERNAL_SERVER_ERROR),
            ("SOMETHING_NEW", StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (code, status) in cases {
            assert_eq!(status_for(code), status, "{code}");
        }
    }

    #[test]
    fn every_webauthn_code_has_a_client_status() {
        use keystead::webauthn::WebauthnError as W;
        let cases = [
            (W::NotConfigured, StatusCode::NOT_FOUND),
            (W::PasswordlessNotAllowed, StatusCode::FORBIDDEN),
            (W::CredentialFlagged, StatusCode::FORBIDDEN),
            (W::ChallengeNotFound, StatusCode::CONFLICT),
            (W::ChallengeExpired, StatusCode::CONFLICT),
            (W::CredentialExists, StatusCode::CONFLICT),
            (W::CredentialLimitReached, StatusCode::CONFLICT),
            (W::NoCredentials, StatusCode::CONFLICT),
            (W::ChallengeMismatch, StatusCode::UNAUTHORIZED),
            (W::WrongOrigin, StatusCode::UNAUTHORIZED),
            (W::WrongRpId, StatusCode::UNAUTHORIZED),
            (W::UserNotVerified, StatusCode::UNAUTHORIZED),
            (
                W::InvalidResponse { reason: "x".into() },
                StatusCode::UNAUTHORIZED,
            ),
            (W::UnknownCredential, StatusCode::UNAUTHORIZED),
            (W::SignCountRegression, StatusCode::UNAUTHORIZED),
        ];
        for (e, status) in cases {
            let api: ApiError = keystead::Error::from(e.clone()).into();
            assert_eq!((api.status(), api.code()), (status, e.code()), "{e:?}");
            let expected = match status {
                StatusCode::UNAUTHORIZED => "invalid_grant",
                StatusCode::FORBIDDEN => "access_denied",
                _ => "invalid_request",
            };
            assert_eq!(api.oauth_code, expected, "{e:?}");
        }
        assert_eq!(status_for("MFA_FACTOR_NOT_ALLOWED"), StatusCode::FORBIDDEN);
    }

    #[test]
    fn every_oauth_code_has_a_client_status() {
        use keystead::oauth::OAuthError as O;
        let cases = [
            (O::InvalidClient, StatusCode::UNAUTHORIZED, "invalid_client"),
            (O::AccessDenied, StatusCode::FORBIDDEN, "access_denied"),
            (O::ClientExists, StatusCode::CONFLICT, "invalid_request"),
            (O::ClientNotFound, StatusCode::NOT_FOUND, "invalid_request"),
            (
                O::TransactionNotFound,
                StatusCode::NOT_FOUND,
                "invalid_request",
            ),
            (
                O::InvalidRequest { reason: "x" },
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                O::InvalidRedirectUri,
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                O::UnauthorizedClient,
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
            ),
            (
                O::UnsupportedResponseType,
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
            ),
            (O::InvalidScope, StatusCode::BAD_REQUEST, "invalid_scope"),
            (O::InvalidTarget, StatusCode::BAD_REQUEST, "invalid_target"),
            (
                O::InvalidGrant { reason: "x" },
                StatusCode::BAD_REQUEST,
                "invalid_grant",
            ),
            (O::CodeReused, StatusCode::BAD_REQUEST, "invalid_grant"),
            (O::WrongStep, StatusCode::BAD_REQUEST, "invalid_request"),
        ];
        for (e, status, oauth) in cases {
            let api: ApiError = keystead::Error::from(e.clone()).into();
            assert_eq!((api.status(), api.code()), (status, e.code()), "{e:?}");
            assert_eq!(api.oauth_code, oauth, "{e:?}");
        }
    }

    #[test]
    fn conflict_carries_the_current_version() {
        let e: ApiError =
            keystead::Error::from(DeviceError::KeyVersionConflict { current: 4 }).into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.code(), "KEY_VERSION_CONFLICT");
        assert_eq!(e.details["currentVersion"], 4);
    }

    #[test]
    fn oauth_rendering_uses_the_oauth_code() {
        let e: ApiError = keystead::Error::from(TokenError::InvalidGrant).into();
        let response = e.oauth().into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let e: ApiError = keystead::Error::from(TokenError::Expired).into();
        let response = e.oauth().into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn step_up_is_an_rfc_9470_challenge_in_both_dialects() {
        let stale = || {
            ApiError::from(keystead::Error::from(AuthError::StepUpRequired {
                max_age_secs: 300,
                needs_mfa: true,
            }))
        };
        let want = "Bearer error=\"insufficient_user_authentication\", \
                    error_description=\"a more recent authentication is required\", \
                    max_age=\"300\"";
        for response in [stale().into_response(), stale().oauth().into_response()] {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], want);
        }
        let e = stale();
        assert_eq!(
            (e.details["max_age"].clone(), e.details["needs_mfa"].clone()),
            (json!(300), json!(true))
        );
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let e: ApiError = keystead::StorageError::backend("db at 10.0.0.7 refused").into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "internal error");
    }
}
