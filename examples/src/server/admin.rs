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
//!
//! `{realm}` is the realm's name. Every route needs the [`Admin`] token.

use super::auth::Admin;
use super::body::{JsonBody, parse_id};
use super::directory;
use super::error::ApiError;
use super::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use keystead::device::NewGroup;
use keystead::id::{GroupId, UserId};
use keystead::realm::{Realm, RealmSettings};
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
            put(add_member),
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
}

/// The JSON of a realm.
pub fn realm_json(realm: &Realm) -> Value {
    json!({
        "id": realm.id.to_string(),
        "name": realm.name,
        "issuer": realm.settings.issuer_url.clone()
            .unwrap_or_else(|| format!("urn:keystead:realm:{}", realm.id)),
        "status": realm.status,
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
    tracing::info!(realm = %realm.id, name = %realm.name, "realm created");
    Ok((StatusCode::CREATED, Json(realm_json(&realm))))
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

async fn add_member(
    _: Admin,
    State(state): State<AppState>,
    Path((realm, group, user)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let group: GroupId = parse_id("groupId", &group)?;
    let user: UserId = parse_id("userId", &user)?;
    let realm = state.ks.realms().get_by_name(&realm).await?;
    state.ks.devices(realm.id).group(group).await?;
    state.ks.users(realm.id).get(user).await?;
    directory::add_member(&**state.ks.store(), realm.id, group, user).await?;
    Ok(StatusCode::NO_CONTENT)
}
