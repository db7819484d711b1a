//! Every cryptographic primitive keystead uses, behind one small API.
//!
//! No domain module touches `ring`, `x25519-dalek`, `hpke` or
//! `chacha20poly1305` directly; they call this module, so the choices in
//! DESIGN.md "Crypto choices" are made in exactly one place and proven on
//! known-answer vectors (`core/tests/crypto_vectors.rs`).
//!
//! * Device key pairs: [`DeviceSecretKey`] / [`DevicePublicKey`] (X25519).
//!   Public keys of low order are rejected when they are parsed, so no code
//!   path can ever agree on an all-zero shared secret.
//! * [`envelope`]: group keys sealed to one device with HPKE (RFC 9180).
//! * [`at_rest`]: secrets kept in storage, sealed under an embedder's
//!   key-encryption keys with XChaCha20-Poly1305.
//! * [`jws`]: compact JWS (`EdDSA`, `ES256`) signing keys, JWKs and
//!   verification against a pinned key set, for access tokens.
//! * [`secret`]: bearer tokens (≥256-bit random, prefixed per kind), stored
//!   only as SHA-256 digests.
//!
//! Randomness always comes from `ring::rand::SystemRandom`. Secret material
//! lives in types whose `Debug` prints `[redacted]` and which zeroize on drop.

pub mod at_rest;
pub mod envelope;
pub mod jws;
pub mod secret;

use crate::store::key::hex;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use zeroize::Zeroizing;

/// Length in bytes of an X25519 public key, secret key and shared secret.
pub const X25519_KEY_LEN: usize = 32;

/// A failure of a cryptographic operation; each variant has a stable
/// [`CryptoError::code`].
///
/// Failures to open or verify deliberately say little (`OpenFailed`): telling
/// a caller *why* authentication failed helps attackers, not developers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key is malformed or unsafe to use (wrong length, low order).
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong with the key.
        reason: &'static str,
    },
    /// A secret key or key-encryption key has the wrong shape.
    #[error("invalid secret key: {reason}")]
    InvalidSecretKey {
        /// What is wrong with the key.
        reason: &'static str,
    },
    /// A ciphertext (envelope or at-rest blob) is not in a format this
    /// version understands, or is truncated.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// `"envelope"` or `"at-rest blob"`.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A plaintext or other input is outside the documented size limits.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The input (`"group_key"`, `"key_id"`, …).
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// An envelope was sealed to a different device key than the one given.
    #[error("the envelope is addressed to another device key")]
    WrongRecipient,
    /// An envelope's key version differs from the one the caller expects.
    #[error("envelope key version is {found}, expected {expected}")]
    KeyVersionMismatch {
        /// The version the caller asked for.
        expected: u32,
        /// The version in the envelope header.
        found: u32,
    },
    /// Authentication failed: the ciphertext was altered, or the key, record
    /// or context differs from the one it was sealed with.
    #[error("decryption failed: wrong key or context, or the data was altered")]
    OpenFailed,
    /// Encryption failed (a message-size limit of the cipher was exceeded).
    #[error("encryption failed")]
    SealFailed,
    /// The key provider does not know the key-encryption key a blob names.
    #[error("unknown key-encryption key {key_id:?}")]
    UnknownKey {
        /// The key id stored in the blob.
        key_id: String,
    },
    /// The embedder's key provider (KMS) failed.
    #[error("key provider failed: {message}")]
    KeyProvider {
        /// The provider's own description of the failure.
        message: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    RandomUnavailable,
    /// A compact JWS is longer than [`jws::MAX_TOKEN_LEN`]; rejected before
    /// it is parsed (or refused when signing).
    #[error("the JWS is {len} bytes, more than the {max} allowed", max = jws::MAX_TOKEN_LEN)]
    JwsTooLarge {
        /// The token's length in bytes.
        len: usize,
    },
    /// A compact JWS breaks a structural rule (parts, base64url, header JSON).
    #[error("malformed JWS: {defect}")]
    JwsMalformed {
        /// Which rule.
        defect: jws::JwsDefect,
    },
    /// The JWS header has a `crit` member; keystead supports no extension.
    #[error("the JWS header has a \"crit\" member; no JWS extension is supported")]
    JwsCritical,
    /// The JWS header says `alg: none`; unsecured tokens are never accepted.
    #[error("unsecured JWS (alg \"none\") is never accepted")]
    JwsUnsecured,
    /// The JWS header has no `kid`, or one the trusted key set lacks.
    #[error("the JWS key id is missing or not trusted here: {kid:?}")]
    JwsUnknownKey {
        /// The header's `kid`, if it had one.
        kid: Option<String>,
    },
    /// The JWS header's `alg` is not the algorithm pinned by the key its
    /// `kid` names.
    #[error("the JWS alg {found:?} is not {expected}, the algorithm of its key")]
    JwsAlgorithmMismatch {
        /// The key's algorithm.
        expected: jws::JwsAlgorithm,
        /// The header's `alg`.
        found: String,
    },
    /// The JWS signature does not verify with the key its `kid` names.
    #[error("the JWS signature is invalid")]
    JwsBadSignature,
}

