//! The authorization request and the login transaction it starts.
//!
//! [`OAuth::authorize`] validates a request in this order, and the order
//! decides where an error goes (RFC 6749 §4.1.2.1):
//!
//! 1. `client_id` (present, registered) and `redirect_uri` (present, one of
//!    the client's, byte for byte): a failure is
//!    [`AuthorizeError::NoRedirect`] — the embedder shows an error page,
//!    because redirecting to an unverified URI would make it an open
//!    redirector.
//! 2. `state` (at most [`MAX_STATE_LEN`] bytes of `%x20-7E`), then
//!    `response_type` (`code` only; the client must allow the code flow),
//!    `scope` (within the client's), `nonce`, and PKCE (`code_challenge`
//!    of 43 base64url characters with `code_challenge_method=S256`; `plain`
//!    and a missing method are refused, and a client that requires PKCE
//!    must send it): a failure is [`AuthorizeError::Redirect`], which the
//!    embedder sends back to the client as `error`, `state` and `iss`
//!    (RFC 9207) on the redirect URI.
//!
//! A valid request is stored as a login transaction and answered with its
//! handle. The login steps take the handle: password, then the MFA
//! challenge or its enrolment path, or a magic link. The transaction
//! remembers the challenge, so the browser only ever holds the handle.
//! When a step yields a session the transaction is deleted with
//! compare-and-swap in the batch that stores the authorization code, so it
//! yields at most one code even when two steps race; the loser's session
//! is revoked again. Query parameters sent more than once must be refused
//! by the front-end before building an [`AuthorizationRequest`] (RFC 6749
//! §3.1).

use super::code::{CodeRecord, StoredCode};
use super::{
    Bearer, MAX_STATE_LEN, OAuth, OAuthError, TRANSACTION_TTL_SECS, client::Client,
    client::ClientKind, client::GrantType, layout,
};
use crate::error::Error;
use crate::id::{ChallengeId, MagicLinkId};
use crate::keystead::MAX_RETRIES;
use crate::mfa::{MfaAnswer, MfaFactor, MfaKeyId, NewTotpKey};
use crate::realm::Realm;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use crate::user::{LoginOutcome, Session};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The query of an authorization request, as the front-end received it
/// (each parameter at most once; `None` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// Must be `code`.
    pub response_type: Option<String>,
    /// The client.
    pub client_id: Option<String>,
    /// One of the client's registered redirect URIs, exactly.
    pub redirect_uri: Option<String>,
    /// Space-separated scope values.
    pub scope: Option<String>,
    /// Opaque value echoed back to the client (CSRF protection).
    pub state: Option<String>,
    /// OpenID Connect nonce, copied into the ID token.
    pub nonce: Option<String>,
    /// PKCE challenge (RFC 7636 §4.2): base64url SHA-256 of the verifier.
    pub code_challenge: Option<String>,
    /// Must be `S256`.
    pub code_challenge_method: Option<String>,
}

/// A started login: carry `handle` through the login page (a hidden form
/// field or a cookie) and pass it to each login step.
#[derive(Debug)]
pub struct LoginTransaction {
    /// The transaction's handle (`kslt_…`); a bearer secret.
    pub handle: SecretString,
    /// The client the user is logging in to (for the login page).
    pub client_id: String,
    /// The granted scope (for a consent line on the login page).
    pub scope: Vec<String>,
    /// When the transaction stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// Why an authorization request failed, split by where the answer may go.
#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or the redirect URI is wrong (or the realm or storage
    /// failed): show the error to the user; never redirect.
    NoRedirect(Error),
    /// Redirect the browser to [`ErrorRedirect::location`].
    Redirect(ErrorRedirect),
}

impl AuthorizeError {
    /// The error, wherever it goes.
    pub fn error(&self) -> &Error {
        match self {
            AuthorizeError::NoRedirect(e) => e,
            AuthorizeError::Redirect(r) => &r.error,
        }
    }
}

