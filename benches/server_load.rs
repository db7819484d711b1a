//! A load run of the example server (issue 9, "Measure").
//!
//! The server (`keystead_axum::serve`) runs in-process on a
//! loopback ephemeral port, once on SQLite in a temporary directory (the
//! embedded default, `synchronous=FULL`) and once on the in-memory store,
//! and is driven over real HTTP by [`CONCURRENCY`] workers, each with its
//! own reqwest client and so its own keep-alive connection:
//!
//! * `password-default` — `POST …/protocol/openid-connect/token`,
//!   `grant_type=password`, in a realm at the default argon2id cost
//!   (m=19456 KiB, t=2, p=1);
//! * `password-cheap` — the same in a realm at argon2id's minimum cost
//!   (m=8 KiB, t=1, p=1), which leaves what the token endpoint costs
//!   besides hashing;
//! * `refresh` — `grant_type=refresh_token`, each worker rotating its own
//!   refresh-token chain;
//! * `introspect` — `POST …/token/introspect` of a user's access token,
//!   authorised by a resource server's access token with the `introspect`
//!   scope (as an RFC 7662 caller would be);
//! * `heartbeat` — `POST …/devices/{deviceId}/heartbeat`, round-robin over
//!   the [`DEVICES`] devices of one group, registered over HTTP first.
//!
//! Every workload also runs as the library call its handler makes —
//! `Tokens::exchange` (password and refresh grants), `Tokens::introspect`,
//! `Devices::heartbeat` — from the same number of tasks on the server's
//! runtime, in the same run, so the ratio shows what HTTP and the handler
//! add (routing, body parsing, the caller's token check, JSON, the
//! connection). Each pair also runs with one worker, where the latency
//! difference is the HTTP layer's per-request share without queueing;
//! there a third variant, `handler`, makes every library call the handler
//! makes (realm lookup, the caller's token check, membership and ownership
//! reads, then the core call) without HTTP, splitting that share into the
//! transport's part and the handler's own checks.
//!
//! Why not criterion: a load run reports throughput and p50/p99 under a
//! fixed concurrency, not the median of one call. `keystead_benches::load`
//! is a closed-loop driver: each worker sends its next request when the
//! previous one answered, each phase is bounded by a request count and a
//! duration, and every answer is checked (a run that measured errors
//! fails). A workload's variants (HTTP, handler, library; 16 workers and
//! one) run interleaved in ten rounds, each pooling its samples over the
//! rounds, so load from other jobs on a shared machine hits every variant
//! alike. The whole bench takes about 90 s.
//!
//! `cargo bench -p keystead-benches --bench server_load` runs it; extra
//! arguments filter phases by substring (`… -- sqlite/refresh`). Without
//! `--bench` (e.g. `cargo test --benches`) it runs a short smoke pass.
//!
//! Runtimes: the server has its own 2-worker tokio runtime (the machine
//! has 2 cores), the HTTP clients a 1-worker runtime of their own, so the
//! client's CPU is visible as competition, as it would be with `oha` on
//! the same machine.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keystead::Keystead;
use keystead::crypto::DeviceSecretKey;
use keystead::device::{Devices, NewGroup};
use keystead::id::{DeviceId, GroupId, RealmId};
use keystead::realm::RealmSettings;
use keystead::secret::SecretString;
use keystead::token::{AccessRequest, ExchangeOutcome, Grant, TokenResponse, Tokens};
use keystead_axum::authlance::PREFIX;
use keystead_axum::{self as server, AppState, Backend, Config, directory};
use keystead_benches::load::{BoxError, Op, OpFuture, Plan, Summary, cpu_time, measure};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// Concurrent clients (connections) of the concurrent phases.
const CONCURRENCY: usize = 16;
/// Devices registered in the heartbeat group.
const DEVICES: usize = 1_000;
/// The OAuth client id every grant names.
const CLIENT_ID: &str = "load";
/// The realm at argon2id's default cost.
const DEFAULT_REALM: &str = "load-default";
/// The realm at argon2id's minimum cost.
const CHEAP_REALM: &str = "load-cheap";
/// The token endpoint, under `/realms/{realm}`.
const TOKEN_PATH: &str = "/protocol/openid-connect/token";
/// The introspection endpoint, under `/realms/{realm}`.
const INTROSPECT_PATH: &str = "/protocol/openid-connect/token/introspect";

fn username(i: usize) -> String {
    format!("user-{i:02}")
}

fn password(i: usize) -> String {
    format!("load-password-{i:02}")
}

