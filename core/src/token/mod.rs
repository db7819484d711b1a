//! Tokens of a realm: signing keys and JWKS, access tokens (JWS `at+jwt`),
//! rotating refresh tokens, revocation, logout, expire-all, introspection,
//! userinfo and the OIDC discovery document.
//!
//! Get a handle bound to one realm with
//! [`Keystead::tokens`](crate::Keystead::tokens); every call first checks
//! that the realm exists and is active.
//!
//! # Access tokens
//!
//! A compact JWS with header `{"alg","kid","typ":"at+jwt"}` signed by the
//! realm's current signing key ([`keys`]) and the RFC 9068 claim set
//! ([`AccessClaims`]). [`Tokens::verify_access_token`] checks, in order and
//! each with its own [`TokenError`]:
//!
//! 1. form (at most 8 KiB, three canonical base64url parts, the header's
//!    JSON rules, `alg` present and not `none`, a `kid`) — before any
//!    storage read;
//! 2. signature against the realm's published keys only, the algorithm
//!    pinned by the key (`alg: none`, HMAC with the public key, a key of
//!    another realm all fail here);
//! 3. `typ` is `at+jwt`;
//! 4. `iss` is the realm's issuer and `aud` the expected audience;
//! 5. time, with [`CLOCK_LEEWAY_SECS`] of leeway for clock skew between
//!    issuer and verifier: refused when `now >= exp + leeway`, or when `nbf`
//!    or `iat` is later than `now + leeway`;
//! 6. the realm's and the token's application's expire-all marks
//!    ([`Tokens::expire_all`], [`Tokens::expire_all_for_client`]);
//! 7. the session named by `sid` is still valid (exists, its user is active
//!    and still in the session epoch the session was made in) — so logout,
//!    password change and disable end access tokens at once.
//!
//! All the records these checks need — realm, signing keys, both mark sets,
//! session, user — come from ONE [`get_many`](crate::store::Store::get_many)
//! (one round trip on a remote store): the session, user and application
//! are named by the claims, parsed for that purpose before step 2 but not
//! trusted — nothing read is acted on until the signature has verified, so
//! a forgery learns nothing about the state it names. Claims that do not
//! parse take a second read after the signature (and then fail at it or at
//! the claim set). Decoded realm, session and user records are kept per
//! library instance by their stored bytes ([`crate::store`]'s decoded-record
//! cache), so a verification decodes only what changed.
//!
//! # Refresh tokens
//!
//! Opaque `ksrt_…` bearer secrets ([`crate::crypto::secret`]), stored only as
//! SHA-256 digests, in families: one family per grant, holding the digest of
//! its one live token. Each use rotates: the family record is rewritten with
//! compare-and-swap to the new digest, so of two concurrent uses of the same
//! token exactly one gets a new pair; the other gets `INVALID_GRANT`
//! (a lost race is not evidence of theft). Presenting a token that was
//! already rotated away is reuse (RFC 9700 §4.14.2): the family and its
//! session are revoked and the caller gets `REFRESH_TOKEN_REUSED`. A family
//! dies [`TokenLifetimes::refresh_absolute_secs`](crate::realm::TokenLifetimes)
//! after it was created, and a token unused for `refresh_idle_secs` dies.
//!
//! A rotation commits only if every record it decided on — family, session,
//! realm, expire-all marks, user, signing keys, OAuth client — is unchanged
//! since it was read. The instance that made a rotation keeps what it decided
//! on, and the family's next refresh through that instance starts from it
//! without reading: the commit's preconditions prove nothing changed. Only a
//! rotation is ever made from that memory; every other outcome, and any
//! conflict, is judged again on a fresh read (docs/architecture.md, "Refresh
//! without a read"). Of overlapping uses, one that tried the remembered
//! rotation and lost is judged like a use that started after the winner.
//!
//! # Storage
//!
//! Under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `token-keys` | `SigningKeysRecord`: every signing key, private PKCS#8 sealed at rest |
//! | `refresh-family/<family id>` | `FamilyRecord` (session, client, audience, scope, live digest, times) |
//! | `refresh-token/<SHA-256 of the token>` | the family id: lookup by presented token |
//! | `expire-all` | `ExpireAllRecord`: the realm's expire-all marks |
//! | `expire-all-client/<client_id>` | `ExpireAllRecord`: one application's expire-all marks |
//! | `one-time/<SHA-256 of the token>` | `OneTimeRecord`: what a one-time token exchanges for |
//! | `magic-link/<magic link id>` | `MagicLinkRecord`: user, digest of the secret, expiry |
//!
//! Index entries of rotated tokens stay behind so reuse is recognised; they
//! point to a family that no longer holds their digest (or no longer exists).

