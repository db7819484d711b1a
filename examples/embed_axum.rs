//! The README's "Embedding in an existing axum app", as a program: an axum app
//! with its own routes that logs users in and takes verified tokens as
//! handler arguments. `cargo run --example embed_axum`; a test keeps the
//! README block equal to this file.
#![forbid(unsafe_code)]

use axum::extract::{FromRef, State};
use axum::{
    Json, Router,
    routing::{get, post},
};
use keystead::realm::RealmSettings;
use keystead::token::{AccessRequest, ExchangeOutcome, Grant};
use keystead::{
    Keystead, crypto::at_rest::StaticKeyProvider, oauth::NewClient, store::MemoryStore,
};
use keystead_axum::{
    error::ApiError,
    extract::{Auth, Claims, RequireScope, RouteScope},
};
use serde_json::{Value, json};

/// Your app's state, with keystead beside your own fields.
#[derive(Clone)]
struct App {
    ks: Keystead,
    auth: Auth,
    realm: keystead::id::RealmId,
}

/// Lets the extractors find what verifies tokens.
impl FromRef<App> for Auth {
    fn from_ref(app: &App) -> Auth {
        app.auth.clone()
    }
}

/// The scope your API's routes need; tokens without it get a 403.
struct Notes;
impl RouteScope for Notes {
    const SCOPE: &'static str = "notes";
}

async fn login(State(app): State<App>, Json(body): Json<Value>) -> Result<Json<Value>, ApiError> {
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    let request = AccessRequest::public("web", vec!["notes".into()]); // no more than the client may
    let grant = Grant::Password {
        username: field("username"),
        password: field("password").into(),
        request,
    };
    match app.ks.tokens(app.realm).exchange(grant).await? {
        ExchangeOutcome::Tokens(t) => Ok(Json(json!({ "access_token": t.access_token.expose() }))),
        _ => Err(ApiError::unauthorized(
            "a second factor is due: see the server's login actions",
        )),
    }
}

async fn me(Claims(token): Claims) -> String {
    token.claims.sub.to_string() // signature, audience, expiry and live session all checked
}

async fn notes(caller: RequireScope<Notes>) -> String {
    format!("notes of {}", caller.claims.sub)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .keys(StaticKeyProvider::generate()?)
        .build()?;
    let realm = ks
        .realms()
        .create("acme", RealmSettings::default())
        .await?
        .id;
    // Tokens go only to registered clients, bounded by their registration.
    ks.oauth(realm)
        .create_client(NewClient::first_party(
            "web",
            "my-api",
            vec!["notes".into()],
        ))
        .await?;
    let alice = ks
        .users(realm)
        .register("alice", None, "correct horse battery".into())
        .await?;
    let auth = Auth::for_realm(ks.clone(), realm, "my-api");
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/notes", get(notes)) // … beside your existing routes
        .with_state(App { ks, auth, realm });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await }); // in your app: .await? it

    let http = reqwest::Client::new();
    let body = json!({ "username": "alice", "password": "correct horse battery" });
    let tokens: Value = http
        .post(format!("{url}/login"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let token = tokens["access_token"].as_str().unwrap_or_default();
    let me = http
        .get(format!("{url}/me"))
        .bearer_auth(token)
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(me, alice.id.to_string());
    let notes = http
        .get(format!("{url}/notes"))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(notes.status(), 200);
    let forged = http
        .get(format!("{url}/me"))
        .bearer_auth("not.a.token")
        .send()
        .await?;
    assert_eq!(forged.status(), 401); // with WWW-Authenticate: Bearer error="invalid_token"
    Ok(())
}
