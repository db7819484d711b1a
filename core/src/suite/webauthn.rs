//! WebAuthn cases: registration and authentication with a software passkey
//! (`webauthn-authenticator-rs`), replay, races, wrong origin and rp id,
//! tampering, other users' and realms' credentials, expiry and sign-count
//! regression.

use super::gate::GatedStore;
use super::keystead;
use super::user::cheap_settings;
use crate::Error;
use crate::Keystead;
use crate::clock::ManualClock;
use crate::id::UserId;
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::user::{Authority, UserError, Users};
use crate::webauthn::{
    CEREMONY_TTL_SECS, CredentialId, MAX_CREDENTIALS, PasskeyAmr, RelyingParty, Webauthn,
    WebauthnCredential, WebauthnError,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use serde_json::Value;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://login.example.com";

/// A software passkey that reports user verification (as a platform
/// authenticator with a PIN or biometric would).
type Passkey = WebauthnAuthenticator<SoftPasskey>;

fn passkey() -> Passkey {
    WebauthnAuthenticator::new(SoftPasskey::new(true))
}

fn relying_party(passwordless: bool) -> RelyingParty {
    RelyingParty {
        passwordless,
        ..RelyingParty::new(RP_ID, "Acme", ORIGIN)
    }
}

struct Fixture {
    ks: Keystead,
    clock: ManualClock,
    users: Users,
    wa: Webauthn,
    alice: UserId,
    bob: UserId,
}

async fn realm_fixture(ks: &Keystead, name: &str, passwordless: bool) -> (Users, Webauthn) {
    let realm = ks.realms().create(name, cheap_settings()).await.unwrap();
    let wa = ks.webauthn(realm.id);
    wa.configure(relying_party(passwordless)).await.unwrap();
    (ks.users(realm.id), wa)
}

async fn fixture(h: &Harness, passwordless: bool) -> Fixture {
    let (ks, clock) = keystead(h).await;
    let (users, wa) = realm_fixture(&ks, "acme", passwordless).await;
    let alice = register_user(&users, "alice").await;
    let bob = register_user(&users, "bob").await;
    Fixture {
        ks,
        clock,
        users,
        wa,
        alice,
        bob,
    }
}

async fn register_user(users: &Users, name: &str) -> UserId {
    users
        .register(name, None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id
}

fn url(origin: &str) -> Url {
    Url::parse(origin).unwrap()
}

/// The browser side of registration: options JSON in, response JSON out.
fn browser_create(pk: &mut Passkey, origin: &str, options: &Value) -> String {
    let ccr: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let response = pk.do_registration(url(origin), ccr).unwrap();
    serde_json::to_string(&response).unwrap()
}

/// The browser side of authentication: options JSON in, response JSON out.
fn browser_get(pk: &mut Passkey, origin: &str, options: &Value) -> String {
    let rcr: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let response = pk.do_authentication(url(origin), rcr).unwrap();
    serde_json::to_string(&response).unwrap()
}

/// Register a passkey of `user` under `label`.
async fn enrol(wa: &Webauthn, pk: &mut Passkey, user: UserId, label: &str) -> WebauthnCredential {
    let options = wa.create_options(user, Authority::Operator).await.unwrap();
    let response = browser_create(pk, ORIGIN, &options.options);
    wa.create(user, options.challenge_id, &response, label)
        .await
        .unwrap()
}

/// Request options for `user` and sign them: `(challenge id, response)`.
async fn assertion(
    wa: &Webauthn,
    pk: &mut Passkey,
    user: Option<UserId>,
) -> (crate::id::ChallengeId, String) {
    let options = wa.request_options(user).await.unwrap();
    (
        options.challenge_id,
        browser_get(pk, ORIGIN, &options.options),
    )
}

fn is_wa<T: std::fmt::Debug>(r: &Result<T, Error>, e: &WebauthnError) -> bool {
    matches!(r, Err(Error::Webauthn(x)) if x == e)
}

#[track_caller]
fn assert_wa<T: std::fmt::Debug>(r: &Result<T, Error>, e: &WebauthnError) {
    assert!(is_wa(r, e), "expected {e:?}, got {r:?}");
}

fn public_key(options: &Value) -> &Value {
    &options["publicKey"]
}

/// Edit the JSON object at `path` (keys from the root) of a response.
fn edit(response: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(response).unwrap();
    f(&mut v);
    serde_json::to_string(&v).unwrap()
}

fn b64(v: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(v.as_str().unwrap().trim_end_matches('='))
        .unwrap()
}

/// Flip one bit of the base64url field `response.<field>` at `index`.
fn flip(response: &str, field: &str, index: usize) -> String {
    edit(response, |v| {
        let mut bytes = b64(&v["response"][field]);
        let i = index.min(bytes.len() - 1);
        bytes[i] ^= 0x01;
        v["response"][field] = Value::String(URL_SAFE_NO_PAD.encode(bytes));
    })
}

/// Rewrite the client data JSON of a response.
fn edit_client_data(response: &str, f: impl FnOnce(&mut Value)) -> String {
    edit(response, |v| {
        let mut client: Value =
            serde_json::from_slice(&b64(&v["response"]["clientDataJSON"])).unwrap();
        f(&mut client);
        v["response"]["clientDataJSON"] =
            Value::String(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&client).unwrap()));
    })
}

