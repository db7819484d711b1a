//! The user service: `ks.users(realm)` — registration and administration.

use super::{
    ProfileUpdate, StoredUser, User, UserError, UserRecord, UserStatus, keys, normalize_email,
    normalize_username, password, validate_display_name,
};
use crate::error::Error;
use crate::id::{RealmId, UserId};
use crate::keystead::{Context, MAX_RETRIES};
use crate::page::Page;
use crate::realm::Realm;
use crate::secret::SecretString;
use crate::store::key::Key;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Handle for the users of one realm; get one with
/// [`Keystead::users`](crate::Keystead::users). Cheap to clone.
#[derive(Clone)]
pub struct Users {
    pub(crate) ctx: Arc<Context>,
    pub(crate) realm: RealmId,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({})", self.realm)
    }
}

/// A user about to be written: names normalised, password hashed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct NewUserRecord {
    /// The username as registered (NFKC).
    pub(crate) display: String,
    /// The normalised username (the index key).
    pub(crate) username_key: String,
    /// The address as registered and its normalised key.
    pub(crate) email: Option<(String, String)>,
    /// The PHC string of the password.
    pub(crate) password_hash: String,
}

impl Users {
    pub(crate) fn new(ctx: Arc<Context>, realm: RealmId) -> Self {
        Self { ctx, realm }
    }

    /// The realm this handle is bound to.
    pub fn realm(&self) -> RealmId {
        self.realm
    }

