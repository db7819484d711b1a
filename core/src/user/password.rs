//! Passwords: argon2id PHC strings, policy checks, and `update_password`.
//!
//! New hashes use argon2id (version 0x13) with the realm's
//! [`PasswordPolicy`] cost (default m=19456 KiB, t=2, p=1), a 16-byte salt
//! from the system CSPRNG and a 32-byte output, stored as a PHC string
//! (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`). Verification reads the
//! parameters from the stored string; when they differ from the realm's
//! current policy, a successful login re-hashes the password with the current
//! parameters in the same batch that opens the session.
//!
//! A login for a username that does not exist verifies the password against
//! a dummy hash with the realm's parameters, so it costs one argon2 run like
//! a real one and timing does not reveal whether the account exists.
//!
//! # Keeping argon2 off the async executor
//!
//! One argon2 run takes tens of milliseconds of CPU and 19 MiB of memory with
//! the default parameters. Every hash and verification runs on the
//! instance's [`BlockingRunner`], and the async
//! method only awaits it. The default runner is the `blocking` crate's thread
//! pool (up to 500 threads, spawned on demand, sized by
//! `BLOCKING_MAX_THREADS`), so the caller's executor thread (tokio,
//! async-std, smol, …) is never blocked, whatever runtime the embedder uses.
//! To put hashing on your own pool — and bound concurrent hashing, which
//! bounds argon2's memory — pass a runner to
//! [`KeysteadBuilder::blocking`](crate::KeysteadBuilder::blocking).
//!
//! # Breached passwords
//!
//! New passwords (registration and `update_password`) are checked against
//! the policy's length rules and, when the embedder configured one with
//! [`KeysteadBuilder::breached_passwords`](crate::KeysteadBuilder::breached_passwords),
//! a breached-password list (NIST SP 800-63B §5.1.1.2). A hit is a
//! validation error on the password field; nothing is written.

use super::service::Users;
use super::{AuthError, UserError, UserStatus, keys};
use crate::error::{Error, ValidationError};
use crate::keystead::{BlockingRunner, Context, MAX_RETRIES, run_blocking};
use crate::realm::{MAX_PASSWORD_LEN, PasswordPolicy};
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// Salt length of new hashes (bytes).
const SALT_LEN: usize = 16;
/// Output length of new hashes (bytes).
const OUTPUT_LEN: usize = 32;

/// The argon2id parameters of `policy`.
pub(crate) fn params_of(policy: &PasswordPolicy) -> Result<Params, Error> {
    Params::new(
        policy.argon2_memory_kib,
        policy.argon2_iterations,
        policy.argon2_parallelism,
        Some(OUTPUT_LEN),
    )
    .map_err(|e| {
        ValidationError::new(
            "settings.password.argon2",
            format!("rejected by argon2: {e}"),
        )
        .into()
    })
}

/// Check a new password against the policy: at least `min_length`
/// characters, at most `max_length` bytes (never more than
/// [`MAX_PASSWORD_LEN`]). Any characters are allowed (NIST SP 800-63B §5.1.1).
pub(crate) fn check_policy(
    policy: &PasswordPolicy,
    field: &'static str,
    password: &SecretString,
) -> Result<(), ValidationError> {
    let pw = password.expose();
    let max = policy.max_length.min(MAX_PASSWORD_LEN) as usize;
    let chars = pw.chars().count();
    if chars < policy.min_length as usize || pw.len() > max {
        return Err(ValidationError::new(
            field,
            format!(
                "at least {} characters and at most {max} bytes",
                policy.min_length
            ),
        ));
    }
    Ok(())
}

