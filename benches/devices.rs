//! Devices and group keys (issue 8) on keystead-sqlite (a tempdir, default
//! options), each against the raw primitives measured in the same run:
//!
//! * `devices/register_activate`: `register` + `activate` of one device (the
//!   client's key generation and envelope sealing are outside the timing).
//! * `devices/heartbeat`: `heartbeat` of one active device.
//! * `devices/rotate/{10,100,1000}`: `rotate` of a group of that many active
//!   devices; the envelopes are sealed (with `DeviceClient::rotation`)
//!   before the timed region, so the figure is the service's own work:
//!   reads, envelope checks, one commit of a record and an envelope per
//!   device (plus the pruned generation's deletes, as in steady state).
//! * `devices/presence/1000`: `presence` of a group of 1,000 devices, half
//!   of them with a heartbeat.
//! * `baseline/envelope_seal` and `baseline/sqlite_commit_200b`: one HPKE
//!   `envelope::seal` of a 32-byte group key and one fsynced commit of a
//!   200-byte value on the same store; their sum is the per-envelope
//!   baseline a rotation's per-envelope cost is compared with.
#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use keystead::Keystead;
use keystead::client::DeviceClient;
use keystead::crypto::DeviceSecretKey;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::crypto::envelope::{self, EnvelopeContext};
use keystead::device::{Devices, Group, NewGroup};
use keystead::id::DeviceId;
use keystead::realm::RealmSettings;
use keystead::secret::SecretBytes;
use keystead::store::{Batch, Precondition, Store};
use keystead_benches::runtime;
use keystead_sqlite::SqliteStore;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The group sizes rotated.
const SIZES: [usize; 3] = [10, 100, 1_000];
/// The largest per-group device limit keystead accepts.
const LIMIT: u32 = 10_000;

/// One realm on a fresh SQLite store.
struct Fixture {
    rt: Runtime,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    devices: Devices,
}

fn fixture() -> Fixture {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let (store, devices) = rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("keystead.db"))
                .await
                .unwrap(),
        );
        let ks = Keystead::builder()
            .shared_store(Arc::clone(&store))
            .keys(StaticKeyProvider::generate().unwrap())
            .build()
            .unwrap();
        let realm = ks
            .realms()
            .create("bench", RealmSettings::default())
            .await
            .unwrap();
        (store, ks.devices(realm.id))
    });
    Fixture {
        rt,
        _dir: dir,
        store,
        devices,
    }
}

fn bench_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

async fn new_group(devices: &Devices, name: &str) -> Group {
    devices
        .create_group(
            name,
            NewGroup {
                device_limit: Some(LIMIT),
                ..NewGroup::default()
            },
        )
        .await
        .unwrap()
}

/// An administrator's client for `group` (it seals, it holds no device).
fn admin(devices: &Devices, group: &Group) -> DeviceClient {
    DeviceClient::generate(
        devices.realm(),
        group.id,
        DeviceId::generate(chrono::Utc::now()),
    )
    .unwrap()
}

/// Register and activate `n` devices with `key` (the group's version 1).
async fn populate(devices: &Devices, group: &Group, n: usize, key: &SecretBytes) {
    let sealer = admin(devices, group);
    for i in 0..n {
        let client = admin(devices, group);
        let device = devices
            .register(
                group.id,
                &format!("device-{i}"),
                "ios",
                &client.public_key(),
            )
            .await
            .unwrap();
        let env = sealer.seal_for(&device, group.key_version, key).unwrap();
        devices.activate(group.id, device.id, &env).await.unwrap();
    }
}

