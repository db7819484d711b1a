//! The authorization-code flow in a browser (RFC 6749 §4.1, RFC 7636,
//! OpenID Connect Core §3.1): the realm's authorization endpoint and the
//! server-rendered login pages that advance the library's login
//! transaction ([`OAuth`]).
//!
//! 1. `GET /protocol/openid-connect/auth?response_type=code&client_id=…`
//!    runs [`OAuth::authorize`](keystead::oauth::OAuth::authorize). An error
//!    about the client or the redirect URI (or a malformed query) is an
//!    HTML error page (400) — redirecting to an unverified URI would make
//!    the server an open redirector; every other error is a `302` to
//!    `redirect_uri?error=…&state=…&iss=…`. A valid request answers the
//!    password page, whose form carries the transaction handle (`kslt_…`)
//!    in the hidden field `login_tx`.
//! 2. The forms post to the seed's login-action paths:
//!    `login-actions/authenticate` (username, password),
//!    `login-actions/challenge-otp` (`code`: a TOTP code),
//!    `login-actions/burn-recovery-code` (`recovery_code`) and, in a realm
//!    that requires MFA for a user who has none,
//!    `login-actions/verify-otp` (`key_id`, `code`) after the page showed
//!    the new key's otpauth URI. A form-encoded post that carries
//!    `login_tx` is a step of this flow; anything else on those paths goes
//!    to the JSON login actions ([`super::login_actions`]) unchanged.
//! 3. When a step yields a session the library consumes the transaction
//!    and issues the code: `302` to `redirect_uri?code=…&state=…&iss=…`.
//!    A wrong password or code shows the same form again with the
//!    library's error (the transaction stays open; lockout applies as for
//!    every login). "Cancel" on any page ends the transaction and answers
//!    the client `access_denied`.
//!
//! The handle is the flow's only state — no cookie. It also makes the
//! forms safe against cross-site posts: a step needs the handle, 256
//! random bits only the page that received it knows, and a transaction
//! started by someone else ends in a code for *their* request, which the
//! client refuses by its `state`.
//!
//! Every page and redirect carries the headers of [`super::html`]
//! (`no-store`, a CSP that allows no script, no framing, no referrer).
//! A WebAuthn second factor needs script in the browser, which these pages
//! do not have: the page offers TOTP and recovery codes only. Magic links
//! are not offered in this flow either (the link would have to carry the
//! transaction through the mailbox).

use super::html::{self, Flow, error_note, page, security_headers};
use super::login_actions;
use super::realm_named;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keystead::id::MfaKeyId;
use keystead::mfa::MfaAnswer;
use keystead::oauth::{AuthorizationRequest, AuthorizeError, ErrorRedirect, LoginStep, OAuth};
use keystead::realm::Realm;
use keystead::secret::SecretString;
use maud::Markup;
use serde::Deserialize;

/// The form field that carries the login transaction's handle.
pub const TX_FIELD: &str = "login_tx";

/// The authorization endpoint and the login-action paths its forms post
/// to (relative to `/realms/{realm_name}`); the latter fall through to
/// the JSON login actions for everything that is not a browser step.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/protocol/openid-connect/auth", get(auth))
        .route(
            "/login-actions/authenticate",
            post(
                |State(s): State<AppState>, Path(realm): Path<String>, r: Request| {
                    dispatch(s, realm, r, Step::Password, login_actions::authenticate)
                },
            ),
        )
        .route(
            "/login-actions/challenge-otp",
            post(
                |State(s): State<AppState>, Path(realm): Path<String>, r: Request| {
                    dispatch(s, realm, r, Step::Totp, login_actions::challenge_otp)
                },
            ),
        )
        .route(
            "/login-actions/burn-recovery-code",
            post(
                |State(s): State<AppState>, Path(realm): Path<String>, r: Request| {
                    dispatch(
                        s,
                        realm,
                        r,
                        Step::Recovery,
                        login_actions::burn_recovery_code,
                    )
                },
            ),
        )
        .route(
            "/login-actions/verify-otp",
            post(
                |State(s): State<AppState>, Path(realm): Path<String>, r: Request| {
                    dispatch(s, realm, r, Step::Enrollment, login_actions::verify_otp)
                },
            ),
        )
}