/// A registration response carrying the same credential (id and public
/// key) as `original`, re-answered for another ceremony: the attestation is
/// turned into format `none` (which binds nothing to the client data) and
/// the client data names `challenge`. This is how an attacker who holds a
/// credential's attestation would try to register it again.
fn reregister(original: &str, challenge: &Value) -> String {
    let v: Value = serde_json::from_str(original).unwrap();
    let att = b64(&v["response"]["attestationObject"]);
    // The authData byte string after its CBOR text key "authData".
    let key = b"\x68authData";
    let at = att.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let (len, start) = match att[at] {
        0x58 => (usize::from(att[at + 1]), at + 2),
        0x59 => (
            usize::from(u16::from_be_bytes([att[at + 1], att[at + 2]])),
            at + 3,
        ),
        other => panic!("unexpected authData header {other:#x}"),
    };
    let auth_data = &att[at..start + len];
    let mut none = vec![0xa3, 0x63];
    none.extend_from_slice(b"fmt");
    none.push(0x64);
    none.extend_from_slice(b"none");
    none.push(0x67);
    none.extend_from_slice(b"attStmt");
    none.push(0xa0);
    none.extend_from_slice(key);
    none.extend_from_slice(auth_data);
    let with_none = edit(original, |v| {
        v["response"]["attestationObject"] = Value::String(URL_SAFE_NO_PAD.encode(&none));
    });
    edit_client_data(&with_none, |c| c["challenge"] = challenge.clone())
}

/// Register and list; a second passkey is registered with the first
/// excluded; rename. Nothing works before the relying party is configured.
pub async fn register_list_and_rename(h: Harness) {
    let (ks, clock) = keystead(&h).await;
    let realm = ks.realms().create("acme", cheap_settings()).await.unwrap();
    let users = ks.users(realm.id);
    let wa = ks.webauthn(realm.id);
    let alice = register_user(&users, "alice").await;
    assert_wa(
        &wa.create_options(alice, Authority::Operator).await,
        &WebauthnError::NotConfigured,
    );
    assert_eq!(wa.relying_party().await.unwrap(), None);
    wa.configure(relying_party(false)).await.unwrap();
    assert_eq!(
        wa.relying_party().await.unwrap(),
        Some(relying_party(false))
    );
    assert_eq!(
        wa.configure(RelyingParty::new(RP_ID, "Acme", "https://evil.com"))
            .await
            .unwrap_err()
            .code(),
        "VALIDATION_FAILED"
    );

    let options = wa.create_options(alice, Authority::Operator).await.unwrap();
    let pk_json = public_key(&options.options);
    assert_eq!(pk_json["rp"]["id"], RP_ID);
    assert_eq!(pk_json["user"]["name"], "alice");
    assert_eq!(
        b64(&pk_json["user"]["id"]),
        alice.to_bytes().to_vec(),
        "the user handle is the user id"
    );
    assert_eq!(
        pk_json["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert_eq!(
        options.expires_at,
        clock_now(&clock) + Duration::seconds(CEREMONY_TTL_SECS)
    );
    let mut laptop = passkey();
    let response = browser_create(&mut laptop, ORIGIN, &options.options);
    let cred = wa
        .create(alice, options.challenge_id, &response, "  Laptop ")
        .await
        .unwrap();
    assert_eq!(cred.user, alice);
    assert_eq!(cred.realm, realm.id);
    assert_eq!(cred.label, "Laptop");
    assert_eq!(cred.algorithm, -7);
    assert_eq!(cred.sign_count, 0);
    assert!(!cred.backup_eligible && !cred.backup_state);
    assert_eq!(cred.created_at, clock_now(&clock));
    assert_eq!(cred.last_used_at, None);
    assert_eq!(wa.list(alice).await.unwrap(), vec![cred.clone()]);
    assert_eq!(wa.credential_count(alice).await.unwrap(), 1);

    // A second passkey: the first is excluded from the options.
    let options = wa.create_options(alice, Authority::Operator).await.unwrap();
    let excluded: Vec<_> = public_key(&options.options)["excludeCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| b64(&c["id"]))
        .collect();
    assert_eq!(excluded, vec![cred.id.as_bytes().to_vec()]);
    let mut phone = passkey();
    let response = browser_create(&mut phone, ORIGIN, &options.options);
    let second = wa
        .create(alice, options.challenge_id, &response, "Phone")
        .await
        .unwrap();
    let listed = wa.list(alice).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&cred) && listed.contains(&second));

    // Rename; bad labels are validation errors, unknown ids typed.
    let renamed = wa.rename(alice, &cred.id, "Work laptop").await.unwrap();
    assert_eq!(renamed.label, "Work laptop");
    assert_eq!(wa.get(alice, &cred.id).await.unwrap().label, "Work laptop");
    assert_eq!(
        wa.rename(alice, &cred.id, "a\u{0}b")
            .await
            .unwrap_err()
            .code(),
        "VALIDATION_FAILED"
    );
    let unknown = CredentialId::from_bytes(vec![7; 16]).unwrap();
    assert_wa(
        &wa.rename(alice, &unknown, "x").await,
        &WebauthnError::UnknownCredential,
    );
}

