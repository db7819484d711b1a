//! OAuth 2.0 clients and the authorization-code flow with PKCE (RFC 6749
//! §4.1, RFC 7636, RFC 9700), the library half of a realm's
//! `protocol/openid-connect/auth` endpoint.
//!
//! Get a handle bound to one realm with
//! [`Keystead::oauth`](crate::Keystead::oauth); every call first checks that
//! the realm exists and is active.
//!
//! # The flow
//!
//! 1. **Clients** ([`client`]) are registered per realm: public (browser and
//!    native apps; PKCE required, no secret) or confidential (a secret shown
//!    once, stored as a SHA-256 digest, compared in constant time), with
//!    their exact redirect URIs, grant types, scopes, audience and an
//!    optional access-token lifetime.
//! 2. **Authorization request** ([`authorize`]): [`OAuth::authorize`]
//!    checks `response_type=code`, the client, the redirect URI (byte-exact
//!    match with a registered one), scope, `state`, `nonce` and PKCE
//!    (`S256` only) and stores a **login transaction**: the embedder gets
//!    an opaque handle (`kslt_…`, 256 random bits, stored as a digest) to
//!    carry through its login page. Errors about the client or the redirect
//!    URI are [`AuthorizeError::NoRedirect`] — showing them to the user is
//!    the only safe answer, redirecting would make an open redirector;
//!    every other error is [`AuthorizeError::Redirect`] with `error`,
//!    `state` and `iss` for the client.
//! 3. **Login steps** advance the transaction: password
//!    ([`OAuth::login_password`], which runs
//!    [`Users::authenticate`](crate::user::Users::authenticate)), the MFA
//!    challenge ([`OAuth::login_second_factor`],
//!    [`OAuth::enrollment_key`], [`OAuth::login_enrollment`]) or a magic
//!    link ([`OAuth::login_magic_link`]). When a session results, the
//!    transaction is consumed (compare-and-swap delete: it yields at most
//!    one code) and an **authorization code** ([`code`]) is issued in the
//!    same batch: single use, [`CODE_TTL_SECS`] long, bound to the client,
//!    redirect URI, PKCE challenge, nonce and session.
//! 4. **Token endpoint**: [`Grant::AuthorizationCode`](crate::token::Grant)
//!    redeems the code through [`Tokens::exchange`](crate::token::Tokens::exchange):
//!    client authentication, redirect URI, PKCE verifier, then one batch
//!    that marks the code redeemed (`Version`) and creates the refresh
//!    family — so of two redemptions exactly one issues tokens. A code
//!    presented again, concurrently or later, fails with
//!    `OAUTH_CODE_REUSED` and revokes what the first redemption issued
//!    (its session, and with it every access and refresh token; RFC 6749
//!    §4.1.2). With `openid` in scope the response carries an ID token
//!    ([`crate::token::id_token`]).
//! 5. **Client credentials** ([`credentials`]): confidential clients get
//!    access tokens for themselves (`sub` = `client_id`, RFC 9068 §2.2),
//!    verified with [`OAuth::verify_client_token`].
//!
//! # Storage
//!
//! Under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `oauth-client/<client_id>` | `ClientRecord` (settings, digest of the secret) |
//! | `oauth-tx/<SHA-256 of the handle>` | `TransactionRecord`: the validated request and the login step reached |
//! | `oauth-code/<SHA-256 of the code>` | `CodeRecord`: what the code is bound to, and once redeemed what it issued |
//!
//! Redeemed code records stay behind so a second redemption is recognised
//! as reuse whenever it comes.

pub mod authorize;
pub mod client;
pub mod code;
pub mod credentials;
pub mod policy;

pub use authorize::{
    AuthorizationRequest, AuthorizationResponse, AuthorizeError, ErrorRedirect, LoginStep,
    LoginTransaction,
};
pub use client::{Client, ClientKind, ClientUpdate, GrantType, NewClient, NewClientSecret};
pub use credentials::ClientClaims;

use crate::crypto::{random_array, sha256};
use crate::error::Error;
use crate::id::RealmId;
use crate::keystead::Context;
use crate::realm::Realm;
use crate::secret::SecretString;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

/// How long an authorization code can be redeemed: 60 seconds (RFC 6749
/// §4.1.2 allows up to 10 minutes; a code travels once through the
/// browser and straight on to the token endpoint).
pub const CODE_TTL_SECS: i64 = 60;
/// How long a login transaction lives: 10 minutes for the user to type a
/// password and a second factor.
pub const TRANSACTION_TTL_SECS: i64 = 600;
/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 16;
/// Longest redirect URI, in bytes.
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// Longest `state` or `nonce`, in bytes.
pub const MAX_STATE_LEN: usize = 1024;

/// The scope value that makes a request an OpenID Connect one: the token
/// response then carries an ID token.
pub const SCOPE_OPENID: &str = "openid";

