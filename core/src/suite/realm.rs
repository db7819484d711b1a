//! Realm cases.

use super::keystead;
use crate::Error;
use crate::realm::{MfaPolicy, RealmError, RealmSettings, RealmStatus};
use crate::store::conformance::Harness;
use crate::store::key::Key;
use crate::store::{Batch, Precondition};
use chrono::Duration;

/// Create, read back by id and name, list in pages.
pub async fn create_get_list_and_names(h: Harness) {
    let (ks, clock) = keystead(&h).await;
    let realms = ks.realms();
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            realms
                .create(&format!("realm-{i}"), RealmSettings::default())
                .await
                .unwrap(),
        );
        clock.advance(Duration::milliseconds(5));
    }
    let acme = &created[2];
    assert_eq!(realms.get(acme.id).await.unwrap(), *acme);
    assert_eq!(realms.get_by_name("realm-2").await.unwrap(), *acme);
    assert!(matches!(
        realms.get_by_name("nobody").await,
        Err(Error::Realm(RealmError::NotFound))
    ));
    assert!(matches!(
        realms.get_by_name("Bad Name").await,
        Err(Error::Validation(_))
    ));

    let first = realms.list(None, 2).await.unwrap();
    assert_eq!(first.items, created[..2]);
    let second = realms.list(first.next, 2).await.unwrap();
    assert_eq!(second.items, created[2..4]);
    let last = realms.list(second.next, 2).await.unwrap();
    assert_eq!(last.items, created[4..]);
    assert_eq!(last.next, None);
    assert!(matches!(
        realms.list(None, 0).await,
        Err(Error::Validation(_))
    ));
}

/// 16 concurrent creations of one name: exactly one wins, the rest get
/// `NameTaken`, and nothing of the losers is stored.
pub async fn names_are_unique_under_concurrency(h: Harness) {
    let (ks, _) = keystead(&h).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let realms = ks.realms();
            tokio::spawn(async move { realms.create("contested", RealmSettings::default()).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(Error::Realm(RealmError::NameTaken { name })) => assert_eq!(name, "contested"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(ks.realms().list(None, 100).await.unwrap().items.len(), 1);
}

/// Disable and enable change status; invalid settings write nothing.
pub async fn disable_enable_update_and_validation(h: Harness) {
    let (ks, clock) = keystead(&h).await;
    let realms = ks.realms();
    let realm = realms
        .create("acme", RealmSettings::default())
        .await
        .unwrap();
    clock.advance(Duration::seconds(10));

    let disabled = realms.disable(realm.id).await.unwrap();
    assert_eq!(disabled.status, RealmStatus::Disabled);
    assert_eq!(
        disabled.updated_at,
        realm.created_at + Duration::seconds(10)
    );
    assert_eq!(
        realms.get(realm.id).await.unwrap().status,
        RealmStatus::Disabled
    );
    assert_eq!(
        realms.enable(realm.id).await.unwrap().status,
        RealmStatus::Active
    );

    let settings = RealmSettings {
        mfa: MfaPolicy::Required,
        issuer_url: Some("https://id.example.com/realms/acme".into()),
        ..RealmSettings::default()
    };
    let updated = realms
        .update_settings(realm.id, settings.clone())
        .await
        .unwrap();
    assert_eq!(updated.settings, settings);

    let mut bad = settings.clone();
    bad.lockout.hard_cap = 1000;
    assert!(matches!(
        realms.update_settings(realm.id, bad).await,
        Err(Error::Validation(_))
    ));
    assert_eq!(
        realms.get(realm.id).await.unwrap().settings,
        settings,
        "nothing written"
    );
    assert!(matches!(
        realms.create("Not-Valid", RealmSettings::default()).await,
        Err(Error::Validation(_))
    ));
}

/// Deleting removes the record, the name and every record under the
/// realm's prefix — and nothing of another realm.
pub async fn delete_sweeps_data_and_frees_the_name(h: Harness) {
    let (ks, _) = keystead(&h).await;
    let realms = ks.realms();
    let doomed = realms
        .create("doomed", RealmSettings::default())
        .await
        .unwrap();
    let kept = realms
        .create("kept", RealmSettings::default())
        .await
        .unwrap();
    let store = ks.store();
    for (realm, n) in [(doomed.id, 600u32), (kept.id, 3)] {
        let mut batch = Batch::new();
        for i in 0..n {
            let key = crate::realm::service::data_prefix(realm)
                .push("thing")
                .push(i.to_be_bytes());
            batch.put(key, vec![1], Precondition::Absent).unwrap();
        }
        store.commit(batch).await.unwrap();
    }
    // The 600 records plus the realm's signing-key record.
    assert_eq!(realms.delete(doomed.id).await.unwrap(), 601);
    assert!(matches!(
        realms.get(doomed.id).await,
        Err(Error::Realm(RealmError::NotFound))
    ));
    assert!(matches!(
        realms.delete(doomed.id).await,
        Err(Error::Realm(RealmError::NotFound))
    ));
    let left = store
        .scan(Key::new().push("realm").as_bytes(), None, 1000)
        .await
        .unwrap();
    // The kept realm's 3 records and its signing key.
    assert_eq!(left.len(), 4, "only the other realm's records remain");
    let kept_prefix = crate::realm::service::data_prefix(kept.id);
    assert!(
        left.iter()
            .all(|(k, _)| k.starts_with(kept_prefix.as_bytes()))
    );
    // The name is free again, for a new realm with a new id.
    let again = realms
        .create("doomed", RealmSettings::default())
        .await
        .unwrap();
    assert_ne!(again.id, doomed.id);
    assert_eq!(realms.get(kept.id).await.unwrap(), kept);
}
