//! Device groups, the device lifecycle, device limits, end-to-end-encrypted
//! group keys with versioned rotation, presence, push tokens and the
//! per-group event stream.
//!
//! Get a handle bound to one realm with
//! [`Keystead::devices`](crate::Keystead::devices); every call checks first
//! that the realm exists and is active.
//!
//! # Model
//!
//! A **group** owns a symmetric group key that keystead never sees: member
//! devices hold it, sealed to each device's X25519 public key in an HPKE
//! envelope ([`crypto::envelope`](crate::crypto::envelope)). keystead stores
//! the envelopes, checks each one's header (recipient fingerprint and key
//! version) with `envelope::inspect`, and enforces who may hold which
//! version.
//!
//! A **device** moves through the states of [`transition`]: it registers
//! `Pending`, becomes `Active` once some member hands it an envelope of the
//! current key version, and may be revoked (keeping its record for audit) or
//! removed (deleting it and its envelopes).
//!
//! # Storage
//!
//! Every key lives under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `group/<group>` | `GroupRecord`: the group, its key version, non-revoked device count and last event sequence (CAS) |
//! | `group-data/<group>/device/<device>` | `DeviceRecord` (CAS) |
//! | `group-data/<group>/device-key/<fingerprint>` | the device id: one device per public key and group (`Absent`) |
//! | `group-data/<group>/envelope/<version u32 BE>/<device>` | `EnvelopeRecord`: the device's sealed group key of that version |
//! | `group-data/<group>/presence/<device>` | `PresenceRecord`: last heartbeat, kept apart so heartbeats never contend with state changes |
//! | `group-data/<group>/key-request/<request>` | `KeyRequestRecord` (CAS) |
//! | `group-data/<group>/event/<seq u64 BE>` | `EventRecord`: the outbox [`subscribe`](Devices::subscribe) replays |
//!
//! Every change that writes an event compare-and-swaps the group record,
//! which carries the device counter and the event sequence: admission under
//! the limit and gap-free sequences are therefore decided by the same
//! `Version` precondition, in the same batch as the change.

#[cfg(test)]
mod model_tests;
pub(crate) mod service;

pub use crate::id::{DeviceId, GroupId, KeyRequestId};
pub use service::{DeviceEventStream, Devices};

use crate::crypto::{CryptoError, DevicePublicKey, KeyFingerprint, envelope};
use crate::error::ValidationError;
use crate::id::RealmId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Longest group or device name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest platform label (`ios`, `android`, `web`, …), in bytes.
pub const MAX_PLATFORM_LEN: usize = 32;
/// Longest push token, in bytes (APNs tokens are 64 hex characters, FCM
/// registration tokens up to a few hundred bytes).
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;
/// How many key generations a group keeps unless configured otherwise: the
/// current one and the two before it.
pub const DEFAULT_KEY_GENERATIONS: u32 = 3;
/// A device whose last heartbeat is at most this old counts as online,
/// unless [`Devices::presence`] is given another window.
pub const DEFAULT_PRESENCE_WINDOW_SECS: i64 = 60;
/// How long a key request stays grantable (24 hours).
pub const KEY_REQUEST_TTL_SECS: i64 = 24 * 3600;

/// A device group of a realm: the unit that shares one group key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Stable id.
    #[serde(rename = "groupId")]
    pub id: GroupId,
    /// The realm the group belongs to.
    pub realm: RealmId,
    /// A free-form name (1 to [`MAX_NAME_CHARS`] characters).
    pub name: String,
    /// Per-group device limit; `None` follows the realm's
    /// `default_device_limit`.
    pub device_limit: Option<u32>,
    /// The current group key version; 1 at creation, +1 per rotation.
    pub key_version: u32,
    /// How many key versions keep their envelopes (the current one
    /// included), so devices can still decrypt data of older versions.
    pub key_generations: u32,
    /// When the group was created.
    pub created_at: DateTime<Utc>,
    /// When the group last changed.
    pub updated_at: DateTime<Utc>,
}

