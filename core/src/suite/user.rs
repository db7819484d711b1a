//! User, password, lockout, login, session and application-token cases.

use super::keystead;
use crate::Error;
use crate::Keystead;
use crate::clock::ManualClock;
use crate::id::{SessionId, UserId};
use crate::realm::{LockoutPolicy, MfaPolicy, PasswordPolicy, RealmError, RealmSettings};
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::user::{
    AuthError, AuthMethod, Authority, LoginOutcome, ProfileUpdate, Session, UserError, UserStatus,
    Users,
};
use chrono::Duration;
use std::time::Duration as StdDuration;

/// Realm settings with the cheapest argon2 the policy allows, so the suite
/// stays fast; one case uses the defaults.
pub fn cheap_settings() -> RealmSettings {
    RealmSettings {
        password: PasswordPolicy {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..PasswordPolicy::default()
        },
        ..RealmSettings::default()
    }
}

fn pw(s: &str) -> SecretString {
    SecretString::from(s)
}

async fn realm_users(h: &Harness, settings: RealmSettings) -> (Keystead, ManualClock, Users) {
    let (ks, clock) = keystead(h).await;
    let realm = ks.realms().create("acme", settings).await.unwrap();
    let users = ks.users(realm.id);
    (ks, clock, users)
}

async fn login(users: &Users, name: &str, password: &str) -> Result<Session, Error> {
    match users.authenticate(name, pw(password)).await? {
        LoginOutcome::Authenticated(s) => Ok(s),
        other => panic!("unexpected {other:?}"),
    }
}

fn is_invalid(r: &Result<Session, Error>) -> bool {
    matches!(r, Err(Error::Auth(AuthError::InvalidCredentials)))
}

