//! The safety net under every route: an answer that axum itself made — its
//! extractors' plain-text rejections (a query string that does not
//! deserialize, a path segment that is not UTF-8), the router's empty 404
//! and 405, the body-limit layer's 413 — becomes an [`ApiError`] with a
//! stable code, in the OAuth dialect on the OAuth endpoints. Handlers
//! already answer that way; this catches what reaches no handler.
//!
//! An answer is axum's when it is a 4xx, plain text or empty, without the
//! [`Outcome`] every [`ApiError`] and OAuth error carries.

use super::body::too_large;
use super::error::ApiError;
use super::observe::Outcome;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

/// Largest rejection text kept as the message.
const MAX_MESSAGE: usize = 512;

/// The middleware.
pub async fn normalize(request: Request, next: Next) -> Response {
    let oauth = super::error::oauth_route(request.uri().path());
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() || response.extensions().get::<Outcome>().is_some() {
        return response;
    }
    // axum's own answers are plain text or empty; a handler's JSON (an
    // MFA step's 403 with its token) or HTML page is left alone.
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.starts_with("text/plain"));
    if !plain {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), MAX_MESSAGE)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::new(status, "ROUTE_NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "METHOD_NOT_ALLOWED",
            "this route does not take that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "UNSUPPORTED_MEDIA_TYPE",
            non_empty(text, "wrong content type"),
        ),
        _ => ApiError::bad_request("request", non_empty(text, "malformed request")),
    };
    let mut response = error.respond(oauth);
    if let Some(allow) = allow {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    response
}

fn non_empty(text: String, otherwise: &str) -> String {
    if text.trim().is_empty() {
        otherwise.to_owned()
    } else {
        text
    }
}
