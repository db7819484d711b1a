//! The realm service: `ks.realms()`.

use super::{
    Realm, RealmError, RealmRecord, RealmSettings, RealmStatus, validate_name, validate_settings,
};
use crate::error::Error;
use crate::id::RealmId;
use crate::keystead::{Context, MAX_RETRIES};
use crate::page::Page;
use crate::store::key::Key;
use crate::store::{Batch, Precondition, StorageError, record};
use std::sync::Arc;

/// The key of a realm's record.
pub(crate) fn realm_key(id: RealmId) -> Key {
    Key::new().push("realms").push(id.to_bytes())
}

/// The key of the unique-name index entry (value: the realm id).
fn name_key(name: &str) -> Key {
    Key::new().push("realm-name").push(name)
}

/// The prefix every record a realm owns lives under.
pub(crate) fn data_prefix(id: RealmId) -> Key {
    Key::new().push("realm").push(id.to_bytes())
}

/// Load a realm and its version.
pub(crate) async fn load(ctx: &Context, id: RealmId) -> Result<(Realm, u64), Error> {
    let key = realm_key(id);
    let stored = ctx
        .store
        .get(key.as_bytes())
        .await?
        .ok_or(RealmError::NotFound)?;
    let realm = decode(ctx, &key, &stored.value)?;
    Ok((Realm::clone(&realm), stored.version))
}

/// The realm stored as `bytes` at `key`, decoded once per distinct bytes
/// (every realm-scoped call reads it).
fn decode(ctx: &Context, key: &Key, bytes: &[u8]) -> Result<Arc<Realm>, StorageError> {
    ctx.records.get_or_decode(key.as_bytes(), bytes, |bytes| {
        record::decode::<RealmRecord>(key.as_bytes(), bytes).map(RealmRecord::into_realm)
    })
}

/// Load a realm that must accept operations: the check every realm-scoped
/// service makes first.
pub(crate) async fn load_active(ctx: &Context, id: RealmId) -> Result<Arc<Realm>, Error> {
    let key = realm_key(id);
    active_from(ctx, &key, ctx.store.get(key.as_bytes()).await?)
}

/// The realm in `slot` (read at [`realm_key`]) if it accepts operations:
/// for callers that read it together with other records (`get_many`).
pub(crate) fn active_from(
    ctx: &Context,
    key: &Key,
    slot: Option<crate::store::Versioned>,
) -> Result<Arc<Realm>, Error> {
    let stored = slot.ok_or(RealmError::NotFound)?;
    let realm = decode(ctx, key, &stored.value)?;
    match realm.status {
        RealmStatus::Active => Ok(realm),
        RealmStatus::Disabled => Err(RealmError::Disabled.into()),
    }
}

/// Handle for realm administration; get one with `Keystead::realms`.
#[derive(Clone)]
pub struct Realms {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Realms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Realms")
    }
}