/// Why an OAuth operation failed. [`OAuthError::oauth_code`] gives the
/// RFC 6749 §4.1.2.1 / §5.2 error code a front-end returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// A parameter is missing, repeated, malformed or not allowed
    /// (`reason` says which, in words a developer can act on).
    #[error("invalid OAuth request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: &'static str,
    },
    /// The client is unknown, or its authentication failed (wrong, missing
    /// or unexpected secret).
    #[error("client authentication failed")]
    InvalidClient,
    /// The redirect URI is missing or not one the client registered.
    #[error("redirect_uri is not registered for this client")]
    InvalidRedirectUri,
    /// The client may not use this grant or response type.
    #[error("client is not allowed this grant")]
    UnauthorizedClient,
    /// `response_type` is not `code`.
    #[error("unsupported response_type")]
    UnsupportedResponseType,
    /// A requested scope value is not allowed for the client.
    #[error("scope not allowed for this client")]
    InvalidScope,
    /// The requested audience (`resource`, RFC 8707 §2) is not one the
    /// client registered, or not the one a refresh must keep.
    #[error("audience not allowed for this client")]
    InvalidTarget,

    /// The user declined, or the login was cancelled.
    #[error("access denied")]
    AccessDenied,
    /// The authorization code is unknown, expired, of another client or
    /// redirect URI, or the PKCE verifier does not match.
    #[error("invalid authorization grant: {reason}")]
    InvalidGrant {
        /// Which check failed (for logs; the client sees `invalid_grant`).
        reason: &'static str,
    },
    /// The authorization code was redeemed before: the tokens of the first
    /// redemption are revoked.
    #[error("authorization code reused; the tokens it issued are revoked")]
    CodeReused,
    /// No such login transaction, or it expired or already ended.
    #[error("login transaction not found or expired")]
    TransactionNotFound,
    /// The login transaction is at another step (e.g. a second factor is
    /// due, not a password).
    #[error("login transaction is at another step")]
    WrongStep,
    /// No client with that id in this realm (administration calls).
    #[error("client not found")]
    ClientNotFound,
    /// Another client of the realm has that id.
    #[error("client_id is taken")]
    ClientExists,
}

impl OAuthError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest { .. } => "OAUTH_INVALID_REQUEST",
            OAuthError::InvalidClient => "OAUTH_INVALID_CLIENT",
            OAuthError::InvalidRedirectUri => "OAUTH_INVALID_REDIRECT_URI",
            OAuthError::UnauthorizedClient => "OAUTH_UNAUTHORIZED_CLIENT",
            OAuthError::UnsupportedResponseType => "OAUTH_UNSUPPORTED_RESPONSE_TYPE",
            OAuthError::InvalidScope => "OAUTH_INVALID_SCOPE",
            OAuthError::InvalidTarget => "OAUTH_INVALID_TARGET",

            OAuthError::AccessDenied => "OAUTH_ACCESS_DENIED",
            OAuthError::InvalidGrant { .. } => "OAUTH_INVALID_GRANT",
            OAuthError::CodeReused => "OAUTH_CODE_REUSED",
            OAuthError::TransactionNotFound => "OAUTH_TRANSACTION_NOT_FOUND",
            OAuthError::WrongStep => "OAUTH_WRONG_STEP",
            OAuthError::ClientNotFound => "OAUTH_CLIENT_NOT_FOUND",
            OAuthError::ClientExists => "OAUTH_CLIENT_EXISTS",
        }
    }

    /// The OAuth error code (RFC 6749 §4.1.2.1, §5.2).
    pub fn oauth_code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest { .. }
            | OAuthError::InvalidRedirectUri
            | OAuthError::TransactionNotFound
            | OAuthError::WrongStep
            | OAuthError::ClientNotFound
            | OAuthError::ClientExists => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::UnauthorizedClient => "unauthorized_client",
            OAuthError::UnsupportedResponseType => "unsupported_response_type",
            OAuthError::InvalidScope => "invalid_scope",
            OAuthError::InvalidTarget => "invalid_target",

            OAuthError::AccessDenied => "access_denied",
            OAuthError::InvalidGrant { .. } | OAuthError::CodeReused => "invalid_grant",
        }
    }
}

/// Handle for the OAuth clients and authorization flow of one realm; get
/// one with [`Keystead::oauth`](crate::Keystead::oauth). Cheap to clone. See
/// the [module docs](self).
#[derive(Clone)]
pub struct OAuth {
    pub(crate) ctx: Arc<Context>,
    pub(crate) realm: RealmId,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OAuth({})", self.realm)
    }
}

impl OAuth {
    pub(crate) fn new(ctx: Arc<Context>, realm: RealmId) -> Self {
        Self { ctx, realm }
    }

    /// The realm this handle is bound to.
    pub fn realm(&self) -> RealmId {
        self.realm
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ctx.clock.now()
    }

    pub(crate) async fn active_realm(&self) -> Result<Arc<Realm>, Error> {
        crate::realm::service::load_active(&self.ctx, self.realm).await
    }

    pub(crate) fn users(&self) -> crate::user::Users {
        crate::user::Users::new(Arc::clone(&self.ctx), self.realm)
    }

    pub(crate) fn tokens(&self) -> crate::token::Tokens {
        crate::token::Tokens::new(Arc::clone(&self.ctx), self.realm)
    }