impl CryptoError {
    /// A stable, upper-case identifier for this failure, safe to show to
    /// clients.
    pub fn code(&self) -> &'static str {
        match self {
            CryptoError::InvalidPublicKey { .. } => "CRYPTO_INVALID_PUBLIC_KEY",
            CryptoError::InvalidSecretKey { .. } => "CRYPTO_INVALID_SECRET_KEY",
            CryptoError::Malformed { .. } => "CRYPTO_MALFORMED",
            CryptoError::InvalidInput { .. } => "CRYPTO_INVALID_INPUT",
            CryptoError::WrongRecipient => "CRYPTO_WRONG_RECIPIENT",
            CryptoError::KeyVersionMismatch { .. } => "CRYPTO_KEY_VERSION_MISMATCH",
            CryptoError::OpenFailed => "CRYPTO_OPEN_FAILED",
            CryptoError::SealFailed => "CRYPTO_SEAL_FAILED",
            CryptoError::UnknownKey { .. } => "CRYPTO_UNKNOWN_KEY",
            CryptoError::KeyProvider { .. } => "CRYPTO_KEY_PROVIDER_FAILED",
            CryptoError::RandomUnavailable => "CRYPTO_RANDOM_UNAVAILABLE",
            CryptoError::JwsTooLarge { .. } => "JWS_TOO_LARGE",
            CryptoError::JwsMalformed { .. } => "JWS_MALFORMED",
            CryptoError::JwsCritical => "JWS_CRIT_UNSUPPORTED",
            CryptoError::JwsUnsecured => "JWS_UNSECURED",
            CryptoError::JwsUnknownKey { .. } => "JWS_UNKNOWN_KEY",
            CryptoError::JwsAlgorithmMismatch { .. } => "JWS_ALGORITHM_MISMATCH",
            CryptoError::JwsBadSignature => "JWS_BAD_SIGNATURE",
        }
    }
}

/// Fill `buf` from the system CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| CryptoError::RandomUnavailable)
}

/// `N` fresh random bytes from the system CSPRNG, wiped when dropped.
pub(crate) fn random_array<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    fill_random(out.as_mut())?;
    Ok(out)
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A device's X25519 public key, checked to be safe to agree with.
///
/// Parsing rejects the points of small order on Curve25519 and its twist
/// (every `u` for which X25519 with any clamped scalar gives the all-zero
/// output), as RFC 7748 §6.1 and RFC 9180 §7.1.4 require. Non-canonical
/// encodings (`u ≥ 2^255 − 19`, or the top bit set) are accepted and
/// interpreted as RFC 7748 §5 says.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey([u8; X25519_KEY_LEN]);

impl DevicePublicKey {
    /// Parse the 32-byte little-endian `u` coordinate (RFC 7748 encoding).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; X25519_KEY_LEN] =
            bytes
                .try_into()
                .map_err(|_| CryptoError::InvalidPublicKey {
                    reason: "an X25519 public key is exactly 32 bytes",
                })?;
        if has_small_order(&key) {
            return Err(CryptoError::InvalidPublicKey {
                reason: "the point has small order (the shared secret would be all zeros)",
            });
        }
        Ok(Self(key))
    }

    /// The 32-byte encoding, as given to [`DevicePublicKey::from_bytes`].
    pub fn to_bytes(&self) -> [u8; X25519_KEY_LEN] {
        self.0
    }

    /// The key's fingerprint: SHA-256 of its 32 bytes. Envelopes carry it so
    /// the server can check their recipient without any secret.
    pub fn fingerprint(&self) -> KeyFingerprint {
        KeyFingerprint(sha256(&self.0))
    }
}

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevicePublicKey({})", hex(&self.0))
    }
}