impl Realms {
    pub(crate) fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    /// Create a realm, with its first token-signing key (Ed25519, sealed
    /// at rest) in the same commit, so its JWKS is never empty; switch to
    /// ES256 with [`Tokens::rotate_signing_key`](crate::token::Tokens::rotate_signing_key).
    /// Fails with [`RealmError::NameTaken`] if the name is in use (checked
    /// atomically with the `Absent` name index).
    pub async fn create(&self, name: &str, settings: RealmSettings) -> Result<Realm, Error> {
        validate_name(name)?;
        validate_settings(&settings)?;
        let now = self.ctx.clock.now();
        let realm = Realm {
            id: RealmId::generate(now),
            name: name.to_owned(),
            status: RealmStatus::Active,
            settings,
            created_at: now,
            updated_at: now,
        };
        let key = realm_key(realm.id);
        let index = name_key(name);
        let mut batch = Batch::new();
        batch
            .put(
                key.clone(),
                record::encode(key.as_bytes(), &RealmRecord::V3(realm.clone()))?,
                Precondition::Absent,
            )?
            .put(
                index.clone(),
                realm.id.to_bytes().to_vec(),
                Precondition::Absent,
            )?;
        let tokens = crate::token::Tokens {
            ctx: Arc::clone(&self.ctx),
            realm: realm.id,
        };
        let signing = tokens
            .new_key(crate::crypto::jws::JwsAlgorithm::EdDsa, now)
            .await?;
        tokens.put_keys(&mut batch, &[signing], Precondition::Absent)?;
        match self.ctx.store.commit(batch).await {
            Ok(_) => Ok(realm),
            Err(StorageError::Conflict { key }) if key == index.as_bytes() => {
                Err(RealmError::NameTaken {
                    name: name.to_owned(),
                }
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Get a realm by id, whatever its status.
    pub async fn get(&self, id: RealmId) -> Result<Realm, Error> {
        Ok(load(&self.ctx, id).await?.0)
    }

    /// Get a realm by name, whatever its status.
    pub async fn get_by_name(&self, name: &str) -> Result<Realm, Error> {
        validate_name(name)?;
        let index = name_key(name);
        let stored = self
            .ctx
            .store
            .get(index.as_bytes())
            .await?
            .ok_or(RealmError::NotFound)?;
        let bytes: [u8; 16] =
            stored
                .value
                .as_slice()
                .try_into()
                .map_err(|_| StorageError::Corrupt {
                    key: index.clone().into_bytes(),
                    reason: "realm name index does not hold a 16-byte id".into(),
                })?;
        let id = RealmId::from_bytes(bytes).map_err(|e| StorageError::Corrupt {
            key: index.into_bytes(),
            reason: e.to_string(),
        })?;
        self.get(id).await
    }

    /// Realms in creation order, `limit` (1–1000) at a time; pass the
    /// previous page's `next` to continue.
    pub async fn list(&self, after: Option<RealmId>, limit: usize) -> Result<Page<Realm>, Error> {
        crate::page::scan_page(
            &*self.ctx.store,
            &Key::new().push("realms"),
            after.map(realm_key),
            limit,
            |key, value| {
                let realm = record::decode::<RealmRecord>(key, value)?.into_realm();
                Ok(realm)
            },
            |realm| realm.id,
        )
        .await
    }

    /// Replace a realm's settings (validated first; nothing is written if
    /// they are invalid).
    pub async fn update_settings(
        &self,
        id: RealmId,
        settings: RealmSettings,
    ) -> Result<Realm, Error> {
        validate_settings(&settings)?;
        self.modify(id, |realm| {
            realm.settings = settings.clone();
            Ok(())
        })
        .await
    }

    /// Disable a realm: every operation in it is refused until `enable`.
    pub async fn disable(&self, id: RealmId) -> Result<Realm, Error> {
        self.modify(id, |realm| {
            realm.status = RealmStatus::Disabled;
            Ok(())
        })
        .await
    }

    /// Re-enable a disabled realm.
    pub async fn enable(&self, id: RealmId) -> Result<Realm, Error> {
        self.modify(id, |realm| {
            realm.status = RealmStatus::Active;
            Ok(())
        })
        .await
    }

    /// Delete a realm and everything it owns. The record and the name go in
    /// one batch (from then on the realm does not exist for any service);
    /// the data under the realm's prefix is then swept in pages. Returns the
    /// number of data records removed.
    pub async fn delete(&self, id: RealmId) -> Result<u64, Error> {
        let (realm, version) = load(&self.ctx, id).await?;
        let mut batch = Batch::new();
        batch
            .delete(realm_key(id), Precondition::Version(version))?
            .delete(name_key(&realm.name), Precondition::Any)?;
        match self.ctx.store.commit(batch).await {
            Ok(_) => {}
            // Changed meanwhile: deleting is still what the caller wants, but
            // a concurrent delete may have won; let a retry decide.
            Err(StorageError::Conflict { .. }) => return Box::pin(self.delete(id)).await,
            Err(e) => return Err(e.into()),
        }
        self.sweep(id).await
    }

    /// Remove every record under a deleted realm's prefix.
    async fn sweep(&self, id: RealmId) -> Result<u64, Error> {
        crate::keystead::sweep(&*self.ctx.store, &data_prefix(id), None, |_, _| None).await
    }

    /// Load, change and write back a realm with compare-and-swap, retrying
    /// when another writer got there first.
    async fn modify(
        &self,
        id: RealmId,
        change: impl Fn(&mut Realm) -> Result<(), Error>,
    ) -> Result<Realm, Error> {
        let key = realm_key(id);
        let mut last_conflict = None;
        for _ in 0..MAX_RETRIES {
            let (mut realm, version) = load(&self.ctx, id).await?;
            change(&mut realm)?;
            realm.updated_at = self.ctx.clock.now();
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &RealmRecord::V3(realm.clone()))?,
                Precondition::Version(version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(realm),
                Err(e @ StorageError::Conflict { .. }) => last_conflict = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_conflict.map_or_else(|| RealmError::NotFound.into(), Error::from))
    }
}
