//! The admin bootstrap no seed covers: creating realms, a realm's WebAuthn
//! relying party, and the device groups and group memberships the device
//! API (seed 000) works on.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | `/admin/realms` | `{"name", "issuer"?}` | 201 realm |
//! | PUT | `/admin/realms/{realm}/webauthn` | `{"rp_id", "rp_name", "origins": [..], "passwordless"?}` | 200 relying party |
//! | POST | `/admin/realms/{realm}/groups` | `{"name", "deviceLimit"?, "keyGenerations"?, "members"?: [userId]}` | 201 group |
//! | PUT | `/admin/realms/{realm}/groups/{groupId}/members/{userId}` | — | 204 |
//! | DELETE | `/admin/realms/{realm}/groups/{groupId}/members/{userId}` | — | 204 (ends the user's device access and event streams of the group) |
//! | POST | `/admin/realms/{realm}/clients` | [`NewClientBody`] | 201 client (+ `client_secret`, shown once) |
//! | GET | `/admin/realms/{realm}/clients?after=&limit=` | — | 200 `{"clients": [..], "next"}` |
//! | GET | `/admin/realms/{realm}/clients/{client_id}` | — | 200 client |
//! | PATCH | `/admin/realms/{realm}/clients/{client_id}` | [`ClientUpdateBody`] | 200 client |
//! | DELETE | `/admin/realms/{realm}/clients/{client_id}` | — | 204 (its tokens expire) |
//! | POST | `/admin/realms/{realm}/clients/{client_id}/secret` | — | 200 `{"client_secret"}` (the old one stops working) |
//!
//! `{realm}` is the realm's name. Every route needs the [`Admin`] token.
//! OAuth clients ([`keystead::oauth::client`]) are what the
//! authorization-code flow ([`super::oidc::authorize`]) and the
//! `client_credentials` grant work with; a confidential client's secret is
//! in the answer that creates (or rotates) it and nowhere else.

use super::auth::{Admin, RouteScope as _};
// `Path` and `Query` with the server's rejections (a 400 with a code, not
// axum's text).
use super::body::{JsonBody, PathParams as Path, QueryParams as Query, parse_id};
use super::directory;
use super::error::ApiError;
use super::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use keystead::device::NewGroup;
use keystead::id::{GroupId, UserId};
use keystead::oauth::{Client, ClientKind, ClientUpdate, GrantType, NewClient};
use keystead::realm::{Realm, RealmSettings, SignUp};
use keystead::store::StorageError;
use keystead::webauthn::RelyingParty;
use serde::Deserialize;
use serde_json::{Value, json};

/// The admin routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/realms", post(create_realm))
        .route("/admin/realms/{realm}/webauthn", put(configure_webauthn))
        .route("/admin/realms/{realm}/groups", post(create_group))
        .route(
            "/admin/realms/{realm}/groups/{group_id}/members/{user_id}",
            put(add_member).delete(remove_member),
        )
        .route(
            "/admin/realms/{realm}/clients",
            post(create_client).get(list_clients),
        )
        .route(
            "/admin/realms/{realm}/clients/{client_id}",
            get(get_client).patch(update_client).delete(delete_client),
        )
        .route(
            "/admin/realms/{realm}/clients/{client_id}/secret",
            post(rotate_client_secret),
        )
}

/// Body of `POST /admin/realms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRealm {
    /// The realm's unique name (a DNS label).
    pub name: String,
    /// The `iss` of its tokens; `None` keeps `urn:keystead:realm:<id>`.
    pub issuer: Option<String>,
    /// Whether and how anyone may sign up through `…/registrations`:
    /// `closed` (the default: accounts are made by the administrator),
    /// `open`, or `verified_email`.
    #[serde(default)]
    pub sign_up: SignUp,
}

/// The JSON of a realm.
pub fn realm_json(realm: &Realm) -> Value {
    json!({
        "id": realm.id.to_string(),
        "name": realm.name,
        "issuer": realm.settings.issuer_url.clone()
            .unwrap_or_else(|| format!("urn:keystead:realm:{}", realm.id)),
        "status": realm.status,
        "signUp": realm.settings.sign_up,
        "createdAt": realm.created_at,
    })
}

