//! The token service's verification entry points take tokens straight from
//! the network. For any input — raw bytes, or a valid access token of the
//! realm with bytes patched in — `verify_access_token` must return claims
//! or a typed token error (never a panic, never another error kind), only
//! the untouched token may verify, and introspection must answer for every
//! input, active only for the untouched token.
//!
//! Input: the first byte picks the mode. Even: the rest is the token.
//! Odd: the rest is `(position, byte)` pairs written into the realm's
//! valid token.
#![no_main]

use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::id::RealmId;
use keystead::realm::{PasswordPolicy, RealmSettings};
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::token::AccessRequest;
use keystead::user::LoginOutcome;
use keystead::Error;
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker};

const AUDIENCE: &str = "https://api.example";

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
    ks: Keystead,
    realm: RealmId,
    access: String,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    block_on(async {
        let ks = Keystead::builder()
            .store(MemoryStore::new())
            .keys(StaticKeyProvider::generate().expect("KEK"))
            .build()
            .expect("builder");
        let mut settings = RealmSettings {
            issuer_url: Some("https://id.example/realms/acme".into()),
            password: PasswordPolicy {
                argon2_memory_kib: 8,
                argon2_iterations: 1,
                argon2_parallelism: 1,
                ..PasswordPolicy::default()
            },
            ..RealmSettings::default()
        };
        // Long-lived, so the valid token stays valid for a whole run.
        settings.tokens.access_secs = 24 * 3600;
        let realm = ks.realms().create("acme", settings).await.expect("realm");
        let users = ks.users(realm.id);
        users
            .register("alice", None, SecretString::from("correct horse"))
            .await
            .expect("register");
        let LoginOutcome::Authenticated(session) = users
            .authenticate("alice", SecretString::from("correct horse"))
            .await
            .expect("login")
        else {
            panic!("no MFA in this realm");
        };
        let request = AccessRequest {
            client_id: "web".into(),
            audience: AUDIENCE.into(),
            scope: vec!["read".into()],
        };
        let pair = ks.tokens(realm.id).issue(session.id, &request).await.expect("issue");
        Setup {
            ks,
            realm: realm.id,
            access: pair.access_token.expose().to_owned(),
        }
    })
});

fuzz_target!(|data: &[u8]| {
    let setup = &*SETUP;
    let tokens = setup.ks.tokens(setup.realm);
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let candidate = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut token = setup.access.clone().into_bytes();
        for pair in rest.chunks_exact(2) {
            let at = usize::from(pair[0]) * 7 % token.len();
            token[at] = pair[1];
        }
        token
    };
    let Ok(candidate) = std::str::from_utf8(&candidate) else {
        return;
    };
    match block_on(tokens.verify_access_token(candidate, AUDIENCE)) {
        Ok(_) => assert_eq!(candidate, setup.access, "only the untouched token verifies"),
        Err(Error::Token(_)) => {}
        Err(e) => panic!("verification failed with a non-token error: {e}"),
    }
    let info = block_on(tokens.introspect(&SecretString::from(candidate)))
        .expect("introspection always answers");
    if info["active"] == true {
        assert_eq!(candidate, setup.access, "only the untouched token is active");
    } else {
        let members = info.as_object().map(|m| m.len());
        assert_eq!(members, Some(1), "an inactive answer reveals nothing");
    }
});
