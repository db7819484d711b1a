//! Recovery codes: generate, burn exactly once, regenerate, count.
//!
//! A code is 80 random bits written as 16 Crockford base32 characters in
//! four groups (`k3f9-0xq2-7mzd-1c8e`). Input is read leniently the way
//! Crockford base32 intends: case-insensitive, `-` and spaces ignored, `i`/`l`
//! read as `1` and `o` as `0`. Only SHA-256 over a domain label, the realm,
//! the user and the normalised code is stored, so a stored digest can't be
//! used for another user.

use super::service::Mfa;
use super::{MfaError, RECOVERY_CODE_COUNT, keys};
use crate::error::{Error, ValidationError};
use crate::id::{RealmId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Random bytes per code (80 bits).
pub const RECOVERY_CODE_BYTES: usize = 10;
/// Characters per code without separators.
pub const RECOVERY_CODE_CHARS: usize = 16;
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// The user's current generation of recovery codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RecoverySetRecord {
    V1 {
        /// Moves on every regeneration; codes of older generations are dead.
        generation: u32,
        /// Codes of this generation not yet burnt.
        remaining: u32,
        /// When this generation was made.
        created_at: DateTime<Utc>,
    },
}

/// One unburnt code of a generation (the key holds its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RecoveryCodeRecord {
    V1 { created_at: DateTime<Utc> },
}

/// Encode 80 bits as 16 Crockford base32 characters in groups of four.
fn format_code(bytes: &[u8; RECOVERY_CODE_BYTES]) -> String {
    let mut acc: u128 = 0;
    for b in bytes {
        acc = (acc << 8) | u128::from(*b);
    }
    let mut out = String::with_capacity(RECOVERY_CODE_CHARS + 3);
    for i in 0..RECOVERY_CODE_CHARS {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        let shift = 5 * (RECOVERY_CODE_CHARS - 1 - i);
        let index = usize::try_from((acc >> shift) & 0x1f).unwrap_or(0);
        out.push(char::from(ALPHABET[index]));
    }
    out
}

/// Normalise a presented code; `VALIDATION_FAILED` naming `recovery_code`
/// when it can't be one.
pub fn normalize_recovery_code(code: &str) -> Result<String, ValidationError> {
    let mut out = String::with_capacity(RECOVERY_CODE_CHARS);
    for c in code.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) || out.len() >= RECOVERY_CODE_CHARS {
            return Err(ValidationError::new(
                "recovery_code",
                "16 Crockford base32 characters, optionally grouped with '-'",
            ));
        }
        out.push(c);
    }
    if out.len() == RECOVERY_CODE_CHARS {
        Ok(out)
    } else {
        Err(ValidationError::new(
            "recovery_code",
            "16 Crockford base32 characters, optionally grouped with '-'",
        ))
    }
}

/// The stored digest of a normalised code of `user` in `realm`.
fn digest(realm: RealmId, user: UserId, normalized: &str) -> [u8; 32] {
    let mut data = Vec::with_capacity(64 + normalized.len());
    data.extend_from_slice(b"keystead/recovery-code/v1\0");
    data.extend_from_slice(&realm.to_bytes());
    data.extend_from_slice(&user.to_bytes());
    data.extend_from_slice(normalized.as_bytes());
    crate::crypto::sha256(&data)
}

