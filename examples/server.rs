//! The example HTTP server: every seed API over keystead.
//!
//! ```sh
//! KEYSTEAD_ADMIN_TOKEN=change-me cargo run --example server -- --db keystead-server.db --listen 127.0.0.1:8080
//! ```
//!
//! `--backend sqlite|sled|memory|postgres` picks the store (`--db` is the
//! file, directory or `postgres://` URL). The key-encryption key comes from
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

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "keystead-server",
    about = "keystead's example HTTP server of the seed APIs"
)]
struct Args {
    /// Database: SQLite file, sled directory or postgres:// URL.
    #[arg(long, default_value = "keystead-server.db")]
    db: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Storage backend.
    #[arg(long, default_value = "sqlite")]
    backend: Backend,
    /// Key file of the embedded backends (default `<db>.kek`).
    #[arg(long)]
    kek_file: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// The audience access tokens must be issued for.
    #[arg(long, default_value = server::DEFAULT_AUDIENCE)]
    audience: String,
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
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        backend: args.backend,
        db: args.db,
        kek_file: args.kek_file,
        admin_token: std::env::var("KEYSTEAD_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(SecretString::new),
        body_limit: args.body_limit,
        audience: args.audience,
    };
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
