//! Property: whatever sequence of refresh-token presentations runs against
//! one family — each through one of two library instances on the same
//! store, so each instance's remembered rotation is now fresh, now stale —
//! at most one token of the family is ever live, every rotation of the live
//! token succeeds, and presenting any other token of the family kills the
//! whole family (and its session) for good.

use super::{AccessRequest, TokenError};
use crate::Keystead;
use crate::clock::ManualClock;
use crate::crypto::at_rest::StaticKeyProvider;
use crate::error::Error;
use crate::secret::SecretString;
use crate::store::{MemoryStore, Store};
use crate::suite::probe::ProbeStore;
use crate::user::LoginOutcome;
use proptest::prelude::*;
use std::sync::Arc;

/// An instance on `store` with realm `acme` and one logged-in user:
/// the instance, the user and token handles, the user's id and session.
async fn setup(
    store: Arc<dyn Store>,
) -> (
    Keystead,
    crate::user::Users,
    super::Tokens,
    crate::id::UserId,
    crate::user::Session,
) {
    let ks = Keystead::builder()
        .shared_store(store)
        .clock(ManualClock::new(crate::suite::epoch()))
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let realm = ks
        .realms()
        .create("acme", crate::suite::user::cheap_settings())
        .await
        .unwrap();
    ks.oauth(realm.id)
        .create_client(crate::oauth::NewClient::first_party(
            "web",
            "api",
            Vec::new(),
        ))
        .await
        .unwrap();
    let users = ks.users(realm.id);
    let tokens = ks.tokens(realm.id);
    let user = users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    let Ok(LoginOutcome::Authenticated(session)) = users
        .authenticate("alice", SecretString::from("correct horse"))
        .await
    else {
        panic!("unexpected MFA");
    };
    (ks, users, tokens, user.id, session)
}

async fn run(picks: Vec<(usize, bool)>) -> Result<(), TestCaseError> {
    let (ks, users, tokens, _, session) = setup(Arc::new(MemoryStore::new())).await;
    let twin = ks.second_instance().tokens(tokens.realm());
    let request = AccessRequest::public("web", Vec::new());
    let first = tokens.issue(session.id, &request).await.unwrap();
    let mut issued = vec![first.refresh_token.unwrap()];
    // The model: which issued token is live, if the family lives.
    let mut live = Some(0usize);
    for (pick, by_twin) in picks {
        let i = pick % issued.len();
        let presented = SecretString::from(issued[i].expose());
        let by = if by_twin { &twin } else { &tokens };
        let result = by.refresh(&presented, "web").await;
        match (live, result) {
            (Some(current), Ok(pair)) if current == i => {
                issued.push(pair.refresh_token.unwrap());
                live = Some(issued.len() - 1);
            }
            (Some(current), Err(Error::Token(TokenError::RefreshReused))) if current != i => {
                live = None;
            }
            (None, Err(Error::Token(TokenError::InvalidGrant))) => {}
            (model, other) => {
                return Err(TestCaseError::fail(format!(
                    "model {model:?}, presented {i}: got {other:?}"
                )));
            }
        }
        let mut active = Vec::new();
        for (n, token) in issued.iter().enumerate() {
            let info = tokens
                .introspect(&SecretString::from(token.expose()))
                .await
                .unwrap();
            if info["active"] == true {
                active.push(n);
            }
        }
        prop_assert_eq!(active, live.into_iter().collect::<Vec<_>>());
        prop_assert_eq!(users.get_session(session.id).await.is_ok(), live.is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn at_most_one_live_token_and_reuse_kills_the_family(
        picks in proptest::collection::vec((0usize..8, any::<bool>()), 1..12)
    ) {
        futures::executor::block_on(run(picks))?;
    }
}

/// The rotation an instance made last is the starting point of the
/// family's next refresh: refreshing the token it just handed out reads
/// nothing, while a token it did not hand out (the first of a family, or
/// one after another instance's write) is refreshed on a read.
#[tokio::test]
async fn refreshing_the_token_just_handed_out_reads_nothing() {
    let store = ProbeStore::new(Arc::new(MemoryStore::new()));
    let (ks, _, tokens, user, session) = setup(store.clone()).await;
    let request = AccessRequest::public("web", Vec::new());
    let pair = tokens.issue(session.id, &request).await.unwrap();
    let refresh = |pair: &super::TokenResponse| {
        let token = SecretString::from(pair.refresh_token.as_ref().unwrap().expose());
        let tokens = tokens.clone();
        async move { tokens.refresh(&token, "web").await }
    };

    let before = store.reads();
    let first = refresh(&pair).await.unwrap();
    assert!(store.reads() > before, "the family's first token is read");
    let before = store.reads();
    let second = refresh(&first).await.unwrap();
    let third = refresh(&second).await.unwrap();
    assert_eq!(store.reads(), before, "remembered rotations read nothing");

    // A write the memory does not know about — here a profile update made
    // through another instance — fails the remembered commit's check of
    // the user record; the refresh then reads and still succeeds.
    ks.second_instance()
        .users(tokens.realm())
        .update_profile(
            user,
            crate::user::ProfileUpdate {
                email: None,
                display_name: Some(Some("Alice".into())),
            },
        )
        .await
        .unwrap();
    let before = store.reads();
    let fourth = refresh(&third).await.unwrap();
    assert!(
        store.reads() > before,
        "a changed record sends it to a read"
    );
    tokens
        .verify_access_token(fourth.access_token.expose(), "api")
        .await
        .unwrap();
}
