//! Application tokens: long-lived bearer secrets for programmatic login
//! (the seeds' "authenticate with an application token").
//!
//! A token is `ksat_` + 43 base64url characters (256 random bits; see
//! [`crate::crypto::secret`]). It is returned once, at creation; only its
//! SHA-256 digest is stored, as the key of a lookup index. Authenticating
//! with it opens a session with method `app_token` carrying the token's
//! scopes; that session dies when the token is revoked or the user is
//! disabled or deleted.
//!
//! Names are 1–64 characters without control characters; at most
//! [`MAX_SCOPES`] scopes, each 1–64 ASCII characters of letters, digits and
//! `: . _ - /`.

use super::service::Users;
use super::{AppTokenId, AppTokenRecord, AuthError, UserError, UserStatus, keys, last_id_bytes};
use crate::crypto::secret::{self as bearer, TokenKind};
use crate::error::{Error, ValidationError};
use crate::id::UserId;
use crate::keystead::MAX_RETRIES;
use crate::page::Page;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::session::{AuthMethod, Session};

/// Most scopes one application token may carry.
pub const MAX_SCOPES: usize = 32;
/// Longest token name, in characters.
pub const MAX_APP_TOKEN_NAME_CHARS: usize = 64;

/// An application token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppToken {
    /// Stable id (for listing and revocation).
    pub id: AppTokenId,
    /// The user the token logs in as.
    pub user: UserId,
    /// A label chosen by the user.
    pub name: String,
    /// The scopes sessions opened with it carry.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A freshly created token: hand `secret` to the user now, it is not kept.
#[derive(Debug)]
pub struct NewAppToken {
    /// The token's metadata.
    pub token: AppToken,
    /// The bearer secret (`ksat_…`).
    pub secret: SecretString,
}

fn validate(name: &str, scopes: &[String]) -> Result<(), ValidationError> {
    let count = name.chars().count();
    if !(1..=MAX_APP_TOKEN_NAME_CHARS).contains(&count) || name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "1 to 64 characters without control characters",
        ));
    }
    let scope_ok = |s: &String| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":._-/".contains(&b))
    };
    if scopes.len() > MAX_SCOPES || !scopes.iter().all(scope_ok) {
        return Err(ValidationError::new(
            "scopes",
            "at most 32 scopes of 1 to 64 characters a-z A-Z 0-9 : . _ - /",
        ));
    }
    Ok(())
}

/// The index value: user id ‖ token id.
fn index_value(user: UserId, id: AppTokenId) -> Vec<u8> {
    let mut v = user.to_bytes().to_vec();
    v.extend_from_slice(&id.to_bytes());
    v
}