impl std::fmt::Display for AuthorizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error().fmt(f)
    }
}

impl std::error::Error for AuthorizeError {}

impl From<AuthorizeError> for Error {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::NoRedirect(e) => e,
            AuthorizeError::Redirect(r) => r.error,
        }
    }
}

/// An error answer for the client (RFC 6749 §4.1.2.1).
#[derive(Debug)]
pub struct ErrorRedirect {
    /// The verified redirect URI.
    pub redirect_uri: String,
    /// What went wrong; its [`Error::oauth_code`] is the `error` parameter.
    pub error: Error,
    /// The request's `state`, echoed when it was well-formed.
    pub state: Option<String>,
    /// The realm's issuer (RFC 9207 `iss`).
    pub iss: String,
}

impl ErrorRedirect {
    /// The URL to redirect to: the redirect URI with `error`, `state` and
    /// `iss` added to its query.
    pub fn location(&self) -> String {
        let mut params = vec![("error", self.error.oauth_code())];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        params.push(("iss", &self.iss));
        with_query(&self.redirect_uri, &params)
    }
}

/// A successful authorization (RFC 6749 §4.1.2).
#[derive(Debug)]
pub struct AuthorizationResponse {
    /// The verified redirect URI.
    pub redirect_uri: String,
    /// The authorization code (`ksac_…`), valid for
    /// [`CODE_TTL_SECS`](super::CODE_TTL_SECS).
    pub code: SecretString,
    /// The request's `state`.
    pub state: Option<String>,
    /// The realm's issuer (RFC 9207 `iss`).
    pub iss: String,
}

impl AuthorizationResponse {
    /// The URL to redirect to: the redirect URI with `code`, `state` and
    /// `iss` added to its query. Secret: it carries the code.
    pub fn location(&self) -> SecretString {
        let mut params = vec![("code", self.code.expose())];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        params.push(("iss", &self.iss));
        SecretString::new(with_query(&self.redirect_uri, &params))
    }
}

/// Where a login step left the transaction.
#[derive(Debug)]
#[must_use]
pub enum LoginStep {
    /// Logged in: redirect the browser to [`AuthorizationResponse::location`].
    Authorized(AuthorizationResponse),
    /// A second factor is due: ask for one of `factors` and call
    /// [`OAuth::login_second_factor`].
    MfaRequired {
        /// The factors that may answer.
        factors: Vec<MfaFactor>,
    },
    /// The realm requires MFA and the user has none: set one up with
    /// [`OAuth::enrollment_key`] and [`OAuth::login_enrollment`].
    MfaEnrollmentRequired,
}

/// The login step a transaction has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TxStep {
    /// Waiting for a first factor (password or magic link).
    FirstFactor,
    /// Waiting for the answer to this MFA challenge.
    SecondFactor(ChallengeId),
    /// Waiting for the enrolment through this challenge.
    Enrollment(ChallengeId),
}

/// A login transaction as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredTransaction {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    /// The S256 PKCE challenge, if the request had one.
    pub(crate) code_challenge: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    pub(crate) step: TxStep,
}

/// How a login transaction is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TransactionRecord {
    V1(StoredTransaction),
}