    pub(crate) fn mfa(&self) -> crate::mfa::Mfa {
        crate::mfa::Mfa::new(Arc::clone(&self.ctx), self.realm)
    }
}

/// The bearer secrets of this module: `prefix_` ‖ base64url of 32 random
/// bytes, like [`crate::crypto::secret`]'s tokens, with prefixes of their
/// own so no other token is ever taken for one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bearer {
    /// A login-transaction handle (`kslt_…`).
    Transaction,
    /// An authorization code (`ksac_…`).
    Code,
    /// A client secret (`kscs_…`).
    ClientSecret,
}

/// Length of the base64url body of a bearer secret (32 bytes, unpadded).
const BEARER_BODY_LEN: usize = 43;

impl Bearer {
    fn prefix(self) -> &'static str {
        match self {
            Bearer::Transaction => "kslt_",
            Bearer::Code => "ksac_",
            Bearer::ClientSecret => "kscs_",
        }
    }

    /// A new secret and the SHA-256 digest to store instead of it.
    pub(crate) fn generate(self) -> Result<(SecretString, [u8; 32]), Error> {
        let random = random_array::<32>()?;
        let mut token = String::with_capacity(self.prefix().len() + BEARER_BODY_LEN);
        token.push_str(self.prefix());
        URL_SAFE_NO_PAD.encode_string(random.as_ref(), &mut token);
        let digest = sha256(token.as_bytes());
        Ok((SecretString::new(token), digest))
    }

    /// The digest of a presented secret of this kind; `None` for anything
    /// of another shape (checked before any storage read).
    pub(crate) fn digest(self, presented: &str) -> Option<[u8; 32]> {
        let body = presented.strip_prefix(self.prefix())?;
        let shaped = body.len() == BEARER_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        shaped.then(|| sha256(presented.as_bytes()))
    }
}

/// The storage keys of one realm's OAuth data.
pub(crate) mod layout {
    use crate::id::RealmId;
    use crate::realm::service::data_prefix;
    use crate::store::key::Key;

    pub(crate) fn clients(realm: RealmId) -> Key {
        data_prefix(realm).push("oauth-client")
    }
    pub(crate) fn client(realm: RealmId, client_id: &str) -> Key {
        clients(realm).push(client_id)
    }
    pub(crate) fn transaction(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("oauth-tx").push(digest)
    }
    pub(crate) fn code(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("oauth-code").push(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_shapes_and_prefixes() {
        let (code, digest) = Bearer::Code.generate().unwrap();
        assert!(code.expose().starts_with("ksac_"));
        assert_eq!(code.expose().len(), 5 + BEARER_BODY_LEN);
        assert_eq!(Bearer::Code.digest(code.expose()), Some(digest));
        // A code is not a transaction handle, and nothing else is a code.
        assert_eq!(Bearer::Transaction.digest(code.expose()), None);
        let mut tampered = code.expose().to_owned();
        tampered.push('A');
        assert_eq!(Bearer::Code.digest(&tampered), None);
        assert_eq!(Bearer::Code.digest("ksac_"), None);
        let bad_alphabet = format!("ksac_{}", "+".repeat(BEARER_BODY_LEN));
        assert_eq!(Bearer::Code.digest(&bad_alphabet), None);
        let (other, _) = Bearer::Code.generate().unwrap();
        assert_ne!(other.expose(), code.expose());
    }

    #[test]
    fn codes_are_stable_and_map_to_oauth() {
        let cases = [
            (
                OAuthError::InvalidRequest { reason: "x" },
                "OAUTH_INVALID_REQUEST",
                "invalid_request",
            ),
            (
                OAuthError::InvalidClient,
                "OAUTH_INVALID_CLIENT",
                "invalid_client",
            ),
            (
                OAuthError::InvalidRedirectUri,
                "OAUTH_INVALID_REDIRECT_URI",
                "invalid_request",
            ),
            (
                OAuthError::UnauthorizedClient,
                "OAUTH_UNAUTHORIZED_CLIENT",
                "unauthorized_client",
            ),
            (
                OAuthError::UnsupportedResponseType,
                "OAUTH_UNSUPPORTED_RESPONSE_TYPE",
                "unsupported_response_type",
            ),
            (
                OAuthError::InvalidScope,
                "OAUTH_INVALID_SCOPE",
                "invalid_scope",
            ),
            (
                OAuthError::InvalidTarget,
                "OAUTH_INVALID_TARGET",
                "invalid_target",
            ),
            (
                OAuthError::AccessDenied,
                "OAUTH_ACCESS_DENIED",
                "access_denied",
            ),
            (
                OAuthError::InvalidGrant { reason: "x" },
                "OAUTH_INVALID_GRANT",
                "invalid_grant",
            ),
            (OAuthError::CodeReused, "OAUTH_CODE_REUSED", "invalid_grant"),
            (
                OAuthError::TransactionNotFound,
                "OAUTH_TRANSACTION_NOT_FOUND",
                "invalid_request",
            ),
        ];
        for (e, code, oauth) in cases {
            let e: Error = e.into();
            assert_eq!(e.code(), code);
            assert_eq!(e.oauth_code(), oauth);
        }
    }
}