async fn create_realm(
    _: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewRealm>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = state.ks.store();
    if let Some(issuer) = &body.issuer
        && directory::realm_of_issuer(&**store, issuer)
            .await?
            .is_some()
    {
        return Err(issuer_taken());
    }
    let settings = RealmSettings {
        issuer_url: body.issuer.clone(),
        sign_up: body.sign_up,
        ..RealmSettings::default()
    };
    let realm = state.ks.realms().create(&body.name, settings).await?;
    if let Some(issuer) = &body.issuer {
        match directory::claim_issuer(&**store, issuer, realm.id).await {
            Ok(()) => {}
            Err(e) => {
                // Another realm claimed the issuer meanwhile (or the store
                // failed): undo the realm so no realm has an unroutable
                // issuer.
                state.ks.realms().delete(realm.id).await?;
                return Err(match e {
                    StorageError::Conflict { .. } => issuer_taken(),
                    other => other.into(),
                });
            }
        }
    }
    register_first_party_clients(&state, realm.id).await?;
    tracing::info!(realm = %realm.id, name = %realm.name, "realm created");
    Ok((StatusCode::CREATED, Json(realm_json(&realm))))
}

/// The scopes the server's own front-ends (login actions, the account
/// API) may get for a user: identity and the server's own APIs (account,
/// devices, portal). Anything more — `introspect`, another API's scopes —
/// comes only from a client an administrator registers.
pub const FIRST_PARTY_SCOPES: [&str; 4] = [
    "openid",
    super::auth::AccountScope::SCOPE,
    super::auth::DeviceScope::SCOPE,
    super::auth::PortalScope::SCOPE,
];

/// Register the server's first-party clients in a new realm
/// ([`keystead::oauth::policy`]'s "which client"): the login actions'
/// [`DEFAULT_CLIENT_ID`](super::oidc::DEFAULT_CLIENT_ID) and the account
/// API's [`ACCOUNT_CLIENT_ID`](super::account::ACCOUNT_CLIENT_ID), public,
/// direct login and refresh, for the server's audience with
/// [`FIRST_PARTY_SCOPES`]. An administrator narrows or deletes them like
/// any client.
pub async fn register_first_party_clients(
    state: &AppState,
    realm: keystead::id::RealmId,
) -> Result<(), keystead::Error> {
    let oauth = state.ks.oauth(realm);
    for id in [
        super::oidc::DEFAULT_CLIENT_ID,
        super::account::ACCOUNT_CLIENT_ID,
    ] {
        let scopes = FIRST_PARTY_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        match oauth
            .create_client(NewClient::first_party(
                id,
                state.audience.to_string(),
                scopes,
            ))
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == "OAUTH_CLIENT_EXISTS" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn issuer_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "ISSUER_TAKEN",
        "another realm already issues tokens as this issuer",
    )
}

/// Body of `PUT /admin/realms/{realm}/webauthn`: the realm's WebAuthn
/// relying party (see [`RelyingParty`] for the rules).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelyingPartyBody {
    /// The rp id: the registrable domain passkeys are scoped to.
    pub rp_id: String,
    /// The name authenticators show.
    pub rp_name: String,
    /// The origins the ceremonies may run from.
    pub origins: Vec<String>,
    /// Whether a passkey alone may log in (default `false`: second factor
    /// only).
    #[serde(default)]
    pub passwordless: bool,
}

/// The JSON of a relying party, in the names of [`RelyingPartyBody`].
pub fn relying_party_json(rp: &RelyingParty) -> Value {
    json!({
        "rp_id": rp.id,
        "rp_name": rp.name,
        "origins": rp.origins,
        "passwordless": rp.passwordless,
    })
}

/// Set (or replace) the realm's relying party. Replacing the rp id orphans
/// the passkeys registered under the old one (they are scoped to it).
async fn configure_webauthn(
    _: Admin,
    State(state): State<AppState>,
    Path(realm): Path<String>,
    JsonBody(body): JsonBody<RelyingPartyBody>,
) -> Result<Json<Value>, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let rp = RelyingParty {
        id: body.rp_id,
        name: body.rp_name,
        origins: body.origins,
        passwordless: body.passwordless,
    };
    let rp = state
        .ks
        .webauthn(realm.id)
        .configure(rp)
        .await
        .map_err(body_field_names)?;
    tracing::info!(realm = %realm.id, rp_id = %rp.id, "WebAuthn relying party set");
    Ok(Json(relying_party_json(&rp)))
}

