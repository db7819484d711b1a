//! `cargo run --example quickstart` — keystead embedded on SQLite, no setup.
//!
//! Opens (or creates) `keystead-quickstart.db` in the current directory and
//! walks the main flow: realm → user → password login → TOTP enrolment (the
//! quickstart computes the codes itself, like an authenticator app) → login
//! through the MFA challenge → access token issued, verified and refreshed →
//! a device group with two devices activated by sealed group-key envelopes →
//! one device revoked with an atomic key rotation that the other can open.
//! Along the way it shows that a wrong password and an unknown user fail
//! alike and that guessing gets throttled. Running it twice works: the
//! second run reuses the file and creates a realm with a fresh name.
#![forbid(unsafe_code)]

use keystead::client::DeviceClient;
use keystead::crypto::DeviceSecretKey;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::device::{DeviceStatus, NewGroup};
use keystead::mfa::{MfaAnswer, totp_code};
use keystead::realm::{PasswordPolicy, RealmSettings};
use keystead::secret::SecretString;
use keystead::token::AccessRequest;
use keystead::user::{Authority, LoginOutcome};
use keystead::{Error, Keystead};
use keystead_sqlite::SqliteStore;

/// The quickstart's database, in the current directory.
const DB_FILE: &str = "keystead-quickstart.db";

