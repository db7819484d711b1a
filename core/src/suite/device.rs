//! Device group, lifecycle, limit, rotation, presence and event cases.

// Each case is one scenario read top to bottom, with short member names.
#![allow(clippy::too_many_lines, clippy::many_single_char_names)]

use super::keystead;
use crate::Error;
use crate::crypto::envelope::{self, EnvelopeContext};
use crate::crypto::{DevicePublicKey, DeviceSecretKey};
use crate::device::{
    Device, DeviceAction, DeviceError, DeviceEvent, DeviceEventType, DeviceStatus, Devices, Group,
    KeyRequestStatus, NewGroup, PushToken, Rotation,
};
use crate::id::{DeviceId, GroupId, RealmId};
use crate::realm::{RealmError, RealmSettings};
use crate::secret::SecretBytes;
use crate::store::conformance::Harness;
use chrono::Duration;
use futures::StreamExt;
use std::time::Duration as StdDuration;

/// A device key pair kept by the test (the front-end's side).
struct Member {
    secret: DeviceSecretKey,
    device: Device,
}

fn new_key() -> DeviceSecretKey {
    DeviceSecretKey::generate().expect("a random device key")
}

fn group_key(byte: u8) -> SecretBytes {
    SecretBytes::new(vec![byte; 32])
}

/// Seal `key` of `version` to `device` in `group`, as a front-end would.
fn seal(
    realm: RealmId,
    group: GroupId,
    version: u32,
    device: &Device,
    key: &SecretBytes,
) -> Vec<u8> {
    let pk = DevicePublicKey::from_bytes(&device.public_key).expect("stored key parses");
    envelope::seal(
        key,
        &pk,
        &EnvelopeContext {
            realm,
            group,
            key_version: version,
            recipient: device.id,
        },
    )
    .expect("seal")
}

async fn setup(
    h: &Harness,
    limit: Option<u32>,
) -> (Devices, RealmId, Group, crate::clock::ManualClock) {
    let (ks, clock) = keystead(h).await;
    let realm = ks
        .realms()
        .create("acme", RealmSettings::default())
        .await
        .unwrap();
    let devices = ks.devices(realm.id);
    let group = devices
        .create_group(
            "family",
            NewGroup {
                device_limit: limit,
                ..NewGroup::default()
            },
        )
        .await
        .unwrap();
    (devices, realm.id, group, clock)
}

/// Register and activate a device with the group key of `version`.
async fn join(
    devices: &Devices,
    group: &Group,
    version: u32,
    key: &SecretBytes,
    name: &str,
) -> Member {
    let secret = new_key();
    let device = devices
        .register(group.id, name, "ios", &secret.public_key().to_bytes())
        .await
        .unwrap();
    let env = seal(devices.realm(), group.id, version, &device, key);
    let device = devices.activate(group.id, device.id, &env).await.unwrap();
    Member { secret, device }
}

fn rotation_for(
    realm: RealmId,
    group: GroupId,
    from: u32,
    members: &[&Device],
    key: &SecretBytes,
) -> Rotation {
    Rotation {
        expected_version: from,
        envelopes: members
            .iter()
            .map(|d| (d.id, seal(realm, group, from + 1, d, key)))
            .collect(),
    }
}

fn device_err(result: Result<impl std::fmt::Debug, Error>) -> DeviceError {
    match result {
        Err(Error::Device(e)) => e,
        other => panic!("expected a device error, got {other:?}"),
    }
}