/// The encodings (top bit cleared, as X25519 ignores it) of every `u` of
/// small order on Curve25519 and its twist: 0, 1, the two points of order 8,
/// and p − 1, p, p + 1 (RFC 7748 §6.1; the list libsodium and Wycheproof
/// use). No other encoding of these points fits in 255 bits.
const SMALL_ORDER_U: [[u8; X25519_KEY_LEN]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Whether X25519 with `u` gives the all-zero output for every clamped
/// scalar, i.e. `u` (top bit ignored) is in [`SMALL_ORDER_U`].
///
/// A table lookup rather than a trial multiplication: this runs on every
/// envelope [`envelope::inspect`] and [`envelope::open`], where a scalar
/// multiplication doubled the cost of opening. The key is public, so the
/// comparison need not be constant-time.
fn has_small_order(u: &[u8; X25519_KEY_LEN]) -> bool {
    let mut masked = *u;
    masked[31] &= 0x7f;
    SMALL_ORDER_U.contains(&masked)
}

/// SHA-256 of a device public key's 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint(pub [u8; 32]);

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({})", hex(&self.0))
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// A device's X25519 private key. It never leaves the device.
///
/// `Debug` prints `[redacted]`; the key is wiped when dropped (the inner
/// `x25519_dalek::StaticSecret` zeroizes on drop). The public key is
/// computed once, when the key is made, since [`envelope::open`] needs its
/// fingerprint on every call.
#[derive(Clone)]
pub struct DeviceSecretKey {
    secret: x25519_dalek::StaticSecret,
    public: DevicePublicKey,
}

impl DeviceSecretKey {
    fn from_secret(secret: x25519_dalek::StaticSecret) -> Self {
        let public = DevicePublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// A fresh key from 32 bytes of system randomness.
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes = random_array::<X25519_KEY_LEN>()?;
        Ok(Self::from_secret(x25519_dalek::StaticSecret::from(*bytes)))
    }

    /// Import a key exported with [`DeviceSecretKey::to_bytes`] (32 bytes;
    /// clamped as RFC 7748 `decodeScalar25519` says).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: Zeroizing<[u8; X25519_KEY_LEN]> = Zeroizing::new(bytes.try_into().map_err(
            |_| CryptoError::InvalidSecretKey {
                reason: "an X25519 secret key is exactly 32 bytes",
            },
        )?);
        Ok(Self::from_secret(x25519_dalek::StaticSecret::from(*arr)))
    }

    /// The 32 secret bytes, for the device's own key store. Wiped on drop.
    pub fn to_bytes(&self) -> Zeroizing<[u8; X25519_KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> DevicePublicKey {
        self.public
    }

    /// Raw X25519 (RFC 7748) with `peer`. The result is never all zeros:
    /// `peer` was checked when it was parsed, and the output is checked again.
    pub fn diffie_hellman(
        &self,
        peer: &DevicePublicKey,
    ) -> Result<Zeroizing<[u8; X25519_KEY_LEN]>, CryptoError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(CryptoError::InvalidPublicKey {
                reason: "the point has small order (the shared secret would be all zeros)",
            });
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; X25519_KEY_LEN] {
        self.secret.as_bytes()
    }
}

impl fmt::Debug for DeviceSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecretKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let sk = DeviceSecretKey::generate().unwrap();
        let printed = format!("{sk:?}");
        assert_eq!(printed, "DeviceSecretKey([redacted])");
        assert!(!printed.contains(&hex(sk.as_bytes())));
    }

    #[test]
    fn generated_keys_agree() {
        let a = DeviceSecretKey::generate().unwrap();
        let b = DeviceSecretKey::generate().unwrap();
        let ab = a.diffie_hellman(&b.public_key()).unwrap();
        let ba = b.diffie_hellman(&a.public_key()).unwrap();
        assert_eq!(*ab, *ba);
        let again = DeviceSecretKey::from_bytes(a.to_bytes().as_ref()).unwrap();
        assert_eq!(again.public_key(), a.public_key());
    }

    /// Regression (benchmark): the small-order table must reject exactly
    /// what the trial multiplication it replaced rejected.
    #[test]
    fn small_order_table_matches_trial_multiplication() {
        let probe = |u: [u8; 32]| {
            x25519_dalek::x25519(x25519_dalek::X25519_BASEPOINT_BYTES, u) == [0u8; 32]
        };
        let mut candidates: Vec<[u8; 32]> = Vec::new();
        for u in SMALL_ORDER_U {
            let mut high = u;
            high[31] |= 0x80;
            let mut next = u;
            next[0] = next[0].wrapping_add(1);
            candidates.extend([u, high, next]);
        }
        for _ in 0..256 {
            candidates.push(*random_array::<32>().unwrap());
        }
        for u in candidates {
            assert_eq!(has_small_order(&u), probe(u), "{}", hex(&u));
            assert_eq!(DevicePublicKey::from_bytes(&u).is_err(), probe(u));
        }
        for u in SMALL_ORDER_U {
            assert!(probe(u), "{}", hex(&u));
        }
    }

    #[test]
    fn cached_public_key_matches() {
        let sk = DeviceSecretKey::generate().unwrap();
        let derived =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*sk.to_bytes()));
        assert_eq!(sk.public_key().to_bytes(), derived.to_bytes());
        assert_eq!(sk.clone().public_key(), sk.public_key());
    }

    #[test]
    fn bad_lengths_are_typed_errors() {
        let e = DevicePublicKey::from_bytes(&[1u8; 31]).unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_PUBLIC_KEY");
        let e = DeviceSecretKey::from_bytes(&[1u8; 33]).unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_SECRET_KEY");
        let e = DevicePublicKey::from_bytes(&[0u8; 32]).unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_PUBLIC_KEY");
    }
}
