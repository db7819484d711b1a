//! The login actions of a realm (`/login-actions/…`) and registration.
//!
//! A login action that completes a login answers the seed's
//! `AuthenticateResponse` with the tokens beside it:
//!
//! * `{"status": "Success", "access_token", "token_type", "expires_in",
//!   "refresh_token", "scope"}` — logged in;
//! * `{"status": "RequiresOtpChallenge", "token", "factors"}` — a second
//!   factor is due: answer with `challenge-otp`, `burn-recovery-code` or
//!   (when `factors` lists `webauthn`) `webauthn-public-key-authenticate`,
//!   `token` as the bearer;
//! * `{"status": "RequiresActions", "required_actions": ["configure_otp"],
//!   "token"}` — the realm requires MFA and the user has none: `setup-otp`
//!   then `verify-otp`, `token` as the bearer (the library's
//!   [`create_totp_key_for_challenge`](keystead::mfa::Mfa::create_totp_key_for_challenge)
//!   and [`complete_enrollment`](keystead::mfa::Mfa::complete_enrollment)).
//!
//! These JSON actions hand out tokens directly. The same paths also serve
//! the browser steps of the authorization-code flow (a form post carrying
//! a login transaction, see [`super::authorize`]), which end in a redirect
//! with a code instead. `client_id` (optional in each body) names the
//! client the tokens are for ([`DEFAULT_CLIENT_ID`](super::DEFAULT_CLIENT_ID)
//! otherwise).
//!
//! Magic links are delivered through the server's mailbox
//! ([`super::mail`]); `send-magic-link` answers the same whether or not the address
//! belongs to an account, so it can't be used to probe addresses.
//!
//! The WebAuthn actions (`webauthn-public-key-*`) live in
//! [`super::webauthn`]; a passkey answers the same `RequiresOtpChallenge`
//! login token there.

use super::mail::{self, Mail};
use super::{
    FormOrJson, LoginBearer, access_request, mfa_pending, no_store, realm_base, realm_named,
    token_json, verify_access, wrong_bearer,
};
use crate::error::{ApiError, OAuthError};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keystead::id::{ChallengeId, MagicLinkId, MfaKeyId};
use keystead::mfa::{MfaAnswer, MfaKeyStatus, NewTotpKey, RECOVERY_CODE_COUNT};
use keystead::realm::{Realm, SignUp};
use keystead::secret::SecretString;
use keystead::user::{LoginOutcome, ProfileUpdate, Session, SignUpMail};
use serde::Deserialize;
use serde_json::{Value, json};

/// How long a magic link sent by `send-magic-link` stays valid.
pub const MAGIC_LINK_TTL_SECS: i64 = 15 * 60;

/// The login-action routes (relative to `/realms/{realm_name}`).
/// `authenticate`, `challenge-otp`, `burn-recovery-code` and `verify-otp`
/// are routed by [`super::authorize`], which runs the browser steps of the
/// authorization-code flow and hands every other request to the handlers
/// here.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/protocol/openid-connect/registrations", post(registration))
        .route("/login-actions/setup-otp", get(setup_otp))
        .route(
            "/login-actions/generate-recovery-codes",
            post(generate_recovery_codes),
        )
        .route("/login-actions/send-magic-link", post(send_magic_link))
        .route("/login-actions/verify-magic-link", get(verify_magic_link))
        .route("/login-actions/update-password", post(update_password))
        .route("/login-actions/confirm-sign-up", get(confirm_sign_up))
}

/// Tokens for a fresh session, as a `Success` answer (also the answer of
/// the WebAuthn login, [`super::webauthn`]).
pub(super) async fn success(
    state: &AppState,
    realm: &Realm,
    session: &Session,
    client_id: Option<&str>,
    scope: Option<&str>,
) -> Result<Response, OAuthError> {
    let tokens = state
        .ks
        .tokens(realm.id)
        .issue(
            session.id,
            &access_request(state, realm, client_id, scope).await?,
        )
        .await?;
    let mut body = token_json(&tokens);
    body["status"] = "Success".into();
    Ok((no_store(), Json(body)).into_response())
}

/// The answer to a login outcome (see the [module docs](self)).
async fn outcome_response(
    state: &AppState,
    realm: &Realm,
    outcome: LoginOutcome,
    client_id: Option<&str>,
    scope: Option<&str>,
) -> Result<Response, OAuthError> {
    let body = match outcome {
        LoginOutcome::Authenticated(session) => {
            return success(state, realm, &session, client_id, scope).await;
        }
        LoginOutcome::MfaRequired { challenge } => json!({
            "status": "RequiresOtpChallenge",
            "token": challenge.id.to_string(),
            "factors": challenge.factors.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            "expires_at": challenge.expires_at,
        }),
        LoginOutcome::MfaEnrollmentRequired { challenge } => json!({
            "status": "RequiresActions",
            "required_actions": ["configure_otp"],
            "token": challenge.id.to_string(),
            "expires_at": challenge.expires_at,
        }),
    };
    Ok((no_store(), Json(body)).into_response())
}

