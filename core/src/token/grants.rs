//! One-time tokens, scoped tokens, magic links and the token-exchange
//! entry point ([`Tokens::exchange`]).
//!
//! * **One-time tokens** (`ksot_…`): created for a valid session, stored
//!   only as a digest, exchanged once for an access token within their
//!   lifetime. The exchange deletes the record with compare-and-swap, so of
//!   two concurrent exchanges exactly one succeeds.
//! * **Scoped tokens**: access tokens (JWS) with an embedder-chosen name,
//!   scope, audience and lifetime, never wider than the session's scopes;
//!   [`Tokens::verify_scoped_token`] refuses one presented for a scope it
//!   does not carry (`INSUFFICIENT_SCOPE`). Like every access token they die
//!   with their session and with expire-all; note that a signing-key
//!   rotation must keep the old key published (`overlap`) for as long as
//!   scoped tokens signed with it should live.
//! * **Magic links**: [`Tokens::send_magic_link`] returns `(id, secret)`
//!   for the embedder to deliver (keystead never sends mail); the secret is
//!   stored as a digest. [`Tokens::verify_magic_link`] consumes the link
//!   once and opens a session with `amr: ["magic_link"]` — or, when the
//!   realm requires MFA or the user has an active factor, returns an MFA
//!   challenge instead: a magic link alone never satisfies MFA.

use super::layout;
use super::service::{AccessGrant, Tokens, check_jws_shape, is_conflict};
use super::{
    AccessClaims, AccessRequest, Actor, ClientAuth, TokenError, TokenResponse, check_scope,
};
use crate::crypto::secret::{self, TokenDigest, TokenKind};
use crate::error::{Error, ValidationError};
use crate::id::{MagicLinkId, SessionId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::oauth::OAuthError;
use crate::oauth::client::GrantType;
use crate::oauth::policy::{self, Ask, Ceiling};
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, record};
use crate::user::{AuthMethod, Challenge, LoginOutcome, UserError, UserStatus};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest lifetime of a one-time token: one hour.
pub const ONE_TIME_MAX_TTL_SECS: i64 = 3600;
/// Longest lifetime of a magic link: seven days (the app-portal default).
pub const MAGIC_LINK_MAX_TTL_SECS: i64 = 7 * 24 * 3600;
/// Longest lifetime of a scoped token: thirty days.
pub const SCOPED_MAX_TTL_SECS: i64 = 30 * 24 * 3600;
/// Longest scoped-token name, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 128;
/// Deepest delegation chain (`act` nesting) token exchange builds.
pub const MAX_ACT_DEPTH: usize = 4;
/// Longest portal base URL, in bytes.
pub const MAX_BASE_URL_LEN: usize = 2048;

/// The `grant_type` of the password grant (RFC 6749 §4.3).
pub const GRANT_PASSWORD: &str = "password";
/// The `grant_type` of the refresh grant (RFC 6749 §6).
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// The `grant_type` of the one-time token exchange.
pub const GRANT_ONE_TIME: &str = "urn:keystead:params:oauth:grant-type:one-time-token";
/// The `grant_type` of the authorization-code grant (RFC 6749 §4.1.3).
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// The `grant_type` of the client-credentials grant (RFC 6749 §4.4),
/// served by [`OAuth::client_credentials`](crate::oauth::OAuth::client_credentials)
/// rather than [`Tokens::exchange`]: its answer has no session or user.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// The `grant_type` of RFC 8693 token exchange.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A freshly created one-time token.
#[derive(Debug)]
pub struct OneTimeToken {
    /// The token (`ksot_…`); give it to the client once.
    pub token: SecretString,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// What a scoped token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScopedToken {
    /// A name for people (1–128 characters, no control characters).
    pub name: String,
    /// The client, audience and scope of the token.
    pub request: AccessRequest,
    /// How long it lives (1 second to [`SCOPED_MAX_TTL_SECS`]).
    pub expires_in: Duration,
}

