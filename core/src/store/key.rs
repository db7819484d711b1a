//! The key layout: keys are sequences of segments, encoded so that
//! prefixes are unambiguous and byte order follows segment order.
//!
//! Domain modules build keys like `realm/<id>/user/<id>` with [`Key`]:
//!
//! ```
//! use keystead::store::key::Key;
//! let users = Key::new().push("realm").push([7u8; 16]).push("user");
//! let alice = users.clone().push("alice");
//! assert!(alice.as_bytes().starts_with(users.as_bytes()));
//! ```
//!
//! # Encoding
//!
//! Each segment is written byte for byte, except that `0x00` becomes
//! `0x00 0xFF`, and is closed by the terminator `0x00 0x01`. Consequences:
//!
//! * **Unambiguous prefixes.** The key of segments `[a]` ends with the
//!   terminator, so it is a byte prefix of `[a, …]` but never of `[ab, …]`:
//!   scanning the children of `a` can't return those of `ab`.
//! * **Order.** Within a segment bytes compare as themselves; the terminator
//!   (`00 01`) sorts before an escaped zero (`00 FF`) and before any other
//!   byte, so a shorter segment sorts before its extensions and keys sort by
//!   their segments, left to right. Fixed-width big-endian integers and UUID v7
//!   ids therefore sort numerically and by creation time.
//! * **Any bytes.** Segments may contain `0x00` and `0xFF`; [`segments`]
//!   inverts the encoding and rejects malformed input with a typed error.

use std::fmt;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// A storage key under construction; see the [module docs](self).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The empty key: the prefix of every key. Room for a typical key
    /// (four or five segments) is reserved up front, so building one on a
    /// hot path allocates once.
    pub fn new() -> Self {
        Self(Vec::with_capacity(64))
    }

    /// Append one segment.
    #[must_use]
    pub fn push(mut self, segment: impl AsRef<[u8]>) -> Self {
        let segment = segment.as_ref();
        self.0.reserve(segment.len() + 2);
        // Copy the runs between zero bytes whole; each zero is escaped.
        let mut runs = segment.split(|&byte| byte == ESCAPE);
        if let Some(first) = runs.next() {
            self.0.extend_from_slice(first);
        }
        for run in runs {
            self.0.extend_from_slice(&[ESCAPE, ESCAPED_ZERO]);
            self.0.extend_from_slice(run);
        }
        self.0.extend_from_slice(&[ESCAPE, TERMINATOR]);
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encoded bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<Key> for Vec<u8> {
    fn from(key: Key) -> Self {
        key.0
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", display(&self.0))
    }
}

/// Bytes that are not a well-formed encoded key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed key at byte {offset}: {problem}")]
pub struct KeyDecodeError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub problem: &'static str,
}

/// Split an encoded key into its segments.
pub fn segments(encoded: &[u8]) -> Result<Vec<Vec<u8>>, KeyDecodeError> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < encoded.len() {
        let byte = encoded[i];
        if byte != ESCAPE {
            current.push(byte);
            i += 1;
            continue;
        }
        match encoded.get(i + 1) {
            Some(&ESCAPED_ZERO) => current.push(0),
            Some(&TERMINATOR) => out.push(std::mem::take(&mut current)),
            Some(_) => {
                return Err(KeyDecodeError {
                    offset: i + 1,
                    problem: "0x00 followed by neither 0xFF nor 0x01",
                });
            }
            None => {
                return Err(KeyDecodeError {
                    offset: i,
                    problem: "key ends inside an escape",
                });
            }
        }
        i += 2;
    }
    if !current.is_empty() {
        return Err(KeyDecodeError {
            offset: encoded.len(),
            problem: "last segment is not terminated",
        });
    }
    Ok(out)
}

/// A readable rendering of a key for errors and logs: segments joined by `/`,
/// printable ASCII as text, anything else as hex. Keys not in the layout are
/// shown as raw hex.
pub fn display(encoded: &[u8]) -> impl fmt::Display + '_ {
    KeyDisplay(encoded)
}

struct KeyDisplay<'a>(&'a [u8]);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(segments) = segments(self.0) else {
            return write!(f, "0x{}", hex(self.0));
        };
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            if !segment.is_empty() && segment.iter().all(u8::is_ascii_graphic) {
                f.write_str(&String::from_utf8_lossy(segment))?;
            } else {
                write!(f, "0x{}", hex(segment))?;
            }
        }
        Ok(())
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Bytes of lower-case hex (golden tests of old record versions).
#[cfg(test)]
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_of_a_segment_is_not_a_prefix_of_a_longer_segment() {
        let a = Key::new().push("a");
        let other_child = Key::new().push("ab").push("x");
        let a_child = Key::new().push("a").push("x");
        assert!(a_child.as_bytes().starts_with(a.as_bytes()));
        assert!(!other_child.as_bytes().starts_with(a.as_bytes()));
    }

    #[test]
    fn display_is_readable() {
        let key = Key::new().push("realm").push([0u8, 0xFF]).push("user");
        assert_eq!(display(key.as_bytes()).to_string(), "realm/0x00ff/user");
        assert_eq!(display(&[0x00]).to_string(), "0x00");
    }

    #[test]
    fn malformed_keys_are_typed_errors() {
        assert_eq!(segments(&[b'a', 0x00, 0x07]).unwrap_err().offset, 2);
        assert!(segments(&[b'a', 0x00]).is_err());
        assert!(segments(b"a").is_err());
    }

    fn encode(segs: &[Vec<u8>]) -> Vec<u8> {
        segs.iter().fold(Key::new(), Key::push).into_bytes()
    }

    proptest! {
        #[test]
        fn round_trip(segs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..5)) {
            prop_assert_eq!(segments(&encode(&segs)).unwrap(), segs);
        }

        #[test]
        fn byte_order_is_segment_order(
            a in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..4),
            b in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..4), 0..4),
        ) {
            prop_assert_eq!(encode(&a).cmp(&encode(&b)), a.cmp(&b));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
            let _ = segments(&bytes);
            let _ = display(&bytes).to_string();
        }
    }
}
