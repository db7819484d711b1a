//! Request parsing shared by the route modules: JSON bodies, path
//! parameters, query strings and ids whose failures are the library's
//! `VALIDATION_FAILED` (400) naming the field, like every other bad input
//! — never axum's plain-text rejections, which carry no stable code.

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// A JSON body; a missing or malformed one is a 400 naming `body`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(e) => Err(json_error(&e)),
        }
    }
}

/// A JSON rejection as a 400 (or 413 when the body is too large).
pub fn json_error(e: &JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    ApiError::bad_request("body", e.body_text())
}

/// `413 PAYLOAD_TOO_LARGE`: the body is over the server's limit.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "the request body is too large",
    )
}

/// A raw body (any content type) up to the body limit; too large a one
/// is `413 PAYLOAD_TOO_LARGE`.
#[derive(Debug, Clone)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(e) => Err(ApiError::bad_request("body", e.body_text())),
        }
    }
}

/// The path parameters; one that does not decode (percent-encoded bytes
/// that are not UTF-8) is a 400 naming `path`.
#[derive(Debug, Clone)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathParams(value)),
            Err(e) => Err(rejected("path", e.status(), e.body_text())),
        }
    }
}

/// The query string; a malformed one (a parameter given twice, of the
/// wrong type) is a 400 naming `query`.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryParams(value)),
            Err(e) => Err(rejected("query", e.status(), e.body_text())),
        }
    }
}

/// An extractor's rejection with a stable code: the client's fault as a
/// 400 naming `field`, anything else (a route wired wrong) as it is.
fn rejected(field: &'static str, status: StatusCode, text: String) -> ApiError {
    if status.is_client_error() {
        ApiError::bad_request(field, text)
    } else {
        ApiError::new(status, "INTERNAL_ERROR", text)
    }
}

/// Parse an id from a path or body field, or a 400 naming `field`.
pub fn parse_id<T: FromStr>(field: &'static str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(field, format!("{text:?} is not a valid id")))
}
