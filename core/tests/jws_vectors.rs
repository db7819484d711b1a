//! Known-answer tests for `keystead::crypto::jws` on vector files copied
//! unchanged into `testdata/vectors/` (see its MANIFEST.md and SOURCES.md):
//! RFC 8037 (byte-exact compact JWS, JWK, thumbprint), RFC 8032 and
//! Wycheproof Ed25519, Wycheproof ECDSA P-256 with P1363 signatures; plus
//! bit-flip properties of signed tokens.

use keystead::crypto::CryptoError;
use keystead::crypto::jws::{
    self, HeaderParams, JwsAlgorithm, JwsKeySet, SigningKey, VerifyingKey,
};
use proptest::prelude::*;
use serde_json::Value;

mod common;
use common::{hex, hex_str, load};

fn case<'a>(file: &'a Value, name: &str) -> &'a Value {
    file["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn rfc8037_appendix_a() {
    let file = load("rfc/rfc8037_jws.json");
    assert_eq!(file["cases"].as_array().unwrap().len(), 4);

    // A.1: the private key; our key from its seed has the RFC's public key.
    let a1 = case(&file, "A.1 private key");
    let key = SigningKey::ed25519_from_seed(&hex(&a1["d_hex"])).unwrap();
    assert_eq!(key.algorithm(), JwsAlgorithm::EdDsa);
    assert_eq!(key.verifying_key().public_bytes(), hex(&a1["x_hex"]));
    // The exported PKCS#8 re-imports to the same key.
    let again = SigningKey::from_pkcs8(JwsAlgorithm::EdDsa, key.to_pkcs8().expose()).unwrap();
    assert_eq!(again.verifying_key(), key.verifying_key());

    // A.2: the public JWK. Ours has the same kty, crv and x, plus kid, alg, use.
    let a2 = case(&file, "A.2 public key");
    let jwk = key.public_jwk().to_json();
    for member in ["kty", "crv", "x"] {
        assert_eq!(jwk[member], a2["jwk"][member], "{member}");
        assert_eq!(jwk[member], a1["jwk"][member], "{member}");
    }
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("d").is_none(), "public JWK must not carry d");
    let public = VerifyingKey::from_public_bytes(JwsAlgorithm::EdDsa, &hex(&a2["x_hex"])).unwrap();
    assert_eq!(&public, key.verifying_key());

    // A.3: RFC 7638 thumbprint, which is also the default kid.
    let a3 = case(&file, "A.3 JWK thumbprint");
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        a3["thumbprint_input"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(hex_str(digest.as_ref()), a3["sha256_hex"]);
    assert_eq!(public.thumbprint(), a3["thumbprint"]);
    assert_eq!(key.kid(), a3["thumbprint"]);
    assert_eq!(jwk["kid"], a3["thumbprint"]);

    // A.4: our compact JWS equals the RFC's byte for byte. The RFC header is
    // only {"alg":"EdDSA"}, so this one token is signed without a kid.
    let a4 = case(&file, "A.4 Ed25519 signing (A.5 verification)");
    let payload = a4["payload_text"].as_str().unwrap().as_bytes();
    let bare = HeaderParams {
        typ: None,
        include_kid: false,
    };
    let token = jws::sign(&key, &bare, payload).unwrap();
    assert_eq!(token, a4["compact_serialization"].as_str().unwrap());
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(signing_input, a4["signing_input"]);
    assert_eq!(signature, a4["signature_b64url"]);
    assert!(token.starts_with(a4["protected_header_b64url"].as_str().unwrap()));

    // A.5: the A.2 public key verifies the RFC's signature...
    let rfc_sig = b64url_decode(a4["signature_b64url"].as_str().unwrap());
    public
        .verify_signature(a4["signing_input"].as_str().unwrap().as_bytes(), &rfc_sig)
        .unwrap();
    // ...but `verify` requires a kid, which the RFC token lacks.
    let keys: JwsKeySet = [public.clone()].into_iter().collect();
    assert_eq!(
        jws::verify(&token, &keys).unwrap_err(),
        CryptoError::JwsUnknownKey { kid: None }
    );
    // With our default header (kid = thumbprint) the same key and payload
    // round-trip through `verify`.
    let token = jws::sign(&key, &HeaderParams::default(), payload).unwrap();
    let verified = jws::verify(&token, &keys).unwrap();
    assert_eq!(verified.payload, payload);
    assert_eq!(verified.header.kid, a3["thumbprint"].as_str().unwrap());
}

/// Decode base64url without padding (test helper, independent of the
/// library's decoder).
fn b64url_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = u32::try_from(ALPHABET.iter().position(|&a| a == c).expect("base64url")).unwrap();
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).unwrap());
        }
    }
    out
}

