//! MFA cases: TOTP key lifecycle, known answers, skew, replay, races,
//! recovery codes, login challenges, isolation.

use super::gate::GatedStore;
use super::keystead;
use super::user::cheap_settings;
use crate::Error;
use crate::Keystead;
use crate::clock::ManualClock;
use crate::id::{MfaKeyId, UserId};
use crate::mfa::{
    MAX_ACTIVE_KEYS, Mfa, MfaAnswer, MfaError, MfaFactor, MfaKeyStatus, MfaKeyType, NewTotpKey,
    PENDING_TTL_SECS, RECOVERY_CODE_COUNT, TotpAlgorithm, TotpParams,
};
use crate::realm::{LockoutPolicy, MfaPolicy, RealmSettings};
use crate::secret::{SecretBytes, SecretString};
use crate::store::conformance::Harness;
use crate::user::{
    AuthError, AuthMethod, Authority, ChallengePurpose, LoginOutcome, UserError, Users,
};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// Settings with room for many wrong codes before throttling.
fn lenient() -> RealmSettings {
    RealmSettings {
        lockout: LockoutPolicy {
            free_attempts: 50,
            ..LockoutPolicy::default()
        },
        ..cheap_settings()
    }
}

struct Fixture {
    ks: Keystead,
    clock: ManualClock,
    users: Users,
    mfa: Mfa,
    alice: UserId,
}

async fn fixture(h: &Harness, settings: RealmSettings) -> Fixture {
    let (ks, clock) = keystead(h).await;
    let realm = ks.realms().create("acme", settings).await.unwrap();
    let users = ks.users(realm.id);
    let mfa = ks.mfa(realm.id);
    let alice = users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    Fixture {
        ks,
        clock,
        users,
        mfa,
        alice,
    }
}

/// A fixture whose store gates commits touching `needle` (`RACERS` at once).
async fn gated_fixture(h: &Harness, needle: &'static [u8]) -> (Fixture, Arc<GatedStore>) {
    use crate::crypto::at_rest::StaticKeyProvider;
    let gate = GatedStore::new(h.open().await, needle, RACERS);
    let clock = ManualClock::new(super::epoch());
    let ks = Keystead::builder()
        .shared_store(gate.clone())
        .clock(clock.clone())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let realm = ks.realms().create("acme", lenient()).await.unwrap();
    let users = ks.users(realm.id);
    let mfa = ks.mfa(realm.id);
    let alice = users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    (
        Fixture {
            ks,
            clock,
            users,
            mfa,
            alice,
        },
        gate,
    )
}

/// How many callers each forced race has.
const RACERS: usize = 4;

fn seed_of(new: &NewTotpKey) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(new.secret_base32.expose())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The code of `seed` at unix time `t`.
fn code_at(params: TotpParams, seed: &[u8], t: i64) -> SecretString {
    let totp = crate::mfa::generator(params, seed).unwrap();
    SecretString::new(totp.generate(u64::try_from(t).unwrap()).to_string())
}

fn now_unix(clock: &ManualClock) -> i64 {
    use crate::clock::Clock;
    clock.now().timestamp()
}

fn is_mfa(r: &Result<impl std::fmt::Debug, Error>, e: &MfaError) -> bool {
    matches!(r, Err(Error::Mfa(x)) if x == e)
}

/// Create and activate a default key; returns it with its seed.
async fn active_key(f: &Fixture, user: UserId) -> (MfaKeyId, Vec<u8>) {
    let new = f
        .mfa
        .create_totp_key(user, Authority::Operator)
        .await
        .unwrap();
    let seed = seed_of(&new);
    let code = code_at(new.key.params, &seed, now_unix(&f.clock));
    f.mfa.activate(user, new.key.id, &code).await.unwrap();
    (new.key.id, seed)
}

/// Create → pending with secret and URI once → activate → active; list,
/// statuses, types, at most one pending, delete keeps the factor count.
pub async fn key_lifecycle(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let new = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(new.key.status, MfaKeyStatus::ActivationPending);
    assert_eq!(new.key.kind, MfaKeyType::Totp);
    assert_eq!(new.key.params, TotpParams::default());
    assert_eq!(
        new.key.expires_at,
        Some(new.key.created_at + Duration::seconds(PENDING_TTL_SECS))
    );
    let seed = seed_of(&new);
    assert_eq!(seed.len(), 20);
    assert_eq!(new.secret_base32.expose().len(), 32);
    let uri = new.otpauth_uri.expose();
    assert!(
        uri.starts_with("otpauth://totp/acme:alice?secret="),
        "{uri}"
    );
    assert!(uri.contains(new.secret_base32.expose()));
    assert!(uri.ends_with("&issuer=acme&algorithm=SHA1&digits=6&period=30"));
    assert!(!format!("{new:?}").contains(new.secret_base32.expose()));
    assert_eq!(
        f.mfa.list_keys(f.alice).await.unwrap(),
        vec![new.key.clone()]
    );
    assert_eq!(f.mfa.key_types(), &[MfaKeyType::Totp]);
    assert_eq!(
        f.mfa.key_statuses(),
        &[MfaKeyStatus::ActivationPending, MfaKeyStatus::Active]
    );
    // The seed is sealed at rest: the raw bytes appear nowhere in the store.
    let rows = f.ks.store().scan(b"", None, 1000).await.unwrap();
    assert!(
        rows.iter()
            .all(|(_, v)| !v.value.windows(seed.len()).any(|w| w == seed.as_slice()))
    );

    // At most one pending key.
    assert!(is_mfa(
        &f.mfa.create_totp_key(f.alice, Authority::Operator).await,
        &MfaError::PendingKeyExists
    ));
    // Pending keys can't verify; a wrong code doesn't activate.
    let now = now_unix(&f.clock);
    assert!(is_mfa(
        &f.mfa
            .verify(f.alice, new.key.id, &code_at(new.key.params, &seed, now))
            .await,
        &MfaError::KeyNotActive
    ));
    let wrong = code_at(new.key.params, &seed, now + 300);
    assert!(is_mfa(
        &f.mfa.activate(f.alice, new.key.id, &wrong).await,
        &MfaError::InvalidCode
    ));
    assert!(!f.users.has_active_factor(f.alice).await.unwrap());

    let key = f
        .mfa
        .activate(f.alice, new.key.id, &code_at(new.key.params, &seed, now))
        .await
        .unwrap();
    assert_eq!(key.status, MfaKeyStatus::Active);
    assert_eq!(key.expires_at, None);
    assert!(f.users.has_active_factor(f.alice).await.unwrap());
    assert_eq!(f.mfa.get_key(f.alice, key.id).await.unwrap(), key);
    f.clock.advance(Duration::seconds(30));
    assert!(is_mfa(
        &f.mfa
            .activate(
                f.alice,
                key.id,
                &code_at(key.params, &seed, now_unix(&f.clock))
            )
            .await,
        &MfaError::AlreadyActive
    ));
}

