//! Request parsing shared by the route modules: JSON bodies and path ids
//! whose failures are the library's `VALIDATION_FAILED` (400) naming the
//! field, like every other bad input.

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
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
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(e.status(), "PAYLOAD_TOO_LARGE", e.body_text());
    }
    ApiError::bad_request("body", e.body_text())
}

/// Parse an id from a path or body field, or a 400 naming `field`.
pub fn parse_id<T: FromStr>(field: &'static str, text: &str) -> Result<T, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(field, format!("{text:?} is not a valid id")))
}