/// Register, read back by id and any spelling of the name, list in pages,
/// update the profile; invalid input writes nothing.
pub async fn register_get_list_and_profile(h: Harness) {
    let (_ks, clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("Alice", Some("Alice@Example.com"), pw("correct horse"))
        .await
        .unwrap();
    assert_eq!(alice.username, "Alice");
    assert_eq!(alice.email.as_deref(), Some("Alice@Example.com"));
    assert_eq!(alice.status, UserStatus::Active);
    assert_eq!(users.get(alice.id).await.unwrap(), alice);
    assert_eq!(users.get_by_username("ＡＬＩＣＥ").await.unwrap(), alice);
    assert!(!users.has_active_factor(alice.id).await.unwrap());
    assert!(matches!(
        users.get_by_username("bob").await,
        Err(Error::User(UserError::NotFound))
    ));
    assert!(matches!(
        users.get(UserId::generate(clock_now(&clock))).await,
        Err(Error::User(UserError::NotFound))
    ));

    // Validation: nothing written.
    for (name, email, password, field) in [
        ("bad name", None, "correct horse", "username"),
        ("bob", Some("not-an-email"), "correct horse", "email"),
        ("bob", None, "short", "password"),
    ] {
        match users.register(name, email, pw(password)).await {
            Err(Error::Validation(v)) => assert_eq!(v.field, field),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        users.register("ALICE", None, pw("another one")).await,
        Err(Error::User(UserError::UsernameTaken))
    ));
    assert!(matches!(
        users
            .register("bob", Some("alice@example.COM"), pw("another one"))
            .await,
        Err(Error::User(UserError::EmailTaken))
    ));

    let mut all = vec![alice.clone()];
    for i in 0..4 {
        clock.advance(Duration::milliseconds(3));
        all.push(
            users
                .register(&format!("user{i}"), None, pw("correct horse"))
                .await
                .unwrap(),
        );
    }
    let first = users.list(None, 2).await.unwrap();
    assert_eq!(first.items, all[..2]);
    let second = users.list(first.next, 2).await.unwrap();
    assert_eq!(second.items, all[2..4]);
    let last = users.list(second.next, 2).await.unwrap();
    assert_eq!(last.items, all[4..]);
    assert_eq!(last.next, None);
    assert!(matches!(
        users.list(None, 0).await,
        Err(Error::Validation(_))
    ));
}

/// Profile updates: email (the old address is released in the same batch),
/// display name, conflicts and validation.
pub async fn update_profile_and_email_index(h: Harness) {
    let (_ks, clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("Alice", Some("Alice@Example.com"), pw("correct horse"))
        .await
        .unwrap();
    clock.advance(Duration::seconds(5));
    let updated = users
        .update_profile(
            alice.id,
            ProfileUpdate {
                email: Some(Some("alice@new.example".into())),
                display_name: Some(Some("Alice Liddell".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.email.as_deref(), Some("alice@new.example"));
    assert_eq!(updated.display_name.as_deref(), Some("Alice Liddell"));
    assert_eq!(updated.updated_at, alice.created_at + Duration::seconds(5));
    let bob = users
        .register("bob", Some("alice@example.com"), pw("another one"))
        .await
        .unwrap();
    assert!(matches!(
        users
            .update_profile(
                bob.id,
                ProfileUpdate {
                    email: Some(Some("ALICE@new.example".into())),
                    ..ProfileUpdate::default()
                }
            )
            .await,
        Err(Error::User(UserError::EmailTaken))
    ));
    assert!(matches!(
        users
            .update_profile(
                bob.id,
                ProfileUpdate {
                    display_name: Some(Some(String::new())),
                    ..ProfileUpdate::default()
                }
            )
            .await,
        Err(Error::Validation(_))
    ));
    let removed = users
        .update_profile(
            bob.id,
            ProfileUpdate {
                email: Some(None),
                ..ProfileUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(removed.email, None);
    // The released address is free again.
    users
        .register("carol", Some("alice@example.com"), pw("another one"))
        .await
        .unwrap();
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use crate::clock::Clock;
    clock.now()
}

/// 16 concurrent registrations of one name in different spellings: exactly
/// one wins, the rest get `USERNAME_TAKEN`, and one user exists.
pub async fn usernames_are_unique_under_concurrency(h: Harness) {
    let (_ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    let spellings = [
        "Alice",
        "alice",
        "ＡＬＩＣＥ",
        "ALICE",
        "ａｌｉｃｅ",
        "aLiCe",
    ];
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let users = users.clone();
            let name = spellings[i % spellings.len()];
            tokio::spawn(async move { users.register(name, None, pw("correct horse")).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(Error::User(UserError::UsernameTaken)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(users.list(None, 100).await.unwrap().items.len(), 1);
}

/// Login opens a session; sessions can be read, touched, listed and
/// revoked one by one or all at once.
pub async fn login_and_sessions(h: Harness) {
    let (_ks, clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let s1 = login(&users, "ALICE", "correct horse").await.unwrap();
    assert_eq!(s1.user, alice.id);
    assert_eq!(s1.realm, users.realm());
    assert_eq!(s1.methods, vec![AuthMethod::Pwd]);
    assert_eq!(AuthMethod::Pwd.as_str(), "pwd");
    assert_eq!(users.get_session(s1.id).await.unwrap(), s1);
    clock.advance(Duration::seconds(30));
    let touched = users.touch_session(s1.id).await.unwrap();
    assert_eq!(touched.last_seen, s1.created_at + Duration::seconds(30));
    let s2 = login(&users, "alice", "correct horse").await.unwrap();
    let s3 = login(&users, "alice", "correct horse").await.unwrap();

    let page = users.list_sessions(alice.id, None, 2).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = users.list_sessions(alice.id, page.next, 2).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.next, None);

    users.revoke_session(s2.id).await.unwrap();
    assert!(matches!(
        users.get_session(s2.id).await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
    assert!(matches!(
        users.revoke_session(s2.id).await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
    assert_eq!(users.revoke_all_sessions(alice.id).await.unwrap(), 2);
    for s in [&s1, &s3] {
        assert!(matches!(
            users.get_session(s.id).await,
            Err(Error::Auth(AuthError::SessionNotFound))
        ));
    }
    assert!(
        users
            .list_sessions(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // A new login works after revoke-all.
    let s4 = login(&users, "alice", "correct horse").await.unwrap();
    users.get_session(s4.id).await.unwrap();
}

/// Wrong password, unknown user, disabled user (even with the right
/// password) and impossible names give one identical error.
pub async fn failures_are_indistinguishable(h: Harness) {
    let (_ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let bob = users
        .register("bob", None, pw("correct horse"))
        .await
        .unwrap();
    users.disable(bob.id).await.unwrap();
    let results = [
        login(&users, "alice", "wrong horse").await,
        login(&users, "mallory", "correct horse").await,
        login(&users, "bob", "correct horse").await,
        login(&users, "no such name!", "correct horse").await,
        login(&users, "alice", &"x".repeat(2000)).await,
    ];
    for r in &results {
        let Err(e) = r else { panic!("{r:?}") };
        assert_eq!(e.code(), "INVALID_CREDENTIALS");
        assert_eq!(e.to_string(), "invalid credentials");
        assert!(is_invalid(r));
    }
    // Re-enabled, bob logs in again.
    users.enable(bob.id).await.unwrap();
    login(&users, "bob", "correct horse").await.unwrap();
}

/// Exponential back-off with a manual clock, then the hard cap, then
/// `unlock`; a success resets the counter. Unknown names are throttled
/// the same way.
pub async fn lockout_back_off_and_hard_cap(h: Harness) {
    let settings = RealmSettings {
        lockout: LockoutPolicy {
            free_attempts: 3,
            base_delay_secs: 2,
            max_delay_secs: 8,
            hard_cap: 7,
        },
        ..cheap_settings()
    };
    let (_ks, clock, users) = realm_users(&h, settings).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let too_many = |r: Result<Session, Error>| match r {
        Err(Error::Auth(AuthError::TooManyAttempts { retry_after })) => retry_after,
        other => panic!("expected TOO_MANY_ATTEMPTS, got {other:?}"),
    };

    // Two failures, then a success resets the counter.
    for _ in 0..2 {
        assert!(is_invalid(&login(&users, "alice", "wrong").await));
    }
    assert_eq!(users.lockout(alice.id).await.unwrap().failures, 2);
    login(&users, "alice", "correct horse").await.unwrap();
    assert_eq!(users.lockout(alice.id).await.unwrap().failures, 0);

    // Three free failures, then 2 s, 4 s, 8 s, 8 s (capped) waits.
    for _ in 0..3 {
        assert!(is_invalid(&login(&users, "alice", "wrong").await));
    }
    for expected in [2u64, 4, 8, 8] {
        // Even the right password is refused while waiting, without counting.
        let wait = too_many(login(&users, "alice", "correct horse").await);
        assert_eq!(wait, Some(StdDuration::from_secs(expected)));
        clock.advance(Duration::seconds(1));
        let wait = too_many(login(&users, "alice", "wrong").await);
        assert_eq!(wait, Some(StdDuration::from_secs(expected - 1)));
        clock.advance(Duration::seconds(i64::try_from(expected).unwrap() - 1));
        assert!(is_invalid(&login(&users, "alice", "wrong").await));
    }
    // 7 failures = hard cap: locked until unlock, however long we wait.
    assert_eq!(users.lockout(alice.id).await.unwrap().failures, 7);
    clock.advance(Duration::days(365));
    assert_eq!(
        too_many(login(&users, "alice", "correct horse").await),
        None
    );
    let err = login(&users, "alice", "correct horse").await.unwrap_err();
    assert_eq!(err.code(), "TOO_MANY_ATTEMPTS");
    users.unlock(alice.id).await.unwrap();
    login(&users, "alice", "correct horse").await.unwrap();

    // Unknown usernames are throttled exactly like real ones.
    for _ in 0..3 {
        assert!(is_invalid(&login(&users, "nobody", "wrong").await));
    }
    assert_eq!(
        too_many(login(&users, "nobody", "wrong").await),
        Some(StdDuration::from_secs(2))
    );
}

/// 20 concurrent wrong passwords. Each attempt is counted before its
/// password is checked, admission and count being one compare-and-swap:
/// with room for all of them the counter is exactly 20; with the default 5
/// free attempts (clock frozen), exactly 5 are checked and counted and 15
/// are refused with `TOO_MANY_ATTEMPTS` before hashing.
pub async fn concurrent_failures_are_all_counted(h: Harness) {
    let settings = RealmSettings {
        lockout: LockoutPolicy {
            free_attempts: 50,
            ..LockoutPolicy::default()
        },
        ..cheap_settings()
    };
    let (ks, _clock, users) = realm_users(&h, settings).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let attempt = |users: &Users| {
        let users = users.clone();
        tokio::spawn(async move { login(&users, "alice", "wrong horse").await })
    };
    let tasks: Vec<_> = (0..20).map(|_| attempt(&users)).collect();
    for task in tasks {
        assert!(is_invalid(&task.await.unwrap()));
    }
    assert_eq!(users.lockout(alice.id).await.unwrap().failures, 20);

    // Second realm, default back-off (5 free attempts).
    let realm = ks.realms().create("beta", cheap_settings()).await.unwrap();
    let beta = ks.users(realm.id);
    let bob = beta
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20).map(|_| attempt(&beta)).collect();
    let (mut counted, mut refused) = (0u32, 0u32);
    for task in tasks {
        match task.await.unwrap() {
            Err(Error::Auth(AuthError::InvalidCredentials)) => counted += 1,
            Err(Error::Auth(AuthError::TooManyAttempts {
                retry_after: Some(wait),
            })) => {
                assert_eq!(wait, StdDuration::from_secs(1));
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((counted, refused), (5, 15));
    assert_eq!(beta.lockout(bob.id).await.unwrap().failures, 5);
}

/// Changing the password needs the current one, refuses the same one,
/// keeps the caller's session and ends the others.
pub async fn update_password_rules(h: Harness) {
    let (_ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let here = login(&users, "alice", "correct horse").await.unwrap();
    let elsewhere = login(&users, "alice", "correct horse").await.unwrap();

    let change = |current: &str, new: &str, keep: Option<SessionId>| {
        users.update_password(
            alice.id,
            pw(current),
            pw(new),
            keep.map_or(Authority::Operator, Authority::Session),
        )
    };
    assert!(matches!(
        change("wrong horse", "battery staple", None).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    match change("correct horse", "correct horse", None).await {
        Err(Error::Validation(v)) => assert_eq!(v.field, "new_password"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        change("correct horse", "short", None).await,
        Err(Error::Validation(_))
    ));
    // Nothing changed so far: both sessions live.
    users.get_session(elsewhere.id).await.unwrap();
    change("correct horse", "battery staple", Some(here.id))
        .await
        .unwrap();
    users.get_session(here.id).await.unwrap();
    assert!(matches!(
        users.get_session(elsewhere.id).await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
    assert!(is_invalid(&login(&users, "alice", "correct horse").await));
    login(&users, "alice", "battery staple").await.unwrap();
    assert_eq!(
        users
            .list_sessions(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

/// A login with a correct password re-hashes it when the realm's argon2
/// parameters changed; the old hash still verifies until then.
pub async fn rehash_on_parameter_change(h: Harness) {
    let (ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let before = users.load_user(alice.id).await.unwrap().unwrap().0;
    assert!(before.password_hash.contains("m=8,t=1,p=1"));
    let mut settings = cheap_settings();
    settings.password.argon2_iterations = 2;
    settings.password.argon2_memory_kib = 16;
    ks.realms()
        .update_settings(users.realm(), settings)
        .await
        .unwrap();
    assert!(is_invalid(&login(&users, "alice", "wrong").await));
    let unchanged = users.load_user(alice.id).await.unwrap().unwrap().0;
    assert_eq!(unchanged.password_hash, before.password_hash);
    login(&users, "alice", "correct horse").await.unwrap();
    let after = users.load_user(alice.id).await.unwrap().unwrap().0;
    assert!(
        after.password_hash.contains("m=16,t=2,p=1"),
        "{}",
        after.password_hash
    );
    login(&users, "alice", "correct horse").await.unwrap();
}

/// A realm that requires MFA answers a correct password with a stored
/// challenge that expires; wrong passwords are still plain failures.
pub async fn mfa_required_gives_a_challenge(h: Harness) {
    let settings = RealmSettings {
        mfa: MfaPolicy::Required,
        ..cheap_settings()
    };
    let (_ks, clock, users) = realm_users(&h, settings).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    // No factor yet: the challenge is the enrolment path.
    let LoginOutcome::MfaEnrollmentRequired { challenge } = users
        .authenticate("alice", pw("correct horse"))
        .await
        .unwrap()
    else {
        panic!("expected MFA enrolment");
    };
    assert_eq!(challenge.user, alice.id);
    assert_eq!(challenge.methods, vec![AuthMethod::Pwd]);
    assert_eq!(
        challenge.expires_at,
        challenge.created_at + Duration::seconds(300)
    );
    assert_eq!(
        users.pending_challenge(challenge.id).await.unwrap(),
        challenge
    );
    assert!(
        users
            .list_sessions(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(matches!(
        users.authenticate("alice", pw("wrong")).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    clock.advance(Duration::seconds(300));
    assert!(matches!(
        users.pending_challenge(challenge.id).await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
    // A challenge dies with a disabled user too.
    clock.advance(Duration::seconds(-300));
    users.disable(alice.id).await.unwrap();
    assert!(matches!(
        users.pending_challenge(challenge.id).await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
}

/// Application tokens: the secret is returned once, listed without it,
/// logs in with method `app_token` and its scopes, and stops (with its
/// sessions) when revoked or when the user is disabled.
pub async fn app_tokens(h: Harness) {
    let (_ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let created = users
        .create_app_token(
            alice.id,
            "ci",
            vec!["devices:read".into()],
            Authority::Operator,
        )
        .await
        .unwrap();
    assert!(created.secret.expose().starts_with("ksat_"));
    assert!(!format!("{created:?}").contains(created.secret.expose()));
    let listed = users.list_app_tokens(alice.id, None, 10).await.unwrap();
    assert_eq!(listed.items, vec![created.token.clone()]);

    let session = users.authenticate_app_token(&created.secret).await.unwrap();
    assert_eq!(session.user, alice.id);
    assert_eq!(session.methods, vec![AuthMethod::AppToken]);
    assert_eq!(session.scopes, vec!["devices:read".to_owned()]);
    users.get_session(session.id).await.unwrap();

    // Bad input.
    for bad in [
        "",
        "ksat_nope",
        "ksrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(matches!(
            users.authenticate_app_token(&pw(bad)).await,
            Err(Error::Auth(AuthError::InvalidCredentials))
        ));
    }
    let mut tampered = created.secret.expose().to_owned();
    tampered.replace_range(10..11, if &tampered[10..11] == "A" { "B" } else { "A" });
    assert!(matches!(
        users.authenticate_app_token(&pw(&tampered)).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert!(matches!(
        users
            .create_app_token(alice.id, "", vec![], Authority::Operator)
            .await,
        Err(Error::Validation(_))
    ));

    // Disabled user: token refused, enabled again: accepted.
    users.disable(alice.id).await.unwrap();
    assert!(matches!(
        users.authenticate_app_token(&created.secret).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert!(matches!(
        users
            .create_app_token(alice.id, "x", vec![], Authority::Operator)
            .await,
        Err(Error::User(UserError::Disabled))
    ));
    users.enable(alice.id).await.unwrap();
    let session = users.authenticate_app_token(&created.secret).await.unwrap();

    users
        .revoke_app_token(alice.id, created.token.id)
        .await
        .unwrap();
    assert!(matches!(
        users.authenticate_app_token(&created.secret).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert!(matches!(
        users.get_session(session.id).await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
    assert!(matches!(
        users.revoke_app_token(alice.id, created.token.id).await,
        Err(Error::Auth(AuthError::AppTokenNotFound))
    ));
    assert!(
        users
            .list_app_tokens(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Deleting a user removes every record it owns and makes each of its
/// credentials useless; the username is free again.
pub async fn delete_removes_everything(h: Harness) {
    let (ks, _clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", Some("alice@example.com"), pw("correct horse"))
        .await
        .unwrap();
    let bob = users
        .register("bob", None, pw("correct horse"))
        .await
        .unwrap();
    let session = login(&users, "alice", "correct horse").await.unwrap();
    assert!(is_invalid(&login(&users, "alice", "wrong").await));
    let token = users
        .create_app_token(alice.id, "ci", vec![], Authority::Operator)
        .await
        .unwrap();
    let token_session = users.authenticate_app_token(&token.secret).await.unwrap();
    let bob_session = login(&users, "bob", "correct horse").await.unwrap();
    let prefix = crate::realm::service::data_prefix(users.realm());
    let before = ks
        .store()
        .scan(prefix.as_bytes(), None, 1000)
        .await
        .unwrap()
        .len();

    // 2 sessions + 1 token swept.
    assert_eq!(users.delete(alice.id).await.unwrap(), 3);
    assert!(matches!(
        users.get(alice.id).await,
        Err(Error::User(UserError::NotFound))
    ));
    for s in [session.id, token_session.id] {
        assert!(matches!(
            users.get_session(s).await,
            Err(Error::Auth(AuthError::SessionNotFound))
        ));
    }
    assert!(is_invalid(&login(&users, "alice", "correct horse").await));
    assert!(matches!(
        users.authenticate_app_token(&token.secret).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert!(matches!(
        users.delete(alice.id).await,
        Err(Error::User(UserError::NotFound))
    ));
    // Removed: user, username, email, lockout counter, 2×2 session keys,
    // 2 token keys; the failed login after deletion left a new lockout
    // counter for "alice".
    let after = ks
        .store()
        .scan(prefix.as_bytes(), None, 1000)
        .await
        .unwrap();
    assert_eq!(after.len(), before - 10 + 1);
    // Bob is untouched.
    users.get_session(bob_session.id).await.unwrap();
    assert_eq!(users.get(bob.id).await.unwrap(), bob);
    // The name and address are free again, for a new user.
    let again = users
        .register("Alice", Some("alice@example.com"), pw("correct horse"))
        .await
        .unwrap();
    assert_ne!(again.id, alice.id);
    login(&users, "alice", "correct horse").await.unwrap();
}

/// Nothing of realm A is visible or usable through realm B's handle.
pub async fn realms_are_isolated(h: Harness) {
    let (ks, _clock, a) = realm_users(&h, cheap_settings()).await;
    let realm_b = ks.realms().create("beta", cheap_settings()).await.unwrap();
    let b = ks.users(realm_b.id);
    let alice = a
        .register("alice", Some("alice@example.com"), pw("correct horse"))
        .await
        .unwrap();
    let session = login(&a, "alice", "correct horse").await.unwrap();
    let token = a
        .create_app_token(alice.id, "ci", vec![], Authority::Operator)
        .await
        .unwrap();

    assert!(matches!(
        b.get(alice.id).await,
        Err(Error::User(UserError::NotFound))
    ));
    assert!(matches!(
        b.get_by_username("alice").await,
        Err(Error::User(UserError::NotFound))
    ));
    assert!(b.list(None, 100).await.unwrap().items.is_empty());
    assert!(is_invalid(&login(&b, "alice", "correct horse").await));
    for r in [
        b.get_session(session.id).await.map(|_| ()),
        b.touch_session(session.id).await.map(|_| ()),
        b.revoke_session(session.id).await,
    ] {
        assert!(
            matches!(r, Err(Error::Auth(AuthError::SessionNotFound))),
            "{r:?}"
        );
    }
    assert!(matches!(
        b.authenticate_app_token(&token.secret).await,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert!(matches!(
        b.revoke_app_token(alice.id, token.token.id).await,
        Err(Error::Auth(AuthError::AppTokenNotFound))
    ));
    assert!(
        b.list_app_tokens(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        b.list_sessions(alice.id, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for r in [
        b.disable(alice.id).await.map(|_| ()),
        b.delete(alice.id).await.map(|_| ()),
        b.unlock(alice.id).await,
        b.update_password(
            alice.id,
            pw("correct horse"),
            pw("new password"),
            Authority::Operator,
        )
        .await,
        b.create_app_token(alice.id, "x", vec![], Authority::Operator)
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::User(UserError::NotFound))), "{r:?}");
    }
    assert_eq!(
        b.revoke_all_sessions(alice.id).await.unwrap_err().code(),
        "USER_NOT_FOUND"
    );
    // The same name and email are free in B, and independent.
    let other = b
        .register("alice", Some("alice@example.com"), pw("other horse"))
        .await
        .unwrap();
    assert_ne!(other.id, alice.id);
    assert!(is_invalid(&login(&b, "alice", "correct horse").await));
    // A is untouched.
    a.get_session(session.id).await.unwrap();
    a.authenticate_app_token(&token.secret).await.unwrap();
}

/// A disabled (or deleted) realm refuses every user operation.
pub async fn disabled_realm_refuses(h: Harness) {
    let (ks, clock, users) = realm_users(&h, cheap_settings()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let session = login(&users, "alice", "correct horse").await.unwrap();
    let token = users
        .create_app_token(alice.id, "ci", vec![], Authority::Operator)
        .await
        .unwrap();
    ks.realms().disable(users.realm()).await.unwrap();
    let now = clock_now(&clock);
    let results: Vec<Result<(), Error>> = vec![
        users
            .register("bob", None, pw("correct horse"))
            .await
            .map(|_| ()),
        users.get(alice.id).await.map(|_| ()),
        users.get_by_username("alice").await.map(|_| ()),
        users.list(None, 10).await.map(|_| ()),
        users
            .update_profile(alice.id, ProfileUpdate::default())
            .await
            .map(|_| ()),
        users.disable(alice.id).await.map(|_| ()),
        users.enable(alice.id).await.map(|_| ()),
        users
            .authenticate("alice", pw("correct horse"))
            .await
            .map(|_| ()),
        users.get_session(session.id).await.map(|_| ()),
        users.touch_session(session.id).await.map(|_| ()),
        users.list_sessions(alice.id, None, 10).await.map(|_| ()),
        users.revoke_session(session.id).await,
        users.revoke_all_sessions(alice.id).await.map(|_| ()),
        users
            .update_password(
                alice.id,
                pw("correct horse"),
                pw("battery staple"),
                Authority::Operator,
            )
            .await,
        users.lockout(alice.id).await.map(|_| ()),
        users.unlock(alice.id).await,
        users.has_active_factor(alice.id).await.map(|_| ()),
        users
            .create_app_token(alice.id, "x", vec![], Authority::Operator)
            .await
            .map(|_| ()),
        users.list_app_tokens(alice.id, None, 10).await.map(|_| ()),
        users.revoke_app_token(alice.id, token.token.id).await,
        users
            .authenticate_app_token(&token.secret)
            .await
            .map(|_| ()),
        users
            .pending_challenge(crate::user::ChallengeId::generate(now))
            .await
            .map(|_| ()),
        users.delete(alice.id).await.map(|_| ()),
    ];
    for r in results {
        assert!(
            matches!(r, Err(Error::Realm(RealmError::Disabled))),
            "{r:?}"
        );
    }
    ks.realms().enable(users.realm()).await.unwrap();
    users.get_session(session.id).await.unwrap();
    ks.realms().delete(users.realm()).await.unwrap();
    assert!(matches!(
        users.get(alice.id).await,
        Err(Error::Realm(RealmError::NotFound))
    ));
}

/// Once, with the realm's default argon2 cost (19 MiB, t=2, p=1).
pub async fn default_argon2_parameters(h: Harness) {
    let (_ks, _clock, users) = realm_users(&h, RealmSettings::default()).await;
    let alice = users
        .register("alice", None, pw("correct horse"))
        .await
        .unwrap();
    let stored = users.load_user(alice.id).await.unwrap().unwrap().0;
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        stored.password_hash
    );
    login(&users, "alice", "correct horse").await.unwrap();
    assert!(is_invalid(&login(&users, "alice", "wrong horse").await));
}

/// A breached-password screen that knows one password.
struct KnownBreach;

#[async_trait::async_trait]
impl crate::BreachedPasswords for KnownBreach {
    async fn is_breached(&self, password: &SecretString) -> Result<bool, Error> {
        Ok(password.expose() == "password123")
    }
}

/// A runner that counts the jobs it runs, or drops them all.
struct CountingRunner {
    ran: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    drop_jobs: bool,
}

impl crate::BlockingRunner for CountingRunner {
    fn run(&self, job: Box<dyn FnOnce() + Send>) -> futures::future::BoxFuture<'static, ()> {
        if self.drop_jobs {
            return Box::pin(async {});
        }
        self.ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::BlockingPool.run(job)
    }
}

async fn custom(h: &Harness, runner: CountingRunner) -> Users {
    let ks = Keystead::builder()
        .shared_store(h.open().await)
        .clock(ManualClock::new(super::epoch()))
        .keys(crate::crypto::at_rest::StaticKeyProvider::generate().unwrap())
        .blocking(runner)
        .breached_passwords(KnownBreach)
        .build()
        .unwrap();
    let realm = ks.realms().create("acme", cheap_settings()).await.unwrap();
    ks.users(realm.id)
}

/// A configured breached-password list refuses a new password at
/// registration and at password change, writing nothing; hashing runs on the
/// injected runner, and a runner that drops jobs fails the call instead of
/// hanging it.
pub async fn breached_passwords_and_custom_blocking_runner(h: Harness) {
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let users = custom(
        &h,
        CountingRunner {
            ran: ran.clone(),
            drop_jobs: false,
        },
    )
    .await;
    match users.register("bob", None, pw("password123")).await {
        Err(Error::Validation(v)) => assert_eq!(v.field, "password"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(matches!(
        users.get_by_username("bob").await,
        Err(Error::User(UserError::NotFound))
    ));
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no hash for a refused password"
    );

    let bob = users
        .register("bob", None, pw("correct horse"))
        .await
        .unwrap();
    let session = login(&users, "bob", "correct horse").await.unwrap();
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one hash, one verify"
    );
    match users
        .update_password(
            bob.id,
            pw("correct horse"),
            pw("password123"),
            Authority::Session(session.id),
        )
        .await
    {
        Err(Error::Validation(v)) => assert_eq!(v.field, "new_password"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(
        login(&users, "bob", "correct horse").await.is_ok(),
        "password unchanged"
    );

    let dropping = custom(
        &Harness::new(crate::store::conformance::opener(|_dir| async {
            Ok::<_, crate::StorageError>(crate::store::MemoryStore::new())
        })),
        CountingRunner {
            ran,
            drop_jobs: true,
        },
    )
    .await;
    assert!(matches!(
        dropping.register("carol", None, pw("correct horse")).await,
        Err(Error::Storage(crate::StorageError::Backend(_)))
    ));
}
