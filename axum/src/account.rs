//! Seeds 001/002, the authentication API, under `/api/v1/authenticate` and
//! `/api/v1/user/…`: login by user/password (with a second factor), by
//! application token or by refresh token; TOTP keys pending → active; MFA
//! key statuses and types; trusted devices.
//!
//! | method | path | library call |
//! |---|---|---|
//! | POST | `/api/v1/authenticate` | `Users::authenticate`, `Mfa::complete_challenge`, `Users::authenticate_app_token`, `Tokens::refresh`, `Mfa::trust_device` |
//! | POST | `/api/v1/user/mfa` | `Users::verify_password` + `Mfa::create_totp_key` |
//! | PATCH | `/api/v1/user/mfa/{key_id}` | `Mfa::activate` |
//! | DELETE | `/api/v1/user/{user_id}/mfa/{key_id}`, `/api/v1/user/my/mfa/{key_id}` | `Mfa::delete_key` |
//! | GET | `/api/v1/user/mfa/status` | `Mfa::key_statuses` |
//! | GET | `/api/v1/user/mfa/type` | `Mfa::key_types` |
//! | GET | `/api/v1/user/{user_id}/mfa/trusted_device` (and `my/…`, `mfa/trusted_device`) | `Mfa::list_trusted_devices` |
//! | DELETE | `/api/v1/user/{user_id}/mfa/trusted_device/{device_id}` (and `my/…`, `mfa/trusted_device/{id}`) | `Mfa::delete_trusted_device` |
//!
//! # Realm
//!
//! `/api/v1/authenticate` runs before there is a token to take the realm
//! from, so the client names it in the `x-keystead-realm` header. Every
//! other path takes it from the bearer token ([`Caller`]).
//!
//! # Login
//!
//! The body is one of
//!
//! * `{"username", "password"}` — plus, for a user with MFA, one of `code`
//!   (TOTP), `recovery_code` or `fingerprint` (a trusted-device token). A
//!   correct password without one answers `401 MFA_REQUIRED` with
//!   `challenge_id` and `factors`; send `{"challenge_id", "code"}` (or
//!   `recovery_code`, `fingerprint`) to finish without the password again.
//!   `"trust_device": true` with a code asks for a trusted-device token,
//!   answered as `fingerprint` (labelled with the `User-Agent`).
//!   In a realm that requires MFA, a user without a key gets
//!   `403 MFA_ENROLLMENT_REQUIRED` with `challenge_id`: enrol through seed
//!   003's `login-actions/setup-otp` and `verify-otp` with it as the bearer.
//! * `{"application_token"}` — a session with the token's scopes.
//! * `{"refresh_token"}` — rotates it (reuse revokes the family).
//!
//! The answer is `{"auth_token", "refresh_token", "expires_in"}` (and
//! `fingerprint` when asked for), issued to client [`ACCOUNT_CLIENT_ID`].
//!
//! # Ids and numbers
//!
//! Key, user and device ids are the library's UUID strings (the seed's
//! numbers are another product's choice). Status and type ids are the
//! library's own ([`MfaKeyStatus::id`], [`MfaKeyType::id`]), which follow
//! the seed — its activation call says "use 1 for ACTIVE": `1` ACTIVE, `2`
//! ACTIVATION_PENDING; type `1` is TOTP.
//!
//! # Who may act on a user
//!
//! The user itself (`{user_id}` equal to the token's `sub`, or `my`), or
//! the administrator ([`RealmAdmin`]: admin token plus the realm header)
//! for any user of that realm. Anyone else gets 403.

use super::auth::{AccountScope, Caller, REALM_HEADER, RealmAdmin};
// `Path` with the server's rejections (a 400 with a code, not axum's text).
use super::body::{JsonBody, PathParams as Path, parse_id};
use super::error::ApiError;
use super::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use keystead::id::{ChallengeId, MfaKeyId, RealmId, TrustedDeviceId, UserId};
use keystead::mfa::{MfaAnswer, MfaKey, MfaKeyStatus, MfaKeyType, TrustedDevice};
use keystead::secret::SecretString;
use keystead::token::{AccessRequest, TokenResponse};
use keystead::user::{Authority, LoginOutcome, Session};
use serde::Deserialize;
use serde_json::{Value, json};

/// The `client_id` of tokens this API issues.
pub const ACCOUNT_CLIENT_ID: &str = "account-api";

