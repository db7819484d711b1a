//! The registration ceremony: creation options for the browser, then
//! verification of its attestation and saving the credential.

use super::ceremony::{Ceremony, CeremonyKind};
use super::credential::{
    CredentialId, StoredCredential, WebauthnCredential, transport_name, validate_label,
};
use super::response::parse_registration_response;
use super::service::Webauthn;
use super::{CEREMONY_TTL_SECS, MAX_CREDENTIALS, WebauthnError, keys};
use crate::error::{Error, ValidationError};
use crate::id::{ChallengeId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::store::{Batch, Precondition, StorageError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use webauthn_rs::prelude::{Credential, CredentialID, Passkey, PasskeyRegistration, Uuid};

/// What [`Webauthn::create_options`] returns: hand `options` to
/// `navigator.credentials.create()` and keep `challenge_id` for
/// [`Webauthn::create`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreationOptions {
    /// Names the stored ceremony; single use.
    pub challenge_id: ChallengeId,
    /// When the ceremony stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// `{"publicKey": PublicKeyCredentialCreationOptions}` as JSON
    /// (base64url binary fields), the shape `navigator.credentials.create`
    /// takes after decoding them.
    pub options: serde_json::Value,
}

/// Serialise a ceremony state or passkey for storage at `key`.
pub(crate) fn to_json<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| {
        StorageError::Corrupt {
            key: key.to_vec(),
            reason: format!("cannot encode WebAuthn state: {e}"),
        }
        .into()
    })
}

/// Deserialise what [`to_json`] stored at `key`.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        StorageError::Corrupt {
            key: key.to_vec(),
            reason: format!("undecodable WebAuthn state: {e}"),
        }
        .into()
    })
}

impl Webauthn {
    /// Start registering a passkey for `user`: returns the creation options
    /// (excluding the user's existing credentials, user verification
    /// required) and stores the ceremony for [`CEREMONY_TTL_SECS`].
    /// `WEBAUTHN_NOT_CONFIGURED`, `USER_NOT_FOUND`, `USER_DISABLED`,
    /// `WEBAUTHN_CREDENTIAL_LIMIT_REACHED`; `by` must pass
    /// [step-up](crate::user::step_up) (`STEP_UP_REQUIRED`). The ceremony is
    /// the user's and single-use, so [`create`](Self::create) needs no
    /// second check within its [`CEREMONY_TTL_SECS`].
    pub async fn create_options(
        &self,
        user: UserId,
        by: crate::user::Authority,
    ) -> Result<CreationOptions, Error> {
        let (_, rp) = self.relying_party_in_use().await?;
        self.users.authorize_change(user, by, &[]).await?;
        let (stored_user, _) = self.active_user(user).await?;
        let existing = self.user_credentials(user).await?;
        if existing.len() >= MAX_CREDENTIALS {
            return Err(WebauthnError::CredentialLimitReached.into());
        }
        let exclude: Vec<CredentialID> = existing
            .iter()
            .map(|(c, _)| c.credential.id.as_bytes().to_vec().into())
            .collect();
        let name = &stored_user.user.username;
        let display = stored_user.user.display_name.as_deref().unwrap_or(name);
        // The user handle is the user id: a discoverable credential then
        // names its owner directly, and it carries no personal data.
        let (options, state) = rp
            .start_passkey_registration(
                Uuid::from_bytes(user.to_bytes()),
                name,
                display,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| ValidationError::new("user", e.to_string()))?;
        let now = self.now();
        let id = ChallengeId::generate(now);
        let key = keys::ceremony(self.realm(), id);
        let ceremony = Ceremony {
            id,
            kind: CeremonyKind::Registration {
                user,
                state: to_json(key.as_bytes(), &state)?,
            },
            created_at: now,
            expires_at: now + chrono::Duration::seconds(CEREMONY_TTL_SECS),
        };
        self.insert_ceremony(&ceremony).await?;
        Ok(CreationOptions {
            challenge_id: id,
            expires_at: ceremony.expires_at,
            options: serde_json::to_value(&options)
                .map_err(|e| StorageError::backend(format!("creation options: {e}")))?,
        })
    }