/// `POST login-actions/authenticate`.
#[derive(Debug, Deserialize)]
pub struct AuthenticateBody {
    username: String,
    password: String,
    client_id: Option<String>,
    scope: Option<String>,
}

pub(super) async fn authenticate(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    FormOrJson(body): FormOrJson<AuthenticateBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let outcome = state
        .ks
        .users(realm.id)
        .authenticate(&body.username, SecretString::new(body.password))
        .await?;
    outcome_response(
        &state,
        &realm,
        outcome,
        body.client_id.as_deref(),
        body.scope.as_deref(),
    )
    .await
}

/// `POST login-actions/challenge-otp`.
#[derive(Debug, Deserialize)]
pub struct ChallengeOtpBody {
    code: String,
    client_id: Option<String>,
    scope: Option<String>,
}

/// The pending challenge a login-token bearer names.
fn challenge_of(bearer: &LoginBearer) -> Result<ChallengeId, OAuthError> {
    match bearer {
        LoginBearer::Challenge(id) => Ok(*id),
        LoginBearer::Access(_) => Err(wrong_bearer("the login token (mfa_token)")),
    }
}

pub(super) async fn challenge_otp(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    FormOrJson(body): FormOrJson<ChallengeOtpBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let id = challenge_of(&bearer)?;
    let session = state
        .ks
        .mfa(realm.id)
        .complete_challenge(id, &MfaAnswer::Totp(SecretString::new(body.code)))
        .await?;
    success(
        &state,
        &realm,
        &session,
        body.client_id.as_deref(),
        body.scope.as_deref(),
    )
    .await
}

/// `POST login-actions/burn-recovery-code`.
#[derive(Debug, Deserialize)]
pub struct BurnRecoveryCodeBody {
    recovery_code: String,
    client_id: Option<String>,
    scope: Option<String>,
}

pub(super) async fn burn_recovery_code(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    FormOrJson(body): FormOrJson<BurnRecoveryCodeBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let id = challenge_of(&bearer)?;
    let answer = MfaAnswer::Recovery(SecretString::new(body.recovery_code));
    let session = state
        .ks
        .mfa(realm.id)
        .complete_challenge(id, &answer)
        .await?;
    success(
        &state,
        &realm,
        &session,
        body.client_id.as_deref(),
        body.scope.as_deref(),
    )
    .await
}

fn new_key_json(key: &NewTotpKey) -> Value {
    json!({
        "key_id": key.key.id.to_string(),
        "secret": key.secret_base32.expose(),
        "otpauth_url": key.otpauth_uri.expose(),
        "expires_at": key.key.expires_at,
    })
}

async fn setup_otp(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let mfa = state.ks.mfa(realm.id);
    let key = match &bearer {
        LoginBearer::Challenge(id) => mfa.create_totp_key_for_challenge(*id).await?,
        LoginBearer::Access(token) => {
            let claims = verify_access(&state, &realm, token).await?;
            mfa.create_totp_key(claims.sub, claims.authority()).await?
        }
    };
    Ok((no_store(), Json(new_key_json(&key))).into_response())
}

/// `POST login-actions/verify-otp`. `key_id` names the key from
/// `setup-otp` (default: the user's pending key); the seed's `secret` and
/// `label` are not needed — the server keeps the pending key.
#[derive(Debug, Deserialize)]
pub struct VerifyOtpBody {
    code: String,
    key_id: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
}

/// The key `key_id` names, or the user's pending key.
async fn pending_key(
    state: &AppState,
    realm: &Realm,
    user: keystead::id::UserId,
    key_id: Option<&str>,
) -> Result<MfaKeyId, OAuthError> {
    if let Some(id) = key_id {
        return crate::body::parse_id("key_id", id).map_err(ApiError::oauth);
    }
    state
        .ks
        .mfa(realm.id)
        .list_keys(user)
        .await?
        .into_iter()
        .find(|k| k.status == MfaKeyStatus::ActivationPending)
        .map(|k| k.id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "MFA_KEY_NOT_FOUND",
                "no key is pending activation: GET setup-otp first",
            )
            .oauth()
        })
}

