//! The MFA service: `ks.mfa(realm)` — TOTP key lifecycle and verification.

use super::{
    MAX_ACTIVE_KEYS, MfaError, MfaKey, MfaKeyId, MfaKeyRecord, MfaKeyStatus, MfaKeyType,
    PENDING_TTL_SECS, StoredKey, TotpParams, generator, keys, match_step, parse_code,
};
use crate::crypto::at_rest;
use crate::error::{Error, ValidationError};
use crate::id::{RealmId, UserId};
use crate::keystead::{Context, MAX_RETRIES};
use crate::secret::{SecretBytes, SecretString};
use crate::store::{Batch, Precondition, StorageError, record};
use crate::user::{Authority, StoredUser, UserRecord, UserStatus, Users};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A freshly created TOTP key: show `secret_base32` or `otpauth_uri` (as a
/// QR code) to the user once; neither can be read again.
#[derive(Debug)]
pub struct NewTotpKey {
    /// The key (pending activation).
    pub key: MfaKey,
    /// The seed in RFC 4648 base32 without padding, for manual entry.
    pub secret_base32: SecretString,
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=…&digits=…&period=…`.
    pub otpauth_uri: SecretString,
}

/// Handle for the MFA factors of one realm; get one with
/// [`Keystead::mfa`](crate::Keystead::mfa). Cheap to clone.
#[derive(Clone)]
pub struct Mfa {
    pub(crate) users: Users,
}

impl std::fmt::Debug for Mfa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mfa({})", self.users.realm)
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
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

/// The Google Authenticator key URI of a key.
fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str, params: TotpParams) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret_b32}&issuer={issuer}&algorithm={alg}&digits={digits}&period={period}",
        account = percent_encode(account),
        alg = params.algorithm.as_str(),
        digits = params.digits,
        period = params.period_secs,
    )
}

impl Mfa {
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

    /// The user, which must exist in this realm and be active.
    pub(crate) async fn active_user(&self, user: UserId) -> Result<(StoredUser, u64), Error> {
        let (stored, version) = self.users.require_user(user).await?;
        if stored.user.status != UserStatus::Active {
            return Err(crate::user::UserError::Disabled.into());
        }
        Ok((stored, version))
    }

    /// Load a key of `user`, with its version.
    pub(crate) async fn load_key(
        &self,
        user: UserId,
        id: MfaKeyId,
    ) -> Result<Option<(StoredKey, u64)>, Error> {
        let key = keys::key(self.realm(), user, id);
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let MfaKeyRecord::V1(k) = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some((k, stored.version)))
            }
        }
    }

    /// Every key record of `user` with its version (at most a handful).
    pub(crate) async fn user_keys(&self, user: UserId) -> Result<Vec<(StoredKey, u64)>, Error> {
        let prefix = keys::user_keys(self.realm(), user);
        let rows = self
            .ctx()
            .store
            .scan(prefix.as_bytes(), None, MAX_ACTIVE_KEYS * 4 + 8)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, stored) in rows {
            let MfaKeyRecord::V1(k) = record::decode(&key, &stored.value)?;
            out.push((k, stored.version));
        }
        Ok(out)
    }

    /// The opened seed of a key.
    pub(crate) async fn open_seed(&self, key: &StoredKey) -> Result<SecretBytes, Error> {
        let record_key = keys::key(self.realm(), key.key.user, key.key.id);
        Ok(at_rest::open(
            self.ctx().keys.as_ref(),
            record_key.as_bytes(),
            &key.sealed_seed,
        )
        .await?)
    }

    /// Add the write of `user` with `active_factors` recounted to `batch`.
    pub(crate) fn put_user(
        &self,
        batch: &mut Batch,
        mut user: StoredUser,
        version: u64,
        active: usize,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        user.active_factors = u32::try_from(active).unwrap_or(u32::MAX);
        user.user.updated_at = now;
        let key = crate::user::keys::user(self.realm(), user.user.id);
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &UserRecord::V1(user))?,
            Precondition::Version(version),
        )?;
        Ok(())
    }

    fn put_key(
        batch: &mut Batch,
        realm: RealmId,
        key: &StoredKey,
        pre: Precondition,
    ) -> Result<(), Error> {
        let k = keys::key(realm, key.key.user, key.key.id);
        batch.put(
            k.clone(),
            record::encode(k.as_bytes(), &MfaKeyRecord::V1(key.clone()))?,
            pre,
        )?;
        Ok(())
    }

    /// Create a TOTP key for `user` with the realm's parameters
    /// ([`RealmSettings::totp`](crate::realm::RealmSettings::totp): SHA-1,
    /// 6 digits, 30 s unless the realm says otherwise); see
    /// [`create_totp_key_with`](Self::create_totp_key_with).
    pub async fn create_totp_key(&self, user: UserId, by: Authority) -> Result<NewTotpKey, Error> {
        let realm = self.users.active_realm().await?;
        self.create_totp_key_with(user, realm.settings.totp, by)
            .await
    }

    /// Create a TOTP key for `user` with a fresh random seed of the length
    /// RFC 6238 uses for the HMAC (20, 32 or 64 bytes). The key is pending
    /// until [`activate`](Self::activate)d within [`PENDING_TTL_SECS`].
    /// Fails with `MFA_PENDING_KEY_EXISTS` while another key of the user is
    /// pending, and `MFA_KEY_LIMIT_REACHED` at [`MAX_ACTIVE_KEYS`]. `by`
    /// must pass [step-up](crate::user::step_up) (`STEP_UP_REQUIRED`).
    pub async fn create_totp_key_with(
        &self,
        user: UserId,
        params: TotpParams,
        by: Authority,
    ) -> Result<NewTotpKey, Error> {
        params.validate()?;
        self.users.authorize_change(user, by, &[]).await?;
        self.new_totp_key(user, params).await
    }

    /// [`create_totp_key_with`](Self::create_totp_key_with) once the change
    /// is authorized.
    pub(crate) async fn new_totp_key(
        &self,
        user: UserId,
        params: TotpParams,
    ) -> Result<NewTotpKey, Error> {
        let mut seed = vec![0u8; params.algorithm.seed_len()];
        crate::crypto::fill_random(&mut seed)?;
        self.insert_key(user, params, SecretBytes::new(seed)).await
    }

    /// Create a pending TOTP key from an existing seed (migration from
    /// another system; known-answer tests). The seed must be 16 to 64 bytes;
    /// `by` must pass [step-up](crate::user::step_up).
    pub async fn import_totp_key(
        &self,
        user: UserId,
        seed: SecretBytes,
        params: TotpParams,
        by: Authority,
    ) -> Result<NewTotpKey, Error> {
        params.validate()?;
        if !(16..=64).contains(&seed.len()) {
            return Err(ValidationError::new("seed", "16 to 64 bytes").into());
        }
        self.users.authorize_change(user, by, &[]).await?;
        self.insert_key(user, params, seed).await
    }

    async fn insert_key(
        &self,
        user: UserId,
        params: TotpParams,
        seed: SecretBytes,
    ) -> Result<NewTotpKey, Error> {
        let realm = self.users.active_realm().await?;
        // Fails on bad parameters before anything is written.
        let totp = generator(params, seed.expose())?;
        let now = self.users.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored_user, user_version) = self.active_user(user).await?;
            let existing = self.user_keys(user).await?;
            let active = existing
                .iter()
                .filter(|(k, _)| k.key.status == MfaKeyStatus::Active)
                .count();
            if active >= MAX_ACTIVE_KEYS {
                return Err(MfaError::KeyLimitReached.into());
            }
            let pending_key = keys::pending(self.realm(), user);
            let slot = self.ctx().store.get(pending_key.as_bytes()).await?;
            let mut batch = Batch::new();
            let slot_pre = match &slot {
                None => Precondition::Absent,
                Some(s) => {
                    // The slot names a pending key: refuse while it is live,
                    // replace it (and drop its record) once it expired.
                    let live = existing.iter().find(|(k, _)| {
                        k.key.status == MfaKeyStatus::ActivationPending
                            && k.key.id.to_bytes().as_slice() == s.value.as_slice()
                    });
                    if let Some((k, v)) = live {
                        if !k.key.is_expired(now) {
                            return Err(MfaError::PendingKeyExists.into());
                        }
                        batch.delete(
                            keys::key(self.realm(), user, k.key.id),
                            Precondition::Version(*v),
                        )?;
                    }
                    Precondition::Version(s.version)
                }
            };
            let id = MfaKeyId::generate(now);
            let record_key = keys::key(self.realm(), user, id);
            let sealed_seed = at_rest::seal(
                self.ctx().keys.as_ref(),
                record_key.as_bytes(),
                seed.expose(),
            )
            .await?;
            let key = MfaKey {
                id,
                user,
                realm: self.realm(),
                kind: MfaKeyType::Totp,
                status: MfaKeyStatus::ActivationPending,
                params,
                created_at: now,
                expires_at: Some(now + chrono::Duration::seconds(PENDING_TTL_SECS)),
                activated_at: None,
                last_used_at: None,
            };
            let stored = StoredKey {
                key: key.clone(),
                sealed_seed,
                last_step: None,
            };
            Self::put_key(&mut batch, self.realm(), &stored, Precondition::Absent)?;
            batch
                .put(pending_key, id.to_bytes().to_vec(), slot_pre)?
                .check(
                    crate::user::keys::user(self.realm(), user),
                    Precondition::Version(user_version),
                )?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => {
                    let secret = totp.secret().to_base32();
                    let uri = otpauth_uri(&realm.name, &stored_user.user.username, &secret, params);
                    return Ok(NewTotpKey {
                        key,
                        secret_base32: SecretString::new(secret),
                        otpauth_uri: SecretString::new(uri),
                    });
                }
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::PendingKeyExists.into(), Error::from))
    }

    /// The keys of `user`: active ones and a pending one that has not
    /// expired, in creation order.
    pub async fn list_keys(&self, user: UserId) -> Result<Vec<MfaKey>, Error> {
        self.users.active_realm().await?;
        self.users.require_user(user).await?;
        let now = self.users.now();
        Ok(self
            .user_keys(user)
            .await?
            .into_iter()
            .map(|(k, _)| k.key)
            .filter(|k| !k.is_expired(now))
            .collect())
    }

    /// One key of `user`; `MFA_KEY_NOT_FOUND` for unknown ids, keys of other
    /// users and expired pending keys.
    pub async fn get_key(&self, user: UserId, id: MfaKeyId) -> Result<MfaKey, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        match self.load_key(user, id).await? {
            Some((k, _)) if !k.key.is_expired(now) => Ok(k.key),
            _ => Err(MfaError::KeyNotFound.into()),
        }
    }

    /// Every key type with its stable id (seed: "list MFA key types").
    pub fn key_types(&self) -> &'static [MfaKeyType] {
        &MfaKeyType::ALL
    }

    /// Every key status with its stable id (seed: "list MFA key statuses").
    pub fn key_statuses(&self) -> &'static [MfaKeyStatus] {
        &MfaKeyStatus::ALL
    }

    /// The step at which `code` matches `key` and is fresh, if any.
    pub(crate) fn count_and_match(
        &self,
        key: &StoredKey,
        seed: &SecretBytes,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, Error> {
        let totp = generator(key.key.params, seed.expose()).map_err(|e| StorageError::Corrupt {
            key: keys::key(self.realm(), key.key.user, key.key.id).into_bytes(),
            reason: e.to_string(),
        })?;
        Ok(match_step(
            &totp,
            u64::from(key.key.params.period_secs),
            code,
            now,
            key.last_step,
        ))
    }

    /// Refuse a throttled user, then count this attempt (see
    /// [`lockout`](crate::user::lockout)).
    pub(crate) async fn reserve(&self, user: &StoredUser, now: DateTime<Utc>) -> Result<(), Error> {
        let realm = self.users.active_realm().await?;
        self.users
            .reserve_attempt(&user.username_key, &realm.settings.lockout, now, None)
            .await
    }

    /// Activate a pending key of `user` with a valid code from it. The
    /// code's time step counts as used. `MFA_KEY_ALREADY_ACTIVE`,
    /// `MFA_ACTIVATION_EXPIRED`, `MFA_KEY_NOT_FOUND` (unknown, another
    /// user's), `MFA_INVALID_CODE` and `MFA_KEY_LIMIT_REACHED` write nothing
    /// but the failure counter.
    pub async fn activate(
        &self,
        user: UserId,
        id: MfaKeyId,
        code: &SecretString,
    ) -> Result<MfaKey, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        let mut reserved = false;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored_user, user_version) = self.active_user(user).await?;
            let mut batch = Batch::new();
            let key = self
                .activation_writes(
                    &mut batch,
                    (stored_user, user_version),
                    id,
                    code,
                    &mut reserved,
                    now,
                )
                .await?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(key),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }

    /// Check `code` against the pending key `id` of `user` and add its
    /// activation to `batch`: the key (`Version`), the freed pending slot,
    /// the cleared failure counter and the user's new factor count
    /// (`Version` of the user record given). Counts the attempt on the
    /// failure counter once (`reserved`).
    pub(crate) async fn activation_writes(
        &self,
        batch: &mut Batch,
        (stored_user, user_version): (StoredUser, u64),
        id: MfaKeyId,
        code: &SecretString,
        reserved: &mut bool,
        now: DateTime<Utc>,
    ) -> Result<MfaKey, Error> {
        let user = stored_user.user.id;
        let (mut key, key_version) = self
            .load_key(user, id)
            .await?
            .ok_or(MfaError::KeyNotFound)?;
        match key.key.status {
            MfaKeyStatus::Active => return Err(MfaError::AlreadyActive.into()),
            MfaKeyStatus::ActivationPending if key.key.is_expired(now) => {
                return Err(MfaError::ActivationExpired.into());
            }
            MfaKeyStatus::ActivationPending => {}
        }
        let bare = parse_code(code.expose(), key.key.params.digits)?;
        let existing = self.user_keys(user).await?;
        let active = existing
            .iter()
            .filter(|(k, _)| k.key.status == MfaKeyStatus::Active)
            .count();
        if active >= MAX_ACTIVE_KEYS {
            return Err(MfaError::KeyLimitReached.into());
        }
        if !*reserved {
            self.reserve(&stored_user, now).await?;
            *reserved = true;
        }
        let seed = self.open_seed(&key).await?;
        let Some(step) = self.count_and_match(&key, &seed, &bare, now)? else {
            return Err(MfaError::InvalidCode.into());
        };
        key.key.status = MfaKeyStatus::Active;
        key.key.activated_at = Some(now);
        key.key.expires_at = None;
        key.key.last_used_at = Some(now);
        key.last_step = Some(step);
        Self::put_key(
            batch,
            self.realm(),
            &key,
            Precondition::Version(key_version),
        )?;
        let pending_key = keys::pending(self.realm(), user);
        if let Some(slot) = self.ctx().store.get(pending_key.as_bytes()).await?
            && slot.value.as_slice() == id.to_bytes().as_slice()
        {
            batch.delete(pending_key, Precondition::Version(slot.version))?;
        }
        batch.delete(
            crate::user::keys::lockout(self.realm(), &stored_user.username_key),
            Precondition::Any,
        )?;
        self.put_user(batch, stored_user, user_version, active + 1, now)?;
        Ok(key.key)
    }

    /// Verify a code of an active key of `user`. Returns the accepted time
    /// step. A code of a step at or before the last accepted one is
    /// `MFA_INVALID_CODE`; of two concurrent verifications of one code
    /// exactly one succeeds. Every checked code counts on the user's
    /// failure counter until a success clears it.
    pub async fn verify(
        &self,
        user: UserId,
        id: MfaKeyId,
        code: &SecretString,
    ) -> Result<u64, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        let mut reserved = false;
        let mut seed = None;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored_user, _) = self.active_user(user).await?;
            let (mut key, key_version) = self
                .load_key(user, id)
                .await?
                .ok_or(MfaError::KeyNotFound)?;
            if key.key.status != MfaKeyStatus::Active {
                return Err(MfaError::KeyNotActive.into());
            }
            let bare = parse_code(code.expose(), key.key.params.digits)?;
            if !reserved {
                self.reserve(&stored_user, now).await?;
                reserved = true;
            }
            if seed.is_none() {
                seed = Some(self.open_seed(&key).await?);
            }
            let Some(opened) = seed.as_ref() else {
                return Err(MfaError::InvalidCode.into());
            };
            let Some(step) = self.count_and_match(&key, opened, &bare, now)? else {
                return Err(MfaError::InvalidCode.into());
            };
            key.last_step = Some(step);
            key.key.last_used_at = Some(now);
            let mut batch = Batch::new();
            Self::put_key(
                &mut batch,
                self.realm(),
                &key,
                Precondition::Version(key_version),
            )?;
            batch.delete(
                crate::user::keys::lockout(self.realm(), &stored_user.username_key),
                Precondition::Any,
            )?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(step),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }

    /// Delete a key of `user` (pending or active). Deleting an active key
    /// lowers the user's factor count in the same batch; every trusted
    /// device of the user is revoked in that batch too. `by` must pass
    /// [step-up](crate::user::step_up).
    pub async fn delete_key(&self, user: UserId, id: MfaKeyId, by: Authority) -> Result<(), Error> {
        self.users.active_realm().await?;
        self.users.authorize_change(user, by, &[]).await?;
        let now = self.users.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored_user, user_version) = self.users.require_user(user).await?;
            let (key, key_version) = self
                .load_key(user, id)
                .await?
                .ok_or(MfaError::KeyNotFound)?;
            let mut batch = Batch::new();
            batch.delete(
                keys::key(self.realm(), user, id),
                Precondition::Version(key_version),
            )?;
            let pending_key = keys::pending(self.realm(), user);
            if let Some(slot) = self.ctx().store.get(pending_key.as_bytes()).await?
                && slot.value.as_slice() == id.to_bytes().as_slice()
            {
                batch.delete(pending_key, Precondition::Version(slot.version))?;
            }
            if key.key.status == MfaKeyStatus::Active {
                let active = self
                    .user_keys(user)
                    .await?
                    .iter()
                    .filter(|(k, _)| k.key.status == MfaKeyStatus::Active && k.key.id != id)
                    .count();
                self.put_user(&mut batch, stored_user, user_version, active, now)?;
            }
            // Every trusted device of the user stops working with this batch.
            self.bump_trust(&mut batch, user).await?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::KeyNotFound.into(), Error::from))
    }
}

/// Remove every MFA record of a deleted user: keys (sealed seeds),
/// recovery codes, trusted devices with their token lookups, and the
/// per-user slot, set and generation records. Called by
/// [`Users::delete`](crate::user::Users::delete) after the user record is
/// gone (so nothing here is usable any more); returns the records removed.
pub(crate) async fn sweep_user(users: &Users, user: UserId) -> Result<u64, Error> {
    let realm = users.realm;
    let mut removed = users
        .sweep(&keys::user_keys(realm, user), None, |_, _| None)
        .await?;
    let recovery = crate::realm::service::data_prefix(realm)
        .push("mfa-recovery")
        .push(user.to_bytes());
    removed += users.sweep(&recovery, None, |_, _| None).await?;
    removed += users
        .sweep(
            &keys::trusted_devices(realm, user),
            None,
            |key, value| match record::decode(key, value) {
                Ok(super::trusted::TrustedDeviceRecord::V1 { digest, .. }) => {
                    Some(keys::trusted_token(realm, &digest).into_bytes())
                }
                Err(_) => None,
            },
        )
        .await?;
    let mut batch = Batch::new();
    batch
        .delete(keys::pending(realm, user), Precondition::Any)?
        .delete(keys::recovery_set(realm, user), Precondition::Any)?
        .delete(keys::trust_generation(realm, user), Precondition::Any)?;
    users.ctx.store.commit(batch).await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_follows_the_key_uri_format() {
        let uri = otpauth_uri(
            "Acme Co",
            "alice@example.com",
            "JBSWY3DPEHPK3PXP",
            TotpParams::default(),
        );
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20Co:alice%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Acme%20Co&algorithm=SHA1&digits=6&period=30"
        );
    }
}
