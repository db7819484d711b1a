//! Re-authentication: checking the password of a user who is already
//! logged in, before a sensitive change (creating an MFA key, the seed's
//! `POST /api/v1/user/mfa` with `password`).
//!
//! [`Users::verify_password`] applies the same rules as a login — the
//! attempt is counted on the user's failure counter before argon2 runs (so
//! a stolen session can't be used to guess the password faster than a
//! login could), a throttled user gets `TOO_MANY_ATTEMPTS` without any
//! hashing, a wrong password or a disabled user is `INVALID_CREDENTIALS`,
//! and a success clears the counter — but opens no session and writes
//! nothing else.

use super::password::{self, Verified};
use super::service::Users;
use super::{AuthError, UserStatus, keys};
use crate::error::Error;
use crate::id::UserId;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition};

impl Users {
    /// Check `password` for `user` without logging in; see the
    /// [module docs](self). `USER_NOT_FOUND` for an unknown user (the caller
    /// already knows who it is: this is not a login).
    pub async fn verify_password(&self, user: UserId, password: SecretString) -> Result<(), Error> {
        let realm = self.active_realm().await?;
        let policy = realm.settings.password;
        let now = self.now();
        let (stored, _) = self.require_user(user).await?;
        self.reserve_attempt(&stored.username_key, &realm.settings.lockout, now, None)
            .await?;
        if password.expose().len() > crate::realm::MAX_PASSWORD_LEN as usize {
            return Err(AuthError::InvalidCredentials.into());
        }
        let verified = password::verify(
            &*self.ctx.blocking,
            &policy,
            stored.password_hash.clone(),
            password,
        )
        .await?;
        if !matches!(verified, Verified::Correct { .. }) || stored.user.status != UserStatus::Active
        {
            return Err(AuthError::InvalidCredentials.into());
        }
        let mut batch = Batch::new();
        batch.delete(
            keys::lockout(self.realm, &stored.username_key),
            Precondition::Any,
        )?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Keystead;
    use crate::crypto::at_rest::StaticKeyProvider;
    use crate::realm::{PasswordPolicy, RealmSettings};
    use crate::secret::SecretString;
    use crate::store::MemoryStore;

    fn pw(s: &str) -> SecretString {
        SecretString::new(s.into())
    }

    #[tokio::test]
    async fn right_password_passes_wrong_one_counts_and_clears() {
        let ks = Keystead::builder()
            .store(MemoryStore::new())
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let settings = RealmSettings {
            password: PasswordPolicy {
                argon2_memory_kib: 64,
                argon2_iterations: 1,
                ..PasswordPolicy::default()
            },
            ..RealmSettings::default()
        };
        let realm = ks.realms().create("acme", settings).await.unwrap();
        let users = ks.users(realm.id);
        let alice = users
            .register("alice", None, pw("correct horse battery"))
            .await
            .unwrap();
        let wrong = users
            .verify_password(alice.id, pw("wrong password"))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), "INVALID_CREDENTIALS");
        assert_eq!(users.lockout(alice.id).await.unwrap().failures, 1);
        users
            .verify_password(alice.id, pw("correct horse battery"))
            .await
            .unwrap();
        assert_eq!(users.lockout(alice.id).await.unwrap().failures, 0);
        // No session was opened.
        assert!(
            users
                .list_sessions(alice.id, None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
        users.disable(alice.id).await.unwrap();
        let disabled = users
            .verify_password(alice.id, pw("correct horse battery"))
            .await
            .unwrap_err();
        assert_eq!(disabled.code(), "INVALID_CREDENTIALS");
    }
}