/// Authenticate as a second factor with one of two passkeys: sign count,
/// last use and `amr` recorded; delete one, then all.
pub async fn second_factor_and_delete(h: Harness) {
    let Fixture {
        clock, wa, alice, ..
    } = fixture(&h, false).await;
    let mut laptop = passkey();
    let cred = enrol(&wa, &mut laptop, alice, "Laptop").await;
    let mut phone = passkey();
    let second = enrol(&wa, &mut phone, alice, "Phone").await;
    clock.advance(Duration::seconds(10));
    let options = wa.request_options(Some(alice)).await.unwrap();
    let allowed: Vec<_> = public_key(&options.options)["allowCredentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| b64(&c["id"]))
        .collect();
    assert_eq!(allowed.len(), 2);
    assert!(allowed.contains(&cred.id.as_bytes().to_vec()));
    let response = browser_get(&mut laptop, ORIGIN, &options.options);
    let assertion = wa
        .authenticate_for_user(alice, options.challenge_id, &response)
        .await
        .unwrap();
    assert_eq!(assertion.user, alice);
    assert_eq!(assertion.amr, PasskeyAmr::Hwk);
    assert!(assertion.user_verified);
    assert_eq!(assertion.credential.id, cred.id);
    assert_eq!(assertion.credential.sign_count, 1);
    assert_eq!(assertion.credential.last_used_at, Some(clock_now(&clock)));
    assert_eq!(wa.get(alice, &cred.id).await.unwrap(), assertion.credential);

    // Delete: gone from the list, and its id is unknown.
    wa.delete(alice, &second.id, Authority::Operator)
        .await
        .unwrap();
    assert_wa(
        &wa.delete(alice, &second.id, Authority::Operator).await,
        &WebauthnError::UnknownCredential,
    );
    assert_eq!(wa.list(alice).await.unwrap().len(), 1);
    let (challenge, response) = assertion_for(&wa, &mut laptop, alice).await;
    wa.authenticate_for_user(alice, challenge, &response)
        .await
        .unwrap();
    assert_eq!(wa.delete_all(alice).await.unwrap(), 1);
    assert_wa(
        &wa.request_options(Some(alice)).await,
        &WebauthnError::NoCredentials,
    );
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use crate::clock::Clock;
    clock.now()
}

async fn assertion_for(
    wa: &Webauthn,
    pk: &mut Passkey,
    user: UserId,
) -> (crate::id::ChallengeId, String) {
    assertion(wa, pk, Some(user)).await
}

/// Passwordless login only where the realm allows it: username-first and
/// discoverable (the passkey names its user).
pub async fn passwordless_login(h: Harness) {
    let f = fixture(&h, false).await;
    let mut pk = passkey();
    let cred = enrol(&f.wa, &mut pk, f.alice, "Laptop").await;
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    assert_wa(
        &f.wa.authenticate(challenge, &response).await,
        &WebauthnError::PasswordlessNotAllowed,
    );
    assert_wa(
        &f.wa.request_options(None).await,
        &WebauthnError::PasswordlessNotAllowed,
    );
    // The same ceremony still serves as a second factor.
    f.wa.authenticate_for_user(f.alice, challenge, &response)
        .await
        .unwrap();

    f.wa.configure(relying_party(true)).await.unwrap();
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let a = f.wa.authenticate(challenge, &response).await.unwrap();
    assert_eq!(
        (a.user, a.amr, a.credential.sign_count),
        (f.alice, PasskeyAmr::Hwk, 2)
    );

    // Discoverable: no user named up front; the authenticator picks its
    // resident credential and returns the user handle.
    let options = f.wa.request_options(None).await.unwrap();
    let pkey = public_key(&options.options);
    assert_eq!(pkey["allowCredentials"].as_array().map_or(0, Vec::len), 0);
    assert_eq!(options.options["mediation"], "conditional");
    let response = discoverable_get(&mut pk, &options.options, &cred.id, f.alice);
    let a =
        f.wa.authenticate(options.challenge_id, &response)
            .await
            .unwrap();
    assert_eq!((a.user, a.credential.sign_count), (f.alice, 3));

    // A user handle that does not name the credential's owner is refused.
    let options = f.wa.request_options(None).await.unwrap();
    let response = discoverable_get(&mut pk, &options.options, &cred.id, f.bob);
    assert_wa(
        &f.wa.authenticate(options.challenge_id, &response).await,
        &WebauthnError::UnknownCredential,
    );
    // A disabled owner can't log in.
    f.users.disable(f.alice).await.unwrap();
    let response = discoverable_get(&mut pk, &options.options, &cred.id, f.alice);
    assert_wa(
        &f.wa.authenticate(options.challenge_id, &response).await,
        &WebauthnError::UnknownCredential,
    );
    assert!(matches!(
        f.wa.request_options(Some(f.alice)).await,
        Err(Error::User(UserError::Disabled))
    ));
}

/// `login` is passwordless login that opens the session in the commit
/// that spends the ceremony: refused (and no session) where the realm
/// disallows passwordless login; otherwise one session with the method the
/// passkey proves; a replay opens no second one; a disabled owner none.
pub async fn passwordless_login_opens_a_session(h: Harness) {
    use crate::user::AuthMethod;
    let f = fixture(&h, false).await;
    let sessions = |user| {
        let users = f.users.clone();
        async move { users.list_sessions(user, None, 100).await.unwrap().items }
    };
    let mut pk = passkey();
    let cred = enrol(&f.wa, &mut pk, f.alice, "Laptop").await;
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    assert_wa(
        &f.wa.login(challenge, &response).await,
        &WebauthnError::PasswordlessNotAllowed,
    );
    assert!(sessions(f.alice).await.is_empty());

    f.wa.configure(relying_party(true)).await.unwrap();
    let options = f.wa.request_options(None).await.unwrap();
    let response = discoverable_get(&mut pk, &options.options, &cred.id, f.alice);
    let session = f.wa.login(options.challenge_id, &response).await.unwrap();
    assert_eq!(
        (session.user, session.methods.clone()),
        (f.alice, vec![AuthMethod::Hwk])
    );
    assert_eq!(sessions(f.alice).await, vec![session.clone()]);
    assert_eq!(f.users.get_session(session.id).await.unwrap(), session);
    // The credential's counter moved in the same commit.
    let used = f.wa.get(f.alice, &cred.id).await.unwrap();
    assert_eq!(used.last_used_at, Some(clock_now(&f.clock)));
    assert!(used.sign_count > cred.sign_count);

    // Replayed: refused, no second session.
    assert_wa(
        &f.wa.login(options.challenge_id, &response).await,
        &WebauthnError::ChallengeNotFound,
    );
    assert_eq!(sessions(f.alice).await.len(), 1);
    // Malformed JSON is a validation error naming the response.
    let (challenge, _) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    assert!(matches!(
        f.wa.login(challenge, "{}").await,
        Err(Error::Validation(v)) if v.field == "response"
    ));
    // A disabled owner gets no session.
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    f.users.disable(f.alice).await.unwrap();
    assert_wa(
        &f.wa.login(challenge, &response).await,
        &WebauthnError::UnknownCredential,
    );
    f.users.enable(f.alice).await.unwrap();
    assert!(
        sessions(f.alice).await.is_empty(),
        "disable ended the session"
    );
}

/// What a discoverable authenticator does: choose its own credential for
/// the rp (the soft passkey needs it listed) and return the user handle.
fn discoverable_get(
    pk: &mut Passkey,
    options: &Value,
    id: &CredentialId,
    handle: UserId,
) -> String {
    let mut options = options.clone();
    options["publicKey"]["allowCredentials"] = serde_json::json!([
        {"type": "public-key", "id": id.to_string()}
    ]);
    let response = browser_get(pk, ORIGIN, &options);
    edit(&response, |v| {
        v["response"]["userHandle"] = Value::String(URL_SAFE_NO_PAD.encode(handle.to_bytes()));
    })
}

/// A used challenge is refused, for registration and authentication, and
/// the replay writes nothing.
pub async fn replay_is_refused(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    f.wa.create(f.alice, options.challenge_id, &response, "Key")
        .await
        .unwrap();
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &response, "Key")
            .await,
        &WebauthnError::ChallengeNotFound,
    );
    assert_eq!(f.wa.list(f.alice).await.unwrap().len(), 1);

    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let first = f.wa.authenticate(challenge, &response).await.unwrap();
    assert_wa(
        &f.wa.authenticate(challenge, &response).await,
        &WebauthnError::ChallengeNotFound,
    );
    assert_wa(
        &f.wa
            .authenticate_for_user(f.alice, challenge, &response)
            .await,
        &WebauthnError::ChallengeNotFound,
    );
    let now = f.wa.get(f.alice, &first.credential.id).await.unwrap();
    assert_eq!(now, first.credential, "a replay writes nothing");
    // A registration challenge can't be used to authenticate, nor the
    // reverse.
    let reg =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    assert_wa(
        &f.wa.authenticate(reg.challenge_id, &response).await,
        &WebauthnError::ChallengeNotFound,
    );
    let (auth_challenge, _) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let mut other = passkey();
    let reg_response = browser_create(&mut other, ORIGIN, &reg.options);
    assert_wa(
        &f.wa
            .create(f.alice, auth_challenge, &reg_response, "Key")
            .await,
        &WebauthnError::ChallengeNotFound,
    );
}

