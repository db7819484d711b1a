//! The OAuth 2.0 / OpenID Connect protocol endpoints of a realm
//! (`/protocol/openid-connect/…` and discovery).
//!
//! * **token** — `grant_type` `authorization_code` (RFC 6749 §4.1.3 with
//!   the PKCE `code_verifier`; the answer carries an `id_token` when the
//!   request had the `openid` scope; a reused code is `invalid_grant` and
//!   revokes what the first redemption issued), `client_credentials`
//!   (confidential clients, RFC 6749 §4.4), `password` (runs login; a
//!   second factor or an enrolment answers `403 mfa_required` /
//!   `mfa_enrollment_required` with the login token), `refresh_token`
//!   (rotating; a reused token revokes its family: `invalid_grant` with
//!   code `REFRESH_TOKEN_REUSED`),
//!   `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693: a
//!   narrower access token for `audience`/`scope`), and keystead's
//!   `urn:keystead:params:oauth:grant-type:one-time-token`
//!   (`one_time_token`).
//!
//!   **Client authentication** (RFC 6749 §2.3.1): `client_secret_basic`
//!   (`Authorization: Basic`, id and secret form-urlencoded) or
//!   `client_secret_post` (`client_id` + `client_secret` in the form), not
//!   both; public clients send `client_id` alone. Presented credentials
//!   are always checked. A registered confidential client must
//!   authenticate for every grant, refresh included; a `client_id` that
//!   names no registered client (the first-party clients of the password
//!   grant) stays public as before. A failed client authentication is
//!   `401 invalid_client` with `WWW-Authenticate: Basic` (§5.2).
//! * **introspect** (RFC 7662) — the caller must be authorised (§2.1): the
//!   server's admin token, or an access token of the realm carrying the
//!   `introspect` scope. The password grant takes unregistered (first-party)
//!   client ids and any scope, so any user may ask for that scope there; an
//!   embedder grants it to its resource servers only.
//! * **revoke** (RFC 7009) — any token; unknown ones succeed too (§2.2).
//! * **logout** (RP-initiated) — ends the session of `id_token_hint` (an
//!   access or refresh token of the realm; the library has no check of an
//!   ID token as a hint yet, so an ID token is not recognised) or of the
//!   bearer; redirects to `post_logout_redirect_uri` (with `state`) only when it
//!   has the origin of the realm's issuer URL, since clients register no
//!   post-logout redirect URIs.
//! * **auth** — the authorization endpoint and its login pages live in
//!   [`super::authorize`].

use super::{FormOrJson, mfa_pending, no_store, oauth_error, realm_named, split_scope, token_json};
use crate::auth::{bearer, is_admin_token};
use crate::error::{ApiError, OAuthError};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use keystead::oauth::client::form_decode;
use keystead::secret::SecretString;
use keystead::token::grants::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS};
use keystead::token::grants::{GRANT_ONE_TIME, GRANT_PASSWORD, GRANT_REFRESH_TOKEN};
use keystead::token::{AccessRequest, ExchangeOutcome, Grant, Introspector, TokenError};
use serde::Deserialize;
use serde_json::{Value, json};

/// RFC 8693's token type of an access token.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The scope that lets a caller use the introspection endpoint.
pub use keystead::token::INTROSPECT_SCOPE;

/// The protocol routes (relative to `/realms/{realm_name}`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/protocol/openid-connect/token", post(token))
        .route("/protocol/openid-connect/certs", get(certs))
        .route("/protocol/openid-connect/jwks.json", get(certs))
        .route("/.well-known/openid-configuration", get(discovery))
        .route(
            "/protocol/openid-connect/userinfo",
            get(userinfo).post(userinfo),
        )
        .route(
            "/protocol/openid-connect/token/introspect",
            post(introspect),
        )
        .route("/protocol/openid-connect/revoke", post(revoke))
        .route(
            "/protocol/openid-connect/logout",
            get(logout_get).post(logout_post),
        )
}

/// The token request (RFC 6749 §4.3, §6; RFC 8693 §2.1). Unknown
/// parameters are ignored (RFC 6749 §3.2).
#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    one_time_token: Option<String>,
}

fn required(field: &'static str, value: Option<String>) -> Result<String, OAuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::bad_request(field, "is required for this grant").oauth())
}