#[cfg(test)]
mod family_tests;
pub mod grants;
pub mod id_token;
pub mod introspection;
pub mod keys;
pub mod purge;
pub mod revocation;
pub(crate) mod service;

pub use grants::{
    ExchangeOutcome, Grant, MagicLink, NewScopedToken, OneTimeToken, PortalAccess, ScopedToken,
};
pub use introspection::{INTROSPECT_SCOPE, Introspector};
pub use keys::SigningKeyInfo;
pub use purge::Purged;
pub use service::Tokens;

use crate::error::ValidationError;
use crate::id::{RealmId, SessionId, TokenFamilyId, UserId};
use crate::secret::SecretString;
use crate::user::AuthMethod;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Clock-skew leeway, in seconds, for `exp`, `nbf` and `iat` of access
/// tokens (the common 30 s; smaller than any allowed access lifetime
/// matters little, larger would let expired tokens live on noticeably).
pub const CLOCK_LEEWAY_SECS: i64 = 30;
/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Most scope values in one request.
pub const MAX_SCOPES: usize = 64;
/// Longest scope value, in bytes.
pub const MAX_SCOPE_LEN: usize = 128;
/// Longest `client_id` or audience, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Most expire-all marks kept per realm; older ones are merged
/// conservatively (earliest effect, latest cutoff).
pub const MAX_EXPIRE_MARKS: usize = 32;

/// What a client asks for when tokens are issued. Every field is the
/// caller's word, untrusted: the issuance policy
/// ([`crate::oauth::policy`]) bounds the token by the registered client
/// `client_id` names, whatever is asked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// The registered OAuth client the tokens are issued to (`client_id`
    /// claim).
    pub client_id: String,
    /// A confidential client's secret (`client_secret_basic` after
    /// decoding, or `client_secret_post`); `None` for public clients. A
    /// confidential client without it gets `invalid_client`.
    pub client_secret: Option<SecretString>,
    /// The audience asked for (RFC 8707 `resource`); the client's default
    /// audience when `None`. It must be one the client registered.
    pub resource: Option<String>,
    /// Requested scope values (RFC 6749 §3.3 scope tokens), each one the
    /// client registered.
    pub scope: Vec<String>,
}

impl AccessRequest {
    /// A request of the public client `client_id` for `scope`, for its
    /// default audience.
    pub fn public(client_id: impl Into<String>, scope: Vec<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            resource: None,
            scope,
        }
    }

    /// Check the request against the documented bounds.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_ident("client_id", &self.client_id)?;
        if let Some(resource) = &self.resource {
            check_ident("resource", resource)?;
        }
        check_scope(&self.scope)
    }

    /// What the policy is asked for.
    pub(crate) fn ask(&self) -> crate::oauth::policy::Ask<'_> {
        crate::oauth::policy::Ask {
            scope: &self.scope,
            resource: self.resource.as_deref(),
        }
    }
}

/// A client as a token request names it: its id and, for a confidential
/// client, the secret it presented (both untrusted until checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// The `client_id`.
    pub client_id: String,
    /// The presented secret; `None` for a public client.
    pub secret: Option<SecretString>,
}

