//! Envelopes are stored by the server and handed to devices: `inspect` and
//! `open` (with a fixed recipient key and context) of any bytes must give a
//! typed error or a group key, never a panic. `open` fails exactly when
//! `inspect` does, with the same error, and any group key it opens seals and
//! opens again to the same bytes with the same header.
#![no_main]

use keystead::crypto::DeviceSecretKey;
use keystead::crypto::envelope::{self, EnvelopeContext};
use keystead_fuzz::{envelope_context, envelope_recipient};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static RECIPIENT: LazyLock<DeviceSecretKey> = LazyLock::new(envelope_recipient);
static CONTEXT: LazyLock<EnvelopeContext> = LazyLock::new(envelope_context);

fuzz_target!(|data: &[u8]| {
    let header = envelope::inspect(data);
    let opened = envelope::open(data, &RECIPIENT, &CONTEXT);
    let group_key = match (header, opened) {
        (Err(inspected), Err(open)) => {
            assert_eq!(inspected, open, "open fails first on what inspect rejects");
            return;
        }
        (Err(inspected), Ok(_)) => panic!("opened an envelope inspect rejects: {inspected:?}"),
        (Ok(_), Err(_)) => return,
        (Ok(header), Ok(group_key)) => {
            assert_eq!(header.key_version, CONTEXT.key_version);
            assert_eq!(header.recipient, RECIPIENT.public_key().fingerprint());
            assert_eq!(header.group_key_len, group_key.len());
            group_key
        }
    };
    let resealed = envelope::seal(&group_key, &RECIPIENT.public_key(), &CONTEXT).expect("reseal");
    assert_eq!(envelope::inspect(&resealed), envelope::inspect(data));
    let reopened = envelope::open(&resealed, &RECIPIENT, &CONTEXT).expect("reopen");
    assert_eq!(reopened.expose(), group_key.expose(), "round trip");
});