/// What a phase loads the server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    PasswordDefault,
    PasswordCheap,
    Refresh,
    Introspect,
    Heartbeat,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::PasswordDefault,
        Workload::PasswordCheap,
        Workload::Refresh,
        Workload::Introspect,
        Workload::Heartbeat,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::PasswordDefault => "password-default",
            Workload::PasswordCheap => "password-cheap",
            Workload::Refresh => "refresh",
            Workload::Introspect => "introspect",
            Workload::Heartbeat => "heartbeat",
        }
    }

    /// The phases of the workload. At the default argon2 cost the hash is
    /// the whole request, so one concurrent pair says all there is.
    fn phases(self) -> &'static [(Via, usize)] {
        const FULL: &[(Via, usize)] = &[
            (Via::Http, CONCURRENCY),
            (Via::Library, CONCURRENCY),
            (Via::Http, 1),
            (Via::Handler, 1),
            (Via::Library, 1),
        ];
        const CONCURRENT: &[(Via, usize)] =
            &[(Via::Http, CONCURRENCY), (Via::Library, CONCURRENCY)];
        match self {
            Workload::PasswordDefault => CONCURRENT,
            _ => FULL,
        }
    }
}

/// How a phase reaches the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Over HTTP, through the server.
    Http,
    /// Every library call the server's handler makes for the request
    /// (realm lookup, the caller's token check, membership and ownership
    /// reads, the core call), without HTTP: the difference to [`Via::Http`]
    /// is the transport (hyper, axum's routing and extractors, the client).
    Handler,
    /// The core call alone.
    Library,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Handler => "handler",
            Via::Library => "library",
        }
    }
}

/// The bounds of a run: the full bench, or a smoke pass.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    concurrent_phase: Duration,
    serial_phase: Duration,
    max_requests: u64,
    devices: usize,
    warmup: u32,
    serial_warmup: u32,
    /// Rounds a workload's variants are interleaved in; each round runs a
    /// variant for this share of its duration and request bounds.
    rounds: u32,
}

impl Bounds {
    const FULL: Bounds = Bounds {
        concurrent_phase: Duration::from_secs(2),
        serial_phase: Duration::from_millis(1_500),
        max_requests: 100_000,
        devices: DEVICES,
        warmup: 2,
        serial_warmup: 20,
        rounds: 10,
    };
    const SMOKE: Bounds = Bounds {
        concurrent_phase: Duration::from_millis(200),
        serial_phase: Duration::from_millis(100),
        max_requests: 40,
        devices: 20,
        warmup: 1,
        serial_warmup: 2,
        rounds: 2,
    };

    /// The bounds of `round` of a variant: its share of the phase, with
    /// the warm-up in the first round only.
    fn plan(self, workload: Workload, concurrency: usize, round: u32) -> Plan {
        let serial = concurrency == 1;
        let phase = if serial {
            self.serial_phase
        } else {
            self.concurrent_phase
        };
        Plan {
            // One default-cost hash per worker is warm enough (and 20 ms).
            warmup_per_worker: match (round, workload, serial) {
                (1.., _, _) => 0,
                (0, Workload::PasswordDefault, _) => 1,
                (0, _, true) => self.serial_warmup,
                (0, _, false) => self.warmup,
            },
            max_requests: self.max_requests / u64::from(self.rounds),
            max_duration: phase / self.rounds,
        }
    }
}

// ----- the server under load ----------------------------------------------

