//! Property test of the device lifecycle and rotation on the real service
//! (memory store): random operation sequences, invariants after every step.

use super::{DeviceError, DeviceStatus, Devices, NewGroup, PushToken, Rotation};
use crate::Error;
use crate::Keystead;
use crate::clock::ManualClock;
use crate::crypto::at_rest::StaticKeyProvider;
use crate::crypto::envelope::{self, EnvelopeContext};
use crate::crypto::{DevicePublicKey, DeviceSecretKey};
use crate::id::{DeviceId, GroupId, KeyRequestId, RealmId};
use crate::realm::RealmSettings;
use crate::secret::SecretBytes;
use crate::store::MemoryStore;
use chrono::{DateTime, Duration};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
enum Op {
    Register,
    Activate(usize),
    Heartbeat(usize),
    Revoke(usize, bool),
    Remove(usize),
    Rotate,
    UpdateKey(usize),
    Request(usize),
    Grant(usize, usize),
    Reject(usize, usize),
    PushToken(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..8;
    prop_oneof![
        3 => Just(Op::Register),
        3 => i.clone().prop_map(Op::Activate),
        1 => i.clone().prop_map(Op::Heartbeat),
        2 => (i.clone(), any::<bool>()).prop_map(|(d, r)| Op::Revoke(d, r)),
        1 => i.clone().prop_map(Op::Remove),
        2 => Just(Op::Rotate),
        1 => i.clone().prop_map(Op::UpdateKey),
        2 => i.clone().prop_map(Op::Request),
        2 => (i.clone(), i.clone()).prop_map(|(r, d)| Op::Grant(r, d)),
        1 => (i.clone(), i.clone()).prop_map(|(r, d)| Op::Reject(r, d)),
        1 => i.prop_map(Op::PushToken),
    ]
}

/// What the test (the front-ends) knows.
struct World {
    devices: Devices,
    realm: RealmId,
    group: GroupId,
    limit: u32,
    /// Secret keys of every device ever registered, by id.
    secrets: BTreeMap<DeviceId, DeviceSecretKey>,
    /// Registration order.
    order: Vec<DeviceId>,
    /// The key version current when each device was revoked.
    revoked_at: BTreeMap<DeviceId, u32>,
    requests: Vec<KeyRequestId>,
}

impl World {
    fn pick(&self, i: usize) -> Option<DeviceId> {
        (!self.order.is_empty()).then(|| self.order[i % self.order.len()])
    }

    fn seal(&self, device: DeviceId, version: u32) -> Vec<u8> {
        let pk = self.secrets[&device].public_key();
        envelope::seal(
            &SecretBytes::new(vec![u8::try_from(version % 251).unwrap(); 32]),
            &DevicePublicKey::from_bytes(&pk.to_bytes()).unwrap(),
            &EnvelopeContext {
                realm: self.realm,
                group: self.group,
                key_version: version,
                recipient: device,
            },
        )
        .unwrap()
    }

    async fn version(&self) -> u32 {
        self.devices.group(self.group).await.unwrap().key_version
    }

    async fn rotation(&self, skip: Option<DeviceId>) -> Rotation {
        let current = self.version().await;
        let active = self
            .devices
            .list(self.group, Some(DeviceStatus::Active))
            .await
            .unwrap();
        Rotation {
            expected_version: current,
            envelopes: active
                .iter()
                .filter(|d| Some(d.id) != skip)
                .map(|d| (d.id, self.seal(d.id, current + 1)))
                .collect(),
        }
    }