/// Options of a new group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroup {
    /// Device limit override (1 to 10000); `None` uses the realm default.
    pub device_limit: Option<u32>,
    /// Key generations to keep (1 to 1000); `None` uses
    /// [`DEFAULT_KEY_GENERATIONS`].
    pub key_generations: Option<u32>,
}

/// A group's stored state: the group plus the admission counter and the
/// event sequence, both moved only by compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredGroup {
    pub(crate) group: Group,
    /// Devices that are not revoked (pending + active).
    pub(crate) device_count: u32,
    /// Sequence of the last event written; 0 before the first.
    pub(crate) last_seq: u64,
}

/// Versioned encoding of [`StoredGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum GroupRecord {
    V1(StoredGroup),
}

/// Where a device is in its lifecycle; see [`transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Registered; waits for an envelope of the current key version.
    Pending,
    /// Holds (or is owed, see `needs_update`) the group key.
    Active,
    /// Shut out by an administrator; kept for audit, never receives keys.
    Revoked,
}

impl DeviceStatus {
    /// The lower-case name front-ends see (`pending`, `active`, `revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked => "revoked",
        }
    }
}

/// A push-notification registration of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushToken {
    /// The push service (`apns`, `fcm`, `webpush`, …; 1 to
    /// [`MAX_PLATFORM_LEN`] bytes).
    pub platform: String,
    /// The service's token (1 to [`MAX_PUSH_TOKEN_LEN`] bytes).
    pub token: String,
}

/// A device as front-ends see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Stable id.
    #[serde(rename = "deviceId")]
    pub id: DeviceId,
    /// The group it belongs to.
    pub group_id: GroupId,
    /// A free-form name (1 to [`MAX_NAME_CHARS`] characters).
    pub name: String,
    /// The device platform (`ios`, `android`, `web`, …).
    pub platform: String,
    /// The device's X25519 public key (RFC 7748 encoding); standard base64
    /// in JSON and other human-readable formats, raw bytes in records.
    #[serde(with = "public_key_serde")]
    pub public_key: [u8; 32],
    /// Lifecycle state.
    pub status: DeviceStatus,
    /// The newest key version the device holds an envelope for; `None`
    /// before activation and after a public-key change.
    pub key_version: Option<u32>,
    /// Push-notification registration, if any.
    pub push_token: Option<PushToken>,
    /// When the device registered.
    pub created_at: DateTime<Utc>,
    /// When the device record last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was activated, if it was.
    pub activated_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Device {
    /// The fingerprint envelopes addressed to this device carry.
    pub fn fingerprint(&self) -> KeyFingerprint {
        // The key was validated at registration; re-parsing cannot fail
        // for stored keys, and the fingerprint does not depend on parsing.
        KeyFingerprint(crate::crypto::sha256(&self.public_key))
    }
}

/// Public keys as base64 for front-ends, fixed bytes for storage.
mod public_key_serde {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(key: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&STANDARD.encode(key))
        } else {
            key.serialize(s)
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let bytes = STANDARD
                .decode(text.as_bytes())
                .map_err(|e| D::Error::custom(format!("publicKey is not base64: {e}")))?;
            bytes
                .try_into()
                .map_err(|_| D::Error::custom("publicKey must be 32 bytes"))
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

/// Versioned encoding of [`Device`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum DeviceRecord {
    V1(Device),
}

/// A stored envelope (the device's group key of one version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EnvelopeRecord {
    V1 {
        envelope: Vec<u8>,
        stored_at: DateTime<Utc>,
    },
}

/// A device's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PresenceRecord {
    V1 { last_seen: DateTime<Utc> },
}

/// What happened, as carried by a [`DeviceEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEventType {
    /// A device registered (pending).
    DeviceRegistered,
    /// A device was activated with the current key.
    DeviceActivated,
    /// A device was revoked.
    DeviceRevoked,
    /// A device was removed.
    DeviceRemoved,
    /// A device changed its public key and needs the key re-shared.
    DeviceKeyUpdated,
    /// The group key was rotated (`key_version` is the new version).
    KeyRotated,
    /// A device asked for the current group key.
    KeyRequestCreated,
    /// A key request was granted (the requester now holds the key).
    KeyRequestGranted,
    /// A key request was rejected.
    KeyRequestRejected,
}