/// The seed-001/002 routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/authenticate", post(authenticate))
        .route("/api/v1/user/mfa", post(create_key))
        .route("/api/v1/user/mfa/status", get(statuses))
        .route("/api/v1/user/mfa/type", get(types))
        .route("/api/v1/user/mfa/{key_id}", patch(activate_key))
        .route("/api/v1/user/my/mfa/{key_id}", delete(delete_my_key))
        .route("/api/v1/user/{user_id}/mfa/{key_id}", delete(delete_key))
        .route("/api/v1/user/mfa/trusted_device", get(list_my_devices))
        .route("/api/v1/user/my/mfa/trusted_device", get(list_my_devices))
        .route(
            "/api/v1/user/{user_id}/mfa/trusted_device",
            get(list_devices),
        )
        .route(
            "/api/v1/user/mfa/trusted_device/{device_id}",
            delete(delete_my_device),
        )
        .route(
            "/api/v1/user/my/mfa/trusted_device/{device_id}",
            delete(delete_my_device),
        )
        .route(
            "/api/v1/user/{user_id}/mfa/trusted_device/{device_id}",
            delete(delete_device),
        )
}

fn status_name(status: MfaKeyStatus) -> &'static str {
    match status {
        MfaKeyStatus::Active => "ACTIVE",
        _ => "ACTIVATION_PENDING",
    }
}

fn type_name(kind: MfaKeyType) -> &'static str {
    match kind {
        MfaKeyType::Totp => "TOTP",
        _ => "UNKNOWN",
    }
}

/// The seed's MFA key object.
pub fn key_json(key: &MfaKey) -> Value {
    json!({
        "id": key.id.to_string(),
        "status": {"id": key.status.id(), "description": status_name(key.status)},
        "type": {"id": key.kind.id(), "description": type_name(key.kind)},
        "creation_date": key.created_at,
        "activation_date": key.activated_at,
    })
}

/// The seed's trusted-device object.
pub fn device_json(device: &TrustedDevice) -> Value {
    json!({
        "id": device.id.to_string(),
        "description": device.label,
        "creation_date": device.created_at,
        "last_used_date": device.last_used_at,
        "expiration_date": device.expires_at,
    })
}

// ----- login -----------------------------------------------------------------

/// The body of `POST /api/v1/authenticate` (see the [module docs](self)).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    username: Option<String>,
    password: Option<String>,
    application_token: Option<String>,
    refresh_token: Option<String>,
    challenge_id: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    trust_device: bool,
}

impl Authentication {
    /// The second factor in the body, if any.
    fn answer(&mut self) -> Result<Option<MfaAnswer>, ApiError> {
        let answers = [
            self.code
                .take()
                .map(|c| MfaAnswer::Totp(SecretString::new(c))),
            self.recovery_code
                .take()
                .map(|c| MfaAnswer::Recovery(SecretString::new(c))),
            self.fingerprint
                .take()
                .map(|c| MfaAnswer::TrustedDevice(SecretString::new(c))),
        ];
        let mut given = answers.into_iter().flatten();
        let first = given.next();
        if given.next().is_some() {
            return Err(ApiError::bad_request(
                "code",
                "send one of code, recovery_code or fingerprint",
            ));
        }
        Ok(first)
    }
}

/// The realm an unauthenticated call names in the header.
async fn header_realm(state: &AppState, headers: &HeaderMap) -> Result<RealmId, ApiError> {
    let name = headers
        .get(REALM_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "x-keystead-realm",
                "name the realm to log in to in this header",
            )
        })?;
    Ok(state.ks.realms().get_by_name(name).await?.id)
}

/// Tokens of the account API's client: `scope` (an application-token
/// session's), or the server's API scopes when the session names none.
async fn request(
    state: &AppState,
    realm: RealmId,
    scope: Vec<String>,
) -> Result<AccessRequest, ApiError> {
    let scope = if scope.is_empty() {
        super::oidc::default_scope(state, realm, ACCOUNT_CLIENT_ID).await?
    } else {
        scope
    };
    Ok(AccessRequest::public(ACCOUNT_CLIENT_ID, scope))
}

fn tokens_json(tokens: &TokenResponse, fingerprint: Option<&SecretString>) -> Value {
    let mut body = json!({
        "auth_token": tokens.access_token.expose(),
        "expires_in": tokens.expires_in,
    });
    if let Some(refresh) = &tokens.refresh_token {
        body["refresh_token"] = refresh.expose().into();
    }
    if let Some(fingerprint) = fingerprint {
        body["fingerprint"] = fingerprint.expose().into();
    }
    body
}

