//! `cargo run --example quickstart` — keystead's storage contract at work.
//!
//! This first version shows the foundation every domain builds on: typed ids,
//! the key layout, versioned records and atomic conditional batches. Later
//! issues replace the body with the full realm → user → MFA → token → device
//! flow.
#![forbid(unsafe_code)]

use keystead::clock::{Clock, SystemClock};
use keystead::id::{RealmId, UserId};
use keystead::store::key::Key;
use keystead::store::{Batch, Precondition, StorageError, Store, record};
use keystead_sqlite::SqliteStore;
use serde::{Deserialize, Serialize};

/// The quickstart's database, in the current directory.
const DB_FILE: &str = "keystead-quickstart.db";

#[derive(Debug, Serialize, Deserialize)]
enum DemoUser {
    V1 { id: UserId, name: String },
}

#[tokio::main]
async fn main() -> Result<(), keystead::Error> {
    let path = std::path::Path::new(DB_FILE);
    let existed = path.exists();
    let store = SqliteStore::open(path).await?;
    if existed {
        println!("reusing {DB_FILE} (delete it to start afresh); this run adds a new realm");
    } else {
        println!("created {DB_FILE} (SQLite, WAL, synchronous=FULL)");
    }
    let now = SystemClock.now();
    let realm = RealmId::generate(now);
    println!("realm {realm}");

    for name in ["alice", "bob", "alice"] {
        let user = UserId::generate(now);
        let record_key = Key::new()
            .push("realm")
            .push(realm.to_bytes())
            .push("user")
            .push(user.to_bytes());
        let index_key = Key::new()
            .push("realm")
            .push(realm.to_bytes())
            .push("username")
            .push(name);
        let mut batch = Batch::new();
        batch
            .put(
                record_key.clone(),
                record::encode(
                    record_key.as_bytes(),
                    &DemoUser::V1 {
                        id: user,
                        name: name.into(),
                    },
                )?,
                Precondition::Absent,
            )?
            .put(index_key, user.to_bytes().to_vec(), Precondition::Absent)?;
        match store.commit(batch).await {
            Ok(()) => println!("registered {name} as {user}"),
            Err(StorageError::Conflict { .. }) => {
                println!("{name} is taken: the unique index refused the whole batch");
            }
            Err(e) => return Err(e.into()),
        }
    }

    let users = Key::new().push("realm").push(realm.to_bytes()).push("user");
    for (key, stored) in store.scan(users.as_bytes(), None, 10).await? {
        let DemoUser::V1 { id, name } = record::decode(&key, &stored.value)?;
        println!("user {name} ({id}) at version {}", stored.version);
    }
    store.close().await?;
    Ok(())
}