    #[allow(clippy::too_many_lines)] // one arm per operation of the model
    async fn apply(&mut self, op: &Op) {
        let d = &self.devices;
        let g = self.group;
        let result: Result<(), Error> = match *op {
            Op::Register => {
                let secret = DeviceSecretKey::generate().unwrap();
                let pk = secret.public_key().to_bytes();
                match d.register(g, "dev", "ios", &pk).await {
                    Ok(dev) => {
                        self.secrets.insert(dev.id, secret);
                        self.order.push(dev.id);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Activate(i) => match self.pick(i) {
                Some(id) => {
                    let env = self.seal(id, self.version().await);
                    d.activate(g, id, &env).await.map(drop)
                }
                None => Ok(()),
            },
            Op::Heartbeat(i) => match self.pick(i) {
                Some(id) => d.heartbeat(g, id).await,
                None => Ok(()),
            },
            Op::Revoke(i, rotate) => match self.pick(i) {
                Some(id) => {
                    let version = self.version().await;
                    let rotation = if rotate {
                        Some(self.rotation(Some(id)).await)
                    } else {
                        None
                    };
                    let r = d.revoke(g, id, rotation).await;
                    if r.is_ok() {
                        // Any rotation in the same commit comes after it.
                        self.revoked_at.insert(id, version);
                    }
                    r.map(drop)
                }
                None => Ok(()),
            },
            Op::Remove(i) => match self.pick(i) {
                Some(id) => d.remove(g, id).await,
                None => Ok(()),
            },
            Op::Rotate => {
                let rotation = self.rotation(None).await;
                let r = d.rotate(g, rotation).await;
                assert!(r.is_ok(), "a complete rotation succeeds: {r:?}");
                Ok(())
            }
            Op::UpdateKey(i) => match self.pick(i) {
                Some(id) => {
                    let secret = DeviceSecretKey::generate().unwrap();
                    let pk = secret.public_key().to_bytes();
                    let r = d.update_public_key(g, id, &pk).await;
                    if r.is_ok() {
                        self.secrets.insert(id, secret);
                    }
                    r.map(drop)
                }
                None => Ok(()),
            },
            Op::Request(i) => match self.pick(i) {
                Some(id) => match d.create_key_request(g, id).await {
                    Ok(r) => {
                        self.requests.push(r.id);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                None => Ok(()),
            },
            Op::Grant(r, i) | Op::Reject(r, i) => {
                match (
                    (!self.requests.is_empty()).then(|| self.requests[r % self.requests.len()]),
                    self.pick(i),
                ) {
                    (Some(req), Some(by)) => {
                        if let Op::Grant(..) = op {
                            let request = d.key_request(g, req).await.unwrap();
                            let env = self.seal(request.device_id, self.version().await);
                            d.grant_key_request(g, req, by, &env).await.map(drop)
                        } else {
                            d.reject_key_request(g, req, by).await.map(drop)
                        }
                    }
                    _ => Ok(()),
                }
            }
            Op::PushToken(i) => match self.pick(i) {
                Some(id) => d
                    .set_push_token(
                        g,
                        id,
                        PushToken {
                            platform: "fcm".into(),
                            token: "tok".into(),
                        },
                    )
                    .await
                    .map(drop),
                None => Ok(()),
            },
        };
        // Refusals are typed domain errors, never storage or crypto ones.
        if let Err(e) = result {
            assert!(
                matches!(e, Error::Device(_)),
                "{op:?} failed with a non-domain error: {e}"
            );
        }
    }

    async fn check_invariants(&self) {
        let d = &self.devices;
        let g = self.group;
        let version = self.version().await;
        let all = d.list(g, None).await.unwrap();
        let non_revoked = u32::try_from(
            all.iter()
                .filter(|x| x.status != DeviceStatus::Revoked)
                .count(),
        )
        .unwrap();
        let count = d.device_count(g).await.unwrap();
        assert_eq!(count.count, non_revoked, "counter matches the devices");
        assert!(non_revoked <= self.limit, "the limit holds");
        for dev in &all {
            let info = d.key_version_info(g, dev.id).await.unwrap();
            match dev.status {
                DeviceStatus::Active => {
                    let key = d.device_key(g, dev.id).await;
                    assert_eq!(key.is_ok(), !info.needs_update, "active {dev:?}");
                    if let Ok(env) = key {
                        let opened = envelope::open(
                            &env,
                            &self.secrets[&dev.id],
                            &EnvelopeContext {
                                realm: self.realm,
                                group: g,
                                key_version: version,
                                recipient: dev.id,
                            },
                        );
                        assert!(opened.is_ok(), "the active device opens its key");
                    }
                }
                DeviceStatus::Revoked => {
                    let at = self.revoked_at[&dev.id];
                    assert!(
                        dev.key_version.is_none_or(|v| v <= at),
                        "revoked device received version {:?} after {at}",
                        dev.key_version
                    );
                    assert_eq!(
                        d.device_key(g, dev.id).await.unwrap_err().code(),
                        DeviceError::NoKeyAvailable.code()
                    );
                }
                DeviceStatus::Pending => assert!(dev.key_version.is_none()),
            }
        }
        let events = d.events(g, 0, 1000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "event sequence is gap-free");
    }
}

async fn run(ops: Vec<Op>, limit: u32) {
    let clock = ManualClock::new(DateTime::from_timestamp(1_750_000_000, 0).unwrap());
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .clock(clock.clone())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let realm = ks
        .realms()
        .create("model", RealmSettings::default())
        .await
        .unwrap();
    let devices = ks.devices(realm.id);
    let group = devices
        .create_group(
            "g",
            NewGroup {
                device_limit: Some(limit),
                key_generations: Some(2),
            },
        )
        .await
        .unwrap();
    let mut world = World {
        devices,
        realm: realm.id,
        group: group.id,
        limit,
        secrets: BTreeMap::new(),
        order: Vec::new(),
        revoked_at: BTreeMap::new(),
        requests: Vec::new(),
    };
    for op in &ops {
        world.apply(op).await;
        clock.advance(Duration::seconds(7));
        world.check_invariants().await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn lifecycle_and_rotation_invariants(ops in prop::collection::vec(op(), 1..30), limit in 1u32..5) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, limit));
    }
}