#[test]
fn rfc8032_ed25519() {
    let file = load("rfc/rfc8032_ed25519.json");
    let mut checked = 0;
    for c in file["cases"].as_array().unwrap() {
        let name = &c["name"];
        let key = SigningKey::ed25519_from_seed(&hex(&c["secret_key"])).unwrap();
        let public = hex(&c["public_key"]);
        assert_eq!(key.verifying_key().public_bytes(), public, "{name}");
        let msg = hex(&c["message"]);
        assert_eq!(msg.len() as u64, c["message_length"].as_u64().unwrap());
        let sig = hex(&c["signature"]);
        assert_eq!(key.sign_raw(&msg).unwrap(), sig, "{name}");
        let vk = VerifyingKey::from_public_bytes(JwsAlgorithm::EdDsa, &public).unwrap();
        vk.verify_signature(&msg, &sig).unwrap();
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert_eq!(
            vk.verify_signature(&msg, &bad),
            Err(CryptoError::JwsBadSignature),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// Verify every test of a Wycheproof signature group with `key`: valid
/// signatures verify, invalid ones fail with `JwsBadSignature`. Returns the
/// (valid, invalid) counts.
fn check_signatures(key: &VerifyingKey, group: &Value) -> (usize, usize) {
    let (mut valid, mut invalid) = (0, 0);
    for t in group["tests"].as_array().unwrap() {
        let id = &t["tcId"];
        let got = key.verify_signature(&hex(&t["msg"]), &hex(&t["sig"]));
        match t["result"].as_str().unwrap() {
            "valid" => {
                assert_eq!(got, Ok(()), "tcId {id}");
                valid += 1;
            }
            "invalid" => {
                assert_eq!(got, Err(CryptoError::JwsBadSignature), "tcId {id}");
                invalid += 1;
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        }
    }
    (valid, invalid)
}

#[test]
fn wycheproof_ed25519_every_case() {
    let file = load("wycheproof/ed25519_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let pk = hex(&group["publicKey"]["pk"]);
        let key = VerifyingKey::from_public_bytes(JwsAlgorithm::EdDsa, &pk).unwrap();
        // Our JWK export agrees with Wycheproof's.
        let jwk = key.to_jwk().to_json();
        for member in ["kty", "crv", "x"] {
            assert_eq!(jwk[member], group["publicKeyJwk"][member]);
        }
        let (v, i) = check_signatures(&key, group);
        valid += v;
        invalid += i;
    }
    assert_eq!((valid, invalid), (88, 63));
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363_every_case() {
    let file = load("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json");
    let (mut valid, mut invalid, mut jwks) = (0, 0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        assert_eq!(group["publicKey"]["curve"], "secp256r1");
        assert_eq!(group["sha"], "SHA-256");
        let public = hex(&group["publicKey"]["uncompressed"]);
        let key = VerifyingKey::from_public_bytes(JwsAlgorithm::Es256, &public).unwrap();
        if let Some(expected) = group.get("publicKeyJwk") {
            let jwk = key.to_jwk().to_json();
            for member in ["kty", "crv", "x", "y"] {
                assert_eq!(jwk[member], expected[member], "{member}");
            }
            jwks += 1;
        }
        let (v, i) = check_signatures(&key, group);
        valid += v;
        invalid += i;
    }
    assert_eq!((valid, invalid), (173, 89));
    assert!(jwks > 0, "some groups carry a JWK to compare with");
}

fn flip(token: &[u8], bit: usize) -> Vec<u8> {
    let mut bad = token.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    bad
}

/// Exhaustive version of the bit-flip property for one token per algorithm.
#[test]
fn every_bit_flip_of_one_token_fails() {
    for alg in [JwsAlgorithm::EdDsa, JwsAlgorithm::Es256] {
        let key = SigningKey::generate(alg).unwrap();
        let keys: JwsKeySet = [key.verifying_key().clone()].into_iter().collect();
        let claims = br#"{"sub":"user","aud":"api","exp":1900000000}"#;
        let token = jws::sign(&key, &HeaderParams::with_typ("at+jwt"), claims).unwrap();
        jws::verify(&token, &keys).unwrap();
        for bit in 0..token.len() * 8 {
            assert!(
                jws::verify(flip(token.as_bytes(), bit), &keys).is_err(),
                "{alg}: bit {bit} verified"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bit_flip_fails_to_verify(
        es256 in any::<bool>(),
        claims in proptest::collection::vec(any::<u8>(), 0..256),
        typ in proptest::option::of("[a-z+/.]{1,16}"),
        bit in any::<prop::sample::Index>(),
    ) {
        let alg = if es256 { JwsAlgorithm::Es256 } else { JwsAlgorithm::EdDsa };
        let key = SigningKey::generate(alg).unwrap();
        let keys: JwsKeySet = [key.verifying_key().clone()].into_iter().collect();
        let params = HeaderParams { typ: typ.as_deref(), include_kid: true };
        let token = jws::sign(&key, &params, &claims).unwrap();
        let verified = jws::verify(&token, &keys).unwrap();
        prop_assert_eq!(&verified.payload, &claims);
        prop_assert_eq!(verified.header.typ, typ);
        let i = bit.index(token.len() * 8);
        prop_assert!(jws::verify(flip(token.as_bytes(), i), &keys).is_err(), "bit {} verified", i);
    }
}