/// Groups: create, get, list in pages, limits, delete sweeps the data.
pub async fn groups_create_list_and_delete(h: Harness) {
    let (devices, _realm, family, clock) = setup(&h, None).await;
    clock.advance(Duration::milliseconds(5));
    let work = devices
        .create_group(
            "work",
            NewGroup {
                device_limit: Some(3),
                key_generations: Some(2),
            },
        )
        .await
        .unwrap();
    assert_eq!(family.key_version, 1);
    assert_eq!(devices.group(work.id).await.unwrap(), work);
    let page = devices.list_groups(None, 1).await.unwrap();
    assert_eq!(page.items, vec![family.clone()]);
    let page = devices.list_groups(page.next, 1).await.unwrap();
    assert_eq!(page.items, vec![work.clone()]);
    assert_eq!(page.next, None);

    let count = devices.device_count(family.id).await.unwrap();
    assert_eq!(
        (count.count, count.limit, count.limit_reached),
        (0, 10, false)
    );
    let count = devices.device_count(work.id).await.unwrap();
    assert_eq!(count.limit, 3);
    let changed = devices.set_device_limit(family.id, Some(1)).await.unwrap();
    assert_eq!(changed.device_limit, Some(1));

    for bad in [
        NewGroup {
            device_limit: Some(0),
            ..NewGroup::default()
        },
        NewGroup {
            key_generations: Some(0),
            ..NewGroup::default()
        },
    ] {
        assert!(matches!(
            devices.create_group("x", bad).await,
            Err(Error::Validation(_))
        ));
    }
    assert!(matches!(
        devices.create_group("", NewGroup::default()).await,
        Err(Error::Validation(_))
    ));

    let key = group_key(1);
    join(&devices, &work, 1, &key, "phone").await;
    assert!(devices.delete_group(work.id).await.unwrap() >= 3);
    assert_eq!(
        device_err(devices.group(work.id).await),
        DeviceError::GroupNotFound
    );
    assert_eq!(
        device_err(devices.list(work.id, None).await),
        DeviceError::GroupNotFound
    );
}