async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<Authentication>,
) -> Result<Response, ApiError> {
    let realm = header_realm(&state, &headers).await?;
    let tokens = state.ks.tokens(realm);
    let answer = body.answer()?;
    let session = if let Some(app_token) = body.application_token.take() {
        state
            .ks
            .users(realm)
            .authenticate_app_token(&SecretString::new(app_token))
            .await?
    } else if let Some(refresh) = body.refresh_token.take() {
        let refreshed = tokens
            .refresh(&SecretString::new(refresh), ACCOUNT_CLIENT_ID)
            .await?;
        return Ok(Json(tokens_json(&refreshed, None)).into_response());
    } else if let Some(challenge) = body.challenge_id.take() {
        let id: ChallengeId = parse_id("challenge_id", &challenge)?;
        let answer = answer.ok_or_else(|| {
            ApiError::bad_request(
                "code",
                "answer the challenge with code, recovery_code or fingerprint",
            )
        })?;
        state.ks.mfa(realm).complete_challenge(id, &answer).await?
    } else {
        let (Some(username), Some(password)) = (body.username.take(), body.password.take()) else {
            return Err(ApiError::bad_request(
                "body",
                "send username and password, application_token or refresh_token",
            ));
        };
        match state
            .ks
            .users(realm)
            .authenticate(&username, SecretString::new(password))
            .await?
        {
            LoginOutcome::Authenticated(session) => session,
            LoginOutcome::MfaRequired { challenge } => match answer {
                Some(answer) => {
                    state
                        .ks
                        .mfa(realm)
                        .complete_challenge(challenge.id, &answer)
                        .await?
                }
                None => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "MFA_REQUIRED",
                        "a second factor is required: send code, recovery_code or \
                         fingerprint with challenge_id",
                    )
                    .with_detail("challenge_id", challenge.id.to_string())
                    .with_detail(
                        "factors",
                        challenge
                            .factors
                            .iter()
                            .map(|f| f.as_str())
                            .collect::<Vec<_>>(),
                    ));
                }
            },
            LoginOutcome::MfaEnrollmentRequired { challenge } => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "MFA_ENROLLMENT_REQUIRED",
                    "the realm requires MFA: enrol a TOTP key through \
                     /realms/{realm}/login-actions/setup-otp and verify-otp with \
                     challenge_id as the bearer",
                )
                .with_detail("challenge_id", challenge.id.to_string()));
            }
        }
    };
    finish_login(&state, realm, &session, body.trust_device, &headers).await
}

/// Issue tokens for a fresh session and, when asked, a trusted-device
/// token.
async fn finish_login(
    state: &AppState,
    realm: RealmId,
    session: &Session,
    trust_device: bool,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let fingerprint = if trust_device {
        let label = headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .filter(|l| !l.is_empty())
            .map_or_else(
                || "unknown device".to_owned(),
                |l| l.chars().take(200).collect(),
            );
        Some(
            state
                .ks
                .mfa(realm)
                .trust_device(session.id, &label)
                .await?
                .token,
        )
    } else {
        None
    };
    let issued = state
        .ks
        .tokens(realm)
        .issue(
            session.id,
            &request(state, realm, session.scopes.clone()).await?,
        )
        .await?;
    Ok(Json(tokens_json(&issued, fingerprint.as_ref())).into_response())
}

// ----- MFA keys -------------------------------------------------------------

/// `{"id": n}` as the seed nests ids.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRef {
    id: u16,
}

/// The body of `POST /api/v1/user/mfa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    #[serde(rename = "type")]
    kind: IdRef,
    password: String,
}

async fn create_key(
    caller: Caller<AccountScope>,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewKeyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.kind.id != MfaKeyType::Totp.id() {
        return Err(ApiError::bad_request(
            "type.id",
            format!("the only key type is {} (TOTP)", MfaKeyType::Totp.id()),
        ));
    }
    let user = caller.claims.sub;
    // The seed's password is a re-authentication: it makes the session's
    // password proof fresh; step-up still wants a fresh second factor from
    // a user who has one.
    let by = caller.claims.authority();
    if let Authority::Session(session) = by {
        state
            .ks
            .users(caller.realm)
            .reauthenticate(session, SecretString::new(body.password))
            .await?;
    }
    let key = state.ks.mfa(caller.realm).create_totp_key(user, by).await?;
    let mut out = key_json(&key.key);
    out["secret_key"] = key.secret_base32.expose().into();
    out["otpauth"] = key.otpauth_uri.expose().into();
    Ok((StatusCode::CREATED, Json(out)))
}