/// The query of an authorization request. Parameters this server does
/// not implement are ignored (RFC 6749 §3.1) except those whose meaning
/// it would otherwise silently change (`response_mode`, `prompt=none`).
#[derive(Debug, Default, Deserialize)]
pub struct AuthQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    response_mode: Option<String>,
    prompt: Option<String>,
}

/// `GET /protocol/openid-connect/auth`: see the [module docs](self).
async fn auth(State(state): State<AppState>, Path(realm_name): Path<String>, uri: Uri) -> Response {
    let realm = match realm_named(&state, &realm_name).await {
        Ok(realm) => realm,
        Err(e) => return failure_page(&e.0),
    };
    // Each parameter at most once (RFC 6749 §3.1): the parser refuses
    // duplicates, and a malformed query can't be trusted to redirect.
    let query = match Query::<AuthQuery>::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => {
            return refused_page(
                StatusCode::BAD_REQUEST,
                &format!("The sign-in request is malformed: {}", e.body_text()),
            );
        }
    };
    let request = AuthorizationRequest {
        response_type: query.response_type,
        client_id: query.client_id,
        redirect_uri: query.redirect_uri,
        scope: query.scope,
        state: query.state,
        nonce: query.nonce,
        code_challenge: query.code_challenge,
        code_challenge_method: query.code_challenge_method,
    };
    let oauth = state.ks.oauth(realm.id);
    let tx = match oauth.authorize(&request).await {
        Ok(tx) => tx,
        Err(AuthorizeError::Redirect(r)) => return redirect(&r.location()),
        Err(AuthorizeError::NoRedirect(e)) => return failure_page(&ApiError::from(e)),
    };
    // Checks the library leaves to the front-end, made once the redirect
    // URI is verified so the client hears the answer: only the query
    // response mode exists here, and there is no single sign-on session
    // that `prompt=none` could use.
    let refusal = match (query.response_mode.as_deref(), query.prompt.as_deref()) {
        (Some(mode), _) if mode != "query" => {
            Some(("invalid_request", "response_mode must be query"))
        }
        (_, Some(prompt)) if prompt.split(' ').any(|p| p == "none") => {
            Some(("login_required", "the user must sign in"))
        }
        _ => None,
    };
    if let Some((error, description)) = refusal {
        return match oauth.cancel(&tx.handle).await {
            Ok(r) => redirect(&error_location(&r, error, description)),
            Err(e) => failure_page(&ApiError::from(e)),
        };
    }
    let intro = html::sign_in_intro(&tx.client_id, &tx.scope);
    password_page(
        StatusCode::OK,
        &realm,
        tx.handle.expose(),
        &intro,
        None,
        None,
    )
}

/// Which login action a form posts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `login-actions/authenticate`.
    Password,
    /// `login-actions/challenge-otp`.
    Totp,
    /// `login-actions/burn-recovery-code`.
    Recovery,
    /// `login-actions/verify-otp`.
    Enrollment,
}

/// The fields of the flow's forms (each at most once).
#[derive(Debug, Default, Deserialize)]
struct BrowserForm {
    login_tx: Option<String>,
    /// `cancel` for the Cancel button.
    action: Option<String>,
    username: Option<String>,
    password: Option<String>,
    code: Option<String>,
    recovery_code: Option<String>,
    key_id: Option<String>,
    /// Which second-factor forms to show again after a wrong code.
    factors: Option<String>,
}