/// `%x20-7E`, 1 to [`MAX_STATE_LEN`] bytes: RFC 6749's VSCHAR.
fn vschar(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_STATE_LEN
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// A PKCE S256 challenge: 43 base64url characters (32 bytes).
pub(crate) fn is_s256_challenge(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// The requested scope values, deduplicated: well-formed and each allowed
/// for the client, or `invalid_scope`.
fn scope_of(client: &Client, request: &AuthorizationRequest) -> Result<Vec<String>, OAuthError> {
    let mut scope: Vec<String> = Vec::new();
    for value in request.scope.as_deref().unwrap_or_default().split(' ') {
        if !value.is_empty() && !scope.iter().any(|s| s == value) {
            scope.push(value.to_owned());
        }
    }
    if crate::token::check_scope(&scope).is_err()
        || !scope.iter().all(|s| client.scopes.contains(s))
    {
        return Err(OAuthError::InvalidScope);
    }
    Ok(scope)
}

/// The request's PKCE challenge: S256 only, required for public clients
/// and clients that require PKCE.
fn pkce_of(client: &Client, request: &AuthorizationRequest) -> Result<Option<String>, OAuthError> {
    let invalid = |reason| Err(OAuthError::InvalidRequest { reason });
    match (
        request.code_challenge.as_deref(),
        request.code_challenge_method.as_deref(),
    ) {
        (None, None) if client.require_pkce || client.kind == ClientKind::Public => {
            invalid("code_challenge is required (PKCE, S256)")
        }
        (None, None) => Ok(None),
        (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => {
            Ok(Some(challenge.to_owned()))
        }
        (Some(_), Some("S256")) => invalid("code_challenge must be 43 base64url characters"),
        (None, Some(_)) => invalid("code_challenge_method without code_challenge"),
        // A missing method means `plain` (RFC 7636 §4.3): refused, as is
        // every method but S256.
        (Some(_), _) => invalid("code_challenge_method must be S256"),
    }
}

/// `base` with `params` appended to its query (RFC 6749 §4.1.2 keeps the
/// redirect URI's own query).
fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = base.to_owned();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        percent_encode(value, &mut url);
        sep = '&';
    }
    url
}

impl OAuth {
    /// Validate an authorization request and start its login transaction;
    /// see the [module docs](self) for the checks and where their errors
    /// go.
    pub async fn authorize(
        &self,
        request: &AuthorizationRequest,
    ) -> Result<LoginTransaction, AuthorizeError> {
        let realm = self
            .active_realm()
            .await
            .map_err(AuthorizeError::NoRedirect)?;
        let no_redirect = |e: OAuthError| AuthorizeError::NoRedirect(e.into());
        let client_id =
            request
                .client_id
                .as_deref()
                .ok_or(no_redirect(OAuthError::InvalidRequest {
                    reason: "client_id is required",
                }))?;
        let client = self
            .load_client(client_id)
            .await
            .map_err(AuthorizeError::NoRedirect)?
            .ok_or(no_redirect(OAuthError::InvalidClient))?
            .0
            .client;
        let redirect_uri = request
            .redirect_uri
            .as_deref()
            .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
            .ok_or(no_redirect(OAuthError::InvalidRedirectUri))?;
        // From here on the client hears about every error.
        let state = request.state.clone().filter(|s| vschar(s));
        let redirect = |e: OAuthError| {
            AuthorizeError::Redirect(ErrorRedirect {
                redirect_uri: redirect_uri.to_owned(),
                error: e.into(),
                state: state.clone(),
                iss: crate::token::service::issuer(&realm),
            })
        };
        if request.state.is_some() && state.is_none() {
            return Err(redirect(OAuthError::InvalidRequest {
                reason: "state must be 1 to 1024 characters of %x20-7E",
            }));
        }
        match request.response_type.as_deref() {
            None => {
                return Err(redirect(OAuthError::InvalidRequest {
                    reason: "response_type is required",
                }));
            }
            Some("code") => {}
            Some(_) => return Err(redirect(OAuthError::UnsupportedResponseType)),
        }
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(redirect(OAuthError::UnauthorizedClient));
        }
        let scope = scope_of(&client, request).map_err(redirect)?;
        if request.nonce.as_deref().is_some_and(|n| !vschar(n)) {
            return Err(redirect(OAuthError::InvalidRequest {
                reason: "nonce must be 1 to 1024 characters of %x20-7E",
            }));
        }
        let code_challenge = pkce_of(&client, request).map_err(redirect)?;
        let now = self.now();
        let tx = StoredTransaction {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.clone(),
            state,
            nonce: request.nonce.clone(),
            code_challenge,
            created_at: now,
            expires_at: now + Duration::seconds(TRANSACTION_TTL_SECS),
            step: TxStep::FirstFactor,
        };
        let stored = async {
            let (handle, digest) = Bearer::Transaction.generate()?;
            let key = layout::transaction(self.realm, &digest);
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &TransactionRecord::V1(tx.clone()))?,
                Precondition::Absent,
            )?;
            self.ctx.store.commit(batch).await?;
            Ok::<_, Error>(handle)
        };
        let handle = stored.await.map_err(AuthorizeError::NoRedirect)?;
        Ok(LoginTransaction {
            handle,
            client_id: tx.client_id,
            scope,
            expires_at: tx.expires_at,
        })
    }

    /// The live transaction of `handle` at `now` with its key and version;
    /// otherwise `OAUTH_TRANSACTION_NOT_FOUND`.
    async fn live_transaction(
        &self,
        handle: &SecretString,
        now: DateTime<Utc>,
    ) -> Result<(StoredTransaction, crate::store::key::Key, u64), Error> {
        let digest = Bearer::Transaction
            .digest(handle.expose())
            .ok_or(OAuthError::TransactionNotFound)?;
        let key = layout::transaction(self.realm, &digest);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(OAuthError::TransactionNotFound)?;
        let TransactionRecord::V1(tx) = record::decode(key.as_bytes(), &stored.value)?;
        if now >= tx.expires_at {
            return Err(OAuthError::TransactionNotFound.into());
        }
        Ok((tx, key, stored.version))
    }

    /// The live transaction, which must be at `step` (compared by kind).
    async fn transaction_at(
        &self,
        handle: &SecretString,
        want: fn(&TxStep) -> bool,
    ) -> Result<(std::sync::Arc<Realm>, StoredTransaction), Error> {
        let realm = self.active_realm().await?;
        let (tx, _, _) = self.live_transaction(handle, self.now()).await?;
        if !want(&tx.step) {
            return Err(OAuthError::WrongStep.into());
        }
        Ok((realm, tx))
    }

    /// First factor: the user's password, checked by
    /// [`Users::authenticate`](crate::user::Users::authenticate) (lockout,
    /// no enumeration: its errors pass through unchanged and the
    /// transaction stays open for another try).
    pub async fn login_password(
        &self,
        handle: &SecretString,
        username: &str,
        password: SecretString,
    ) -> Result<LoginStep, Error> {
        let (realm, _) = self
            .transaction_at(handle, |s| *s == TxStep::FirstFactor)
            .await?;
        let outcome = self.users().authenticate(username, password).await?;
        self.advance(&realm, handle, outcome).await
    }

    /// First factor: a magic link (see
    /// [`Tokens::verify_magic_link`](crate::token::Tokens::verify_magic_link)).
    pub async fn login_magic_link(
        &self,
        handle: &SecretString,
        id: MagicLinkId,
        token: &SecretString,
    ) -> Result<LoginStep, Error> {
        let (realm, _) = self
            .transaction_at(handle, |s| *s == TxStep::FirstFactor)
            .await?;
        let outcome = self.tokens().verify_magic_link(id, token).await?;
        self.advance(&realm, handle, outcome).await
    }

    /// Second factor: answer the transaction's MFA challenge (see
    /// [`Mfa::complete_challenge`](crate::mfa::Mfa::complete_challenge),
    /// whose errors pass through).
    pub async fn login_second_factor(
        &self,
        handle: &SecretString,
        answer: &MfaAnswer,
    ) -> Result<LoginStep, Error> {
        let (realm, tx) = self
            .transaction_at(handle, |s| matches!(s, TxStep::SecondFactor(_)))
            .await?;
        let TxStep::SecondFactor(challenge) = tx.step else {
            return Err(OAuthError::WrongStep.into());
        };
        let session = self.mfa().complete_challenge(challenge, answer).await?;
        self.advance(&realm, handle, LoginOutcome::Authenticated(session))
            .await
    }

    /// Enrolment path: create the pending TOTP key the user sets up (see
    /// [`Mfa::create_totp_key_for_challenge`](crate::mfa::Mfa::create_totp_key_for_challenge)).
    pub async fn enrollment_key(&self, handle: &SecretString) -> Result<NewTotpKey, Error> {
        let (_, tx) = self
            .transaction_at(handle, |s| matches!(s, TxStep::Enrollment(_)))
            .await?;
        let TxStep::Enrollment(challenge) = tx.step else {
            return Err(OAuthError::WrongStep.into());
        };
        self.mfa().create_totp_key_for_challenge(challenge).await
    }

    /// Enrolment path: activate the key with a code, which logs the user in
    /// (see [`Mfa::complete_enrollment`](crate::mfa::Mfa::complete_enrollment)).
    pub async fn login_enrollment(
        &self,
        handle: &SecretString,
        key: MfaKeyId,
        code: &SecretString,
    ) -> Result<LoginStep, Error> {
        let (realm, tx) = self
            .transaction_at(handle, |s| matches!(s, TxStep::Enrollment(_)))
            .await?;
        let TxStep::Enrollment(challenge) = tx.step else {
            return Err(OAuthError::WrongStep.into());
        };
        let session = self.mfa().complete_enrollment(challenge, key, code).await?;
        self.advance(&realm, handle, LoginOutcome::Authenticated(session))
            .await
    }

    /// The user declined or cancelled: end the transaction and answer the
    /// client with `access_denied`.
    pub async fn cancel(&self, handle: &SecretString) -> Result<ErrorRedirect, Error> {
        let realm = self.active_realm().await?;
        let (tx, key, version) = self.live_transaction(handle, self.now()).await?;
        let mut batch = Batch::new();
        batch.delete(key, Precondition::Version(version))?;
        match self.ctx.store.commit(batch).await {
            Ok(_) => Ok(ErrorRedirect {
                redirect_uri: tx.redirect_uri,
                error: OAuthError::AccessDenied.into(),
                state: tx.state,
                iss: crate::token::service::issuer(&realm),
            }),
            Err(StorageError::Conflict { .. }) => Err(OAuthError::TransactionNotFound.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Record what a login step produced: the challenge to answer next, or
    /// — for a session — the code, consuming the transaction.
    async fn advance(
        &self,
        realm: &Realm,
        handle: &SecretString,
        outcome: LoginOutcome,
    ) -> Result<LoginStep, Error> {
        let now = self.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (tx, key, version) = match self.live_transaction(handle, now).await {
                Ok(found) => found,
                Err(e) => return Err(self.orphaned(&outcome, e).await),
            };
            let mut batch = Batch::new();
            let step = match &outcome {
                LoginOutcome::Authenticated(session) => {
                    let step = self.code_writes(&mut batch, realm, &tx, session, now)?;
                    batch.delete(key, Precondition::Version(version))?;
                    step
                }
                LoginOutcome::MfaRequired { challenge } => {
                    let next = StoredTransaction {
                        step: TxStep::SecondFactor(challenge.id),
                        ..tx
                    };
                    batch.put(
                        key.clone(),
                        record::encode(key.as_bytes(), &TransactionRecord::V1(next))?,
                        Precondition::Version(version),
                    )?;
                    LoginStep::MfaRequired {
                        factors: challenge.factors.clone(),
                    }
                }
                LoginOutcome::MfaEnrollmentRequired { challenge } => {
                    let next = StoredTransaction {
                        step: TxStep::Enrollment(challenge.id),
                        ..tx
                    };
                    batch.put(
                        key.clone(),
                        record::encode(key.as_bytes(), &TransactionRecord::V1(next))?,
                        Precondition::Version(version),
                    )?;
                    LoginStep::MfaEnrollmentRequired
                }
            };
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(step),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        let e = last.map_or_else(|| OAuthError::TransactionNotFound.into(), Error::from);
        Err(self.orphaned(&outcome, e).await)
    }

    /// A session made by a step whose transaction ended meanwhile belongs
    /// to no authorization: revoke it, and report `error`.
    async fn orphaned(&self, outcome: &LoginOutcome, error: Error) -> Error {
        if let LoginOutcome::Authenticated(session) = outcome
            && let Err(e) = self.users().revoke_session(session.id).await
            && !matches!(e, Error::Auth(crate::user::AuthError::SessionNotFound))
        {
            return e;
        }
        error
    }

    /// Add the authorization code for `session` to `batch` (`Absent`);
    /// the step to report.
    fn code_writes(
        &self,
        batch: &mut Batch,
        realm: &Realm,
        tx: &StoredTransaction,
        session: &Session,
        now: DateTime<Utc>,
    ) -> Result<LoginStep, Error> {
        let (code, digest) = Bearer::Code.generate()?;
        let stored = StoredCode {
            client_id: tx.client_id.clone(),
            redirect_uri: tx.redirect_uri.clone(),
            scope: tx.scope.clone(),
            nonce: tx.nonce.clone(),
            code_challenge: tx.code_challenge.clone(),
            session: session.id,
            user: session.user,
            created_at: now,
            expires_at: now + Duration::seconds(super::CODE_TTL_SECS),
            redeemed: None,
        };
        let key = layout::code(self.realm, &digest);
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &CodeRecord::V1(stored))?,
            Precondition::Absent,
        )?;
        Ok(LoginStep::Authorized(AuthorizationResponse {
            redirect_uri: tx.redirect_uri.clone(),
            code,
            state: tx.state.clone(),
            iss: crate::token::service::issuer(realm),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_keep_the_query_and_encode_values() {
        let r = ErrorRedirect {
            redirect_uri: "https://app.example/cb?tenant=a".into(),
            error: OAuthError::InvalidScope.into(),
            state: Some("a b&c=d".into()),
            iss: "https://id.example/realms/acme".into(),
        };
        assert_eq!(
            r.location(),
            "https://app.example/cb?tenant=a&error=invalid_scope&state=a%20b%26c%3Dd\
             &iss=https%3A%2F%2Fid.example%2Frealms%2Facme"
        );
        let ok = AuthorizationResponse {
            redirect_uri: "https://app.example/cb".into(),
            code: SecretString::from("ksac_x"),
            state: None,
            iss: "urn:x".into(),
        };
        assert_eq!(
            ok.location().expose(),
            "https://app.example/cb?code=ksac_x&iss=urn%3Ax"
        );
    }

    #[test]
    fn state_and_challenge_shapes() {
        assert!(vschar("a b~"));
        assert!(!vschar(""));
        assert!(!vschar("a\nb"));
        assert!(!vschar("é"));
        assert!(!vschar(&"x".repeat(MAX_STATE_LEN + 1)));
        assert!(is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c"
        ));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"
        ));
    }

    #[test]
    fn transaction_record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let challenge = ChallengeId::from_bytes([
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 5,
        ])
        .unwrap();
        let record = TransactionRecord::V1(StoredTransaction {
            client_id: "web".into(),
            redirect_uri: "https://a.example/cb".into(),
            scope: vec!["openid".into()],
            state: Some("s".into()),
            nonce: Some("n".into()),
            code_challenge: Some("c".into()),
            created_at: at,
            expires_at: at + Duration::seconds(600),
            step: TxStep::SecondFactor(challenge),
        });
        crate::store::record::assert_golden(&record, GOLDEN_TRANSACTION_V1);
    }

    const GOLDEN_TRANSACTION_V1: &str = "0100037765621468747470733a2f2f612e6578616d706c652f636201066f70656e696401017301016e01016314323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a32333a32305a0110018bcfe5680070008000000000000005";
}
