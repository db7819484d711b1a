//! The example HTTP server: every seed API over keystead.
//!
//! ```sh
//! KEYSTEAD_ADMIN_TOKEN=change-me cargo run --example server -- --db keystead-server.db --listen 127.0.0.1:8080
//! ```
//!
//! `--backend sqlite|sled|memory|postgres` picks the store (`--db` is the
//! file, directory or `postgres://` URL); `--config server.toml` reads the
//! same settings and more (CORS origins, rate limits, metrics) from a
//! file, which the flags override. The key-encryption key comes from
//! `KEYSTEAD_KEK` (base64 of 32 bytes) or, for the embedded backends, a
//! `<db>.kek` file created on first start. SIGINT/SIGTERM shut down
//! gracefully. Logs go to stderr (`RUST_LOG`, default `info`) and never
//! carry secrets.
#![forbid(unsafe_code)]

use clap::Parser;
use keystead::secret::SecretString;
use keystead_axum::{self as server, AppState, Backend, Config};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Command-line arguments. Each overrides the config file, which
/// overrides the defaults (see `keystead_axum::config`).
#[derive(Debug, Parser)]
#[command(
    name = "keystead-server",
    about = "keystead's HTTP server of the seed APIs"
)]
struct Args {
    /// A TOML config file (keys as in `keystead_axum::config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database: SQLite file, sled directory or postgres:// URL
    /// (default `keystead-server.db`).
    #[arg(long)]
    db: Option<String>,
    /// Address to listen on (default `127.0.0.1:8080`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Storage backend: sqlite (default), sled, memory or postgres.
    #[arg(long)]
    backend: Option<Backend>,
    /// Key file of the embedded backends (default `<db>.kek`).
    #[arg(long)]
    kek_file: Option<PathBuf>,
    /// Largest request body, in bytes (default 1 MiB).
    #[arg(long)]
    body_limit: Option<usize>,
    /// The audience access tokens must be issued for.
    #[arg(long)]
    audience: Option<String>,
    /// An origin whose browser front-end may call the APIs (CORS);
    /// repeatable, replaces the file's list.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Serve Prometheus metrics at /metrics.
    #[arg(long)]
    metrics: bool,
}

impl Args {
    /// The config: defaults, then the file, then these flags; the admin
    /// token from `KEYSTEAD_ADMIN_TOKEN` only.
    fn config(self) -> Result<Config, Box<dyn std::error::Error>> {
        let mut config = Config::default();
        if let Some(path) = &self.config {
            config = server::config::ConfigFile::load(path)?.apply(config);
        }
        config.db = self.db.unwrap_or(config.db);
        config.listen = self.listen.unwrap_or(config.listen);
        config.backend = self.backend.unwrap_or(config.backend);
        config.kek_file = self.kek_file.or(config.kek_file);
        config.body_limit = self.body_limit.unwrap_or(config.body_limit);
        config.audience = self.audience.unwrap_or(config.audience);
        if !self.cors_origins.is_empty() {
            config.cors_origins = self.cors_origins;
        }
        config.metrics |= self.metrics;
        config.admin_token = std::env::var("KEYSTEAD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(SecretString::new);
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Args::parse().config()?;
    let kek = match std::env::var("KEYSTEAD_KEK") {
        Ok(text) => Some(server::state::parse_kek(&text)?),
        Err(_) => None,
    };
    let state = AppState::open(&config, kek).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        addr = %listener.local_addr()?,
        backend = ?config.backend,
        admin_api = config.admin_token.is_some(),
        "listening"
    );
    server::serve(listener, state, server::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