/// A running server with its realms, users, devices and the tokens the
/// workloads present.
struct Fixture {
    base: String,
    state: AppState,
    ks: Keystead,
    default_realm: RealmId,
    cheap_realm: RealmId,
    group: GroupId,
    devices: Arc<Vec<DeviceId>>,
    heartbeat_urls: Arc<Vec<String>>,
    /// Access token of the user who registered every device.
    owner_token: String,
    /// Access token with the `introspect` scope (a resource server's).
    introspector_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Open `backend` in a temporary directory and serve it on the server
    /// runtime; create both realms with [`CONCURRENCY`] users each, the
    /// device group, and register `bounds.devices` devices over HTTP.
    async fn start(server_rt: &Handle, backend: Backend, bounds: Bounds) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            backend,
            db: dir.path().join("server.db").to_string_lossy().into_owned(),
            kek_file: None,
            admin_token: None,
            body_limit: server::DEFAULT_BODY_LIMIT,
            audience: server::DEFAULT_AUDIENCE.into(),
        };
        let state = AppState::open(&config, None).await?;
        // The listener registers with the runtime it is made on: the server's.
        let listener = server_rt
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await??;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = server_rt.spawn(server::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let ks = state.ks.clone();

        let default_realm = ks
            .realms()
            .create(DEFAULT_REALM, RealmSettings::default())
            .await?
            .id;
        let cheap_realm = ks
            .realms()
            .create(CHEAP_REALM, keystead::suite::user::cheap_settings())
            .await?
            .id;
        let mut owner = None;
        for realm in [default_realm, cheap_realm] {
            ks.oauth(realm)
                .create_client(keystead::oauth::NewClient::first_party(
                    CLIENT_ID,
                    server::DEFAULT_AUDIENCE,
                    api_scopes()
                        .into_iter()
                        .chain([server::oidc::protocol::INTROSPECT_SCOPE.to_owned()])
                        .collect(),
                ))
                .await?;
            let users = ks.users(realm);
            for i in 0..CONCURRENCY {
                let user = users
                    .register(&username(i), None, SecretString::new(password(i)))
                    .await?;
                if realm == cheap_realm && i == 0 {
                    owner = Some(user.id);
                }
            }
        }
        let owner = owner.ok_or("no device owner registered")?;
        let group = ks
            .devices(cheap_realm)
            .create_group(
                "load",
                NewGroup {
                    device_limit: Some(u32::try_from(bounds.devices)?),
                    key_generations: None,
                },
            )
            .await?
            .id;
        directory::add_member(&**ks.store(), cheap_realm, group, owner).await?;
        let owner_token = login(&ks, cheap_realm, 0, Vec::new())
            .await?
            .access_token
            .expose()
            .to_owned();
        let introspector_token = login(
            &ks,
            cheap_realm,
            CONCURRENCY - 1,
            vec![server::oidc::protocol::INTROSPECT_SCOPE.into()],
        )
        .await?
        .access_token
        .expose()
        .to_owned();

        let mut fixture = Self {
            base,
            state,
            ks,
            default_realm,
            cheap_realm,
            group,
            devices: Arc::new(Vec::new()),
            heartbeat_urls: Arc::new(Vec::new()),
            owner_token,
            introspector_token,
            stop: Some(stop),
            task,
            _dir: dir,
        };
        fixture.register_devices(bounds.devices).await?;
        Ok(fixture)
    }

    /// Register `count` devices one after another over HTTP, as their
    /// owner (the server records ownership, which heartbeats check).
    async fn register_devices(&mut self, count: usize) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        let url = format!("{}{PREFIX}/groups/{}/devices", self.base, self.group);
        let started = Instant::now();
        let mut devices = Vec::with_capacity(count);
        for i in 0..count {
            let public_key = DeviceSecretKey::generate()?.public_key();
            let response = http
                .post(&url)
                .bearer_auth(&self.owner_token)
                .json(&json!({
                    "name": format!("device-{i:04}"),
                    "platform": "linux",
                    "publicKey": STANDARD.encode(public_key.to_bytes()),
                }))
                .send()
                .await?;
            let body = expect_json(response, StatusCode::CREATED).await?;
            let id: DeviceId = body["deviceId"]
                .as_str()
                .ok_or("a registered device has no deviceId")?
                .parse()?;
            devices.push(id);
        }
        println!(
            "  setup: {count} devices registered over HTTP, one at a time, in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        self.heartbeat_urls = Arc::new(
            devices
                .iter()
                .map(|d| {
                    format!(
                        "{}{PREFIX}/groups/{}/devices/{d}/heartbeat",
                        self.base, self.group
                    )
                })
                .collect(),
        );
        self.devices = Arc::new(devices);
        Ok(())
    }

    fn realm_of(&self, workload: Workload) -> (RealmId, &'static str) {
        match workload {
            Workload::PasswordDefault => (self.default_realm, DEFAULT_REALM),
            _ => (self.cheap_realm, CHEAP_REALM),
        }
    }

    fn url(&self, realm_name: &str, path: &str) -> String {
        format!("{}/realms/{realm_name}{path}", self.base)
    }

    /// One op per worker for `workload` over `via`. Workers that rotate or
    /// present tokens get fresh ones of their own user, made through the
    /// library so setup stays out of the measured phases.
    async fn ops(
        &self,
        workload: Workload,
        via: Via,
        workers: usize,
    ) -> Result<Vec<Box<dyn Op>>, BoxError> {
        let (realm, realm_name) = self.realm_of(workload);
        let cursor = Arc::new(AtomicUsize::new(0));
        let mut ops: Vec<Box<dyn Op>> = Vec::with_capacity(workers);
        for i in 0..workers {
            let op: Box<dyn Op> = match (workload, via) {
                (Workload::PasswordDefault | Workload::PasswordCheap, Via::Http) => {
                    Box::new(HttpPassword {
                        http: client()?,
                        url: self.url(realm_name, TOKEN_PATH),
                        body: form(&[
                            ("grant_type", "password"),
                            ("client_id", CLIENT_ID),
                            ("username", &username(i)),
                            ("password", &password(i)),
                        ]),
                    })
                }
                (Workload::PasswordDefault | Workload::PasswordCheap, Via::Library) => {
                    Box::new(LibraryPassword {
                        tokens: self.ks.tokens(realm),
                        user: i,
                    })
                }
                (Workload::PasswordDefault | Workload::PasswordCheap, Via::Handler) => {
                    Box::new(HandlerGrant {
                        state: self.state.clone(),
                        realm_name,
                        grant: GrantOf::Password(i),
                    })
                }
                (Workload::Refresh, Via::Handler) => Box::new(HandlerGrant {
                    state: self.state.clone(),
                    realm_name,
                    grant: GrantOf::Refresh(Some(refresh_token_of(
                        login(&self.ks, realm, i, Vec::new()).await?,
                    )?)),
                }),
                (Workload::Introspect, Via::Handler) => Box::new(HandlerIntrospect {
                    state: self.state.clone(),
                    realm_name,
                    bearer: self.introspector_token.clone(),
                    token: login(&self.ks, realm, i, Vec::new()).await?.access_token,
                }),
                (Workload::Heartbeat, Via::Handler) => Box::new(HandlerHeartbeat {
                    state: self.state.clone(),
                    bearer: self.owner_token.clone(),
                    group: self.group,
                    ids: Arc::clone(&self.devices),
                    cursor: Arc::clone(&cursor),
                }),
                (Workload::Refresh, Via::Http) => Box::new(HttpRefresh {
                    http: client()?,
                    url: self.url(realm_name, TOKEN_PATH),
                    token: refresh_token_of(login(&self.ks, realm, i, Vec::new()).await?)?
                        .expose()
                        .to_owned(),
                }),
                (Workload::Refresh, Via::Library) => Box::new(LibraryRefresh {
                    tokens: self.ks.tokens(realm),
                    token: Some(refresh_token_of(
                        login(&self.ks, realm, i, Vec::new()).await?,
                    )?),
                }),
                (Workload::Introspect, Via::Http) => {
                    let subject = login(&self.ks, realm, i, Vec::new()).await?;
                    Box::new(HttpIntrospect {
                        http: client()?,
                        url: self.url(realm_name, INTROSPECT_PATH),
                        bearer: self.introspector_token.clone(),
                        body: form(&[("token", subject.access_token.expose())]),
                    })
                }
                (Workload::Introspect, Via::Library) => Box::new(LibraryIntrospect {
                    tokens: self.ks.tokens(realm),
                    token: login(&self.ks, realm, i, Vec::new()).await?.access_token,
                }),
                (Workload::Heartbeat, Via::Http) => Box::new(HttpHeartbeat {
                    http: client()?,
                    urls: Arc::clone(&self.heartbeat_urls),
                    cursor: Arc::clone(&cursor),
                    bearer: self.owner_token.clone(),
                }),
                (Workload::Heartbeat, Via::Library) => Box::new(LibraryHeartbeat {
                    devices: self.ks.devices(realm),
                    group: self.group,
                    ids: Arc::clone(&self.devices),
                    cursor: Arc::clone(&cursor),
                }),
            };
            ops.push(op);
        }
        Ok(ops)
    }

    /// Shut the server down gracefully and wait for it.
    async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task).await???;
        Ok(())
    }
}