impl ClientAuth {
    /// A public client: no secret.
    pub fn public(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: None,
        }
    }

    /// A confidential client with the secret it presented.
    pub fn confidential(client_id: impl Into<String>, secret: SecretString) -> Self {
        Self {
            client_id: client_id.into(),
            secret: Some(secret),
        }
    }
}

/// Visible ASCII without spaces, 1 to [`MAX_CLIENT_ID_LEN`] bytes.
fn check_ident(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty()
        || value.len() > MAX_CLIENT_ID_LEN
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ValidationError::new(
            field,
            format!("1 to {MAX_CLIENT_ID_LEN} visible ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// RFC 6749 §3.3 scope tokens: `%x21 / %x23-5B / %x5D-7E`, bounded.
pub(crate) fn check_scope(scope: &[String]) -> Result<(), ValidationError> {
    let ok_byte = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    let ok = scope.len() <= MAX_SCOPES
        && scope
            .iter()
            .all(|s| !s.is_empty() && s.len() <= MAX_SCOPE_LEN && s.bytes().all(ok_byte));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "scope",
            format!(
                "at most {MAX_SCOPES} values of 1 to {MAX_SCOPE_LEN} visible ASCII characters \
                 without space, '\"' or '\\'"
            ),
        ))
    }
}

/// Tokens issued to a client (the body of an OAuth token response).
#[derive(Debug)]
pub struct TokenResponse {
    /// The access token (JWS).
    pub access_token: SecretString,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u32,
    /// The refresh token (`ksrt_…`).
    pub refresh_token: Option<SecretString>,
    /// The granted scope.
    pub scope: Vec<String>,
    /// The session the tokens belong to.
    pub session: SessionId,
    /// The OpenID Connect ID token, issued with an authorization code
    /// whose request had the `openid` scope ([`id_token`]).
    pub id_token: Option<SecretString>,
}

/// Who acts on the subject's behalf (RFC 8693 §4.1): the client that
/// exchanged a token, and the actors before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The acting client's `client_id`.
    pub sub: String,
    /// The actor of the token that was exchanged, if it was delegated too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// How many actors deep the chain is.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }
}

/// The claims of an access token (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the realm's issuer URL.
    pub iss: String,
    /// Subject: the user id.
    pub sub: UserId,
    /// Audience: the resource server.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Unique token id (128 random bits, base64url).
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated scope values (may be empty).
    #[serde(default)]
    pub scope: String,
    /// The session the token belongs to.
    pub sid: SessionId,
    /// How the user authenticated.
    pub amr: Vec<AuthMethod>,
    /// When the user authenticated, seconds since the epoch.
    pub auth_time: i64,
    /// The name of a scoped token ([`Tokens::create_scoped_token`]); absent
    /// on ordinary access tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// The delegation chain of an exchanged token (RFC 8693 §4.1); absent
    /// on tokens issued to the user's own client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// Whether the token was made from a one-time token
    /// ([`Tokens::exchange_one_time_token`]); absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_time: bool,
}

impl AccessClaims {
    /// The [`Authority`](crate::user::Authority) this verified token
    /// carries for a change to its user's credentials: its session. A
    /// scoped token (`token_name`), an exchanged one (`act`) and one made
    /// from a one-time token never carry one — they were handed to someone
    /// or something other than the user's own login — and get
    /// [`Authority::Delegated`](crate::user::Authority::Delegated), which
    /// every change refuses, whatever their session. The session's
    /// freshness is judged when the change is made ([`crate::user::step_up`]).
    pub fn authority(&self) -> crate::user::Authority {
        if self.token_name.is_some() || self.act.is_some() || self.one_time {
            crate::user::Authority::Delegated
        } else {
            crate::user::Authority::Session(self.sid)
        }
    }

