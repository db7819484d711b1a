//! The device service: `ks.devices(realm)` — groups, devices, group keys,
//! presence and the event stream.

use super::{
    DEFAULT_KEY_GENERATIONS, DEFAULT_PRESENCE_WINDOW_SECS, Device, DeviceAction, DeviceCount,
    DeviceError, DeviceEvent, DeviceEventType, DevicePresence, DeviceRecord, DeviceStatus,
    EnvelopeRecord, EventRecord, Group, GroupPresence, GroupRecord, KEY_REQUEST_TTL_SECS,
    KeyRequest, KeyRequestRecord, KeyRequestStatus, KeyRotation, KeyVersionInfo, NewGroup,
    PresenceRecord, PushToken, Rotation, StoredGroup, check_envelope, is_online, parse_public_key,
    takes_slot, transition, validate_name, validate_platform, validate_push_token,
};
use crate::error::{Error, ValidationError};
use crate::id::{DeviceId, GroupId, KeyRequestId, RealmId};
use crate::keystead::Context;
use crate::page::{Page, check_limit};
use crate::realm::Realm;
use crate::realm::service::data_prefix;
use crate::store::key::Key;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Duration, Utc};
use futures::stream::{BoxStream, StreamExt};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// How many times a change that compare-and-swaps the group record retries
/// after losing a race. Every change of a group goes through that record,
/// so under contention each round has a winner; this bounds a caller's wait.
const GROUP_RETRIES: usize = 64;
/// Page size of internal scans.
const SCAN_PAGE: usize = 256;
/// The largest accepted device limit (matches the realm setting's bound).
const MAX_DEVICE_LIMIT: u32 = 10_000;
/// The most key generations a group may keep.
const MAX_KEY_GENERATIONS: u32 = 1000;

/// A live stream of a group's events: first the replay after the cursor,
/// then new events as they commit. Ends after the first error.
pub type DeviceEventStream = BoxStream<'static, Result<DeviceEvent, Error>>;

mod keys {
    use super::{DeviceId, GroupId, Key, KeyRequestId, RealmId, data_prefix};

    pub(super) fn group(realm: RealmId, group: GroupId) -> Key {
        data_prefix(realm).push("group").push(group.to_bytes())
    }
    pub(super) fn groups(realm: RealmId) -> Key {
        data_prefix(realm).push("group")
    }
    pub(super) fn data(realm: RealmId, group: GroupId) -> Key {
        data_prefix(realm).push("group-data").push(group.to_bytes())
    }
    pub(super) fn devices(realm: RealmId, group: GroupId) -> Key {
        data(realm, group).push("device")
    }
    pub(super) fn device(realm: RealmId, group: GroupId, device: DeviceId) -> Key {
        devices(realm, group).push(device.to_bytes())
    }
    pub(super) fn fingerprint(realm: RealmId, group: GroupId, fp: &[u8; 32]) -> Key {
        data(realm, group).push("device-key").push(fp)
    }
    pub(super) fn envelopes(realm: RealmId, group: GroupId) -> Key {
        data(realm, group).push("envelope")
    }
    pub(super) fn envelope_version(realm: RealmId, group: GroupId, version: u32) -> Key {
        envelopes(realm, group).push(version.to_be_bytes())
    }
    pub(super) fn envelope(realm: RealmId, group: GroupId, version: u32, device: DeviceId) -> Key {
        envelope_version(realm, group, version).push(device.to_bytes())
    }
    pub(super) fn presences(realm: RealmId, group: GroupId) -> Key {
        data(realm, group).push("presence")
    }
    pub(super) fn presence(realm: RealmId, group: GroupId, device: DeviceId) -> Key {
        presences(realm, group).push(device.to_bytes())
    }
    pub(super) fn key_requests(realm: RealmId, group: GroupId) -> Key {
        data(realm, group).push("key-request")
    }
    pub(super) fn key_request(realm: RealmId, group: GroupId, id: KeyRequestId) -> Key {
        key_requests(realm, group).push(id.to_bytes())
    }
    pub(super) fn events(realm: RealmId, group: GroupId) -> Key {
        data(realm, group).push("event")
    }
    pub(super) fn event(realm: RealmId, group: GroupId, seq: u64) -> Key {
        events(realm, group).push(seq.to_be_bytes())
    }
}

/// One attempt at a change of a group: the loaded group record, the batch
/// being built and the events it will write.
struct GroupTx {
    realm: RealmId,
    stored: StoredGroup,
    version: u64,
    now: DateTime<Utc>,
    batch: Batch,
}