/// An error of a grant as RFC 6749 §5.2 wants it: failed credentials and
/// grants are `400 invalid_grant` here (the JSON APIs answer 401), a failed
/// client authentication `401 invalid_client`.
fn grant_error(e: keystead::Error, realm: &str) -> Response {
    if e.oauth_code() == "invalid_client" {
        return invalid_client(realm, &e.to_string());
    }
    if e.oauth_code() == "invalid_grant" && e.code() != "TOO_MANY_ATTEMPTS" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            e.code(),
            e.to_string(),
        );
    }
    OAuthError::from(e).into_response()
}

/// `401 invalid_client` with the authentication scheme the endpoint takes
/// (RFC 6749 §5.2: a client that tried Basic must get this challenge).
fn invalid_client(realm: &str, description: &str) -> Response {
    let mut response = oauth_error(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        "OAUTH_INVALID_CLIENT",
        description,
    );
    // Realm names are DNS labels: nothing to quote.
    if let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The client as it identified itself at the token endpoint.
#[derive(Debug, Default)]
pub(crate) struct ClientAuth {
    /// From the Basic user name or the form.
    client_id: Option<String>,
    /// From the Basic password or `client_secret`.
    secret: Option<SecretString>,
}

impl ClientAuth {
    /// The client the library judges: the one named, or the server's
    /// first-party client ([`super::DEFAULT_CLIENT_ID`]) for a request that
    /// names none (a secret without an id names nobody: refused by the
    /// library as an unknown client).
    fn or_first_party(self) -> keystead::token::ClientAuth {
        keystead::token::ClientAuth {
            client_id: self
                .client_id
                .unwrap_or_else(|| super::DEFAULT_CLIENT_ID.to_owned()),
            secret: self.secret,
        }
    }
}

/// The client credentials of a token request: `Authorization: Basic` or
/// the form, never both (RFC 6749 §2.3). Other `Authorization` schemes
/// are not client authentication and are ignored.
fn client_auth(
    headers: &HeaderMap,
    form_id: Option<String>,
    form_secret: Option<String>,
) -> Result<ClientAuth, &'static str> {
    let form_id = form_id.filter(|v| !v.is_empty());
    let form_secret = form_secret.filter(|v| !v.is_empty());
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim());
    let Some(credentials) = basic else {
        return Ok(ClientAuth {
            client_id: form_id,
            secret: form_secret.map(SecretString::new),
        });
    };
    if form_secret.is_some() {
        return Err("use one client authentication method: Basic or client_secret, not both");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or("the Basic credentials are not base64 of UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials have no ':'")?;
    let (Some(client_id), Some(secret)) = (form_decode(user), form_decode(password)) else {
        return Err("the Basic credentials are not form-urlencoded");
    };
    if form_id.as_ref().is_some_and(|id| *id != client_id) {
        return Err("client_id differs from the Basic credentials");
    }
    Ok(ClientAuth {
        client_id: Some(client_id),
        secret: Some(SecretString::new(secret)),
    })
}

/// The `client_credentials` grant: a confidential client's own token.
async fn client_credentials(
    state: &AppState,
    realm: &keystead::realm::Realm,
    auth: ClientAuth,
    scope: &[String],
    resource: Option<&str>,
) -> Response {
    let (Some(client_id), Some(secret)) = (auth.client_id, auth.secret) else {
        return invalid_client(
            &realm.name,
            "client_credentials needs a confidential client's credentials",
        );
    };
    match state
        .ks
        .oauth(realm.id)
        .client_credentials(&client_id, &secret, scope, resource)
        .await
    {
        Ok(t) => {
            let body = json!({
                "access_token": t.access_token.expose(),
                "token_type": t.token_type,
                "expires_in": t.expires_in,
                "scope": t.scope.join(" "),
            });
            (no_store(), Json(body)).into_response()
        }
        Err(e) => grant_error(e, &realm.name),
    }
}

/// The RFC 8693 grant of a token request: an access token as the subject,
/// and the exchanging client's credentials (§2.1: it authenticates), or
/// the `401 invalid_client` answer.
fn exchange_grant(
    realm: &str,
    auth: ClientAuth,
    subject_token: Option<String>,
    subject_token_type: Option<&str>,
    audience: Option<String>,
    scope: Vec<String>,
) -> Result<Result<Grant, Response>, OAuthError> {
    if subject_token_type.is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(ApiError::bad_request(
            "subject_token_type",
            format!("only {ACCESS_TOKEN_TYPE} can be exchanged"),
        )
        .oauth());
    }
    let (Some(client_id), Some(secret)) = (auth.client_id, auth.secret) else {
        return Ok(Err(invalid_client(
            realm,
            "token exchange needs a confidential client's credentials",
        )));
    };
    Ok(Ok(Grant::TokenExchange {
        client: keystead::token::ClientAuth::confidential(client_id, secret),
        subject_token: SecretString::new(required("subject_token", subject_token)?),
        audience,
        scope,
    }))
}

