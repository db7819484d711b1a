//! Seed 000, the device API, under `/authlance/identity/api/v1/realm`:
//! device registration and lifecycle, presence, push tokens, public keys,
//! E2EE group keys with versioned rotation, key requests and the group's
//! event stream (SSE with `Last-Event-ID` resume) — each a call on
//! [`Devices`].
//!
//! # Who may do what
//!
//! The realm comes from the bearer token ([`Caller`]). The library's groups
//! have no owners, so the server keeps memberships
//! ([`directory`]), granted by the admin bootstrap:
//!
//! * a **member** of the group may register devices, read devices, counts,
//!   presence, key versions and key requests, follow the events, and
//!   activate a pending device (the activating member seals the key);
//! * the **user who registered a device** may heartbeat it, set its push
//!   token and public key, fetch its envelope, and ask for the key with it;
//!   granting or rejecting a key request acts through one of the caller's
//!   own active devices;
//! * the **administrator** ([`RealmAdmin`]: admin token plus the realm in
//!   the `x-keystead-realm` header) revokes, removes and rotates, as the
//!   seed's `…/realm/admin/…` paths say.
//!
//! A caller outside the group gets 403 whether or not the group exists, so
//! group ids can't be probed.
//!
//! Beside the seed's endpoints, `GET …/groups/{groupId}` returns the group
//! (with its realm id, which front-ends bind envelopes to).
//!
//! # Wire format
//!
//! JSON field names are camelCase, as the library's types serialize
//! (`deviceId`, `publicKey`, `keyVersion`, `requestId`, …). Public keys and
//! envelopes (`encryptedKey`) are standard base64. Group ids are the
//! library's UUIDs (the seed's numeric ids are another product's choice).

use super::auth::{Caller, DeviceScope, RealmAdmin};
// `Path` and `Query` with the server's rejections (a 400 with a code, not
// axum's text).
use super::body::{JsonBody, PathParams as Path, QueryParams as Query, RawBody, parse_id};
use super::directory;
use super::error::ApiError;
use super::state::AppState;
use super::streams::{StreamSlot, Watched, until_unauthorized};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt as _};
use keystead::device::{DeviceStatus, Devices, PushToken, Rotation};
use keystead::id::{DeviceId, GroupId, KeyRequestId, RealmId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

/// The path prefix of seed 000.
pub const PREFIX: &str = "/authlance/identity/api/v1/realm";

/// The seed-000 routes.
pub fn routes() -> Router<AppState> {
    let admin = Router::new()
        .route(
            "/groups/{group_id}/devices/{device_id}",
            delete(remove_device),
        )
        .route(
            "/groups/{group_id}/devices/{device_id}/revoke",
            post(revoke_device),
        )
        .route("/groups/{group_id}/keys/rotate", post(rotate_key));
    let member = Router::new()
        .route("/groups/{group_id}", get(get_group))
        .route(
            "/groups/{group_id}/devices",
            get(list_devices).post(register_device),
        )
        .route("/groups/{group_id}/devices/count", get(device_count))
        .route("/groups/{group_id}/devices/presence", get(presence))
        .route("/groups/{group_id}/devices/events", get(events))
        .route(
            "/groups/{group_id}/devices/key-requests",
            get(list_key_requests).post(create_key_request),
        )
        .route(
            "/groups/{group_id}/devices/key-requests/{request_id}",
            get(get_key_request),
        )
        .route(
            "/groups/{group_id}/devices/key-requests/{request_id}/grant",
            post(grant_key_request),
        )
        .route(
            "/groups/{group_id}/devices/key-requests/{request_id}/reject",
            post(reject_key_request),
        )
        .route("/groups/{group_id}/devices/{device_id}", get(get_device))
        .route(
            "/groups/{group_id}/devices/{device_id}/activate",
            post(activate_device),
        )
        .route(
            "/groups/{group_id}/devices/{device_id}/heartbeat",
            post(heartbeat),
        )
        .route(
            "/groups/{group_id}/devices/{device_id}/key",
            get(device_key),
        )
        .route(
            "/groups/{group_id}/devices/{device_id}/public-key",
            put(update_public_key),
        )
        .route(
            "/groups/{group_id}/devices/{device_id}/push-token",
            put(set_push_token).delete(clear_push_token),
        )
        .route("/groups/{group_id}/keys/version", get(key_version));
    Router::new().nest(PREFIX, member.nest("/admin", admin))
}

// ----- access ------------------------------------------------------------

/// The group of the path, if the caller is a member of it.
async fn member(
    state: &AppState,
    caller: &Caller<DeviceScope>,
    group: &str,
) -> Result<(GroupId, Devices), ApiError> {
    let group: GroupId = parse_id("groupId", group)?;
    if !directory::is_member(&**state.ks.store(), caller.realm, group, caller.claims.sub).await? {
        return Err(ApiError::forbidden(
            "NOT_GROUP_MEMBER",
            "the caller is not a member of this group",
        ));
    }
    Ok((group, state.ks.devices(caller.realm)))
}

/// Check that `device` exists in `group` (404) and that the caller
/// registered it (403).
async fn own_device(
    state: &AppState,
    caller: &Caller<DeviceScope>,
    devices: &Devices,
    group: GroupId,
    device: DeviceId,
) -> Result<(), ApiError> {
    devices.get(group, device).await?;
    if directory::owns_device(
        &**state.ks.store(),
        caller.realm,
        group,
        caller.claims.sub,
        device,
    )
    .await?
    {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "NOT_DEVICE_OWNER",
            "the device belongs to another user",
        ))
    }
}