/// How many callers the forced race has.
const RACERS: usize = 4;

/// Concurrent finishes of one ceremony: exactly one wins, for
/// authentication and for registration.
pub async fn concurrent_finishes_one_winner(h: Harness) {
    use crate::crypto::at_rest::StaticKeyProvider;
    let gate = GatedStore::new(h.open().await, b"webauthn-ceremony", RACERS);
    let ks = Keystead::builder()
        .shared_store(gate.clone())
        .clock(ManualClock::new(super::epoch()))
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let (users, wa) = realm_fixture(&ks, "acme", true).await;
    let alice = register_user(&users, "alice").await;
    let mut pk = passkey();

    // Registration: RACERS finishes of one ceremony, one credential.
    let options = wa.create_options(alice, Authority::Operator).await.unwrap();
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    gate.arm(RACERS);
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (wa, response) = (wa.clone(), response.clone());
            tokio::spawn(async move {
                wa.create(alice, options.challenge_id, &response, "Key")
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            r => assert_wa(&r, &WebauthnError::ChallengeNotFound),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(wa.list(alice).await.unwrap().len(), 1);

    // Authentication: RACERS finishes with one signed response.
    let (challenge, response) = assertion(&wa, &mut pk, Some(alice)).await;
    gate.arm(RACERS);
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let (wa, response) = (wa.clone(), response.clone());
            tokio::spawn(async move { wa.authenticate(challenge, &response).await })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => winners.push(a),
            r => assert_wa(&r, &WebauthnError::ChallengeNotFound),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one finish wins");
    assert_eq!(winners[0].credential.sign_count, 1);
}

/// Responses made for another origin or rp id are refused, write nothing
/// and leave the ceremony usable.
pub async fn wrong_origin_and_rp_id(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    // A sibling subdomain: the browser allows it for rp id example.com,
    // the relying party does not list it.
    let evil = browser_create(&mut pk, "https://evil.example.com", &options.options);
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &evil, "Key")
            .await,
        &WebauthnError::WrongOrigin,
    );
    let mut wrong_rp = options.options.clone();
    wrong_rp["publicKey"]["rp"]["id"] = Value::from("login.example.com");
    let response = browser_create(&mut pk, ORIGIN, &wrong_rp);
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &response, "Key")
            .await,
        &WebauthnError::WrongRpId,
    );
    assert!(f.wa.list(f.alice).await.unwrap().is_empty());
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    let cred =
        f.wa.create(f.alice, options.challenge_id, &response, "Key")
            .await
            .unwrap();

    let options = f.wa.request_options(Some(f.alice)).await.unwrap();
    let evil = browser_get(&mut pk, "https://evil.example.com", &options.options);
    assert_wa(
        &f.wa.authenticate(options.challenge_id, &evil).await,
        &WebauthnError::WrongOrigin,
    );
    let mut wrong_rp = options.options.clone();
    wrong_rp["publicKey"]["rpId"] = Value::from("login.example.com");
    let response = browser_get(&mut pk, ORIGIN, &wrong_rp);
    assert_wa(
        &f.wa.authenticate(options.challenge_id, &response).await,
        &WebauthnError::WrongRpId,
    );
    assert_eq!(
        f.wa.get(f.alice, &cred.id).await.unwrap(),
        cred,
        "nothing written"
    );
    let response = browser_get(&mut pk, ORIGIN, &options.options);
    f.wa.authenticate(options.challenge_id, &response)
        .await
        .unwrap();
}

