//! Writes the seed corpora under `fuzz/corpus/<target>/` from valid outputs
//! of keystead made with the fixed keys of `keystead_fuzz`:
//!
//! ```sh
//! cd fuzz && cargo +nightly run --example make_seeds
//! ```
//!
//! Envelopes, at-rest blobs and ES256 signatures are randomised, so a re-run
//! rewrites those files with other (equally valid) bytes.

use keystead::crypto::at_rest;
use keystead::crypto::envelope;
use keystead::crypto::jws::{self, HeaderParams};
use keystead::secret::SecretBytes;
use keystead_fuzz::{
    RECORD_KEY, at_rest_old_provider, at_rest_provider, envelope_context, envelope_recipient,
    jws_signing_keys, now,
};
use std::fs;
use std::path::Path;

/// A typical RFC 9068 access-token payload.
const ACCESS_TOKEN: &str = r#"{"iss":"https://id.example.com/realms/acme","sub":"0192f5c4-0000-7000-8000-0000000000aa","aud":"https://api.example.com","exp":1900000900,"iat":1900000000,"nbf":1900000000,"jti":"0192f5c4-0000-7000-8000-0000000000bb","client_id":"web-app","scope":"openid profile email","sid":"0192f5c4-0000-7000-8000-0000000000cc","amr":["pwd","otp"],"auth_time":1899999990}"#;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("create corpus dir");
    fs::write(dir.join(format!("seed_{name}")), bytes).expect("write seed");
}

fn main() {
    let [ed, es] = jws_signing_keys();
    let at = HeaderParams::with_typ("at+jwt");
    let plain = HeaderParams::default();
    for (name, key, params, payload) in [
        ("eddsa_access_token", &ed, &at, ACCESS_TOKEN.as_bytes()),
        ("eddsa_small", &ed, &plain, &br#"{"sub":"u1"}"#[..]),
        ("eddsa_empty_payload", &ed, &plain, b""),
        ("es256_access_token", &es, &at, ACCESS_TOKEN.as_bytes()),
    ] {
        let token = jws::sign(key, params, payload).expect("sign");
        write("jws_verify", name, token.as_bytes());
    }

    // token_verify: odd first byte patches the realm's valid token (no
    // pairs: the token itself), even first byte is a raw token.
    for (name, bytes) in [
        ("valid_token", &b"\x01"[..]),
        ("patched_header", b"\x01\x01X\x02\x00"),
        ("patched_payload", b"\x01\x10A\x11B"),
        ("raw_alg_none", b"\x00eyJhbGciOiJub25lIn0.e30."),
        ("raw_garbage", b"\x00a.b.c"),
    ] {
        write("token_verify", name, bytes);
    }

    let recipient = envelope_recipient().public_key();
    let context = envelope_context();
    for (name, len) in [
        ("group_key_32", 32),
        ("group_key_1", 1),
        ("group_key_max", envelope::MAX_GROUP_KEY_LEN),
    ] {
        let group_key = SecretBytes::new((0..len).map(|i| (i % 251) as u8).collect());
        let sealed = envelope::seal(&group_key, &recipient, &context).expect("seal");
        write("envelope_open", name, &sealed);
    }

    let current = at_rest_provider();
    let old = at_rest_old_provider();
    for (name, provider, secret) in [
        (
            "current_kek_totp_seed",
            &current,
            &b"JBSWY3DPEHPK3PXP-seed-bytes"[..],
        ),
        ("current_kek_empty", &current, b""),
        ("retired_kek_pkcs8", &old, &[0x30; 83][..]),
    ] {
        let blob = now(at_rest::seal(provider, RECORD_KEY, secret)).expect("seal");
        write("at_rest_open", name, &blob);
    }
}
