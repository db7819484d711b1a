//! The server's config file (TOML), beside its flags and environment
//! variables. Precedence, lowest first: built-in defaults, the file,
//! environment variables (`KEYSTEAD_ADMIN_TOKEN`, `KEYSTEAD_KEK` — secrets
//! live only there, never in the file), flags.
//!
//! ```toml
//! listen = "0.0.0.0:8080"
//! backend = "postgres"          # sqlite | sled | memory | postgres
//! db = "postgres://keystead@db/keystead"
//! audience = "keystead-server"
//! body_limit = 1048576
//! cors_origins = ["https://app.example"]
//! metrics = true
//!
//! [rate_limits]
//! per_ip_per_minute = 60
//! per_username_per_minute = 10
//! ```
//!
//! Unknown keys are refused (a typo must not silently fall back to a
//! default), and so is a file that names a secret.

use super::{Backend, Config, limits::RateLimits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// What a config file may set; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// [`Config::listen`].
    pub listen: Option<SocketAddr>,
    /// [`Config::backend`].
    pub backend: Option<Backend>,
    /// [`Config::db`].
    pub db: Option<String>,
    /// [`Config::kek_file`].
    pub kek_file: Option<PathBuf>,
    /// [`Config::body_limit`].
    pub body_limit: Option<usize>,
    /// [`Config::audience`].
    pub audience: Option<String>,
    /// [`Config::cors_origins`].
    pub cors_origins: Option<Vec<String>>,
    /// [`Config::metrics`].
    pub metrics: Option<bool>,
    /// [`Config::rate_limits`]; a missing key inside keeps its default.
    pub rate_limits: Option<RateLimits>,
}

/// Why a config file was refused: the path and the problem (for TOML
/// errors, with line and column).
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {problem}")]
pub struct ConfigError {
    path: String,
    problem: String,
}

impl ConfigFile {
    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let error = |problem: String| ConfigError {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        Self::parse(&text).map_err(error)
    }

    /// Parse a file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for origin in file.cors_origins.iter().flatten() {
            let parsed =
                url::Url::parse(origin).map_err(|e| format!("cors_origins: {origin}: {e}"))?;
            // An origin is scheme://host[:port], nothing else: anything
            // more would never equal a browser's Origin header.
            if parsed.origin().ascii_serialization() != *origin {
                return Err(format!(
                    "cors_origins: {origin} is not an origin (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        Ok(file)
    }

    /// `config` with every key this file sets replaced.
    pub fn apply(self, mut config: Config) -> Config {
        let Self {
            listen,
            backend,
            db,
            kek_file,
            body_limit,
            audience,
            cors_origins,
            metrics,
            rate_limits,
        } = self;
        config.listen = listen.unwrap_or(config.listen);
        config.backend = backend.unwrap_or(config.backend);
        config.db = db.unwrap_or(config.db);
        config.kek_file = kek_file.or(config.kek_file);
        config.body_limit = body_limit.unwrap_or(config.body_limit);
        config.audience = audience.unwrap_or(config.audience);
        config.cors_origins = cors_origins.unwrap_or(config.cors_origins);
        config.metrics = metrics.unwrap_or(config.metrics);
        config.rate_limits = rate_limits.unwrap_or(config.rate_limits);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn a_file_sets_what_it_names_and_keeps_the_rest() {
        let file = ConfigFile::parse(
            r#"
            backend = "memory"
            cors_origins = ["https://app.example", "http://localhost:3000"]
            metrics = true
            [rate_limits]
            per_ip_per_minute = 5
            "#,
        )
        .unwrap();
        let config = file.apply(Config::default());
        assert_eq!(config.backend, Backend::Memory);
        assert!(config.metrics);
        assert_eq!(config.cors_origins.len(), 2);
        assert_eq!(
            config.rate_limits.per_ip_per_minute.map(NonZeroU32::get),
            Some(5)
        );
        // Unnamed inside the table: its default.
        assert_eq!(
            config
                .rate_limits
                .per_username_per_minute
                .map(NonZeroU32::get),
            Some(10)
        );
        assert_eq!(config.audience, Config::default().audience);
    }

    /// The README's example config file is one this parser takes.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let section = readme.split("### Deploying the server").nth(1).unwrap();
        let block = section.split("```toml\n").nth(1).unwrap();
        let block = block.split("```").next().unwrap();
        let config = ConfigFile::parse(block).unwrap().apply(Config::default());
        assert_eq!(config.backend, Backend::Postgres);
        assert_eq!(config.cors_origins, ["https://app.example"]);
        assert!(config.metrics);
    }

    /// So is the example in these docs.
    #[test]
    fn the_module_docs_example_parses() {
        let docs: String = include_str!("config.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(docs.contains("backend"));
        ConfigFile::parse(&docs).unwrap();
    }

    #[test]
    fn typos_secrets_bad_values_and_non_origins_are_refused() {
        for (text, names) in [
            ("bakend = \"sqlite\"", "bakend"),
            ("admin_token = \"x\"", "admin_token"),
            ("backend = \"mongodb\"", "mongodb"),
            ("listen = \"localhost\"", "listen"),
            ("body_limit = -1", "body_limit"),
            ("cors_origins = [\"https://app.example/\"]", "not an origin"),
            ("cors_origins = [\"*\"]", "cors_origins"),
            ("[rate_limits]\nper_ip_per_minute = 0", "per_ip_per_minute"),
        ] {
            let error = ConfigFile::parse(text).unwrap_err();
            assert!(error.contains(names), "{text}: {error}");
        }
    }
}
