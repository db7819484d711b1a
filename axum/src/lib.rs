//! keystead over HTTP, for axum: the library's calls mapped onto the seed
//! APIs' paths, methods, field names and status codes.
//!
//! * [`router`] merges one route module per seed — [`authlance`] (seed
//!   000, devices), [`account`] (001/002), [`oidc`] (003), [`portal`]
//!   (004) — with the admin bootstrap ([`admin`]);
//! * [`serve`] runs it on a listener until a shutdown signal, then drains
//!   requests and ends live event streams so the process can exit;
//! * [`state::AppState`] holds the library instance and the server's
//!   settings; [`auth`] turns bearer tokens into a verified caller and a
//!   realm; [`error::ApiError`] turns library errors into HTTP answers that
//!   carry the library's stable codes.
//!
//! Every rule stays in the library (`keystead`): this crate adds only the
//! HTTP concerns — extraction of bearer tokens, status codes, body limits,
//! logs — so an app that merges one of these routers, or only uses the
//! extractors, gets the same decisions as one that calls the library.
#![forbid(unsafe_code)]

pub mod account;
pub mod admin;
pub mod auth;
pub mod authlance;
pub mod body;
pub mod config;
pub mod directory;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod observe;
pub mod oidc;
pub mod openapi;
pub mod portal;
pub mod rejections;
pub mod state;
pub mod streams;

pub use state::{AppState, Backend};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use std::future::Future;
use std::net::SocketAddr;
use tower_http::limit::RequestBodyLimitLayer;

/// The default request body limit: generous for a 1000-device rotation
/// (each envelope is ~120 bytes, base64 in JSON), small enough that a
/// client can't make the server buffer megabytes.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The `aud` the server expects in access tokens, unless configured.
pub const DEFAULT_AUDIENCE: &str = "keystead-server";

/// How the server is set up: where it listens, which store it opens, and
/// the limits it enforces.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080` by default).
    pub listen: SocketAddr,
    /// Which storage backend to open.
    pub backend: Backend,
    /// File or directory of the embedded backends, or the `postgres://`
    /// URL; ignored by `memory`.
    pub db: String,
    /// Where the key-encryption key lives when `KEYSTEAD_KEK` is unset
    /// (embedded backends only; `None`: next to the database as
    /// `<db>.kek`).
    pub kek_file: Option<std::path::PathBuf>,
    /// The admin bearer token (`KEYSTEAD_ADMIN_TOKEN`); `None` disables the
    /// admin API.
    pub admin_token: Option<keystead::secret::SecretString>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// The audience access tokens must be issued for.
    pub audience: String,
    /// Rate limits on the credential endpoints ([`limits`]).
    pub rate_limits: limits::RateLimits,
    /// Origins (`https://app.example`) whose browser front-ends may call
    /// the APIs (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// Serve Prometheus metrics at `/metrics` ([`observe`]).
    pub metrics: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            backend: Backend::Sqlite,
            db: "keystead-server.db".into(),
            kek_file: None,
            admin_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            audience: DEFAULT_AUDIENCE.into(),
            rate_limits: limits::RateLimits::default(),
            cors_origins: Vec::new(),
            metrics: false,
        }
    }
}

/// Every route of the server, with the body limit, rate limits, CORS,
/// request ids, tracing and metrics.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let limiter = state.limiter.clone();
    let cors = cors(&state.cors_origins);
    let routes = Router::new()
        .merge(admin::routes())
        .merge(authlance::routes())
        .merge(account::routes())
        .merge(oidc::routes())
        .merge(portal::routes())
        .merge(health::routes())
        .merge(openapi::routes())
        .layer(axum::middleware::from_fn(move |request, next| {
            limits::limit(limiter.clone(), request, next)
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn(rejections::normalize))
        .layer(axum::middleware::from_fn(observe::observe));
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
    .with_state(state)
}

/// The CORS layer for `origins`, or none when the list is empty (then a
/// browser on another origin cannot read any answer). Bearer tokens only,
/// no cookies: credentials are not allowed.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(auth::REALM_HEADER),
            ])
            .expose_headers([
                header::WWW_AUTHENTICATE,
                header::RETRY_AFTER,
                observe::REQUEST_ID,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Serve `state` on `listener` until `shutdown` completes, then stop
/// accepting, end the live event streams and wait for in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests and closing event streams");
            // SSE streams never end on their own; they watch this flag.
            closing.send_replace(true);
        })
        .await
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM: the shutdown future
/// the binary passes to [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: never resolve from here.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