/// Deleting a pending key keeps the factor count; deleting the last
/// active key clears it, and its codes stop working.
pub async fn delete_keys_and_factor_count(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (id, seed) = active_key(&f, f.alice).await;
    let key = f.mfa.get_key(f.alice, id).await.unwrap();
    f.clock.advance(Duration::seconds(30));
    let second = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    let list = f.mfa.list_keys(f.alice).await.unwrap();
    assert_eq!(list.len(), 2);
    // Deleting the pending key leaves the factor; deleting the active one
    // clears it.
    f.mfa
        .delete_key(f.alice, second.key.id, Authority::Operator)
        .await
        .unwrap();
    assert!(f.users.has_active_factor(f.alice).await.unwrap());
    f.mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    f.mfa
        .delete_key(f.alice, key.id, Authority::Operator)
        .await
        .unwrap();
    assert!(!f.users.has_active_factor(f.alice).await.unwrap());
    assert!(is_mfa(
        &f.mfa.delete_key(f.alice, key.id, Authority::Operator).await,
        &MfaError::KeyNotFound
    ));
    assert!(is_mfa(
        &f.mfa
            .verify(
                f.alice,
                key.id,
                &code_at(key.params, &seed, now_unix(&f.clock))
            )
            .await,
        &MfaError::KeyNotFound
    ));
    // Login no longer asks for MFA.
    assert!(matches!(
        f.users
            .authenticate("alice", SecretString::from("correct horse"))
            .await
            .unwrap(),
        LoginOutcome::Authenticated(_)
    ));
}

/// A pending key expires; an expired pending key makes room for a new one.
pub async fn pending_keys_expire(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let new = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    let seed = seed_of(&new);
    f.clock.advance(Duration::seconds(PENDING_TTL_SECS));
    let code = code_at(new.key.params, &seed, now_unix(&f.clock));
    assert!(is_mfa(
        &f.mfa.activate(f.alice, new.key.id, &code).await,
        &MfaError::ActivationExpired
    ));
    assert!(f.mfa.list_keys(f.alice).await.unwrap().is_empty());
    assert!(is_mfa(
        &f.mfa.get_key(f.alice, new.key.id).await,
        &MfaError::KeyNotFound
    ));
    let again = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(f.mfa.list_keys(f.alice).await.unwrap(), vec![again.key]);
    // The expired key's record is gone with the replacement.
    assert!(is_mfa(
        &f.mfa
            .delete_key(f.alice, new.key.id, Authority::Operator)
            .await,
        &MfaError::KeyNotFound
    ));
}

/// At most `MAX_ACTIVE_KEYS` active keys.
pub async fn active_key_limit(h: Harness) {
    let f = fixture(&h, lenient()).await;
    for _ in 0..MAX_ACTIVE_KEYS {
        active_key(&f, f.alice).await;
    }
    assert!(is_mfa(
        &f.mfa.create_totp_key(f.alice, Authority::Operator).await,
        &MfaError::KeyLimitReached
    ));
    assert_eq!(
        f.mfa.list_keys(f.alice).await.unwrap().len(),
        MAX_ACTIVE_KEYS
    );
}