/// Tampered signatures, authenticator data and client data, unknown ids and
/// malformed JSON: typed errors, nothing written, ceremony still usable.
pub async fn tampered_responses(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let cred = enrol(&f.wa, &mut pk, f.alice, "Key").await;

    // Registration with tampered client data or attestation.
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let mut other = passkey();
    let response = browser_create(&mut other, ORIGIN, &options.options);
    let other_challenge = edit_client_data(&response, |c| {
        c["challenge"] = Value::from(URL_SAFE_NO_PAD.encode([0u8; 32]));
    });
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &other_challenge, "K")
            .await,
        &WebauthnError::ChallengeMismatch,
    );
    let bad_attestation = flip(&response, "attestationObject", 60);
    assert_eq!(
        f.wa.create(f.alice, options.challenge_id, &bad_attestation, "K")
            .await
            .unwrap_err()
            .code(),
        "WEBAUTHN_INVALID_RESPONSE"
    );
    assert_eq!(f.wa.list(f.alice).await.unwrap().len(), 1);

    // Authentication.
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let invalid = |r: &Result<_, Error>| {
        matches!(
            r,
            Err(Error::Webauthn(WebauthnError::InvalidResponse { .. }))
        )
    };
    let sig = flip(&response, "signature", 20);
    assert!(invalid(&f.wa.authenticate(challenge, &sig).await));
    // The counter byte of the authenticator data: signed, so refused.
    let data = flip(&response, "authenticatorData", 36);
    assert!(invalid(&f.wa.authenticate(challenge, &data).await));
    let typ = edit_client_data(&response, |c| c["type"] = Value::from("webauthn.create"));
    assert!(invalid(&f.wa.authenticate(challenge, &typ).await));
    let other_challenge = edit_client_data(&response, |c| {
        c["challenge"] = Value::from(URL_SAFE_NO_PAD.encode([1u8; 32]));
    });
    assert_wa(
        &f.wa.authenticate(challenge, &other_challenge).await,
        &WebauthnError::ChallengeMismatch,
    );
    let unknown_id = edit(&response, |v| {
        let id = URL_SAFE_NO_PAD.encode([9u8; 16]);
        v["id"] = Value::from(id.clone());
        v["rawId"] = Value::from(id);
    });
    assert_wa(
        &f.wa.authenticate(challenge, &unknown_id).await,
        &WebauthnError::UnknownCredential,
    );
    for malformed in ["", "{", "[]", r#"{"id":1}"#] {
        let e = f.wa.authenticate(challenge, malformed).await.unwrap_err();
        assert!(
            matches!(&e, Error::Validation(v) if v.field.starts_with("response")),
            "{malformed:?}: {e:?}"
        );
    }
    assert_eq!(
        f.wa.get(f.alice, &cred.id).await.unwrap(),
        cred,
        "nothing written"
    );
    let a = f.wa.authenticate(challenge, &response).await.unwrap();
    assert_eq!(a.credential.sign_count, 1);
}

