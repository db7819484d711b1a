//! `cargo run --example quickstart` — keystead embedded on SQLite, no setup.
//!
//! Opens (or creates) `keystead-quickstart.db` in the current directory,
//! creates a realm, registers a user, logs in, shows that a wrong password
//! and an unknown user fail the same way, that lockout throttles guessing,
//! and that uniqueness holds. Running it twice works: the second run reuses
//! the file and creates a realm with a fresh name. Later issues grow it into
//! the full MFA → token → device → group-key flow.
#![forbid(unsafe_code)]

use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::realm::{PasswordPolicy, RealmSettings};
use keystead::user::LoginOutcome;
use keystead::{Error, Keystead};
use keystead_sqlite::SqliteStore;

/// The quickstart's database, in the current directory.
const DB_FILE: &str = "keystead-quickstart.db";

#[tokio::main]
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

    match users
        .authenticate("alice", "correct horse battery".into())
        .await?
    {
        LoginOutcome::Authenticated(session) => {
            println!("login    session {} with {:?}", session.id, session.methods);
        }
        LoginOutcome::MfaRequired { .. } => println!("login    needs a second factor"),
    }
    for (who, password) in [("alice", "wrong password"), ("mallory", "any password")] {
        let code = match users.authenticate(who, password.into()).await {
            Err(e) => e.code(),
            Ok(_) => "UNEXPECTED_SUCCESS",
        };
        println!("login    {who} with a bad password -> {code}");
    }
    let mut last = "";
    for attempt in 1..=8 {
        if let Err(e) = users.authenticate("alice", "guess".into()).await
            && e.code() != last
        {
            println!("guess    attempt {attempt} -> {}", e.code());
            last = e.code();
        }
    }
    Ok(())
}