/// One entry of a group's event outbox (an SSE message on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEvent {
    /// Per-group sequence: 1, 2, 3, … without gaps (the SSE event id).
    pub seq: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: DeviceEventType,
    /// The group.
    pub group_id: GroupId,
    /// The device concerned, if one is.
    pub device_id: Option<DeviceId>,
    /// The group key version after the change.
    pub key_version: u32,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Versioned encoding of [`DeviceEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EventRecord {
    V1(DeviceEvent),
}

/// Device count of a group against its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCount {
    /// Devices that are not revoked (pending and active).
    pub count: u32,
    /// The group's effective limit.
    pub limit: u32,
    /// Whether another registration would be refused.
    pub limit_reached: bool,
}

/// The group key version against what a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionInfo {
    /// The group's current key version.
    pub current_version: u32,
    /// The newest version the device holds an envelope for.
    pub device_version: Option<u32>,
    /// Whether the device lacks an envelope of the current version.
    pub needs_update: bool,
}

/// The result of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// The version before the rotation.
    pub previous_version: u32,
    /// The new current version.
    pub new_version: u32,
    /// How many envelopes were stored.
    pub envelopes: usize,
}

/// A rotation request: the version the caller rotates from and one envelope
/// of version `expected_version + 1` per active device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Must equal the group's current version, else `KEY_VERSION_CONFLICT`.
    pub expected_version: u32,
    /// `(device, envelope)` for every active device, nothing else.
    pub envelopes: Vec<(DeviceId, Vec<u8>)>,
}

/// A device's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePresence {
    /// The device.
    pub device_id: DeviceId,
    /// Its name.
    pub name: String,
    /// Its lifecycle state.
    pub status: DeviceStatus,
    /// Last heartbeat, if any.
    pub last_seen: Option<DateTime<Utc>>,
    /// Whether the last heartbeat is within the presence window of `now`
    /// (computed on read, never stored).
    pub online: bool,
}

/// Presence of a group's devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupPresence {
    /// The group.
    pub group_id: GroupId,
    /// Every device of the group, in id order.
    pub devices: Vec<DevicePresence>,
    /// How many are online.
    pub online_count: usize,
}

/// Where a key request is. `Expired` and `Cancelled` are computed on read
/// from `now` and the requester's state, never written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyRequestStatus {
    /// Waiting for an active device to grant or reject it.
    Pending,
    /// An active device shared the key with the requester.
    Granted,
    /// An active device refused it.
    Rejected,
    /// Not resolved within [`KEY_REQUEST_TTL_SECS`].
    Expired,
    /// The requester was revoked or removed before it was resolved.
    Cancelled,
}

impl KeyRequestStatus {
    /// The lower-case name front-ends see.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRequestStatus::Pending => "pending",
            KeyRequestStatus::Granted => "granted",
            KeyRequestStatus::Rejected => "rejected",
            KeyRequestStatus::Expired => "expired",
            KeyRequestStatus::Cancelled => "cancelled",
        }
    }
}

/// A device's request to receive the current group key from another
/// member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRequest {
    /// Stable id.
    #[serde(rename = "requestId")]
    pub id: KeyRequestId,
    /// The group.
    pub group_id: GroupId,
    /// The requesting device.
    pub device_id: DeviceId,
    /// The group key version current when the request was made.
    pub key_version: u32,
    /// Where the request is (see [`KeyRequestStatus`]).
    pub status: KeyRequestStatus,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being grantable.
    pub expires_at: DateTime<Utc>,
    /// When it was granted or rejected.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The active device that granted or rejected it.
    pub resolved_by: Option<DeviceId>,
}

impl KeyRequest {
    /// The request as seen at `now` by a requester in `requester` state
    /// (`None`: removed): a pending request past its expiry is `Expired`,
    /// one whose requester is revoked or gone is `Cancelled`.
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>, requester: Option<DeviceStatus>) -> Self {
        if self.status == KeyRequestStatus::Pending {
            if !requester.is_some_and(takes_slot) {
                self.status = KeyRequestStatus::Cancelled;
            } else if now >= self.expires_at {
                self.status = KeyRequestStatus::Expired;
            }
        }
        self
    }
}

/// Versioned encoding of [`KeyRequest`] (stored with the written status:
/// pending, granted or rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyRequestRecord {
    V1(KeyRequest),
}

/// Why a device or group-key operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// No group with that id in this realm.
    #[error("group not found")]
    GroupNotFound,
    /// No device with that id in this group.
    #[error("device not found")]
    NotFound,
    /// The group already has `limit` non-revoked devices.
    #[error("device limit of {limit} reached")]
    LimitReached {
        /// The group's effective limit.
        limit: u32,
    },
    /// The caller's expected key version is not the current one.
    #[error("key version conflict: the current version is {current}")]
    KeyVersionConflict {
        /// The group's current key version.
        current: u32,
    },
    /// The lifecycle does not allow this action from the device's state.
    #[error("cannot {action} a {} device", from.as_str())]
    InvalidTransition {
        /// The device's state.
        from: DeviceStatus,
        /// The refused action.
        action: DeviceAction,
    },
    /// The device holds no envelope of the requested version.
    #[error("no key available for this device")]
    NoKeyAvailable,
    /// An envelope is malformed, addressed to another key, or of the wrong
    /// version.
    #[error("invalid envelope for device {device}: {reason}")]
    InvalidEnvelope {
        /// The device it was meant for.
        device: DeviceId,
        /// What is wrong.
        reason: String,
    },
    /// A rotation's envelopes are not exactly one per active device.
    #[error(
        "rotation envelopes do not match the active devices: missing {missing:?}, extra {extra:?}, duplicate {duplicate:?}"
    )]
    EnvelopeSetMismatch {
        /// Active devices without an envelope.
        missing: Vec<DeviceId>,
        /// Envelopes for devices that are unknown, of another group, or
        /// not active.
        extra: Vec<DeviceId>,
        /// Devices given more than one envelope.
        duplicate: Vec<DeviceId>,
    },
    /// Another device of the group has this public key.
    #[error("public key already registered in this group")]
    PublicKeyInUse,
    /// The device must be active for this (granting or rejecting key
    /// requests).
    #[error("device {device} is not active")]
    NotActive {
        /// The device.
        device: DeviceId,
    },
    /// No key request with that id in this group.
    #[error("key request not found")]
    KeyRequestNotFound,
    /// The key request was already granted or rejected, expired, or its
    /// requester was revoked or removed.
    #[error("key request is {}, not pending", status.as_str())]
    KeyRequestNotPending {
        /// The request's state.
        status: KeyRequestStatus,
    },
}

impl DeviceError {
    /// The stable code of this error (see [`crate::Error::code`]).
    pub fn code(&self) -> &'static str {
        match self {
            DeviceError::GroupNotFound => "GROUP_NOT_FOUND",
            DeviceError::NotFound => "DEVICE_NOT_FOUND",
            DeviceError::LimitReached { .. } => "DEVICE_LIMIT_REACHED",
            DeviceError::KeyVersionConflict { .. } => "KEY_VERSION_CONFLICT",
            DeviceError::InvalidTransition { .. } => "INVALID_TRANSITION",
            DeviceError::NoKeyAvailable => "NO_KEY_AVAILABLE",
            DeviceError::InvalidEnvelope { .. } => "INVALID_ENVELOPE",
            DeviceError::EnvelopeSetMismatch { .. } => "ENVELOPE_SET_MISMATCH",
            DeviceError::PublicKeyInUse => "PUBLIC_KEY_IN_USE",
            DeviceError::NotActive { .. } => "DEVICE_NOT_ACTIVE",
            DeviceError::KeyRequestNotFound => "KEY_REQUEST_NOT_FOUND",
            DeviceError::KeyRequestNotPending { .. } => "KEY_REQUEST_NOT_PENDING",
        }
    }
}

/// An action of the device lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceAction {
    /// Activate with an envelope of the current key version.
    Activate,
    /// Revoke (administrator).
    Revoke,
    /// Remove with its envelopes (administrator).
    Remove,
    /// Receive an envelope (rotation, key request grant).
    ReceiveKey,
    /// Replace the device's public key (drops its envelopes).
    UpdateKey,
}

impl std::fmt::Display for DeviceAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceAction::Activate => "activate",
            DeviceAction::Revoke => "revoke",
            DeviceAction::Remove => "remove",
            DeviceAction::ReceiveKey => "give a key to",
            DeviceAction::UpdateKey => "change the public key of",
        })
    }
}

/// The device lifecycle as one pure function: the state after `action`
/// from `from`, `None` meaning the device no longer exists.
///
/// Registration creates a device in `Pending` (no prior state); every other
/// action needs an existing device:
///
/// | from \ action | activate | revoke | remove | receive key | update key |
/// |---|---|---|---|---|---|
/// | `Pending` | `Active` | `Revoked` | gone | error (activate first) | `Pending` |
/// | `Active` | error | `Revoked` | gone | `Active` | `Active` |
/// | `Revoked` | error | error | gone | error | error |
///
/// "error" is [`DeviceError::InvalidTransition`]. Admission effects
/// (the non-revoked counter) follow from the table: `Pending`/`Active` →
/// `Revoked` and `Pending`/`Active` → gone free a slot.
pub fn transition(
    from: DeviceStatus,
    action: DeviceAction,
) -> Result<Option<DeviceStatus>, DeviceError> {
    use DeviceAction as A;
    use DeviceStatus as S;
    match (from, action) {
        (S::Pending, A::Activate) | (S::Active, A::ReceiveKey) => Ok(Some(S::Active)),
        (S::Pending | S::Active, A::Revoke) => Ok(Some(S::Revoked)),
        (_, A::Remove) => Ok(None),
        (S::Pending | S::Active, A::UpdateKey) => Ok(Some(from)),
        (S::Active | S::Revoked, A::Activate)
        | (S::Revoked, A::Revoke | A::UpdateKey)
        | (S::Pending | S::Revoked, A::ReceiveKey) => {
            Err(DeviceError::InvalidTransition { from, action })
        }
    }
}

/// Whether a device in `status` holds one of the group's admission slots.
pub fn takes_slot(status: DeviceStatus) -> bool {
    !matches!(status, DeviceStatus::Revoked)
}

/// Check that `bytes` is an envelope of `version` addressed to `device`'s
/// public key (header only: keystead cannot and does not open it).
pub fn check_envelope(device: &Device, version: u32, bytes: &[u8]) -> Result<(), DeviceError> {
    let invalid = |reason: String| DeviceError::InvalidEnvelope {
        device: device.id,
        reason,
    };
    let header = envelope::inspect(bytes).map_err(|e: CryptoError| invalid(e.to_string()))?;
    if header.recipient != device.fingerprint() {
        return Err(invalid(
            "addressed to another public key than the device's".into(),
        ));
    }
    if header.key_version != version {
        return Err(invalid(format!(
            "sealed for key version {}, expected {version}",
            header.key_version
        )));
    }
    Ok(())
}

/// Check an X25519 public key from a front-end.
pub(crate) fn parse_public_key(bytes: &[u8]) -> Result<[u8; 32], ValidationError> {
    DevicePublicKey::from_bytes(bytes)
        .map(|k| k.to_bytes())
        .map_err(|e| ValidationError::new("public_key", e.to_string()))
}

/// Check a free-form name.
pub(crate) fn validate_name(field: &'static str, name: &str) -> Result<(), ValidationError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ValidationError::new(
            field,
            format!("1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "no control characters"));
    }
    Ok(())
}

/// Check a platform label: 1 to [`MAX_PLATFORM_LEN`] bytes of ASCII
/// letters, digits, `-`, `_`, `.`.
pub(crate) fn validate_platform(field: &'static str, p: &str) -> Result<(), ValidationError> {
    if p.is_empty()
        || p.len() > MAX_PLATFORM_LEN
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ValidationError::new(
            field,
            format!("1 to {MAX_PLATFORM_LEN} ASCII letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

/// Check a push token.
pub(crate) fn validate_push_token(token: &PushToken) -> Result<(), ValidationError> {
    validate_platform("push_token.platform", &token.platform)?;
    if token.token.is_empty() || token.token.len() > MAX_PUSH_TOKEN_LEN {
        return Err(ValidationError::new(
            "push_token.token",
            format!("1 to {MAX_PUSH_TOKEN_LEN} bytes"),
        ));
    }
    if token
        .token
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ValidationError::new(
            "push_token.token",
            "no whitespace or control characters",
        ));
    }
    Ok(())
}

/// Whether a heartbeat at `last_seen` counts as online at `now`.
pub fn is_online(last_seen: Option<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> bool {
    last_seen.is_some_and(|seen| seen <= now + Duration::seconds(5) && now - seen <= window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        use DeviceAction as A;
        use DeviceStatus as S;
        let ok = [
            (S::Pending, A::Activate, Some(S::Active)),
            (S::Pending, A::Revoke, Some(S::Revoked)),
            (S::Active, A::Revoke, Some(S::Revoked)),
            (S::Pending, A::Remove, None),
            (S::Active, A::Remove, None),
            (S::Revoked, A::Remove, None),
            (S::Active, A::ReceiveKey, Some(S::Active)),
            (S::Pending, A::UpdateKey, Some(S::Pending)),
            (S::Active, A::UpdateKey, Some(S::Active)),
        ];
        for (from, action, to) in ok {
            assert_eq!(transition(from, action), Ok(to), "{from:?} {action:?}");
        }
        let refused = [
            (S::Active, A::Activate),
            (S::Revoked, A::Activate),
            (S::Revoked, A::Revoke),
            (S::Pending, A::ReceiveKey),
            (S::Revoked, A::ReceiveKey),
            (S::Revoked, A::UpdateKey),
        ];
        for (from, action) in refused {
            let err = transition(from, action).unwrap_err();
            assert_eq!(err, DeviceError::InvalidTransition { from, action });
            assert_eq!(err.code(), "INVALID_TRANSITION");
        }
    }

    #[test]
    fn key_request_status_is_computed() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |n: u8| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, n,
            ]
        };
        let request = KeyRequest {
            id: KeyRequestId::from_bytes(id(4)).unwrap(),
            group_id: GroupId::from_bytes(id(2)).unwrap(),
            device_id: DeviceId::from_bytes(id(3)).unwrap(),
            key_version: 1,
            status: KeyRequestStatus::Pending,
            created_at: at,
            expires_at: at + Duration::seconds(10),
            resolved_at: None,
            resolved_by: None,
        };
        let status = |now, dev| request.clone().at(now, dev).status;
        assert_eq!(
            status(at, Some(DeviceStatus::Pending)),
            KeyRequestStatus::Pending
        );
        assert_eq!(
            status(at + Duration::seconds(10), Some(DeviceStatus::Active)),
            KeyRequestStatus::Expired
        );
        assert_eq!(
            status(at, Some(DeviceStatus::Revoked)),
            KeyRequestStatus::Cancelled
        );
        assert_eq!(status(at, None), KeyRequestStatus::Cancelled);
    }

    #[test]
    fn json_field_names_match_the_seed() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |n: u8| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, n,
            ]
        };
        let device = Device {
            id: DeviceId::from_bytes(id(3)).unwrap(),
            group_id: GroupId::from_bytes(id(2)).unwrap(),
            name: "ph".into(),
            platform: "ios".into(),
            public_key: [7; 32],
            status: DeviceStatus::Active,
            key_version: Some(2),
            push_token: None,
            created_at: at,
            updated_at: at,
            activated_at: None,
            revoked_at: None,
        };
        let json = serde_json::to_value(&device).unwrap();
        for field in [
            "deviceId",
            "groupId",
            "publicKey",
            "keyVersion",
            "pushToken",
            "createdAt",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
        assert_eq!(json["status"], "active");
        assert_eq!(
            json["publicKey"],
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
        );
        let back: Device = serde_json::from_value(json).unwrap();
        assert_eq!(back, device);
        let count = serde_json::to_value(DeviceCount {
            count: 1,
            limit: 2,
            limit_reached: false,
        })
        .unwrap();
        assert_eq!(count["limitReached"], false);
        let info = serde_json::to_value(KeyVersionInfo {
            current_version: 2,
            device_version: Some(1),
            needs_update: true,
        })
        .unwrap();
        assert_eq!(info["needsUpdate"], true);
        assert_eq!(info["currentVersion"], 2);
    }

    #[test]
    fn presence_window() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let w = Duration::seconds(60);
        assert!(!is_online(None, now, w));
        assert!(is_online(Some(now - Duration::seconds(60)), now, w));
        assert!(!is_online(Some(now - Duration::seconds(61)), now, w));
    }

    #[test]
    fn validation() {
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(validate_name("name", "a\nb").is_err());
        assert!(validate_name("name", "Phone").is_ok());
        assert!(validate_platform("platform", "ios").is_ok());
        assert!(validate_platform("platform", "i os").is_err());
        let long = PushToken {
            platform: "apns".into(),
            token: "a".repeat(MAX_PUSH_TOKEN_LEN + 1),
        };
        assert!(validate_push_token(&long).is_err());
        assert!(parse_public_key(&[0u8; 32]).is_err());
        assert!(parse_public_key(&[9u8; 31]).is_err());
    }

    #[test]
    fn record_golden_bytes() {
        use crate::store::record::assert_golden;
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |n: u8| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, n,
            ]
        };
        let realm = RealmId::from_bytes(id(1)).unwrap();
        let group = GroupId::from_bytes(id(2)).unwrap();
        let device = DeviceId::from_bytes(id(3)).unwrap();
        assert_golden(
            &GroupRecord::V1(StoredGroup {
                group: Group {
                    id: group,
                    realm,
                    name: "fam".into(),
                    device_limit: Some(5),
                    key_version: 2,
                    key_generations: 3,
                    created_at: at,
                    updated_at: at,
                },
                device_count: 4,
                last_seq: 300,
            }),
            "010010018bcfe568007000800000000000000210018bcfe56800700080000000000000010366616d0105020314323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a04ac02",
        );
        assert_golden(
            &DeviceRecord::V1(Device {
                id: device,
                group_id: group,
                name: "ph".into(),
                platform: "ios".into(),
                public_key: [7; 32],
                status: DeviceStatus::Active,
                key_version: Some(2),
                push_token: Some(PushToken {
                    platform: "apns".into(),
                    token: "t".into(),
                }),
                created_at: at,
                updated_at: at,
                activated_at: Some(at),
                revoked_at: None,
            }),
            "010010018bcfe568007000800000000000000310018bcfe568007000800000000000000202706803696f730707070707070707070707070707070707070707070707070707070707070707010102010461706e73017414323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a0114323032332d31312d31345432323a31333a32305a00",
        );
        assert_golden(
            &EnvelopeRecord::V1 {
                envelope: vec![1, 2, 3],
                stored_at: at,
            },
            "01000301020314323032332d31312d31345432323a31333a32305a",
        );
        assert_golden(
            &PresenceRecord::V1 { last_seen: at },
            "010014323032332d31312d31345432323a31333a32305a",
        );
        assert_golden(
            &KeyRequestRecord::V1(KeyRequest {
                id: KeyRequestId::from_bytes(id(4)).unwrap(),
                group_id: group,
                device_id: device,
                key_version: 2,
                status: KeyRequestStatus::Granted,
                created_at: at,
                expires_at: at,
                resolved_at: Some(at),
                resolved_by: Some(device),
            }),
            "010010018bcfe568007000800000000000000410018bcfe568007000800000000000000210018bcfe5680070008000000000000003020114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a0114323032332d31312d31345432323a31333a32305a0110018bcfe5680070008000000000000003",
        );
        assert_golden(
            &EventRecord::V1(DeviceEvent {
                seq: 7,
                event_type: DeviceEventType::KeyRotated,
                group_id: group,
                device_id: Some(device),
                key_version: 3,
                at,
            }),
            "0100070510018bcfe56800700080000000000000020110018bcfe56800700080000000000000030314323032332d31312d31345432323a31333a32305a",
        );
    }
}
