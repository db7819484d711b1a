//! Access tokens arrive from the network: parsing and verifying any bytes
//! against a fixed key set (one `EdDSA`, one `ES256` key) must give a typed
//! error or a verified token, never a panic, and a token that verifies must
//! verify again identically, in its single canonical spelling.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keystead::crypto::jws::{self, HeaderParams, JwsAlgorithm, JwsKeySet, SigningKey};
use keystead_fuzz::{jws_key_set, jws_signing_keys};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEYS: LazyLock<JwsKeySet> = LazyLock::new(jws_key_set);
static SIGNERS: LazyLock<[SigningKey; 2]> = LazyLock::new(jws_signing_keys);

fuzz_target!(|data: &[u8]| {
    let Ok(verified) = jws::verify(data, &KEYS) else {
        return;
    };
    assert_eq!(
        jws::verify(data, &KEYS).as_ref(),
        Ok(&verified),
        "verification is deterministic"
    );
    let key = KEYS
        .get(&verified.header.kid)
        .expect("verified by a key of the set");
    assert_eq!(
        verified.header.alg,
        key.algorithm(),
        "alg is pinned by the key"
    );

    // Canonical base64url: the token's parts are the only spelling of their
    // bytes, so the payload re-encodes to exactly the payload part.
    let token = std::str::from_utf8(data).expect("a verified token is ASCII");
    let mut parts = token.split('.');
    let (header_b64, payload_b64) = (parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(URL_SAFE_NO_PAD.encode(&verified.payload), payload_b64);

    // Ed25519 is deterministic: a token whose header is the one `sign`
    // writes re-signs to the same bytes.
    if verified.header.alg == JwsAlgorithm::EdDsa {
        let signer = SIGNERS
            .iter()
            .find(|k| k.kid() == verified.header.kid)
            .expect("the signing half of the fixed key");
        let params = HeaderParams {
            typ: verified.header.typ.as_deref(),
            include_kid: true,
        };
        let again = jws::sign(signer, &params, &verified.payload).expect("re-sign");
        if again.split('.').next() == Some(header_b64) {
            assert_eq!(again.as_bytes(), data, "EdDSA re-signs identically");
        }
    }
});