/// A validation error naming the library's field (`relying_party.id`) in
/// the body's names (`rp_id`), so the client sees what it sent.
fn body_field_names(e: keystead::Error) -> ApiError {
    if let keystead::Error::Validation(v) = &e {
        let field = match v.field {
            "relying_party.id" => "rp_id",
            "relying_party.name" => "rp_name",
            "relying_party.origins" => "origins",
            _ => return e.into(),
        };
        return ApiError::bad_request(field, v.problem.clone());
    }
    e.into()
}

/// Body of `POST /admin/realms/{realm}/groups`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewGroupBody {
    /// The group's name.
    pub name: String,
    /// Device limit override.
    pub device_limit: Option<u32>,
    /// Key generations to keep.
    pub key_generations: Option<u32>,
    /// Users who may use the group's device API.
    #[serde(default)]
    pub members: Vec<String>,
}

async fn create_group(
    _: Admin,
    State(state): State<AppState>,
    Path(realm): Path<String>,
    JsonBody(body): JsonBody<NewGroupBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let users = state.ks.users(realm.id);
    let mut members = Vec::with_capacity(body.members.len());
    for m in &body.members {
        let id: UserId = parse_id("members", m)?;
        users.get(id).await?;
        members.push(id);
    }
    let devices = state.ks.devices(realm.id);
    let group = devices
        .create_group(
            &body.name,
            NewGroup {
                device_limit: body.device_limit,
                key_generations: body.key_generations,
            },
        )
        .await?;
    for user in &members {
        directory::add_member(&**state.ks.store(), realm.id, group.id, *user).await?;
    }
    let mut out = serde_json::to_value(&group).unwrap_or_default();
    out["members"] = json!(members.iter().map(ToString::to_string).collect::<Vec<_>>());
    Ok((StatusCode::CREATED, Json(out)))
}

/// The realm, group and user a membership path names.
async fn membership(
    state: &AppState,
    (realm, group, user): (String, String, String),
) -> Result<(Realm, GroupId, UserId), ApiError> {
    let group: GroupId = parse_id("groupId", &group)?;
    let user: UserId = parse_id("userId", &user)?;
    let realm = state.ks.realms().get_by_name(&realm).await?;
    Ok((realm, group, user))
}