pub(super) async fn verify_otp(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    FormOrJson(body): FormOrJson<VerifyOtpBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let mfa = state.ks.mfa(realm.id);
    let code = SecretString::new(body.code);
    match &bearer {
        LoginBearer::Challenge(id) => {
            let challenge = state.ks.users(realm.id).pending_challenge(*id).await?;
            let key = pending_key(&state, &realm, challenge.user, body.key_id.as_deref()).await?;
            let session = mfa.complete_enrollment(*id, key, &code).await?;
            success(
                &state,
                &realm,
                &session,
                body.client_id.as_deref(),
                body.scope.as_deref(),
            )
            .await
        }
        LoginBearer::Access(token) => {
            let claims = verify_access(&state, &realm, token).await?;
            let key = pending_key(&state, &realm, claims.sub, body.key_id.as_deref()).await?;
            let key = mfa.activate(claims.sub, key, &code).await?;
            Ok(Json(json!({
                "message": "OTP verified: the key is active",
                "key_id": key.id.to_string(),
            }))
            .into_response())
        }
    }
}

/// `POST login-actions/generate-recovery-codes`: the library always makes
/// [`RECOVERY_CODE_COUNT`] codes in one format, so `amount` may only be
/// that and `format` is not taken.
#[derive(Debug, Deserialize)]
pub struct GenerateRecoveryCodesBody {
    amount: Option<u32>,
}

async fn generate_recovery_codes(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    FormOrJson(body): FormOrJson<GenerateRecoveryCodesBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let LoginBearer::Access(token) = &bearer else {
        return Err(wrong_bearer("an access token"));
    };
    let claims = verify_access(&state, &realm, token).await?;
    if body
        .amount
        .is_some_and(|n| usize::try_from(n).ok() != Some(RECOVERY_CODE_COUNT))
    {
        return Err(ApiError::bad_request(
            "amount",
            format!("this server issues exactly {RECOVERY_CODE_COUNT} codes"),
        )
        .oauth());
    }
    let codes = state
        .ks
        .mfa(realm.id)
        .generate_recovery_codes(claims.sub, claims.authority())
        .await?;
    let codes: Vec<&str> = codes.iter().map(SecretString::expose).collect();
    Ok((no_store(), Json(json!({ "codes": codes }))).into_response())
}

/// `POST login-actions/send-magic-link`.
#[derive(Debug, Deserialize)]
pub struct SendMagicLinkBody {
    email: String,
}

async fn send_magic_link(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    FormOrJson(body): FormOrJson<SendMagicLinkBody>,
) -> Result<Json<Value>, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let base = realm_base(&realm).map_err(ApiError::oauth)?.to_owned();
    // The library does the same work whether or not the address has an
    // account; delivery is an in-memory hand-off, not a network call.
    let sent = state
        .ks
        .tokens(realm.id)
        .send_magic_link_to_email(&body.email, chrono::Duration::seconds(MAGIC_LINK_TTL_SECS))
        .await?;
    if let Some(link) = sent {
        let url = format!(
            "{base}/login-actions/verify-magic-link?token_id={}&magic_token={}",
            link.id,
            link.token.expose()
        );
        mail::deliver(Mail {
            realm: realm.id,
            to: body.email,
            subject: "magic-link",
            url: SecretString::new(url),
        });
    }
    Ok(Json(json!({
        "message": "if the address belongs to an account, a sign-in link is on its way"
    })))
}

/// `GET login-actions/verify-magic-link` query.
#[derive(Debug, Deserialize)]
pub struct VerifyMagicLinkQuery {
    token_id: String,
    magic_token: String,
    client_id: Option<String>,
    scope: Option<String>,
}

async fn verify_magic_link(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    Query(query): Query<VerifyMagicLinkQuery>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let id: MagicLinkId =
        crate::body::parse_id("token_id", &query.token_id).map_err(ApiError::oauth)?;
    let outcome = state
        .ks
        .tokens(realm.id)
        .verify_magic_link(id, &SecretString::new(query.magic_token))
        .await?;
    outcome_response(
        &state,
        &realm,
        outcome,
        query.client_id.as_deref(),
        query.scope.as_deref(),
    )
    .await
}

/// `POST login-actions/update-password`: the seed's `value` is the new
/// password; the library also wants the current one (`current_password`),
/// so a stolen access token alone can't take the account over.
#[derive(Debug, Deserialize)]
pub struct UpdatePasswordBody {
    value: String,
    current_password: String,
}