/// A scoped token.
#[derive(Debug)]
pub struct ScopedToken {
    /// The token (an access-token JWS with a `token_name` claim).
    pub token: SecretString,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// A magic link for the embedder to deliver.
#[derive(Debug)]
pub struct MagicLink {
    /// The public half.
    pub id: MagicLinkId,
    /// The secret half (`ksml_…`).
    pub token: SecretString,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// App-portal access: a magic link and a URL that carries it.
#[derive(Debug)]
pub struct PortalAccess {
    /// `<base>#id=<id>&token=<secret>` (secret in the fragment, so it does
    /// not reach server logs).
    pub url: SecretString,
    /// The link itself.
    pub link: MagicLink,
}

/// A grant presented at the token endpoint.
#[derive(Debug)]
#[non_exhaustive]
pub enum Grant {
    /// Resource-owner password (RFC 6749 §4.3): runs login.
    Password {
        /// The username.
        username: String,
        /// The password.
        password: SecretString,
        /// Client, audience and scope of the tokens.
        request: AccessRequest,
    },
    /// Refresh (RFC 6749 §6), rotating the refresh token.
    RefreshToken {
        /// The refresh token.
        refresh_token: SecretString,
        /// The client presenting it, with its secret if confidential.
        client: ClientAuth,
        /// A narrower scope for the new access token; empty keeps the
        /// family's.
        scope: Vec<String>,
    },
    /// A one-time token.
    OneTime {
        /// The one-time token.
        token: SecretString,
    },
    /// RFC 8693 token exchange: an authenticated confidential client
    /// trades a user's access token for a narrower one of its own, for an
    /// audience it registered, with an `act` claim naming it.
    TokenExchange {
        /// The exchanging client; it must authenticate.
        client: ClientAuth,
        /// An active access token of this realm.
        subject_token: SecretString,
        /// The audience of the new token (`audience` or `resource`); the
        /// client's default audience when `None`.
        audience: Option<String>,
        /// The scope of the new token (a subset of the subject's); empty
        /// keeps the subject's scope (as far as the client may ask it).
        scope: Vec<String>,
    },
    /// Redeem an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5); see
    /// [`crate::oauth::code`].
    AuthorizationCode {
        /// The code from the authorization response.
        code: SecretString,
        /// The `redirect_uri` of the authorization request, again.
        redirect_uri: String,
        /// The client (from the form, or the Basic credentials).
        client_id: String,
        /// The PKCE verifier.
        code_verifier: Option<SecretString>,
        /// A confidential client's secret (`client_secret_post`, or the
        /// Basic password after form-decoding); `None` for public clients.
        client_secret: Option<SecretString>,
    },
}

impl Grant {
    /// Check a `grant_type` form value: `Ok` for the supported ones,
    /// `UNSUPPORTED_GRANT_TYPE` otherwise.
    pub fn check_type(grant_type: &str) -> Result<(), Error> {
        match grant_type {
            GRANT_PASSWORD
            | GRANT_REFRESH_TOKEN
            | GRANT_ONE_TIME
            | GRANT_TOKEN_EXCHANGE
            | GRANT_AUTHORIZATION_CODE => Ok(()),
            _ => Err(TokenError::UnsupportedGrantType.into()),
        }
    }
}

/// The result of [`Tokens::exchange`].
#[derive(Debug)]
#[must_use]
pub enum ExchangeOutcome {
    /// Tokens were issued.
    Tokens(TokenResponse),
    /// The password was right but a second factor is needed.
    MfaRequired {
        /// The pending challenge.
        challenge: Challenge,
    },
    /// The password was right, the realm requires MFA and the user has no
    /// factor yet: enrol one through the challenge (see
    /// [`LoginOutcome::MfaEnrollmentRequired`]).
    MfaEnrollmentRequired {
        /// The pending enrolment challenge.
        challenge: Challenge,
    },
}

/// A one-time token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredOneTime {
    pub(crate) session: SessionId,
    pub(crate) client_id: String,
    pub(crate) audience: String,
    pub(crate) scope: Vec<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// How a one-time token is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OneTimeRecord {
    V1(StoredOneTime),
}

/// A magic link as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredMagicLink {
    pub(crate) id: MagicLinkId,
    pub(crate) user: UserId,
    pub(crate) digest: [u8; 32],
    /// The user's session epoch when the link was made.
    pub(crate) epoch: u64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// How a magic link is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MagicLinkRecord {
    V1(StoredMagicLink),
}

