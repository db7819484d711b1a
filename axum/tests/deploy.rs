//! What a deployment needs, over real HTTP: health and readiness probes,
//! Prometheus metrics, request ids, CORS for named origins only, and rate
//! limits on credential endpoints that forged forwarding headers cannot
//! dodge and that refuse before anything is written.

mod common;
mod support;

use keystead::realm::MfaPolicy;
use keystead_axum::Backend;
use keystead_axum::limits::RateLimits;
use std::num::NonZeroU32;
use support::realm;

#[tokio::test]
async fn probes_answer_and_readiness_follows_the_store() {
    let server = common::start_on(Backend::Memory).await;
    let (status, body) = common::call(server.http.get(server.url("/healthz"))).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, _) = common::call(server.http.get(server.url("/readyz"))).await;
    assert_eq!(status, 200);
    // The store goes away: not ready (503 with a code), still healthy.
    server.ks().store().close().await.unwrap();
    let (status, body) = common::call(server.http.get(server.url("/readyz"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("STORE_UNAVAILABLE"))
    );
    let (status, _) = common::call(server.http.get(server.url("/healthz"))).await;
    assert_eq!(status, 200);
    // Metrics are off unless configured.
    let (status, body) = common::call(server.http.get(server.url("/metrics"))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("METRICS_DISABLED"))
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_outcome_and_ids_come_back() {
    let server = common::start_configured(Backend::Memory, |c| c.metrics = true).await;
    let (_, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let token = format!("{issuer}/protocol/openid-connect/token");
    let form = [
        ("grant_type", "password"),
        ("client_id", "web"),
        ("username", "nobody"),
        ("password", "wrong"),
    ];
    let response = server
        .http
        .post(&token)
        .header("x-request-id", "trace-me-123")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let status = response.status();
    // invalid_grant: 400 (RFC 6749 §5.2).
    assert_eq!(status, 400, "{}", response.text().await.unwrap());
    // Without one (or with junk), the server makes one.
    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["x-request-id"].len() >= 32);
    let text = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let route = "/realms/{realm_name}/protocol/openid-connect/token";
    assert!(
        text.lines()
            .any(|l| l.starts_with("keystead_http_requests_total")
                && l.contains(route)
                && l.contains("status=\"400\"")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("keystead_outcomes_total")
                && l.contains(route)
                && l.contains("outcome=\"INVALID_CREDENTIALS\"")),
        "{text}"
    );
    assert!(
        text.contains("keystead_http_request_duration_seconds"),
        "{text}"
    );
    // Never a secret or a raw path in a label.
    assert!(!text.contains("wrong") && !text.contains("nobody") && !text.contains("/realms/acme"));
    server.stop().await;
}

#[tokio::test]
async fn cors_answers_named_origins_only() {
    let server = common::start_configured(Backend::Memory, |c| {
        c.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let response = server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/user/mfa"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        let allow = response.headers().get("access-control-allow-origin");
        assert_eq!(
            allow.is_some(),
            allowed,
            "{origin}: {:?}",
            response.headers()
        );
        assert!(
            response
                .headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn credential_endpoints_are_rate_limited_per_address_and_per_username() {
    let server = common::start_configured(Backend::Memory, |c| {
        c.rate_limits = RateLimits {
            per_ip_per_minute: NonZeroU32::new(6),
            per_username_per_minute: NonZeroU32::new(3),
        };
    })
    .await;
    let (_, issuer) = realm(&server, "acme", MfaPolicy::Optional).await;
    let token = format!("{issuer}/protocol/openid-connect/token");
    let attempt = |user: &'static str, forwarded: &'static str| {
        server
            .http
            .post(&token)
            .header("x-forwarded-for", forwarded)
            .header("forwarded", format!("for={forwarded}"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "web"),
                ("username", user),
                ("password", "wrong"),
            ])
            .send()
    };
    // Per username: three tries at alice, from "different" addresses.
    for forwarded in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        assert_eq!(attempt("alice", forwarded).await.unwrap().status(), 400);
    }
    let before = everything(&server).await;
    let refused = attempt("ALICE", "10.0.0.4").await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(
        everything(&server).await,
        before,
        "a refused attempt writes nothing"
    );
    // Per address: the forged headers change nothing — four attempts so
    // far (the refused one counts), two more users use up this client's
    // six, then it is refused whoever it names.
    for user in ["bob", "carol"] {
        assert_eq!(attempt(user, "192.0.2.1").await.unwrap().status(), 400);
    }
    let refused = attempt("erin", "198.51.100.7").await.unwrap();
    assert_eq!(refused.status(), 429);
    // Other routes are not limited.
    let (status, _) = common::call(server.http.get(server.url("/healthz"))).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Every key and value in the server's store.
async fn everything(server: &common::TestServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    server
        .ks()
        .store()
        .scan(b"", None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect()
}
