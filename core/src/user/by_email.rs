//! Finding a user by email address, for flows that start from an address
//! (a magic link requested with the seed's `{"email": …}`).
//!
//! The address is normalised exactly as at registration
//! ([`normalize_email`]), so any spelling that
//! registration would have treated as the same address finds the user.

use super::service::Users;
use super::{User, UserError, keys, normalize_email};
use crate::error::Error;
use crate::id::UserId;

impl Users {
    /// The user registered with `email` (after normalisation);
    /// `USER_NOT_FOUND` when none is, `VALIDATION_FAILED` for a malformed
    /// address.
    pub async fn get_by_email(&self, email: &str) -> Result<User, Error> {
        self.active_realm().await?;
        let Some(id) = self.email_owner(email).await? else {
            return Err(UserError::NotFound.into());
        };
        self.load_user(id)
            .await?
            .map(|(u, _)| u.user)
            .ok_or_else(|| UserError::NotFound.into())
    }

    /// The user id the email index names for `email` (normalised first;
    /// malformed: `VALIDATION_FAILED`), if any.
    pub(crate) async fn email_owner(&self, email: &str) -> Result<Option<UserId>, Error> {
        let (_, key) = normalize_email(email)?;
        self.indexed_user(&keys::email(self.realm, &key)).await
    }
}

#[cfg(test)]
mod tests {
    use crate::Keystead;
    use crate::crypto::at_rest::StaticKeyProvider;
    use crate::realm::{PasswordPolicy, RealmSettings};
    use crate::secret::SecretString;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn finds_users_by_any_spelling_of_their_address() {
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
            .register(
                "alice",
                Some("Alice@Example.com"),
                SecretString::new("correct horse battery".into()),
            )
            .await
            .unwrap();
        assert_eq!(
            users.get_by_email("alice@example.COM").await.unwrap().id,
            alice.id
        );
        let missing = users.get_by_email("bob@example.com").await.unwrap_err();
        assert_eq!(missing.code(), "USER_NOT_FOUND");
        let malformed = users.get_by_email("not an address").await.unwrap_err();
        assert_eq!(malformed.code(), "VALIDATION_FAILED");
    }
}
