//! Property, on every backend: whatever sequence of user operations runs in
//! two realms, nothing created in one realm is visible or usable through the
//! other's handle.

use crate::Keystead;
use crate::clock::ManualClock;
use crate::crypto::at_rest::StaticKeyProvider;
use crate::error::Error;
use crate::id::{SessionId, UserId};
use crate::realm::{PasswordPolicy, RealmSettings};
use crate::secret::SecretString;
use crate::store::conformance::{Harness, Opener};
use crate::user::{AuthError, Authority, LoginOutcome, UserError, Users};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[derive(Debug, Clone)]
enum Op {
    Register(usize),
    Login(usize, bool),
    CreateToken(usize),
    RevokeAll(usize),
    Disable(usize),
    Enable(usize),
    Delete(usize),
    ChangePassword(usize),
}

fn op() -> impl Strategy<Value = (bool, Op)> {
    let name = 0usize..3;
    let op = prop_oneof![
        3 => name.clone().prop_map(Op::Register),
        4 => (name.clone(), any::<bool>()).prop_map(|(n, ok)| Op::Login(n, ok)),
        2 => name.clone().prop_map(Op::CreateToken),
        1 => name.clone().prop_map(Op::RevokeAll),
        1 => name.clone().prop_map(Op::Disable),
        1 => name.clone().prop_map(Op::Enable),
        1 => name.clone().prop_map(Op::Delete),
        1 => name.prop_map(Op::ChangePassword),
    ];
    (any::<bool>(), op)
}

const NAMES: [&str; 3] = ["alice", "bob", "carol"];

/// What one realm handed out.
#[derive(Default)]
struct Issued {
    users: Vec<UserId>,
    sessions: Vec<SessionId>,
    tokens: Vec<SecretString>,
}

async fn apply(users: &Users, issued: &mut Issued, op: &Op) {
    let pw = || SecretString::from("correct horse");
    let id_of = |n: usize| async move { users.get_by_username(NAMES[n]).await.ok().map(|u| u.id) };
    match *op {
        Op::Register(n) => {
            if let Ok(u) = users.register(NAMES[n], None, pw()).await {
                issued.users.push(u.id);
            }
        }
        Op::Login(n, ok) => {
            let password = if ok {
                pw()
            } else {
                SecretString::from("wrong horse")
            };
            if let Ok(LoginOutcome::Authenticated(s)) = users.authenticate(NAMES[n], password).await
            {
                issued.sessions.push(s.id);
            }
        }
        Op::CreateToken(n) => {
            if let Some(id) = id_of(n).await
                && let Ok(t) = users
                    .create_app_token(id, "t", vec![], Authority::Operator)
                    .await
            {
                issued.tokens.push(t.secret);
            }
        }
        Op::RevokeAll(n) => {
            if let Some(id) = id_of(n).await {
                let _ = users.revoke_all_sessions(id).await;
            }
        }
        Op::Disable(n) => {
            if let Some(id) = id_of(n).await {
                let _ = users.disable(id).await;
            }
        }
        Op::Enable(n) => {
            if let Some(id) = id_of(n).await {
                let _ = users.enable(id).await;
            }
        }
        Op::Delete(n) => {
            if let Some(id) = id_of(n).await {
                let _ = users.delete(id).await;
            }
        }
        Op::ChangePassword(n) => {
            // Same password in, a different one out, then back: exercises
            // the epoch without losing the ability to log in.
            if let Some(id) = id_of(n).await {
                let other = SecretString::from("battery staple");
                if users
                    .update_password(id, pw(), other.clone(), Authority::Operator)
                    .await
                    .is_ok()
                {
                    let _ = users
                        .update_password(id, other, pw(), Authority::Operator)
                        .await;
                }
            }
        }
    }
}

/// Nothing of `mine` is reachable through `other`.
async fn assert_invisible(other: &Users, mine: &Issued) {
    for &id in &mine.users {
        assert!(matches!(
            other.get(id).await,
            Err(Error::User(UserError::NotFound))
        ));
        assert!(matches!(
            other
                .create_app_token(id, "x", vec![], Authority::Operator)
                .await,
            Err(Error::User(UserError::NotFound))
        ));
    }
    for &s in &mine.sessions {
        assert!(matches!(
            other.get_session(s).await,
            Err(Error::Auth(AuthError::SessionNotFound))
        ));
    }
    for t in &mine.tokens {
        assert!(matches!(
            other.authenticate_app_token(t).await,
            Err(Error::Auth(AuthError::InvalidCredentials))
        ));
    }
}

/// Run the property against stores opened by `open`, one per generated
/// sequence.
#[allow(clippy::needless_pass_by_value)] // called as `check(opener(..))`
pub fn check(open: Opener) {
    let rt = crate::store::conformance::runtime();
    let config = Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| {
        let harness = Harness::new(open.clone());
        rt.block_on(async {
            let clock = ManualClock::new(crate::suite::epoch());
            let ks = Keystead::builder()
                .shared_store(harness.open().await)
                .clock(clock.clone())
                .keys(StaticKeyProvider::generate().unwrap())
                .build()
                .unwrap();
            let settings = RealmSettings {
                password: PasswordPolicy {
                    argon2_memory_kib: 8,
                    argon2_iterations: 1,
                    ..PasswordPolicy::default()
                },
                ..RealmSettings::default()
            };
            let a = ks.users(ks.realms().create("a", settings.clone()).await.unwrap().id);
            let b = ks.users(ks.realms().create("b", settings).await.unwrap().id);
            let (mut in_a, mut in_b) = (Issued::default(), Issued::default());
            for (to_a, op) in &ops {
                // Time moves so back-off never blocks the sequence for long.
                clock.advance(chrono::Duration::hours(1));
                if *to_a {
                    apply(&a, &mut in_a, op).await;
                } else {
                    apply(&b, &mut in_b, op).await;
                }
            }
            assert_invisible(&b, &in_a).await;
            assert_invisible(&a, &in_b).await;
            ks.store().close().await.unwrap();
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("a realm saw the other's data: {e}");
    }
}
