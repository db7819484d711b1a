//! The server's shared state and how it opens its storage backend.

use super::Config;
use keystead::Keystead;
use keystead::crypto::at_rest::{Kek, KeyId, StaticKeyProvider};
use keystead::secret::SecretString;
use keystead::store::{MemoryStore, StorageError, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

/// The storage backends the server can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// SQLite file (the embedded default).
    Sqlite,
    /// sled directory.
    Sled,
    /// In-memory: everything is lost on exit (tests, demos).
    Memory,
    /// PostgreSQL (`--db postgres://…`), for several instances sharing one
    /// state.
    Postgres,
}

impl Backend {
    /// Every backend, by the name [`FromStr`](std::str::FromStr) accepts.
    pub const ALL: [(&'static str, Backend); 4] = [
        ("sqlite", Backend::Sqlite),
        ("sled", Backend::Sled),
        ("memory", Backend::Memory),
        ("postgres", Backend::Postgres),
    ];
}

impl std::str::FromStr for Backend {
    type Err = String;

    /// `sqlite`, `sled`, `memory` or `postgres`, as flags and config files
    /// spell them.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, backend)| *backend)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown backend `{name}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// What every handler shares. Cheap to clone: the library instance is
/// already reference-counted, the rest sits behind `Arc`s.
#[derive(Clone)]
pub struct AppState {
    /// The library instance.
    pub ks: Keystead,
    /// How the seed routes verify bearer tokens: by issuer, for
    /// [`audience`](Self::audience).
    pub auth: crate::extract::Auth,
    /// The admin bearer token; `None` disables the admin API.
    pub admin_token: Option<Arc<SecretString>>,
    /// The audience access tokens must carry (`aud`).
    pub audience: Arc<str>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Set to `true` when the server shuts down, so endless responses (SSE)
    /// end and graceful shutdown can finish.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Open event streams per user ([`super::streams`]).
    pub streams: super::streams::StreamCounts,
    /// The most event streams one user may hold open (default
    /// [`DEFAULT_MAX_STREAMS_PER_USER`]).
    pub max_streams_per_user: usize,
    /// The rate limits' buckets ([`crate::limits`]).
    pub limiter: crate::limits::Limiter,
    /// Origins allowed by CORS.
    pub cors_origins: Arc<[String]>,
    /// The Prometheus exporter behind `/metrics`; `None` answers 404.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// How many event streams a user may hold open by default: a few devices
/// and tabs, not a connection flood.
pub const DEFAULT_MAX_STREAMS_PER_USER: usize = 8;

impl axum::extract::FromRef<AppState> for crate::extract::Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("admin_api", &self.admin_token.is_some())
            .field("audience", &self.audience)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State around an already built library instance (tests, embedders).
    pub fn new(ks: Keystead, config: &Config) -> Self {
        let audience: Arc<str> = Arc::from(config.audience.as_str());
        Self {
            auth: crate::extract::Auth::by_issuer(ks.clone(), Arc::clone(&audience)),
            ks,
            admin_token: config.admin_token.clone().map(Arc::new),
            audience,
            body_limit: config.body_limit,
            closing: Arc::new(tokio::sync::watch::channel(false).0),
            streams: super::streams::StreamCounts::default(),
            max_streams_per_user: DEFAULT_MAX_STREAMS_PER_USER,
            limiter: crate::limits::Limiter::new(config.rate_limits, config.body_limit),
            cors_origins: config.cors_origins.clone().into(),
            metrics: if config.metrics {
                crate::observe::prometheus()
                    .map_err(|e| tracing::warn!("metrics disabled: {e}"))
                    .ok()
            } else {
                None
            },
        }
    }

    /// Open the configured backend and build the library instance on it.
    ///
    /// The key-encryption key comes from `kek` when given (the binary reads
    /// `KEYSTEAD_KEK`), else from the key file of an embedded backend
    /// (created with mode 0600 on first start), else — for `memory` — is
    /// generated. PostgreSQL needs an explicit key: instances sharing a
    /// database must share it.
    ///
    /// Password hashing needs no setup here: the library runs argon2 on its
    /// default [`BlockingPool`](keystead::BlockingPool) threads, never on
    /// tokio's workers, so a burst of logins can't stall other requests.
    pub async fn open(config: &Config, kek: Option<Kek>) -> Result<Self, keystead::Error> {
        let store: Arc<dyn Store> = match config.backend {
            Backend::Sqlite => Arc::new(keystead_sqlite::SqliteStore::open(&config.db).await?),
            Backend::Sled => Arc::new(keystead_sled::SledStore::open(&config.db).await?),
            Backend::Memory => Arc::new(MemoryStore::new()),
            Backend::Postgres => {
                Arc::new(keystead_postgres::PostgresStore::connect(&config.db).await?)
            }
        };
        let kek = match (kek, config.backend) {
            (Some(kek), _) => kek,
            (None, Backend::Memory) => Kek::generate()?,
            (None, Backend::Postgres) => {
                return Err(keystead::ValidationError::new(
                    "KEYSTEAD_KEK",
                    "PostgreSQL needs the key-encryption key from KEYSTEAD_KEK \
                     (base64 of 32 bytes), shared by every instance",
                )
                .into());
            }
            (None, Backend::Sqlite | Backend::Sled) => {
                let path = config
                    .kek_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("{}.kek", config.db)));
                load_or_create_kek(&path)?
            }
        };
        let ks = Keystead::builder()
            .shared_store(store)
            .keys(StaticKeyProvider::new(KeyId::new("server-kek")?, kek))
            .build()?;
        Ok(Self::new(ks, config))
    }
}

/// Parse a KEK given as base64 (standard alphabet) of 32 bytes.
pub fn parse_kek(text: &str) -> Result<Kek, keystead::Error> {
    use base64::Engine as _;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| keystead::ValidationError::new("KEYSTEAD_KEK", e.to_string()))?,
    );
    Ok(Kek::from_bytes(&bytes)?)
}

/// Read the raw 32-byte KEK at `path`, or create it (mode 0600) with fresh
/// random bytes. A file of the wrong size is an error, never overwritten:
/// losing the KEK makes every sealed secret unreadable.
fn load_or_create_kek(path: &Path) -> Result<Kek, keystead::Error> {
    let backend = |e: std::io::Error| {
        keystead::Error::from(StorageError::backend(format!(
            "key file {}: {e}",
            path.display()
        )))
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            Ok(Kek::from_bytes(&bytes)?)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // 32 fresh random bytes from the library's CSPRNG.
            let bytes = keystead::client::DeviceClient::new_group_key()?;
            write_private(path, bytes.expose()).map_err(backend)?;
            Ok(Kek::from_bytes(bytes.expose())?)
        }
        Err(e) => Err(backend(e)),
    }
}

/// Create `path` readable by its owner only and write `bytes`; fails if it
/// exists.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