impl GroupTx {
    /// Append an event with the next sequence number.
    fn event(
        &mut self,
        event_type: DeviceEventType,
        device: Option<DeviceId>,
    ) -> Result<(), Error> {
        self.stored.last_seq += 1;
        let event = DeviceEvent {
            seq: self.stored.last_seq,
            event_type,
            group_id: self.stored.group.id,
            device_id: device,
            key_version: self.stored.group.key_version,
            at: self.now,
        };
        let key = keys::event(self.realm, event.group_id, event.seq);
        self.batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &EventRecord::V1(event))?,
            Precondition::Absent,
        )?;
        Ok(())
    }

    /// Put a device record with compare-and-swap on `version` (`None`:
    /// create).
    fn put_device(&mut self, device: &Device, version: Option<u64>) -> Result<(), Error> {
        let key = keys::device(self.realm, device.group_id, device.id);
        self.batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &DeviceRecord::V1(device.clone()))?,
            version.map_or(Precondition::Absent, Precondition::Version),
        )?;
        Ok(())
    }

    /// Store an envelope of `version` for `device`.
    fn put_envelope(
        &mut self,
        device: DeviceId,
        version: u32,
        bytes: Vec<u8>,
    ) -> Result<(), Error> {
        let key = keys::envelope(self.realm, self.stored.group.id, version, device);
        self.batch.put(
            key.clone(),
            record::encode(
                key.as_bytes(),
                &EnvelopeRecord::V1 {
                    envelope: bytes,
                    stored_at: self.now,
                },
            )?,
            Precondition::Any,
        )?;
        Ok(())
    }

    /// Delete every kept envelope of `device`.
    fn delete_envelopes(&mut self, device: DeviceId) -> Result<(), Error> {
        for version in kept_versions(&self.stored.group) {
            self.batch.delete(
                keys::envelope(self.realm, self.stored.group.id, version, device),
                Precondition::Any,
            )?;
        }
        Ok(())
    }

    /// The final batch: everything plus the group record's CAS.
    fn finish(mut self) -> Result<Batch, Error> {
        self.stored.group.updated_at = self.now;
        let key = keys::group(self.realm, self.stored.group.id);
        self.batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &GroupRecord::V1(self.stored))?,
            Precondition::Version(self.version),
        )?;
        Ok(self.batch)
    }
}

/// The key versions whose envelopes a group keeps: the last
/// `key_generations` up to the current one.
fn kept_versions(group: &Group) -> std::ops::RangeInclusive<u32> {
    let first = group
        .key_version
        .saturating_sub(group.key_generations.saturating_sub(1))
        .max(1);
    first..=group.key_version
}

/// Handle for the device groups of one realm; get one with
/// [`Keystead::devices`](crate::Keystead::devices). Cheap to clone.
#[derive(Clone)]
pub struct Devices {
    ctx: Arc<Context>,
    realm: RealmId,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Devices({})", self.realm)
    }
}

/// Outcome of one commit attempt.
enum Attempt {
    Done,
    /// Lost a race on this key; reload and retry.
    Conflict(Vec<u8>),
}

impl Devices {
    pub(crate) fn new(ctx: Arc<Context>, realm: RealmId) -> Self {
        Self { ctx, realm }
    }

    /// The realm this handle is bound to.
    pub fn realm(&self) -> RealmId {
        self.realm
    }

    async fn active_realm(&self) -> Result<Arc<Realm>, Error> {
        crate::realm::service::load_active(&self.ctx, self.realm).await
    }

    async fn try_commit(&self, batch: Batch) -> Result<Attempt, Error> {
        match self.ctx.store.commit(batch).await {
            Ok(_) => Ok(Attempt::Done),
            Err(StorageError::Conflict { key }) => Ok(Attempt::Conflict(key)),
            Err(e) => Err(e.into()),
        }
    }

    async fn load_group(&self, group: GroupId) -> Result<(StoredGroup, u64), Error> {
        let key = keys::group(self.realm, group);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(DeviceError::GroupNotFound)?;
        let GroupRecord::V1(g) = record::decode(key.as_bytes(), &stored.value)?;
        Ok((g, stored.version))
    }

    async fn begin(&self, group: GroupId) -> Result<GroupTx, Error> {
        let (stored, version) = self.load_group(group).await?;
        Ok(GroupTx {
            realm: self.realm,
            stored,
            version,
            now: self.ctx.clock.now(),
            batch: Batch::new(),
        })
    }

    async fn load_device(&self, group: GroupId, device: DeviceId) -> Result<(Device, u64), Error> {
        let key = keys::device(self.realm, group, device);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(DeviceError::NotFound)?;
        let DeviceRecord::V1(d) = record::decode(key.as_bytes(), &stored.value)?;
        Ok((d, stored.version))
    }

