//! Property: whatever sequence of refresh-token presentations runs against
//! one family, at most one token of the family is ever live, every rotation
//! of the live token succeeds, and presenting any other token of the family
//! kills the whole family (and its session) for good.

use super::{AccessRequest, TokenError};
use crate::Keystead;
use crate::clock::ManualClock;
use crate::crypto::at_rest::StaticKeyProvider;
use crate::error::Error;
use crate::secret::SecretString;
use crate::store::MemoryStore;
use crate::user::LoginOutcome;
use proptest::prelude::*;

async fn run(picks: Vec<usize>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(crate::suite::epoch());
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .clock(clock.clone())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let realm = ks
        .realms()
        .create("acme", crate::suite::user::cheap_settings())
        .await
        .unwrap();
    let users = ks.users(realm.id);
    let tokens = ks.tokens(realm.id);
    users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    let LoginOutcome::Authenticated(session) = users
        .authenticate("alice", SecretString::from("correct horse"))
        .await
        .unwrap()
    else {
        return Err(TestCaseError::fail("unexpected MFA"));
    };
    let request = AccessRequest {
        client_id: "web".into(),
        audience: "api".into(),
        scope: Vec::new(),
    };
    let first = tokens.issue(session.id, &request).await.unwrap();
    let mut issued = vec![first.refresh_token.unwrap()];
    // The model: which issued token is live, if the family lives.
    let mut live = Some(0usize);
    for pick in picks {
        let i = pick % issued.len();
        let presented = SecretString::from(issued[i].expose());
        let result = tokens.refresh(&presented, "web").await;
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
        picks in proptest::collection::vec(0usize..8, 1..12)
    ) {
        futures::executor::block_on(run(picks))?;
    }
}