async fn add_member(
    _: Admin,
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (realm, group, user) = membership(&state, path).await?;
    state.ks.devices(realm.id).group(group).await?;
    state.ks.users(realm.id).get(user).await?;
    directory::add_member(&**state.ks.store(), realm.id, group, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member(
    _: Admin,
    State(state): State<AppState>,
    Path(path): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (realm, group, user) = membership(&state, path).await?;
    directory::remove_member(&**state.ks.store(), realm.id, group, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /admin/realms/{realm}/clients` (see
/// [`NewClient`] for the rules the library checks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    /// The `client_id`.
    pub client_id: String,
    /// `public` (no secret, PKCE) or `confidential` (a secret).
    pub kind: ClientKind,
    /// Exact redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Default: `["authorization_code", "refresh_token"]`.
    pub grant_types: Option<Vec<GrantType>>,
    /// Default: `["openid"]`.
    pub scopes: Option<Vec<String>>,
    /// The `aud` of its access tokens. Default: the server's audience, so
    /// the tokens also work on this server's own endpoints (userinfo, the
    /// account API), which accept only that audience.
    pub audience: Option<String>,
    /// Access-token lifetime override, seconds.
    pub access_token_secs: Option<u32>,
    /// Default `true` (public clients can't turn it off).
    pub require_pkce: Option<bool>,
    /// Further audiences it may ask for with `resource` (RFC 8707).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Token exchange: subject-token audiences it may present.
    #[serde(default)]
    pub subject_audiences: Vec<String>,
}

/// Body of `PATCH /admin/realms/{realm}/clients/{client_id}`: absent
/// fields stay; `access_token_secs: null` returns to the realm's lifetime.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUpdateBody {
    /// New redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// New grant types.
    pub grant_types: Option<Vec<GrantType>>,
    /// New scope values.
    pub scopes: Option<Vec<String>>,
    /// New audience.
    pub audience: Option<String>,
    /// New lifetime; `null` for the realm's.
    #[serde(default, deserialize_with = "present")]
    pub access_token_secs: Option<Option<u32>>,
    /// Whether PKCE is required.
    pub require_pkce: Option<bool>,
    /// New further audiences.
    pub resources: Option<Vec<String>>,
    /// New subject-token audiences.
    pub subject_audiences: Option<Vec<String>>,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value
/// — the three cases of [`ClientUpdate::access_token_secs`].
#[allow(clippy::option_option)]
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

/// The JSON of a client (never a secret).
pub fn client_json(client: &Client) -> Value {
    json!({
        "client_id": client.client_id,
        "kind": client.kind,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "scopes": client.scopes,
        "audience": client.audience,
        "access_token_secs": client.access_token_secs,
        "require_pkce": client.require_pkce,
        "resources": client.resources,
        "subject_audiences": client.subject_audiences,
        "created_at": client.created_at,
        "updated_at": client.updated_at,
    })
}

async fn create_client(
    _: Admin,
    State(state): State<AppState>,
    Path(realm): Path<String>,
    JsonBody(body): JsonBody<NewClientBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let defaults = NewClient::public(body.client_id.clone(), String::new());
    let new = NewClient {
        client_id: body.client_id,
        kind: body.kind,
        redirect_uris: body.redirect_uris,
        grant_types: body.grant_types.unwrap_or(defaults.grant_types),
        scopes: body.scopes.unwrap_or(defaults.scopes),
        audience: Some(body.audience.unwrap_or_else(|| state.audience.to_string())),
        access_token_secs: body.access_token_secs,
        require_pkce: body.require_pkce.unwrap_or(true),
        resources: body.resources,
        subject_audiences: body.subject_audiences,
    };
    let created = state.ks.oauth(realm.id).create_client(new).await?;
    tracing::info!(realm = %realm.id, client_id = %created.client.client_id, "OAuth client registered");
    let mut out = client_json(&created.client);
    if let Some(secret) = &created.secret {
        out["client_secret"] = secret.expose().into();
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// `?after=&limit=` of the client list.
#[derive(Debug, Deserialize)]
pub struct ClientPage {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_clients(
    _: Admin,
    State(state): State<AppState>,
    Path(realm): Path<String>,
    Query(page): Query<ClientPage>,
) -> Result<Json<Value>, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let page = state
        .ks
        .oauth(realm.id)
        .list_clients(page.after.as_deref(), page.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!({
        "clients": page.items.iter().map(client_json).collect::<Vec<_>>(),
        "next": page.next,
    })))
}

async fn get_client(
    _: Admin,
    State(state): State<AppState>,
    Path((realm, client_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let client = state.ks.oauth(realm.id).get_client(&client_id).await?;
    Ok(Json(client_json(&client)))
}

async fn update_client(
    _: Admin,
    State(state): State<AppState>,
    Path((realm, client_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ClientUpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let update = ClientUpdate {
        redirect_uris: body.redirect_uris,
        grant_types: body.grant_types,
        scopes: body.scopes,
        audience: body.audience,
        access_token_secs: body.access_token_secs,
        require_pkce: body.require_pkce,
        resources: body.resources,
        subject_audiences: body.subject_audiences,
    };
    let client = state
        .ks
        .oauth(realm.id)
        .update_client(&client_id, update)
        .await?;
    Ok(Json(client_json(&client)))
}

async fn delete_client(
    _: Admin,
    State(state): State<AppState>,
    Path((realm, client_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    state.ks.oauth(realm.id).delete_client(&client_id).await?;
    tracing::info!(realm = %realm.id, client_id = %client_id, "OAuth client deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_client_secret(
    _: Admin,
    State(state): State<AppState>,
    Path((realm, client_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let realm = state.ks.realms().get_by_name(&realm).await?;
    let secret = state
        .ks
        .oauth(realm.id)
        .rotate_client_secret(&client_id)
        .await?;
    Ok(Json(
        json!({ "client_id": client_id, "client_secret": secret.expose() }),
    ))
}