    /// Every device of a group with its record version, in id order.
    async fn load_devices(&self, group: GroupId) -> Result<Vec<(Device, u64)>, Error> {
        let prefix = keys::devices(self.realm, group);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self
                .ctx
                .store
                .scan(prefix.as_bytes(), after.as_deref(), SCAN_PAGE)
                .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(out);
            };
            after = Some(last.clone());
            for (key, stored) in &rows {
                let DeviceRecord::V1(d) = record::decode(key, &stored.value)?;
                out.push((d, stored.version));
            }
        }
    }

    // ----- groups -------------------------------------------------------

    /// Create a device group with key version 1 and no devices.
    pub async fn create_group(&self, name: &str, options: NewGroup) -> Result<Group, Error> {
        self.active_realm().await?;
        validate_name("name", name)?;
        if let Some(limit) = options.device_limit {
            check_device_limit(limit)?;
        }
        let key_generations = options.key_generations.unwrap_or(DEFAULT_KEY_GENERATIONS);
        if !(1..=MAX_KEY_GENERATIONS).contains(&key_generations) {
            return Err(ValidationError::new(
                "key_generations",
                format!("1 to {MAX_KEY_GENERATIONS}"),
            )
            .into());
        }
        let now = self.ctx.clock.now();
        let group = Group {
            id: GroupId::generate(now),
            realm: self.realm,
            name: name.to_owned(),
            device_limit: options.device_limit,
            key_version: 1,
            key_generations,
            created_at: now,
            updated_at: now,
        };
        let key = keys::group(self.realm, group.id);
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(
                key.as_bytes(),
                &GroupRecord::V1(StoredGroup {
                    group: group.clone(),
                    device_count: 0,
                    last_seq: 0,
                }),
            )?,
            Precondition::Absent,
        )?;
        self.ctx.store.commit(batch).await?;
        Ok(group)
    }

    /// Get a group.
    pub async fn group(&self, group: GroupId) -> Result<Group, Error> {
        self.active_realm().await?;
        Ok(self.load_group(group).await?.0.group)
    }

    /// Groups in creation order, `limit` (1–1000) at a time; pass the
    /// previous page's `next` to continue.
    pub async fn list_groups(
        &self,
        after: Option<GroupId>,
        limit: usize,
    ) -> Result<Page<Group, GroupId>, Error> {
        self.active_realm().await?;
        let limit = check_limit(limit)?;
        let prefix = keys::groups(self.realm);
        let cursor = after.map(|g| keys::group(self.realm, g).into_bytes());
        let rows = self
            .ctx
            .store
            .scan(prefix.as_bytes(), cursor.as_deref(), limit + 1)
            .await?;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for (key, stored) in rows.iter().take(limit) {
            let GroupRecord::V1(g) = record::decode(key, &stored.value)?;
            items.push(g.group);
        }
        let next = (rows.len() > limit)
            .then(|| items.last().map(|g: &Group| g.id))
            .flatten();
        Ok(Page { items, next })
    }

    /// Set or clear (`None`: follow the realm default) a group's device
    /// limit. Lowering it below the current count refuses new devices
    /// until enough are revoked or removed; existing ones stay.
    pub async fn set_device_limit(
        &self,
        group: GroupId,
        limit: Option<u32>,
    ) -> Result<Group, Error> {
        self.active_realm().await?;
        if let Some(l) = limit {
            check_device_limit(l)?;
        }
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            tx.stored.group.device_limit = limit;
            tx.stored.group.updated_at = tx.now;
            let result = tx.stored.group.clone();
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(result);
            }
        }
        Err(busy(self.realm, group))
    }

    /// Delete a group and everything in it (devices, envelopes, presence,
    /// events). The group record goes first, so from that commit on the
    /// group does not exist for any call; its data is then swept. Returns
    /// the number of data records removed.
    pub async fn delete_group(&self, group: GroupId) -> Result<u64, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let (_, version) = self.load_group(group).await?;
            let mut batch = Batch::new();
            batch.delete(
                keys::group(self.realm, group),
                Precondition::Version(version),
            )?;
            if let Attempt::Done = self.try_commit(batch).await? {
                return self.sweep(&keys::data(self.realm, group)).await;
            }
        }
        Err(busy(self.realm, group))
    }

    async fn sweep(&self, prefix: &Key) -> Result<u64, Error> {
        crate::keystead::sweep(&*self.ctx.store, prefix, None, |_, _| None).await
    }

    /// The group's non-revoked device count against its limit.
    pub async fn device_count(&self, group: GroupId) -> Result<DeviceCount, Error> {
        let realm = self.active_realm().await?;
        let (stored, _) = self.load_group(group).await?;
        let limit = effective_limit(&stored.group, &realm);
        Ok(DeviceCount {
            count: stored.device_count,
            limit,
            limit_reached: stored.device_count >= limit,
        })
    }

    // ----- devices ------------------------------------------------------

    /// Register a device: `Pending`, holding a slot of the group's limit.
    ///
    /// `public_key` must be a valid X25519 public key (32 bytes, not of
    /// small order) not already used by another device of the group.
    /// Fails with `DEVICE_LIMIT_REACHED` when the group is full — decided
    /// by compare-and-swap on the group's counter, so of concurrent
    /// registrations for the last slots exactly as many win as there are
    /// slots.
    pub async fn register(
        &self,
        group: GroupId,
        name: &str,
        platform: &str,
        public_key: &[u8],
    ) -> Result<Device, Error> {
        let realm = self.active_realm().await?;
        validate_name("name", name)?;
        validate_platform("platform", platform)?;
        let public_key = parse_public_key(public_key)?;
        let fp = crate::crypto::sha256(&public_key);
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let limit = effective_limit(&tx.stored.group, &realm);
            if tx.stored.device_count >= limit {
                return Err(DeviceError::LimitReached { limit }.into());
            }
            let fp_key = keys::fingerprint(self.realm, group, &fp);
            if self.ctx.store.get(fp_key.as_bytes()).await?.is_some() {
                return Err(DeviceError::PublicKeyInUse.into());
            }
            let device = Device {
                id: DeviceId::generate(tx.now),
                group_id: group,
                name: name.to_owned(),
                platform: platform.to_owned(),
                public_key,
                status: DeviceStatus::Pending,
                key_version: None,
                push_token: None,
                created_at: tx.now,
                updated_at: tx.now,
                activated_at: None,
                revoked_at: None,
            };
            tx.stored.device_count += 1;
            tx.put_device(&device, None)?;
            tx.batch.put(
                fp_key.clone(),
                device.id.to_bytes().to_vec(),
                Precondition::Absent,
            )?;
            tx.event(DeviceEventType::DeviceRegistered, Some(device.id))?;
            match self.try_commit(tx.finish()?).await? {
                Attempt::Done => return Ok(device),
                Attempt::Conflict(key) if key == fp_key.as_bytes() => {
                    return Err(DeviceError::PublicKeyInUse.into());
                }
                Attempt::Conflict(_) => {}
            }
        }
        Err(busy(self.realm, group))
    }

    /// Get a device of a group (`DEVICE_NOT_FOUND` for a device of another
    /// group).
    pub async fn get(&self, group: GroupId, device: DeviceId) -> Result<Device, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        Ok(self.load_device(group, device).await?.0)
    }

    /// Every device of a group in id order (registration order, to the
    /// millisecond), optionally only
    /// those in `status`.
    pub async fn list(
        &self,
        group: GroupId,
        status: Option<DeviceStatus>,
    ) -> Result<Vec<Device>, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        Ok(self
            .load_devices(group)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| status.is_none_or(|s| d.status == s))
            .collect())
    }

    /// Activate a pending device with `envelope`: the group key of the
    /// current version sealed to the device's public key (checked from the
    /// envelope header; `INVALID_ENVELOPE` otherwise).
    pub async fn activate(
        &self,
        group: GroupId,
        device: DeviceId,
        envelope: &[u8],
    ) -> Result<Device, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let (mut d, version) = self.load_device(group, device).await?;
            let next = transition(d.status, DeviceAction::Activate)?;
            let current = tx.stored.group.key_version;
            check_envelope(&d, current, envelope)?;
            d.status = next.unwrap_or(DeviceStatus::Active);
            d.key_version = Some(current);
            d.activated_at = Some(tx.now);
            d.updated_at = tx.now;
            tx.put_envelope(device, current, envelope.to_vec())?;
            tx.put_device(&d, Some(version))?;
            tx.event(DeviceEventType::DeviceActivated, Some(device))?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(d);
            }
        }
        Err(busy(self.realm, group))
    }

    /// Revoke a device (administrator). It frees its slot, keeps its record
    /// for audit and never receives another envelope. With `rotation`, the
    /// group key is rotated in the same commit: `rotation` must hold one
    /// envelope of the next version for every *other* active device, and
    /// the result is returned; without, `None`.
    pub async fn revoke(
        &self,
        group: GroupId,
        device: DeviceId,
        rotation: Option<Rotation>,
    ) -> Result<Option<KeyRotation>, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let devices = if rotation.is_some() {
                self.load_devices(group).await?
            } else {
                vec![self.load_device(group, device).await?]
            };
            let Some((mut d, version)) = devices.iter().find(|(d, _)| d.id == device).cloned()
            else {
                return Err(DeviceError::NotFound.into());
            };
            transition(d.status, DeviceAction::Revoke)?;
            if takes_slot(d.status) {
                tx.stored.device_count = tx.stored.device_count.saturating_sub(1);
            }
            d.status = DeviceStatus::Revoked;
            d.revoked_at = Some(tx.now);
            d.updated_at = tx.now;
            tx.event(DeviceEventType::DeviceRevoked, Some(device))?;
            let result = match &rotation {
                Some(r) => {
                    let others: Vec<_> = devices
                        .into_iter()
                        .filter(|(o, _)| o.id != device)
                        .collect();
                    Some(self.plan_rotation(&mut tx, &others, r).await?)
                }
                None => None,
            };
            tx.put_device(&d, Some(version))?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(result);
            }
        }
        Err(busy(self.realm, group))
    }

    /// Remove a device (administrator): its record, public-key index entry,
    /// presence and envelopes are deleted in one commit, freeing its slot if
    /// it held one.
    pub async fn remove(&self, group: GroupId, device: DeviceId) -> Result<(), Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let (d, version) = self.load_device(group, device).await?;
            transition(d.status, DeviceAction::Remove)?;
            if takes_slot(d.status) {
                tx.stored.device_count = tx.stored.device_count.saturating_sub(1);
            }
            tx.batch.delete(
                keys::device(self.realm, group, device),
                Precondition::Version(version),
            )?;
            tx.batch.delete(
                keys::fingerprint(self.realm, group, &d.fingerprint().0),
                Precondition::Any,
            )?;
            tx.batch
                .delete(keys::presence(self.realm, group, device), Precondition::Any)?;
            tx.delete_envelopes(device)?;
            tx.event(DeviceEventType::DeviceRemoved, Some(device))?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(());
            }
        }
        Err(busy(self.realm, group))
    }

    /// Replace a device's public key. Its envelopes (sealed to the old key)
    /// are deleted in the same commit, so it holds no key until one is
    /// shared to the new key; [`key_version_info`](Self::key_version_info)
    /// reports `needs_update`.
    pub async fn update_public_key(
        &self,
        group: GroupId,
        device: DeviceId,
        public_key: &[u8],
    ) -> Result<Device, Error> {
        self.active_realm().await?;
        let public_key = parse_public_key(public_key)?;
        let new_fp = crate::crypto::sha256(&public_key);
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let (mut d, version) = self.load_device(group, device).await?;
            transition(d.status, DeviceAction::UpdateKey)?;
            if d.public_key == public_key {
                return Ok(d);
            }
            let new_index = keys::fingerprint(self.realm, group, &new_fp);
            tx.batch.delete(
                keys::fingerprint(self.realm, group, &d.fingerprint().0),
                Precondition::Any,
            )?;
            tx.batch.put(
                new_index.clone(),
                device.to_bytes().to_vec(),
                Precondition::Absent,
            )?;
            tx.delete_envelopes(device)?;
            d.public_key = public_key;
            d.key_version = None;
            d.updated_at = tx.now;
            tx.put_device(&d, Some(version))?;
            tx.event(DeviceEventType::DeviceKeyUpdated, Some(device))?;
            match self.try_commit(tx.finish()?).await? {
                Attempt::Done => return Ok(d),
                Attempt::Conflict(key) if key == new_index.as_bytes() => {
                    return Err(DeviceError::PublicKeyInUse.into());
                }
                Attempt::Conflict(_) => {}
            }
        }
        Err(busy(self.realm, group))
    }

    /// Set a device's push token (platform and token validated).
    pub async fn set_push_token(
        &self,
        group: GroupId,
        device: DeviceId,
        token: PushToken,
    ) -> Result<Device, Error> {
        validate_push_token(&token)?;
        self.modify_device(group, device, |d| d.push_token = Some(token.clone()))
            .await
    }

    /// Clear a device's push token.
    pub async fn clear_push_token(
        &self,
        group: GroupId,
        device: DeviceId,
    ) -> Result<Device, Error> {
        self.modify_device(group, device, |d| d.push_token = None)
            .await
    }

    async fn modify_device(
        &self,
        group: GroupId,
        device: DeviceId,
        change: impl Fn(&mut Device),
    ) -> Result<Device, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        for _ in 0..GROUP_RETRIES {
            let (mut d, version) = self.load_device(group, device).await?;
            change(&mut d);
            d.updated_at = self.ctx.clock.now();
            let key = keys::device(self.realm, group, device);
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &DeviceRecord::V1(d.clone()))?,
                Precondition::Version(version),
            )?;
            if let Attempt::Done = self.try_commit(batch).await? {
                return Ok(d);
            }
        }
        Err(busy(self.realm, group))
    }

    /// Record a heartbeat: the device was seen now. Writes only the
    /// device's presence record, so heartbeats never contend with state
    /// changes of the device or the group.
    pub async fn heartbeat(&self, group: GroupId, device: DeviceId) -> Result<(), Error> {
        self.active_realm().await?;
        self.load_device(group, device).await?;
        let now = self.ctx.clock.now();
        let key = keys::presence(self.realm, group, device);
        let mut batch = Batch::new();
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &PresenceRecord::V1 { last_seen: now })?,
            Precondition::Any,
        )?;
        // No precondition on the device record: a heartbeat racing a removal
        // may leave a presence record behind, which is harmless (presence is
        // read per listed device) and swept with the group.
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Presence of every device of the group: `online` when the last
    /// heartbeat is within `window` (default
    /// [`DEFAULT_PRESENCE_WINDOW_SECS`]) of now.
    pub async fn presence(
        &self,
        group: GroupId,
        window: Option<Duration>,
    ) -> Result<GroupPresence, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        let window = window.unwrap_or(Duration::seconds(DEFAULT_PRESENCE_WINDOW_SECS));
        let now = self.ctx.clock.now();
        let devices = self.load_devices(group).await?;
        let prefix = keys::presences(self.realm, group);
        let mut seen: BTreeMap<Vec<u8>, DateTime<Utc>> = BTreeMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self
                .ctx
                .store
                .scan(prefix.as_bytes(), after.as_deref(), SCAN_PAGE)
                .await?;
            let Some((last, _)) = rows.last() else { break };
            after = Some(last.clone());
            for (key, stored) in rows {
                let PresenceRecord::V1 { last_seen } = record::decode(&key, &stored.value)?;
                seen.insert(key, last_seen);
            }
        }
        let devices: Vec<DevicePresence> = devices
            .into_iter()
            .map(|(d, _)| {
                let last_seen = seen
                    .get(keys::presence(self.realm, group, d.id).as_bytes())
                    .copied();
                DevicePresence {
                    device_id: d.id,
                    name: d.name,
                    status: d.status,
                    last_seen,
                    online: is_online(last_seen, now, window),
                }
            })
            .collect();
        let online_count = devices.iter().filter(|d| d.online).count();
        Ok(GroupPresence {
            group_id: group,
            devices,
            online_count,
        })
    }

    // ----- group keys ---------------------------------------------------

    /// Rotate the group key from `rotation.expected_version` to the next
    /// version, storing one envelope per active device, all in one commit.
    ///
    /// Fails with `KEY_VERSION_CONFLICT` (carrying the current version) when
    /// another rotation got there first — of concurrent rotations from the
    /// same version exactly one wins — with `ENVELOPE_SET_MISMATCH` listing
    /// the devices when the envelopes are not exactly one per active
    /// device, and with `INVALID_ENVELOPE` when one is malformed, of the
    /// wrong version or addressed to another key. Nothing is written on
    /// failure. Envelopes of versions older than the group's
    /// `key_generations` are dropped in the same commit.
    pub async fn rotate(&self, group: GroupId, rotation: Rotation) -> Result<KeyRotation, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let devices = self.load_devices(group).await?;
            let result = self.plan_rotation(&mut tx, &devices, &rotation).await?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(result);
            }
        }
        Err(busy(self.realm, group))
    }

    /// Add a rotation to `tx`: the pure checks, then the writes.
    async fn plan_rotation(
        &self,
        tx: &mut GroupTx,
        devices: &[(Device, u64)],
        rotation: &Rotation,
    ) -> Result<KeyRotation, Error> {
        let current = tx.stored.group.key_version;
        if rotation.expected_version != current {
            return Err(DeviceError::KeyVersionConflict { current }.into());
        }
        let next = current
            .checked_add(1)
            .ok_or_else(|| ValidationError::new("expected_version", "no version after u32::MAX"))?;
        let active: BTreeMap<DeviceId, &(Device, u64)> = devices
            .iter()
            .filter(|(d, _)| d.status == DeviceStatus::Active)
            .map(|entry| (entry.0.id, entry))
            .collect();
        let mut given: BTreeMap<DeviceId, &[u8]> = BTreeMap::new();
        let mut duplicate = BTreeSet::new();
        let mut extra = BTreeSet::new();
        for (id, bytes) in &rotation.envelopes {
            if given.insert(*id, bytes).is_some() {
                duplicate.insert(*id);
            }
            if !active.contains_key(id) {
                extra.insert(*id);
            }
        }
        let missing: Vec<DeviceId> = active
            .keys()
            .filter(|id| !given.contains_key(id))
            .copied()
            .collect();
        if !missing.is_empty() || !extra.is_empty() || !duplicate.is_empty() {
            return Err(DeviceError::EnvelopeSetMismatch {
                missing,
                extra: extra.into_iter().collect(),
                duplicate: duplicate.into_iter().collect(),
            }
            .into());
        }
        for (id, (d, _)) in &active {
            check_envelope(d, next, given.get(id).copied().unwrap_or_default())?;
        }
        // Prune the generation that falls out of the kept window.
        let keep = tx.stored.group.key_generations;
        if let Some(dropped) = next.checked_sub(keep).filter(|v| *v >= 1) {
            let prefix = keys::envelope_version(self.realm, tx.stored.group.id, dropped);
            let mut after: Option<Vec<u8>> = None;
            loop {
                let rows = self
                    .ctx
                    .store
                    .scan(prefix.as_bytes(), after.as_deref(), SCAN_PAGE)
                    .await?;
                let Some((last, _)) = rows.last() else { break };
                after = Some(last.clone());
                for (key, _) in rows {
                    tx.batch.delete(key, Precondition::Any)?;
                }
            }
        }
        for (id, (d, version)) in &active {
            let mut d = d.clone();
            d.key_version = Some(next);
            d.updated_at = tx.now;
            tx.put_device(&d, Some(*version))?;
            let bytes = given.get(id).copied().unwrap_or_default().to_vec();
            tx.put_envelope(*id, next, bytes)?;
        }
        tx.stored.group.key_version = next;
        tx.event(DeviceEventType::KeyRotated, None)?;
        Ok(KeyRotation {
            previous_version: current,
            new_version: next,
            envelopes: active.len(),
        })
    }

    /// The group's current key version against the device's.
    pub async fn key_version_info(
        &self,
        group: GroupId,
        device: DeviceId,
    ) -> Result<KeyVersionInfo, Error> {
        self.active_realm().await?;
        let (g, _) = self.load_group(group).await?;
        let (d, _) = self.load_device(group, device).await?;
        let current = g.group.key_version;
        Ok(KeyVersionInfo {
            current_version: current,
            device_version: d.key_version,
            needs_update: takes_slot(d.status) && d.key_version != Some(current),
        })
    }

    /// The device's envelope of the current key version
    /// (`NO_KEY_AVAILABLE` when it has none, e.g. revoked, pending, or its
    /// public key changed since).
    pub async fn device_key(&self, group: GroupId, device: DeviceId) -> Result<Vec<u8>, Error> {
        self.active_realm().await?;
        let (g, _) = self.load_group(group).await?;
        self.device_key_at(group, device, g.group.key_version).await
    }

    /// The device's envelope of an older key version, while the group keeps
    /// that generation.
    pub async fn device_key_at(
        &self,
        group: GroupId,
        device: DeviceId,
        version: u32,
    ) -> Result<Vec<u8>, Error> {
        self.active_realm().await?;
        let (d, _) = self.load_device(group, device).await?;
        if d.status == DeviceStatus::Revoked {
            return Err(DeviceError::NoKeyAvailable.into());
        }
        let key = keys::envelope(self.realm, group, version, device);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(DeviceError::NoKeyAvailable)?;
        let EnvelopeRecord::V1 { envelope, .. } = record::decode(key.as_bytes(), &stored.value)?;
        Ok(envelope)
    }

    // ----- key requests -------------------------------------------------

    async fn load_request(
        &self,
        group: GroupId,
        id: KeyRequestId,
    ) -> Result<(KeyRequest, u64), Error> {
        let key = keys::key_request(self.realm, group, id);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(DeviceError::KeyRequestNotFound)?;
        let KeyRequestRecord::V1(r) = record::decode(key.as_bytes(), &stored.value)?;
        Ok((r, stored.version))
    }

    async fn device_status(
        &self,
        group: GroupId,
        device: DeviceId,
    ) -> Result<Option<(Device, u64)>, Error> {
        match self.load_device(group, device).await {
            Ok(found) => Ok(Some(found)),
            Err(Error::Device(DeviceError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A device that lacks the current key asks the group's active devices
    /// for it. The requester must be pending or active; the request is
    /// grantable for [`KEY_REQUEST_TTL_SECS`].
    pub async fn create_key_request(
        &self,
        group: GroupId,
        device: DeviceId,
    ) -> Result<KeyRequest, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let (d, version) = self.load_device(group, device).await?;
            if !takes_slot(d.status) {
                return Err(DeviceError::InvalidTransition {
                    from: d.status,
                    action: DeviceAction::ReceiveKey,
                }
                .into());
            }
            let request = KeyRequest {
                id: KeyRequestId::generate(tx.now),
                group_id: group,
                device_id: device,
                key_version: tx.stored.group.key_version,
                status: KeyRequestStatus::Pending,
                created_at: tx.now,
                expires_at: tx.now + Duration::seconds(KEY_REQUEST_TTL_SECS),
                resolved_at: None,
                resolved_by: None,
            };
            let key = keys::key_request(self.realm, group, request.id);
            tx.batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &KeyRequestRecord::V1(request.clone()))?,
                Precondition::Absent,
            )?;
            // The requester must still be in the state we checked.
            tx.batch.check(
                keys::device(self.realm, group, device),
                Precondition::Version(version),
            )?;
            tx.event(DeviceEventType::KeyRequestCreated, Some(device))?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(request);
            }
        }
        Err(busy(self.realm, group))
    }

    /// The group's pending key requests (expired ones and those of revoked
    /// or removed requesters left out), oldest first.
    pub async fn key_requests(&self, group: GroupId) -> Result<Vec<KeyRequest>, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        let now = self.ctx.clock.now();
        let statuses: BTreeMap<DeviceId, DeviceStatus> = self
            .load_devices(group)
            .await?
            .into_iter()
            .map(|(d, _)| (d.id, d.status))
            .collect();
        let prefix = keys::key_requests(self.realm, group);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = self
                .ctx
                .store
                .scan(prefix.as_bytes(), after.as_deref(), SCAN_PAGE)
                .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(out);
            };
            after = Some(last.clone());
            for (key, stored) in &rows {
                let KeyRequestRecord::V1(r) = record::decode(key, &stored.value)?;
                let requester = statuses.get(&r.device_id).copied();
                let r = r.at(now, requester);
                if r.status == KeyRequestStatus::Pending {
                    out.push(r);
                }
            }
        }
    }

    /// One key request, with its status as of now.
    pub async fn key_request(&self, group: GroupId, id: KeyRequestId) -> Result<KeyRequest, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        let (r, _) = self.load_request(group, id).await?;
        let requester = self.device_status(group, r.device_id).await?;
        Ok(r.at(self.ctx.clock.now(), requester.map(|(d, _)| d.status)))
    }

    /// Grant a pending key request: `granter` (an active device of the
    /// group) hands the requester `envelope`, the current group key sealed
    /// to the requester's public key (checked as in activation). A pending
    /// requester becomes active. Granting a request that is not pending
    /// (granted, rejected, expired, cancelled) is `KEY_REQUEST_NOT_PENDING`.
    pub async fn grant_key_request(
        &self,
        group: GroupId,
        id: KeyRequestId,
        granter: DeviceId,
        envelope: &[u8],
    ) -> Result<KeyRequest, Error> {
        self.resolve_key_request(group, id, granter, Some(envelope))
            .await
    }

    /// Reject a pending key request (`by` must be an active device of the
    /// group).
    pub async fn reject_key_request(
        &self,
        group: GroupId,
        id: KeyRequestId,
        by: DeviceId,
    ) -> Result<KeyRequest, Error> {
        self.resolve_key_request(group, id, by, None).await
    }

    async fn resolve_key_request(
        &self,
        group: GroupId,
        id: KeyRequestId,
        by: DeviceId,
        envelope: Option<&[u8]>,
    ) -> Result<KeyRequest, Error> {
        self.active_realm().await?;
        for _ in 0..GROUP_RETRIES {
            let mut tx = self.begin(group).await?;
            let (request, request_version) = self.load_request(group, id).await?;
            let requester = self.device_status(group, request.device_id).await?;
            let view = request
                .clone()
                .at(tx.now, requester.as_ref().map(|(d, _)| d.status));
            if view.status != KeyRequestStatus::Pending {
                return Err(DeviceError::KeyRequestNotPending {
                    status: view.status,
                }
                .into());
            }
            let (acting, acting_version) = self.load_device(group, by).await?;
            if acting.status != DeviceStatus::Active {
                return Err(DeviceError::NotActive { device: by }.into());
            }
            let Some((mut d, device_version)) = requester else {
                return Err(DeviceError::NotFound.into());
            };
            let mut resolved = request;
            resolved.resolved_at = Some(tx.now);
            resolved.resolved_by = Some(by);
            if let Some(envelope) = envelope {
                let action = if d.status == DeviceStatus::Pending {
                    DeviceAction::Activate
                } else {
                    DeviceAction::ReceiveKey
                };
                let next = transition(d.status, action)?;
                let current = tx.stored.group.key_version;
                check_envelope(&d, current, envelope)?;
                if d.status == DeviceStatus::Pending {
                    d.activated_at = Some(tx.now);
                    tx.event(DeviceEventType::DeviceActivated, Some(d.id))?;
                }
                d.status = next.unwrap_or(d.status);
                d.key_version = Some(current);
                d.updated_at = tx.now;
                tx.put_envelope(d.id, current, envelope.to_vec())?;
                tx.put_device(&d, Some(device_version))?;
                resolved.status = KeyRequestStatus::Granted;
                tx.event(DeviceEventType::KeyRequestGranted, Some(d.id))?;
            } else {
                tx.batch.check(
                    keys::device(self.realm, group, d.id),
                    Precondition::Version(device_version),
                )?;
                resolved.status = KeyRequestStatus::Rejected;
                tx.event(DeviceEventType::KeyRequestRejected, Some(d.id))?;
            }
            if by != d.id {
                tx.batch.check(
                    keys::device(self.realm, group, by),
                    Precondition::Version(acting_version),
                )?;
            }
            let key = keys::key_request(self.realm, group, id);
            tx.batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &KeyRequestRecord::V1(resolved.clone()))?,
                Precondition::Version(request_version),
            )?;
            if let Attempt::Done = self.try_commit(tx.finish()?).await? {
                return Ok(resolved);
            }
        }
        Err(busy(self.realm, group))
    }

    // ----- events -------------------------------------------------------

    /// A group's events with sequence greater than `after_seq` (0: from the
    /// start), at most `limit` (1–1000).
    pub async fn events(
        &self,
        group: GroupId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<DeviceEvent>, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        let limit = check_limit(limit)?;
        read_events(&self.ctx, self.realm, group, after_seq, limit).await
    }

    /// Subscribe to a group's events after `after_seq` (0: from the start;
    /// the SSE `Last-Event-ID` of a reconnecting client). The stream replays
    /// the stored events in sequence order, then follows new commits
    /// through [`Store::watch`](crate::store::Store::watch): a client that
    /// resumes from the last sequence it saw misses nothing and sees
    /// nothing twice. The stream never ends on its own; drop it to
    /// unsubscribe. Filter by `device_id` for device-specific events.
    pub async fn subscribe(
        &self,
        group: GroupId,
        after_seq: u64,
    ) -> Result<DeviceEventStream, Error> {
        self.active_realm().await?;
        self.load_group(group).await?;
        let prefix = keys::events(self.realm, group);
        // Watch first, then read: a commit after this line wakes us.
        let watch = self.ctx.store.watch(prefix.as_bytes()).await?;
        let state = Subscription {
            ctx: Arc::clone(&self.ctx),
            realm: self.realm,
            group,
            cursor: after_seq,
            buffer: VecDeque::new(),
            watch,
            scanned: false,
        };
        Ok(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            match state.next().await {
                Ok(event) => Some((Ok(event), Some(state))),
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed())
    }

    /// [`subscribe`](Self::subscribe) narrowed to the events a device
    /// cares about (the seed's optional `deviceId`): those about `device`
    /// and group-wide ones (rotations). Sequence numbers still come from
    /// the group, so resuming works the same way.
    pub async fn subscribe_device(
        &self,
        group: GroupId,
        device: DeviceId,
        after_seq: u64,
    ) -> Result<DeviceEventStream, Error> {
        let stream = self.subscribe(group, after_seq).await?;
        Ok(stream
            .filter(move |item| {
                let keep = match item {
                    Ok(event) => event.device_id.is_none_or(|d| d == device),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed())
    }
}

/// The state of a live subscription.
struct Subscription {
    ctx: Arc<Context>,
    realm: RealmId,
    group: GroupId,
    cursor: u64,
    buffer: VecDeque<DeviceEvent>,
    watch: crate::store::watch::Watch,
    /// Whether the last scan was made after the last wake-up.
    scanned: bool,
}

impl Subscription {
    async fn next(&mut self) -> Result<DeviceEvent, Error> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.cursor = event.seq;
                return Ok(event);
            }
            if self.scanned {
                self.watch.changed().await?;
            }
            let events =
                read_events(&self.ctx, self.realm, self.group, self.cursor, SCAN_PAGE).await?;
            // A full page may have more behind it: scan again before waiting.
            self.scanned = events.len() < SCAN_PAGE;
            self.buffer.extend(events);
        }
    }
}

async fn read_events(
    ctx: &Context,
    realm: RealmId,
    group: GroupId,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<DeviceEvent>, Error> {
    let prefix = keys::events(realm, group);
    let cursor = keys::event(realm, group, after_seq);
    let rows = ctx
        .store
        .scan(prefix.as_bytes(), Some(cursor.as_bytes()), limit)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (key, stored) in rows {
        let EventRecord::V1(event) = record::decode(&key, &stored.value)?;
        out.push(event);
    }
    Ok(out)
}

fn effective_limit(group: &Group, realm: &Realm) -> u32 {
    group
        .device_limit
        .unwrap_or(realm.settings.default_device_limit)
}

fn check_device_limit(limit: u32) -> Result<(), ValidationError> {
    if (1..=MAX_DEVICE_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "device_limit",
            format!("1 to {MAX_DEVICE_LIMIT}"),
        ))
    }
}

/// The error after every retry lost its race.
fn busy(realm: RealmId, group: GroupId) -> Error {
    StorageError::Conflict {
        key: keys::group(realm, group).into_bytes(),
    }
    .into()
}
