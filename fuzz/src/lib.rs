//! Fixed keys and contexts shared by the fuzz targets and `make_seeds`, so
//! the checked-in seed corpora stay valid inputs for the targets.
//!
//! Every key here is a public test fixture; none is used anywhere else.

use keystead::crypto::DeviceSecretKey;
use keystead::crypto::at_rest::{Kek, KeyId, StaticKeyProvider};
use keystead::crypto::envelope::EnvelopeContext;
use keystead::crypto::jws::{JwsAlgorithm, JwsKeySet, SigningKey};
use keystead::id::{DeviceId, GroupId, RealmId};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// RFC 8032 §7.1 test 1 seed: the EdDSA key of the JWS key set.
const ED25519_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

/// An unencrypted PKCS#8 P-256 key with its public key (made once with
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`): the
/// ES256 key of the JWS key set.
const P256_PKCS8: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420\
2a340358cb7cbc5cf533a26c46ea60fe7845d29a9e0a278aef30a1f23042318ba14403420004ea4fdc420289c5d1\
6bbabc2d2b8d8614bdc2ca0151662f550d9ecc99b34478058322507610f9cb57431d9b6cf58ce5a64fca977056b4\
ff7f52f551a497c5f42b";

/// The record key every at-rest blob of the corpus is bound to.
pub const RECORD_KEY: &[u8] = b"realm/01/totp/09";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

/// The two JWS signing keys: one `EdDSA`, one `ES256`.
pub fn jws_signing_keys() -> [SigningKey; 2] {
    [
        SigningKey::ed25519_from_seed(&unhex(ED25519_SEED)).expect("fixture seed"),
        SigningKey::from_pkcs8(JwsAlgorithm::Es256, &unhex(P256_PKCS8)).expect("fixture PKCS#8"),
    ]
}

/// The trusted set holding the public halves of [`jws_signing_keys`].
pub fn jws_key_set() -> JwsKeySet {
    jws_signing_keys()
        .iter()
        .map(|k| k.verifying_key().clone())
        .collect()
}

/// The device key envelopes are opened with.
pub fn envelope_recipient() -> DeviceSecretKey {
    DeviceSecretKey::from_bytes(&[0x42; 32]).expect("fixture key")
}

/// The context envelopes are opened with.
pub fn envelope_context() -> EnvelopeContext {
    EnvelopeContext {
        realm: "0192f5c4-0000-7000-8000-000000000001"
            .parse::<RealmId>()
            .expect("v7"),
        group: "0192f5c4-0000-7000-8000-000000000002"
            .parse::<GroupId>()
            .expect("v7"),
        key_version: 3,
        recipient: "0192f5c4-0000-7000-8000-000000000003"
            .parse::<DeviceId>()
            .expect("v7"),
    }
}

/// A provider whose current KEK is `kek-2`, still accepting `kek-1`.
pub fn at_rest_provider() -> StaticKeyProvider {
    let kek = |b: u8| Kek::from_bytes(&[b; 32]).expect("fixture KEK");
    StaticKeyProvider::new(KeyId::new("kek-2").expect("id"), kek(2))
        .with_retired(KeyId::new("kek-1").expect("id"), kek(1))
}

/// A provider that only knows the retired `kek-1` as its current key, for
/// sealing corpus blobs under the old KEK.
pub fn at_rest_old_provider() -> StaticKeyProvider {
    StaticKeyProvider::new(
        KeyId::new("kek-1").expect("id"),
        Kek::from_bytes(&[1; 32]).expect("fixture KEK"),
    )
}

/// Run a future that never waits (the static provider's calls resolve at
/// once) to completion without an executor.
pub fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a StaticKeyProvider call never waits"),
    }
}
