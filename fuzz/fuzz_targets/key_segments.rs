//! Stored keys are decoded when listed and shown in errors: arbitrary bytes
//! must decode to segments or a typed error, and valid keys must round-trip.
#![no_main]

use keystead::store::key::{Key, display, segments};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = display(data).to_string();
    if let Ok(segs) = segments(data) {
        let rebuilt = segs.iter().fold(Key::new(), |k, s| k.push(s));
        assert_eq!(rebuilt.as_bytes(), data, "decode then encode is the identity");
    }
});