fn check_ttl(field: &'static str, ttl: Duration, max_secs: i64) -> Result<(), ValidationError> {
    if ttl < Duration::seconds(1) || ttl > Duration::seconds(max_secs) {
        return Err(ValidationError::new(
            field,
            format!("1 second to {max_secs} seconds"),
        ));
    }
    Ok(())
}

impl Tokens {
    /// Create a one-time token for a valid session, exchangeable once for an
    /// access token described by `request` within `ttl` (1 s to 1 h). The
    /// client must be registered; scope and audience are bounded by it
    /// and the session ([`policy`]'s derived tokens).
    pub async fn create_one_time_token(
        &self,
        session: SessionId,
        request: &AccessRequest,
        ttl: Duration,
    ) -> Result<OneTimeToken, Error> {
        request.validate()?;
        check_ttl("ttl", ttl, ONE_TIME_MAX_TTL_SECS)?;
        let now = self.now();
        let read = self.read_for_issue(session, &request.client_id).await?;
        let granted = policy::derive(read.client(), request.ask(), read.ceiling())?;
        let version = read.version;
        let issued = secret::generate(TokenKind::OneTime)?;
        let record_value = StoredOneTime {
            session,
            client_id: request.client_id.clone(),
            audience: granted.audience,
            scope: granted.scope,
            created_at: now,
            expires_at: now + ttl,
        };
        let key = layout::one_time(self.realm, &issued.digest.0);
        let mut batch = Batch::new();
        batch
            .put(
                key.clone(),
                record::encode(key.as_bytes(), &OneTimeRecord::V1(record_value))?,
                Precondition::Absent,
            )?
            .check(
                crate::user::keys::session(self.realm, session),
                Precondition::Version(version),
            )?;
        self.ctx.store.commit(batch).await?;
        Ok(OneTimeToken {
            token: issued.token,
            expires_at: now + ttl,
        })
    }

    /// Exchange a one-time token for an access token (no refresh token).
    /// The token is consumed by a compare-and-swap delete, so a second
    /// exchange — concurrent or later — fails with `INVALID_GRANT`, as do
    /// expired tokens and tokens whose session ended.
    pub async fn exchange_one_time_token(
        &self,
        token: &SecretString,
    ) -> Result<TokenResponse, Error> {
        let digest = secret::digest_of(TokenKind::OneTime, token.expose())
            .map_err(|_| TokenError::InvalidGrant)?;
        let realm = self.active_realm().await?;
        let now = self.now();
        let key = layout::one_time(self.realm, &digest.0);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let Some(stored) = self.ctx.store.get(key.as_bytes()).await? else {
                return Err(TokenError::InvalidGrant.into());
            };
            let OneTimeRecord::V1(one) = record::decode(key.as_bytes(), &stored.value)?;
            let session = match self.users().live_session(one.session).await {
                Ok(found) => Some(found),
                Err(Error::Auth(crate::user::AuthError::SessionNotFound)) => None,
                Err(e) => return Err(e),
            };
            // The client must still exist and still allow what the token
            // was made for (it may have been narrowed or deleted since).
            let client = self.oauth().load_client(&one.client_id).await?;
            let still_allowed = policy::derive(
                client.as_ref().map(|(c, _)| c),
                Ask {
                    scope: &one.scope,
                    resource: Some(&one.audience),
                },
                Ceiling::default(),
            )
            .is_ok();
            let dead = now >= one.expires_at
                || session.is_none()
                || !still_allowed
                || self
                    .expired_by_expire_all(Some(&one.client_id), one.created_at.timestamp(), now)
                    .await?;
            let mut batch = Batch::new();
            batch.delete(key.clone(), Precondition::Version(stored.version))?;
            let Some((session, session_version)) = session.filter(|_| !dead) else {
                self.ctx.store.commit(batch).await?;
                return Err(TokenError::InvalidGrant.into());
            };
            batch.check(
                crate::user::keys::session(self.realm, one.session),
                Precondition::Version(session_version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => {
                    let grant = AccessGrant {
                        client_id: &one.client_id,
                        audience: &one.audience,
                        scope: &one.scope,
                        lifetime_secs: client.and_then(|(c, _)| c.client.access_token_secs),
                        name: None,
                        act: None,
                        one_time: true,
                    };
                    let (access, expires_in) = self
                        .sign_access(&realm, &session.session, &grant, now)
                        .await?;
                    return Ok(TokenResponse {
                        access_token: access,
                        token_type: "Bearer",
                        expires_in,
                        refresh_token: None,
                        scope: one.scope,
                        session: one.session,
                        id_token: None,
                    });
                }
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| TokenError::InvalidGrant.into(), Error::from))
    }