async fn token(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    headers: HeaderMap,
    FormOrJson(form): FormOrJson<TokenForm>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let grant_type = required("grant_type", form.grant_type)?;
    if grant_type != GRANT_CLIENT_CREDENTIALS
        && let Err(e) = Grant::check_type(&grant_type)
    {
        return Ok(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            e.code(),
            e.to_string(),
        ));
    }
    let auth = match client_auth(&headers, form.client_id, form.client_secret) {
        Ok(auth) => auth,
        Err(problem) if problem.starts_with("use one") => {
            return Err(ApiError::bad_request("client_secret", problem).oauth());
        }
        Err(problem) => return Ok(invalid_client(&realm.name, problem)),
    };
    // RFC 8707 `resource` (RFC 8693's `audience` for an exchange): the
    // audience asked for; the library allows only registered ones.
    let resource = form
        .resource
        .filter(|r| !r.is_empty())
        .or(form.audience.filter(|a| !a.is_empty()));
    let scope = split_scope(form.scope.as_deref());
    if grant_type == GRANT_CLIENT_CREDENTIALS {
        return Ok(client_credentials(&state, &realm, auth, &scope, resource.as_deref()).await);
    }
    let grant = match grant_type.as_str() {
        GRANT_AUTHORIZATION_CODE => Grant::AuthorizationCode {
            code: SecretString::new(required("code", form.code)?),
            redirect_uri: required("redirect_uri", form.redirect_uri)?,
            client_id: required("client_id", auth.client_id)?,
            code_verifier: form
                .code_verifier
                .filter(|v| !v.is_empty())
                .map(SecretString::new),
            client_secret: auth.secret,
        },
        GRANT_PASSWORD => {
            let client = auth.or_first_party();
            // No scope asked: the server's API scopes the client registered,
            // as for a login through the server's pages.
            let scope = if scope.is_empty() {
                super::default_scope(&state, realm.id, &client.client_id).await?
            } else {
                scope
            };
            Grant::Password {
                username: required("username", form.username)?,
                password: SecretString::new(required("password", form.password)?),
                request: AccessRequest {
                    client_id: client.client_id,
                    client_secret: client.secret,
                    resource,
                    scope,
                },
            }
        }
        GRANT_REFRESH_TOKEN => Grant::RefreshToken {
            refresh_token: SecretString::new(required("refresh_token", form.refresh_token)?),
            client: auth.or_first_party(),
            scope,
        },
        GRANT_ONE_TIME => Grant::OneTime {
            token: SecretString::new(required("one_time_token", form.one_time_token)?),
        },
        _ => match exchange_grant(
            &realm.name,
            auth,
            form.subject_token,
            form.subject_token_type.as_deref(),
            resource,
            scope,
        )? {
            Ok(grant) => grant,
            Err(refused) => return Ok(refused),
        },
    };
    let exchanged = grant_type == keystead::token::grants::GRANT_TOKEN_EXCHANGE;
    let result = state.ks.tokens(realm.id).exchange(grant).await;
    count_grant(&grant_type, &result);
    match result {
        Ok(ExchangeOutcome::Tokens(tokens)) => {
            let mut body = token_json(&tokens);
            if exchanged {
                body["issued_token_type"] = ACCESS_TOKEN_TYPE.into();
            }
            Ok((no_store(), Json(body)).into_response())
        }
        Ok(ExchangeOutcome::MfaRequired { challenge }) => Ok(mfa_pending(&challenge, false)),
        Ok(ExchangeOutcome::MfaEnrollmentRequired { challenge }) => {
            Ok(mfa_pending(&challenge, true))
        }
        Err(e) => Ok(grant_error(e, &realm.name)),
    }
}

