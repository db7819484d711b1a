//! Loading the known-answer vectors in `testdata/vectors/`, shared by the
//! vector test files.
#![allow(dead_code)] // each test binary uses a different subset

use serde_json::Value;

/// Parse `testdata/vectors/<rel>`: the vectors are copied into the
/// repository, so a fresh clone tests itself.
pub fn load(rel: &str) -> Value {
    let path = format!("{}/../testdata/vectors/{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Decode a JSON hex string.
pub fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn hex_str(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
