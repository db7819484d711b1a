//! The CLI's logic against the in-process server: register → activate →
//! key open, a second device activated by the first, a key request
//! granted, and a rotation that revokes a device — each device opening its
//! envelopes locally with its own secret key file.
#![allow(clippy::too_many_lines)] // end-to-end walkthroughs read top to bottom

// The in-process server harness of keystead-axum's own tests.
#[path = "../../axum/tests/common/mod.rs"]
mod common;
#[path = "../../axum/tests/support/mod.rs"]
mod support;

use keystead::id::GroupId;
use keystead::secret::SecretString;
use keystead_examples::cli::account::Session;
use keystead_examples::cli::{AdminAuth, Cli, CliError};
use serde_json::json;

fn cli_for(server: &common::TestServer, home: &std::path::Path, token: &str) -> Cli {
    let cli = Cli::new(&server.base, home).unwrap();
    cli.save_session(&Session {
        access_token: SecretString::new(token.to_owned()),
        refresh_token: None,
    })
    .unwrap();
    cli
}

#[tokio::test]
async fn cli_devices_share_open_and_rotate_the_group_key() {
    let server = common::start().await;
    let realm = server.create_realm("home").await;
    let (alice_id, alice_token) = server.user_with_token(realm, "alice").await;
    let (bob_id, bob_token) = server.user_with_token(realm, "bob").await;
    let (status, group) = common::call(
        server
            .http
            .post(server.url("/admin/realms/home/groups"))
            .bearer_auth(&server.admin_token)
            .json(
                &json!({"name": "family", "members": [alice_id.to_string(), bob_id.to_string()]}),
            ),
    )
    .await;
    assert_eq!(status, 201);
    let group: GroupId = group["groupId"].as_str().unwrap().parse().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let alice = cli_for(&server, &homes.path().join("alice"), &alice_token);
    let bob = cli_for(&server, &homes.path().join("bob"), &bob_token);
    let bob_tablet = cli_for(&server, &homes.path().join("bob-tablet"), &bob_token);

    assert_eq!(
        alice.token_show().unwrap().claims["sub"],
        alice_id.to_string()
    );

    // Alice's laptop: register, then start the group key on it.
    let a = alice
        .device_register(group, "laptop", "linux")
        .await
        .unwrap();
    assert_eq!(a.status.as_str(), "pending");
    let key_file = homes.path().join(format!("alice/devices/{group}.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key file is owner-only");
    }
    let again = alice.device_register(group, "laptop", "linux").await;
    assert!(
        matches!(again, Err(CliError::Usage(_))),
        "one device per group and home"
    );
    let activated = alice.device_activate(group, None).await.unwrap();
    assert_eq!(activated.status.as_str(), "active");
    let alice_key = alice.device_key(group).await.unwrap();
    assert_eq!(alice_key.version, 1);

    // Bob's phone: pending, can't start a second key, has no key yet.
    let b = bob
        .device_register(group, "phone", "android")
        .await
        .unwrap();
    assert!(matches!(
        bob.device_activate(group, None).await,
        Err(CliError::Usage(_))
    ));
    let none = bob.device_key(group).await.unwrap_err();
    assert_eq!(none.code(), Some("NO_KEY_AVAILABLE"));
    // Alice's laptop seals the key to it.
    alice.device_activate(group, Some(b.id)).await.unwrap();
    let bob_key = bob.device_key(group).await.unwrap();
    assert_eq!(bob_key.version, 1);
    assert_eq!(bob_key.key.expose(), alice_key.key.expose());
    assert_eq!(bob_key.fingerprint(), alice_key.fingerprint());

    // Bob's tablet asks; Bob's phone grants.
    let t = bob_tablet
        .device_register(group, "tablet", "ipados")
        .await
        .unwrap();
    let request = bob_tablet.device_request(group).await.unwrap();
    let pending = bob.key_requests(group).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].device_id, t.id);
    bob.device_grant(group, &request.id.to_string())
        .await
        .unwrap();
    assert_eq!(
        bob_tablet.device_key(group).await.unwrap().key.expose(),
        alice_key.key.expose()
    );
    let twice = bob
        .device_grant(group, &request.id.to_string())
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Some("KEY_REQUEST_NOT_PENDING"));

    // The administrator (through Alice's CLI) revokes the tablet and
    // rotates to version 2 in one commit.
    let admin = AdminAuth {
        token: SecretString::new(server.admin_token.clone()),
        realm: "home".into(),
    };
    let rotated = alice
        .device_rotate(group, &admin, Some(t.id))
        .await
        .unwrap();
    assert_eq!(rotated["newVersion"], 2);
    assert_eq!(rotated["envelopes"], 2);
    let alice_v2 = alice.device_key(group).await.unwrap();
    let bob_v2 = bob.device_key(group).await.unwrap();
    assert_eq!(alice_v2.version, 2);
    assert_eq!(alice_v2.key.expose(), bob_v2.key.expose());
    assert_ne!(alice_v2.key.expose(), alice_key.key.expose());
    let revoked = bob_tablet.device_key(group).await.unwrap_err();
    assert_eq!(revoked.code(), Some("NO_KEY_AVAILABLE"));
    // A plain rotation afterwards, and a wrong admin token.
    let rotated = alice.device_rotate(group, &admin, None).await.unwrap();
    assert_eq!(rotated["newVersion"], 3);
    let wrong = AdminAuth {
        token: SecretString::new("nope".into()),
        realm: "home".into(),
    };
    let refused = alice.device_rotate(group, &wrong, None).await.unwrap_err();
    assert!(matches!(refused, CliError::Server { status, .. } if status == 401));

    server.stop().await;
}

#[tokio::test]
async fn cli_without_login_or_device_says_what_to_do() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    let home = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server.base, home.path()).unwrap();
    let group = GroupId::generate(chrono::Utc::now());
    assert!(matches!(
        cli.device_key(group).await,
        Err(CliError::Usage(_))
    ));
    assert!(matches!(cli.group(group).await, Err(CliError::Usage(_))));
    // A forged session: the server refuses it.
    let cli = cli_for(&server, home.path(), "e30.e30.c2ln");
    let refused = cli.group(group).await.unwrap_err();
    assert!(matches!(refused, CliError::Server { status, .. } if status == 401));
    server.stop().await;
}

/// Seed 003's password grant, then seed 001's TOTP enrolment, as the CLI
/// drives them.
#[tokio::test]
async fn the_cli_logs_in_and_enrols_totp_through_these_routes() {
    let server = common::start_on(keystead_axum::Backend::Memory).await;
    let (realm_id, _) = support::realm(&server, "acme", keystead::realm::MfaPolicy::Optional).await;
    server
        .ks()
        .users(realm_id)
        .register("erin", None, SecretString::new(support::PASSWORD.into()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server.base, home.path()).unwrap();
    let password = SecretString::new(support::PASSWORD.into());
    // Seed 003's password grant, then seed 001's key creation and activation.
    cli.login("acme", "erin", &password, "cli").await.unwrap();
    assert_eq!(cli.token_show().unwrap().claims["client_id"], "cli");
    let enrolment = cli.totp_enroll(&password, 1).await.unwrap();
    cli.totp_activate(&enrolment.key_id, &support::totp_now(&enrolment.otpauth))
        .await
        .unwrap();
    let user = server
        .ks()
        .users(realm_id)
        .get_by_username("erin")
        .await
        .unwrap();
    assert!(
        server
            .ks()
            .users(realm_id)
            .has_active_factor(user.id)
            .await
            .unwrap()
    );
    server.stop().await;
}
