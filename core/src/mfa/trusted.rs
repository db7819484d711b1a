//! Trusted devices ("remember this browser").
//!
//! After a successful MFA step — a session whose methods include `otp` or
//! `recovery` — the embedder may ask for a trusted-device token
//! ([`Mfa::trust_device`], `kstd_…`, 256 bits, only its SHA-256 stored).
//! Presenting it with [`MfaAnswer::TrustedDevice`](super::MfaAnswer) completes
//! a login challenge of the same user without a code; the session's methods
//! stay the challenge's (`pwd`), so relying parties can tell a remembered
//! device from a fresh second factor.
//!
//! A token stops working when it expires ([`TRUSTED_DEVICE_TTL_SECS`]),
//! when it is deleted, when the user's session epoch moves (password
//! change, revoke-all, disable) and when any MFA key of the user is
//! deleted (the user's trust generation moves in that same batch). Stale
//! records are left in place and ignored; `delete_trusted_device` and the
//! listing skip or remove them.

use super::service::Mfa;
use super::{MfaError, keys};
use crate::crypto::secret::{self as bearer, TokenDigest, TokenKind};
use crate::error::{Error, ValidationError};
use crate::id::{SessionId, TrustedDeviceId, UserId};
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use crate::user::{AuthMethod, StoredUser};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a trusted-device token is accepted (30 days).
pub const TRUSTED_DEVICE_TTL_SECS: i64 = 30 * 24 * 3600;
/// Longest user-agent label, in characters.
pub const MAX_DEVICE_LABEL_CHARS: usize = 200;
/// Most trusted devices listed per user.
pub const MAX_TRUSTED_DEVICES: usize = 100;

/// A trusted device as callers see it (never holds the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedDevice {
    /// Stable id.
    pub id: TrustedDeviceId,
    /// The owner.
    pub user: UserId,
    /// A label such as the browser's user agent.
    pub label: String,
    /// When the token was issued.
    pub created_at: DateTime<Utc>,
    /// When the token last skipped an MFA step.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the token stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// A freshly issued trusted-device token: give `token` to the client once.
#[derive(Debug)]
pub struct NewTrustedDevice {
    /// The device record.
    pub device: TrustedDevice,
    /// The bearer token (`kstd_…`).
    pub token: SecretString,
}

/// How a trusted device is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TrustedDeviceRecord {
    V1 {
        device: TrustedDevice,
        digest: [u8; 32],
        /// The user's session epoch at issue.
        epoch: u64,
        /// The user's trust generation at issue.
        generation: u64,
    },
}

/// The user's trust generation: moves when an MFA key is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TrustGenerationRecord {
    V1 { generation: u64 },
}

