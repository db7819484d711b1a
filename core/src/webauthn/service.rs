//! The WebAuthn service: `ks.webauthn(realm)` — relying-party settings,
//! credential management, and the loaders both ceremonies share.

use super::ceremony::{Ceremony, CeremonyRecord};
use super::credential::{
    CredentialId, CredentialRecord, StoredCredential, WebauthnCredential, validate_label,
};
use super::relying_party::{RelyingParty, RelyingPartyRecord};
use super::{MAX_CREDENTIALS, WebauthnError, keys};
use crate::error::Error;
use crate::id::{ChallengeId, RealmId, UserId};
use crate::keystead::{Context, MAX_RETRIES};
use crate::store::{Batch, Precondition, StorageError, record};
use crate::user::{StoredUser, UserError, UserStatus, Users};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Handle for the passkeys of one realm; get one with
/// [`Keystead::webauthn`](crate::Keystead::webauthn). Cheap to clone.
#[derive(Clone)]
pub struct Webauthn {
    pub(crate) users: Users,
}

impl std::fmt::Debug for Webauthn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webauthn({})", self.users.realm)
    }
}

impl Webauthn {
    pub(crate) fn new(ctx: Arc<Context>, realm: RealmId) -> Self {
        Self {
            users: Users::new(ctx, realm),
        }
    }

    /// The realm this handle is bound to.
    pub fn realm(&self) -> RealmId {
        self.users.realm
    }

    pub(crate) fn ctx(&self) -> &Context {
        &self.users.ctx
    }