    /// Finish registering: verify the browser's `response` (JSON) against
    /// the ceremony `challenge` of `user` and save the credential under
    /// `label`. In one batch: the ceremony is deleted (`Version`, single
    /// use), the credential and its realm-wide id index are written
    /// (`Absent`), and the user record is checked (`Version`). Errors: see
    /// the [module docs](super); nothing is written on any of them.
    pub async fn create(
        &self,
        user: UserId,
        challenge: ChallengeId,
        response: &str,
        label: &str,
    ) -> Result<WebauthnCredential, Error> {
        let label = validate_label(label)?;
        let response = parse_registration_response(response)?;
        let (_, rp) = self.relying_party_in_use().await?;
        let now = self.now();
        let ceremony_key = keys::ceremony(self.realm(), challenge);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (ceremony, ceremony_version) = self
                .load_ceremony(challenge)
                .await?
                .ok_or(WebauthnError::ChallengeNotFound)?;
            let CeremonyKind::Registration { user: owner, state } = &ceremony.kind else {
                return Err(WebauthnError::ChallengeNotFound.into());
            };
            if *owner != user {
                return Err(WebauthnError::ChallengeNotFound.into());
            }
            if ceremony.is_expired(now) {
                return Err(WebauthnError::ChallengeExpired.into());
            }
            let (_, user_version) = self.active_user(user).await?;
            let state: PasskeyRegistration = from_json(ceremony_key.as_bytes(), state)?;
            let existing = self.user_credentials(user).await?;
            let passkey =
                rp.finish_passkey_registration(&response, &state)
                    .map_err(|e| {
                        // webauthn-rs 0.5 reports a credential from the exclude
                        // list as `CredentialAlteredAlgFromRequest`; tell the
                        // two apart by the id.
                        let excluded = existing
                            .iter()
                            .any(|(c, _)| c.credential.id.as_bytes() == response.raw_id.as_ref());
                        if excluded
                            && matches!(
                            e,
                            webauthn_rs::prelude::WebauthnError::CredentialAlteredAlgFromRequest
                        ) {
                            WebauthnError::CredentialExists
                        } else {
                            WebauthnError::from_rs(&e)
                        }
                    })?;
            if existing.len() >= MAX_CREDENTIALS {
                return Err(WebauthnError::CredentialLimitReached.into());
            }
            let (stored, index_pre) = self.new_credential(user, passkey, &label, now).await?;
            let digest = stored.credential.id.digest();
            let mut batch = Batch::new();
            batch
                .put(
                    keys::credential_index(self.realm(), &digest),
                    user.to_bytes().to_vec(),
                    index_pre,
                )?
                .delete(
                    ceremony_key.clone(),
                    Precondition::Version(ceremony_version),
                )?
                .check(
                    crate::user::keys::user(self.realm(), user),
                    Precondition::Version(user_version),
                )?;
            self.put_credential(&mut batch, &stored, Precondition::Absent)?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(stored.credential),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| WebauthnError::ChallengeNotFound.into(), Error::from))
    }

    /// The record of a freshly verified passkey, and the precondition its
    /// index entry is written with: `Absent`, or the version of a stale
    /// entry whose owner and credential are both gone (a user deleted
    /// before [`delete_all`](Webauthn::delete_all) ran).
    async fn new_credential(
        &self,
        user: UserId,
        passkey: Passkey,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<(StoredCredential, Precondition), Error> {
        let passkey_json = to_json(b"webauthn passkey", &passkey)?;
        let cred: Credential = passkey.into();
        let id = CredentialId::from_bytes(cred.cred_id.as_ref().to_vec())
            .map_err(|e| ValidationError::new("response.rawId", e.problem))?;
        let digest = id.digest();
        let index_pre = match self.indexed_owner(&digest).await? {
            None => Precondition::Absent,
            Some((owner, version)) => {
                let owner_gone = self.users.load_user(owner).await?.is_none()
                    && self.load_credential(owner, &digest).await?.is_none();
                if !owner_gone {
                    return Err(WebauthnError::CredentialExists.into());
                }
                Precondition::Version(version)
            }
        };
        let credential = WebauthnCredential {
            id,
            user,
            realm: self.realm(),
            label: label.to_owned(),
            algorithm: i64::from(cred.cred.type_ as i32),
            sign_count: cred.counter,
            transports: cred
                .transports
                .iter()
                .flatten()
                .map(transport_name)
                .collect(),
            backup_eligible: cred.backup_eligible,
            backup_state: cred.backup_state,
            created_at: now,
            last_used_at: None,
            flagged_at: None,
        };
        Ok((
            StoredCredential {
                credential,
                passkey: passkey_json,
            },
            index_pre,
        ))
    }
}