async fn update_password(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    bearer: LoginBearer,
    FormOrJson(body): FormOrJson<UpdatePasswordBody>,
) -> Result<Json<Value>, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let LoginBearer::Access(token) = &bearer else {
        return Err(wrong_bearer("an access token"));
    };
    let claims = verify_access(&state, &realm, token).await?;
    state
        .ks
        .users(realm.id)
        .update_password(
            claims.sub,
            SecretString::new(body.current_password),
            SecretString::new(body.value),
            claims.authority(),
        )
        .await?;
    Ok(Json(json!({
        "message": "password updated; every other session of the user has ended"
    })))
}

/// `POST protocol/openid-connect/registrations`.
#[derive(Debug, Deserialize)]
pub struct RegistrationBody {
    username: String,
    email: Option<String>,
    password: String,
    first_name: Option<String>,
    last_name: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
}

async fn registration(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    FormOrJson(body): FormOrJson<RegistrationBody>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    if realm.settings.sign_up == SignUp::VerifiedEmail {
        return request_verified_sign_up(&state, &realm, body).await;
    }
    let users = state.ks.users(realm.id);
    let name = [body.first_name.as_deref(), body.last_name.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // Check the name before anything is written.
    if !name.is_empty() {
        keystead::user::validate_display_name(&name).map_err(keystead::Error::from)?;
    }
    let password = SecretString::new(body.password);
    let user = users
        .sign_up(
            &body.username,
            body.email.as_deref().filter(|e| !e.is_empty()),
            password.clone(),
        )
        .await?;
    if !name.is_empty() {
        users
            .update_profile(
                user.id,
                ProfileUpdate {
                    display_name: Some(Some(name)),
                    ..ProfileUpdate::default()
                },
            )
            .await?;
    }
    tracing::info!(realm = %realm.id, user = %user.id, "user registered");
    match users.authenticate(&body.username, password).await? {
        LoginOutcome::Authenticated(session) => {
            let tokens = state
                .ks
                .tokens(realm.id)
                .issue(
                    session.id,
                    &access_request(
                        &state,
                        &realm,
                        body.client_id.as_deref(),
                        body.scope.as_deref(),
                    )
                    .await?,
                )
                .await?;
            Ok((StatusCode::CREATED, no_store(), Json(token_json(&tokens))).into_response())
        }
        LoginOutcome::MfaRequired { challenge } => Ok(mfa_pending(&challenge, false)),
        LoginOutcome::MfaEnrollmentRequired { challenge } => Ok(mfa_pending(&challenge, true)),
    }
}

/// How long a sign-up confirmation link works.
pub const SIGN_UP_TTL_SECS: i64 = 24 * 3600;

/// Registration in a realm that signs up by verified address
/// ([`keystead::user::sign_up`]): `202` with the same answer whether or
/// not the address has an account; the mailbox gets a confirmation link,
/// or a note that the address is registered. Names are not taken here (the
/// user sets them once signed in).
async fn request_verified_sign_up(
    state: &AppState,
    realm: &Realm,
    body: RegistrationBody,
) -> Result<Response, OAuthError> {
    let base = realm_base(realm).map_err(ApiError::oauth)?.to_owned();
    let email = body.email.filter(|e| !e.is_empty()).ok_or_else(|| {
        ApiError::bad_request("email", "this realm signs up with a verified address").oauth()
    })?;
    let request = state
        .ks
        .users(realm.id)
        .request_sign_up(
            &body.username,
            &email,
            SecretString::new(body.password),
            chrono::Duration::seconds(SIGN_UP_TTL_SECS),
        )
        .await?;
    let (subject, url) = match request.mail {
        SignUpMail::Confirm { token, .. } => (
            "sign-up",
            format!(
                "{base}/login-actions/confirm-sign-up?token={}",
                token.expose()
            ),
        ),
        SignUpMail::AlreadyRegistered => (
            "already-registered",
            format!("{base}/login-actions/send-magic-link"),
        ),
    };
    mail::deliver(Mail {
        realm: realm.id,
        to: request.email,
        subject,
        url: SecretString::new(url),
    });
    Ok((
        StatusCode::ACCEPTED,
        no_store(),
        Json(json!({ "message": "check your inbox to finish signing up" })),
    )
        .into_response())
}

/// `GET login-actions/confirm-sign-up` query.
#[derive(Debug, Deserialize)]
pub struct ConfirmSignUpQuery {
    token: String,
}

/// The link of a sign-up confirmation: creates the account (once).
async fn confirm_sign_up(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    Query(query): Query<ConfirmSignUpQuery>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let user = state
        .ks
        .users(realm.id)
        .confirm_sign_up(&SecretString::new(query.token))
        .await?;
    tracing::info!(realm = %realm.id, user = %user.id, "sign-up confirmed");
    Ok((
        StatusCode::CREATED,
        no_store(),
        Json(json!({ "status": "Registered", "username": user.username })),
    )
        .into_response())
}