impl Mfa {
    async fn load_set(&self, user: UserId) -> Result<Option<(u32, u32, u64)>, Error> {
        let key = keys::recovery_set(self.realm(), user);
        match self.ctx().store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let RecoverySetRecord::V1 {
                    generation,
                    remaining,
                    ..
                } = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some((generation, remaining, stored.version)))
            }
        }
    }

    /// Generate [`RECOVERY_CODE_COUNT`] new recovery codes for `user`, shown
    /// once; every earlier code stops working in the same batch. `by` must
    /// pass [step-up](crate::user::step_up).
    pub async fn generate_recovery_codes(
        &self,
        user: UserId,
        by: crate::user::Authority,
    ) -> Result<Vec<SecretString>, Error> {
        self.users.active_realm().await?;
        self.users.authorize_change(user, by, &[]).await?;
        let now = self.users.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (_, user_version) = self.active_user(user).await?;
            let set = self.load_set(user).await?;
            let generation = set.map_or(1, |(g, _, _)| g.wrapping_add(1));
            let mut batch = Batch::new();
            if let Some((old, _, _)) = set {
                let prefix = keys::recovery_generation(self.realm(), user, old);
                let rows = self
                    .ctx()
                    .store
                    .scan(prefix.as_bytes(), None, RECOVERY_CODE_COUNT * 2)
                    .await?;
                for (key, _) in rows {
                    batch.delete(key, Precondition::Any)?;
                }
            }
            let set_key = keys::recovery_set(self.realm(), user);
            batch.put(
                set_key.clone(),
                record::encode(
                    set_key.as_bytes(),
                    &RecoverySetRecord::V1 {
                        generation,
                        remaining: u32::try_from(RECOVERY_CODE_COUNT).unwrap_or(u32::MAX),
                        created_at: now,
                    },
                )?,
                set.map_or(Precondition::Absent, |(_, _, v)| Precondition::Version(v)),
            )?;
            let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
            for _ in 0..RECOVERY_CODE_COUNT {
                let random = crate::crypto::random_array::<RECOVERY_CODE_BYTES>()?;
                let code = format_code(&random);
                let normalized = normalize_recovery_code(&code)?;
                let key = keys::recovery_code(
                    self.realm(),
                    user,
                    generation,
                    &digest(self.realm(), user, &normalized),
                );
                batch.put(
                    key.clone(),
                    record::encode(key.as_bytes(), &RecoveryCodeRecord::V1 { created_at: now })?,
                    Precondition::Absent,
                )?;
                codes.push(SecretString::new(code));
            }
            batch.check(
                crate::user::keys::user(self.realm(), user),
                Precondition::Version(user_version),
            )?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(codes),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }

    /// How many recovery codes of `user` are left (0 when none were made).
    pub async fn remaining_recovery_codes(&self, user: UserId) -> Result<u32, Error> {
        self.users.active_realm().await?;
        self.users.require_user(user).await?;
        self.recovery_codes_left(user).await
    }

    /// Unburnt codes of the user's current generation (0 without any),
    /// without the realm and user checks of the public call: login asks
    /// while it holds both.
    pub(crate) async fn recovery_codes_left(&self, user: UserId) -> Result<u32, Error> {
        Ok(self.load_set(user).await?.map_or(0, |(_, r, _)| r))
    }

    /// Add the burn of a normalised code to `batch`; `None` if the code is
    /// not an unburnt code of the user's current generation.
    pub(crate) async fn burn_writes(
        &self,
        batch: &mut Batch,
        user: UserId,
        normalized: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u32>, Error> {
        let Some((generation, remaining, set_version)) = self.load_set(user).await? else {
            return Ok(None);
        };
        let key = keys::recovery_code(
            self.realm(),
            user,
            generation,
            &digest(self.realm(), user, normalized),
        );
        let Some(stored) = self.ctx().store.get(key.as_bytes()).await? else {
            return Ok(None);
        };
        let remaining = remaining.saturating_sub(1);
        let set_key = keys::recovery_set(self.realm(), user);
        batch
            .delete(key, Precondition::Version(stored.version))?
            .put(
                set_key.clone(),
                record::encode(
                    set_key.as_bytes(),
                    &RecoverySetRecord::V1 {
                        generation,
                        remaining,
                        created_at: now,
                    },
                )?,
                Precondition::Version(set_version),
            )?;
        Ok(Some(remaining))
    }

    /// Burn one recovery code of `user` and return how many are left.
    /// A code works once: of concurrent burns of one code exactly one
    /// succeeds; the others, unknown codes and codes of an earlier
    /// generation get `MFA_INVALID_CODE`. Every attempt counts on the
    /// user's failure counter until a success clears it.
    pub async fn burn_recovery_code(
        &self,
        user: UserId,
        code: &SecretString,
    ) -> Result<u32, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        let normalized = normalize_recovery_code(code.expose())?;
        let (stored_user, _) = self.active_user(user).await?;
        self.reserve(&stored_user, now).await?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let mut batch = Batch::new();
            let Some(remaining) = self.burn_writes(&mut batch, user, &normalized, now).await?
            else {
                return Err(MfaError::InvalidCode.into());
            };
            batch.delete(
                crate::user::keys::lockout(self.realm(), &stored_user.username_key),
                Precondition::Any,
            )?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(remaining),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_normalise_back() {
        let code = format_code(&[0xff; RECOVERY_CODE_BYTES]);
        assert_eq!(code, "zzzz-zzzz-zzzz-zzzz");
        let code = format_code(&[0; RECOVERY_CODE_BYTES]);
        assert_eq!(code, "0000-0000-0000-0000");
        let code = format_code(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            normalize_recovery_code(&code).unwrap(),
            code.replace('-', "")
        );
        assert_eq!(
            normalize_recovery_code("OIL0-0000 0000-0000").unwrap(),
            "0110000000000000"
        );
        for bad in [
            "",
            "zzzz-zzzz-zzzz-zzz",
            "zzzz-zzzz-zzzz-zzzzz",
            "uuuu-zzzz-zzzz-zzzz",
            "zzzz_zzzz_zzzz_zzzz",
            "ｚzzz-zzzz-zzzz-zzzz",
        ] {
            assert!(normalize_recovery_code(bad).is_err(), "{bad:?}");
        }
    }
}