    /// Create a scoped token: an access token named `new.name`, limited to
    /// `new.request`'s audience and scope (within the session's scopes) and
    /// living `new.expires_in`. Nothing is stored; it ends with its session.
    pub async fn create_scoped_token(
        &self,
        session: SessionId,
        new: &NewScopedToken,
    ) -> Result<ScopedToken, Error> {
        new.request.validate()?;
        let chars = new.name.chars().count();
        if chars == 0 || chars > MAX_TOKEN_NAME_CHARS || new.name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "name",
                format!("1 to {MAX_TOKEN_NAME_CHARS} characters without control characters"),
            )
            .into());
        }
        check_ttl("expires_in", new.expires_in, SCOPED_MAX_TTL_SECS)?;
        let lifetime = u32::try_from(new.expires_in.num_seconds())
            .map_err(|_| ValidationError::new("expires_in", "too long"))?;
        let now = self.now();
        let read = self.read_for_issue(session, &new.request.client_id).await?;
        let granted = policy::derive(read.client(), new.request.ask(), read.ceiling())?;
        let grant = AccessGrant {
            client_id: &new.request.client_id,
            audience: &granted.audience,
            scope: &granted.scope,
            lifetime_secs: Some(lifetime),
            name: Some(&new.name),
            act: None,
            one_time: false,
        };
        let (token, _) =
            Self::sign_access_with(&read.signer, &read.realm, &read.session, &grant, now)?;
        Ok(ScopedToken {
            token,
            expires_at: now + new.expires_in,
        })
    }

    /// Verify an access or scoped token for `audience` (as
    /// [`Tokens::verify_access_token`]) and require that it carries
    /// `scope`; otherwise `INSUFFICIENT_SCOPE`.
    pub async fn verify_scoped_token(
        &self,
        token: &str,
        audience: &str,
        scope: &str,
    ) -> Result<AccessClaims, Error> {
        let claims = self.verify_access_token(token, audience).await?;
        if claims.scopes().any(|s| s == scope) {
            Ok(claims)
        } else {
            Err(TokenError::InsufficientScope.into())
        }
    }

    /// Create a magic link for an active user, valid for `ttl` (1 s to 7
    /// days), for the embedder to deliver. Sends nothing.
    pub async fn send_magic_link(&self, user: UserId, ttl: Duration) -> Result<MagicLink, Error> {
        check_ttl("ttl", ttl, MAGIC_LINK_MAX_TTL_SECS)?;
        self.active_realm().await?;
        let (found, version) = self.users().require_user(user).await?;
        if found.user.status != UserStatus::Active {
            return Err(UserError::Disabled.into());
        }
        self.write_magic_link(
            user,
            found.session_epoch,
            Precondition::Version(version),
            ttl,
        )
        .await
    }

    /// A magic link for whoever owns `email`, without telling whether
    /// anyone does: `Some` for an active user's address, `None` for an
    /// unknown or disabled one — after the same reads (the email index, a
    /// user record) and the same write (one link record and one user-key
    /// check in one commit: for nobody, a decoy link bound to a user id
    /// that exists nowhere, which can never be redeemed and which
    /// [`purge_expired`](Self::purge_expired) removes). The answer, the
    /// store's work and so the time taken are alike either way; only the
    /// embedder, who delivers `Some`, must take care not to answer faster
    /// for `None`. A malformed address is `VALIDATION_FAILED` (that depends
    /// on the input alone).
    pub async fn send_magic_link_to_email(
        &self,
        email: &str,
        ttl: Duration,
    ) -> Result<Option<MagicLink>, Error> {
        check_ttl("ttl", ttl, MAGIC_LINK_MAX_TTL_SECS)?;
        self.active_realm().await?;
        let now = self.now();
        let users = self.users();
        let owner = users.email_owner(email).await?;
        let target = owner.unwrap_or_else(|| UserId::generate(now));
        let found = users
            .load_user(target)
            .await?
            .filter(|(u, _)| owner.is_some() && u.user.status == UserStatus::Active);
        if let Some((user, version)) = found {
            let pre = Precondition::Version(version);
            let link = self
                .write_magic_link(target, user.session_epoch, pre, ttl)
                .await?;
            return Ok(Some(link));
        }
        let decoy = UserId::generate(now);
        self.write_magic_link(decoy, 0, Precondition::Absent, ttl)
            .await?;
        Ok(None)
    }

    /// Store a magic link for `user` (whose record must meet `user_pre`)
    /// in one commit: the link record and the check of the user key.
    async fn write_magic_link(
        &self,
        user: UserId,
        epoch: u64,
        user_pre: Precondition,
        ttl: Duration,
    ) -> Result<MagicLink, Error> {
        let now = self.now();
        let issued = secret::generate(TokenKind::MagicLink)?;
        let link = StoredMagicLink {
            id: MagicLinkId::generate(now),
            user,
            digest: issued.digest.0,
            epoch,
            created_at: now,
            expires_at: now + ttl,
        };
        let key = layout::magic_link(self.realm, link.id);
        let mut batch = Batch::new();
        batch
            .put(
                key.clone(),
                record::encode(key.as_bytes(), &MagicLinkRecord::V1(link.clone()))?,
                Precondition::Absent,
            )?
            .check(crate::user::keys::user(self.realm, user), user_pre)?;
        self.ctx.store.commit(batch).await?;
        Ok(MagicLink {
            id: link.id,
            token: issued.token,
            expires_at: link.expires_at,
        })
    }

    /// App-portal access: a magic link for `user` and the URL
    /// `<base_url>#id=<id>&token=<secret>` carrying it. `base_url` must be
    /// an `https://` URL (`http://` only for loopback) without a fragment.
    pub async fn app_portal_access(
        &self,
        user: UserId,
        base_url: &str,
        ttl: Duration,
    ) -> Result<PortalAccess, Error> {
        let probe = crate::realm::RealmSettings {
            issuer_url: Some(base_url.to_owned()),
            ..crate::realm::RealmSettings::default()
        };
        if crate::realm::validate_settings(&probe).is_err()
            || base_url.contains('#')
            || base_url.len() > MAX_BASE_URL_LEN
        {
            return Err(ValidationError::new(
                "base_url",
                "an https:// URL (http:// only for loopback) without '#'",
            )
            .into());
        }
        let link = self.send_magic_link(user, ttl).await?;
        let url = SecretString::new(format!(
            "{base_url}#id={}&token={}",
            link.id,
            link.token.expose()
        ));
        Ok(PortalAccess { url, link })
    }

    /// Consume a magic link once: opens a session with
    /// `amr: ["magic_link"]`, or returns an MFA challenge when the realm
    /// requires MFA or the user has an active factor. Unknown, expired,
    /// used, or wrong-secret links, and links of users who are disabled or
    /// whose sessions were revoked since, fail with `INVALID_GRANT`.
    pub async fn verify_magic_link(
        &self,
        id: MagicLinkId,
        token: &SecretString,
    ) -> Result<LoginOutcome, Error> {
        let digest = secret::digest_of(TokenKind::MagicLink, token.expose())
            .map_err(|_| TokenError::InvalidGrant)?;
        let realm = self.active_realm().await?;
        let now = self.now();
        let users = self.users();
        let key = layout::magic_link(self.realm, id);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let Some(stored) = self.ctx.store.get(key.as_bytes()).await? else {
                return Err(TokenError::InvalidGrant.into());
            };
            let MagicLinkRecord::V1(link) = record::decode(key.as_bytes(), &stored.value)?;
            if !TokenDigest(link.digest).matches(&digest) {
                return Err(TokenError::InvalidGrant.into());
            }
            let user = users.load_user(link.user).await?;
            let Some((user, user_version)) = user.filter(|(u, _)| {
                u.user.status == UserStatus::Active
                    && u.session_epoch == link.epoch
                    && now < link.expires_at
            }) else {
                let mut batch = Batch::new();
                batch.delete(key.clone(), Precondition::Any)?;
                self.ctx.store.commit(batch).await?;
                return Err(TokenError::InvalidGrant.into());
            };
            let mut batch = Batch::new();
            batch
                .delete(key.clone(), Precondition::Version(stored.version))?
                .check(
                    crate::user::keys::user(self.realm, link.user),
                    Precondition::Version(user_version),
                )?;
            let outcome = users
                .next_step(&mut batch, &realm, &user, vec![AuthMethod::MagicLink], now)
                .await?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(outcome),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| TokenError::InvalidGrant.into(), Error::from))
    }

    /// The token endpoint: run `grant` and issue tokens. Errors carry OAuth
    /// codes through [`Error::oauth_code`](crate::Error::oauth_code).
    pub async fn exchange(&self, grant: Grant) -> Result<ExchangeOutcome, Error> {
        match grant {
            Grant::Password {
                username,
                password,
                request,
            } => {
                request.validate()?;
                // The client first: a request the policy refuses must not
                // run a login (no password check, no session written).
                let oauth = self.oauth();
                let client = oauth.load_client(&request.client_id).await?;
                policy::admit(
                    client.as_ref().map(|(c, _)| c),
                    request.client_secret.as_ref(),
                    GrantType::Password,
                    request.ask(),
                    Ceiling::default(),
                )?;
                match self.users().authenticate(&username, password).await? {
                    LoginOutcome::Authenticated(session) => Ok(ExchangeOutcome::Tokens(
                        self.issue(session.id, &request).await?,
                    )),
                    LoginOutcome::MfaRequired { challenge } => {
                        Ok(ExchangeOutcome::MfaRequired { challenge })
                    }
                    LoginOutcome::MfaEnrollmentRequired { challenge } => {
                        Ok(ExchangeOutcome::MfaEnrollmentRequired { challenge })
                    }
                }
            }
            Grant::RefreshToken {
                refresh_token,
                client,
                scope,
            } => Ok(ExchangeOutcome::Tokens(
                self.refresh_as(&refresh_token, &client, &scope).await?,
            )),
            Grant::OneTime { token } => Ok(ExchangeOutcome::Tokens(
                self.exchange_one_time_token(&token).await?,
            )),
            Grant::TokenExchange {
                client,
                subject_token,
                audience,
                scope,
            } => Ok(ExchangeOutcome::Tokens(
                self.narrow(&client, &subject_token, audience.as_deref(), &scope)
                    .await?,
            )),
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                client_id,
                code_verifier,
                client_secret,
            } => {
                let oauth = self.oauth();
                let redeem = crate::oauth::code::Redeem {
                    code: &code,
                    redirect_uri: &redirect_uri,
                    client_id: &client_id,
                    code_verifier: code_verifier.as_ref(),
                    client_secret: client_secret.as_ref(),
                };
                Ok(ExchangeOutcome::Tokens(oauth.redeem_code(redeem).await?))
            }
        }
    }

    /// RFC 8693: `client` (authenticated, confidential, allowed
    /// [`GrantType::TokenExchange`]) trades `subject_token` — an active
    /// access token of this realm issued to itself or with an audience it
    /// registered in [`subject_audiences`](crate::oauth::Client::subject_audiences)
    /// — for a token of its own: for `audience` (one it registered), with
    /// `scope` within the subject's and its own, living no longer than the
    /// subject, and an `act` claim naming it (and the subject's actors).
    /// Delegation chains are at most [`MAX_ACT_DEPTH`] deep.
    async fn narrow(
        &self,
        client: &ClientAuth,
        subject_token: &SecretString,
        audience: Option<&str>,
        scope: &[String],
    ) -> Result<TokenResponse, Error> {
        let invalid_subject =
            || ValidationError::new("subject_token", "not an active access token of this realm");
        if let Some(audience) = audience {
            super::check_ident("audience", audience)?;
        }
        check_scope(scope).map_err(|_| OAuthError::InvalidScope)?;
        check_jws_shape(subject_token.expose()).map_err(|_| invalid_subject())?;
        let realm = self.active_realm().await?;
        let now = self.now();
        // Who asks first: an unauthenticated caller learns nothing about
        // the subject token.
        let oauth = self.oauth();
        let stored = oauth.load_client(&client.client_id).await?;
        let exchanger = &stored.as_ref().ok_or(OAuthError::InvalidClient)?.0;
        let authenticated = policy::proves(exchanger, client.secret.as_ref())?;
        let exchanger = &exchanger.client;
        let claims = match self.verify_with(&realm, subject_token.expose(), None).await {
            Ok(claims) => claims,
            Err(Error::Token(_)) => return Err(invalid_subject().into()),
            Err(e) => return Err(e),
        };
        let subject_scope: Vec<String> = claims.scopes().map(str::to_owned).collect();
        let granted = policy::decide(
            exchanger,
            GrantType::TokenExchange,
            authenticated,
            Ask {
                scope,
                resource: audience,
            },
            Ceiling {
                scope: Some(&subject_scope),
                audience: None,
            },
        )?;
        if !policy::may_exchange(exchanger, &claims.client_id, &claims.aud) {
            return Err(ValidationError::new(
                "subject_token",
                "issued to another client for an audience this client may not exchange",
            )
            .into());
        }
        let act = Actor {
            sub: exchanger.client_id.clone(),
            act: claims.act.clone().map(Box::new),
        };
        if act.depth() > MAX_ACT_DEPTH {
            return Err(ValidationError::new(
                "subject_token",
                format!("delegated more than {MAX_ACT_DEPTH} times"),
            )
            .into());
        }
        let (stored, _) = self
            .users()
            .live_session(claims.sid)
            .await
            .map_err(|_| invalid_subject())?;
        let remaining = u32::try_from((claims.exp - now.timestamp()).max(1)).unwrap_or(1);
        let lifetime = remaining.min(
            exchanger
                .access_token_secs
                .unwrap_or(realm.settings.tokens.access_secs),
        );
        let grant = AccessGrant {
            client_id: &exchanger.client_id,
            audience: &granted.audience,
            scope: &granted.scope,
            lifetime_secs: Some(lifetime),
            name: None,
            act: Some(&act),
            one_time: false,
        };
        let (access, expires_in) = self
            .sign_access(&realm, &stored.session, &grant, now)
            .await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in,
            refresh_token: None,
            scope: granted.scope,
            session: claims.sid,
            id_token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(last: u8) -> [u8; 16] {
        [
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
        ]
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn one_time_record_golden_bytes() {
        let record = OneTimeRecord::V1(StoredOneTime {
            session: SessionId::from_bytes(bytes(3)).unwrap(),
            client_id: "web".into(),
            audience: "api".into(),
            scope: vec!["read".into()],
            created_at: at(1_700_000_000),
            expires_at: at(1_700_000_060),
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe5680070008000000000000003037765620361706901047265616414323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31343a32305a",
        );
    }

    #[test]
    fn magic_link_record_golden_bytes() {
        let record = MagicLinkRecord::V1(StoredMagicLink {
            id: MagicLinkId::from_bytes(bytes(7)).unwrap(),
            user: UserId::from_bytes(bytes(2)).unwrap(),
            digest: [5; 32],
            epoch: 1,
            created_at: at(1_700_000_000),
            expires_at: at(1_700_000_060),
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe568007000800000000000000710018bcfe568007000800000000000000205050505050505050505050505050505050505050505050505050505050505050114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31343a32305a",
        );
    }

    #[test]
    fn grant_types() {
        for ok in [
            GRANT_PASSWORD,
            GRANT_REFRESH_TOKEN,
            GRANT_ONE_TIME,
            GRANT_TOKEN_EXCHANGE,
            GRANT_AUTHORIZATION_CODE,
        ] {
            Grant::check_type(ok).unwrap();
        }
        let e = Grant::check_type("client_credentials").unwrap_err();
        assert_eq!(e.code(), "UNSUPPORTED_GRANT_TYPE");
        assert_eq!(e.oauth_code(), "unsupported_grant_type");
    }
}
