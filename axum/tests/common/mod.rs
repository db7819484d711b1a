//! The end-to-end harness: the example server in-process on an ephemeral
//! loopback port with a temporary database, and a plain HTTP client.
#![allow(dead_code, clippy::missing_panics_doc)]

use keystead::Keystead;
use keystead::id::{RealmId, UserId};
use keystead::secret::SecretString;
use keystead::token::AccessRequest;
use keystead::user::LoginOutcome;
use keystead_axum::{self as server, AppState, Backend, Config};
use serde_json::{Value, json};

/// The admin token every test server uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// The server's state (its library instance, for test setup the HTTP
    /// API does not cover, such as users before the account routes land).
    pub state: AppState,
    /// An HTTP client.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Start a server on SQLite in a temporary directory.
pub async fn start() -> TestServer {
    start_on(Backend::Sqlite).await
}

/// Start a server on `backend`. PostgreSQL runs on the throwaway cluster
/// of `keystead_postgres::testing` (or `KEYSTEAD_TEST_POSTGRES_URL`), in a
/// schema of this server's own.
pub async fn start_on(backend: Backend) -> TestServer {
    start_configured(backend, |_| {}).await
}

/// [`start_on`] with the test config changed by `tweak` first (limits,
/// CORS, metrics).
pub async fn start_configured(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        backend,
        db: dir.path().join("server.db").to_string_lossy().into_owned(),
        kek_file: None,
        admin_token: Some(SecretString::new(ADMIN_TOKEN.into())),
        body_limit: 64 * 1024,
        audience: server::DEFAULT_AUDIENCE.into(),
        // The tests log in far more often than a person: the limits
        // have tests of their own.
        rate_limits: server::limits::RateLimits::off(),
        ..Config::default()
    };
    tweak(&mut config);
    let state = if backend == Backend::Postgres {
        config.db = "postgres (test cluster)".into();
        let store = keystead_postgres::testing::open_in(dir.path())
            .await
            .expect("PostgreSQL test cluster");
        let ks = Keystead::builder()
            .store(store)
            .keys(keystead::crypto::at_rest::StaticKeyProvider::generate().expect("kek"))
            .build()
            .expect("keystead");
        AppState::new(ks, &config)
    } else {
        AppState::open(&config, None).await.expect("open state")
    };
    serve_state(state, dir).await
}

/// Two server instances on ONE PostgreSQL database (same schema, same
/// key-encryption key, separate connection pools and library instances) —
/// the deployment of several instances behind a load balancer.
pub async fn start_pair_on_postgres() -> (TestServer, TestServer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kek = keystead::crypto::at_rest::StaticKeyProvider::generate().expect("kek");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        backend: Backend::Postgres,
        db: "postgres (test cluster)".into(),
        kek_file: None,
        admin_token: Some(SecretString::new(ADMIN_TOKEN.into())),
        body_limit: 64 * 1024,
        audience: server::DEFAULT_AUDIENCE.into(),
        // The tests log in far more often than a person: the limits
        // have tests of their own.
        rate_limits: server::limits::RateLimits::off(),
        ..Config::default()
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let store = keystead_postgres::testing::open_in(dir.path())
            .await
            .expect("PostgreSQL test cluster");
        let ks = Keystead::builder()
            .store(store)
            .keys(kek.clone())
            .build()
            .expect("keystead");
        instances.push(AppState::new(ks, &config));
    }
    let b = instances.pop().expect("two");
    let a = instances.pop().expect("two");
    let second = tempfile::tempdir().expect("temp dir");
    (serve_state(a, dir).await, serve_state(b, second).await)
}

/// Serve `state` on an ephemeral loopback port.
async fn serve_state(state: AppState, dir: tempfile::TempDir) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    TestServer {
        base,
        admin_token: ADMIN_TOKEN.into(),
        state,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
        _dir: dir,
    }
}

impl TestServer {
    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The library instance behind the server.
    pub fn ks(&self) -> &Keystead {
        &self.state.ks
    }

    /// Create a realm through `POST /admin/realms`; returns its id.
    pub async fn create_realm(&self, name: &str) -> RealmId {
        let response = self
            .http
            .post(self.url("/admin/realms"))
            .bearer_auth(&self.admin_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 201, "create realm {name}");
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").parse().expect("realm id")
    }

    /// A user of `realm` with a fresh access token for the server's
    /// audience (made through the library: the login routes belong to
    /// other seeds).
    pub async fn user_with_token(&self, realm: RealmId, username: &str) -> (UserId, String) {
        let users = self.ks().users(realm);
        let password = "correct horse battery staple";
        let user = users
            .register(username, None, SecretString::new(password.into()))
            .await
            .expect("register user");
        let LoginOutcome::Authenticated(session) = users
            .authenticate(username, SecretString::new(password.into()))
            .await
            .expect("login")
        else {
            panic!("no MFA in test realms");
        };
        // The tests' own first-party client, for the server's audience and
        // its APIs.
        let api_scopes: Vec<String> = server::auth::API_SCOPES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let registered = self
            .ks()
            .oauth(realm)
            .create_client(keystead::oauth::NewClient::first_party(
                "e2e",
                self.state.audience.to_string(),
                api_scopes.clone(),
            ))
            .await;
        if let Err(e) = registered {
            assert_eq!(e.code(), "OAUTH_CLIENT_EXISTS", "register the e2e client");
        }
        let tokens = self
            .ks()
            .tokens(realm)
            .issue(session.id, &AccessRequest::public("e2e", api_scopes))
            .await
            .expect("issue");
        (user.id, tokens.access_token.expose().to_owned())
    }

    /// Stop gracefully and wait until the server has shut down.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("graceful shutdown within 10 s")
                .expect("server task")
                .expect("serve");
        }
    }
}

/// A parsed server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:`
    pub id: Option<String>,
    /// `event:`
    pub event: Option<String>,
    /// `data:` lines joined by `\n`.
    pub data: String,
}

/// Reads server-sent events off a streaming response.
pub struct SseReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    /// Wrap a `text/event-stream` response.
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "SSE status");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); panics after 10 s.
    pub async fn next(&mut self) -> SseEvent {
        use futures::StreamExt as _;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                };
                let mut has_field = false;
                for line in block.lines() {
                    let Some((field, value)) = line.split_once(':') else {
                        continue;
                    };
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => {
                            event.id = Some(value.to_owned());
                            has_field = true;
                        }
                        "event" => {
                            event.event = Some(value.to_owned());
                            has_field = true;
                        }
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                            has_field = true;
                        }
                        _ => {}
                    }
                }
                if has_field {
                    return event;
                }
                continue;
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), self.body.next())
                .await
                .expect("an SSE event within 10 s")
                .expect("stream still open")
                .expect("chunk");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

/// A JSON call: `(status, body or Null)`.
pub async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