/// The lifecycle on a real store: register → pending, activate with a
/// checked envelope, refused transitions, revoke, remove.
pub async fn lifecycle_and_envelope_checks(h: Harness) {
    let (devices, realm, group, _) = setup(&h, None).await;
    let key = group_key(7);
    let secret = new_key();
    let pending = devices
        .register(group.id, "Phone", "ios", &secret.public_key().to_bytes())
        .await
        .unwrap();
    assert_eq!(pending.status, DeviceStatus::Pending);
    assert_eq!(devices.get(group.id, pending.id).await.unwrap(), pending);

    // Bad public keys and names are validation errors.
    for bad in [&[0u8; 32][..], &[9u8; 31][..]] {
        assert!(matches!(
            devices.register(group.id, "x", "ios", bad).await,
            Err(Error::Validation(_))
        ));
    }
    assert!(matches!(
        devices
            .register(
                group.id,
                &"n".repeat(200),
                "ios",
                &new_key().public_key().to_bytes()
            )
            .await,
        Err(Error::Validation(_))
    ));
    // One device per public key and group.
    assert_eq!(
        device_err(
            devices
                .register(group.id, "dup", "ios", &secret.public_key().to_bytes())
                .await
        ),
        DeviceError::PublicKeyInUse
    );

    // Envelopes: wrong version, wrong recipient, garbage.
    let wrong_version = seal(realm, group.id, 2, &pending, &key);
    assert!(matches!(
        device_err(devices.activate(group.id, pending.id, &wrong_version).await),
        DeviceError::InvalidEnvelope { .. }
    ));
    let other = devices
        .register(
            group.id,
            "Laptop",
            "macos",
            &new_key().public_key().to_bytes(),
        )
        .await
        .unwrap();
    let to_other = seal(realm, group.id, 1, &other, &key);
    assert!(matches!(
        device_err(devices.activate(group.id, pending.id, &to_other).await),
        DeviceError::InvalidEnvelope { device, .. } if device == pending.id
    ));
    assert!(matches!(
        device_err(devices.activate(group.id, pending.id, b"junk").await),
        DeviceError::InvalidEnvelope { .. }
    ));
    assert_eq!(
        devices.get(group.id, pending.id).await.unwrap().status,
        DeviceStatus::Pending,
        "refused activations write nothing"
    );

    let env = seal(realm, group.id, 1, &pending, &key);
    let active = devices.activate(group.id, pending.id, &env).await.unwrap();
    assert_eq!(active.status, DeviceStatus::Active);
    assert_eq!(active.key_version, Some(1));
    let stored = devices.device_key(group.id, active.id).await.unwrap();
    let opened = envelope::open(
        &stored,
        &secret,
        &EnvelopeContext {
            realm,
            group: group.id,
            key_version: 1,
            recipient: active.id,
        },
    )
    .unwrap();
    assert_eq!(opened.expose(), key.expose());
    assert_eq!(
        device_err(devices.activate(group.id, active.id, &env).await),
        DeviceError::InvalidTransition {
            from: DeviceStatus::Active,
            action: DeviceAction::Activate
        }
    );
    let info = devices.key_version_info(group.id, active.id).await.unwrap();
    assert_eq!(
        (info.current_version, info.device_version, info.needs_update),
        (1, Some(1), false)
    );
    assert_eq!(
        device_err(devices.device_key(group.id, other.id).await),
        DeviceError::NoKeyAvailable
    );

    // Revoke without rotation, then the refused transitions.
    assert_eq!(
        devices.revoke(group.id, active.id, None).await.unwrap(),
        None
    );
    let revoked = devices.get(group.id, active.id).await.unwrap();
    assert_eq!(revoked.status, DeviceStatus::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(
        device_err(devices.activate(group.id, active.id, &env).await),
        DeviceError::InvalidTransition {
            from: DeviceStatus::Revoked,
            action: DeviceAction::Activate
        }
    );
    assert!(matches!(
        device_err(devices.revoke(group.id, active.id, None).await),
        DeviceError::InvalidTransition { .. }
    ));
    assert_eq!(
        device_err(devices.device_key(group.id, active.id).await),
        DeviceError::NoKeyAvailable
    );
    assert_eq!(devices.device_count(group.id).await.unwrap().count, 1);

    // Remove: gone, slot freed, removing again is NotFound.
    devices.remove(group.id, other.id).await.unwrap();
    assert_eq!(
        device_err(devices.get(group.id, other.id).await),
        DeviceError::NotFound
    );
    assert_eq!(
        device_err(devices.revoke(group.id, other.id, None).await),
        DeviceError::NotFound
    );
    assert_eq!(devices.device_count(group.id).await.unwrap().count, 0);
    devices.remove(group.id, active.id).await.unwrap();
    assert_eq!(devices.list(group.id, None).await.unwrap(), vec![]);

    // Unknown ids and devices of another group.
    let second = devices
        .create_group("second", NewGroup::default())
        .await
        .unwrap();
    let stranger = join(&devices, &second, 1, &key, "s").await;
    assert_eq!(
        device_err(devices.get(group.id, stranger.device.id).await),
        DeviceError::NotFound
    );
    assert_eq!(
        device_err(
            devices
                .get(GroupId::generate(chrono::Utc::now()), stranger.device.id)
                .await
        ),
        DeviceError::GroupNotFound
    );
}

/// 20 concurrent registrations into a group with 5 free slots: exactly 5
/// succeed; the counter and the device list agree.
pub async fn limit_holds_under_concurrency(h: Harness) {
    let (devices, _, group, _) = setup(&h, Some(7)).await;
    for i in 0..2 {
        devices
            .register(
                group.id,
                &format!("d{i}"),
                "ios",
                &new_key().public_key().to_bytes(),
            )
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let devices = devices.clone();
            let pk = new_key().public_key().to_bytes();
            tokio::spawn(async move {
                devices
                    .register(group.id, &format!("c{i}"), "android", &pk)
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(Error::Device(DeviceError::LimitReached { limit: 7 })) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 5);
    let count = devices.device_count(group.id).await.unwrap();
    assert_eq!(
        (count.count, count.limit, count.limit_reached),
        (7, 7, true)
    );
    assert_eq!(devices.list(group.id, None).await.unwrap().len(), 7);

    // Revoking frees a slot; the revoked device still lists.
    let first = devices.list(group.id, None).await.unwrap()[0].clone();
    devices.revoke(group.id, first.id, None).await.unwrap();
    assert_eq!(devices.device_count(group.id).await.unwrap().count, 6);
    devices
        .register(group.id, "late", "web", &new_key().public_key().to_bytes())
        .await
        .unwrap();
    assert_eq!(
        device_err(
            devices
                .register(group.id, "later", "web", &new_key().public_key().to_bytes())
                .await
        ),
        DeviceError::LimitReached { limit: 7 }
    );
    assert_eq!(
        devices
            .list(group.id, Some(DeviceStatus::Revoked))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Rotation: exactly one envelope per active device or nothing is written;
/// replayed versions, foreign recipients and cross-group envelopes are
/// refused; the new version opens; revoked devices get nothing new.
pub async fn rotation_is_all_or_nothing(h: Harness) {
    let (devices, realm, group, _) = setup(&h, None).await;
    let k1 = group_key(1);
    let a = join(&devices, &group, 1, &k1, "a").await;
    let b = join(&devices, &group, 1, &k1, "b").await;
    let c = join(&devices, &group, 1, &k1, "c").await;
    let pending = devices
        .register(group.id, "p", "ios", &new_key().public_key().to_bytes())
        .await
        .unwrap();
    let k2 = group_key(2);
    let events_before = devices.events(group.id, 0, 100).await.unwrap().len();

    // Omit one active device: typed error naming it; nothing written.
    let partial = rotation_for(realm, group.id, 1, &[&a.device, &b.device], &k2);
    assert_eq!(
        device_err(devices.rotate(group.id, partial).await),
        DeviceError::EnvelopeSetMismatch {
            missing: vec![c.device.id],
            extra: vec![],
            duplicate: vec![]
        }
    );
    // A pending device is extra; a duplicate is named.
    let mut bad = rotation_for(
        realm,
        group.id,
        1,
        &[&a.device, &b.device, &c.device, &pending],
        &k2,
    );
    bad.envelopes.push(bad.envelopes[0].clone());
    assert_eq!(
        device_err(devices.rotate(group.id, bad).await),
        DeviceError::EnvelopeSetMismatch {
            missing: vec![],
            extra: vec![pending.id],
            duplicate: vec![a.device.id]
        }
    );
    // The envelope of version n replayed as n + 1.
    let mut replay = rotation_for(realm, group.id, 1, &[&a.device, &b.device, &c.device], &k2);
    replay.envelopes[1].1 = devices.device_key(group.id, b.device.id).await.unwrap();
    assert!(matches!(
        device_err(devices.rotate(group.id, replay).await),
        DeviceError::InvalidEnvelope { device, .. } if device == b.device.id
    ));
    // An envelope addressed to another device (foreign recipient).
    let mut foreign = rotation_for(realm, group.id, 1, &[&a.device, &b.device, &c.device], &k2);
    foreign.envelopes[2].1 = seal(realm, group.id, 2, &a.device, &k2);
    assert!(matches!(
        device_err(devices.rotate(group.id, foreign).await),
        DeviceError::InvalidEnvelope { device, .. } if device == c.device.id
    ));
    // An envelope sealed for a device of another group.
    let other_group = devices
        .create_group("other", NewGroup::default())
        .await
        .unwrap();
    let outsider = join(&devices, &other_group, 1, &k1, "o").await;
    let mut cross = rotation_for(realm, group.id, 1, &[&a.device, &b.device, &c.device], &k2);
    cross.envelopes[0].1 = seal(realm, other_group.id, 2, &outsider.device, &k2);
    assert!(matches!(
        device_err(devices.rotate(group.id, cross).await),
        DeviceError::InvalidEnvelope { .. }
    ));
    cross = rotation_for(realm, group.id, 1, &[&a.device, &b.device, &c.device], &k2);
    cross.envelopes.push((
        outsider.device.id,
        seal(realm, group.id, 2, &outsider.device, &k2),
    ));
    assert!(matches!(
        device_err(devices.rotate(group.id, cross).await),
        DeviceError::EnvelopeSetMismatch { extra, .. } if extra == vec![outsider.device.id]
    ));
    // Nothing of the refused rotations is stored.
    assert_eq!(devices.group(group.id).await.unwrap().key_version, 1);
    assert_eq!(
        devices.events(group.id, 0, 100).await.unwrap().len(),
        events_before
    );
    assert_eq!(
        device_err(devices.device_key_at(group.id, a.device.id, 2).await),
        DeviceError::NoKeyAvailable
    );

    // Stale version.
    let stale = rotation_for(realm, group.id, 0, &[&a.device, &b.device, &c.device], &k2);
    assert_eq!(
        device_err(devices.rotate(group.id, stale).await),
        DeviceError::KeyVersionConflict { current: 1 }
    );

    // Revoke c with a rotation in the same commit.
    let with_rotation = rotation_for(realm, group.id, 1, &[&a.device, &b.device], &k2);
    let result = devices
        .revoke(group.id, c.device.id, Some(with_rotation))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            result.previous_version,
            result.new_version,
            result.envelopes
        ),
        (1, 2, 2)
    );
    let info = devices
        .key_version_info(group.id, b.device.id)
        .await
        .unwrap();
    assert_eq!(
        (info.current_version, info.device_version, info.needs_update),
        (2, Some(2), false)
    );
    let env = devices.device_key(group.id, b.device.id).await.unwrap();
    let ctx = EnvelopeContext {
        realm,
        group: group.id,
        key_version: 2,
        recipient: b.device.id,
    };
    assert_eq!(
        envelope::open(&env, &b.secret, &ctx).unwrap().expose(),
        k2.expose()
    );
    // The revoked device has nothing of version 2, keeps nothing readable.
    assert_eq!(
        device_err(devices.device_key_at(group.id, c.device.id, 2).await),
        DeviceError::NoKeyAvailable
    );
    // Old generation still readable by members.
    assert!(
        devices
            .device_key_at(group.id, a.device.id, 1)
            .await
            .is_ok()
    );
    // A pending device now needs the version-2 key to activate.
    let old = seal(realm, group.id, 1, &pending, &k1);
    assert!(matches!(
        device_err(devices.activate(group.id, pending.id, &old).await),
        DeviceError::InvalidEnvelope { .. }
    ));
    let fresh = seal(realm, group.id, 2, &pending, &k2);
    devices
        .activate(group.id, pending.id, &fresh)
        .await
        .unwrap();
}

/// Concurrent rotations from the same version: exactly one wins, the others
/// get KEY_VERSION_CONFLICT with the new version.
pub async fn concurrent_rotations_have_one_winner(h: Harness) {
    let (devices, realm, group, _) = setup(&h, None).await;
    let k1 = group_key(1);
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(
            join(&devices, &group, 1, &k1, &format!("m{i}"))
                .await
                .device,
        );
    }
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let devices = devices.clone();
            let refs: Vec<&Device> = members.iter().collect();
            let rotation = rotation_for(realm, group.id, 1, &refs, &group_key(10 + i));
            tokio::spawn(async move { devices.rotate(group.id, rotation).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(r) => {
                winners += 1;
                assert_eq!(r.new_version, 2);
            }
            Err(Error::Device(DeviceError::KeyVersionConflict { current: 2 })) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);
    let events = devices.events(group.id, 0, 100).await.unwrap();
    let rotations = events
        .iter()
        .filter(|e| e.event_type == DeviceEventType::KeyRotated)
        .count();
    assert_eq!(rotations, 1);
}

/// Only `key_generations` versions keep their envelopes.
pub async fn old_generations_are_pruned(h: Harness) {
    let (ks, _) = keystead(&h).await;
    let realm = ks
        .realms()
        .create("acme", RealmSettings::default())
        .await
        .unwrap();
    let devices = ks.group_keys(realm.id);
    let group = devices
        .create_group(
            "g",
            NewGroup {
                key_generations: Some(2),
                ..NewGroup::default()
            },
        )
        .await
        .unwrap();
    let m = join(&devices, &group, 1, &group_key(1), "m").await;
    for v in 1..=3u32 {
        let r = rotation_for(
            realm.id,
            group.id,
            v,
            &[&m.device],
            &group_key(1 + u8::try_from(v).unwrap()),
        );
        devices.rotate(group.id, r).await.unwrap();
    }
    assert_eq!(devices.group(group.id).await.unwrap().key_version, 4);
    assert!(
        devices
            .device_key_at(group.id, m.device.id, 4)
            .await
            .is_ok()
    );
    assert!(
        devices
            .device_key_at(group.id, m.device.id, 3)
            .await
            .is_ok()
    );
    for gone in [1, 2] {
        assert_eq!(
            device_err(devices.device_key_at(group.id, m.device.id, gone).await),
            DeviceError::NoKeyAvailable
        );
    }
}

/// Heartbeats, presence computed from now, push tokens, public-key update.
pub async fn presence_push_tokens_and_public_keys(h: Harness) {
    let (devices, realm, group, clock) = setup(&h, None).await;
    let k1 = group_key(1);
    let a = join(&devices, &group, 1, &k1, "a").await;
    let b = join(&devices, &group, 1, &k1, "b").await;
    devices.heartbeat(group.id, a.device.id).await.unwrap();
    clock.advance(Duration::seconds(30));
    devices.heartbeat(group.id, b.device.id).await.unwrap();
    let p = devices.presence(group.id, None).await.unwrap();
    assert_eq!(p.online_count, 2);
    clock.advance(Duration::seconds(40));
    let p = devices.presence(group.id, None).await.unwrap();
    assert_eq!(p.online_count, 1);
    let online = |id: DeviceId| p.devices.iter().find(|d| d.device_id == id).unwrap().online;
    assert!(!online(a.device.id) && online(b.device.id));
    let p = devices
        .presence(group.id, Some(Duration::seconds(300)))
        .await
        .unwrap();
    assert_eq!(p.online_count, 2);
    assert_eq!(
        device_err(
            devices
                .heartbeat(group.id, DeviceId::generate(clock_now()))
                .await
        ),
        DeviceError::NotFound
    );

    let token = PushToken {
        platform: "apns".into(),
        token: "ab12".into(),
    };
    let d = devices
        .set_push_token(group.id, a.device.id, token.clone())
        .await
        .unwrap();
    assert_eq!(d.push_token, Some(token));
    for bad in [
        PushToken {
            platform: "apns".into(),
            token: "x".repeat(crate::device::MAX_PUSH_TOKEN_LEN + 1),
        },
        PushToken {
            platform: "bad platform".into(),
            token: "t".into(),
        },
    ] {
        assert!(matches!(
            devices.set_push_token(group.id, a.device.id, bad).await,
            Err(Error::Validation(_))
        ));
    }
    let d = devices
        .clear_push_token(group.id, a.device.id)
        .await
        .unwrap();
    assert_eq!(d.push_token, None);

    // New public key: envelopes dropped, needs_update, next rotation heals.
    let new_secret = new_key();
    let d = devices
        .update_public_key(group.id, a.device.id, &new_secret.public_key().to_bytes())
        .await
        .unwrap();
    assert_eq!(d.key_version, None);
    let info = devices
        .key_version_info(group.id, a.device.id)
        .await
        .unwrap();
    assert!(info.needs_update);
    assert_eq!(
        device_err(devices.device_key(group.id, a.device.id).await),
        DeviceError::NoKeyAvailable
    );
    assert_eq!(
        device_err(
            devices
                .update_public_key(group.id, a.device.id, &b.secret.public_key().to_bytes())
                .await
        ),
        DeviceError::PublicKeyInUse
    );
    let k2 = group_key(2);
    let r = rotation_for(realm, group.id, 1, &[&d, &b.device], &k2);
    devices.rotate(group.id, r).await.unwrap();
    let env = devices.device_key(group.id, a.device.id).await.unwrap();
    let ctx = EnvelopeContext {
        realm,
        group: group.id,
        key_version: 2,
        recipient: a.device.id,
    };
    assert_eq!(
        envelope::open(&env, &new_secret, &ctx).unwrap().expose(),
        k2.expose()
    );
}

fn clock_now() -> chrono::DateTime<chrono::Utc> {
    super::epoch()
}

/// Events: gap-free per-group sequence; a subscriber replays then follows,
/// and one that disconnects and resumes from its last sequence misses
/// nothing and sees nothing twice.
pub async fn events_replay_follow_and_resume(h: Harness) {
    let (devices, realm, group, _) = setup(&h, None).await;
    let k1 = group_key(1);
    let a = join(&devices, &group, 1, &k1, "a").await; // seq 1, 2

    let mut stream = devices.subscribe(group.id, 0).await.unwrap();
    let mut seen: Vec<DeviceEvent> = Vec::new();
    for _ in 0..2 {
        seen.push(next(&mut stream).await);
    }
    assert_eq!(seen[0].event_type, DeviceEventType::DeviceRegistered);
    assert_eq!(seen[1].event_type, DeviceEventType::DeviceActivated);

    // Live: a commit after subscribing arrives.
    let b = join(&devices, &group, 1, &k1, "b").await; // 3, 4
    for _ in 0..2 {
        seen.push(next(&mut stream).await);
    }
    drop(stream);

    // While disconnected.
    let r = rotation_for(realm, group.id, 1, &[&a.device, &b.device], &group_key(2));
    devices.rotate(group.id, r).await.unwrap(); // 5
    devices.revoke(group.id, b.device.id, None).await.unwrap(); // 6

    let last = seen.last().unwrap().seq;
    let mut resumed = devices.subscribe(group.id, last).await.unwrap();
    for _ in 0..2 {
        seen.push(next(&mut resumed).await);
    }
    devices.remove(group.id, b.device.id).await.unwrap(); // 7
    seen.push(next(&mut resumed).await);

    let seqs: Vec<u64> = seen.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let kinds: Vec<DeviceEventType> = seen.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds[4..],
        [
            DeviceEventType::KeyRotated,
            DeviceEventType::DeviceRevoked,
            DeviceEventType::DeviceRemoved
        ]
    );
    assert_eq!(seen[4].key_version, 2);
    assert_eq!(seen[5].device_id, Some(b.device.id));
    // Nothing more is pending.
    assert!(
        tokio::time::timeout(StdDuration::from_millis(50), resumed.next())
            .await
            .is_err()
    );
    assert_eq!(devices.events(group.id, 0, 1000).await.unwrap(), seen);

    // Device-specific: a's events and group-wide ones only.
    let mut mine = devices
        .subscribe_device(group.id, a.device.id, 0)
        .await
        .unwrap();
    let mut a_seqs = Vec::new();
    for _ in 0..3 {
        a_seqs.push(next(&mut mine).await.seq);
    }
    assert_eq!(a_seqs, vec![1, 2, 5]);
}

async fn next(stream: &mut crate::device::DeviceEventStream) -> DeviceEvent {
    tokio::time::timeout(StdDuration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream does not end")
        .expect("no error")
}

/// A disabled realm refuses device calls.
pub async fn disabled_realm_refuses(h: Harness) {
    let (ks, _) = keystead(&h).await;
    let realm = ks
        .realms()
        .create("acme", RealmSettings::default())
        .await
        .unwrap();
    let devices = ks.devices(realm.id);
    let group = devices
        .create_group("g", NewGroup::default())
        .await
        .unwrap();
    ks.realms().disable(realm.id).await.unwrap();
    assert!(matches!(
        devices.group(group.id).await,
        Err(Error::Realm(RealmError::Disabled))
    ));
    assert!(matches!(
        devices
            .register(group.id, "d", "ios", &new_key().public_key().to_bytes())
            .await,
        Err(Error::Realm(RealmError::Disabled))
    ));
}

/// Key requests: create, list, get, grant (activating a pending requester),
/// reject, expiry, cancellation by revocation, and the refused cases.
pub async fn key_requests(h: Harness) {
    let (devices, realm, group, clock) = setup(&h, None).await;
    let k1 = group_key(1);
    let a = join(&devices, &group, 1, &k1, "a").await;
    let secret = new_key();
    let newcomer = devices
        .register(group.id, "new", "ios", &secret.public_key().to_bytes())
        .await
        .unwrap();
    let req = devices
        .create_key_request(group.id, newcomer.id)
        .await
        .unwrap();
    assert_eq!(req.status, KeyRequestStatus::Pending);
    assert_eq!(
        devices.key_requests(group.id).await.unwrap(),
        vec![req.clone()]
    );
    assert_eq!(devices.key_request(group.id, req.id).await.unwrap(), req);

    // A pending device cannot grant; a bad envelope writes nothing.
    assert_eq!(
        device_err(
            devices
                .grant_key_request(group.id, req.id, newcomer.id, b"x")
                .await
        ),
        DeviceError::NotActive {
            device: newcomer.id
        }
    );
    let wrong = seal(realm, group.id, 1, &a.device, &k1);
    assert!(matches!(
        device_err(
            devices
                .grant_key_request(group.id, req.id, a.device.id, &wrong)
                .await
        ),
        DeviceError::InvalidEnvelope { .. }
    ));
    assert_eq!(
        devices.key_request(group.id, req.id).await.unwrap().status,
        KeyRequestStatus::Pending
    );

    let env = seal(realm, group.id, 1, &newcomer, &k1);
    let granted = devices
        .grant_key_request(group.id, req.id, a.device.id, &env)
        .await
        .unwrap();
    assert_eq!(granted.status, KeyRequestStatus::Granted);
    assert_eq!(granted.resolved_by, Some(a.device.id));
    let now_active = devices.get(group.id, newcomer.id).await.unwrap();
    assert_eq!(now_active.status, DeviceStatus::Active);
    let stored = devices.device_key(group.id, newcomer.id).await.unwrap();
    let ctx = EnvelopeContext {
        realm,
        group: group.id,
        key_version: 1,
        recipient: newcomer.id,
    };
    assert_eq!(
        envelope::open(&stored, &secret, &ctx).unwrap().expose(),
        k1.expose()
    );
    assert_eq!(
        device_err(
            devices
                .grant_key_request(group.id, req.id, a.device.id, &env)
                .await
        ),
        DeviceError::KeyRequestNotPending {
            status: KeyRequestStatus::Granted
        }
    );
    assert!(devices.key_requests(group.id).await.unwrap().is_empty());

    // Reject, then granting the rejected request is refused.
    let second = devices
        .create_key_request(group.id, newcomer.id)
        .await
        .unwrap();
    let rejected = devices
        .reject_key_request(group.id, second.id, a.device.id)
        .await
        .unwrap();
    assert_eq!(rejected.status, KeyRequestStatus::Rejected);
    assert_eq!(
        device_err(
            devices
                .grant_key_request(group.id, second.id, a.device.id, &env)
                .await
        ),
        DeviceError::KeyRequestNotPending {
            status: KeyRequestStatus::Rejected
        }
    );

    // Expiry is computed from now.
    let third = devices
        .create_key_request(group.id, newcomer.id)
        .await
        .unwrap();
    clock.advance(Duration::seconds(crate::device::KEY_REQUEST_TTL_SECS));
    assert_eq!(
        devices
            .key_request(group.id, third.id)
            .await
            .unwrap()
            .status,
        KeyRequestStatus::Expired
    );
    assert!(devices.key_requests(group.id).await.unwrap().is_empty());
    assert!(matches!(
        device_err(
            devices
                .reject_key_request(group.id, third.id, a.device.id)
                .await
        ),
        DeviceError::KeyRequestNotPending { .. }
    ));

    // A revoked requester's requests die; it cannot make new ones.
    let fourth = devices
        .create_key_request(group.id, newcomer.id)
        .await
        .unwrap();
    devices.revoke(group.id, newcomer.id, None).await.unwrap();
    assert_eq!(
        devices
            .key_request(group.id, fourth.id)
            .await
            .unwrap()
            .status,
        KeyRequestStatus::Cancelled
    );
    assert!(matches!(
        device_err(devices.create_key_request(group.id, newcomer.id).await),
        DeviceError::InvalidTransition { .. }
    ));
    assert_eq!(
        device_err(
            devices
                .key_request(group.id, crate::id::KeyRequestId::generate(super::epoch()))
                .await
        ),
        DeviceError::KeyRequestNotFound
    );
    let kinds: Vec<DeviceEventType> = devices
        .events(group.id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(kinds.contains(&DeviceEventType::KeyRequestGranted));
    assert!(kinds.contains(&DeviceEventType::KeyRequestRejected));
}

/// A rotation of a 100-device group is one batch on every backend.
pub async fn large_rotation_is_one_commit(h: Harness) {
    let (devices, realm, group, _) = setup(&h, Some(120)).await;
    let k1 = group_key(1);
    let mut members = Vec::new();
    for i in 0..100 {
        members.push(
            join(&devices, &group, 1, &k1, &format!("m{i}"))
                .await
                .device,
        );
    }
    let refs: Vec<&Device> = members.iter().collect();
    let k2 = group_key(2);
    let result = devices
        .rotate(group.id, rotation_for(realm, group.id, 1, &refs, &k2))
        .await
        .unwrap();
    assert_eq!(result.envelopes, 100);
    for d in &members {
        let info = devices.key_version_info(group.id, d.id).await.unwrap();
        assert_eq!((info.device_version, info.needs_update), (Some(2), false));
    }
    let events = devices.events(group.id, 0, 1000).await.unwrap();
    assert_eq!(events.len(), 201);
    assert_eq!(
        events.last().unwrap().event_type,
        DeviceEventType::KeyRotated
    );
}
