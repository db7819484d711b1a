//! The OpenAPI document matches the router: served at `/openapi.json` as
//! OpenAPI 3.1, and every documented operation reaches a handler (a
//! request to it is not answered by the router's fallback). That no route
//! is missing and none invented is `bad_input.rs`'s
//! `the_openapi_document_lists_exactly_these_routes`, against its route
//! table, which it holds to every `.route(…)` in the sources.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::store::MemoryStore;
use keystead_axum::openapi::ROUTES;
use keystead_axum::{AppState, Config};
use tower::ServiceExt as _;

fn app() -> axum::Router {
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    keystead_axum::router(AppState::new(ks, &Config::default()))
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1() {
    let response = app()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, ROUTES.len(), "one operation per route");
}

/// A concrete path for a template: every `{param}` a syntactically valid
/// id (so a handler, not the router, decides what is missing).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "0190a4b0-0000-7000-8000-000000000000"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The router's own answer to `method path`: `Some(status)` when no
/// handler ran — a 405 or 404 with the codes the router's answers get
/// (`METHOD_NOT_ALLOWED`, `ROUTE_NOT_FOUND`).
async fn unrouted(app: &axum::Router, method: &str, path: &str) -> Option<StatusCode> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    matches!(
        body["code"].as_str(),
        Some("METHOD_NOT_ALLOWED" | "ROUTE_NOT_FOUND")
    )
    .then_some(status)
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let app = app();
    // The check tells the router's answers from a handler's.
    assert_eq!(
        unrouted(&app, "GET", "/no-such-route").await,
        Some(StatusCode::NOT_FOUND)
    );
    assert_eq!(
        unrouted(&app, "DELETE", "/healthz").await,
        Some(StatusCode::METHOD_NOT_ALLOWED)
    );
    for route in ROUTES {
        assert_eq!(
            unrouted(&app, route.method, &concrete(route.path)).await,
            None,
            "{} {} is not routed",
            route.method,
            route.path
        );
    }
}