#[tokio::main]
#[allow(clippy::too_many_lines)] // a walkthrough that reads top to bottom, one step per block
async fn main() -> Result<(), Error> {
    let existed = std::path::Path::new(DB_FILE).exists();
    let store = SqliteStore::open(DB_FILE).await?;
    if existed {
        println!("reusing {DB_FILE} (delete it to start afresh)");
    } else {
        println!("created {DB_FILE} (SQLite, WAL, synchronous=FULL)");
    }
    // A demo KEK: production passes a KMS-backed KeyProvider.
    let ks = Keystead::builder()
        .store(store)
        .keys(StaticKeyProvider::generate()?)
        .build()?;

    // A fresh realm name each run, so the file can be reused.
    let existing = ks.realms().list(None, 1000).await?.items.len();
    let name = format!("demo-{}", existing + 1);
    let settings = RealmSettings {
        // The quickstart keeps argon2 cheap so it finishes in a blink; the
        // default is m=19456 KiB, t=2, p=1.
        password: PasswordPolicy {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            ..PasswordPolicy::default()
        },
        ..RealmSettings::default()
    };
    let realm = ks.realms().create(&name, settings).await?;
    println!("realm    {} ({})", realm.name, realm.id);

    let users = ks.users(realm.id);
    let alice = users
        .register(
            "Alice",
            Some("alice@example.com"),
            "correct horse battery".into(),
        )
        .await?;
    println!("user     {} ({})", alice.username, alice.id);
    match users
        .register("ALICE", None, "another password".into())
        .await
    {
        Err(e) => println!(
            "register ALICE again -> {} (names are case-insensitive)",
            e.code()
        ),
        Ok(_) => println!("unexpected: a second ALICE was registered"),
    }

    let password = || SecretString::from("correct horse battery");
    let session = match users.authenticate("alice", password()).await? {
        LoginOutcome::Authenticated(session) => session,
        other => unreachable!("alice has no second factor yet: {other:?}"),
    };
    println!("login    session {} with {:?}", session.id, session.methods);
    for (who, password) in [("alice", "wrong password"), ("mallory", "any password")] {
        let code = match users.authenticate(who, password.into()).await {
            Err(e) => e.code(),
            Ok(_) => "UNEXPECTED_SUCCESS",
        };
        println!("login    {who} with a bad password -> {code}");
    }

    // TOTP: the secret and otpauth:// URI are shown once; activating needs a
    // valid code, which this program computes like an authenticator app.
    // Adding a credential needs a fresh login (step-up): the session that
    // just proved the password vouches for it.
    let mfa = ks.mfa(realm.id);
    let enrolment = mfa
        .create_totp_key(alice.id, Authority::Session(session.id))
        .await?;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let code = totp_code(enrolment.key.params, enrolment.secret_base32.expose(), now)?;
    mfa.activate(alice.id, enrolment.key.id, &code).await?;
    println!("mfa      TOTP key {} active", enrolment.key.id);

    // The next login needs the second factor. The code of this 30 s step
    // was used for activation and can't be replayed, so answer with the
    // next step's code (accepted within the ±1 step skew).
    let LoginOutcome::MfaRequired { challenge } = users.authenticate("alice", password()).await?
    else {
        unreachable!("alice has an active TOTP key")
    };
    let next_code = totp_code(
        enrolment.key.params,
        enrolment.secret_base32.expose(),
        now + 30,
    )?;
    let session = mfa
        .complete_challenge(challenge.id, &MfaAnswer::Totp(next_code))
        .await?;
    println!(
        "login    through the MFA challenge: session {} with {:?}",
        session.id, session.methods
    );

    // Tokens: a signed access token and a rotating refresh token, for a
    // registered client only, and never more than it registered.
    let api = "https://api.example.com";
    ks.oauth(realm.id)
        .create_client(keystead::oauth::NewClient::first_party(
            "quickstart",
            api,
            vec!["profile".into()],
        ))
        .await?;
    let tokens = ks.tokens(realm.id);
    let request = AccessRequest::public("quickstart", vec!["profile".into()]);
    let wider = AccessRequest::public("quickstart", vec!["admin".into()]);
    let refused = tokens.issue(session.id, &wider).await;
    println!(
        "token    asking for a scope the client never registered -> {}",
        refused.err().map_or("UNEXPECTED_SUCCESS", |e| e.code())
    );
    let issued = tokens.issue(session.id, &request).await?;
    let claims = tokens
        .verify_access_token(issued.access_token.expose(), api)
        .await?;
    println!(
        "token    access token for sub {} verified (expires in {} s)",
        claims.sub, issued.expires_in
    );
    let refresh = issued.refresh_token.expect("issue returns a refresh token");
    tokens.refresh(&refresh, &request.client_id).await?;
    let replay = tokens.refresh(&refresh, &request.client_id).await;
    println!(
        "token    refreshed; replaying the old refresh token -> {}",
        replay.err().map_or("UNEXPECTED_SUCCESS", |e| e.code())
    );

    // Devices and an end-to-end-encrypted group key: keystead stores
    // envelopes it cannot open; only the devices hold private keys.
    let devices = ks.devices(realm.id);
    let group = devices
        .create_group("alice-devices", NewGroup::default())
        .await?;
    let group_key = DeviceClient::new_group_key()?;
    let mut clients = Vec::new();
    for (name, platform) in [("phone", "ios"), ("laptop", "macos")] {
        let secret = DeviceSecretKey::generate()?;
        let device = devices
            .register(group.id, name, platform, &secret.public_key().to_bytes())
            .await?;
        let client = DeviceClient::new(realm.id, group.id, device.id, secret);
        let envelope = client.seal_for(&device, group.key_version, &group_key)?;
        let device = devices.activate(group.id, device.id, &envelope).await?;
        println!(
            "device   {name} {} is {:?} with key version {}",
            device.id, device.status, group.key_version
        );
        clients.push((client, device));
    }

    // Revoke the laptop and rotate the key in the same commit: the phone gets
    // the new key, the laptop never does.
    let (phone, phone_device) = &clients[0];
    let (_, laptop) = &clients[1];
    let members = devices.list(group.id, Some(DeviceStatus::Active)).await?;
    let new_key = DeviceClient::new_group_key()?;
    let rotation = phone.rotation(&members, group.key_version, &new_key, Some(laptop.id))?;
    let rotated = devices
        .revoke(group.id, laptop.id, Some(rotation))
        .await?
        .expect("a rotation was requested");
    let envelope = devices.device_key(group.id, phone_device.id).await?;
    let opened = phone.open(&envelope, rotated.new_version)?;
    println!(
        "rotate   laptop revoked; key version {} -> {}; phone opened the new key: {}",
        rotated.previous_version,
        rotated.new_version,
        opened.expose() == new_key.expose()
    );

    // Guessing someone's password gets throttled (no argon2 while refused).
    let mut last = "";
    for attempt in 1..=8 {
        if let Err(e) = users.authenticate("mallory", "guess".into()).await
            && e.code() != last
        {
            println!("guess    attempt {attempt} -> {}", e.code());
            last = e.code();
        }
    }
    Ok(())
}