    /// The MFA handle of the same realm (login asks it about factors).
    pub(crate) fn mfa(&self) -> crate::mfa::Mfa {
        crate::mfa::Mfa {
            users: self.clone(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.ctx.clock.now()
    }

    /// The realm, which must exist and be active.
    pub(crate) async fn active_realm(&self) -> Result<Arc<Realm>, Error> {
        crate::realm::service::load_active(&self.ctx, self.realm).await
    }

    /// Load a user record and its version, if present.
    pub(crate) async fn load_user(&self, id: UserId) -> Result<Option<(StoredUser, u64)>, Error> {
        let key = keys::user(self.realm, id);
        match self.ctx.store.get(key.as_bytes()).await? {
            None => Ok(None),
            Some(stored) => {
                let UserRecord::V1(user) = record::decode(key.as_bytes(), &stored.value)?;
                Ok(Some((user, stored.version)))
            }
        }
    }

    /// Load a user record that must exist.
    pub(crate) async fn require_user(&self, id: UserId) -> Result<(StoredUser, u64), Error> {
        self.load_user(id)
            .await?
            .ok_or_else(|| UserError::NotFound.into())
    }

    /// The user id an index entry (username or email) points to.
    pub(crate) async fn indexed_user(&self, index: &Key) -> Result<Option<UserId>, Error> {
        let Some(stored) = self.ctx.store.get(index.as_bytes()).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StorageError::Corrupt {
            key: index.as_bytes().to_vec(),
            reason,
        };
        let bytes: [u8; 16] = stored
            .value
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("index does not hold a 16-byte user id".into()))?;
        Ok(Some(
            UserId::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?,
        ))
    }

    /// Load the user a normalised username belongs to.
    pub(crate) async fn user_by_key(
        &self,
        username_key: &str,
    ) -> Result<Option<(StoredUser, u64)>, Error> {
        match self
            .indexed_user(&keys::username(self.realm, username_key))
            .await?
        {
            Some(id) => self.load_user(id).await,
            None => Ok(None),
        }
    }

    /// Register a user with a password. `username` and `email` are
    /// normalised and checked (see the [module docs](super)); the password
    /// must satisfy the realm's policy. Fails with `USERNAME_TAKEN` or
    /// `EMAIL_TAKEN` when another user of the realm has the same normalised
    /// name or address — decided atomically by `Absent` index keys, so of
    /// concurrent registrations exactly one wins. Nothing is written on
    /// failure.
    pub async fn register(
        &self,
        username: &str,
        email: Option<&str>,
        password: SecretString,
    ) -> Result<User, Error> {
        let realm = self.active_realm().await?;
        let (display, username_key) = normalize_username(username)?;
        let email = email.map(normalize_email).transpose()?;
        password::screen(&self.ctx, &realm.settings.password, "password", &password).await?;
        let name_index = keys::username(self.realm, &username_key);
        let email_index = email.as_ref().map(|(_, k)| keys::email(self.realm, k));
        // Fail fast before spending an argon2 run; the batch below decides.
        if self.indexed_user(&name_index).await?.is_some() {
            return Err(UserError::UsernameTaken.into());
        }
        if let Some(index) = &email_index
            && self.indexed_user(index).await?.is_some()
        {
            return Err(UserError::EmailTaken.into());
        }
        let password_hash =
            password::hash(&*self.ctx.blocking, &realm.settings.password, password).await?;
        let new = NewUserRecord {
            display,
            username_key,
            email,
            password_hash,
        };
        self.insert_user(new, None).await
    }

    /// Write a validated new user (record and unique index entries, one
    /// batch), and with it the delete of `consume` (key, version) — a
    /// pending sign-up that becomes this user. A taken name or address is
    /// decided by the `Absent` index keys (`USERNAME_TAKEN`, `EMAIL_TAKEN`).
    pub(crate) async fn insert_user(
        &self,
        new: NewUserRecord,
        consume: Option<(Key, u64)>,
    ) -> Result<User, Error> {
        let NewUserRecord {
            display,
            username_key,
            email,
            password_hash,
        } = new;
        let name_index = keys::username(self.realm, &username_key);
        // No index reads here: `register` already failed fast before its
        // argon2 run, and the `Absent` index keys below decide.
        let email_index = email.as_ref().map(|(_, k)| keys::email(self.realm, k));
        let now = self.now();
        let id = UserId::generate(now);
        let stored = StoredUser {
            user: User {
                id,
                realm: self.realm,
                username: display,
                email: email.as_ref().map(|(d, _)| d.clone()),
                display_name: None,
                status: UserStatus::Active,
                created_at: now,
                updated_at: now,
            },
            username_key: username_key.clone(),
            email_key: email.map(|(_, k)| k),
            password_hash,
            session_epoch: 0,
            active_factors: 0,
        };
        let key = keys::user(self.realm, id);
        let mut batch = Batch::new();
        batch
            .put(
                key.clone(),
                record::encode(key.as_bytes(), &UserRecord::V1(stored.clone()))?,
                Precondition::Absent,
            )?
            .put(
                name_index.clone(),
                id.to_bytes().to_vec(),
                Precondition::Absent,
            )?
            // A counter left by attempts on this name before it existed
            // must not throttle the new user.
            .delete(keys::lockout(self.realm, &username_key), Precondition::Any)?;
        if let Some(index) = &email_index {
            batch.put(index.clone(), id.to_bytes().to_vec(), Precondition::Absent)?;
        }
        let consumed = consume.as_ref().map(|(k, _)| k.clone());
        if let Some((pending, version)) = consume {
            batch.delete(pending, Precondition::Version(version))?;
        }
        match self.ctx.store.commit(batch).await {
            Ok(_) => Ok(stored.user),
            // Confirmed concurrently: the other confirmation won.
            Err(StorageError::Conflict { key })
                if consumed.as_ref().is_some_and(|k| k.as_bytes() == key) =>
            {
                Err(UserError::SignUpNotFound.into())
            }
            Err(StorageError::Conflict { key }) if key == name_index.as_bytes() => {
                Err(UserError::UsernameTaken.into())
            }
            Err(StorageError::Conflict { key })
                if email_index.as_ref().is_some_and(|i| i.as_bytes() == key) =>
            {
                Err(UserError::EmailTaken.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Get a user by id.
    pub async fn get(&self, id: UserId) -> Result<User, Error> {
        self.active_realm().await?;
        Ok(self.require_user(id).await?.0.user)
    }

    /// Get a user by username (normalised first, so any spelling that
    /// normalises to the same name finds the user).
    pub async fn get_by_username(&self, username: &str) -> Result<User, Error> {
        self.active_realm().await?;
        let (_, key) = normalize_username(username)?;
        self.user_by_key(&key)
            .await?
            .map(|(u, _)| u.user)
            .ok_or_else(|| UserError::NotFound.into())
    }

    /// Whether the user has an active MFA factor (the login flow asks for a
    /// second factor when it does). Kept by the MFA service; 0 until then.
    pub async fn has_active_factor(&self, id: UserId) -> Result<bool, Error> {
        self.active_realm().await?;
        Ok(self.require_user(id).await?.0.active_factors > 0)
    }

    /// Users in registration order, `limit` (1–1000) at a time; pass the
    /// previous page's `next` to continue.
    pub async fn list(
        &self,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Page<User, UserId>, Error> {
        self.active_realm().await?;
        crate::page::scan_page(
            &*self.ctx.store,
            &keys::users(self.realm),
            after.map(|id| keys::user(self.realm, id)),
            limit,
            |key, value| {
                let UserRecord::V1(user) = record::decode(key, value)?;
                Ok(user.user)
            },
            |user| user.id,
        )
        .await
    }

    /// Change the email and/or display name (validated first; nothing is
    /// written if invalid). A new email must be free (`EMAIL_TAKEN`); the old
    /// one is released in the same batch.
    pub async fn update_profile(&self, id: UserId, update: ProfileUpdate) -> Result<User, Error> {
        self.active_realm().await?;
        let email = match &update.email {
            Some(Some(e)) => Some(Some(normalize_email(e)?)),
            Some(None) => Some(None),
            None => None,
        };
        if let Some(Some(name)) = &update.display_name {
            validate_display_name(name)?;
        }
        let realm = self.realm;
        self.modify_user(id, |user, batch| {
            if let Some(email) = &email {
                let new_key = email.as_ref().map(|(_, k)| k.clone());
                if new_key != user.email_key {
                    if let Some(old) = &user.email_key {
                        batch.delete(keys::email(realm, old), Precondition::Any)?;
                    }
                    if let Some(new) = &new_key {
                        batch.put(
                            keys::email(realm, new),
                            id.to_bytes().to_vec(),
                            Precondition::Absent,
                        )?;
                    }
                }
                user.user.email = email.as_ref().map(|(d, _)| d.clone());
                user.email_key = new_key;
            }
            if let Some(name) = &update.display_name {
                user.user.display_name.clone_from(name);
            }
            Ok(())
        })
        .await
        .map(|u| u.user)
    }

    /// Disable a user: logins fail with `INVALID_CREDENTIALS`, and every
    /// session and application token stops working at once (the session
    /// epoch moves in the same write); session records are then swept.
    pub async fn disable(&self, id: UserId) -> Result<User, Error> {
        self.active_realm().await?;
        let user = self
            .modify_user(id, |user, _| {
                user.user.status = UserStatus::Disabled;
                user.session_epoch += 1;
                Ok(())
            })
            .await?;
        self.sweep_sessions(id, None).await?;
        Ok(user.user)
    }

    /// Re-enable a disabled user. Sessions ended by `disable` stay ended.
    pub async fn enable(&self, id: UserId) -> Result<User, Error> {
        self.active_realm().await?;
        self.modify_user(id, |user, _| {
            user.user.status = UserStatus::Active;
            Ok(())
        })
        .await
        .map(|u| u.user)
    }

    /// Delete a user and everything it owns. One batch removes the user
    /// record, its username and email index entries and its lockout counter
    /// — from then on no session, token or challenge of the user is usable,
    /// because each lookup requires the user record. Sessions and
    /// application tokens, MFA keys, recovery codes and trusted devices are
    /// then swept. Returns the number of swept records.
    pub async fn delete(&self, id: UserId) -> Result<u64, Error> {
        self.active_realm().await?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (user, version) = self.require_user(id).await?;
            let mut batch = Batch::new();
            batch
                .delete(keys::user(self.realm, id), Precondition::Version(version))?
                .delete(
                    keys::username(self.realm, &user.username_key),
                    Precondition::Any,
                )?
                .delete(
                    keys::lockout(self.realm, &user.username_key),
                    Precondition::Any,
                )?;
            if let Some(email) = &user.email_key {
                batch.delete(keys::email(self.realm, email), Precondition::Any)?;
            }
            match self.ctx.store.commit(batch).await {
                Ok(_) => {
                    let sessions = self.sweep_sessions(id, None).await?;
                    let tokens = self.sweep_app_tokens(id).await?;
                    // MFA keys, recovery codes and trusted devices.
                    let mfa = crate::mfa::service::sweep_user(self, id).await?;
                    let passkeys = crate::webauthn::Webauthn {
                        users: self.clone(),
                    }
                    .delete_all(id)
                    .await?;
                    return Ok(sessions + tokens + mfa + passkeys);
                }
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| UserError::NotFound.into(), Error::from))
    }

    /// Load, change and write back a user with compare-and-swap, retrying
    /// when another writer got there first. `change` may add index writes
    /// to the batch; a failed `Absent` on an email index is `EMAIL_TAKEN`.
    pub(crate) async fn modify_user(
        &self,
        id: UserId,
        change: impl Fn(&mut StoredUser, &mut Batch) -> Result<(), Error>,
    ) -> Result<StoredUser, Error> {
        let key = keys::user(self.realm, id);
        let email_prefix = crate::realm::service::data_prefix(self.realm).push("email");
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut user, version) = self.require_user(id).await?;
            let now = self.now();
            let mut batch = Batch::new();
            change(&mut user, &mut batch)?;
            user.user.updated_at = now;
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &UserRecord::V1(user.clone()))?,
                Precondition::Version(version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(user),
                Err(StorageError::Conflict { key: k })
                    if k.starts_with(email_prefix.as_bytes()) =>
                {
                    return Err(UserError::EmailTaken.into());
                }
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| UserError::NotFound.into(), Error::from))
    }

    /// Delete every record under `prefix`; see [`crate::keystead::sweep`].
    pub(crate) async fn sweep(
        &self,
        prefix: &Key,
        skip: Option<&[u8]>,
        also: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>,
    ) -> Result<u64, Error> {
        crate::keystead::sweep(&*self.ctx.store, prefix, skip, also).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::id::RealmId;

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let realm = RealmId::from_bytes([
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 1,
        ])
        .unwrap();
        let id = UserId::from_bytes([
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 2,
        ])
        .unwrap();
        let record = UserRecord::V1(StoredUser {
            user: User {
                id,
                realm,
                username: "Alice".into(),
                email: Some("alice@example.com".into()),
                display_name: None,
                status: UserStatus::Active,
                created_at: at,
                updated_at: at,
            },
            username_key: "alice".into(),
            email_key: Some("alice@example.com".into()),
            password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA".into(),
            session_epoch: 3,
            active_factors: 0,
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe568007000800000000000000210018bcfe568007000800000000000000105416c6963650111616c696365406578616d706c652e636f6d000014323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a05616c6963650111616c696365406578616d706c652e636f6d2b246172676f6e32696424763d3139246d3d382c743d312c703d31246332467364484e6862485124414141410300",
        );
    }
}