/// Decode a standard-base64 field.
fn base64_field(field: &'static str, text: &str) -> Result<Vec<u8>, ApiError> {
    STANDARD
        .decode(text.as_bytes())
        .map_err(|e| ApiError::bad_request(field, format!("not standard base64: {e}")))
}

fn json_of<T: serde::Serialize>(value: &T) -> Json<Value> {
    // The library's response types serialize infallibly (plain data).
    Json(serde_json::to_value(value).unwrap_or(Value::Null))
}

// ----- groups ------------------------------------------------------------

/// `GET …/groups/{groupId}` — not in the seed: the group itself (name,
/// realm id, key version, limits), which a front-end needs to bind its
/// envelopes to the realm and group.
async fn get_group(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    Ok(json_of(&devices.group(group).await?))
}

// ----- devices -----------------------------------------------------------

/// Body of device registration.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterDeviceRequest {
    name: String,
    platform: String,
    public_key: String,
}

async fn register_device(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
    JsonBody(body): JsonBody<RegisterDeviceRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let public_key = base64_field("publicKey", &body.public_key)?;
    let device = devices
        .register(group, &body.name, &body.platform, &public_key)
        .await?;
    // Ownership is the server's record, written after the library's
    // commit; if this write fails the device exists unowned (the admin can
    // remove it) and the client sees the error.
    directory::add_device(
        &**state.ks.store(),
        caller.realm,
        group,
        caller.claims.sub,
        device.id,
    )
    .await?;
    tracing::info!(group = %group, device = %device.id, "device registered");
    Ok((StatusCode::CREATED, json_of(&device)))
}

/// Query of the device list.
#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_devices(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some("active") => Some(DeviceStatus::Active),
        Some("pending") => Some(DeviceStatus::Pending),
        Some("revoked") => Some(DeviceStatus::Revoked),
        Some(other) => {
            return Err(ApiError::bad_request(
                "status",
                format!("{other:?} is not one of active, pending, revoked"),
            ));
        }
    };
    Ok(json_of(&devices.list(group, status).await?))
}

async fn device_count(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    Ok(json_of(&devices.device_count(group).await?))
}

async fn get_device(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    Ok(json_of(&devices.get(group, device).await?))
}

/// Body of activation (and the envelope half of a grant).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActivateDeviceRequest {
    encrypted_key: String,
}

async fn activate_device(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
    JsonBody(body): JsonBody<ActivateDeviceRequest>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    let envelope = base64_field("encryptedKey", &body.encrypted_key)?;
    Ok(json_of(&devices.activate(group, device, &envelope).await?))
}

