//! Step-up cases, written as an attacker holding a token would try them: a
//! stale session, a password-only re-authentication for a user with a
//! second factor, a scoped, one-time or exchanged token, an
//! application-token session, another user's session, a trusted-device
//! login. Every refusal is the typed `STEP_UP_REQUIRED` (or
//! `SESSION_NOT_FOUND`), and nothing was written (the whole store is
//! compared before and after).

use super::user::cheap_settings;
use super::{everything, keystead};
use crate::Error;
use crate::Keystead;
use crate::clock::{Clock, ManualClock};
use crate::id::UserId;
use crate::mfa::{Mfa, MfaAnswer, MfaError, totp_code};
use crate::oauth::NewClient;
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::token::{AccessRequest, NewScopedToken, Tokens};
use crate::user::{AuthError, Authority, LoginOutcome, Session, Users};
use chrono::Duration;

const API: &str = "https://api.example";

struct Fixture {
    ks: Keystead,
    clock: ManualClock,
    users: Users,
    mfa: Mfa,
    tokens: Tokens,
    alice: UserId,
}

async fn fixture(h: &Harness) -> Fixture {
    let (ks, clock) = keystead(h).await;
    let realm = ks.realms().create("acme", cheap_settings()).await.unwrap();
    ks.oauth(realm.id)
        .create_client(NewClient::first_party("web", API, vec![]))
        .await
        .unwrap();
    let users = ks.users(realm.id);
    let alice = users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    users
        .register("mallory", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    Fixture {
        mfa: ks.mfa(realm.id),
        tokens: ks.tokens(realm.id),
        ks,
        clock,
        users,
        alice,
    }
}

/// A password-only login (or the challenge it stops at).
async fn password_login(f: &Fixture, who: &str) -> LoginOutcome {
    f.users
        .authenticate(who, SecretString::from("correct horse"))
        .await
        .unwrap()
}

async fn login(f: &Fixture, who: &str) -> Session {
    match password_login(f, who).await {
        LoginOutcome::Authenticated(s) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

fn step_up<T: std::fmt::Debug>(result: Result<T, Error>) -> (u32, bool) {
    match result {
        Err(Error::Auth(AuthError::StepUpRequired {
            max_age_secs,
            needs_mfa,
        })) => (max_age_secs, needs_mfa),
        other => panic!("expected STEP_UP_REQUIRED, got {other:?}"),
    }
}

/// The TOTP code of `secret` at the fixture's clock.
fn code(f: &Fixture, key: &crate::mfa::NewTotpKey) -> SecretString {
    let now = u64::try_from(f.clock.now().timestamp()).unwrap();
    totp_code(key.key.params, key.secret_base32.expose(), now).unwrap()
}

/// Every credential change `by` may attempt for alice without a second
/// factor in play, each refused with `(max_age, needs_mfa)` and nothing
/// written.
async fn all_refused(f: &Fixture, by: Authority, needs_mfa: bool) {
    let before = everything(&f.ks).await;
    let want = (300, needs_mfa);
    assert_eq!(step_up(f.mfa.create_totp_key(f.alice, by).await), want);
    assert_eq!(
        step_up(f.mfa.generate_recovery_codes(f.alice, by).await),
        want
    );
    assert_eq!(
        step_up(
            f.users
                .create_app_token(f.alice, "ci", vec!["read".into()], by)
                .await
        ),
        want
    );
    assert_eq!(everything(&f.ks).await, before, "a refused change wrote");
}

/// A session is good for credential changes for `max_age` after its
/// login; then it needs a re-authentication, and a wrong password is no
/// re-authentication.
pub async fn credential_changes_need_a_fresh_login(h: Harness) {
    let f = fixture(&h).await;
    let session = login(&f, "alice").await;
    let by = Authority::Session(session.id);
    f.users
        .create_app_token(f.alice, "ci", vec!["read".into()], by)
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(300));
    // Exactly max_age old: still fresh.
    f.mfa.generate_recovery_codes(f.alice, by).await.unwrap();
    f.clock.advance(Duration::seconds(1));
    all_refused(&f, by, false).await;

    // A wrong password counts as a failure and re-authenticates nothing.
    let wrong = f
        .users
        .reauthenticate(session.id, SecretString::from("wrong horse"))
        .await;
    assert!(matches!(
        wrong,
        Err(Error::Auth(AuthError::InvalidCredentials))
    ));
    assert_eq!(f.users.lockout(f.alice).await.unwrap().failures, 1);
    all_refused(&f, by, false).await;

    f.users
        .reauthenticate(session.id, SecretString::from("correct horse"))
        .await
        .unwrap();
    let key = f.mfa.create_totp_key(f.alice, by).await.unwrap();
    assert_eq!(key.key.user, f.alice);

    // The password change proves the password itself: a stale session of
    // a user without a second factor may change it, and keeps living.
    f.clock.advance(Duration::seconds(3600));
    f.users
        .update_password(
            f.alice,
            SecretString::from("correct horse"),
            SecretString::from("battery staple"),
            by,
        )
        .await
        .unwrap();
    f.users.get_session(session.id).await.unwrap();
}

/// A user with a second factor needs a fresh one too: a fresh password
/// alone is `needs_mfa`; a TOTP re-authentication (single use, like any
/// code) completes it; a trusted-device login and a stale MFA step never
/// do.
pub async fn second_factor_users_need_a_fresh_second_factor(h: Harness) {
    let f = fixture(&h).await;
    let key = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    f.mfa
        .activate(f.alice, key.key.id, &code(&f, &key))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(30));
    let LoginOutcome::MfaRequired { challenge } = password_login(&f, "alice").await else {
        panic!("alice has a second factor");
    };
    let session = f
        .mfa
        .complete_challenge(challenge.id, &MfaAnswer::Totp(code(&f, &key)))
        .await
        .unwrap();
    let by = Authority::Session(session.id);
    let device = f.mfa.trust_device(session.id, "laptop").await.unwrap();
    f.mfa.generate_recovery_codes(f.alice, by).await.unwrap();

    f.clock.advance(Duration::seconds(301));
    assert_eq!(
        step_up(f.mfa.trust_device(session.id, "phone").await),
        (300, true)
    );
    f.users
        .reauthenticate(session.id, SecretString::from("correct horse"))
        .await
        .unwrap();
    all_refused(&f, by, true).await;
    // A password change is refused before the password is even checked.
    let before = everything(&f.ks).await;
    assert_eq!(
        step_up(
            f.users
                .update_password(
                    f.alice,
                    SecretString::from("correct horse"),
                    SecretString::from("battery staple"),
                    by,
                )
                .await
        ),
        (300, true)
    );
    assert_eq!(
        step_up(f.mfa.delete_key(f.alice, key.key.id, by).await),
        (300, true)
    );
    assert_eq!(everything(&f.ks).await, before, "a refused change wrote");

    // A trusted device proves no factor, in a login or a re-authentication.
    let token = MfaAnswer::TrustedDevice(device.token.clone());
    assert!(matches!(
        f.mfa.reauthenticate(session.id, &token).await,
        Err(Error::Mfa(MfaError::FactorNotAllowed))
    ));
    let LoginOutcome::MfaRequired { challenge } = password_login(&f, "alice").await else {
        panic!("alice has a second factor");
    };
    let remembered = f
        .mfa
        .complete_challenge(challenge.id, &token)
        .await
        .unwrap();
    all_refused(&f, Authority::Session(remembered.id), true).await;

    // A fresh TOTP code completes the step-up, once.
    let answer = MfaAnswer::Totp(code(&f, &key));
    f.mfa.reauthenticate(session.id, &answer).await.unwrap();
    assert!(matches!(
        f.mfa.reauthenticate(remembered.id, &answer).await,
        Err(Error::Mfa(MfaError::InvalidCode))
    ));
    f.mfa.generate_recovery_codes(f.alice, by).await.unwrap();
    f.mfa.delete_key(f.alice, key.key.id, by).await.unwrap();
}

/// Tokens handed on from a login — scoped, one-time — carry no authority
/// however fresh their session; nor does an application-token session,
/// another user's session, or a revoked one.
pub async fn handed_on_tokens_never_authorize(h: Harness) {
    let f = fixture(&h).await;
    let session = login(&f, "alice").await;
    let request = AccessRequest::public("web", vec![]);

    let own = f.tokens.issue(session.id, &request).await.unwrap();
    let claims = f
        .tokens
        .verify_access_token(own.access_token.expose(), API)
        .await
        .unwrap();
    assert_eq!(claims.authority(), Authority::Session(session.id));

    let scoped = f
        .tokens
        .create_scoped_token(
            session.id,
            &NewScopedToken {
                name: "message".into(),
                request: request.clone(),
                expires_in: Duration::days(30),
            },
        )
        .await
        .unwrap();
    let one_time = f
        .tokens
        .create_one_time_token(session.id, &request, Duration::seconds(60))
        .await
        .unwrap();
    let from_one_time = f
        .tokens
        .exchange_one_time_token(&one_time.token)
        .await
        .unwrap();
    for token in [&scoped.token, &from_one_time.access_token] {
        let claims = f
            .tokens
            .verify_access_token(token.expose(), API)
            .await
            .unwrap();
        assert_eq!(claims.sid, session.id);
        assert_eq!(claims.authority(), Authority::Delegated);
        all_refused(&f, claims.authority(), false).await;
    }

    let app = f
        .users
        .create_app_token(
            f.alice,
            "ci",
            vec!["read".into()],
            Authority::Session(session.id),
        )
        .await
        .unwrap();
    let app_session = f.users.authenticate_app_token(&app.secret).await.unwrap();
    all_refused(&f, Authority::Session(app_session.id), false).await;

    // Mallory's fresh session is not alice's.
    let mallory = login(&f, "mallory").await;
    let before = everything(&f.ks).await;
    assert!(matches!(
        f.mfa
            .create_totp_key(f.alice, Authority::Session(mallory.id))
            .await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
    assert_eq!(everything(&f.ks).await, before);

    // A logged-out session vouches for nothing.
    f.tokens.logout(session.id).await.unwrap();
    assert!(matches!(
        f.mfa
            .create_totp_key(f.alice, Authority::Session(session.id))
            .await,
        Err(Error::Auth(AuthError::SessionNotFound))
    ));
}
