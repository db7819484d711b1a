//! At-rest blobs are read back from storage, which is untrusted after a
//! crash or a bad migration: opening any bytes with a `StaticKeyProvider`
//! (current `kek-2`, retired `kek-1`) must give a typed error or the secret,
//! never a panic. A blob whose framing `key_id_of` rejects fails to open with
//! the same error, and an opened secret survives `reseal` to the current KEK.
#![no_main]

use keystead::crypto::at_rest::{self, StaticKeyProvider};
use keystead_fuzz::{RECORD_KEY, at_rest_provider, now};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static PROVIDER: LazyLock<StaticKeyProvider> = LazyLock::new(at_rest_provider);

fuzz_target!(|data: &[u8]| {
    let key_id = at_rest::key_id_of(data);
    let secret = match (key_id, now(at_rest::open(&*PROVIDER, RECORD_KEY, data))) {
        (Err(framing), Err(open)) => {
            assert_eq!(framing, open, "open fails first on what key_id_of rejects");
            return;
        }
        (Err(framing), Ok(_)) => panic!("opened a blob key_id_of rejects: {framing:?}"),
        (Ok(_), Err(_)) => return,
        (Ok(_), Ok(secret)) => secret,
    };
    let blob = match now(at_rest::reseal(&*PROVIDER, RECORD_KEY, data)).expect("reseal") {
        None => data.to_vec(),
        Some(fresh) => fresh,
    };
    assert_eq!(at_rest::key_id_of(&blob).expect("id").as_str(), "kek-2");
    let reopened = now(at_rest::open(&*PROVIDER, RECORD_KEY, &blob)).expect("reopen");
    assert_eq!(reopened.expose(), secret.expose(), "round trip");
});