/// Count a grant by type and outcome (see [`crate::observe`]).
/// `grant_type` passed `check_type`: one of a handful of names, a safe
/// label.
fn count_grant(grant_type: &str, result: &Result<ExchangeOutcome, keystead::Error>) {
    let outcome = match result {
        Ok(ExchangeOutcome::Tokens(_)) => "ok",
        Ok(ExchangeOutcome::MfaRequired { .. }) => "mfa_required",
        Ok(ExchangeOutcome::MfaEnrollmentRequired { .. }) => "mfa_enrollment_required",
        Err(e) => e.code(),
    };
    metrics::counter!(
        "keystead_token_grants_total",
        "grant_type" => grant_type.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

async fn certs(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let jwks = state.ks.tokens(realm.id).jwks().await?;
    // Short caching: verifiers refetch soon after a rotation.
    Ok((
        [(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        Json(jwks),
    )
        .into_response())
}

async fn discovery(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
) -> Result<Json<Value>, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let mut doc = match state.ks.tokens(realm.id).discovery().await {
        Ok(doc) => doc,
        Err(keystead::Error::Token(TokenError::IssuerNotConfigured)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ISSUER_NOT_CONFIGURED",
                "the realm has no issuer URL; create it with one to publish discovery",
            )
            .oauth());
        }
        Err(e) => return Err(e.into()),
    };
    // The library's document lists exactly the grants, response type,
    // PKCE method and client authentication methods this server serves;
    // the server adds how its introspection endpoint authenticates callers.
    doc["introspection_endpoint_auth_methods_supported"] = json!(["bearer"]);
    Ok(Json(doc))
}

async fn userinfo(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    parts: Parts,
) -> Result<Json<Value>, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let token = bearer(&parts).map_err(ApiError::oauth)?;
    Ok(Json(
        state
            .ks
            .tokens(realm.id)
            .userinfo(token, &state.audience)
            .await?,
    ))
}