fn vectors(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../testdata/vectors/rfc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn at(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap()
}

/// RFC 6238 appendix B through the public API: import the seed, activate
/// with the first code, verify the others at their times.
pub async fn rfc6238_known_answers(h: Harness) {
    let v = vectors("rfc6238_totp.json");
    let digits = u8::try_from(v["digits"].as_u64().unwrap()).unwrap();
    let period = u32::try_from(v["step_seconds"].as_u64().unwrap()).unwrap();
    let mut checked = 0;
    // One store per case (durable backends reopen the same files): one
    // user, one key per HMAC.
    let f = fixture(&h, lenient()).await;
    for (name, algorithm) in [
        ("SHA1", TotpAlgorithm::Sha1),
        ("SHA256", TotpAlgorithm::Sha256),
        ("SHA512", TotpAlgorithm::Sha512),
    ] {
        let seed = hex(v["seeds"][name]["hex"].as_str().unwrap());
        let params = TotpParams {
            algorithm,
            digits,
            period_secs: period,
        };
        let cases: Vec<_> = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["algorithm"] == name)
            .collect();
        assert_eq!(cases.len(), 6);
        let mut key = None;
        for case in cases {
            f.clock.set(at(case["unix_time"].as_i64().unwrap()));
            let code = SecretString::from(case["totp"].as_str().unwrap());
            match key {
                None => {
                    let new = f
                        .mfa
                        .import_totp_key(
                            f.alice,
                            SecretBytes::new(seed.clone()),
                            params,
                            Authority::Operator,
                        )
                        .await
                        .unwrap();
                    assert_eq!(
                        new.secret_base32.expose(),
                        v["seeds"][name]["base32_nopad"].as_str().unwrap()
                    );
                    f.mfa.activate(f.alice, new.key.id, &code).await.unwrap();
                    key = Some(new.key.id);
                }
                Some(id) => {
                    f.mfa.verify(f.alice, id, &code).await.unwrap();
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
}

/// RFC 4226 appendix D: HOTP counter c is the TOTP step at time 30·c.
pub async fn rfc4226_known_answers(h: Harness) {
    let v = vectors("rfc4226_hotp.json");
    let f = fixture(&h, lenient()).await;
    let seed = hex(v["secret_hex"].as_str().unwrap());
    let params = TotpParams::default();
    let mut key = None;
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let counter = case["counter"].as_i64().unwrap();
        f.clock.set(at(counter * 30 + 15));
        let code = SecretString::from(case["hotp"].as_str().unwrap());
        match key {
            None => {
                let new = f
                    .mfa
                    .import_totp_key(
                        f.alice,
                        SecretBytes::new(seed.clone()),
                        params,
                        Authority::Operator,
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    new.secret_base32.expose(),
                    v["secret_base32_nopad"].as_str().unwrap()
                );
                f.mfa.activate(f.alice, new.key.id, &code).await.unwrap();
                key = Some(new.key.id);
            }
            Some(id) => {
                let step = f.mfa.verify(f.alice, id, &code).await.unwrap();
                assert_eq!(step, u64::try_from(counter).unwrap());
            }
        }
    }
}

/// Steps −1, 0 and +1 are accepted; −2 and +2 are not.
pub async fn skew_boundaries(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (id, seed) = active_key(&f, f.alice).await;
    let p = TotpParams::default();
    f.clock.advance(Duration::seconds(300));
    let now = now_unix(&f.clock);
    for off in [-2i64, 2] {
        let code = code_at(p, &seed, now + off * 30);
        assert!(
            is_mfa(
                &f.mfa.verify(f.alice, id, &code).await,
                &MfaError::InvalidCode
            ),
            "offset {off}"
        );
    }
    let current = u64::try_from(now / 30).unwrap();
    for off in [-1i64, 0, 1] {
        let code = code_at(p, &seed, now + off * 30);
        let step = f.mfa.verify(f.alice, id, &code).await.unwrap();
        assert_eq!(step, current.checked_add_signed(off).unwrap());
    }
}

/// A code is accepted once; an earlier step after a later one never.
pub async fn replay_is_refused(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (id, seed) = active_key(&f, f.alice).await;
    let p = TotpParams::default();
    // The activation code's step is used.
    let now = now_unix(&f.clock);
    assert!(is_mfa(
        &f.mfa.verify(f.alice, id, &code_at(p, &seed, now)).await,
        &MfaError::InvalidCode
    ));
    f.clock.advance(Duration::seconds(60));
    let now = now_unix(&f.clock);
    let later = code_at(p, &seed, now);
    let earlier = code_at(p, &seed, now - 30);
    f.mfa.verify(f.alice, id, &later).await.unwrap();
    assert!(is_mfa(
        &f.mfa.verify(f.alice, id, &later).await,
        &MfaError::InvalidCode
    ));
    assert!(is_mfa(
        &f.mfa.verify(f.alice, id, &earlier).await,
        &MfaError::InvalidCode
    ));
    // Spaced the way apps show it: the same code, still refused.
    let spaced = SecretString::new(format!("{} {}", &later.expose()[..3], &later.expose()[3..]));
    assert!(is_mfa(
        &f.mfa.verify(f.alice, id, &spaced).await,
        &MfaError::InvalidCode
    ));
    f.clock.advance(Duration::seconds(30));
    let next = code_at(p, &seed, now_unix(&f.clock));
    let spaced = SecretString::new(format!("{} {}", &next.expose()[..3], &next.expose()[3..]));
    f.mfa.verify(f.alice, id, &spaced).await.unwrap();
}

/// Concurrent verifications of one code: exactly one wins, even when all
/// of them loaded the key before any committed.
pub async fn concurrent_verifications_one_winner(h: Harness) {
    let (f, gate) = gated_fixture(&h, b"mfa-key").await;
    let (id, seed) = active_key(&f, f.alice).await;
    f.clock.advance(Duration::seconds(30));
    let code = code_at(TotpParams::default(), &seed, now_unix(&f.clock));
    gate.arm(RACERS);
    let mfa = Arc::new(f.mfa.clone());
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let mfa = Arc::clone(&mfa);
        let code = code.clone();
        let alice = f.alice;
        tasks.push(tokio::spawn(
            async move { mfa.verify(alice, id, &code).await },
        ));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Mfa(MfaError::InvalidCode)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
}

/// Malformed codes are validation errors that write nothing; wrong codes
/// feed the lockout counter, which throttles and a success clears.
pub async fn bad_input_and_lockout(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (id, seed) = active_key(&f, f.alice).await;
    let before = f.ks.store().scan(b"", None, 1000).await.unwrap();
    for bad in [
        "",
        "12345",
        "1234567",
        "12345a",
        " 123456",
        "123456 ",
        "123\t456",
        "12 3456",
        "123\u{a0}456",
        "+12345",
        "１２３４５６",
    ] {
        let r = f.mfa.verify(f.alice, id, &SecretString::from(bad)).await;
        assert!(
            matches!(&r, Err(Error::Validation(v)) if v.field == "code"),
            "{bad:?}: {r:?}"
        );
    }
    assert_eq!(f.ks.store().scan(b"", None, 1000).await.unwrap(), before);
    assert!(is_mfa(
        &f.mfa
            .verify(
                f.alice,
                MfaKeyId::generate(f.clock_now()),
                &SecretString::from("123456")
            )
            .await,
        &MfaError::KeyNotFound
    ));

    let p = TotpParams::default();
    let wrong = code_at(p, &seed, now_unix(&f.clock) + 3000);
    let free = LockoutPolicy::default().free_attempts;
    for i in 1..=free {
        assert!(is_mfa(
            &f.mfa.verify(f.alice, id, &wrong).await,
            &MfaError::InvalidCode
        ));
        assert_eq!(f.users.lockout(f.alice).await.unwrap().failures, i);
    }
    // Throttled: refused before any check, even with the right code.
    f.clock.advance(Duration::seconds(30));
    let right = code_at(p, &seed, now_unix(&f.clock));
    // The 30 s advance already passed the first back-off (1 s): one more
    // failure re-arms it.
    assert!(is_mfa(
        &f.mfa.verify(f.alice, id, &wrong).await,
        &MfaError::InvalidCode
    ));
    assert!(matches!(
        f.mfa.verify(f.alice, id, &right).await,
        Err(Error::Auth(AuthError::TooManyAttempts { .. }))
    ));
    f.clock.advance(Duration::seconds(2));
    f.mfa.verify(f.alice, id, &right).await.unwrap();
    assert_eq!(f.users.lockout(f.alice).await.unwrap().failures, 0);
}

impl Fixture {
    fn clock_now(&self) -> DateTime<Utc> {
        use crate::clock::Clock;
        self.clock.now()
    }
}

/// Another user's key ids and another realm's handle find nothing.
pub async fn cross_user_and_realm_refused(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let bob = f
        .users
        .register("bob", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    let new = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    let seed = seed_of(&new);
    let code = code_at(new.key.params, &seed, now_unix(&f.clock));
    assert!(is_mfa(
        &f.mfa.activate(bob, new.key.id, &code).await,
        &MfaError::KeyNotFound
    ));
    assert!(is_mfa(
        &f.mfa.delete_key(bob, new.key.id, Authority::Operator).await,
        &MfaError::KeyNotFound
    ));
    assert!(f.mfa.list_keys(bob).await.unwrap().is_empty());
    let other = f.ks.realms().create("other", lenient()).await.unwrap();
    let other_mfa = f.ks.mfa(other.id);
    assert!(matches!(
        other_mfa.activate(f.alice, new.key.id, &code).await,
        Err(Error::User(UserError::NotFound))
    ));
    assert!(matches!(
        other_mfa.list_keys(f.alice).await,
        Err(Error::User(UserError::NotFound))
    ));
    // Still activatable by its owner.
    f.mfa.activate(f.alice, new.key.id, &code).await.unwrap();
    // Alice's recovery codes don't work for bob.
    let codes = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    f.mfa
        .generate_recovery_codes(bob, Authority::Operator)
        .await
        .unwrap();
    assert!(is_mfa(
        &f.mfa.burn_recovery_code(bob, &codes[0]).await,
        &MfaError::InvalidCode
    ));
    assert_eq!(
        f.mfa.burn_recovery_code(f.alice, &codes[0]).await.unwrap(),
        9
    );
}

/// Recovery codes: N grouped codes, burn once, regenerate invalidates,
/// remaining count, concurrent burns of one code have one winner.
pub async fn recovery_codes(h: Harness) {
    let f = fixture(&h, lenient()).await;
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 0);
    let codes = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
    let mut distinct: Vec<&str> = codes.iter().map(SecretString::expose).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), RECOVERY_CODE_COUNT);
    for c in &codes {
        let s = c.expose();
        assert_eq!(s.len(), 19);
        assert_eq!(s.split('-').count(), 4);
    }
    // No code is stored in clear.
    let rows = f.ks.store().scan(b"", None, 1000).await.unwrap();
    for c in &codes {
        let bare = c.expose().replace('-', "");
        assert!(rows.iter().all(|(k, v)| {
            !k.windows(bare.len()).any(|w| w == bare.as_bytes())
                && !v.value.windows(bare.len()).any(|w| w == bare.as_bytes())
        }));
    }
    assert_eq!(
        f.mfa.burn_recovery_code(f.alice, &codes[0]).await.unwrap(),
        9
    );
    assert!(is_mfa(
        &f.mfa.burn_recovery_code(f.alice, &codes[0]).await,
        &MfaError::InvalidCode
    ));
    // Upper case and spaces are read the same.
    let shouted = SecretString::new(codes[1].expose().to_uppercase().replace('-', " "));
    assert_eq!(
        f.mfa.burn_recovery_code(f.alice, &shouted).await.unwrap(),
        8
    );
    assert!(matches!(
        f.mfa
            .burn_recovery_code(f.alice, &SecretString::from("not a code"))
            .await,
        Err(Error::Validation(v)) if v.field == "recovery_code"
    ));

    // Concurrent burns of one code: one winner.
    let mfa = Arc::new(f.mfa.clone());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mfa = Arc::clone(&mfa);
        let code = codes[2].clone();
        let alice = f.alice;
        tasks.push(tokio::spawn(async move {
            mfa.burn_recovery_code(alice, &code).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(left) => {
                wins += 1;
                assert_eq!(left, 7);
            }
            Err(Error::Mfa(MfaError::InvalidCode)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 7);

    // Regenerating invalidates every earlier code.
    let fresh = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 10);
    for old in &codes[3..] {
        assert!(is_mfa(
            &f.mfa.burn_recovery_code(f.alice, old).await,
            &MfaError::InvalidCode
        ));
    }
    assert_eq!(
        f.mfa.burn_recovery_code(f.alice, &fresh[9]).await.unwrap(),
        9
    );
}

async fn challenge_of(users: &Users) -> crate::user::Challenge {
    match users
        .authenticate("alice", SecretString::from("correct horse"))
        .await
        .unwrap()
    {
        LoginOutcome::MfaRequired { challenge } => challenge,
        other => panic!("expected an MFA challenge, got {other:?}"),
    }
}

async fn enrollment_of(users: &Users) -> crate::user::Challenge {
    match users
        .authenticate("alice", SecretString::from("correct horse"))
        .await
        .unwrap()
    {
        LoginOutcome::MfaEnrollmentRequired { challenge } => challenge,
        other => panic!("expected an enrolment challenge, got {other:?}"),
    }
}

/// Login with an active key asks for MFA; a TOTP code completes the
/// challenge once, with `pwd` + `otp`; a recovery code with `pwd` +
/// `recovery`; wrong codes, reuse and expiry are refused.
pub async fn login_challenge_completion(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (_, seed) = active_key(&f, f.alice).await;
    let p = TotpParams::default();
    f.clock.advance(Duration::seconds(30));
    let challenge = challenge_of(&f.users).await;
    let wrong = MfaAnswer::Totp(code_at(p, &seed, now_unix(&f.clock) + 3000));
    assert!(is_mfa(
        &f.mfa.complete_challenge(challenge.id, &wrong).await,
        &MfaError::InvalidCode
    ));
    let right = MfaAnswer::Totp(code_at(p, &seed, now_unix(&f.clock)));
    let session = f
        .mfa
        .complete_challenge(challenge.id, &right)
        .await
        .unwrap();
    assert_eq!(session.user, f.alice);
    assert_eq!(session.methods, vec![AuthMethod::Pwd, AuthMethod::Otp]);
    assert_eq!(f.users.get_session(session.id).await.unwrap(), session);
    // Single use.
    assert!(matches!(
        f.mfa.complete_challenge(challenge.id, &right).await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
    // The same code on a new challenge: its step is used.
    let again = challenge_of(&f.users).await;
    assert!(is_mfa(
        &f.mfa.complete_challenge(again.id, &right).await,
        &MfaError::InvalidCode
    ));
    // Recovery code path: a challenge made before the user had codes does
    // not list them; one made after does.
    let codes = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    let recovery = MfaAnswer::Recovery(codes[0].clone());
    assert!(is_mfa(
        &f.mfa.complete_challenge(again.id, &recovery).await,
        &MfaError::FactorNotAllowed
    ));
    let again = challenge_of(&f.users).await;
    assert_eq!(
        again.factors,
        vec![
            MfaFactor::Totp,
            MfaFactor::Recovery,
            MfaFactor::TrustedDevice
        ]
    );
    let session = f
        .mfa
        .complete_challenge(again.id, &MfaAnswer::Recovery(codes[0].clone()))
        .await
        .unwrap();
    assert_eq!(session.methods, vec![AuthMethod::Pwd, AuthMethod::Recovery]);
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 9);
    // Expiry.
    let late = challenge_of(&f.users).await;
    f.clock.advance(Duration::seconds(301));
    let code = MfaAnswer::Totp(code_at(p, &seed, now_unix(&f.clock)));
    assert!(matches!(
        f.mfa.complete_challenge(late.id, &code).await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
}

/// Concurrent completions of one challenge (each with a different valid
/// recovery code), all loaded before any commits: exactly one session, and
/// only the winner's code is burnt.
pub async fn concurrent_challenge_completion(h: Harness) {
    let (f, gate) = gated_fixture(&h, b"challenge").await;
    let codes = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    active_key(&f, f.alice).await;
    let challenge = challenge_of(&f.users).await;
    gate.arm(RACERS);
    let mfa = Arc::new(f.mfa.clone());
    let mut tasks = Vec::new();
    for code in codes.iter().take(RACERS) {
        let mfa = Arc::clone(&mfa);
        let answer = MfaAnswer::Recovery(code.clone());
        tasks.push(tokio::spawn(async move {
            mfa.complete_challenge(challenge.id, &answer).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Auth(AuthError::ChallengeNotFound)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 9);
}

/// Concurrent burns of one recovery code, all loaded before any commits:
/// exactly one wins.
pub async fn concurrent_burns_one_winner(h: Harness) {
    let (f, gate) = gated_fixture(&h, b"mfa-recovery").await;
    let codes = f
        .mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    gate.arm(RACERS);
    let mfa = Arc::new(f.mfa.clone());
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let mfa = Arc::clone(&mfa);
        let code = codes[0].clone();
        let alice = f.alice;
        tasks.push(tokio::spawn(async move {
            mfa.burn_recovery_code(alice, &code).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(left) => {
                wins += 1;
                assert_eq!(left, 9);
            }
            Err(Error::Mfa(MfaError::InvalidCode)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(f.mfa.remaining_recovery_codes(f.alice).await.unwrap(), 9);
}

/// A realm requiring MFA and a user without a key: login answers
/// `MfaEnrollmentRequired` with an enrolment challenge instead of a session;
/// the challenge is the setup path (create + activate a TOTP key), and
/// activation through it opens the session with `pwd` + `otp`, once.
pub async fn enrollment_required(h: Harness) {
    let settings = RealmSettings {
        mfa: MfaPolicy::Required,
        ..lenient()
    };
    let f = fixture(&h, settings).await;
    let challenge = enrollment_of(&f.users).await;
    assert_eq!(challenge.purpose, ChallengePurpose::Enrollment);
    assert_eq!(challenge.factors, vec![MfaFactor::Totp]);
    assert!(
        f.users
            .list_sessions(f.alice, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Nothing to answer with: every answer is refused with the typed error.
    let answer = MfaAnswer::Totp(SecretString::from("123456"));
    let r = f.mfa.complete_challenge(challenge.id, &answer).await;
    assert!(is_mfa(&r, &MfaError::EnrollmentRequired));
    assert_eq!(r.unwrap_err().code(), "MFA_ENROLLMENT_REQUIRED");
    // The setup path: a key for the challenge's user, then activation.
    let new = f
        .mfa
        .create_totp_key_for_challenge(challenge.id)
        .await
        .unwrap();
    assert_eq!(new.key.user, f.alice);
    let seed = seed_of(&new);
    let p = TotpParams::default();
    let wrong = code_at(p, &seed, now_unix(&f.clock) + 3000);
    assert!(is_mfa(
        &f.mfa
            .complete_enrollment(challenge.id, new.key.id, &wrong)
            .await,
        &MfaError::InvalidCode
    ));
    assert!(
        f.users
            .list_sessions(f.alice, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let right = code_at(p, &seed, now_unix(&f.clock));
    let session = f
        .mfa
        .complete_enrollment(challenge.id, new.key.id, &right)
        .await
        .unwrap();
    assert_eq!(session.user, f.alice);
    assert_eq!(session.methods, vec![AuthMethod::Pwd, AuthMethod::Otp]);
    assert_eq!(
        f.mfa.get_key(f.alice, new.key.id).await.unwrap().status,
        MfaKeyStatus::Active
    );
    // Single use.
    assert!(matches!(
        f.mfa
            .complete_enrollment(challenge.id, new.key.id, &right)
            .await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
    // From now on login asks for the factor; a second-factor challenge is
    // no setup path.
    let next = challenge_of(&f.users).await;
    assert_eq!(next.purpose, ChallengePurpose::SecondFactor);
    assert_eq!(
        next.factors,
        vec![MfaFactor::Totp, MfaFactor::TrustedDevice]
    );
    assert!(is_mfa(
        &f.mfa.create_totp_key_for_challenge(next.id).await,
        &MfaError::FactorNotAllowed
    ));
    let recovery = MfaAnswer::Recovery(SecretString::from("aaaa-bbbb-cccc-dddd"));
    assert!(is_mfa(
        &f.mfa.complete_challenge(next.id, &recovery).await,
        &MfaError::FactorNotAllowed
    ));
}

/// Two completions of one enrolment challenge with the same valid code,
/// both loaded before either commits: exactly one session.
pub async fn concurrent_enrollment_one_winner(h: Harness) {
    let (f, gate) = gated_fixture(&h, b"challenge").await;
    let realm = f.ks.realms().get(f.mfa.realm()).await.unwrap();
    f.ks.realms()
        .update_settings(
            realm.id,
            RealmSettings {
                mfa: MfaPolicy::Required,
                ..realm.settings
            },
        )
        .await
        .unwrap();
    let challenge = enrollment_of(&f.users).await;
    let new = f
        .mfa
        .create_totp_key_for_challenge(challenge.id)
        .await
        .unwrap();
    let code = code_at(TotpParams::default(), &seed_of(&new), now_unix(&f.clock));
    gate.arm(RACERS);
    let mfa = Arc::new(f.mfa.clone());
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let mfa = Arc::clone(&mfa);
        let code = code.clone();
        let key = new.key.id;
        tasks.push(tokio::spawn(async move {
            mfa.complete_enrollment(challenge.id, key, &code).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(
                Error::Auth(AuthError::ChallengeNotFound)
                | Error::Mfa(MfaError::AlreadyActive | MfaError::InvalidCode),
            ) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        f.users
            .list_sessions(f.alice, None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

/// The realm's TOTP parameters apply to new keys; invalid ones are refused
/// when the settings are written.
pub async fn realm_totp_parameters(h: Harness) {
    let params = TotpParams {
        algorithm: TotpAlgorithm::Sha256,
        digits: 8,
        period_secs: 30,
    };
    let f = fixture(
        &h,
        RealmSettings {
            totp: params,
            ..lenient()
        },
    )
    .await;
    let new = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(new.key.params, params);
    let code = code_at(params, &seed_of(&new), now_unix(&f.clock));
    f.mfa.activate(f.alice, new.key.id, &code).await.unwrap();
    let bad = RealmSettings {
        totp: TotpParams {
            digits: 5,
            ..params
        },
        ..lenient()
    };
    assert!(matches!(
        f.ks.realms().create("other", bad).await,
        Err(Error::Validation(v)) if v.field == "settings.totp"
    ));
}

/// SHA-256 / 8-digit keys work end to end.
pub async fn configurable_parameters(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let params = TotpParams {
        algorithm: TotpAlgorithm::Sha512,
        digits: 8,
        period_secs: 60,
    };
    let new = f
        .mfa
        .create_totp_key_with(f.alice, params, Authority::Operator)
        .await
        .unwrap();
    let seed = seed_of(&new);
    assert_eq!(seed.len(), 64);
    assert!(
        new.otpauth_uri
            .expose()
            .ends_with("&algorithm=SHA512&digits=8&period=60")
    );
    let code = code_at(params, &seed, now_unix(&f.clock));
    assert_eq!(code.expose().len(), 8);
    f.mfa.activate(f.alice, new.key.id, &code).await.unwrap();
    assert!(matches!(
        f.mfa
            .create_totp_key_with(f.alice, TotpParams { digits: 9, ..params }, Authority::Operator)
            .await,
        Err(Error::Validation(v)) if v.field == "totp.digits"
    ));
}

/// Log alice in with a fresh TOTP code; the session has `pwd` + `otp`.
async fn otp_session(f: &Fixture, seed: &[u8]) -> crate::user::Session {
    f.clock.advance(Duration::seconds(30));
    let challenge = challenge_of(&f.users).await;
    let answer = MfaAnswer::Totp(code_at(TotpParams::default(), seed, now_unix(&f.clock)));
    f.mfa
        .complete_challenge(challenge.id, &answer)
        .await
        .unwrap()
}

/// Trusted devices: only from an MFA session; skip the MFA step for that
/// user only; list, delete; revoked by key deletion, password change and
/// expiry.
pub async fn trusted_devices(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let bob = f
        .users
        .register("bob", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    // A password-only session can't remember a device.
    let LoginOutcome::Authenticated(plain) = f
        .users
        .authenticate("alice", SecretString::from("correct horse"))
        .await
        .unwrap()
    else {
        panic!("no MFA yet");
    };
    assert!(is_mfa(
        &f.mfa.trust_device(plain.id, "Firefox").await,
        &MfaError::MfaStepRequired
    ));
    let (_, seed) = active_key(&f, f.alice).await;
    let session = otp_session(&f, &seed).await;
    assert!(matches!(
        f.mfa.trust_device(session.id, "bad\nlabel").await,
        Err(Error::Validation(v)) if v.field == "label"
    ));
    let trusted = f.mfa.trust_device(session.id, "Firefox 140").await.unwrap();
    assert!(trusted.token.expose().starts_with("kstd_"));
    assert_eq!(
        f.mfa.list_trusted_devices(f.alice).await.unwrap(),
        vec![trusted.device.clone()]
    );
    assert!(f.mfa.list_trusted_devices(bob).await.unwrap().is_empty());

    // The token skips the MFA step, with methods `pwd`.
    let challenge = challenge_of(&f.users).await;
    let answer = MfaAnswer::TrustedDevice(trusted.token.clone());
    let skipped = f
        .mfa
        .complete_challenge(challenge.id, &answer)
        .await
        .unwrap();
    assert_eq!(skipped.methods, vec![AuthMethod::Pwd]);
    let listed = f.mfa.list_trusted_devices(f.alice).await.unwrap();
    assert!(listed[0].last_used_at.is_some());
    // Wrong or malformed tokens don't.
    let challenge = challenge_of(&f.users).await;
    for bad in [
        "kstd_nope",
        "",
        "ksat_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(is_mfa(
            &f.mfa
                .complete_challenge(
                    challenge.id,
                    &MfaAnswer::TrustedDevice(SecretString::from(bad))
                )
                .await,
            &MfaError::InvalidCode
        ));
    }
    // Another user's token is refused for bob's challenge.
    active_key(&f, bob).await;
    let bob_challenge = match f
        .users
        .authenticate("bob", SecretString::from("correct horse"))
        .await
        .unwrap()
    {
        LoginOutcome::MfaRequired { challenge } => challenge,
        other => panic!("expected MFA, got {other:?}"),
    };
    assert!(is_mfa(
        &f.mfa.complete_challenge(bob_challenge.id, &answer).await,
        &MfaError::InvalidCode
    ));

    // Delete one device.
    f.mfa
        .delete_trusted_device(f.alice, trusted.device.id, Authority::Operator)
        .await
        .unwrap();
    assert!(is_mfa(
        &f.mfa.complete_challenge(challenge.id, &answer).await,
        &MfaError::InvalidCode
    ));
    assert!(is_mfa(
        &f.mfa
            .delete_trusted_device(f.alice, trusted.device.id, Authority::Operator)
            .await,
        &MfaError::TrustedDeviceNotFound
    ));
}

/// Deleting an MFA key and changing the password revoke every trusted
/// device of the user.
pub async fn trusted_devices_revoked(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (_, seed) = active_key(&f, f.alice).await;
    // Deleting an MFA key revokes every trusted device.
    let session = otp_session(&f, &seed).await;
    let second = f.mfa.trust_device(session.id, "Safari").await.unwrap();
    let spare = f
        .mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    f.mfa
        .delete_key(f.alice, spare.key.id, Authority::Operator)
        .await
        .unwrap();
    assert!(
        f.mfa
            .list_trusted_devices(f.alice)
            .await
            .unwrap()
            .is_empty()
    );
    let challenge = challenge_of(&f.users).await;
    assert!(is_mfa(
        &f.mfa
            .complete_challenge(challenge.id, &MfaAnswer::TrustedDevice(second.token))
            .await,
        &MfaError::InvalidCode
    ));

    // A password change revokes them.
    let session = otp_session(&f, &seed).await;
    let third = f.mfa.trust_device(session.id, "Edge").await.unwrap();
    f.users
        .update_password(
            f.alice,
            SecretString::from("correct horse"),
            SecretString::from("battery staple"),
            Authority::Operator,
        )
        .await
        .unwrap();
    assert!(
        f.mfa
            .list_trusted_devices(f.alice)
            .await
            .unwrap()
            .is_empty()
    );
    let challenge = match f
        .users
        .authenticate("alice", SecretString::from("battery staple"))
        .await
        .unwrap()
    {
        LoginOutcome::MfaRequired { challenge } => challenge,
        other => panic!("expected MFA, got {other:?}"),
    };
    assert!(is_mfa(
        &f.mfa
            .complete_challenge(challenge.id, &MfaAnswer::TrustedDevice(third.token))
            .await,
        &MfaError::InvalidCode
    ));
}

/// Trusted-device tokens expire.
pub async fn trusted_devices_expire(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (_, seed) = active_key(&f, f.alice).await;
    let session = otp_session(&f, &seed).await;
    let trusted = f.mfa.trust_device(session.id, "Firefox").await.unwrap();
    f.clock.advance(Duration::seconds(
        crate::mfa::trusted::TRUSTED_DEVICE_TTL_SECS,
    ));
    assert!(
        f.mfa
            .list_trusted_devices(f.alice)
            .await
            .unwrap()
            .is_empty()
    );
    let challenge = challenge_of(&f.users).await;
    assert!(is_mfa(
        &f.mfa
            .complete_challenge(challenge.id, &MfaAnswer::TrustedDevice(trusted.token))
            .await,
        &MfaError::InvalidCode
    ));
}

/// A tiny deterministic generator for the model test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Model test over seeded random sequences of create/activate/verify/
/// delete/advance-clock: no (key, time step) is ever accepted twice, steps
/// of a key only grow, and no code of a deleted key is accepted.
pub async fn random_sequences_never_accept_a_step_twice(h: Harness) {
    use std::collections::{HashMap, HashSet};
    let f = fixture(&h, lenient()).await;
    let p = TotpParams::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut active: Vec<(MfaKeyId, Vec<u8>)> = Vec::new();
    let mut deleted: Vec<(MfaKeyId, Vec<u8>)> = Vec::new();
    let mut accepted: HashSet<(MfaKeyId, u64)> = HashSet::new();
    let mut highest: HashMap<MfaKeyId, u64> = HashMap::new();
    let mut record = |id: MfaKeyId, step: u64| {
        assert!(accepted.insert((id, step)), "step {step} accepted twice");
        if let Some(h) = highest.insert(id, step) {
            assert!(step > h, "step {step} after {h}");
        }
    };
    for _ in 0..300 {
        let now = now_unix(&f.clock);
        match rng.below(6) {
            0 if active.len() < MAX_ACTIVE_KEYS => {
                let new = f
                    .mfa
                    .create_totp_key(f.alice, Authority::Operator)
                    .await
                    .unwrap();
                let seed = seed_of(&new);
                let off = i64::try_from(rng.below(3)).unwrap() - 1;
                f.mfa
                    .activate(f.alice, new.key.id, &code_at(p, &seed, now + off * 30))
                    .await
                    .unwrap();
                let step = f.mfa.get_key(f.alice, new.key.id).await.unwrap();
                assert_eq!(step.status, MfaKeyStatus::Active);
                record(new.key.id, u64::try_from(now / 30 + off).unwrap());
                active.push((new.key.id, seed));
            }
            1 | 2 if !active.is_empty() => {
                let (id, seed) = &active[usize::try_from(rng.below(active.len() as u64)).unwrap()];
                let off = i64::try_from(rng.below(5)).unwrap() - 2;
                match f
                    .mfa
                    .verify(f.alice, *id, &code_at(p, seed, now + off * 30))
                    .await
                {
                    Ok(step) => {
                        assert!(off.abs() <= 1);
                        record(*id, step);
                    }
                    Err(Error::Mfa(MfaError::InvalidCode)) => {
                        f.users.unlock(f.alice).await.unwrap();
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            3 if !active.is_empty() => {
                let i = usize::try_from(rng.below(active.len() as u64)).unwrap();
                let (id, seed) = active.swap_remove(i);
                f.mfa
                    .delete_key(f.alice, id, Authority::Operator)
                    .await
                    .unwrap();
                deleted.push((id, seed));
            }
            4 if !deleted.is_empty() => {
                let (id, seed) =
                    &deleted[usize::try_from(rng.below(deleted.len() as u64)).unwrap()];
                assert!(is_mfa(
                    &f.mfa.verify(f.alice, *id, &code_at(p, seed, now)).await,
                    &MfaError::KeyNotFound
                ));
            }
            _ => f
                .clock
                .advance(Duration::seconds(i64::try_from(rng.below(46)).unwrap())),
        }
        assert_eq!(
            f.users.has_active_factor(f.alice).await.unwrap(),
            !active.is_empty()
        );
    }
    assert!(accepted.len() > 20, "the sequence exercised acceptance");
}

/// Deleting a user sweeps its MFA keys (sealed seeds), recovery codes and
/// trusted devices.
pub async fn delete_user_sweeps_mfa(h: Harness) {
    let f = fixture(&h, lenient()).await;
    let (_, seed) = active_key(&f, f.alice).await;
    f.mfa
        .generate_recovery_codes(f.alice, Authority::Operator)
        .await
        .unwrap();
    let session = otp_session(&f, &seed).await;
    f.mfa.trust_device(session.id, "Firefox").await.unwrap();
    f.mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    let mfa_rows = |rows: &[(Vec<u8>, crate::store::Versioned)]| {
        rows.iter()
            .filter(|(k, _)| k.windows(4).any(|w| w == b"mfa-"))
            .count()
    };
    let before = f.ks.store().scan(b"", None, 1000).await.unwrap();
    // 2 keys, pending slot, set, 10 codes, device, token lookup.
    assert_eq!(mfa_rows(&before), 16);
    f.users.delete(f.alice).await.unwrap();
    let after = f.ks.store().scan(b"", None, 1000).await.unwrap();
    assert_eq!(mfa_rows(&after), 0);
}
