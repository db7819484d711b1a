//! The server's own records, kept in the library's store under a prefix of
//! their own (`example-server/…`, which no library key starts with):
//!
//! | key | value | why |
//! |---|---|---|
//! | `issuer/<SHA-256 of iss>` | realm id | route a bearer token to its realm by its `iss` |
//! | `realm/<realm>/group/<group>/member/<user>` | empty | who may use a device group |
//! | `realm/<realm>/group/<group>/device/<user>/<device>` | empty | which user registered a device |
//!
//! The library's device groups have no owners — that is an application
//! decision — so this example keeps membership here, the way an embedder
//! keeps its own records beside keystead's.

use keystead::id::{DeviceId, GroupId, RealmId, UserId};
use keystead::store::key::Key;
use keystead::store::{Batch, Precondition, StorageError, Store};

const ROOT: &str = "example-server";
/// Page size when listing a user's devices.
const PAGE: usize = 256;

fn issuer_key(issuer: &str) -> Key {
    // Hashed: issuers are up to 512 bytes, a digest keeps keys short.
    let digest = ring::digest::digest(&ring::digest::SHA256, issuer.as_bytes());
    Key::new().push(ROOT).push("issuer").push(digest.as_ref())
}

fn group_key(realm: RealmId, group: GroupId) -> Key {
    Key::new()
        .push(ROOT)
        .push("realm")
        .push(realm.to_bytes())
        .push("group")
        .push(group.to_bytes())
}

fn member_key(realm: RealmId, group: GroupId, user: UserId) -> Key {
    group_key(realm, group).push("member").push(user.to_bytes())
}

fn user_devices_key(realm: RealmId, group: GroupId, user: UserId) -> Key {
    group_key(realm, group).push("device").push(user.to_bytes())
}

fn device_key(realm: RealmId, group: GroupId, user: UserId, device: DeviceId) -> Key {
    user_devices_key(realm, group, user).push(device.to_bytes())
}

/// The realm that registered `issuer` with [`claim_issuer`], if any.
pub async fn realm_of_issuer(
    store: &dyn Store,
    issuer: &str,
) -> Result<Option<RealmId>, StorageError> {
    let key = issuer_key(issuer);
    let Some(found) = store.get(key.as_bytes()).await? else {
        return Ok(None);
    };
    let bytes: [u8; 16] = found
        .value
        .as_slice()
        .try_into()
        .map_err(|_| corrupt(&key, "issuer index does not hold a realm id"))?;
    RealmId::from_bytes(bytes)
        .map(Some)
        .map_err(|e| corrupt(&key, &e.to_string()))
}

/// Register `issuer` for `realm`: `Conflict` when another realm has it, so
/// a token's `iss` always routes to one realm.
pub async fn claim_issuer(
    store: &dyn Store,
    issuer: &str,
    realm: RealmId,
) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    batch
        .put(
            issuer_key(issuer),
            realm.to_bytes().to_vec(),
            Precondition::Absent,
        )
        .map_err(StorageError::backend)?;
    store.commit(batch).await.map(drop)
}

/// Make `user` a member of `group` (idempotent).
pub async fn add_member(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
) -> Result<(), StorageError> {
    put_marker(store, member_key(realm, group, user)).await
}

/// End `user`'s membership of `group` (idempotent): their device API calls
/// and event streams of the group stop ([`super::streams`]).
pub async fn remove_member(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    batch
        .delete(member_key(realm, group, user), Precondition::Any)
        .map_err(StorageError::backend)?;
    store.commit(batch).await.map(drop)
}

/// Whether `user` is a member of `group`.
pub async fn is_member(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
) -> Result<bool, StorageError> {
    Ok(store
        .get(member_key(realm, group, user).as_bytes())
        .await?
        .is_some())
}

/// Record that `user` registered `device`.
pub async fn add_device(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
    device: DeviceId,
) -> Result<(), StorageError> {
    put_marker(store, device_key(realm, group, user, device)).await
}

/// Whether `user` registered `device`.
pub async fn owns_device(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
    device: DeviceId,
) -> Result<bool, StorageError> {
    Ok(store
        .get(device_key(realm, group, user, device).as_bytes())
        .await?
        .is_some())
}

/// The devices `user` registered in `group`, oldest first.
pub async fn devices_of(
    store: &dyn Store,
    realm: RealmId,
    group: GroupId,
    user: UserId,
) -> Result<Vec<DeviceId>, StorageError> {
    let prefix = user_devices_key(realm, group, user);
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = store
            .scan(prefix.as_bytes(), after.as_deref(), PAGE)
            .await?;
        let Some((last, _)) = rows.last() else {
            return Ok(out);
        };
        after = Some(last.clone());
        for (key, _) in &rows {
            let tail = &key[prefix.as_bytes().len()..];
            let segments = keystead::store::key::segments(tail)
                .map_err(|e| corrupt_raw(key, &e.to_string()))?;
            let id: [u8; 16] = segments
                .first()
                .and_then(|s| s.as_slice().try_into().ok())
                .ok_or_else(|| corrupt_raw(key, "device key without a device id"))?;
            out.push(DeviceId::from_bytes(id).map_err(|e| corrupt_raw(key, &e.to_string()))?);
        }
    }
}

async fn put_marker(store: &dyn Store, key: Key) -> Result<(), StorageError> {
    let mut batch = Batch::new();
    batch
        .put(key, Vec::new(), Precondition::Any)
        .map_err(StorageError::backend)?;
    store.commit(batch).await.map(drop)
}

fn corrupt(key: &Key, reason: &str) -> StorageError {
    corrupt_raw(key.as_bytes(), reason)
}

fn corrupt_raw(key: &[u8], reason: &str) -> StorageError {
    StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.to_owned(),
    }
}