/// Run a browser step if `req` is one (form-encoded, with `login_tx`),
/// else hand the request unchanged to the JSON login action `json`.
async fn dispatch<H, T>(
    state: AppState,
    realm_name: String,
    req: Request,
    step: Step,
    json: H,
) -> Response
where
    H: Handler<T, AppState>,
{
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return json.call(req, state).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.body_limit).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is too large",
        )
        .oauth()
        .into_response();
    };
    let form: BrowserForm = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let Some(handle) = form.login_tx.clone().filter(|h| !h.is_empty()) else {
        return json
            .call(Request::from_parts(parts, Body::from(bytes)), state)
            .await;
    };
    browser_step(&state, &realm_name, step, SecretString::new(handle), form).await
}

/// One step of the browser flow; see the [module docs](self).
async fn browser_step(
    state: &AppState,
    realm_name: &str,
    step: Step,
    handle: SecretString,
    form: BrowserForm,
) -> Response {
    let realm = match realm_named(state, realm_name).await {
        Ok(realm) => realm,
        Err(e) => return failure_page(&e.0),
    };
    let oauth = state.ks.oauth(realm.id);
    if form.action.as_deref() == Some("cancel") {
        return match oauth.cancel(&handle).await {
            Ok(r) => redirect(&r.location()),
            Err(e) => failure_page(&ApiError::from(e)),
        };
    }
    let missing = |what: &str| -> Result<LoginStep, keystead::Error> {
        Err(keystead::ValidationError::new("form", format!("enter {what}")).into())
    };
    let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let result = match step {
        Step::Password => match (text(&form.username), text(&form.password)) {
            (Some(username), Some(password)) => {
                oauth
                    .login_password(&handle, &username, SecretString::new(password))
                    .await
            }
            _ => missing("your username and password"),
        },
        Step::Totp => match text(&form.code) {
            Some(code) => {
                oauth
                    .login_second_factor(&handle, &MfaAnswer::Totp(SecretString::new(code)))
                    .await
            }
            None => missing("the code from your authenticator app"),
        },
        Step::Recovery => match text(&form.recovery_code) {
            Some(code) => {
                oauth
                    .login_second_factor(&handle, &MfaAnswer::Recovery(SecretString::new(code)))
                    .await
            }
            None => missing("a recovery code"),
        },
        Step::Enrollment => match (
            text(&form.key_id).and_then(|k| k.parse::<MfaKeyId>().ok()),
            text(&form.code),
        ) {
            (Some(key), Some(code)) => {
                oauth
                    .login_enrollment(&handle, key, &SecretString::new(code))
                    .await
            }
            _ => missing("the code from your authenticator app"),
        },
    };
    match result {
        Ok(LoginStep::Authorized(r)) => redirect(r.location().expose()),
        Ok(LoginStep::MfaRequired { factors }) => {
            let names: Vec<&str> = factors.iter().map(|f| f.as_str()).collect();
            second_factor_page(StatusCode::OK, &realm, handle.expose(), &names, None)
        }
        Ok(LoginStep::MfaEnrollmentRequired) => enrollment_page(&oauth, &realm, &handle).await,
        Err(e) => {
            let api = ApiError::from(e);
            // A transaction that ended (expired, finished, cancelled) or is
            // at another step can't continue on this page.
            if api.status().is_server_error()
                || matches!(
                    api.code(),
                    "OAUTH_TRANSACTION_NOT_FOUND" | "OAUTH_WRONG_STEP"
                )
            {
                return failure_page(&api);
            }
            let note = api.message();
            let handle = handle.expose();
            match step {
                Step::Password => password_page(
                    api.status(),
                    &realm,
                    handle,
                    &Markup::default(),
                    Some(note),
                    text(&form.username).as_deref(),
                ),
                Step::Totp | Step::Recovery => {
                    let factors = form.factors.unwrap_or_default();
                    let names: Vec<&str> = factors.split(' ').collect();
                    second_factor_page(api.status(), &realm, handle, &names, Some(note))
                }
                Step::Enrollment => enrollment_retry_page(
                    api.status(),
                    &realm,
                    handle,
                    form.key_id.as_deref().unwrap_or_default(),
                    note,
                ),
            }
        }
    }
}