/// The server's own API scopes (what its routes ask of a token).
fn api_scopes() -> Vec<String> {
    server::auth::API_SCOPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// A password grant of user `i` for the server's audience: `scope`, or the
/// server's API scopes when empty (as the server's own token endpoint
/// defaults).
fn password_grant(i: usize, scope: Vec<String>) -> Grant {
    let scope = if scope.is_empty() {
        api_scopes()
    } else {
        scope
    };
    Grant::Password {
        username: username(i),
        password: SecretString::new(password(i)),
        request: AccessRequest::public(CLIENT_ID, scope),
    }
}

fn issued(outcome: ExchangeOutcome) -> Result<TokenResponse, BoxError> {
    match outcome {
        ExchangeOutcome::Tokens(tokens) => Ok(tokens),
        _ => Err("the load realms have no MFA, yet the grant asked for a second factor".into()),
    }
}

/// Log user `i` of `realm` in through the library.
async fn login(
    ks: &Keystead,
    realm: RealmId,
    i: usize,
    scope: Vec<String>,
) -> Result<TokenResponse, BoxError> {
    issued(ks.tokens(realm).exchange(password_grant(i, scope)).await?)
}

fn refresh_token_of(tokens: TokenResponse) -> Result<SecretString, BoxError> {
    tokens
        .refresh_token
        .ok_or_else(|| "a password grant issued no refresh token".into())
}

// ----- the workers' requests ----------------------------------------------

/// A client with one keep-alive connection: a worker has one request in
/// flight at a time, so [`CONCURRENCY`] workers hold that many connections.
fn client() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?)
}