    /// Whether the login behind this token proved a second factor: its
    /// `amr` holds a TOTP code, a recovery code or a passkey — the methods
    /// [`crate::user::step_up`] counts as a second factor. What a route
    /// that needs MFA checks; one that needs a *recent* login checks
    /// [`AccessClaims::authenticated_within`] too.
    pub fn multi_factor(&self) -> bool {
        self.amr.iter().any(|method| method.proves_second_factor())
    }

    /// Whether the user authenticated (`auth_time`) at most `max_age`
    /// before `now` — RFC 9470's `max_age`. A login time in the future
    /// (beyond `now`) is not recent: it was not made by this clock.
    pub fn authenticated_within(&self, max_age: std::time::Duration, now: DateTime<Utc>) -> bool {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let age = now.timestamp().saturating_sub(self.auth_time);
        (0..=max_age).contains(&age)
    }

    /// Whether the token carries the scope value `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The scope values.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

/// Why a token operation failed. [`TokenError::oauth_code`] gives the OAuth
/// error code (RFC 6749 §5.2, RFC 6750 §3.1) a front-end should return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is not a well-formed token of the expected kind (checked
    /// before any storage access).
    #[error("malformed token: {reason}")]
    Malformed {
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The signature does not verify with any of this realm's keys, or the
    /// header is unacceptable (`alg: none`, wrong algorithm for the key,
    /// unknown `kid`).
    #[error("token signature rejected ({jws_code})")]
    Untrusted {
        /// The [`CryptoError::code`](crate::CryptoError::code) of the JWS check.
        jws_code: &'static str,
    },
    /// The `typ` header is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// `iss` is not this realm's issuer.
    #[error("token issued by another issuer")]
    WrongIssuer,
    /// `aud` is not the expected audience.
    #[error("token is for another audience")]
    WrongAudience,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The session ended, the user is disabled or gone, or an expire-all
    /// mark covers the token.
    #[error("token revoked")]
    Revoked,
    /// The refresh token is unknown, expired, revoked, of another client,
    /// or lost a concurrent rotation.
    #[error("invalid grant")]
    InvalidGrant,
    /// A refresh token that was already rotated was presented again: its
    /// family and session are revoked.
    #[error("refresh token reused; its family was revoked")]
    RefreshReused,
    /// The requested scope exceeds what the grant allows.
    #[error("scope not allowed")]
    InvalidScope,
    /// The token is valid but does not carry the scope the operation needs.
    #[error("token lacks the required scope")]
    InsufficientScope,
    /// The grant type is not supported.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// The realm has no `issuer_url`, which the discovery document needs.
    #[error("realm has no issuer_url")]
    IssuerNotConfigured,
}

impl TokenError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed { .. } => "TOKEN_MALFORMED",
            TokenError::Untrusted { .. } => "TOKEN_UNTRUSTED",
            TokenError::WrongType => "TOKEN_WRONG_TYPE",
            TokenError::WrongIssuer => "TOKEN_WRONG_ISSUER",
            TokenError::WrongAudience => "TOKEN_WRONG_AUDIENCE",
            TokenError::Expired => "TOKEN_EXPIRED",
            TokenError::NotYetValid => "TOKEN_NOT_YET_VALID",
            TokenError::Revoked => "TOKEN_REVOKED",
            TokenError::InvalidGrant => "INVALID_GRANT",
            TokenError::RefreshReused => "REFRESH_TOKEN_REUSED",
            TokenError::InvalidScope => "INVALID_SCOPE",
            TokenError::InsufficientScope => "INSUFFICIENT_SCOPE",
            TokenError::UnsupportedGrantType => "UNSUPPORTED_GRANT_TYPE",
            TokenError::IssuerNotConfigured => "ISSUER_NOT_CONFIGURED",
        }
    }

    /// The OAuth error code: `invalid_token` for access-token failures,
    /// `invalid_grant`, `invalid_scope`, `unsupported_grant_type`, or
    /// `server_error` for a realm that is not configured.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            TokenError::Malformed { .. }
            | TokenError::Untrusted { .. }
            | TokenError::WrongType
            | TokenError::WrongIssuer
            | TokenError::WrongAudience
            | TokenError::Expired
            | TokenError::NotYetValid
            | TokenError::Revoked => "invalid_token",
            TokenError::InvalidGrant | TokenError::RefreshReused => "invalid_grant",
            TokenError::InvalidScope => "invalid_scope",
            TokenError::InsufficientScope => "insufficient_scope",
            TokenError::UnsupportedGrantType => "unsupported_grant_type",
            TokenError::IssuerNotConfigured => "server_error",
        }
    }
}