fn hasher(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(params: Params, password: &[u8]) -> Result<String, Error> {
    let salt = crate::crypto::random_array::<SALT_LEN>()?;
    let phc = hasher(params)
        .hash_password_with_salt(password, salt.as_ref())
        .map_err(|e| ValidationError::new("password", format!("argon2 failed: {e}")))?;
    Ok(phc.to_string())
}

/// Check a new password against the policy and, if configured, the
/// breached-password list.
pub(crate) async fn screen(
    ctx: &Context,
    policy: &PasswordPolicy,
    field: &'static str,
    password: &SecretString,
) -> Result<(), Error> {
    check_policy(policy, field, password)?;
    if let Some(list) = &ctx.breached
        && list.is_breached(password).await?
    {
        return Err(ValidationError::new(
            field,
            "appears in a list of breached passwords; choose another",
        )
        .into());
    }
    Ok(())
}

/// Hash `password` with the policy's parameters, off the executor.
pub(crate) async fn hash(
    runner: &dyn BlockingRunner,
    policy: &PasswordPolicy,
    password: SecretString,
) -> Result<String, Error> {
    let params = params_of(policy)?;
    run_blocking(runner, move || {
        hash_now(params, password.expose().as_bytes())
    })
    .await?
}

/// The result of checking a password.
pub(crate) enum Verified {
    /// Correct; `rehash` is a new PHC string when the stored parameters
    /// differ from the policy.
    Correct { rehash: Option<String> },
    /// Wrong password.
    Wrong,
}

/// Verify `password` against the stored PHC string, off the executor; on
/// success with outdated parameters, also compute the new hash.
pub(crate) async fn verify(
    runner: &dyn BlockingRunner,
    policy: &PasswordPolicy,
    stored: String,
    password: SecretString,
) -> Result<Verified, Error> {
    let params = params_of(policy)?;
    run_blocking(runner, move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| StorageError::Corrupt {
            key: b"user.password_hash".to_vec(),
            reason: format!("not a PHC string: {e}"),
        })?;
        let pw = password.expose().as_bytes();
        // The verifier takes algorithm, version and cost from the PHC string.
        if hasher(params.clone()).verify_password(pw, &parsed).is_err() {
            return Ok(Verified::Wrong);
        }
        let current = Params::try_from(&parsed).ok();
        let up_to_date = parsed.algorithm.as_str() == "argon2id"
            && parsed.version == Some(0x13)
            && current.is_some_and(|c| {
                c.m_cost() == params.m_cost()
                    && c.t_cost() == params.t_cost()
                    && c.p_cost() == params.p_cost()
            });
        let rehash = if up_to_date {
            None
        } else {
            Some(hash_now(params, pw)?)
        };
        Ok(Verified::Correct { rehash })
    })
    .await?
}

/// Verify `password` against a dummy hash with the policy's parameters: the
/// same work as checking a real user's password, for unknown usernames.
pub(crate) async fn verify_dummy(
    runner: &dyn BlockingRunner,
    policy: &PasswordPolicy,
    password: SecretString,
) -> Result<(), Error> {
    let params = params_of(policy)?;
    let dummy = dummy_phc(&params);
    run_blocking(runner, move || {
        if let Ok(parsed) = PasswordHash::new(&dummy) {
            let _ = hasher(params).verify_password(password.expose().as_bytes(), &parsed);
        }
    })
    .await
}

/// A PHC string with `params`, a fixed salt and an all-zero output, which no
/// password matches.
fn dummy_phc(params: &Params) -> String {
    format!(
        "$argon2id$v=19$m={},t={},p={}$a2V5c3RlYWQtZHVtbXk${}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        "A".repeat(43)
    )
}

