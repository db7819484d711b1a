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
//! alike. The whole bench takes about 110 s (20 s of it PostgreSQL).
//!
//! `cargo bench -p keystead-benches --bench server_load` runs it; extra
//! arguments filter phases by substring (`… -- sqlite/refresh`). Without
//! `--bench` (e.g. `cargo test --benches`) it runs a short smoke pass.
//!
//! Runtimes: the server has its own 2-worker tokio runtime (the machine
//! has 2 cores), the HTTP clients a 1-worker runtime of their own, so the
//! client's CPU is visible as competition, as it would be with `oha` on
//! the same machine.
//!
//! PostgreSQL (issue 20): the writing workloads (`refresh`, `heartbeat`)
//! also run on `Backend::Postgres`, in a fresh schema of the throwaway
//! cluster of `keystead_postgres::testing::server_url` (or
//! `KEYSTEAD_TEST_POSTGRES_URL`), reached through the connection string's
//! `search_path`, since the server's `--db` takes no schema option. There
//! are two instances on that one schema — two `AppState`s sharing the KEK,
//! each served on its own listener and its own 1-worker runtime
//! (`server-a`, `server-b`), as two 1-core server processes would be — and
//! the HTTP phase runs once with all [`CONCURRENCY`] workers on instance A
//! and once with them split half and half over A and B (`…/x2`), at the
//! same total concurrency, interleaved in rounds with the library call on
//! A. Equal-sized instances make `2/1` the scale-out figure: what a second
//! instance adds, not what a second worker thread inside one adds. CPU per
//! request is split three ways there: the server (the process minus the
//! load generator), the PostgreSQL cluster (its postmaster and children,
//! from `/proc/<pid>/stat`) and the load generator; with the cores busy
//! (all CPU over wall time) it shows where the time goes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keystead::Keystead;
use keystead::crypto::DeviceSecretKey;
use keystead::crypto::at_rest::Kek;
use keystead::device::{Devices, NewGroup};
use keystead::id::{DeviceId, GroupId, RealmId};
use keystead::realm::RealmSettings;
use keystead::secret::SecretString;
use keystead::token::{AccessRequest, ExchangeOutcome, Grant, TokenResponse, Tokens};
use keystead_axum::authlance::PREFIX;
use keystead_axum::{self as server, AppState, Backend, Config, directory};
use keystead_benches::load::{BoxError, Op, OpFuture, Plan, Summary, cpu_time, measure};
use keystead_postgres::testing::{raw_client, server_url};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
    ClientCredentials,
}

impl Workload {
    const ALL: [Workload; 6] = [
        Workload::PasswordDefault,
        Workload::PasswordCheap,
        Workload::Refresh,
        Workload::Introspect,
        Workload::Heartbeat,
        Workload::ClientCredentials,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::PasswordDefault => "password-default",
            Workload::PasswordCheap => "password-cheap",
            Workload::Refresh => "refresh",
            Workload::Introspect => "introspect",
            Workload::Heartbeat => "heartbeat",
            Workload::ClientCredentials => "client-credentials",
        }
    }

    /// The phases of the workload on one instance of an embedded or the
    /// in-memory backend. At the default argon2 cost the hash is the whole
    /// request, so one concurrent pair says all there is.
    fn phases(self) -> &'static [Shape] {
        const FULL: &[Shape] = &[
            Shape::new(Via::Http, CONCURRENCY),
            Shape::new(Via::Library, CONCURRENCY),
            Shape::new(Via::Http, 1),
            Shape::new(Via::Handler, 1),
            Shape::new(Via::Library, 1),
        ];
        const CONCURRENT: &[Shape] = &[
            Shape::new(Via::Http, CONCURRENCY),
            Shape::new(Via::Library, CONCURRENCY),
        ];
        // No handler variant: the grant is one library call.
        const NO_HANDLER: &[Shape] = &[
            Shape::new(Via::Http, CONCURRENCY),
            Shape::new(Via::Library, CONCURRENCY),
            Shape::new(Via::Http, 1),
            Shape::new(Via::Library, 1),
        ];
        match self {
            Workload::PasswordDefault => CONCURRENT,
            Workload::ClientCredentials => NO_HANDLER,
            _ => FULL,
        }
    }
}

/// The workloads run on PostgreSQL: the ones that write.
const POSTGRES_WORKLOADS: [Workload; 2] = [Workload::Refresh, Workload::Heartbeat];