/// Another user's credential or ceremony is refused; a credential id is
/// registered at most once per realm.
pub async fn other_users_credentials_refused(h: Harness) {
    let f = fixture(&h, true).await;
    let mut alice_pk = passkey();
    let mut bob_pk = passkey();
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let alice_registration = browser_create(&mut alice_pk, ORIGIN, &options.options);
    let alice_cred =
        f.wa.create(f.alice, options.challenge_id, &alice_registration, "A")
            .await
            .unwrap();
    let bob_cred = enrol(&f.wa, &mut bob_pk, f.bob, "B").await;

    // Bob's ceremony can't complete Alice's second factor.
    let (bob_challenge, bob_response) = assertion(&f.wa, &mut bob_pk, Some(f.bob)).await;
    assert_wa(
        &f.wa
            .authenticate_for_user(f.alice, bob_challenge, &bob_response)
            .await,
        &WebauthnError::ChallengeNotFound,
    );
    // Bob's credential answering Alice's ceremony (a client that swapped
    // the allowed credentials).
    let options = f.wa.request_options(Some(f.alice)).await.unwrap();
    let mut swapped = options.options.clone();
    swapped["publicKey"]["allowCredentials"] =
        serde_json::json!([{"type": "public-key", "id": bob_cred.id.to_string()}]);
    let response = browser_get(&mut bob_pk, ORIGIN, &swapped);
    assert_wa(
        &f.wa
            .authenticate_for_user(f.alice, options.challenge_id, &response)
            .await,
        &WebauthnError::UnknownCredential,
    );
    assert_wa(
        &f.wa.authenticate(options.challenge_id, &response).await,
        &WebauthnError::UnknownCredential,
    );
    // Management of another user's credential.
    assert_wa(
        &f.wa.rename(f.bob, &alice_cred.id, "mine").await,
        &WebauthnError::UnknownCredential,
    );
    assert_wa(
        &f.wa
            .delete(f.bob, &alice_cred.id, Authority::Operator)
            .await,
        &WebauthnError::UnknownCredential,
    );
    // Registration challenges are per user.
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let mut third = passkey();
    let response = browser_create(&mut third, ORIGIN, &options.options);
    assert_wa(
        &f.wa
            .create(f.bob, options.challenge_id, &response, "B")
            .await,
        &WebauthnError::ChallengeNotFound,
    );
    // Alice's credential registered again — by Bob, or by Alice (excluded).
    let options =
        f.wa.create_options(f.bob, Authority::Operator)
            .await
            .unwrap();
    let again = reregister(
        &alice_registration,
        &public_key(&options.options)["challenge"],
    );
    assert_wa(
        &f.wa.create(f.bob, options.challenge_id, &again, "B").await,
        &WebauthnError::CredentialExists,
    );
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let again = reregister(
        &alice_registration,
        &public_key(&options.options)["challenge"],
    );
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &again, "A")
            .await,
        &WebauthnError::CredentialExists,
    );
    assert_eq!(f.wa.list(f.bob).await.unwrap(), vec![bob_cred]);
    assert_eq!(f.wa.list(f.alice).await.unwrap(), vec![alice_cred]);
    // The same re-registration into a realm where the id is new works: the
    // helper makes a valid registration, so the refusals above are the
    // index and the exclusion, nothing else.
    let (users2, wa2) = realm_fixture(&f.ks, "beta", true).await;
    let carol = register_user(&users2, "carol").await;
    let options = wa2
        .create_options(carol, Authority::Operator)
        .await
        .unwrap();
    let again = reregister(
        &alice_registration,
        &public_key(&options.options)["challenge"],
    );
    wa2.create(carol, options.challenge_id, &again, "C")
        .await
        .unwrap();
}

