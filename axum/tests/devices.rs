//! Seed 000 over real HTTP: device register → activate → heartbeat and
//! presence → key request → grant → rotate (and `KEY_VERSION_CONFLICT` on
//! a stale version) → revoke with rotation, while an SSE subscriber sees
//! every event in order across a reconnect with `Last-Event-ID`; then every
//! endpoint's unhappy statuses.
#![allow(clippy::too_many_lines)] // end-to-end walkthroughs read top to bottom

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{SseReader, TestServer, call};
use keystead::client::DeviceClient;
use keystead::device::Device;
use keystead::id::{DeviceId, GroupId, RealmId};
use keystead_axum::Backend;
use keystead_axum::auth::REALM_HEADER;
use serde_json::{Value, json};

const P: &str = "/authlance/identity/api/v1/realm";

/// A user with a token and a device key.
struct Member {
    token: String,
    client: Option<DeviceClient>,
    device: Option<DeviceId>,
}

struct Fixture {
    server: TestServer,
    realm: RealmId,
    group: GroupId,
    alice: Member,
    bob: Member,
    eve_token: String,
}

async fn fixture(backend: Backend, device_limit: u32) -> Fixture {
    let server = common::start_on(backend).await;
    let realm = server.create_realm("fam").await;
    let (alice, alice_token) = server.user_with_token(realm, "alice").await;
    let (bob, bob_token) = server.user_with_token(realm, "bob").await;
    let (_, eve_token) = server.user_with_token(realm, "eve").await;
    let (status, group) = call(
        server
            .http
            .post(server.url("/admin/realms/fam/groups"))
            .bearer_auth(&server.admin_token)
            .json(&json!({
                "name": "home",
                "deviceLimit": device_limit,
                "members": [alice.to_string(), bob.to_string()],
            })),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group: GroupId = group["groupId"].as_str().unwrap().parse().unwrap();
    Fixture {
        server,
        realm,
        group,
        alice: Member {
            token: alice_token,
            client: None,
            device: None,
        },
        bob: Member {
            token: bob_token,
            client: None,
            device: None,
        },
        eve_token,
    }
}

impl Fixture {
    fn url(&self, tail: &str) -> String {
        self.server.url(&format!("{P}/groups/{}{tail}", self.group))
    }

    fn admin_url(&self, tail: &str) -> String {
        self.server
            .url(&format!("{P}/admin/groups/{}{tail}", self.group))
    }

    fn admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .bearer_auth(&self.server.admin_token)
            .header(REALM_HEADER, "fam")
    }

    /// Register a device for `who` and keep its client.
    async fn register(&self, who: &mut Member, name: &str) -> Device {
        let placeholder = DeviceId::generate(chrono::Utc::now());
        let client = DeviceClient::generate(self.realm, self.group, placeholder).unwrap();
        let (status, body) = call(
            self.server
                .http
                .post(self.url("/devices"))
                .bearer_auth(&who.token)
                .json(&json!({
                    "name": name,
                    "platform": "ios",
                    "publicKey": STANDARD.encode(client.public_key()),
                })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let device: Device = serde_json::from_value(body).unwrap();
        who.client = Some(client.with_device(device.id));
        who.device = Some(device.id);
        device
    }

    async fn device(&self, token: &str, id: DeviceId) -> Device {
        let (status, body) = call(
            self.server
                .http
                .get(self.url(&format!("/devices/{id}")))
                .bearer_auth(token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    async fn open_key(&self, who: &Member) -> (u32, Vec<u8>) {
        let id = who.device.unwrap();
        let (status, body) = call(
            self.server
                .http
                .get(self.url(&format!("/devices/{id}/key")))
                .bearer_auth(&who.token),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let version = u32::try_from(body["keyVersion"].as_u64().unwrap()).unwrap();
        let envelope = STANDARD
            .decode(body["encryptedKey"].as_str().unwrap())
            .unwrap();
        let key = who
            .client
            .as_ref()
            .unwrap()
            .open(&envelope, version)
            .unwrap();
        (version, key.expose().to_vec())
    }

    async fn subscribe(&self, token: &str, last_event_id: Option<u64>) -> SseReader {
        let mut request = self
            .server
            .http
            .get(self.url("/devices/events"))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        SseReader::new(request.send().await.unwrap())
    }
}

fn event_of(e: &common::SseEvent) -> (u64, String, Value) {
    let data: Value = serde_json::from_str(&e.data).unwrap();
    let seq: u64 = e.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(data["seq"], seq, "id and payload agree");
    assert_eq!(
        data["type"].as_str(),
        e.event.as_deref(),
        "event name is the type"
    );
    (seq, e.event.clone().unwrap(), data)
}

async fn device_flow(backend: Backend) {
    let mut f = fixture(backend, 5).await;
    let http = f.server.http.clone();
    // A subscriber from the very start.
    let mut events = f.subscribe(&f.alice.token, None).await;

    // Alice registers the group's first device and activates it with a
    // fresh group key sealed to itself.
    let mut alice = std::mem::replace(
        &mut f.alice,
        Member {
            token: String::new(),
            client: None,
            device: None,
        },
    );
    let a = f.register(&mut alice, "alice phone").await;
    assert_eq!(a.status.as_str(), "pending");
    let key_v1 = DeviceClient::new_group_key().unwrap();
    let sealed = alice
        .client
        .as_ref()
        .unwrap()
        .seal_for(&a, 1, &key_v1)
        .unwrap();
    let (status, body) = call(
        http.post(f.url(&format!("/devices/{}/activate", a.id)))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode(&sealed)})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["keyVersion"], 1);
    assert_eq!(f.open_key(&alice).await, (1, key_v1.expose().to_vec()));

    // Heartbeat and presence.
    let (status, _) = call(
        http.post(f.url(&format!("/devices/{}/heartbeat", a.id)))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, presence) = call(
        http.get(f.url("/devices/presence"))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(presence["onlineCount"], 1);
    assert_eq!(presence["devices"][0]["deviceId"], a.id.to_string());
    assert_eq!(presence["devices"][0]["online"], true);

    // Push token set and cleared.
    let (status, _) = call(
        http.put(f.url(&format!("/devices/{}/push-token", a.id)))
            .bearer_auth(&alice.token)
            .json(&json!({"platform": "apns", "token": "abc123"})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        f.device(&alice.token, a.id).await.push_token.unwrap().token,
        "abc123"
    );
    let (status, _) = call(
        http.delete(f.url(&format!("/devices/{}/push-token", a.id)))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 204);
    assert!(f.device(&alice.token, a.id).await.push_token.is_none());

    // Bob's device asks for the key; Alice's device grants it.
    let mut bob = std::mem::replace(
        &mut f.bob,
        Member {
            token: String::new(),
            client: None,
            device: None,
        },
    );
    let b = f.register(&mut bob, "bob laptop").await;
    let (status, version) = call(
        http.get(f.url(&format!("/keys/version?deviceId={}", b.id)))
            .bearer_auth(&bob.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        version,
        json!({"currentVersion": 1, "deviceVersion": null, "needsUpdate": true})
    );
    let (status, request) = call(
        http.post(f.url("/devices/key-requests"))
            .bearer_auth(&bob.token)
            .json(&json!({"deviceId": b.id.to_string()})),
    )
    .await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["status"], "pending");
    let request_id = request["requestId"].as_str().unwrap().to_owned();
    let (status, pending) = call(
        http.get(f.url("/devices/key-requests"))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["requestId"], request_id.as_str());
    let b_seen = f.device(&alice.token, b.id).await;
    let for_b = alice
        .client
        .as_ref()
        .unwrap()
        .seal_for(&b_seen, 1, &key_v1)
        .unwrap();
    let (status, body) = call(
        http.post(f.url(&format!("/devices/key-requests/{request_id}/grant")))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode(&for_b)})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, granted) = call(
        http.get(f.url(&format!("/devices/key-requests/{request_id}")))
            .bearer_auth(&bob.token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(granted["status"], "granted");
    assert_eq!(granted["resolvedBy"], a.id.to_string());
    assert_eq!(f.open_key(&bob).await, (1, key_v1.expose().to_vec()));
    let (_, version) = call(http.get(f.url("/keys/version")).bearer_auth(&bob.token)).await;
    assert_eq!(
        version["needsUpdate"], false,
        "the caller's own device by default"
    );

    // Rotation to version 2, sealed by Alice's device for both.
    let all = {
        let (status, list) = call(
            http.get(f.url("/devices?status=active"))
                .bearer_auth(&alice.token),
        )
        .await;
        assert_eq!(status, 200);
        serde_json::from_value::<Vec<Device>>(list).unwrap()
    };
    assert_eq!(all.len(), 2);
    let key_v2 = DeviceClient::new_group_key().unwrap();
    let rotation = |version: u32, devices: &[Device], key| {
        let envelopes: Vec<Value> = devices
            .iter()
            .map(|d| {
                let sealed = alice
                    .client
                    .as_ref()
                    .unwrap()
                    .seal_for(d, version + 1, key)
                    .unwrap();
                json!({"deviceId": d.id.to_string(), "encryptedKey": STANDARD.encode(sealed)})
            })
            .collect();
        json!({"expectedVersion": version, "envelopes": envelopes})
    };
    let (status, rotated) = call(
        f.admin(http.post(f.admin_url("/keys/rotate")))
            .json(&rotation(1, &all, &key_v2)),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        rotated,
        json!({"previousVersion": 1, "newVersion": 2, "envelopes": 2})
    );
    assert_eq!(f.open_key(&bob).await, (2, key_v2.expose().to_vec()));
    // A second rotation from the stale version 1 loses.
    let (status, conflict) = call(
        f.admin(http.post(f.admin_url("/keys/rotate")))
            .json(&rotation(1, &all, &key_v2)),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(conflict["code"], "KEY_VERSION_CONFLICT");
    assert_eq!(conflict["currentVersion"], 2);

    // Revoke Bob's device and rotate to version 3 in the same commit.
    let key_v3 = DeviceClient::new_group_key().unwrap();
    let (status, revoked) = call(
        f.admin(http.post(f.admin_url(&format!("/devices/{}/revoke", b.id))))
            .json(&rotation(2, std::slice::from_ref(&a), &key_v3)),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["newVersion"], 3);
    assert_eq!(f.open_key(&alice).await, (3, key_v3.expose().to_vec()));
    let (status, body) = call(
        http.get(f.url(&format!("/devices/{}/key", b.id)))
            .bearer_auth(&bob.token),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "NO_KEY_AVAILABLE");

    // The subscriber saw every event in order; it drops after the fourth
    // and resumes with Last-Event-ID, missing nothing and repeating nothing.
    let expected = [
        ("device_registered", Some(a.id)),
        ("device_activated", Some(a.id)),
        ("device_registered", Some(b.id)),
        ("key_request_created", Some(b.id)),
        ("device_activated", Some(b.id)),
        ("key_request_granted", Some(b.id)),
        ("key_rotated", None),
        ("device_revoked", Some(b.id)),
        ("key_rotated", None),
    ];
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(event_of(&events.next().await));
    }
    drop(events);
    let mut resumed = f
        .subscribe(&alice.token, Some(seen.last().unwrap().0))
        .await;
    for _ in 4..expected.len() {
        seen.push(event_of(&resumed.next().await));
    }
    for (i, ((seq, name, data), (want, device))) in seen.iter().zip(expected).enumerate() {
        assert_eq!(*seq, i as u64 + 1, "gap-free sequence");
        assert_eq!(name, want, "event {seq}");
        assert_eq!(
            data["deviceId"],
            device.map_or(Value::Null, |d| json!(d.to_string())),
            "event {seq}"
        );
    }
    assert_eq!(seen[8].2["keyVersion"], 3);

    // A live event reaches the resumed stream too.
    let (status, _) = call(f.admin(http.delete(f.admin_url(&format!("/devices/{}", b.id))))).await;
    assert_eq!(status, 204);
    let (seq, name, _) = event_of(&resumed.next().await);
    assert_eq!((seq, name.as_str()), (10, "device_removed"));

    // Device-specific stream: only events about Alice's device and
    // group-wide ones.
    let mut only_a = SseReader::new(
        http.get(f.url(&format!("/devices/events?deviceId={}", a.id)))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap(),
    );
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(event_of(&only_a.next().await).0);
        }
        ids
    };
    assert_eq!(ids, [1, 2, 7, 9]);

    // The server shuts down gracefully with streams still open.
    f.alice = alice;
    f.bob = bob;
    drop(only_a);
    f.server.stop().await;
}

#[tokio::test]
async fn device_flow_on_sqlite() {
    device_flow(Backend::Sqlite).await;
}

#[tokio::test]
async fn device_flow_on_sled() {
    device_flow(Backend::Sled).await;
}

#[tokio::test]
async fn device_flow_on_postgres() {
    device_flow(Backend::Postgres).await;
}

#[tokio::test]
async fn device_flow_on_memory() {
    device_flow(Backend::Memory).await;
}

#[tokio::test]
async fn open_streams_do_not_block_shutdown() {
    let f = fixture(Backend::Memory, 5).await;
    let _open = f.subscribe(&f.alice.token, None).await;
    f.server.stop().await;
}

/// Every seed-000 endpoint: (method, path tail, body, admin path?).
fn endpoints(
    device: DeviceId,
    request: &str,
) -> Vec<(reqwest::Method, String, Option<Value>, bool)> {
    use reqwest::Method as M;
    let d = device.to_string();
    let key = json!({"encryptedKey": STANDARD.encode([0u8; 8])});
    vec![
        (M::DELETE, format!("/devices/{d}"), None, true),
        (M::POST, format!("/devices/{d}/revoke"), None, true),
        (
            M::POST,
            "/keys/rotate".into(),
            Some(json!({"expectedVersion": 1, "envelopes": []})),
            true,
        ),
        (M::GET, "/devices/count".into(), None, false),
        (
            M::POST,
            format!("/devices/{d}/activate"),
            Some(key.clone()),
            false,
        ),
        (M::GET, format!("/devices/{d}"), None, false),
        (M::POST, format!("/devices/{d}/heartbeat"), None, false),
        (M::GET, format!("/devices/{d}/key"), None, false),
        (
            M::PUT,
            format!("/devices/{d}/public-key"),
            Some(json!({"publicKey": STANDARD.encode([9u8; 32])})),
            false,
        ),
        (M::DELETE, format!("/devices/{d}/push-token"), None, false),
        (
            M::PUT,
            format!("/devices/{d}/push-token"),
            Some(json!({"platform": "fcm", "token": "t"})),
            false,
        ),
        (M::GET, "/devices/events".into(), None, false),
        (M::GET, "/devices".into(), None, false),
        (M::GET, "/devices/key-requests".into(), None, false),
        (
            M::POST,
            "/devices/key-requests".into(),
            Some(json!({"deviceId": d})),
            false,
        ),
        (
            M::GET,
            format!("/devices/key-requests/{request}"),
            None,
            false,
        ),
        (
            M::POST,
            format!("/devices/key-requests/{request}/grant"),
            Some(key),
            false,
        ),
        (
            M::POST,
            format!("/devices/key-requests/{request}/reject"),
            None,
            false,
        ),
        (
            M::POST,
            "/devices".into(),
            Some(json!({"name": "x", "platform": "ios", "publicKey": STANDARD.encode([9u8; 32])})),
            false,
        ),
        (M::GET, "/devices/presence".into(), None, false),
        (M::GET, "/keys/version".into(), None, false),
    ]
}

#[tokio::test]
async fn unhappy_statuses() {
    let mut f = fixture(Backend::Memory, 2).await;
    let http = f.server.http.clone();
    let mut alice = std::mem::replace(
        &mut f.alice,
        Member {
            token: String::new(),
            client: None,
            device: None,
        },
    );
    let mut bob = std::mem::replace(
        &mut f.bob,
        Member {
            token: String::new(),
            client: None,
            device: None,
        },
    );
    let a = f.register(&mut alice, "a").await;
    let b = f.register(&mut bob, "b").await;
    let (status, request) = call(
        http.post(f.url("/devices/key-requests"))
            .bearer_auth(&bob.token)
            .json(&json!({"deviceId": b.id.to_string()})),
    )
    .await;
    assert_eq!(status, 201);
    let request_id = request["requestId"].as_str().unwrap().to_owned();

    // 401 without a token and with a forged one; 403 for a user outside the
    // group (and for users on the admin paths).
    let forged = {
        let mut parts: Vec<String> = alice.token.split('.').map(str::to_owned).collect();
        parts[2] = parts[2].chars().rev().collect();
        parts.join(".")
    };
    for (method, tail, body, admin) in endpoints(a.id, &request_id) {
        let url = if admin {
            f.admin_url(&tail)
        } else {
            f.url(&tail)
        };
        let with_body = |r: reqwest::RequestBuilder| match &body {
            Some(b) => r.json(b),
            None => r,
        };
        let (status, err) = call(with_body(http.request(method.clone(), &url))).await;
        assert_eq!(status, 401, "{method} {tail} without a token: {err}");
        let (status, _) = call(with_body(
            http.request(method.clone(), &url).bearer_auth(&forged),
        ))
        .await;
        assert_eq!(status, 401, "{method} {tail} with a forged token");
        let (status, err) = call(with_body(
            http.request(method.clone(), &url).bearer_auth(&f.eve_token),
        ))
        .await;
        assert_eq!(status, 403, "{method} {tail} by a non-member: {err}");
        let expected = if admin {
            "ADMIN_REQUIRED"
        } else {
            "NOT_GROUP_MEMBER"
        };
        assert_eq!(err["code"], expected, "{method} {tail}");
    }

    // Another user's device: 403 for owner-only calls.
    for (method, tail) in [
        (
            reqwest::Method::POST,
            format!("/devices/{}/heartbeat", a.id),
        ),
        (reqwest::Method::GET, format!("/devices/{}/key", a.id)),
        (
            reqwest::Method::DELETE,
            format!("/devices/{}/push-token", a.id),
        ),
    ] {
        let (status, err) = call(
            http.request(method.clone(), f.url(&tail))
                .bearer_auth(&bob.token),
        )
        .await;
        assert_eq!(status, 403, "{method} {tail}");
        assert_eq!(err["code"], "NOT_DEVICE_OWNER");
    }
    let (status, _) = call(
        http.post(f.url("/devices/key-requests"))
            .bearer_auth(&bob.token)
            .json(&json!({"deviceId": a.id.to_string()})),
    )
    .await;
    assert_eq!(status, 403, "a key request for someone else's device");
    // Granting needs an active device of the caller: Alice has none yet.
    let (status, err) = call(
        http.post(f.url(&format!("/devices/key-requests/{request_id}/reject")))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(err["code"], "NO_ACTIVE_DEVICE");

    // 400: bad ids, bad base64, bad keys, bad envelopes, bad filters, bad
    // bodies, a bad Last-Event-ID.
    let bad = [
        (http.get(f.server.url(&format!("{P}/groups/not-a-group/devices"))).bearer_auth(&alice.token), "groupId"),
        (http.get(f.url("/devices/not-a-device")).bearer_auth(&alice.token), "deviceId"),
        (http.get(f.url("/devices?status=lost")).bearer_auth(&alice.token), "status"),
        (
            http.post(f.url("/devices")).bearer_auth(&alice.token).json(&json!({"name": "x", "platform": "ios", "publicKey": "***"})),
            "publicKey",
        ),
        (
            http.post(f.url("/devices")).bearer_auth(&alice.token).json(&json!({"name": "x", "platform": "ios", "publicKey": STANDARD.encode([0u8; 32])})),
            "public_key",
        ),
        (
            http.post(f.url("/devices")).bearer_auth(&alice.token).json(&json!({"name": "", "platform": "ios", "publicKey": STANDARD.encode([5u8; 32])})),
            "name",
        ),
        (http.post(f.url("/devices")).bearer_auth(&alice.token).json(&json!({"name": "x"})), "body"),
        (
            http.post(f.url(&format!("/devices/{}/activate", a.id))).bearer_auth(&alice.token).json(&json!({"encryptedKey": "%%"})),
            "encryptedKey",
        ),
        (
            http.put(f.url(&format!("/devices/{}/public-key", a.id))).bearer_auth(&alice.token).json(&json!({"publicKey": STANDARD.encode([1u8; 5])})),
            "public_key",
        ),
        (
            http.put(f.url(&format!("/devices/{}/push-token", a.id))).bearer_auth(&alice.token).json(&json!({"platform": "a b", "token": "t"})),
            "push_token.platform",
        ),
        (
            http.get(f.url("/devices/events")).bearer_auth(&alice.token).header("last-event-id", "yesterday"),
            "Last-Event-ID",
        ),
        (
            f.admin(http.post(f.admin_url("/keys/rotate"))).json(&json!({"expectedVersion": "one"})),
            "body",
        ),
        (
            f.admin(http.post(f.admin_url(&format!("/devices/{}/revoke", a.id)))).header("content-type", "application/json").body("{"),
            "body",
        ),
        (
            f.admin(http.post(f.admin_url("/keys/rotate"))).json(&json!({"expectedVersion": 1, "envelopes": [{"deviceId": "x", "encryptedKey": ""}]})),
            "envelopes.deviceId",
        ),
    ];
    for (request, field) in bad {
        let (status, err) = call(request).await;
        assert_eq!(status, 400, "{field}: {err}");
        assert_eq!(err["code"], "VALIDATION_FAILED", "{field}");
        assert_eq!(err["field"], field, "{err}");
    }
    // An envelope that isn't one: 400 with the library's code.
    let (status, err) = call(
        http.post(f.url(&format!("/devices/{}/activate", a.id)))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode([1u8; 40])})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("INVALID_ENVELOPE"))
    );
    // Admin without the realm header: 400; with an unknown realm: 404.
    let (status, _) = call(
        http.post(f.admin_url("/keys/rotate"))
            .bearer_auth(&f.server.admin_token)
            .json(&json!({"expectedVersion": 1, "envelopes": []})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, err) = call(
        http.post(f.admin_url("/keys/rotate"))
            .bearer_auth(&f.server.admin_token)
            .header(REALM_HEADER, "nope")
            .json(&json!({"expectedVersion": 1, "envelopes": []})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("REALM_NOT_FOUND"))
    );

    // 404: unknown devices, requests, keys.
    let ghost = DeviceId::generate(chrono::Utc::now());
    let ghost_request = keystead::id::KeyRequestId::generate(chrono::Utc::now());
    let missing = [
        (
            http.get(f.url(&format!("/devices/{ghost}")))
                .bearer_auth(&alice.token),
            "DEVICE_NOT_FOUND",
        ),
        (
            http.post(f.url(&format!("/devices/{ghost}/heartbeat")))
                .bearer_auth(&alice.token),
            "DEVICE_NOT_FOUND",
        ),
        (
            http.get(f.url(&format!("/devices/{}/key", a.id)))
                .bearer_auth(&alice.token),
            "NO_KEY_AVAILABLE",
        ),
        (
            http.post(f.url(&format!("/devices/{ghost}/activate")))
                .bearer_auth(&alice.token)
                .json(&json!({"encryptedKey": "AAAA"})),
            "DEVICE_NOT_FOUND",
        ),
        (
            http.get(f.url(&format!("/devices/key-requests/{ghost_request}")))
                .bearer_auth(&alice.token),
            "KEY_REQUEST_NOT_FOUND",
        ),
        (
            f.admin(http.delete(f.admin_url(&format!("/devices/{ghost}")))),
            "DEVICE_NOT_FOUND",
        ),
        (
            f.admin(http.post(f.admin_url(&format!("/devices/{ghost}/revoke")))),
            "DEVICE_NOT_FOUND",
        ),
        (
            http.get(f.url(&format!("/keys/version?deviceId={ghost}")))
                .bearer_auth(&alice.token),
            "DEVICE_NOT_FOUND",
        ),
    ];
    for (request, code) in missing {
        let (status, err) = call(request).await;
        assert_eq!((status, err["code"].as_str()), (404, Some(code)), "{err}");
    }

    // Activate Alice's device so she can act; then 409s.
    let key = DeviceClient::new_group_key().unwrap();
    let sealed = alice
        .client
        .as_ref()
        .unwrap()
        .seal_for(&a, 1, &key)
        .unwrap();
    let (status, _) = call(
        http.post(f.url(&format!("/devices/{}/activate", a.id)))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode(&sealed)})),
    )
    .await;
    assert_eq!(status, 200);
    // Activating twice is an invalid transition.
    let (status, err) = call(
        http.post(f.url(&format!("/devices/{}/activate", a.id)))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode(&sealed)})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("INVALID_TRANSITION"))
    );
    // The group (limit 2) is full.
    let (status, err) = call(
        http.post(f.url("/devices"))
            .bearer_auth(&alice.token)
            .json(&json!({"name": "third", "platform": "web", "publicKey": STANDARD.encode(DeviceClient::generate(f.realm, f.group, ghost).unwrap().public_key())})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("DEVICE_LIMIT_REACHED"))
    );
    assert_eq!(err["limit"], 2);
    // A public key another device of the group has.
    let (status, err) = call(
        http.put(f.url(&format!("/devices/{}/public-key", b.id)))
            .bearer_auth(&bob.token)
            .json(&json!({"publicKey": STANDARD.encode(a.public_key)})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("PUBLIC_KEY_IN_USE"))
    );
    // Reject, then reject again: no longer pending.
    let (status, _) = call(
        http.post(f.url(&format!("/devices/key-requests/{request_id}/reject")))
            .bearer_auth(&alice.token),
    )
    .await;
    assert_eq!(status, 204);
    let (status, err) = call(
        http.post(f.url(&format!("/devices/key-requests/{request_id}/grant")))
            .bearer_auth(&alice.token)
            .json(&json!({"encryptedKey": STANDARD.encode(&sealed), "deviceId": a.id.to_string()})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("KEY_REQUEST_NOT_PENDING"))
    );
    // Revoking twice.
    let (status, _) =
        call(f.admin(http.post(f.admin_url(&format!("/devices/{}/revoke", b.id))))).await;
    assert_eq!(status, 204);
    let (status, err) =
        call(f.admin(http.post(f.admin_url(&format!("/devices/{}/revoke", b.id))))).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some("INVALID_TRANSITION"))
    );
    // A rotation missing Alice's envelope.
    let (status, err) = call(
        f.admin(http.post(f.admin_url("/keys/rotate")))
            .json(&json!({"expectedVersion": 1, "envelopes": []})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("ENVELOPE_SET_MISMATCH"))
    );
    // Count and presence answer for members.
    let (status, count) = call(http.get(f.url("/devices/count")).bearer_auth(&alice.token)).await;
    assert_eq!(status, 200);
    assert_eq!(
        count,
        json!({"count": 1, "limit": 2, "limitReached": false})
    );
    f.server.stop().await;
}

