//! Per-realm token-signing keys.
//!
//! Each realm has one **current** key that signs new tokens and any number
//! of **retired** keys that still verify (and stay in the JWKS) until their
//! overlap ends, so tokens signed before a rotation keep verifying until
//! they expire. The first key is created lazily by the first call that needs
//! one ([`Tokens::ensure_signing_key`](super::Tokens::ensure_signing_key),
//! Ed25519 unless the embedder asked for ES256 first).
//!
//! All keys of a realm live in one record (`token-keys`), so creation is an
//! `Absent` write (of two concurrent creators one wins, the other uses the
//! winner's key) and rotation is one compare-and-swap. The private half is
//! PKCS#8 sealed with the [`KeyProvider`](crate::crypto::at_rest::KeyProvider)
//! (AAD: the record key plus the `kid`); the public half is stored in clear,
//! so verification never needs the key provider. The `kid` is the key's
//! [`SigningKeyId`] (a UUID v7).

use super::layout;
use super::service::Tokens;
use crate::crypto::at_rest;
use crate::crypto::jws::{JwsAlgorithm, JwsKeySet, SigningKey, VerifyingKey};
use crate::error::Error;
use crate::id::{RealmId, SigningKeyId};
use crate::keystead::MAX_RETRIES;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

/// Most opened signing keys kept in memory per instance; the cache is
/// emptied when full (keys are reopened on demand).
pub const MAX_CACHED_SIGNERS: usize = 1024;

/// Opened signing keys by realm and key id. A rotation makes a new key id,
/// so an entry never goes stale; the record is still read on every issue,
/// so a rotation by another process is seen at once.
#[derive(Default)]
pub(crate) struct SignerCache {
    keys: std::sync::Mutex<HashMap<(RealmId, SigningKeyId), Arc<SigningKey>>>,
    /// Each realm's current key by the key record's version, so signing
    /// decodes the record only when it changed.
    current: std::sync::Mutex<HashMap<RealmId, (u64, Arc<SigningKey>)>>,
}

impl SignerCache {
    fn current(&self, realm: RealmId, version: u64) -> Option<Arc<SigningKey>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .get(&realm)
            .filter(|(v, _)| *v == version)
            .map(|(_, key)| Arc::clone(key))
    }

    fn set_current(&self, realm: RealmId, version: u64, key: Arc<SigningKey>) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.len() >= MAX_CACHED_SIGNERS {
            current.clear();
        }
        current.insert(realm, (version, key));
    }

    fn get(&self, realm: RealmId, id: SigningKeyId) -> Option<Arc<SigningKey>> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(realm, id))
            .cloned()
    }

    fn insert(&self, realm: RealmId, id: SigningKeyId, key: Arc<SigningKey>) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= MAX_CACHED_SIGNERS {
            keys.clear();
        }
        keys.insert((realm, id), key);
    }
}

/// Per-instance cache of each realm's published verification keys, keyed
/// by the signing-key record's version. Verification still reads the
/// record's current version on every call — so a rotation made by any
/// instance is seen at once — but decodes the record and rebuilds the key
/// set only when that version changed or a retired key's publication
/// window ended.
#[derive(Default)]
pub(crate) struct VerifierCache {
    sets: std::sync::Mutex<HashMap<RealmId, CachedKeySet>>,
}

struct CachedKeySet {
    version: u64,
    /// When the set changes without a write: the earliest end of a retired
    /// key's publication.
    valid_until: Option<DateTime<Utc>>,
    set: Arc<JwsKeySet>,
}

impl VerifierCache {
    fn get(&self, realm: RealmId, version: u64, now: DateTime<Utc>) -> Option<Arc<JwsKeySet>> {
        let sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let hit = sets.get(&realm)?;
        (hit.version == version && hit.valid_until.is_none_or(|until| now < until))
            .then(|| Arc::clone(&hit.set))
    }

    fn insert(&self, realm: RealmId, entry: CachedKeySet) {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if sets.len() >= MAX_CACHED_SIGNERS {
            sets.clear();
        }
        sets.insert(realm, entry);
    }
}

/// How long a retired key stays published by default after a rotation: one
/// day, longer than the longest access-token lifetime a realm may set.
pub const DEFAULT_OVERLAP_SECS: i64 = 24 * 3600;