/// A request carrying one token (introspection, revocation; RFC 7662
/// §2.1, RFC 7009 §2.1), with the caller's client credentials when sent in
/// the form. `token_type_hint` may be sent and is not needed: the library
/// recognises the kind from the token.
#[derive(Debug, Deserialize)]
pub struct TokenParam {
    token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The client credentials of a token-carrying request, or the
/// `401 invalid_client` / `400` answer for unusable ones.
fn named_client(
    realm: &str,
    headers: &HeaderMap,
    form: &mut TokenParam,
) -> Result<Option<keystead::token::ClientAuth>, Box<Response>> {
    match client_auth(headers, form.client_id.take(), form.client_secret.take()) {
        Ok(ClientAuth {
            client_id: Some(client_id),
            secret,
        }) => Ok(Some(keystead::token::ClientAuth { client_id, secret })),
        Ok(ClientAuth { secret: None, .. }) => Ok(None),
        Ok(ClientAuth {
            secret: Some(_), ..
        }) => Err(Box::new(invalid_client(
            realm,
            "a client secret needs its client_id",
        ))),
        Err(problem) if problem.starts_with("use one") => Err(Box::new(
            ApiError::bad_request("client_secret", problem)
                .oauth()
                .into_response(),
        )),
        Err(problem) => Err(Box::new(invalid_client(realm, problem))),
    }
}

/// `POST …/token/introspect`: for a resource server with its own client
/// credentials, the bearer of a token with the `introspect` scope
/// ([`keystead::token::Introspector`]), or the administrator.
async fn introspect(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    parts: Parts,
    FormOrJson(mut form): FormOrJson<TokenParam>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let client = match named_client(&realm.name, &parts.headers, &mut form) {
        Ok(client) => client,
        Err(response) => return Ok(*response),
    };
    let token = SecretString::new(required("token", form.token)?);
    let tokens = state.ks.tokens(realm.id);
    let answer = if let Some(client) = &client {
        tokens
            .introspect_as(Introspector::Client(client), &token)
            .await
    } else {
        let presented = bearer(&parts).map_err(ApiError::oauth)?;
        if is_admin_token(&state, presented) == Some(true) {
            tokens.introspect(&token).await
        } else {
            tokens
                .introspect_as(Introspector::Bearer(presented), &token)
                .await
        }
    };
    match answer {
        Ok(answer) => Ok((no_store(), Json(answer)).into_response()),
        Err(e) if e.oauth_code() == "invalid_client" => {
            Ok(invalid_client(&realm.name, &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST …/revoke` (RFC 7009): the client authenticates (a public one by
/// its `client_id`) and revokes only its own tokens; a request naming no
/// client is `401 invalid_client`.
async fn revoke(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    headers: HeaderMap,
    FormOrJson(mut form): FormOrJson<TokenParam>,
) -> Result<Response, OAuthError> {
    let realm = realm_named(&state, &realm_name).await?;
    let client = match named_client(&realm.name, &headers, &mut form) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return Ok(invalid_client(
                &realm.name,
                "revocation needs client authentication (RFC 7009 §2.1)",
            ));
        }
        Err(response) => return Ok(*response),
    };
    let token = SecretString::new(required("token", form.token)?);
    match state.ks.tokens(realm.id).revoke(&token, &client).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) if e.oauth_code() == "invalid_client" => {
            Ok(invalid_client(&realm.name, &e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// RP-initiated logout parameters (OpenID Connect RP-Initiated Logout 1.0
/// §2).
#[derive(Debug, Default, Deserialize)]
pub struct LogoutParams {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    /// Accepted for compatibility; clients register no post-logout
    /// redirect URIs, so it changes nothing.
    #[allow(dead_code)]
    client_id: Option<String>,
}

async fn logout_get(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    parts: Parts,
    Query(params): Query<LogoutParams>,
) -> Result<Response, OAuthError> {
    logout(&state, &realm_name, &parts, params).await
}

async fn logout_post(
    State(state): State<AppState>,
    Path(realm_name): Path<String>,
    parts: Parts,
    FormOrJson(params): FormOrJson<LogoutParams>,
) -> Result<Response, OAuthError> {
    logout(&state, &realm_name, &parts, params).await
}

/// The origin (`scheme://host[:port]`) of an absolute URL.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + end])
}

async fn logout(
    state: &AppState,
    realm_name: &str,
    parts: &Parts,
    params: LogoutParams,
) -> Result<Response, OAuthError> {
    let realm = realm_named(state, realm_name).await?;
    // Check the redirect before ending anything: a refused request changes
    // nothing.
    let redirect = match params.post_logout_redirect_uri.as_deref() {
        None => None,
        Some(uri) => {
            let allowed = realm
                .settings
                .issuer_url
                .as_deref()
                .and_then(origin)
                .is_some_and(|issuer| origin(uri) == Some(issuer));
            if !allowed {
                return Err(ApiError::bad_request(
                    "post_logout_redirect_uri",
                    "must have the origin of the realm's issuer URL",
                )
                .oauth());
            }
            Some(uri.to_owned())
        }
    };
    let hint = match params.id_token_hint {
        Some(hint) if !hint.is_empty() => hint,
        _ => bearer(parts)
            .map_err(|_| {
                ApiError::bad_request(
                    "id_token_hint",
                    "name the session with id_token_hint or a bearer token",
                )
                .oauth()
            })?
            .to_owned(),
    };
    let tokens = state.ks.tokens(realm.id);
    let info = tokens.introspect(&SecretString::new(hint)).await?;
    let sid = info
        .get("sid")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .filter(|_| info["active"] == true)
        .ok_or_else(|| {
            ApiError::bad_request("id_token_hint", "not an active token of this realm").oauth()
        })?;
    tokens.logout(sid).await?;
    tracing::info!(realm = %realm.id, "session logged out");
    Ok(match redirect {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(mut uri) => {
            if let Some(s) = params.state {
                let sep = if uri.contains('?') { '&' } else { '?' };
                uri.push(sep);
                uri.push_str("state=");
                uri.push_str(&percent_encode(&s));
            }
            match HeaderValue::from_str(&uri) {
                Ok(location) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
                Err(_) => StatusCode::NO_CONTENT.into_response(),
            }
        }
    })
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://id.example.com/realms/a?x=1"),
            Some("https://id.example.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080#f"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("https://evil.com.id.example.com/x"),
            Some("https://evil.com.id.example.com")
        );
        assert_eq!(origin("/relative"), None);
        assert_eq!(origin("https://"), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        // RFC 6749 §2.3.1: "a b" and "p+q:r" form-urlencoded, then Basic.
        let basic = base64::engine::general_purpose::STANDARD.encode("a+b:p%2Bq%3Ar");
        headers.insert(AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        let auth = client_auth(&headers, None, None).unwrap();
        assert_eq!(auth.client_id.as_deref(), Some("a b"));
        assert_eq!(auth.secret.unwrap().expose(), "p+q:r");
        // Both methods at once, a mismatching form id, junk: refused.
        assert!(client_auth(&headers, None, Some("s".into())).is_err());
        assert!(client_auth(&headers, Some("other".into()), None).is_err());
        assert!(client_auth(&headers, Some("a b".into()), None).is_ok());
        headers.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(client_auth(&headers, None, None).is_err());
        let no_colon = base64::engine::general_purpose::STANDARD.encode("abc");
        headers.insert(AUTHORIZATION, format!("Basic {no_colon}").parse().unwrap());
        assert!(client_auth(&headers, None, None).is_err());
        // A bearer header is not client authentication.
        headers.insert(AUTHORIZATION, "Bearer x".parse().unwrap());
        let auth = client_auth(&headers, Some("web".into()), Some("s".into())).unwrap();
        assert_eq!(auth.client_id.as_deref(), Some("web"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%ff"), None);
    }

    #[test]
    fn state_is_percent_encoded() {
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