/// Their phases: over HTTP on one instance and on two sharing the
/// database at the same total concurrency, and the library call on one.
const POSTGRES_PHASES: &[Shape] = &[
    Shape::new(Via::Http, CONCURRENCY),
    Shape::new(Via::Http, CONCURRENCY).on(2),
    Shape::new(Via::Library, CONCURRENCY),
];

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

/// One variant of a workload: how it reaches the library, from how many
/// workers, against how many server instances (HTTP only; the workers are
/// split evenly over them, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    via: Via,
    concurrency: usize,
    instances: usize,
}

impl Shape {
    const fn new(via: Via, concurrency: usize) -> Self {
        Self {
            via,
            concurrency,
            instances: 1,
        }
    }

    /// This shape against `instances` server instances.
    const fn on(self, instances: usize) -> Self {
        Self { instances, ..self }
    }

    /// `http/c16`, or `http/c16/x2` against two instances.
    fn name(self) -> String {
        let mut name = format!("{}/c{}", self.via.name(), self.concurrency);
        if self.instances > 1 {
            let _ = write!(name, "/x{}", self.instances);
        }
        name
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

/// One served instance of the server: its base URL, its heartbeat URLs,
/// and how to stop it.
struct Instance {
    base: String,
    /// One heartbeat URL per device of the fixture, on this instance.
    heartbeat_urls: Arc<Vec<String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Instance {
    /// Serve `state` on a fresh loopback listener on `runtime`.
    async fn serve(runtime: &Handle, state: AppState) -> Result<Self, BoxError> {
        // The listener registers with the runtime it is made on: the server's.
        let listener = runtime
            .spawn(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .await??;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(server::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            base,
            heartbeat_urls: Arc::new(Vec::new()),
            stop: Some(stop),
            task,
        })
    }
}

/// A running server — one instance, or several on one database — with
/// its realms, users, devices and the tokens the workloads present.
struct Fixture {
    /// What every instance is opened with.
    config: Config,
    kek: Option<Kek>,
    /// The served instances; the first is the one set up and the one the
    /// library and handler variants call.
    instances: Vec<Instance>,
    state: AppState,
    ks: Keystead,
    default_realm: RealmId,
    cheap_realm: RealmId,
    group: GroupId,
    devices: Arc<Vec<DeviceId>>,
    /// Access token of the user who registered every device.
    owner_token: String,
    /// Access token with the `introspect` scope (a resource server's).
    introspector_token: String,
    /// The secret of [`SERVICE_ID`], a confidential client of the cheap
    /// realm allowed the client-credentials grant.
    service_secret: SecretString,
    /// The PostgreSQL cluster's postmaster, when it runs on this machine:
    /// its CPU (and its children's) is measured per phase.
    postmaster: Option<u32>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Open `backend` on `db` (a file in a temporary directory when
    /// `None`) with `kek`, and serve it on `server_rt`; create both realms
    /// with [`CONCURRENCY`] users each, the device group, and register
    /// `bounds.devices` devices over HTTP.
    ///
    /// Run this on `server_rt` itself: a PostgreSQL store's pooled
    /// connections and background tasks live on the runtime that first
    /// uses them, which must be the server's, not the load generator's.
    async fn start(
        server_rt: Handle,
        backend: Backend,
        db: Option<String>,
        kek: Option<Kek>,
        bounds: Bounds,
    ) -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            listen: ([127, 0, 0, 1], 0).into(),
            backend,
            db: db.unwrap_or_else(|| dir.path().join("server.db").to_string_lossy().into_owned()),
            kek_file: None,
            admin_token: None,
            body_limit: server::DEFAULT_BODY_LIMIT,
            audience: server::DEFAULT_AUDIENCE.into(),
            // The tests log in far more often than a person: the limits
            // have tests of their own.
            rate_limits: server::limits::RateLimits::off(),
            ..Config::default()
        };
        let state = AppState::open(&config, kek.clone()).await?;
        let instance = Instance::serve(&server_rt, state.clone()).await?;
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

        let service_secret = service_client(&ks, cheap_realm).await?;

        let mut fixture = Self {
            config,
            kek,
            instances: vec![instance],
            state,
            ks,
            default_realm,
            cheap_realm,
            group,
            devices: Arc::new(Vec::new()),
            owner_token,
            introspector_token,
            service_secret,
            postmaster: None,
            _dir: dir,
        };
        fixture.register_devices(bounds.devices).await?;
        Ok(fixture)
    }

    /// Open another instance on the same database (same config and KEK)
    /// and serve it on `runtime`, where its store is opened too, so its
    /// connections and tasks live there.
    async fn add_instance(&mut self, runtime: &Handle) -> Result<(), BoxError> {
        let (config, kek) = (self.config.clone(), self.kek.clone());
        let state = runtime
            .spawn(async move { AppState::open(&config, kek).await })
            .await??;
        let mut instance = Instance::serve(runtime, state).await?;
        instance.heartbeat_urls = self.heartbeat_urls(&instance.base);
        self.instances.push(instance);
        Ok(())
    }

    /// Register `count` devices one after another over HTTP, as their
    /// owner (the server records ownership, which heartbeats check).
    async fn register_devices(&mut self, count: usize) -> Result<(), BoxError> {
        let http = reqwest::Client::new();
        let url = format!(
            "{}{PREFIX}/groups/{}/devices",
            self.instances[0].base, self.group
        );
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
        self.devices = Arc::new(devices);
        for i in 0..self.instances.len() {
            self.instances[i].heartbeat_urls = self.heartbeat_urls(&self.instances[i].base);
        }
        Ok(())
    }

    /// The heartbeat URL of every device, on the instance at `base`.
    fn heartbeat_urls(&self, base: &str) -> Arc<Vec<String>> {
        Arc::new(
            self.devices
                .iter()
                .map(|d| format!("{base}{PREFIX}/groups/{}/devices/{d}/heartbeat", self.group))
                .collect(),
        )
    }

    fn realm_of(&self, workload: Workload) -> (RealmId, &'static str) {
        match workload {
            Workload::PasswordDefault => (self.default_realm, DEFAULT_REALM),
            _ => (self.cheap_realm, CHEAP_REALM),
        }
    }

    /// The instances `shape`'s workers are split over: the first
    /// `shape.instances`.
    fn served(&self, shape: Shape) -> Result<&[Instance], BoxError> {
        match self.instances.get(..shape.instances) {
            Some(served) if !served.is_empty() => Ok(served),
            _ => Err(format!(
                "{} wants {} instances; {} are running",
                shape.name(),
                shape.instances,
                self.instances.len()
            )
            .into()),
        }
    }

    /// One op per worker for `workload` in `shape`. Workers that rotate
    /// or present tokens get fresh ones of their own user, made through
    /// the library so setup stays out of the measured phases. Over HTTP,
    /// the workers are split evenly over the first `shape.instances`
    /// instances, in order (half and half for two).
    #[allow(clippy::too_many_lines)] // one arm per workload and path: a table, read as one
    async fn ops(&self, workload: Workload, shape: Shape) -> Result<Vec<Box<dyn Op>>, BoxError> {
        let (via, workers) = (shape.via, shape.concurrency);
        let served = self.served(shape)?;
        let (realm, realm_name) = self.realm_of(workload);
        let cursor = Arc::new(AtomicUsize::new(0));
        let mut ops: Vec<Box<dyn Op>> = Vec::with_capacity(workers);
        for i in 0..workers {
            let instance = &served[i * served.len() / workers];
            let url = |path: &str| format!("{}/realms/{realm_name}{path}", instance.base);
            let op: Box<dyn Op> = match (workload, via) {
                (Workload::PasswordDefault | Workload::PasswordCheap, Via::Http) => {
                    Box::new(HttpPassword {
                        http: client()?,
                        url: url(TOKEN_PATH),
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
                    url: url(TOKEN_PATH),
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
                        url: url(INTROSPECT_PATH),
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
                    urls: Arc::clone(&instance.heartbeat_urls),
                    cursor: Arc::clone(&cursor),
                    bearer: self.owner_token.clone(),
                }),
                (Workload::ClientCredentials, via) => {
                    self.service_op(via, url(TOKEN_PATH), realm)?
                }
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

    /// One worker of the client-credentials workload (no handler variant:
    /// the grant is one library call).
    fn service_op(&self, via: Via, url: String, realm: RealmId) -> Result<Box<dyn Op>, BoxError> {
        Ok(match via {
            Via::Http => Box::new(HttpClientCredentials {
                http: client()?,
                url,
                secret: self.service_secret.expose().to_owned(),
            }),
            Via::Library => Box::new(LibraryClientCredentials {
                oauth: self.ks.oauth(realm),
                secret: self.service_secret.clone(),
            }),
            Via::Handler => return Err("client credentials have no handler variant".into()),
        })
    }

    /// Shut every instance down gracefully and wait for them.
    async fn stop(mut self) -> Result<(), BoxError> {
        for instance in &mut self.instances {
            if let Some(stop) = instance.stop.take() {
                let _ = stop.send(());
            }
        }
        for instance in self.instances {
            tokio::time::timeout(Duration::from_secs(10), instance.task).await???;
        }
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

/// Register [`SERVICE_ID`] in `realm`; its secret.
async fn service_client(ks: &Keystead, realm: RealmId) -> Result<SecretString, BoxError> {
    ks.oauth(realm)
        .create_client(keystead::oauth::NewClient::service(
            SERVICE_ID,
            vec![SERVICE_SCOPE.to_owned()],
        ))
        .await?
        .secret
        .ok_or_else(|| "a service client gets a secret".into())
}

/// The service client of the client-credentials workload.
const SERVICE_ID: &str = "load-service";
/// The scope it asks for.
const SERVICE_SCOPE: &str = "reports";

/// `POST …/token` with `grant_type=client_credentials`, the client
/// authenticated with HTTP Basic (RFC 6749 §2.3.1).
struct HttpClientCredentials {
    http: reqwest::Client,
    url: String,
    secret: String,
}

impl Op for HttpClientCredentials {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            let response = self
                .http
                .post(&self.url)
                .basic_auth(SERVICE_ID, Some(&self.secret))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=client_credentials&scope={SERVICE_SCOPE}"
                ))
                .send()
                .await?;
            let answer = expect_json(response, StatusCode::OK).await?;
            if answer["access_token"].as_str().is_none() {
                return Err(format!("no access token in {answer}").into());
            }
            Ok(())
        })
    }
}

struct LibraryClientCredentials {
    oauth: keystead::oauth::OAuth,
    secret: SecretString,
}

impl Op for LibraryClientCredentials {
    fn call(&mut self) -> OpFuture<'_> {
        Box::pin(async move {
            self.oauth
                .client_credentials(SERVICE_ID, &self.secret, &[SERVICE_SCOPE.to_owned()], None)
                .await?;
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
    shape: Shape,
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

fn find<'a>(rows: &'a [Row], backend: &str, workload: Workload, shape: Shape) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.backend == backend && r.workload == workload && r.shape == shape)
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
    let concurrent = |via| Shape::new(via, CONCURRENCY);
    let serial = |via| Shape::new(via, 1);
    let backends: Vec<&str> = ["sqlite", "memory"]
        .into_iter()
        .filter(|b| rows.iter().any(|r| r.backend == *b))
        .collect();
    if backends.is_empty() {
        return;
    }
    println!(
        "\n| backend | workload | HTTP req/s | p50 | p99 | library calls/s | p50 | p99 | HTTP / library throughput | server CPU/req: HTTP | library | client CPU/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &backend in &backends {
        for workload in Workload::ALL {
            let (Some(http_row), Some(lib_row)) = (
                find(rows, backend, workload, concurrent(Via::Http)),
                find(rows, backend, workload, concurrent(Via::Library)),
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
    for &backend in &backends {
        for workload in Workload::ALL {
            let (Some(http), Some(handler), Some(lib)) = (
                find(rows, backend, workload, serial(Via::Http)).map(|r| &r.summary),
                find(rows, backend, workload, serial(Via::Handler)).map(|r| &r.summary),
                find(rows, backend, workload, serial(Via::Library)).map(|r| &r.summary),
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

/// The PostgreSQL table of BENCHMARKS.md — throughput, latency and where
/// the CPU went per request, on one instance and on two — and the
/// `instances postgres <workload> 2/1 = <ratio>` lines.
fn report_postgres(rows: &[Row]) {
    let mine: Vec<&Row> = rows.iter().filter(|r| r.backend == "postgres").collect();
    if mine.is_empty() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!(
        "\n| workload | variant | instances | req/s | p50 | p99 | server CPU/req | postgres CPU/req | client CPU/req | all CPU/req | cores busy (of {cores}) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let micros = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.0} µs"));
    for workload in POSTGRES_WORKLOADS {
        for &shape in POSTGRES_PHASES {
            let Some(row) = find(rows, "postgres", workload, shape) else {
                continue;
            };
            let s = &row.summary;
            let split = row.cpu.map(|cpu| cpu.split(s.requests));
            println!(
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                workload.name(),
                match shape.via {
                    Via::Http => "HTTP",
                    Via::Handler => "handler",
                    Via::Library => "library",
                },
                shape.instances,
                s.per_sec(),
                show(s.p50),
                show(s.p99),
                micros(split.map(|c| c.server)),
                micros(split.and_then(|c| c.postgres)),
                micros(split.map(|c| c.client)),
                micros(split.and_then(|c| c.postgres.map(|pg| c.server + pg + c.client))),
                row.cpu
                    .and_then(Cpu::cores_busy)
                    .map_or_else(|| "?".into(), |busy| format!("{busy:.2}")),
            );
        }
    }
    println!();
    for workload in POSTGRES_WORKLOADS {
        let one = Shape::new(Via::Http, CONCURRENCY);
        if let (Some(one), Some(two)) = (
            find(rows, "postgres", workload, one),
            find(rows, "postgres", workload, one.on(2)),
        ) {
            println!(
                "instances postgres {} 2/1 = {:.2}",
                workload.name(),
                two.summary.per_sec() / one.summary.per_sec()
            );
        }
    }
}

/// The name of the client runtime's threads (CPU accounting tells them
/// from the server's by it).
const CLIENT_THREADS: &str = "client";

/// Where a variant's CPU time went: the load generator's threads,
/// everything else in the process (the server's runtimes, the blocking
/// pools with SQLite and argon2), and the PostgreSQL cluster's processes
/// when one is measured; and the wall time it was measured over.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    server: Duration,
    client: Duration,
    postgres: Option<Duration>,
    wall: Duration,
}

/// [`Cpu`] per request, in µs.
#[derive(Debug, Clone, Copy)]
struct CpuPerRequest {
    server: f64,
    client: f64,
    postgres: Option<f64>,
}

impl Cpu {
    /// CPU per request in µs: (server, client).
    fn per_request(self, requests: u64) -> (f64, f64) {
        let split = self.split(requests);
        (split.server, split.client)
    }

    /// CPU per request in µs of the server, the client and PostgreSQL.
    fn split(self, requests: u64) -> CpuPerRequest {
        // Request counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let n = requests.max(1) as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
        CpuPerRequest {
            server: per(self.server),
            client: per(self.client),
            postgres: self.postgres.map(per),
        }
    }

    /// Cores kept busy on average: all CPU measured over the wall time.
    fn cores_busy(self) -> Option<f64> {
        let all = self.server + self.client + self.postgres?;
        (!self.wall.is_zero()).then(|| all.as_secs_f64() / self.wall.as_secs_f64())
    }
}

/// A CPU reading: the process's and the client threads' (see
/// [`cpu_time`]), PostgreSQL's, and when.
struct CpuReading {
    process: Option<(Duration, Duration)>,
    postgres: Option<Duration>,
    at: Instant,
}

impl CpuReading {
    fn now(postmaster: Option<u32>) -> Self {
        Self {
            process: cpu_time(CLIENT_THREADS),
            postgres: postmaster.and_then(postgres_cpu),
            at: Instant::now(),
        }
    }

    /// What was spent since `before`; `None` if a `/proc` read failed.
    fn since(&self, before: &CpuReading) -> Option<Cpu> {
        let ((all0, client0), (all1, client1)) = (before.process?, self.process?);
        let client = client1.saturating_sub(client0);
        Some(Cpu {
            server: all1.saturating_sub(all0).saturating_sub(client),
            client,
            postgres: match (before.postgres, self.postgres) {
                (Some(pg0), Some(pg1)) => Some(pg1.saturating_sub(pg0)),
                _ => None,
            },
            wall: self.at.duration_since(before.at),
        })
    }
}

impl std::ops::Add for Cpu {
    type Output = Cpu;

    fn add(self, other: Cpu) -> Cpu {
        Cpu {
            server: self.server + other.server,
            client: self.client + other.client,
            postgres: self.postgres.zip(other.postgres).map(|(a, b)| a + b),
            wall: self.wall + other.wall,
        }
    }
}

/// Clock ticks per second of the times in `/proc/<pid>/stat`: `getconf
/// CLK_TCK`, or 100 (`USER_HZ` on every Linux keystead builds for).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// `(pid, ppid, utime + stime in ticks)` of a `/proc/<pid>/stat` line.
fn proc_stat(stat: &str) -> Option<(u32, u32, u64)> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so
    // split at the last ')'. After it: state, ppid, …, utime (12th), stime.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let parent = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((pid, parent, utime + stime))
}

/// CPU time (user + system) so far of the PostgreSQL server whose
/// postmaster is `postmaster` and of its live children (backends, WAL
/// writer, checkpointer, …), from `/proc`; `None` once the postmaster is
/// gone. Only this cluster's processes: the machine is shared, and other
/// sessions' clusters must not count. A child that exits between two
/// readings takes its time with it (the pools keep their backends, so
/// that is autovacuum at most).
fn postgres_cpu(postmaster: u32) -> Option<Duration> {
    let mut ticks = 0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((pid, ppid, t)) = proc_stat(&stat)
            && (pid == postmaster || ppid == postmaster)
        {
            ticks += t;
            found |= pid == postmaster;
        }
    }
    found.then(|| Duration::from_micros(ticks * 1_000_000 / clock_ticks()))
}

/// The postmaster of the server at `url` if it runs on this machine: the
/// parent of this connection's backend, both named `postgres`.
async fn postmaster_of(url: &str) -> Option<u32> {
    let client = raw_client(url).await.ok()?;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .ok()?
        .get(0);
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let backend = u32::try_from(backend).ok()?;
    let (_, postmaster, _) =
        proc_stat(&std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?)?;
    (comm(backend)?.trim() == "postgres" && comm(postmaster)?.trim() == "postgres")
        .then_some(postmaster)
}

/// `url` (a `key=value` connection string or a `postgres://` URL) with
/// `search_path` set to `schema`: the server's `--db` takes no schema, but
/// the connection string can carry server options. `schema` must be a
/// plain lower-case identifier.
fn in_schema(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

/// One variant of a workload while its rounds run.
struct Variant {
    shape: Shape,
    ops: Vec<Box<dyn Op>>,
    samples: Vec<Duration>,
    elapsed: Duration,
    /// `None` once a `/proc` read failed (not Linux): no CPU figures.
    cpu: Option<Cpu>,
}

/// Measure `variants` of `workload` interleaved: [`Bounds::rounds`] rounds,
/// each running every variant for its share of the phase's bounds, their
/// samples pooled per variant. HTTP ops run on `runtimes[0]` (the
/// client's), library calls on `runtimes[1]` (the first instance's, where a
/// handler would make them).
async fn run_workload(
    fixture: &Fixture,
    workload: Workload,
    variants: &[Shape],
    bounds: Bounds,
    runtimes: [&Handle; 2],
) -> Result<Vec<(Shape, Summary, Option<Cpu>)>, BoxError> {
    let mut running = Vec::with_capacity(variants.len());
    for &shape in variants {
        running.push(Variant {
            shape,
            ops: fixture.ops(workload, shape).await?,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
            cpu: Some(Cpu {
                postgres: fixture.postmaster.map(|_| Duration::ZERO),
                ..Cpu::default()
            }),
        });
    }
    let phase = |v: &Variant| format!("{}/{}", workload.name(), v.shape.name());
    for round in 0..bounds.rounds {
        for variant in &mut running {
            let runtime = match variant.shape.via {
                Via::Http => runtimes[0],
                Via::Handler | Via::Library => runtimes[1],
            };
            let plan = bounds.plan(workload, variant.shape.concurrency, round);
            let ops = std::mem::take(&mut variant.ops);
            let before = CpuReading::now(fixture.postmaster);
            let measured = measure(runtime, ops, plan)
                .await
                .map_err(|e| format!("{}: {e}", phase(variant)))?;
            let spent = CpuReading::now(fixture.postmaster).since(&before);
            variant.cpu = variant.cpu.zip(spent).map(|(sum, spent)| sum + spent);
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
            Ok((v.shape, summary, v.cpu))
        })
        .collect()
}

/// Run `phases` on `fixture`, a workload's variants interleaved, printing
/// each phase's line and collecting its row; then stop the fixture.
fn run_backend(
    client_rt: &tokio::runtime::Runtime,
    library_rt: &Handle,
    name: &'static str,
    fixture: Fixture,
    phases: &[(Workload, Shape)],
    bounds: Bounds,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    for workload in Workload::ALL {
        let variants: Vec<Shape> = phases
            .iter()
            .filter(|&&(w, _)| w == workload)
            .map(|&(_, shape)| shape)
            .collect();
        if variants.is_empty() {
            continue;
        }
        let measured = client_rt.block_on(run_workload(
            &fixture,
            workload,
            &variants,
            bounds,
            [client_rt.handle(), library_rt],
        ))?;
        for (shape, summary, cpu) in measured {
            let phase = format!("{name}/{}/{}", workload.name(), shape.name());
            let cpu_text = cpu.map_or_else(String::new, |cpu| {
                let split = cpu.split(summary.requests);
                let postgres = split
                    .postgres
                    .map_or_else(String::new, |pg| format!(", postgres {pg:.0} µs"));
                format!(
                    "  CPU/req server {:.0} µs{postgres}, client {:.0} µs",
                    split.server, split.client
                )
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
                shape,
                summary,
                cpu,
            });
        }
    }
    client_rt.block_on(fixture.stop())
}

/// A multi-threaded runtime of `workers` threads named `name`.
fn runtime(workers: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()
}

/// Set up the PostgreSQL fixture: a fresh schema on the test server, two
/// instances on it (A on `runtimes[0]`, where the setup runs, B on
/// `runtimes[1]`), sharing one KEK, and the cluster's postmaster.
fn start_postgres(
    client_rt: &tokio::runtime::Runtime,
    runtimes: [&Handle; 2],
    bounds: Bounds,
) -> Result<Fixture, BoxError> {
    let url = server_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let schema = format!("server_load_{}_{nanos:x}", std::process::id());
    let admin = client_rt.block_on(raw_client(&url))?;
    client_rt.block_on(admin.batch_execute(&format!("CREATE SCHEMA {schema}")))?;
    let mut fixture = client_rt.block_on(runtimes[0].spawn(Fixture::start(
        runtimes[0].clone(),
        Backend::Postgres,
        Some(in_schema(&url, &schema)),
        Some(Kek::generate()?),
        bounds,
    )))??;
    client_rt.block_on(fixture.add_instance(runtimes[1]))?;
    // The tables must be where the schema says, not in `public`.
    let tables: i64 = client_rt
        .block_on(admin.query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        ))?
        .get(0);
    if tables == 0 {
        return Err(format!("the server's tables are not in schema {schema}").into());
    }
    fixture.postmaster = client_rt.block_on(postmaster_of(&url));
    println!(
        "  setup: schema {schema}, 2 instances; PostgreSQL CPU {}",
        fixture.postmaster.map_or_else(
            || "not measured (server not on this machine)".to_owned(),
            |pid| format!("measured from postmaster {pid} and its children"),
        )
    );
    Ok(fixture)
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

    let server_rt = runtime(2, "server")?;
    let client_rt = runtime(1, CLIENT_THREADS)?;
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
        let phases: Vec<(Workload, Shape)> = Workload::ALL
            .iter()
            .flat_map(|&w| w.phases().iter().map(move |&shape| (w, shape)))
            .filter(|&(w, shape)| wanted(&format!("{name}/{}/{}", w.name(), shape.name())))
            .collect();
        if phases.is_empty() {
            continue;
        }
        println!("{name}:");
        let handle = server_rt.handle().clone();
        let fixture = client_rt
            .block_on(server_rt.spawn(Fixture::start(handle, backend, None, None, bounds)))??;
        run_backend(
            &client_rt,
            server_rt.handle(),
            name,
            fixture,
            &phases,
            bounds,
            &mut rows,
        )?;
    }

    let name = backend_name(Backend::Postgres);
    let phases: Vec<(Workload, Shape)> = POSTGRES_WORKLOADS
        .iter()
        .flat_map(|&w| POSTGRES_PHASES.iter().map(move |&shape| (w, shape)))
        .filter(|&(w, shape)| wanted(&format!("{name}/{}/{}", w.name(), shape.name())))
        .collect();
    if !phases.is_empty() {
        println!("{name} (instances A and B on 1-worker runtimes of their own):");
        let instance_rts = [runtime(1, "server-a")?, runtime(1, "server-b")?];
        let fixture = start_postgres(
            &client_rt,
            [instance_rts[0].handle(), instance_rts[1].handle()],
            bounds,
        )?;
        run_backend(
            &client_rt,
            instance_rts[0].handle(),
            name,
            fixture,
            &phases,
            bounds,
            &mut rows,
        )?;
    }

    report(&rows);
    report_postgres(&rows);
    println!(
        "\nwhole run {:.1} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    Ok(())
}
