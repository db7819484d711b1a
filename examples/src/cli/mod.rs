//! The logic of `keystead-cli`, a custom front-end that acts as a device of
//! the example server (seed 000) and as a user of its account endpoints.
//!
//! Everything the binary (`examples/cli.rs`) does is a method of [`Cli`],
//! so the end-to-end tests call the same code against an in-process
//! server without spawning processes.
//!
//! State lives in a home directory (default `~/.keystead-cli`), every file
//! readable by its owner only (mode 0600):
//!
//! * `session.json` — the server's access (and refresh) token after
//!   `login`;
//! * `devices/<groupId>.json` — this device's X25519 **secret key** for a
//!   group, with the realm, group and device ids its envelopes are bound
//!   to. The server never sees it: envelopes are opened and sealed here
//!   with [`keystead::client::DeviceClient`].

pub mod account;
pub mod device;
pub mod files;

use keystead::secret::SecretString;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("server answered {status}: {code}: {message}")]
    Server {
        /// HTTP status.
        status: StatusCode,
        /// The stable code (`KEY_VERSION_CONFLICT`, `invalid_grant`, …).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or answered something unreadable.
    #[error("talking to the server failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A key could not be used, or an envelope did not open.
    #[error(transparent)]
    Crypto(#[from] keystead::CryptoError),
    /// The command can't run in the current state (not logged in, no
    /// device for the group, unexpected answer, …).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The server's stable code, if the server refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            CliError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Administrator credentials for the seed's admin-only paths (rotation,
/// revocation): the server's admin token and the realm's name.
#[derive(Debug)]
pub struct AdminAuth {
    /// `KEYSTEAD_ADMIN_TOKEN` of the server.
    pub token: SecretString,
    /// The realm's name (sent as `x-keystead-realm`).
    pub realm: String,
}

/// A CLI bound to one server and one home directory.
#[derive(Debug, Clone)]
pub struct Cli {
    server: String,
    home: PathBuf,
    http: reqwest::Client,
}

impl Cli {
    /// A CLI for the server at `server` (`http://host:port`) keeping its
    /// files in `home`.
    pub fn new(server: &str, home: impl Into<PathBuf>) -> Result<Self, CliError> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--server must be an http:// or https:// URL, not {server:?}"
            )));
        }
        Ok(Self {
            server,
            home: home.into(),
            http: reqwest::Client::new(),
        })
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// A request with the saved access token.
    fn authed(&self, method: Method, path: &str) -> Result<RequestBuilder, CliError> {
        let session = self.session()?;
        Ok(self
            .http
            .request(method, self.url(path))
            .bearer_auth(session.access_token.expose()))
    }

    /// A request on a seed admin path.
    fn admin(&self, method: Method, path: &str, admin: &AdminAuth) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(admin.token.expose())
            .header("x-keystead-realm", &admin.realm)
    }
}

/// Send `request`; a success status with a JSON body decodes into `T`
/// (`Value::Null` for an empty body), an error status becomes
/// [`CliError::Server`] with the body's `code` (or OAuth `error`).
async fn send<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, CliError> {
    let response = request.send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        return Err(CliError::Server {
            status,
            code: field("code")
                .or_else(|| field("error"))
                .unwrap_or_else(|| status.as_str().to_owned()),
            message: field("message")
                .or_else(|| field("error_description"))
                .unwrap_or(text),
        });
    }
    let text = if text.trim().is_empty() {
        "null"
    } else {
        &text
    };
    serde_json::from_str(text)
        .map_err(|e| CliError::Usage(format!("unexpected answer from the server: {e}")))
}