impl Users {
    /// Create an application token for an active user. The secret is in the
    /// result and nowhere else. An application token opens sessions on its
    /// own, so `by` must pass [step-up](super::step_up).
    pub async fn create_app_token(
        &self,
        user: UserId,
        name: &str,
        scopes: Vec<String>,
        by: super::Authority,
    ) -> Result<NewAppToken, Error> {
        self.active_realm().await?;
        validate(name, &scopes)?;
        self.authorize_change(user, by, &[]).await?;
        let now = self.now();
        let issued = bearer::generate(TokenKind::AppToken)?;
        let token = AppToken {
            id: AppTokenId::generate(now),
            user,
            name: name.to_owned(),
            scopes,
            created_at: now,
        };
        let key = keys::user_app_token(self.realm, user, token.id);
        let value = record::encode(
            key.as_bytes(),
            &AppTokenRecord::V1 {
                token: token.clone(),
                digest: issued.digest.0,
            },
        )?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored, version) = self.require_user(user).await?;
            if stored.user.status != UserStatus::Active {
                return Err(UserError::Disabled.into());
            }
            let mut batch = Batch::new();
            batch
                .check(keys::user(self.realm, user), Precondition::Version(version))?
                .put(key.clone(), value.clone(), Precondition::Absent)?
                .put(
                    keys::app_token(self.realm, &issued.digest.0),
                    index_value(user, token.id),
                    Precondition::Absent,
                )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => {
                    return Ok(NewAppToken {
                        token,
                        secret: issued.token,
                    });
                }
                // The user changed meanwhile: decide again on its new state.
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| UserError::NotFound.into(), Error::from))
    }

    /// A user's application tokens in creation order (no secrets).
    pub async fn list_app_tokens(
        &self,
        user: UserId,
        after: Option<AppTokenId>,
        limit: usize,
    ) -> Result<Page<AppToken, AppTokenId>, Error> {
        self.active_realm().await?;
        crate::page::scan_page(
            &*self.ctx.store,
            &keys::user_app_tokens(self.realm, user),
            after.map(|id| keys::user_app_token(self.realm, user, id)),
            limit,
            |key, value| {
                let AppTokenRecord::V1 { token, .. } = record::decode(key, value)?;
                Ok(token)
            },
            |token| token.id,
        )
        .await
    }

    /// Revoke an application token: it no longer logs in, and sessions
    /// opened with it end.
    pub async fn revoke_app_token(&self, user: UserId, id: AppTokenId) -> Result<(), Error> {
        self.active_realm().await?;
        let key = keys::user_app_token(self.realm, user, id);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(AuthError::AppTokenNotFound)?;
        let AppTokenRecord::V1 { digest, .. } = record::decode(key.as_bytes(), &stored.value)?;
        let mut batch = Batch::new();
        batch
            .delete(key, Precondition::Any)?
            .delete(keys::app_token(self.realm, &digest), Precondition::Any)?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Log in with an application token: a session with method `app_token`
    /// and the token's scopes. A malformed, unknown or revoked token, or one
    /// whose user is disabled or gone, is `INVALID_CREDENTIALS`.
    pub async fn authenticate_app_token(&self, token: &SecretString) -> Result<Session, Error> {
        self.active_realm().await?;
        let now = self.now();
        let invalid = || Error::from(AuthError::InvalidCredentials);
        let digest =
            bearer::digest_of(TokenKind::AppToken, token.expose()).map_err(|_| invalid())?;
        let index = keys::app_token(self.realm, &digest.0);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let Some(entry) = self.ctx.store.get(index.as_bytes()).await? else {
                return Err(invalid());
            };
            let (user_bytes, id_bytes) = entry.value.split_at_checked(16).ok_or_else(invalid)?;
            let user = user_bytes
                .try_into()
                .ok()
                .and_then(|b| UserId::from_bytes(b).ok())
                .ok_or_else(invalid)?;
            let id = id_bytes
                .try_into()
                .ok()
                .and_then(|b| AppTokenId::from_bytes(b).ok())
                .ok_or_else(invalid)?;
            let key = keys::user_app_token(self.realm, user, id);
            let Some(stored) = self.ctx.store.get(key.as_bytes()).await? else {
                return Err(invalid());
            };
            let AppTokenRecord::V1 {
                token: app_token,
                digest: stored_digest,
            } = record::decode(key.as_bytes(), &stored.value)?;
            if !bearer::TokenDigest(stored_digest).matches(&digest) {
                return Err(invalid());
            }
            let Some((user_record, user_version)) = self.load_user(user).await? else {
                return Err(invalid());
            };
            if user_record.user.status != UserStatus::Active {
                return Err(invalid());
            }
            let mut batch = Batch::new();
            batch
                .check(
                    keys::user(self.realm, user),
                    Precondition::Version(user_version),
                )?
                .check(key, Precondition::Version(stored.version))?;
            let session = self.add_session(
                &mut batch,
                &user_record,
                vec![AuthMethod::AppToken],
                app_token.scopes,
                Some(id),
                now,
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(session),
                // The user or the token changed meanwhile: look again.
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(invalid, Error::from))
    }

    /// Remove every application token of a user (both keys of each).
    pub(crate) async fn sweep_app_tokens(&self, user: UserId) -> Result<u64, Error> {
        let realm = self.realm;
        self.sweep(&keys::user_app_tokens(realm, user), None, |key, value| {
            last_id_bytes(key)?;
            let AppTokenRecord::V1 { digest, .. } = record::decode(key, value).ok()?;
            Some(keys::app_token(realm, &digest).into_bytes())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_scopes() {
        validate("ci", &["read".into(), "devices:write".into()]).unwrap();
        assert_eq!(validate("", &[]).unwrap_err().field, "name");
        assert_eq!(validate("a\u{7}", &[]).unwrap_err().field, "name");
        assert_eq!(validate("ok", &["a b".into()]).unwrap_err().field, "scopes");
        assert_eq!(
            validate("ok", &vec!["s".to_owned(); 33]).unwrap_err().field,
            "scopes"
        );
    }

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let bytes = |last| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let record = AppTokenRecord::V1 {
            token: AppToken {
                id: AppTokenId::from_bytes(bytes(4)).unwrap(),
                user: UserId::from_bytes(bytes(2)).unwrap(),
                name: "ci".into(),
                scopes: vec!["read".into()],
                created_at: at,
            },
            digest: [7; 32],
        };
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe568007000800000000000000410018bcfe568007000800000000000000202636901047265616414323032332d31312d31345432323a31333a32305a0707070707070707070707070707070707070707070707070707070707070707",
        );
    }
}