/// A refresh-token family as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFamily {
    pub(crate) id: TokenFamilyId,
    pub(crate) realm: RealmId,
    pub(crate) session: SessionId,
    pub(crate) user: UserId,
    pub(crate) client_id: String,
    pub(crate) audience: String,
    pub(crate) scope: Vec<String>,
    /// SHA-256 of the one live refresh token.
    pub(crate) current: [u8; 32],
    /// How many times the family rotated.
    pub(crate) generation: u64,
    pub(crate) created_at: DateTime<Utc>,
    /// When the live token was issued (idle timeout and expire-all).
    pub(crate) issued_at: DateTime<Utc>,
}

/// How a refresh-token family is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FamilyRecord {
    V1(StoredFamily),
}

/// One expire-all mark: tokens issued at or before `cutoff` stop working
/// at `effective_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExpireMark {
    pub(crate) cutoff: DateTime<Utc>,
    pub(crate) effective_at: DateTime<Utc>,
}

/// How a realm's expire-all marks are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ExpireAllRecord {
    V1 { marks: Vec<ExpireMark> },
}

/// Whether a token issued at `issued_at_secs` is dead at `now` under `marks`.
pub(crate) fn expired_by_marks(
    marks: &[ExpireMark],
    issued_at_secs: i64,
    now: DateTime<Utc>,
) -> bool {
    marks
        .iter()
        .any(|m| issued_at_secs <= m.cutoff.timestamp() && now >= m.effective_at)
}

/// Add `mark` to `marks`: drop marks it dominates (it kills all they kill,
/// no later), then merge the oldest pairs conservatively while over
/// [`MAX_EXPIRE_MARKS`].
pub(crate) fn add_mark(marks: &mut Vec<ExpireMark>, mark: ExpireMark) {
    marks.retain(|m| !(m.cutoff <= mark.cutoff && m.effective_at >= mark.effective_at));
    marks.push(mark);
    marks.sort_by_key(|m| m.cutoff);
    while marks.len() > MAX_EXPIRE_MARKS {
        let b = marks.remove(1);
        let a = &mut marks[0];
        a.cutoff = a.cutoff.max(b.cutoff);
        a.effective_at = a.effective_at.min(b.effective_at);
    }
}

/// The storage keys of one realm's token data.
pub(crate) mod layout {
    use crate::id::{RealmId, TokenFamilyId};
    use crate::realm::service::data_prefix;
    use crate::store::key::Key;

