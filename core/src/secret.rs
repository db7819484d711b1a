//! Wrappers for secrets: passwords, codes, token strings, private keys.
//!
//! A secret must never reach a log line by accident and must not linger in
//! freed memory. These types print `[redacted]` for `Debug`, have no
//! `Display`, and zeroize their buffer when dropped. Reading the secret takes
//! an explicit [`SecretString::expose`] / [`SecretBytes::expose`] call, which
//! is easy to find in review.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret text value (password, recovery code, token string).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wrap `value`; the caller's copy moves in, so no second copy remains.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself. Keep the borrow short and never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// A secret binary value (key material, seeds).
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wrap `value`; the caller's copy moves in, so no second copy remains.
    pub fn new(value: Vec<u8>) -> Self {
        Self(value)
    }

    /// The secret bytes. Keep the borrow short and never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(value: Vec<u8>) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s = SecretString::from("hunter2");
        let b = SecretBytes::from(b"key-material".to_vec());
        let printed = format!("{s:?} {b:?} {:?}", Some(&s));
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("key-material"), "{printed}");
        assert!(printed.contains("[redacted"));
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(b.expose(), b"key-material");
    }

    #[test]
    fn zeroize_clears_the_buffer() {
        let mut s = SecretBytes::from(vec![7u8; 32]);
        s.zeroize();
        assert!(s.is_empty(), "zeroize empties the vector after wiping it");
    }
}
