//! The OpenAPI document matches the router: served at `/openapi.json` as
//! OpenAPI 3.1; every documented operation reaches a handler (a request to
//! it is not answered by the router's fallback); and every `.route(…)` in
//! the crate's sources, with each method it registers, is documented — no
//! route missing, none invented.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::store::MemoryStore;
use keystead_axum::openapi::ROUTES;
use keystead_axum::{AppState, Config};
use std::collections::BTreeSet;
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
/// handler ran (405, or a 404 with an empty body).
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
    (status == StatusCode::METHOD_NOT_ALLOWED
        || status == StatusCode::NOT_FOUND && bytes.is_empty())
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

/// Every `(method, path literal)` registered with `.route(` in the crate's
/// sources: the literal is the route's path inside its module (before any
/// `nest` prefix), the methods those of its method router.
fn registered() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut dirs = vec![std::path::PathBuf::from(src)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for call in text.split(".route(").skip(1) {
                let Some(literal) = call.trim_start().strip_prefix('"') else {
                    continue;
                };
                let (literal, rest) = literal.split_once('"').unwrap();
                // The method router ends where the `.route(` call does.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let methods = &rest[..end];
                if path.ends_with("extract.rs") {
                    continue; // its doc example's route
                }
                for method in ["get", "post", "put", "patch", "delete"] {
                    let called = methods.match_indices(&format!("{method}(")).any(|(i, _)| {
                        i == 0
                            || !methods.as_bytes()[i - 1].is_ascii_alphanumeric()
                                && methods.as_bytes()[i - 1] != b'_'
                    });
                    if called {
                        found.insert((method.to_uppercase(), literal.to_owned()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_registered_route_is_missing_and_none_is_invented() {
    let registered = registered();
    assert!(
        registered.len() > 50,
        "the scan found the routes: {registered:?}"
    );
    let missing: Vec<String> = registered
        .iter()
        .filter(|(method, literal)| {
            !ROUTES
                .iter()
                .any(|r| r.method == method && r.path.ends_with(literal.as_str()))
        })
        .map(|(method, literal)| format!("{method} {literal}"))
        .collect();
    assert!(
        missing.is_empty(),
        "served but not documented: {missing:#?}"
    );
    let invented: Vec<String> = ROUTES
        .iter()
        .filter(|route| {
            !registered
                .iter()
                .any(|(m, literal)| m == route.method && route.path.ends_with(literal.as_str()))
        })
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    assert!(
        invented.is_empty(),
        "documented but not registered: {invented:#?}"
    );
}