async fn heartbeat(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    own_device(&state, &caller, &devices, group, device).await?;
    devices.heartbeat(group, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn presence(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    Ok(json_of(&devices.presence(group, None).await?))
}

/// Query of the envelope fetch: an older kept version, if wanted.
#[derive(Debug, Deserialize)]
struct KeyQuery {
    version: Option<u32>,
}

async fn device_key(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
    Query(query): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    own_device(&state, &caller, &devices, group, device).await?;
    let version = match query.version {
        Some(v) => v,
        None => devices.group(group).await?.key_version,
    };
    let envelope = devices.device_key_at(group, device, version).await?;
    Ok(Json(json!({
        "deviceId": device,
        "groupId": group,
        "keyVersion": version,
        "encryptedKey": STANDARD.encode(envelope),
    })))
}

/// Body of a public-key change.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdatePublicKeyRequest {
    public_key: String,
}

async fn update_public_key(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdatePublicKeyRequest>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    let public_key = base64_field("publicKey", &body.public_key)?;
    own_device(&state, &caller, &devices, group, device).await?;
    devices
        .update_public_key(group, device, &public_key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_push_token(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
    JsonBody(body): JsonBody<PushToken>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    own_device(&state, &caller, &devices, group, device).await?;
    devices.set_push_token(group, device, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_push_token(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    own_device(&state, &caller, &devices, group, device).await?;
    devices.clear_push_token(group, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- group keys --------------------------------------------------------

/// Query of the key-version check.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyVersionQuery {
    device_id: Option<String>,
}

async fn key_version(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
    Query(query): Query<KeyVersionQuery>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device = match query.device_id.as_deref() {
        Some(text) => Some(parse_id::<DeviceId>("deviceId", text)?),
        None => caller_device(&state, &caller, &devices, group, false).await?,
    };
    match device {
        Some(device) => Ok(json_of(&devices.key_version_info(group, device).await?)),
        // No device of the caller: nothing of theirs needs an update.
        None => Ok(Json(json!({
            "currentVersion": devices.group(group).await?.key_version,
            "deviceVersion": null,
            "needsUpdate": false,
        }))),
    }
}

/// The caller's newest device in `group` that is not revoked (and, with
/// `active`, that is active).
async fn caller_device(
    state: &AppState,
    caller: &Caller<DeviceScope>,
    devices: &Devices,
    group: GroupId,
    active: bool,
) -> Result<Option<DeviceId>, ApiError> {
    let mine =
        directory::devices_of(&**state.ks.store(), caller.realm, group, caller.claims.sub).await?;
    for id in mine.into_iter().rev() {
        let device = match devices.get(group, id).await {
            Ok(d) => d,
            Err(keystead::Error::Device(keystead::device::DeviceError::NotFound)) => continue,
            Err(e) => return Err(e.into()),
        };
        let fits = if active {
            device.status == DeviceStatus::Active
        } else {
            device.status != DeviceStatus::Revoked
        };
        if fits {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// One envelope of a rotation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvelopeEntry {
    device_id: String,
    encrypted_key: String,
}

/// Body of a rotation (and the optional body of a revocation).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateKeyRequest {
    expected_version: u32,
    envelopes: Vec<EnvelopeEntry>,
}

impl RotateKeyRequest {
    fn into_rotation(self) -> Result<Rotation, ApiError> {
        let mut envelopes = Vec::with_capacity(self.envelopes.len());
        for entry in self.envelopes {
            envelopes.push((
                parse_id("envelopes.deviceId", &entry.device_id)?,
                base64_field("envelopes.encryptedKey", &entry.encrypted_key)?,
            ));
        }
        Ok(Rotation {
            expected_version: self.expected_version,
            envelopes,
        })
    }
}

async fn rotate_key(
    admin: RealmAdmin,
    State(state): State<AppState>,
    Path(group): Path<String>,
    JsonBody(body): JsonBody<RotateKeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let group: GroupId = parse_id("groupId", &group)?;
    let rotation = body.into_rotation()?;
    let result = state
        .ks
        .devices(admin.realm)
        .rotate(group, rotation)
        .await?;
    tracing::info!(group = %group, version = result.new_version, "group key rotated");
    Ok(json_of(&result))
}

async fn revoke_device(
    admin: RealmAdmin,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let group: GroupId = parse_id("groupId", &group)?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    // The rotation payload is optional: an empty body revokes only.
    let rotation = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: RotateKeyRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
        Some(parsed.into_rotation()?)
    };
    let result = state
        .ks
        .devices(admin.realm)
        .revoke(group, device, rotation)
        .await?;
    tracing::info!(group = %group, device = %device, rotated = result.is_some(), "device revoked");
    Ok(match result {
        Some(rotation) => json_of(&rotation).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn remove_device(
    admin: RealmAdmin,
    State(state): State<AppState>,
    Path((group, device)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let group: GroupId = parse_id("groupId", &group)?;
    let device: DeviceId = parse_id("deviceId", &device)?;
    state.ks.devices(admin.realm).remove(group, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- key requests ------------------------------------------------------

/// Body of a key request: the caller's device that lacks the key.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateKeyRequestRequest {
    device_id: String,
}

async fn create_key_request(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
    JsonBody(body): JsonBody<CreateKeyRequestRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let device: DeviceId = parse_id("deviceId", &body.device_id)?;
    own_device(&state, &caller, &devices, group, device).await?;
    let request = devices.create_key_request(group, device).await?;
    Ok((StatusCode::CREATED, json_of(&request)))
}

async fn list_key_requests(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    Ok(json_of(&devices.key_requests(group).await?))
}

async fn get_key_request(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, request)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let request: KeyRequestId = parse_id("requestId", &request)?;
    Ok(json_of(&devices.key_request(group, request).await?))
}

/// Body of a grant: the granting device (the caller's, active) and the
/// group key sealed to the requester.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GrantKeyRequestRequest {
    device_id: Option<String>,
    encrypted_key: String,
}

/// The caller's device acting on a key request: the named one (which the
/// caller must own) or the caller's newest active device.
async fn acting_device(
    state: &AppState,
    caller: &Caller<DeviceScope>,
    devices: &Devices,
    group: GroupId,
    named: Option<&str>,
) -> Result<DeviceId, ApiError> {
    if let Some(text) = named {
        let device: DeviceId = parse_id("deviceId", text)?;
        own_device(state, caller, devices, group, device).await?;
        return Ok(device);
    }
    caller_device(state, caller, devices, group, true)
        .await?
        .ok_or_else(|| {
            ApiError::forbidden(
                "NO_ACTIVE_DEVICE",
                "the caller has no active device in this group to act with",
            )
        })
}

async fn grant_key_request(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, request)): Path<(String, String)>,
    JsonBody(body): JsonBody<GrantKeyRequestRequest>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let request: KeyRequestId = parse_id("requestId", &request)?;
    let envelope = base64_field("encryptedKey", &body.encrypted_key)?;
    let granter =
        acting_device(&state, &caller, &devices, group, body.device_id.as_deref()).await?;
    devices
        .grant_key_request(group, request, granter, &envelope)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of a rejection: the acting device, if not the caller's newest
/// active one (the seed's reject has no body).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RejectQuery {
    device_id: Option<String>,
}

async fn reject_key_request(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path((group, request)): Path<(String, String)>,
    Query(query): Query<RejectQuery>,
) -> Result<StatusCode, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let request: KeyRequestId = parse_id("requestId", &request)?;
    let by = acting_device(&state, &caller, &devices, group, query.device_id.as_deref()).await?;
    devices.reject_key_request(group, request, by).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- events ------------------------------------------------------------

/// Query of the event stream.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    device_id: Option<String>,
    /// For clients that can't set headers (`EventSource` polyfills).
    last_event_id: Option<String>,
}

/// The sequence to resume after: `Last-Event-ID`, else the query's
/// `lastEventId`, else 0 (from the start).
fn resume_after(headers: &HeaderMap, query: Option<&str>) -> Result<u64, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    match header.or(query) {
        None | Some("") => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            ApiError::bad_request("Last-Event-ID", "the id of an event: a sequence number")
        }),
    }
}

async fn events(
    caller: Caller<DeviceScope>,
    State(state): State<AppState>,
    Path(group): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (group, devices) = member(&state, &caller, &group).await?;
    let after = resume_after(&headers, query.last_event_id.as_deref())?;
    let device = query
        .device_id
        .as_deref()
        .map(|text| parse_id::<DeviceId>("deviceId", text))
        .transpose()?;
    let slot = StreamSlot::claim(&state, caller.realm, caller.claims.sub)?;
    let stream = match device {
        Some(device) => {
            devices.get(group, device).await?;
            devices.subscribe_device(group, device, after).await?
        }
        None => devices.subscribe(group, after).await?,
    };
    let realm: RealmId = caller.realm;
    let mut closing = state.closing.subscribe();
    // Ends the stream when its authorization ends (or the server closes),
    // then tells the client why in a last `end` event.
    let (ended, why) = tokio::sync::oneshot::channel::<String>();
    let watched = Watched {
        realm,
        claims: caller.claims,
        group,
        device,
    };
    let watchdog = async move {
        let reason = tokio::select! {
            reason = until_unauthorized(state, watched) => reason,
            _ = closing.wait_for(|closing| *closing) => "SERVER_CLOSING".to_owned(),
        };
        let _ = ended.send(reason);
    };
    let last = futures::stream::once(why).filter_map(|reason| {
        std::future::ready(reason.ok().map(|code| {
            Ok(Event::default()
                .event("end")
                .data(json!({ "code": code }).to_string()))
        }))
    });
    let stream = stream
        .map(move |item| {
            // The stream owns its slot: dropped with it.
            let _ = &slot;
            Ok(match item {
                Ok(event) => {
                    let name = serde_json::to_value(event.event_type)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "event".into());
                    Event::default()
                        .id(event.seq.to_string())
                        .event(name)
                        .json_data(&event)
                        .unwrap_or_else(|_| Event::default().comment("unserializable event"))
                }
                Err(e) => {
                    // The library ends the stream after an error; tell the
                    // client why, so it reconnects with its last id.
                    tracing::warn!(realm = %realm, code = e.code(), "event stream failed");
                    Event::default()
                        .event("error")
                        .data(json!({"code": e.code()}).to_string())
                }
            })
        })
        .take_until(watchdog)
        .chain(last);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