/// The algorithm of a stored key (kept apart from [`JwsAlgorithm`] so the
/// stored form never changes with that type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredAlg {
    EdDsa,
    Es256,
}

impl StoredAlg {
    fn of(alg: JwsAlgorithm) -> Self {
        match alg {
            JwsAlgorithm::Es256 => StoredAlg::Es256,
            _ => StoredAlg::EdDsa,
        }
    }

    fn alg(self) -> JwsAlgorithm {
        match self {
            StoredAlg::EdDsa => JwsAlgorithm::EdDsa,
            StoredAlg::Es256 => JwsAlgorithm::Es256,
        }
    }
}

/// One signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSigningKey {
    pub(crate) id: SigningKeyId,
    pub(crate) alg: StoredAlg,
    /// Raw public key (32 bytes Ed25519, 65 bytes SEC1 P-256).
    pub(crate) public: Vec<u8>,
    /// PKCS#8 sealed at rest.
    pub(crate) sealed: Vec<u8>,
    pub(crate) created_at: DateTime<Utc>,
    /// When it stopped signing; `None` for the current key.
    pub(crate) retired_at: Option<DateTime<Utc>>,
    /// Until when a retired key stays published and verifies.
    pub(crate) published_until: Option<DateTime<Utc>>,
}

/// How a realm's signing keys are stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SigningKeysRecord {
    V1 { keys: Vec<StoredSigningKey> },
}

/// A signing key as callers see it (never the private half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyInfo {
    /// The `kid`.
    pub id: SigningKeyId,
    /// The algorithm the key is pinned to.
    pub algorithm: JwsAlgorithm,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; `None` for the current key.
    pub retired_at: Option<DateTime<Utc>>,
    /// Until when a retired key is published.
    pub published_until: Option<DateTime<Utc>>,
}

impl StoredSigningKey {
    fn info(&self) -> SigningKeyInfo {
        SigningKeyInfo {
            id: self.id,
            algorithm: self.alg.alg(),
            created_at: self.created_at,
            retired_at: self.retired_at,
            published_until: self.published_until,
        }
    }

    /// Whether the key verifies (and is published) at `now`.
    fn published(&self, now: DateTime<Utc>) -> bool {
        self.retired_at.is_none() || self.published_until.is_some_and(|until| now < until)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        Ok(
            VerifyingKey::from_public_bytes(self.alg.alg(), &self.public)?
                .with_kid(self.id.to_string()),
        )
    }
}

impl Tokens {
    async fn load_keys(&self) -> Result<Option<(Vec<StoredSigningKey>, u64)>, Error> {
        let key = layout::signing_keys(self.realm);
        let slot = self.ctx.store.get(key.as_bytes()).await?;
        self.decode_keys(slot)
    }

    /// The realm's signing-key record read into `slot` (at
    /// `layout::signing_keys`), with its version.
    pub(crate) fn decode_keys(
        &self,
        slot: Option<crate::store::Versioned>,
    ) -> Result<Option<(Vec<StoredSigningKey>, u64)>, Error> {
        let Some(stored) = slot else {
            return Ok(None);
        };
        let key = layout::signing_keys(self.realm);
        let SigningKeysRecord::V1 { keys } = record::decode(key.as_bytes(), &stored.value)?;
        Ok(Some((keys, stored.version)))
    }

    pub(crate) async fn new_key(
        &self,
        alg: JwsAlgorithm,
        now: DateTime<Utc>,
    ) -> Result<StoredSigningKey, Error> {
        let id = SigningKeyId::generate(now);
        let key = SigningKey::generate(alg)?;
        let label = layout::sealed_key_label(self.realm, &id.to_string());
        let pkcs8 = key.to_pkcs8();
        let sealed =
            at_rest::seal(self.ctx.keys.as_ref(), label.as_bytes(), pkcs8.expose()).await?;
        Ok(StoredSigningKey {
            id,
            alg: StoredAlg::of(alg),
            public: key.verifying_key().public_bytes().to_vec(),
            sealed,
            created_at: now,
            retired_at: None,
            published_until: None,
        })
    }