/// Where `realm`'s forms post, and the transaction `handle` they carry.
fn flow<'a>(realm: &'a Realm, handle: &'a str) -> Flow<'a> {
    Flow {
        realm: &realm.name,
        handle,
    }
}

/// The username and password form.
fn password_page(
    status: StatusCode,
    realm: &Realm,
    handle: &str,
    intro: &Markup,
    note: Option<&str>,
    username: Option<&str>,
) -> Response {
    let body = html::password_form(flow(realm, handle), intro, note, username);
    page(status, "Sign in", &body)
}

/// The second-factor forms for the `factors` the challenge accepts.
fn second_factor_page(
    status: StatusCode,
    realm: &Realm,
    handle: &str,
    factors: &[&str],
    note: Option<&str>,
) -> Response {
    let body = html::second_factor_forms(flow(realm, handle), factors, note);
    page(status, "Second factor", &body)
}

/// The enrolment page of a realm that requires MFA: a new TOTP key to add
/// to an authenticator app, and the form for its first code.
async fn enrollment_page(oauth: &OAuth, realm: &Realm, handle: &SecretString) -> Response {
    let key = match oauth.enrollment_key(handle).await {
        Ok(key) => key,
        Err(e) => return failure_page(&ApiError::from(e)),
    };
    let intro = html::enrollment_intro(key.secret_base32.expose(), key.otpauth_uri.expose());
    enrollment_form(
        StatusCode::OK,
        realm,
        handle.expose(),
        &key.key.id.to_string(),
        &intro,
    )
}

/// The enrolment form again after a wrong code (the key is unchanged; its
/// secret is not shown twice).
fn enrollment_retry_page(
    status: StatusCode,
    realm: &Realm,
    handle: &str,
    key_id: &str,
    note: &str,
) -> Response {
    enrollment_form(status, realm, handle, key_id, &error_note(note))
}

fn enrollment_form(
    status: StatusCode,
    realm: &Realm,
    handle: &str,
    key_id: &str,
    intro: &Markup,
) -> Response {
    let body = html::enrollment_form(flow(realm, handle), key_id, intro);
    page(status, "Set up a second factor", &body)
}

/// A page that ends the flow: the request can't continue here.
fn refused_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in failed", &html::refusal(message))
}

/// [`refused_page`] for an error of the library or the server: its
/// status, and its message unless it is a server-side failure (already
/// logged, never shown).
fn failure_page(e: &ApiError) -> Response {
    let status = if e.status().is_success() {
        StatusCode::BAD_REQUEST
    } else {
        e.status()
    };
    let message = match e.code() {
        "OAUTH_TRANSACTION_NOT_FOUND" => "This sign-in has expired or already finished.",
        "OAUTH_WRONG_STEP" => "This sign-in is waiting for another step.",
        "OAUTH_INVALID_CLIENT" => "The application is not registered here.",
        "OAUTH_INVALID_REDIRECT_URI" => {
            "The application's redirect URI is missing or not registered for it."
        }
        _ if status.is_server_error() => "The server failed; try again later.",
        _ => e.message(),
    };
    // 404 for an unknown realm, 400 for every refusal of the request.
    let keep = status.is_server_error() || e.code() == "REALM_NOT_FOUND";
    let status = if keep {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    refused_page(status, message)
}

/// `302` to `location` with the pages' headers (the location of a code
/// must not be cached or leak as a referrer).
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, security_headers(), [(LOCATION, value)]).into_response(),
        // Redirect URIs are visible ASCII by registration and every value
        // added is percent-encoded, so this can't happen; refuse rather
        // than panic.
        Err(_) => refused_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server failed; try again later.",
        ),
    }
}

/// `r`'s redirect with another `error` (one the library does not know)
/// and an `error_description`.
fn error_location(r: &ErrorRedirect, error: &str, description: &str) -> String {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = &r.state {
        params.push(("state", state));
    }
    params.push(("iss", &r.iss));
    let mut url = r.redirect_uri.clone();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        url.push_str(&super::protocol::percent_encode(value));
        sep = '&';
    }
    url
}