/// The `end` event a stream sends when its authorization ends: its code.
async fn end_code(events: &mut SseReader) -> String {
    loop {
        let event = events.next().await;
        if event.event.as_deref() == Some("end") {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            return data["code"].as_str().unwrap().to_owned();
        }
    }
}

/// An event stream ends within seconds of its authorization: the
/// subscriber's group membership removed, its session logged out; and a
/// user holds only so many streams at once.
#[tokio::test]
async fn streams_end_with_their_authorization() {
    let f = fixture(Backend::Memory, 5).await;
    let http = f.server.http.clone();
    let mut alice = f.subscribe(&f.alice.token, None).await;
    let status = http
        .delete(f.server.url(&format!(
            "/admin/realms/fam/groups/{}/members/{}",
            f.group,
            claims_of(&f, &f.alice.token).await.sub
        )))
        .bearer_auth(&f.server.admin_token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert_eq!(end_code(&mut alice).await, "NOT_GROUP_MEMBER");

    // Bob may hold the maximum, not one more; closing one frees a place.
    let max = f.server.state.max_streams_per_user;
    let mut bobs = Vec::new();
    for _ in 0..max {
        bobs.push(f.subscribe(&f.bob.token, None).await);
    }
    let extra = || {
        http.get(f.url("/devices/events"))
            .bearer_auth(&f.bob.token)
            .send()
    };
    let refused = extra().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "TOO_MANY_STREAMS");
    drop(bobs.pop());
    // The server notices the closed connection when it next writes to it;
    // poll until the place is free.
    let mut reopened = None;
    for _ in 0..100 {
        let response = extra().await.unwrap();
        if response.status() == 200 {
            reopened = Some(SseReader::new(response));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bobs.push(reopened.expect("a closed stream gives its place back"));

    // Logging out ends every stream of the session.
    let claims = claims_of(&f, &f.bob.token).await;
    f.server
        .ks()
        .tokens(f.realm)
        .logout(claims.sid)
        .await
        .unwrap();
    for events in &mut bobs {
        assert_eq!(end_code(events).await, "TOKEN_REVOKED");
    }
    f.server.stop().await;
}

async fn claims_of(f: &Fixture, token: &str) -> keystead::token::AccessClaims {
    f.server
        .ks()
        .tokens(f.realm)
        .verify_access_token(token, &f.server.state.audience)
        .await
        .unwrap()
}
