//! Sign-up: accounts people make themselves, where the realm allows it
//! ([`RealmSettings::sign_up`](crate::realm::RealmSettings::sign_up)).
//!
//! * [`SignUp::Closed`] (the default): [`Users::sign_up`] and
//!   [`Users::request_sign_up`] are `REGISTRATION_CLOSED`; accounts come
//!   from the embedder's [`Users::register`].
//! * [`SignUp::Open`]: [`Users::sign_up`] registers at once. Its answer
//!   says when a username or address is taken — fine for a realm that
//!   doesn't mind.
//! * [`SignUp::VerifiedEmail`]: [`Users::request_sign_up`] answers every
//!   well-formed request alike and does the same work — the password is
//!   hashed and one pending record is written — whether or not the address
//!   already has an account. What differs is only the mail the embedder
//!   sends to that address: a confirmation link ([`SignUpMail::Confirm`])
//!   or a note that the address is registered already
//!   ([`SignUpMail::AlreadyRegistered`]; its record is a decoy no token
//!   opens). Only the owner of the inbox learns which. The link's token
//!   goes to [`Users::confirm_sign_up`], which creates the user and
//!   consumes the pending record in one batch (single use; a username
//!   taken meanwhile is `USERNAME_TAKEN`, told to the address's owner
//!   only).
//!
//! A pending record lives at `sign-up/<SHA-256 of the token>` until
//! confirmed or expired ([`MAX_SIGN_UP_TTL_SECS`] at most).

use super::service::{NewUserRecord, Users};
use super::{User, UserError, keys, normalize_email, normalize_username, password};
use crate::crypto::secret::{self, TokenKind};
use crate::error::{Error, ValidationError};
use crate::realm::SignUp;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, record};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The longest a pending sign-up waits for its confirmation: 7 days.
pub const MAX_SIGN_UP_TTL_SECS: i64 = 7 * 24 * 3600;

/// What to mail to the address of a sign-up request.
#[derive(Debug)]
pub enum SignUpMail {
    /// A new address: the link to confirm with ([`Users::confirm_sign_up`]).
    Confirm {
        /// The confirmation token (secret).
        token: SecretString,
        /// When it stops working.
        expires_at: DateTime<Utc>,
    },
    /// The address has an account already: tell its owner (and offer a
    /// sign-in or a password reset), never the requester.
    AlreadyRegistered,
}

/// The outcome of [`Users::request_sign_up`]: a mail for the address; the
/// caller answers the requester the same either way.
#[derive(Debug)]
pub struct SignUpRequest {
    /// The address as given (NFKC), to send the mail to.
    pub email: String,
    /// What to send.
    pub mail: SignUpMail,
}

/// A pending sign-up as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PendingRecord {
    V1 {
        user: NewUserRecord,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
}

impl PendingRecord {
    /// When the pending sign-up stops being confirmable (and may be purged).
    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        match self {
            PendingRecord::V1 { expires_at, .. } => *expires_at,
        }
    }
}

impl Users {
    /// Sign up at once, in a realm with [`SignUp::Open`]:
    /// [`register`](Self::register); `REGISTRATION_CLOSED` otherwise,
    /// before anything is checked or written.
    pub async fn sign_up(
        &self,
        username: &str,
        email: Option<&str>,
        password: SecretString,
    ) -> Result<User, Error> {
        if self.active_realm().await?.settings.sign_up != SignUp::Open {
            return Err(UserError::RegistrationClosed.into());
        }
        self.register(username, email, password).await
    }

    /// Ask to sign up with a verified address, in a realm with
    /// [`SignUp::VerifiedEmail`] (`REGISTRATION_CLOSED` otherwise); see the
    /// [module docs](self). Malformed names, addresses and passwords
    /// breaking the realm's policy are refused (`VALIDATION_FAILED`, which
    /// depends on the input alone); then the answer and the work are the
    /// same whether or not the address has an account. `ttl`: 1 s to
    /// [`MAX_SIGN_UP_TTL_SECS`].
    pub async fn request_sign_up(
        &self,
        username: &str,
        email: &str,
        password: SecretString,
        ttl: Duration,
    ) -> Result<SignUpRequest, Error> {
        let realm = self.active_realm().await?;
        if realm.settings.sign_up != SignUp::VerifiedEmail {
            return Err(UserError::RegistrationClosed.into());
        }
        if ttl < Duration::seconds(1) || ttl > Duration::seconds(MAX_SIGN_UP_TTL_SECS) {
            return Err(ValidationError::new("ttl", "1 second to 7 days").into());
        }
        let (display, username_key) = normalize_username(username)?;
        let email = normalize_email(email)?;
        password::screen(&self.ctx, &realm.settings.password, "password", &password).await?;
        let registered = self.email_owner(&email.0).await?.is_some();
        let password_hash =
            password::hash(&*self.ctx.blocking, &realm.settings.password, password).await?;
        let now = self.now();
        let pending = PendingRecord::V1 {
            user: NewUserRecord {
                display,
                username_key,
                email: Some(email.clone()),
                password_hash,
            },
            created_at: now,
            expires_at: now + ttl,
        };
        // A registered address gets a decoy record of the same shape: its
        // token is dropped here, so nothing can ever confirm it.
        let issued = secret::generate(TokenKind::SignUp)?;
        let key = keys::sign_up(self.realm, &issued.digest.0);
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &pending)?,
            Precondition::Absent,
        )?;
        self.ctx.store.commit(batch).await?;
        let mail = if registered {
            SignUpMail::AlreadyRegistered
        } else {
            SignUpMail::Confirm {
                token: issued.token,
                expires_at: now + ttl,
            }
        };
        Ok(SignUpRequest {
            email: email.0,
            mail,
        })
    }

    /// Confirm a pending sign-up with the token mailed for it: the user is
    /// created and the pending record consumed in one batch. Unknown,
    /// expired and used tokens are `SIGN_UP_NOT_FOUND` (an expired record
    /// is removed); a username or address taken meanwhile is
    /// `USERNAME_TAKEN` / `EMAIL_TAKEN`, and the record stays until it
    /// expires.
    pub async fn confirm_sign_up(&self, token: &SecretString) -> Result<User, Error> {
        self.active_realm().await?;
        let digest = secret::digest_of(TokenKind::SignUp, token.expose())
            .map_err(|_| UserError::SignUpNotFound)?;
        let key = keys::sign_up(self.realm, &digest.0);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(UserError::SignUpNotFound)?;
        let PendingRecord::V1 {
            user, expires_at, ..
        } = record::decode(key.as_bytes(), &stored.value)?;
        if self.now() >= expires_at {
            let mut batch = Batch::new();
            batch.delete(key, Precondition::Version(stored.version))?;
            match self.ctx.store.commit(batch).await {
                // Gone either way: a concurrent confirmation or cleanup won.
                Ok(_) | Err(crate::store::StorageError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            return Err(UserError::SignUpNotFound.into());
        }
        self.insert_user(user, Some((key, stored.version))).await
    }
}