/// Ceremonies and credentials of another realm are unknown here.
pub async fn other_realm_refused(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let cred = enrol(&f.wa, &mut pk, f.alice, "A").await;
    let (users2, wa2) = realm_fixture(&f.ks, "beta", true).await;
    let carol = register_user(&users2, "carol").await;
    let mut carol_pk = passkey();
    enrol(&wa2, &mut carol_pk, carol, "C").await;

    // An acme ceremony id on the beta handle.
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    assert_wa(
        &wa2.authenticate(challenge, &response).await,
        &WebauthnError::ChallengeNotFound,
    );
    // Alice's acme credential answering a beta ceremony.
    let options = wa2.request_options(Some(carol)).await.unwrap();
    let mut swapped = options.options.clone();
    swapped["publicKey"]["allowCredentials"] =
        serde_json::json!([{"type": "public-key", "id": cred.id.to_string()}]);
    let response = browser_get(&mut pk, ORIGIN, &swapped);
    assert_wa(
        &wa2.authenticate_for_user(carol, options.challenge_id, &response)
            .await,
        &WebauthnError::UnknownCredential,
    );
    let options = wa2.request_options(None).await.unwrap();
    let response = discoverable_get(&mut pk, &options.options, &cred.id, f.alice);
    assert_wa(
        &wa2.authenticate(options.challenge_id, &response).await,
        &WebauthnError::UnknownCredential,
    );
    assert_wa(
        &wa2.get(f.alice, &cred.id).await,
        &WebauthnError::UnknownCredential,
    );
    assert!(matches!(
        wa2.list(f.alice).await,
        Err(Error::User(UserError::NotFound))
    ));
    // The acme ceremony is untouched by the attempts.
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    f.wa.authenticate(challenge, &response).await.unwrap();
}