/// `application/x-www-form-urlencoded` of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(&mut out, name);
        out.push('=');
        percent_encode(&mut out, value);
    }
    out
}

fn percent_encode(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The JSON body of `response` if it has `status`, else an error with
/// what the server said.
async fn expect_json(response: reqwest::Response, status: StatusCode) -> Result<Value, BoxError> {
    let got = response.status();
    if got != status {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("expected {status}, got {got}: {text}").into());
    }
    Ok(response.json().await?)
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: String,
) -> Result<Value, BoxError> {
    let mut request = http
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    expect_json(request.send().await?, StatusCode::OK).await
}

struct HttpPassword {
    http: reqwest::Client,
    url: String,
    body: String,
}

impl Op for HttpPassword {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let body = post_form(&self.http, &self.url, None, self.body.clone()).await?;
            if !body["access_token"].is_string() {
                return Err(format!("a password grant answered without a token: {body}").into());
            }
            Ok(())
        })
    }
}

struct LibraryPassword {
    tokens: Tokens,
    user: usize,
}

impl Op for LibraryPassword {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            issued(
                self.tokens
                    .exchange(password_grant(self.user, Vec::new()))
                    .await?,
            )?;
            Ok(())
        })
    }
}

struct HttpRefresh {
    http: reqwest::Client,
    url: String,
    /// The worker's current refresh token, replaced by each rotation.
    token: String,
}

impl Op for HttpRefresh {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("client_id", CLIENT_ID),
                ("refresh_token", &self.token),
            ]);
            let answer = post_form(&self.http, &self.url, None, body).await?;
            let (Some(_), Some(next)) = (
                answer["access_token"].as_str(),
                answer["refresh_token"].as_str(),
            ) else {
                return Err(format!("a refresh answered without both tokens: {answer}").into());
            };
            next.clone_into(&mut self.token);
            Ok(())
        })
    }
}

struct LibraryRefresh {
    tokens: Tokens,
    /// The worker's current refresh token (taken by the grant, replaced by
    /// the rotated one).
    token: Option<SecretString>,
}

impl Op for LibraryRefresh {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let grant = Grant::RefreshToken {
                refresh_token: self.token.take().ok_or("the refresh chain broke")?,
                client: keystead::token::ClientAuth::public(CLIENT_ID),
                scope: Vec::new(),
            };
            let next = issued(self.tokens.exchange(grant).await?)?;
            self.token = Some(refresh_token_of(next)?);
            Ok(())
        })
    }
}

struct HttpIntrospect {
    http: reqwest::Client,
    url: String,
    bearer: String,
    body: String,
}

impl Op for HttpIntrospect {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let answer =
                post_form(&self.http, &self.url, Some(&self.bearer), self.body.clone()).await?;
            if answer["active"] != Value::Bool(true) {
                return Err(format!("a live token introspected as {answer}").into());
            }
            Ok(())
        })
    }
}

struct LibraryIntrospect {
    tokens: Tokens,
    token: SecretString,
}

impl Op for LibraryIntrospect {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let answer = self.tokens.introspect(&self.token).await?;
            if answer["active"] != Value::Bool(true) {
                return Err(format!("a live token introspected as {answer}").into());
            }
            Ok(())
        })
    }
}

struct HttpHeartbeat {
    http: reqwest::Client,
    /// One URL per device; workers take them round-robin.
    urls: Arc<Vec<String>>,
    cursor: Arc<AtomicUsize>,
    bearer: String,
}

impl Op for HttpHeartbeat {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let url = next_of(&self.urls, &self.cursor)?;
            let response = self.http.post(url).bearer_auth(&self.bearer).send().await?;
            if response.status() != StatusCode::NO_CONTENT {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                return Err(format!("heartbeat: expected 204, got {status}: {text}").into());
            }
            Ok(())
        })
    }
}

struct LibraryHeartbeat {
    devices: Devices,
    group: GroupId,
    ids: Arc<Vec<DeviceId>>,
    cursor: Arc<AtomicUsize>,
}

impl Op for LibraryHeartbeat {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let device = *next_of(&self.ids, &self.cursor)?;
            self.devices.heartbeat(self.group, device).await?;
            Ok(())
        })
    }
}