    /// Set (or replace) the realm's relying party. Replacing the rp id
    /// orphans every credential registered under the old one.
    pub async fn configure(&self, relying_party: RelyingParty) -> Result<RelyingParty, Error> {
        relying_party.validate()?;
        self.users.active_realm().await?;
        let key = keys::relying_party(self.realm());
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(
                key.as_bytes(),
                &RelyingPartyRecord::V1(relying_party.clone()),
            )?,
            Precondition::Any,
        )?;
        self.ctx().store.commit(batch).await?;
        Ok(relying_party)
    }

    /// The realm's relying party, if configured.
    pub async fn relying_party(&self) -> Result<Option<RelyingParty>, Error> {
        self.users.active_realm().await?;
        self.load_relying_party().await
    }

    pub(crate) async fn load_relying_party(&self) -> Result<Option<RelyingParty>, Error> {
        let key = keys::relying_party(self.realm());
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let RelyingPartyRecord::V1(rp) = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some(rp))
            }
        }
    }

    /// The configured relying party with its webauthn-rs instance; checks
    /// the realm is active first.
    pub(crate) async fn relying_party_in_use(
        &self,
    ) -> Result<(RelyingParty, webauthn_rs::Webauthn), Error> {
        self.users.active_realm().await?;
        let rp = self
            .load_relying_party()
            .await?
            .ok_or(WebauthnError::NotConfigured)?;
        let key = keys::relying_party(self.realm());
        let built = rp.build().map_err(|e| StorageError::Corrupt {
            key: key.into_bytes(),
            reason: e.to_string(),
        })?;
        Ok((rp, built))
    }

    /// The user, which must exist in this realm and be active.
    pub(crate) async fn active_user(&self, user: UserId) -> Result<(StoredUser, u64), Error> {
        let (stored, version) = self.users.require_user(user).await?;
        if stored.user.status != UserStatus::Active {
            return Err(UserError::Disabled.into());
        }
        Ok((stored, version))
    }

    /// A ceremony record with its version.
    pub(crate) async fn load_ceremony(
        &self,
        id: ChallengeId,
    ) -> Result<Option<(Ceremony, u64)>, Error> {
        let key = keys::ceremony(self.realm(), id);
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let CeremonyRecord::V1(c) = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some((c, stored.version)))
            }
        }
    }

    /// Store a new ceremony (`Absent`: ids are fresh).
    pub(crate) async fn insert_ceremony(&self, ceremony: &Ceremony) -> Result<(), Error> {
        let key = keys::ceremony(self.realm(), ceremony.id);
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &CeremonyRecord::V1(ceremony.clone()))?,
            Precondition::Absent,
        )?;
        self.ctx().store.commit(batch).await?;
        Ok(())
    }

    /// Every credential record of `user` with its version.
    pub(crate) async fn user_credentials(
        &self,
        user: UserId,
    ) -> Result<Vec<(StoredCredential, u64)>, Error> {
        let prefix = keys::user_credentials(self.realm(), user);
        let rows = self
            .ctx()
            .store
            .scan(prefix.as_bytes(), None, MAX_CREDENTIALS + 1)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, stored) in rows {
            let CredentialRecord::V1(c) = record::decode(&key, &stored.value)?;
            out.push((c, stored.version));
        }
        Ok(out)
    }

    /// One credential record of `user` with its version.
    pub(crate) async fn load_credential(
        &self,
        user: UserId,
        digest: &[u8; 32],
    ) -> Result<Option<(StoredCredential, u64)>, Error> {
        let key = keys::credential(self.realm(), user, digest);
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let CredentialRecord::V1(c) = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some((c, stored.version)))
            }
        }
    }

    /// The owner the realm-wide credential index names, with the index
    /// entry's version.
    pub(crate) async fn indexed_owner(
        &self,
        digest: &[u8; 32],
    ) -> Result<Option<(UserId, u64)>, Error> {
        let key = keys::credential_index(self.realm(), digest);
        let Some(stored) = self.ctx().store.get(key.as_bytes()).await? else {
            return Ok(None);
        };
        let bytes: [u8; 16] =
            stored
                .value
                .as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt {
                    key: key.as_bytes().to_vec(),
                    reason: "credential index entry is not a 16-byte user id".into(),
                })?;
        let user = UserId::from_bytes(bytes).map_err(|e| StorageError::Corrupt {
            key: key.as_bytes().to_vec(),
            reason: e.to_string(),
        })?;
        Ok(Some((user, stored.version)))
    }

    /// Add the write of `credential` to `batch`.
    pub(crate) fn put_credential(
        &self,
        batch: &mut Batch,
        credential: &StoredCredential,
        pre: Precondition,
    ) -> Result<(), Error> {
        let c = &credential.credential;
        let key = keys::credential(self.realm(), c.user, &c.id.digest());
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &CredentialRecord::V1(credential.clone()))?,
            pre,
        )?;
        Ok(())
    }

    /// The credentials of `user`, in the order of their ids' digests.
    pub async fn list(&self, user: UserId) -> Result<Vec<WebauthnCredential>, Error> {
        self.users.active_realm().await?;
        self.users.require_user(user).await?;
        Ok(self
            .user_credentials(user)
            .await?
            .into_iter()
            .map(|(c, _)| c.credential)
            .collect())
    }

    /// How many credentials `user` holds (flagged ones included) — for
    /// login to tell whether a user has a passkey as a second factor.
    pub async fn credential_count(&self, user: UserId) -> Result<usize, Error> {
        self.users.active_realm().await?;
        Ok(self.user_credentials(user).await?.len())
    }

    /// How many unflagged credentials `user` holds, without the realm
    /// check: login asks while it holds the realm already.
    pub(crate) async fn usable_credentials(&self, user: UserId) -> Result<usize, Error> {
        Ok(self
            .user_credentials(user)
            .await?
            .iter()
            .filter(|(c, _)| c.credential.flagged_at.is_none())
            .count())
    }

    /// One credential of `user`; `WEBAUTHN_UNKNOWN_CREDENTIAL` for unknown
    /// ids and credentials of other users.
    pub async fn get(&self, user: UserId, id: &CredentialId) -> Result<WebauthnCredential, Error> {
        self.users.active_realm().await?;
        Ok(self
            .load_credential(user, &id.digest())
            .await?
            .ok_or(WebauthnError::UnknownCredential)?
            .0
            .credential)
    }

    /// Give a credential of `user` a new label.
    pub async fn rename(
        &self,
        user: UserId,
        id: &CredentialId,
        label: &str,
    ) -> Result<WebauthnCredential, Error> {
        let label = validate_label(label)?;
        self.users.active_realm().await?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut stored, version) = self
                .load_credential(user, &id.digest())
                .await?
                .ok_or(WebauthnError::UnknownCredential)?;
            stored.credential.label.clone_from(&label);
            let mut batch = Batch::new();
            self.put_credential(&mut batch, &stored, Precondition::Version(version))?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(stored.credential),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| WebauthnError::UnknownCredential.into(), Error::from))
    }

    /// Delete a credential of `user` and its index entry (one batch). `by`
    /// must pass [step-up](crate::user::step_up).
    pub async fn delete(
        &self,
        user: UserId,
        id: &CredentialId,
        by: crate::user::Authority,
    ) -> Result<(), Error> {
        self.users.active_realm().await?;
        self.users.authorize_change(user, by, &[]).await?;
        let digest = id.digest();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (_, version) = self
                .load_credential(user, &digest)
                .await?
                .ok_or(WebauthnError::UnknownCredential)?;
            let mut batch = Batch::new();
            batch.delete(
                keys::credential(self.realm(), user, &digest),
                Precondition::Version(version),
            )?;
            if let Some((owner, v)) = self.indexed_owner(&digest).await?
                && owner == user
            {
                batch.delete(
                    keys::credential_index(self.realm(), &digest),
                    Precondition::Version(v),
                )?;
            }
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| WebauthnError::UnknownCredential.into(), Error::from))
    }

    /// Delete every credential of `user` with their index entries; returns
    /// how many were removed. An operator call, with no
    /// [step-up](crate::user::step_up): for an administrator resetting a user's
    /// passkeys, and for [`Users::delete`](crate::user::Users::delete) to
    /// call once the user record is gone (until then the credentials are
    /// unusable anyway: authentication requires an active owner). Works
    /// whether or not the user record still exists.
    pub async fn delete_all(&self, user: UserId) -> Result<u64, Error> {
        let realm = self.realm();
        let prefix = keys::user_credentials(realm, user);
        let mut removed = 0u64;
        let mut conflicts = 0;
        loop {
            let page = self
                .ctx()
                .store
                .scan(prefix.as_bytes(), None, crate::keystead::SWEEP_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(removed);
            }
            let mut batch = Batch::new();
            for (key, stored) in &page {
                let CredentialRecord::V1(c) = record::decode(key, &stored.value)?;
                batch.delete(key.clone(), Precondition::Version(stored.version))?;
                // The index entry goes only if it still names this user: the
                // id may have been registered again by someone else.
                let digest = c.credential.id.digest();
                if let Some((owner, v)) = self.indexed_owner(&digest).await?
                    && owner == user
                {
                    batch.delete(
                        keys::credential_index(realm, &digest),
                        Precondition::Version(v),
                    )?;
                }
            }
            match self.ctx().store.commit(batch).await {
                Ok(_) => removed += page.len() as u64,
                // A concurrent change: rescan and try again, boundedly.
                Err(e @ StorageError::Conflict { .. }) => {
                    conflicts += 1;
                    if conflicts >= MAX_RETRIES {
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.users.now()
    }
}