fn lifecycle(c: &mut Criterion) {
    let Fixture {
        rt, devices, _dir, ..
    } = fixture();
    let key = DeviceClient::new_group_key().unwrap();
    let mut group = rt.block_on(new_group(&devices, "lifecycle-0"));
    let mut sealer = admin(&devices, &group);
    let mut used = 0u32;
    let mut groups = 0u32;

    let mut g = bench_group(c, "devices");
    g.bench_function("register_activate", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                if used == LIMIT {
                    groups += 1;
                    group = rt.block_on(new_group(&devices, &format!("lifecycle-{groups}")));
                    sealer = admin(&devices, &group);
                    used = 0;
                }
                let public_key = admin(&devices, &group).public_key();
                let start = Instant::now();
                let device = rt
                    .block_on(devices.register(group.id, "phone", "ios", &public_key))
                    .unwrap();
                timed += start.elapsed();
                let env = sealer.seal_for(&device, group.key_version, &key).unwrap();
                let start = Instant::now();
                black_box(
                    rt.block_on(devices.activate(group.id, device.id, &env))
                        .unwrap(),
                );
                timed += start.elapsed();
                used += 1;
            }
            timed
        });
    });

    // Heartbeat of one active device of the last group.
    let device = rt
        .block_on(devices.list(group.id, None))
        .unwrap()
        .pop()
        .unwrap();
    g.bench_function("heartbeat", |b| {
        b.iter(|| rt.block_on(devices.heartbeat(group.id, device.id)).unwrap());
    });
    g.finish();
}

fn rotation(c: &mut Criterion) {
    let Fixture {
        rt, devices, _dir, ..
    } = fixture();
    let key = DeviceClient::new_group_key().unwrap();
    let mut g = bench_group(c, "devices");
    let mut largest = None;
    for n in SIZES {
        let group = rt.block_on(async {
            let group = new_group(&devices, &format!("rotate-{n}")).await;
            populate(&devices, &group, n, &key).await;
            group
        });
        let members = rt.block_on(devices.list(group.id, None)).unwrap();
        let sealer = admin(&devices, &group);
        let mut version = group.key_version;
        if n >= 1_000 {
            g.sample_size(10).measurement_time(Duration::from_secs(4));
        }
        g.bench_function(BenchmarkId::new("rotate", n), |b| {
            b.iter_custom(|iters| {
                let iters = u32::try_from(iters).unwrap();
                let rotations: Vec<_> = (0..iters)
                    .map(|i| {
                        let next = DeviceClient::new_group_key().unwrap();
                        sealer.rotation(&members, version + i, &next, None).unwrap()
                    })
                    .collect();
                let start = Instant::now();
                for rotation in rotations {
                    let done = rt.block_on(devices.rotate(group.id, rotation)).unwrap();
                    assert_eq!(done.envelopes, n);
                }
                let timed = start.elapsed();
                version += iters;
                timed
            });
        });
        largest = Some(group);
    }

    // Presence of the 1,000-device group, half of them seen just now.
    let group = largest.unwrap();
    let members = rt.block_on(devices.list(group.id, None)).unwrap();
    rt.block_on(async {
        for d in members.iter().step_by(2) {
            devices.heartbeat(group.id, d.id).await.unwrap();
        }
    });
    g.bench_function(BenchmarkId::new("presence", members.len()), |b| {
        b.iter(|| {
            let presence = rt.block_on(devices.presence(group.id, None)).unwrap();
            assert_eq!(presence.devices.len(), members.len());
            black_box(presence)
        });
    });
    g.finish();
}

fn baseline(c: &mut Criterion) {
    let Fixture {
        rt, store, _dir, ..
    } = fixture();
    let now = chrono::Utc::now();
    let recipient = DeviceSecretKey::generate().unwrap().public_key();
    let ctx = EnvelopeContext {
        realm: keystead::id::RealmId::generate(now),
        group: keystead::id::GroupId::generate(now),
        key_version: 2,
        recipient: DeviceId::generate(now),
    };
    let key = DeviceClient::new_group_key().unwrap();
    let value = vec![0x5A; 200];
    let mut n = 0u64;

    let mut g = bench_group(c, "baseline");
    g.bench_function("envelope_seal", |b| {
        b.iter(|| black_box(envelope::seal(&key, &recipient, &ctx).unwrap()));
    });
    g.bench_function("sqlite_commit_200b", |b| {
        b.iter(|| {
            n += 1;
            let mut batch = Batch::new();
            batch
                .put(
                    n.to_be_bytes().to_vec(),
                    value.clone(),
                    Precondition::Absent,
                )
                .unwrap();
            rt.block_on(store.commit(batch)).unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, baseline, lifecycle, rotation);
criterion_main!(benches);