/// A ceremony is accepted until [`CEREMONY_TTL_SECS`] after it was made,
/// by the injected clock, and refused from then on.
pub async fn expired_challenge(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    f.clock.advance(Duration::seconds(CEREMONY_TTL_SECS));
    assert_wa(
        &f.wa
            .create(f.alice, options.challenge_id, &response, "Key")
            .await,
        &WebauthnError::ChallengeExpired,
    );
    assert!(f.wa.list(f.alice).await.unwrap().is_empty());
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    f.clock.advance(Duration::seconds(CEREMONY_TTL_SECS - 1));
    f.wa.create(f.alice, options.challenge_id, &response, "Key")
        .await
        .unwrap();

    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    f.clock.advance(Duration::seconds(CEREMONY_TTL_SECS));
    assert_wa(
        &f.wa.authenticate(challenge, &response).await,
        &WebauthnError::ChallengeExpired,
    );
    let (challenge, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    f.clock.advance(Duration::seconds(CEREMONY_TTL_SECS - 1));
    f.wa.authenticate(challenge, &response).await.unwrap();

    // An abandoned ceremony stays until it expires; then the purge removes
    // it (the first purge clears what the steps above left expired).
    let tokens = f.ks.tokens(f.wa.realm());
    tokens.purge_expired().await.unwrap();
    f.wa.create_options(f.alice, Authority::Operator)
        .await
        .unwrap();
    assert_eq!(tokens.purge_expired().await.unwrap().webauthn_ceremonies, 0);
    f.clock.advance(Duration::seconds(CEREMONY_TTL_SECS));
    assert_eq!(tokens.purge_expired().await.unwrap().webauthn_ceremonies, 1);
    assert_eq!(tokens.purge_expired().await.unwrap().webauthn_ceremonies, 0);
}

/// A signature counter that does not advance flags the credential
/// (persisted); a flagged credential is refused and no longer offered.
pub async fn sign_count_regression_flags_the_credential(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let cred = enrol(&f.wa, &mut pk, f.alice, "Key").await;
    // Three ceremonies signed in order (counters 1, 2, 3) ...
    let (c1, r1) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let (c2, r2) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let (c3, r3) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    // ... answered out of order: 2 is fine, then 1 has not advanced.
    assert_eq!(
        f.wa.authenticate(c2, &r2)
            .await
            .unwrap()
            .credential
            .sign_count,
        2
    );
    f.clock.advance(Duration::seconds(5));
    assert_wa(
        &f.wa.authenticate(c1, &r1).await,
        &WebauthnError::SignCountRegression,
    );
    let flagged = f.wa.get(f.alice, &cred.id).await.unwrap();
    assert_eq!(flagged.flagged_at, Some(clock_now(&f.clock)));
    assert_eq!(flagged.sign_count, 2, "the regressed count is not stored");
    // Refused from now on, even with a valid, advancing signature.
    assert_wa(
        &f.wa.authenticate(c3, &r3).await,
        &WebauthnError::CredentialFlagged,
    );
    assert_wa(
        &f.wa.request_options(Some(f.alice)).await,
        &WebauthnError::NoCredentials,
    );
    assert!(f.wa.list(f.alice).await.unwrap()[0].flagged_at.is_some());
    // Deleting it lets the user start over.
    f.wa.delete(f.alice, &cred.id, Authority::Operator)
        .await
        .unwrap();
    enrol(&f.wa, &mut pk, f.alice, "Key").await;
}

/// At most [`MAX_CREDENTIALS`] per user; labels validated before anything
/// is read.
pub async fn credential_limit_and_labels(h: Harness) {
    let f = fixture(&h, true).await;
    let mut pk = passkey();
    let options =
        f.wa.create_options(f.alice, Authority::Operator)
            .await
            .unwrap();
    let response = browser_create(&mut pk, ORIGIN, &options.options);
    for bad in ["", "   ", &"x".repeat(65)] {
        let e =
            f.wa.create(f.alice, options.challenge_id, &response, bad)
                .await
                .unwrap_err();
        assert!(
            matches!(&e, Error::Validation(v) if v.field == "label"),
            "{e:?}"
        );
    }
    f.wa.create(f.alice, options.challenge_id, &response, "0")
        .await
        .unwrap();
    for i in 1..MAX_CREDENTIALS {
        enrol(&f.wa, &mut pk, f.alice, &i.to_string()).await;
    }
    assert_eq!(f.wa.list(f.alice).await.unwrap().len(), MAX_CREDENTIALS);
    assert_wa(
        &f.wa.create_options(f.alice, Authority::Operator).await,
        &WebauthnError::CredentialLimitReached,
    );
    assert!(f.wa.list(f.bob).await.unwrap().is_empty());
    assert!(matches!(
        f.wa.create_options(UserId::generate(clock_now(&f.clock)), Authority::Operator)
            .await,
        Err(Error::User(UserError::NotFound))
    ));
}

/// A passkey is a second factor of the login challenge: login asks for MFA
/// once alice holds one, the challenge lists `webauthn`, an assertion
/// completes it (`pwd` + `swk`/`hwk`, the passkey ceremony spent in the
/// same commit), a replayed assertion fails, and a TOTP answer is not
/// allowed for a user without a TOTP key. A flagged passkey stops counting.
pub async fn passkey_answers_the_login_challenge(h: Harness) {
    use crate::mfa::{MfaAnswer, MfaError, MfaFactor};
    use crate::user::{AuthError, AuthMethod, LoginOutcome};
    let f = fixture(&h, false).await;
    let mfa = f.ks.mfa(f.wa.realm());
    let login = || async {
        f.users
            .authenticate("alice", SecretString::from("correct horse"))
            .await
            .unwrap()
    };
    assert!(matches!(login().await, LoginOutcome::Authenticated(_)));
    let mut pk = passkey();
    enrol(&f.wa, &mut pk, f.alice, "laptop").await;
    let LoginOutcome::MfaRequired { challenge } = login().await else {
        panic!("a passkey holder must be asked for a second factor");
    };
    assert_eq!(
        challenge.factors,
        vec![MfaFactor::Webauthn, MfaFactor::TrustedDevice]
    );
    let totp = MfaAnswer::Totp(SecretString::from("123456"));
    assert!(matches!(
        mfa.complete_challenge(challenge.id, &totp).await,
        Err(Error::Mfa(MfaError::FactorNotAllowed))
    ));
    let (ceremony, response) = assertion(&f.wa, &mut pk, Some(f.alice)).await;
    let answer = MfaAnswer::Webauthn { ceremony, response };
    let session = mfa.complete_challenge(challenge.id, &answer).await.unwrap();
    assert_eq!(session.user, f.alice);
    assert_eq!(session.methods[0], AuthMethod::Pwd);
    assert!(matches!(
        session.methods[1],
        AuthMethod::Swk | AuthMethod::Hwk
    ));
    assert_eq!(session.methods.len(), 2);
    // The challenge and the ceremony are both spent.
    assert!(matches!(
        mfa.complete_challenge(challenge.id, &answer).await,
        Err(Error::Auth(AuthError::ChallengeNotFound))
    ));
    let LoginOutcome::MfaRequired { challenge: again } = login().await else {
        panic!("expected MFA");
    };
    assert!(mfa.complete_challenge(again.id, &answer).await.is_err());
    // Bob's assertion can't answer alice's challenge.
    let mut bobs = passkey();
    enrol(&f.wa, &mut bobs, f.bob, "bob").await;
    let (ceremony, response) = assertion(&f.wa, &mut bobs, Some(f.bob)).await;
    let foreign = MfaAnswer::Webauthn { ceremony, response };
    assert!(mfa.complete_challenge(again.id, &foreign).await.is_err());
    // Once alice's passkeys are gone, login no longer asks.
    assert_eq!(f.wa.delete_all(f.alice).await.unwrap(), 1);
    assert!(matches!(login().await, LoginOutcome::Authenticated(_)));
}
