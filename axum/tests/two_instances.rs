//! Two instances of the example server on ONE PostgreSQL database — the
//! deployment of several backend instances behind a load balancer
//! (issue 10). Each instance has its own connection pool and library
//! instance; all they share is the database (and the key-encryption key).
//!
//! A refresh token issued by one instance rotates on the other, and reuse
//! of a rotated token is caught whichever instance sees it; a device
//! registered and a group key rotated on one instance reach an event
//! subscriber connected to the other (PostgreSQL `LISTEN/NOTIFY` wakes it).

mod common;
mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{SseReader, TestServer, call};
use keystead::client::DeviceClient;
use keystead::device::Device;
use keystead::id::{DeviceId, GroupId, RealmId, UserId};
use keystead::realm::MfaPolicy;
use keystead::secret::SecretString;
use keystead_axum::auth::REALM_HEADER;
use serde_json::{Value, json};
use support::{PASSWORD, realm, verify_with_jwks};

const P: &str = "/authlance/identity/api/v1/realm";

async fn grant(server: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    call(
        server
            .http
            .post(server.url("/realms/acme/protocol/openid-connect/token"))
            .form(form),
    )
    .await
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("a string: {v}"))
        .to_owned()
}

/// Two instances on one database, realm `acme` made through A, and alice.
async fn pair_with_alice() -> (TestServer, TestServer, RealmId, String, UserId) {
    let (a, b) = common::start_pair_on_postgres().await;
    let (realm_id, issuer) = realm(&a, "acme", MfaPolicy::Optional).await;
    let alice = a
        .ks()
        .users(realm_id)
        .register("alice", None, SecretString::new(PASSWORD.into()))
        .await
        .unwrap()
        .id;
    (a, b, realm_id, issuer, alice)
}

fn password_grant() -> [(&'static str, &'static str); 4] {
    [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("client_id", "web"),
    ]
}

async fn refresh(server: &TestServer, token: &Value) -> (u16, Value) {
    let token = s(token);
    grant(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &token),
            ("client_id", "web"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_across_instances() {
    let (a, b, _, issuer, alice) = pair_with_alice().await;
    // Password grant on A, refresh on B, refresh again on A.
    let (status, first) = grant(&a, &password_grant()).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = refresh(&b, &first["refresh_token"]).await;
    assert_eq!(status, 200, "B refreshes A's token: {second}");
    // B's access token verifies against A's JWKS (one key set, one store).
    let jwks_a = a.url("/realms/acme/protocol/openid-connect/certs");
    let claims = verify_with_jwks(
        &a.http,
        &jwks_a,
        &s(&second["access_token"]),
        keystead_axum::DEFAULT_AUDIENCE,
        &issuer,
    )
    .await
    .expect("A's JWKS verifies B's token");
    assert_eq!(claims["sub"], alice.to_string());
    let (status, third) = refresh(&a, &second["refresh_token"]).await;
    assert_eq!(status, 200, "{third}");
    // Reuse of the first (already rotated) token on B: detected, and the
    // family dies for both instances.
    let (status, reused) = refresh(&b, &first["refresh_token"]).await;
    assert_eq!(status, 400, "{reused}");
    assert_eq!(reused["error"], "invalid_grant");
    let (status, dead) = refresh(&a, &third["refresh_token"]).await;
    assert_eq!(status, 400, "the family died everywhere: {dead}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_on_one_instance_reach_the_other() {
    let (a, b, realm_id, _, alice) = pair_with_alice().await;
    // A group made on A; a subscriber on B.
    let (status, fresh) = grant(&a, &password_grant()).await;
    assert_eq!(status, 200, "{fresh}");
    let token = s(&fresh["access_token"]);
    let (status, group) = call(
        a.http
            .post(a.url("/admin/realms/acme/groups"))
            .bearer_auth(&a.admin_token)
            .json(&json!({"name": "home", "deviceLimit": 5, "members": [alice.to_string()]})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group: GroupId = group["groupId"].as_str().unwrap().parse().unwrap();
    let groups = |server: &TestServer, tail: &str| server.url(&format!("{P}/groups/{group}{tail}"));
    let mut events = SseReader::new(
        b.http
            .get(groups(&b, "/devices/events"))
            .bearer_auth(&token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap(),
    );

    // Register and activate a device on A.
    let placeholder = DeviceId::generate(chrono::Utc::now());
    let client = DeviceClient::generate(realm_id, group, placeholder).unwrap();
    let (status, body) = call(
        a.http
            .post(groups(&a, "/devices"))
            .bearer_auth(&token)
            .json(&json!({
                "name": "phone",
                "platform": "ios",
                "publicKey": STANDARD.encode(client.public_key()),
            })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let device: Device = serde_json::from_value(body).unwrap();
    let client = client.with_device(device.id);
    let key_v1 = DeviceClient::new_group_key().unwrap();
    let sealed = client.seal_for(&device, 1, &key_v1).unwrap();
    let (status, body) = call(
        a.http
            .post(groups(&a, &format!("/devices/{}/activate", device.id)))
            .bearer_auth(&token)
            .json(&json!({"encryptedKey": STANDARD.encode(&sealed)})),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Rotate on A (admin), to version 2.
    let key_v2 = DeviceClient::new_group_key().unwrap();
    let sealed = client.seal_for(&device, 2, &key_v2).unwrap();
    let (status, rotated) = call(
        a.http
            .post(a.url(&format!("{P}/admin/groups/{group}/keys/rotate")))
            .bearer_auth(&a.admin_token)
            .header(REALM_HEADER, "acme")
            .json(&json!({
                "expectedVersion": 1,
                "envelopes": [{"deviceId": device.id.to_string(), "encryptedKey": STANDARD.encode(&sealed)}],
            })),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");

    // B's subscriber saw all three, in order.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = events.next().await;
        seen.push(event.event.unwrap_or_default());
    }
    assert_eq!(
        seen,
        ["device_registered", "device_activated", "key_rotated"],
        "events written through A reach B's stream"
    );
    // And B serves the rotated key to the device.
    let (status, key) = call(
        b.http
            .get(groups(&b, &format!("/devices/{}/key", device.id)))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["keyVersion"], 2);
    let envelope = STANDARD
        .decode(key["encryptedKey"].as_str().unwrap())
        .unwrap();
    assert_eq!(client.open(&envelope, 2).unwrap().expose(), key_v2.expose());
    drop(events);
    b.stop().await;
    a.stop().await;
}