impl Mfa {
    /// The user's trust generation and its version (`None`: never moved).
    pub(crate) async fn trust_generation(&self, user: UserId) -> Result<(u64, Option<u64>), Error> {
        let key = keys::trust_generation(self.realm(), user);
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok((0, None)),
            Some(stored) => {
                let TrustGenerationRecord::V1 { generation } =
                    record::decode(key.as_bytes(), &stored.value)?;
                Ok((generation, Some(stored.version)))
            }
        }
    }

    /// Add the move of the user's trust generation to `batch`.
    pub(crate) async fn bump_trust(&self, batch: &mut Batch, user: UserId) -> Result<(), Error> {
        let (generation, version) = self.trust_generation(user).await?;
        let key = keys::trust_generation(self.realm(), user);
        batch.put(
            key.clone(),
            record::encode(
                key.as_bytes(),
                &TrustGenerationRecord::V1 {
                    generation: generation.wrapping_add(1),
                },
            )?,
            version.map_or(Precondition::Absent, Precondition::Version),
        )?;
        Ok(())
    }

    /// Issue a trusted-device token for the user of `session`, which must
    /// be valid and include an MFA step (`otp` or `recovery`); otherwise
    /// `MFA_STEP_REQUIRED`. That step must be fresh (the realm's step-up
    /// `max_age`, see [`crate::user::step_up`]): a trusted device is a
    /// credential, so an old session can't mint one (`STEP_UP_REQUIRED`).
    /// `label` (e.g. the user agent) is 1 to [`MAX_DEVICE_LABEL_CHARS`]
    /// characters without control characters.
    pub async fn trust_device(
        &self,
        session: SessionId,
        label: &str,
    ) -> Result<NewTrustedDevice, Error> {
        let count = label.chars().count();
        if !(1..=MAX_DEVICE_LABEL_CHARS).contains(&count) || label.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "label",
                "1 to 200 characters without control characters",
            )
            .into());
        }
        let realm = self.users.active_realm().await?;
        let (stored, _) = self.users.live_session(session).await?;
        let session = stored.session;
        if !session
            .methods
            .iter()
            .any(|m| matches!(m, AuthMethod::Otp | AuthMethod::Recovery))
        {
            return Err(MfaError::MfaStepRequired.into());
        }
        let now = self.users.now();
        let max_age = realm.settings.step_up.max_age_secs;
        let oldest = now - chrono::Duration::seconds(i64::from(max_age));
        if !stored
            .proofs
            .iter()
            .any(|p| matches!(p.method, AuthMethod::Otp | AuthMethod::Recovery) && p.at >= oldest)
        {
            return Err(crate::user::AuthError::StepUpRequired {
                max_age_secs: max_age,
                needs_mfa: true,
            }
            .into());
        }
        let (user, user_version) = self.active_user(session.user).await?;
        let (generation, gen_version) = self.trust_generation(session.user).await?;
        let issued = bearer::generate(TokenKind::TrustedDevice)?;
        let device = TrustedDevice {
            id: TrustedDeviceId::generate(now),
            user: session.user,
            label: label.to_owned(),
            created_at: now,
            last_used_at: None,
            expires_at: now + chrono::Duration::seconds(TRUSTED_DEVICE_TTL_SECS),
        };
        let key = keys::trusted_device(self.realm(), device.user, device.id);
        let mut lookup = device.user.to_bytes().to_vec();
        lookup.extend_from_slice(&device.id.to_bytes());
        let mut batch = Batch::new();
        batch
            .put(
                key.clone(),
                record::encode(
                    key.as_bytes(),
                    &TrustedDeviceRecord::V1 {
                        device: device.clone(),
                        digest: issued.digest.0,
                        epoch: user.session_epoch,
                        generation,
                    },
                )?,
                Precondition::Absent,
            )?
            .put(
                keys::trusted_token(self.realm(), &issued.digest.0),
                lookup,
                Precondition::Absent,
            )?
            .check(
                crate::user::keys::user(self.realm(), device.user),
                Precondition::Version(user_version),
            )?
            .check(
                keys::trust_generation(self.realm(), device.user),
                gen_version.map_or(Precondition::Absent, Precondition::Version),
            )?;
        self.ctx().store.commit(batch).await?;
        Ok(NewTrustedDevice {
            device,
            token: issued.token,
        })
    }

    /// Whether a stored device is usable at `now` for `user`.
    fn device_live(
        device: &TrustedDevice,
        epoch: u64,
        generation: u64,
        user: &StoredUser,
        current_generation: u64,
        now: DateTime<Utc>,
    ) -> bool {
        now < device.expires_at && epoch == user.session_epoch && generation == current_generation
    }

    /// The trusted devices of `user` that are still usable.
    pub async fn list_trusted_devices(&self, user: UserId) -> Result<Vec<TrustedDevice>, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        let (stored_user, _) = self.users.require_user(user).await?;
        let (current, _) = self.trust_generation(user).await?;
        let prefix = keys::trusted_devices(self.realm(), user);
        let rows = self
            .ctx()
            .store
            .scan(prefix.as_bytes(), None, MAX_TRUSTED_DEVICES)
            .await?;
        let mut out = Vec::new();
        for (key, stored) in rows {
            let TrustedDeviceRecord::V1 {
                device,
                epoch,
                generation,
                ..
            } = record::decode(&key, &stored.value)?;
            if Self::device_live(&device, epoch, generation, &stored_user, current, now) {
                out.push(device);
            }
        }
        Ok(out)
    }

    /// Delete one trusted device of `user` (its token stops working). `by`
    /// must pass [step-up](crate::user::step_up).
    pub async fn delete_trusted_device(
        &self,
        user: UserId,
        id: TrustedDeviceId,
        by: crate::user::Authority,
    ) -> Result<(), Error> {
        self.users.active_realm().await?;
        self.users.authorize_change(user, by, &[]).await?;
        let key = keys::trusted_device(self.realm(), user, id);
        let stored = self
            .ctx()
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(MfaError::TrustedDeviceNotFound)?;
        let TrustedDeviceRecord::V1 { digest, .. } = record::decode(key.as_bytes(), &stored.value)?;
        let mut batch = Batch::new();
        batch
            .delete(key, Precondition::Version(stored.version))?
            .delete(
                keys::trusted_token(self.realm(), &digest),
                Precondition::Any,
            )?;
        match self.ctx().store.commit(batch).await {
            Ok(_) => Ok(()),
            Err(StorageError::Conflict { .. }) => Err(MfaError::TrustedDeviceNotFound.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Add the use of a trusted-device token by `user` to `batch` (the
    /// device's `last_used_at`, `Version`); `false` if the token is not a
    /// live trusted device of that user.
    pub(crate) async fn trusted_writes(
        &self,
        batch: &mut Batch,
        user: &StoredUser,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Ok(digest) = bearer::digest_of(TokenKind::TrustedDevice, token) else {
            return Ok(false);
        };
        let user_id = user.user.id;
        let Some(lookup) = self
            .ctx()
            .store
            .get(keys::trusted_token(self.realm(), &digest.0).as_bytes())
            .await?
        else {
            return Ok(false);
        };
        let mut owner = [0u8; 16];
        if lookup.value.len() != 32 {
            return Ok(false);
        }
        owner.copy_from_slice(&lookup.value[..16]);
        if owner != user_id.to_bytes() {
            return Ok(false);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&lookup.value[16..]);
        let Ok(id) = TrustedDeviceId::from_bytes(id) else {
            return Ok(false);
        };
        let key = keys::trusted_device(self.realm(), user_id, id);
        let Some(stored) = self.ctx().store.get(key.as_bytes()).await? else {
            return Ok(false);
        };
        let TrustedDeviceRecord::V1 {
            mut device,
            digest: stored_digest,
            epoch,
            generation,
        } = record::decode(key.as_bytes(), &stored.value)?;
        let (current, gen_version) = self.trust_generation(user_id).await?;
        if !TokenDigest(stored_digest).matches(&digest)
            || !Self::device_live(&device, epoch, generation, user, current, now)
        {
            return Ok(false);
        }
        device.last_used_at = Some(now);
        batch
            .put(
                key.clone(),
                record::encode(
                    key.as_bytes(),
                    &TrustedDeviceRecord::V1 {
                        device,
                        digest: stored_digest,
                        epoch,
                        generation,
                    },
                )?,
                Precondition::Version(stored.version),
            )?
            .check(
                keys::trust_generation(self.realm(), user_id),
                gen_version.map_or(Precondition::Absent, Precondition::Version),
            )?;
        Ok(true)
    }
}
