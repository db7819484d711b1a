//! Probes and metrics for whoever runs the server: `GET /healthz` (the
//! process answers), `GET /readyz` (the store answers too) and
//! `GET /metrics` (Prometheus text, when [`AppState::metrics`] is set).
//!
//! `/readyz` reads one key from the store within [`READY_TIMEOUT`]: a
//! load balancer takes an instance whose database is down or unreachable
//! out of rotation (`503 STORE_UNAVAILABLE`) and back once it answers.
//! Neither probe needs credentials or says more than up or down.

use super::error::ApiError;
use super::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use std::time::Duration;

/// How long `/readyz` waits for the store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The probe and metrics routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // Any key will do: the read proves a round trip to the store.
    let probe = tokio::time::timeout(READY_TIMEOUT, state.ks.store().get(b"keystead-readyz"));
    match probe.await {
        Ok(Ok(_)) => Ok(axum::Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe: the store failed");
            Err(unavailable("the store failed"))
        }
        Err(_) => Err(unavailable("the store did not answer in time")),
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "STORE_UNAVAILABLE",
        message,
    )
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let handle = state.metrics.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "METRICS_DISABLED",
            "metrics are not enabled on this server",
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}