impl Users {
    /// Change a user's password. Requires the current password (a wrong one
    /// is `INVALID_CREDENTIALS` and counts towards lockout), rejects a new
    /// password equal to the current one or breaking the realm's policy, and
    /// ends every session of the user except the one of `by` (the session
    /// the change was made from): their epoch is bumped in the same batch
    /// as the new hash, then their records are swept.
    ///
    /// `by` must pass [step-up](super::step_up); the current password counts
    /// as a fresh first factor, so only a user with a second factor needs a
    /// recent one (`STEP_UP_REQUIRED` otherwise, before the password is
    /// checked: a refusal writes nothing).
    pub async fn update_password(
        &self,
        user: crate::id::UserId,
        current: SecretString,
        new: SecretString,
        by: super::Authority,
    ) -> Result<(), Error> {
        let realm = self.active_realm().await?;
        let policy = realm.settings.password;
        screen(&self.ctx, &policy, "new_password", &new).await?;
        if current.expose() == new.expose() {
            return Err(ValidationError::new(
                "new_password",
                "must differ from the current password",
            )
            .into());
        }
        self.authorize_change(user, by, &[super::AuthMethod::Pwd])
            .await?;
        let keep = match by {
            super::Authority::Session(id) => Some(id),
            super::Authority::Operator | super::Authority::Delegated => None,
        };
        let now = self.now();
        let (stored, _) = self.require_user(user).await?;
        if stored.user.status == UserStatus::Disabled {
            return Err(UserError::Disabled.into());
        }
        self.reserve_attempt(&stored.username_key, &realm.settings.lockout, now, None)
            .await?;
        let verified_hash = stored.password_hash.clone();
        match verify(&*self.ctx.blocking, &policy, verified_hash.clone(), current).await? {
            Verified::Wrong => return Err(AuthError::InvalidCredentials.into()),
            Verified::Correct { .. } => {}
        }
        let new_hash = hash(&*self.ctx.blocking, &policy, new).await?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut stored, version) = self.require_user(user).await?;
            if stored.password_hash != verified_hash {
                // Changed concurrently by someone else: the caller must retry
                // with the password now in force.
                return Err(AuthError::InvalidCredentials.into());
            }
            stored.password_hash.clone_from(&new_hash);
            stored.session_epoch += 1;
            stored.user.updated_at = now;
            let mut batch = Batch::new();
            let key = keys::user(self.realm, user);
            batch
                .put(
                    key.clone(),
                    record::encode(key.as_bytes(), &super::UserRecord::V1(stored.clone()))?,
                    Precondition::Version(version),
                )?
                .delete(
                    keys::lockout(self.realm, &stored.username_key),
                    Precondition::Any,
                )?;
            if let Some(keep) = keep {
                self.carry_session(&mut batch, keep, &stored).await?;
            }
            match self.ctx.store.commit(batch).await {
                Ok(_) => {
                    self.sweep_sessions(user, keep).await?;
                    return Ok(());
                }
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| UserError::NotFound.into(), Error::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockingPool;

    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn hash_verify_and_rehash() {
        futures::executor::block_on(async {
            let policy = cheap();
            let phc = hash(&BlockingPool, &policy, "correct horse".into())
                .await
                .unwrap();
            assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
            assert!(matches!(
                verify(&BlockingPool, &policy, phc.clone(), "correct horse".into())
                    .await
                    .unwrap(),
                Verified::Correct { rehash: None }
            ));
            assert!(matches!(
                verify(&BlockingPool, &policy, phc.clone(), "wrong horse".into())
                    .await
                    .unwrap(),
                Verified::Wrong
            ));
            let stronger = PasswordPolicy {
                argon2_iterations: 2,
                ..policy
            };
            let Verified::Correct { rehash: Some(new) } =
                verify(&BlockingPool, &stronger, phc, "correct horse".into())
                    .await
                    .unwrap()
            else {
                panic!("expected a rehash");
            };
            assert!(new.contains("m=8,t=2,p=1"));
            verify_dummy(&BlockingPool, &policy, "x".into())
                .await
                .unwrap();
            let dummy = dummy_phc(&params_of(&policy).unwrap());
            assert!(PasswordHash::new(&dummy).is_ok(), "{dummy}");
            assert!(
                verify(&BlockingPool, &policy, "garbage".into(), "x".into())
                    .await
                    .is_err()
            );
        });
    }

    #[test]
    fn policy_bounds() {
        let p = PasswordPolicy::default();
        assert!(check_policy(&p, "password", &"short".into()).is_err());
        check_policy(&p, "password", &"long enough".into()).unwrap();
        check_policy(&p, "password", &"é".repeat(8).as_str().into()).unwrap();
        let too_long: SecretString = "x".repeat(1025).into();
        assert_eq!(
            check_policy(&p, "password", &too_long).unwrap_err().field,
            "password"
        );
    }
}