/// Which grant a [`HandlerGrant`] makes.
enum GrantOf {
    /// User `i`'s password.
    Password(usize),
    /// The worker's current refresh token (taken by the grant, replaced by
    /// the rotated one).
    Refresh(Option<SecretString>),
}

/// The token endpoint's library calls: the realm by name, then the grant.
struct HandlerGrant {
    state: AppState,
    realm_name: &'static str,
    grant: GrantOf,
}

impl Op for HandlerGrant {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let realm = active_realm_named(&self.state, self.realm_name).await?;
            let grant = match &mut self.grant {
                GrantOf::Password(user) => password_grant(*user, Vec::new()),
                GrantOf::Refresh(token) => Grant::RefreshToken {
                    refresh_token: token.take().ok_or("the refresh chain broke")?,
                    client: keystead::token::ClientAuth::public(CLIENT_ID),
                    scope: Vec::new(),
                },
            };
            let tokens = issued(self.state.ks.tokens(realm).exchange(grant).await?)?;
            if let GrantOf::Refresh(token) = &mut self.grant {
                *token = Some(refresh_token_of(tokens)?);
            }
            Ok(())
        })
    }
}

/// The realm named `name`, which must be active (as the OIDC routes check).
async fn active_realm_named(state: &AppState, name: &str) -> Result<RealmId, BoxError> {
    let realm = state.ks.realms().get_by_name(name).await?;
    if realm.status != keystead::realm::RealmStatus::Active {
        return Err(format!("realm {name} is not active").into());
    }
    Ok(realm.id)
}

/// The caller of a bearer token, as the server's extractor finds it: the
/// realm from the token's issuer, then the token verified for the
/// server's audience.
async fn caller(
    state: &AppState,
    bearer: &str,
) -> Result<(RealmId, keystead::token::AccessClaims), BoxError> {
    let verified = state
        .auth
        .verify_token(bearer)
        .await
        .map_err(|e| format!("{e:?}"))?
        .0;
    Ok((verified.realm, verified.claims))
}

/// The introspection endpoint's library calls: the caller's token and
/// scope, the realm by name, the introspection.
struct HandlerIntrospect {
    state: AppState,
    realm_name: &'static str,
    bearer: String,
    token: SecretString,
}

impl Op for HandlerIntrospect {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let (realm, claims) = caller(&self.state, &self.bearer).await?;
            let scope = server::oidc::protocol::INTROSPECT_SCOPE;
            if !claims.scopes().any(|s| s == scope) {
                return Err("the introspecting token lacks its scope".into());
            }
            if active_realm_named(&self.state, self.realm_name).await? != realm {
                return Err("the introspecting token is of another realm".into());
            }
            let answer = self.state.ks.tokens(realm).introspect(&self.token).await?;
            if answer["active"] != Value::Bool(true) {
                return Err(format!("a live token introspected as {answer}").into());
            }
            Ok(())
        })
    }
}

/// The heartbeat endpoint's library calls: the caller's token, group
/// membership, the device and its ownership, the heartbeat.
struct HandlerHeartbeat {
    state: AppState,
    bearer: String,
    group: GroupId,
    ids: Arc<Vec<DeviceId>>,
    cursor: Arc<AtomicUsize>,
}

impl Op for HandlerHeartbeat {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let device = *next_of(&self.ids, &self.cursor)?;
            let (realm, claims) = caller(&self.state, &self.bearer).await?;
            let store = &**self.state.ks.store();
            if !directory::is_member(store, realm, self.group, claims.sub).await? {
                return Err("the device owner is not a member of the group".into());
            }
            let devices = self.state.ks.devices(realm);
            devices.get(self.group, device).await?;
            if !directory::owns_device(store, realm, self.group, claims.sub, device).await? {
                return Err("the device belongs to another user".into());
            }
            devices.heartbeat(self.group, device).await?;
            Ok(())
        })
    }
}

/// The next item of `items`, round-robin over all workers.
fn next_of<'a, T>(items: &'a [T], cursor: &AtomicUsize) -> Result<&'a T, BoxError> {
    if items.is_empty() {
        return Err("no devices to heartbeat".into());
    }
    Ok(&items[cursor.fetch_add(1, Ordering::Relaxed) % items.len()])
}

// ----- the run and its report ---------------------------------------------

/// One measured phase.
struct Row {
    backend: &'static str,
    workload: Workload,
    via: Via,
    concurrency: usize,
    summary: Summary,
    cpu: Option<Cpu>,
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Memory => "memory",
        Backend::Sled => "sled",
        Backend::Postgres => "postgres",
    }
}