/// The body of `PATCH /api/v1/user/mfa/{key_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    status: IdRef,
    code: String,
}

async fn activate_key(
    caller: Caller<AccountScope>,
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    JsonBody(body): JsonBody<ActivateBody>,
) -> Result<StatusCode, ApiError> {
    let key: MfaKeyId = parse_id("key_id", &key_id)?;
    let active = MfaKeyStatus::Active.id();
    if body.status.id != active {
        return Err(ApiError::bad_request(
            "status.id",
            format!("a key can only be set to {active} (ACTIVE)"),
        ));
    }
    state
        .ks
        .mfa(caller.realm)
        .activate(caller.claims.sub, key, &SecretString::new(body.code))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A caller acting on a user: the user itself or the administrator.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A user with a verified token.
    User(Box<Caller<AccountScope>>),
    /// The administrator, on the realm of the header.
    Admin(RealmId),
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::<AccountScope>::from_request_parts(parts, state).await {
            Ok(caller) => Ok(Actor::User(Box::new(caller))),
            Err(user_error) => match RealmAdmin::from_request_parts(parts, state).await {
                Ok(admin) => Ok(Actor::Admin(admin.realm)),
                // Not the admin either: the user's refusal says why.
                Err(_) => Err(user_error),
            },
        }
    }
}

impl Actor {
    /// The realm and the user `path_user` names (`my`: the caller), if the
    /// actor may act on it, with the authority it acts by: the caller's
    /// session (step-up applies), or the administrator as operator.
    fn on(&self, path_user: &str) -> Result<(RealmId, UserId, Authority), ApiError> {
        match self {
            Actor::User(caller) => {
                let by = caller.claims.authority();
                if path_user == "my" {
                    return Ok((caller.realm, caller.claims.sub, by));
                }
                let user: UserId = parse_id("user_id", path_user)?;
                if user != caller.claims.sub {
                    return Err(ApiError::forbidden(
                        "NOT_YOUR_ACCOUNT",
                        "only the user itself or the administrator may do this",
                    ));
                }
                Ok((caller.realm, user, by))
            }
            Actor::Admin(realm) => {
                if path_user == "my" {
                    return Err(ApiError::bad_request(
                        "user_id",
                        "the administrator names the user",
                    ));
                }
                Ok((*realm, parse_id("user_id", path_user)?, Authority::Operator))
            }
        }
    }
}

async fn delete_key(
    actor: Actor,
    State(state): State<AppState>,
    Path((user, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (realm, user, by) = actor.on(&user)?;
    let key: MfaKeyId = parse_id("key_id", &key_id)?;
    state.ks.mfa(realm).delete_key(user, key, by).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_my_key(
    actor: Actor,
    state: State<AppState>,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_key(actor, state, Path(("my".into(), key_id))).await
}

async fn statuses(_: Caller<AccountScope>) -> Json<Value> {
    Json(Value::Array(
        MfaKeyStatus::ALL
            .iter()
            .map(|s| json!({"id": s.id(), "description": status_name(*s)}))
            .collect(),
    ))
}

async fn types(_: Caller<AccountScope>) -> Json<Value> {
    Json(Value::Array(
        MfaKeyType::ALL
            .iter()
            .map(|t| json!({"id": t.id(), "description": type_name(*t)}))
            .collect(),
    ))
}

// ----- trusted devices -----------------------------------------------------

async fn list_devices(
    actor: Actor,
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (realm, user, _) = actor.on(&user)?;
    let devices = state.ks.mfa(realm).list_trusted_devices(user).await?;
    Ok(Json(Value::Array(
        devices.iter().map(device_json).collect(),
    )))
}

async fn list_my_devices(actor: Actor, state: State<AppState>) -> Result<Json<Value>, ApiError> {
    list_devices(actor, state, Path("my".into())).await
}

async fn delete_device(
    actor: Actor,
    State(state): State<AppState>,
    Path((user, device)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (realm, user, by) = actor.on(&user)?;
    let device: TrustedDeviceId = parse_id("device_id", &device)?;
    state
        .ks
        .mfa(realm)
        .delete_trusted_device(user, device, by)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_my_device(
    actor: Actor,
    state: State<AppState>,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete_device(actor, state, Path(("my".into(), device))).await
}
