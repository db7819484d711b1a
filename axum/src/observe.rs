//! What a deployed server tells its operator: a request id on every
//! request and answer, one `tracing` span per request, and Prometheus
//! metrics.
//!
//! * **Request ids.** An incoming `x-request-id` is kept (so a proxy's id
//!   follows the request through) when it is short visible ASCII; otherwise
//!   the server makes a UUID. The answer carries it back.
//! * **Spans** name the method, the *route template* (`/realms/{realm}/…`,
//!   from axum's `MatchedPath`, never the raw path: magic-link and portal
//!   paths carry secrets), the request id, and — when the request ends — the
//!   status and latency. Query strings, headers and bodies are never
//!   logged: they carry bearer tokens, codes and passwords.
//! * **Metrics** (the `metrics` crate's macros; they cost nothing until a
//!   recorder is installed — [`prometheus`] installs one for `/metrics`, an
//!   embedder may install its own): `keystead_http_requests_total{method,
//!   route, status}`, `keystead_http_request_duration_seconds{method, route}`
//!   (histogram), and `keystead_outcomes_total{route, outcome}`, where
//!   `outcome` is `ok` or the library's stable error code of the answer —
//!   so lockouts (`TOO_MANY_ATTEMPTS`), refresh-token reuse
//!   (`TOKEN_REUSED`), bad passwords (`INVALID_CREDENTIALS`) and rate
//!   limiting (`RATE_LIMITED`) are counted per route. The token endpoint
//!   also counts `keystead_token_grants_total{grant_type, outcome}`.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tracing::Instrument as _;

/// The request id header, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The stable error code of an answer, left in its extensions by
/// [`ApiError`](crate::error::ApiError) for the metrics.
#[derive(Debug, Clone)]
pub struct Outcome(pub std::borrow::Cow<'static, str>);

/// The process-wide Prometheus recorder, installed on first call. `Err`
/// when another recorder was installed first (an embedder's own): its
/// exporter then has the metrics.
pub fn prometheus() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .map_err(|e| format!("installing the Prometheus recorder: {e}"))
        })
        .clone()
}

/// The middleware: request id, span, metrics.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| {
            v.len() <= MAX_REQUEST_ID_LEN
                && !v.is_empty()
                && v.as_bytes().iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"))
        });
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        request_id = %id.to_str().unwrap_or("-"),
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!("request failed");
        } else {
            tracing::debug!("request done");
        }
    });
    let outcome = response
        .extensions()
        .get::<Outcome>()
        .map_or(if status.is_success() { "ok" } else { "http" }, |o| &o.0)
        .to_owned();
    let labels = [("method", method.to_string()), ("route", route.clone())];
    metrics::counter!(
        "keystead_http_requests_total",
        &[
            ("method", method.to_string()),
            ("route", route.clone()),
            ("status", status.as_u16().to_string()),
        ]
    )
    .increment(1);
    metrics::histogram!("keystead_http_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    metrics::counter!(
        "keystead_outcomes_total",
        &[("route", route), ("outcome", outcome)]
    )
    .increment(1);
    response.headers_mut().insert(REQUEST_ID, id);
    response
}
