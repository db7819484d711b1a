//! The WebAuthn finish calls take the browser's JSON straight from the
//! network. For any input, `create` and `authenticate_for_user` must return
//! a validation or a typed WebAuthn error — never a panic, never another
//! error kind, never success (no input can sign the live ceremonies'
//! random challenges) — and write nothing.
//!
//! Input: the first byte picks the mode.
//! * `% 3 == 0`: the rest is a registration response for Alice's live
//!   registration ceremony.
//! * `% 3 == 1`: the rest is an assertion for Alice's live authentication
//!   ceremony.
//! * `% 3 == 2`: the rest is `(field, position, byte)` triples written into
//!   the decoded `authenticatorData` / `clientDataJSON` / `signature` of a
//!   valid assertion for that ceremony (made at setup by a software
//!   passkey); an input that changes nothing is skipped.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::clock::{Clock, ManualClock, SystemClock};
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::id::{ChallengeId, UserId};
use keystead::realm::{PasswordPolicy, RealmSettings};
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::user::Authority;
use keystead::webauthn::{RelyingParty, Webauthn};
use keystead::{Error, Keystead};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const ORIGIN: &str = "https://login.example.com";
const FIELDS: [&str; 3] = ["authenticatorData", "clientDataJSON", "signature"];

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on this thread (argon2 runs on `blocking`'s
/// threads during setup, so the future may wait).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

struct Setup {
    webauthn: Webauthn,
    alice: UserId,
    registration: ChallengeId,
    authentication: ChallengeId,
    /// A valid assertion for `authentication`, as JSON.
    assertion: serde_json::Value,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    block_on(async {
        // A clock that never moves: the ceremonies stay live for the run.
        let clock = ManualClock::new(SystemClock.now());
        let ks = Keystead::builder()
            .store(MemoryStore::new())
            .clock(clock)
            .keys(StaticKeyProvider::generate().expect("KEK"))
            .build()
            .expect("builder");
        let settings = RealmSettings {
            password: PasswordPolicy {
                argon2_memory_kib: 8,
                argon2_iterations: 1,
                argon2_parallelism: 1,
                ..PasswordPolicy::default()
            },
            ..RealmSettings::default()
        };
        let realm = ks.realms().create("acme", settings).await.expect("realm");
        let alice = ks
            .users(realm.id)
            .register("alice", None, SecretString::from("correct horse"))
            .await
            .expect("register")
            .id;
        let webauthn = ks.webauthn(realm.id);
        let mut rp = RelyingParty::new("example.com", "Acme", ORIGIN);
        rp.passwordless = true;
        webauthn.configure(rp).await.expect("relying party");
        let origin = Url::parse(ORIGIN).expect("origin");
        let mut passkey = WebauthnAuthenticator::new(SoftPasskey::new(true));
        let options = webauthn
            .create_options(alice, Authority::Operator)
            .await
            .expect("create options");
        let ccr: CreationChallengeResponse =
            serde_json::from_value(options.options).expect("creation options");
        let response = passkey
            .do_registration(origin.clone(), ccr)
            .expect("soft register");
        let response = serde_json::to_string(&response).expect("json");
        webauthn
            .create(alice, options.challenge_id, &response, "Soft")
            .await
            .expect("create");
        let registration = webauthn
            .create_options(alice, Authority::Operator)
            .await
            .expect("options")
            .challenge_id;
        let options = webauthn
            .request_options(Some(alice))
            .await
            .expect("request options");
        let rcr: RequestChallengeResponse =
            serde_json::from_value(options.options).expect("request options");
        let assertion = passkey.do_authentication(origin, rcr).expect("soft sign");
        Setup {
            webauthn,
            alice,
            registration,
            authentication: options.challenge_id,
            assertion: serde_json::to_value(&assertion).expect("json"),
        }
    })
});

/// The valid assertion with `(field, position, byte)` patches applied to
/// its decoded binary fields; `None` if nothing changed.
fn patched(valid: &serde_json::Value, patches: &[u8]) -> Option<String> {
    let mut out = valid.clone();
    for patch in patches.chunks_exact(3) {
        let field = FIELDS[usize::from(patch[0]) % FIELDS.len()];
        let encoded = out["response"][field].as_str()?;
        let mut bytes = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
        if bytes.is_empty() {
            continue;
        }
        let at = usize::from(patch[1]) % bytes.len();
        bytes[at] = patch[2];
        out["response"][field] = serde_json::Value::String(URL_SAFE_NO_PAD.encode(bytes));
    }
    // Later patches may undo earlier ones: compare the result.
    (out != *valid).then(|| out.to_string())
}

fuzz_target!(|data: &[u8]| {
    let setup = &*SETUP;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let result = match mode % 3 {
        0 => {
            let Ok(json) = std::str::from_utf8(rest) else {
                return;
            };
            block_on(
                setup
                    .webauthn
                    .create(setup.alice, setup.registration, json, "Fuzz"),
            )
            .map(|_| ())
        }
        1 => {
            let Ok(json) = std::str::from_utf8(rest) else {
                return;
            };
            block_on(
                setup
                    .webauthn
                    .authenticate_for_user(setup.alice, setup.authentication, json),
            )
            .map(|_| ())
        }
        _ => {
            let Some(json) = patched(&setup.assertion, rest) else {
                return;
            };
            block_on(
                setup
                    .webauthn
                    .authenticate_for_user(setup.alice, setup.authentication, &json),
            )
            .map(|_| ())
        }
    };
    match result {
        Ok(()) => panic!("a fuzzed response was accepted"),
        Err(Error::Validation(_) | Error::Webauthn(_)) => {}
        Err(e) => panic!("finish failed with another error kind: {e}"),
    }
    let credentials = block_on(setup.webauthn.list(setup.alice)).expect("list");
    assert_eq!(
        credentials.len(),
        1,
        "a refused response wrote a credential"
    );
    assert_eq!(
        credentials[0].sign_count, 0,
        "a refused response moved the counter"
    );
});