/// A latency in the unit that keeps three significant digits readable.
fn show(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 10_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.1} ms", micros / 1e3)
    }
}

/// The 1-minute load average, to print beside the figures (the machine is
/// shared); `?` where `/proc` has none.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn find<'a>(
    rows: &'a [Row],
    backend: &str,
    workload: Workload,
    via: Via,
    concurrency: usize,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.backend == backend
            && r.workload == workload
            && r.via == via
            && r.concurrency == concurrency
    })
}

/// Server-side CPU per request in µs, or `?`.
fn server_cpu(row: &Row) -> String {
    row.cpu.map_or_else(
        || "?".into(),
        |cpu| format!("{:.0} µs", cpu.per_request(row.summary.requests).0),
    )
}

/// The markdown tables of BENCHMARKS.md: throughput and latency at
/// [`CONCURRENCY`] over HTTP and through the library, and the serial
/// per-request comparison.
fn report(rows: &[Row]) {
    println!(
        "\n| backend | workload | HTTP req/s | p50 | p99 | library calls/s | p50 | p99 | HTTP / library throughput | server CPU/req: HTTP | library | client CPU/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for backend in ["sqlite", "memory"] {
        for workload in Workload::ALL {
            let (Some(http_row), Some(lib_row)) = (
                find(rows, backend, workload, Via::Http, CONCURRENCY),
                find(rows, backend, workload, Via::Library, CONCURRENCY),
            ) else {
                continue;
            };
            let (http, lib) = (&http_row.summary, &lib_row.summary);
            let client = http_row.cpu.map_or_else(
                || "?".into(),
                |cpu| format!("{:.0} µs", cpu.per_request(http.requests).1),
            );
            println!(
                "| {backend} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}× | {} | {} | {client} |",
                workload.name(),
                http.per_sec(),
                show(http.p50),
                show(http.p99),
                lib.per_sec(),
                show(lib.p50),
                show(lib.p99),
                http.per_sec() / lib.per_sec(),
                server_cpu(http_row),
                server_cpu(lib_row),
            );
        }
    }
    println!(
        "\n| backend | workload | one client: HTTP p50 | handler's calls p50 | core call p50 | HTTP / core | transport's share | handler checks' share |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in ["sqlite", "memory"] {
        for workload in Workload::ALL {
            let (Some(http), Some(handler), Some(lib)) = (
                find(rows, backend, workload, Via::Http, 1).map(|r| &r.summary),
                find(rows, backend, workload, Via::Handler, 1).map(|r| &r.summary),
                find(rows, backend, workload, Via::Library, 1).map(|r| &r.summary),
            ) else {
                continue;
            };
            let [http_s, handler_s, lib_s] = [http, handler, lib].map(|s| s.p50.as_secs_f64());
            println!(
                "| {backend} | {} | {} | {} | {} | {:.2}× | {:.0} % | {:.0} % |",
                workload.name(),
                show(http.p50),
                show(handler.p50),
                show(lib.p50),
                http_s / lib_s,
                (http_s - handler_s) / http_s * 100.0,
                (handler_s - lib_s) / http_s * 100.0,
            );
        }
    }
}

/// The name of the client runtime's threads (CPU accounting tells them
/// from the server's by it).
const CLIENT_THREADS: &str = "client";

/// Where a variant's CPU time went: the load generator's threads, and
/// everything else in the process (the server's runtime, the blocking
/// pools with SQLite and argon2).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: Duration,
    client: Duration,
}

impl Cpu {
    /// CPU per request in µs: (server, client).
    fn per_request(self, requests: u64) -> (f64, f64) {
        // Request counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let n = requests.max(1) as f64;
        (
            self.server.as_secs_f64() * 1e6 / n,
            self.client.as_secs_f64() * 1e6 / n,
        )
    }
}

/// One variant of a workload while its rounds run.
struct Variant {
    via: Via,
    concurrency: usize,
    ops: Vec<Box<dyn Op>>,
    samples: Vec<Duration>,
    elapsed: Duration,
    /// `None` once a `/proc` read failed (not Linux): no CPU figures.
    cpu: Option<Cpu>,
}