    async fn write_keys(
        &self,
        keys: &[StoredSigningKey],
        precondition: Precondition,
    ) -> Result<(), Error> {
        let mut batch = Batch::new();
        self.put_keys(&mut batch, keys, precondition)?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Add the write of the realm's signing-key record to `batch`.
    pub(crate) fn put_keys(
        &self,
        batch: &mut Batch,
        keys: &[StoredSigningKey],
        precondition: Precondition,
    ) -> Result<(), Error> {
        let key = layout::signing_keys(self.realm);
        let value = record::encode(
            key.as_bytes(),
            &SigningKeysRecord::V1 {
                keys: keys.to_vec(),
            },
        )?;
        batch.put(key, value, precondition)?;
        Ok(())
    }

    /// The realm's current signing key, creating one with `alg` if the realm
    /// has none yet (an existing key is kept whatever its algorithm; use
    /// [`Tokens::rotate_signing_key`] to change it). Concurrent callers all
    /// get the same key.
    pub async fn ensure_signing_key(&self, alg: JwsAlgorithm) -> Result<SigningKeyInfo, Error> {
        self.active_realm().await?;
        Ok(self.current_key(alg).await?.info())
    }

    /// The current stored key, created if missing.
    async fn current_key(&self, alg: JwsAlgorithm) -> Result<StoredSigningKey, Error> {
        for _ in 0..MAX_RETRIES {
            if let Some((keys, _)) = self.load_keys().await?
                && let Some(current) = keys.into_iter().find(|k| k.retired_at.is_none())
            {
                return Ok(current);
            }
            let now = self.now();
            let fresh = self.new_key(alg, now).await?;
            match self
                .write_keys(std::slice::from_ref(&fresh), Precondition::Absent)
                .await
            {
                Ok(()) => return Ok(fresh),
                Err(Error::Storage(StorageError::Conflict { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Conflict {
            key: layout::signing_keys(self.realm).into_bytes(),
        }
        .into())
    }

    /// The current key, opened for signing (from the cache when it was
    /// opened before).
    pub(crate) async fn signer(&self) -> Result<Arc<SigningKey>, Error> {
        let record_key = layout::signing_keys(self.realm);
        let slot = self.ctx.store.get(record_key.as_bytes()).await?;
        self.signer_from(slot).await
    }

    /// The current key from the signing-key record read into `slot`. The
    /// record's version says whether the cached current key is still
    /// current; only a changed record is decoded.
    pub(crate) async fn signer_from(
        &self,
        slot: Option<crate::store::Versioned>,
    ) -> Result<Arc<SigningKey>, Error> {
        if let Some(slot) = slot {
            let version = slot.version;
            if let Some(key) = self.ctx.signers.current(self.realm, version) {
                return Ok(key);
            }
            if let Some((keys, _)) = self.decode_keys(Some(slot))?
                && let Some(current) = keys.into_iter().find(|k| k.retired_at.is_none())
            {
                let key = self.open_signer(&current).await?;
                self.ctx
                    .signers
                    .set_current(self.realm, version, Arc::clone(&key));
                return Ok(key);
            }
        }
        let current = self.current_key(JwsAlgorithm::EdDsa).await?;
        self.open_signer(&current).await
    }

    /// `current` opened for signing (from the cache when it was opened
    /// before).
    async fn open_signer(&self, current: &StoredSigningKey) -> Result<Arc<SigningKey>, Error> {
        if let Some(key) = self.ctx.signers.get(self.realm, current.id) {
            return Ok(key);
        }
        let label = layout::sealed_key_label(self.realm, &current.id.to_string());
        let pkcs8 =
            at_rest::open(self.ctx.keys.as_ref(), label.as_bytes(), &current.sealed).await?;
        let key = Arc::new(
            SigningKey::from_pkcs8(current.alg.alg(), pkcs8.expose())?
                .with_kid(current.id.to_string()),
        );
        self.ctx
            .signers
            .insert(self.realm, current.id, Arc::clone(&key));
        Ok(key)
    }

    /// Replace the current key with a new one of `alg`. The old key stops
    /// signing now and stays published (and verifying) for `overlap` —
    /// choose at least the access-token lifetime plus the leeway
    /// ([`DEFAULT_OVERLAP_SECS`] is a safe default). Retired keys whose
    /// overlap has ended are dropped. Returns the new key.
    pub async fn rotate_signing_key(
        &self,
        alg: JwsAlgorithm,
        overlap: chrono::Duration,
    ) -> Result<SigningKeyInfo, Error> {
        self.active_realm().await?;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let now = self.now();
            let (mut keys, precondition) = match self.load_keys().await? {
                Some((keys, version)) => (keys, Precondition::Version(version)),
                None => (Vec::new(), Precondition::Absent),
            };
            for key in &mut keys {
                if key.retired_at.is_none() {
                    key.retired_at = Some(now);
                    key.published_until = Some(now + overlap);
                }
            }
            keys.retain(|k| k.published(now));
            let fresh = self.new_key(alg, now).await?;
            let info = fresh.info();
            keys.insert(0, fresh);
            match self.write_keys(&keys, precondition).await {
                Ok(()) => return Ok(info),
                Err(e @ Error::Storage(StorageError::Conflict { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            StorageError::Conflict {
                key: layout::signing_keys(self.realm).into_bytes(),
            }
            .into()
        }))
    }

    /// Every key of the realm, current first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyInfo>, Error> {
        self.active_realm().await?;
        Ok(self
            .load_keys()
            .await?
            .map(|(keys, _)| keys.iter().map(StoredSigningKey::info).collect())
            .unwrap_or_default())
    }

    /// The keys that verify at `now`: the current one and retired ones
    /// within their overlap.
    pub(crate) async fn verification_keys(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Arc<JwsKeySet>, Error> {
        let key = layout::signing_keys(self.realm);
        let slot = self.ctx.store.get(key.as_bytes()).await?;
        self.verifiers_from(slot, now)
    }

    /// The keys that verify at `now`, from the signing-key record read into
    /// `slot` — decoded only when its version is not the cached one.
    pub(crate) fn verifiers_from(
        &self,
        slot: Option<crate::store::Versioned>,
        now: DateTime<Utc>,
    ) -> Result<Arc<JwsKeySet>, Error> {
        let Some(version) = slot.as_ref().map(|s| s.version) else {
            return Ok(Arc::new(JwsKeySet::new()));
        };
        if let Some(hit) = self.ctx.verifiers.get(self.realm, version, now) {
            return Ok(hit);
        }
        let loaded = self.decode_keys(slot)?;
        let valid_until = loaded.as_ref().and_then(|(keys, _)| {
            keys.iter()
                .filter(|k| k.published(now))
                .filter_map(|k| k.published_until)
                .min()
        });
        let set = Arc::new(Self::published_keys(loaded, now)?);
        self.ctx.verifiers.insert(
            self.realm,
            CachedKeySet {
                version,
                valid_until,
                set: Arc::clone(&set),
            },
        );
        Ok(set)
    }

    /// The keys of a loaded key record that verify at `now`.
    pub(crate) fn published_keys(
        loaded: Option<(Vec<StoredSigningKey>, u64)>,
        now: DateTime<Utc>,
    ) -> Result<JwsKeySet, Error> {
        let mut set = JwsKeySet::new();
        if let Some((keys, _)) = loaded {
            for key in keys.iter().filter(|k| k.published(now)) {
                set.insert(key.verifying_key()?);
            }
        }
        Ok(set)
    }

    /// The realm's JWKS document (RFC 7517 §5): `{"keys":[…]}` with the
    /// current key and retired keys within their overlap, each with `kid`,
    /// `kty`, `crv`, `x` (and `y`), `alg` and `use: "sig"`. Creates the
    /// first key (Ed25519) if the realm has none, so the document is never
    /// empty.
    pub async fn jwks(&self) -> Result<serde_json::Value, Error> {
        self.active_realm().await?;
        self.current_key(JwsAlgorithm::EdDsa).await?;
        Ok(self.verification_keys(self.now()).await?.to_jwks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = SigningKeyId::from_bytes([
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 9,
        ])
        .unwrap();
        let record = SigningKeysRecord::V1 {
            keys: vec![StoredSigningKey {
                id,
                alg: StoredAlg::Es256,
                public: vec![4, 1, 2],
                sealed: vec![1, 9],
                created_at: at,
                retired_at: Some(at),
                published_until: None,
            }],
        };
        crate::store::record::assert_golden(
            &record,
            "01000110018bcfe5680070008000000000000009010304010202010914323032332d31312d31345432323a31333a32305a0114323032332d31312d31345432323a31333a32305a00",
        );
    }
}