    pub(crate) fn signing_keys(realm: RealmId) -> Key {
        data_prefix(realm).push("token-keys")
    }
    /// The AAD label a sealed private key is bound to: the record key and
    /// the key's id, so a blob moved to another entry fails to open.
    pub(crate) fn sealed_key_label(realm: RealmId, kid: &str) -> Key {
        signing_keys(realm).push(kid)
    }
    pub(crate) fn family(realm: RealmId, id: TokenFamilyId) -> Key {
        data_prefix(realm)
            .push("refresh-family")
            .push(id.to_bytes())
    }
    pub(crate) fn refresh_token(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("refresh-token").push(digest)
    }
    /// The realm-wide marks (`client: None`) or one application's.
    pub(crate) fn expire_all(realm: RealmId, client: Option<&str>) -> Key {
        match client {
            None => data_prefix(realm).push("expire-all"),
            Some(client) => data_prefix(realm).push("expire-all-client").push(client),
        }
    }
    pub(crate) fn one_time(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("one-time").push(digest)
    }
    pub(crate) fn magic_link(realm: RealmId, id: crate::id::MagicLinkId) -> Key {
        data_prefix(realm).push("magic-link").push(id.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn bytes(last: u8) -> [u8; 16] {
        [
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
        ]
    }

    #[test]
    fn family_record_golden_bytes() {
        let record = FamilyRecord::V1(StoredFamily {
            id: TokenFamilyId::from_bytes(bytes(6)).unwrap(),
            realm: RealmId::from_bytes(bytes(1)).unwrap(),
            session: SessionId::from_bytes(bytes(3)).unwrap(),
            user: UserId::from_bytes(bytes(2)).unwrap(),
            client_id: "web".into(),
            audience: "api".into(),
            scope: vec!["read".into()],
            current: [7; 32],
            generation: 2,
            created_at: at(1_700_000_000),
            issued_at: at(1_700_000_060),
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe568007000800000000000000610018bcfe568007000800000000000000110018bcfe568007000800000000000000310018bcfe5680070008000000000000002037765620361706901047265616407070707070707070707070707070707070707070707070707070707070707070214323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31343a32305a",
        );
    }

    #[test]
    fn expire_record_golden_bytes() {
        let record = ExpireAllRecord::V1 {
            marks: vec![ExpireMark {
                cutoff: at(1_700_000_000),
                effective_at: at(1_700_000_060),
            }],
        };
        crate::store::record::assert_golden(
            &record,
            "01000114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31343a32305a",
        );
    }

    #[test]
    fn marks_merge_conservatively() {
        let mut marks = Vec::new();
        add_mark(
            &mut marks,
            ExpireMark {
                cutoff: at(100),
                effective_at: at(200),
            },
        );
        // Dominates the first: later cutoff, earlier effect.
        add_mark(
            &mut marks,
            ExpireMark {
                cutoff: at(150),
                effective_at: at(160),
            },
        );
        assert_eq!(marks.len(), 1);
        // Does not dominate: later effect.
        add_mark(
            &mut marks,
            ExpireMark {
                cutoff: at(300),
                effective_at: at(1000),
            },
        );
        assert_eq!(marks.len(), 2);
        assert!(expired_by_marks(&marks, 150, at(160)));
        assert!(!expired_by_marks(&marks, 151, at(999)));
        assert!(expired_by_marks(&marks, 151, at(1000)));
        for i in 0..100 {
            add_mark(
                &mut marks,
                ExpireMark {
                    cutoff: at(2000 + i),
                    effective_at: at(1_000_000 - i),
                },
            );
        }
        assert!(marks.len() <= MAX_EXPIRE_MARKS);
        // Merging never lets a token live longer.
        assert!(expired_by_marks(&marks, 150, at(160)));
    }

    #[test]
    fn scope_and_ident_rules() {
        let ok = AccessRequest {
            resource: Some("https://api.example".into()),
            ..AccessRequest::public("web", vec!["read".into(), "write:all".into()])
        };
        ok.validate().unwrap();
        for bad in [
            AccessRequest {
                client_id: String::new(),
                ..ok.clone()
            },
            AccessRequest {
                resource: Some("a b".into()),
                ..ok.clone()
            },
            AccessRequest {
                scope: vec!["a\"b".into()],
                ..ok.clone()
            },
            AccessRequest {
                scope: vec![String::new()],
                ..ok.clone()
            },
            AccessRequest {
                scope: vec!["x".into(); MAX_SCOPES + 1],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(TokenError::InvalidGrant.code(), "INVALID_GRANT");
        assert_eq!(TokenError::InvalidGrant.oauth_code(), "invalid_grant");
        assert_eq!(TokenError::RefreshReused.oauth_code(), "invalid_grant");
        assert_eq!(TokenError::Expired.oauth_code(), "invalid_token");
        assert_eq!(
            TokenError::UnsupportedGrantType.oauth_code(),
            "unsupported_grant_type"
        );
    }
}