/// Measure `variants` of `workload` interleaved: [`Bounds::rounds`] rounds,
/// each running every variant for its share of the phase's bounds, their
/// samples pooled per variant. HTTP ops run on `runtimes[0]` (the
/// client's), library calls on `runtimes[1]` (the server's, where a
/// handler would make them).
async fn run_workload(
    fixture: &Fixture,
    workload: Workload,
    variants: &[(Via, usize)],
    bounds: Bounds,
    runtimes: [&Handle; 2],
) -> Result<Vec<(Via, usize, Summary, Option<Cpu>)>, BoxError> {
    let mut running = Vec::with_capacity(variants.len());
    for &(via, concurrency) in variants {
        running.push(Variant {
            via,
            concurrency,
            ops: fixture.ops(workload, via, concurrency).await?,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
            cpu: Some(Cpu::default()),
        });
    }
    let phase = |v: &Variant| format!("{}/{}/c{}", workload.name(), v.via.name(), v.concurrency);
    for round in 0..bounds.rounds {
        for variant in &mut running {
            let runtime = match variant.via {
                Via::Http => runtimes[0],
                Via::Handler | Via::Library => runtimes[1],
            };
            let plan = bounds.plan(workload, variant.concurrency, round);
            let ops = std::mem::take(&mut variant.ops);
            let before = cpu_time(CLIENT_THREADS);
            let measured = measure(runtime, ops, plan)
                .await
                .map_err(|e| format!("{}: {e}", phase(variant)))?;
            variant.cpu = match (variant.cpu, before, cpu_time(CLIENT_THREADS)) {
                (Some(sum), Some((all0, client0)), Some((all1, client1))) => {
                    let client = client1.saturating_sub(client0);
                    Some(Cpu {
                        server: sum.server + all1.saturating_sub(all0).saturating_sub(client),
                        client: sum.client + client,
                    })
                }
                _ => None,
            };
            variant.ops = measured.ops;
            variant.samples.extend(measured.samples);
            variant.elapsed += measured.elapsed;
        }
    }
    running
        .into_iter()
        .map(|v| {
            let name = phase(&v);
            let summary = Summary::from_samples(v.samples, v.elapsed)
                .ok_or_else(|| format!("{name}: no request completed within the bounds"))?;
            Ok((v.via, v.concurrency, summary, v.cpu))
        })
        .collect()
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let bounds = if args.iter().any(|a| a == "--bench") {
        Bounds::FULL
    } else {
        Bounds::SMOKE
    };
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let wanted = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()?;
    let started = Instant::now();
    println!(
        "server load run ({}): {CONCURRENCY} connections, {} devices, phases ≤ {:?} (one client: ≤ {:?}) and ≤ {} requests; load average {}",
        if bounds.devices == DEVICES {
            "full"
        } else {
            "smoke"
        },
        bounds.devices,
        bounds.concurrent_phase,
        bounds.serial_phase,
        bounds.max_requests,
        load_average(),
    );

    let mut rows = Vec::new();
    for backend in [Backend::Sqlite, Backend::Memory] {
        let name = backend_name(backend);
        let phases: Vec<(Workload, Via, usize)> = Workload::ALL
            .iter()
            .flat_map(|&w| w.phases().iter().map(move |&(via, c)| (w, via, c)))
            .filter(|&(w, via, c)| wanted(&format!("{name}/{}/{}/c{c}", w.name(), via.name())))
            .collect();
        if phases.is_empty() {
            continue;
        }
        println!("{name}:");
        let fixture = client_rt.block_on(Fixture::start(server_rt.handle(), backend, bounds))?;
        for workload in Workload::ALL {
            let variants: Vec<(Via, usize)> = phases
                .iter()
                .filter(|&&(w, _, _)| w == workload)
                .map(|&(_, via, c)| (via, c))
                .collect();
            if variants.is_empty() {
                continue;
            }
            let measured = client_rt.block_on(run_workload(
                &fixture,
                workload,
                &variants,
                bounds,
                [client_rt.handle(), server_rt.handle()],
            ))?;
            for (via, concurrency, summary, cpu) in measured {
                let phase = format!("{name}/{}/{}/c{concurrency}", workload.name(), via.name());
                let cpu_text = cpu.map_or_else(String::new, |cpu| {
                    let (server, client) = cpu.per_request(summary.requests);
                    format!("  CPU/req server {server:.0} µs, client {client:.0} µs")
                });
                println!(
                    "  {phase:<36} {:>6} in {:>5.2} s  {:>8.0}/s  p50 {:>9}  p99 {:>9}  max {:>9}{cpu_text}",
                    summary.requests,
                    summary.elapsed.as_secs_f64(),
                    summary.per_sec(),
                    show(summary.p50),
                    show(summary.p99),
                    show(summary.max),
                );
                rows.push(Row {
                    backend: name,
                    workload,
                    via,
                    concurrency,
                    summary,
                    cpu,
                });
            }
        }
        client_rt.block_on(fixture.stop())?;
    }
    report(&rows);
    println!(
        "\nwhole run {:.1} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
