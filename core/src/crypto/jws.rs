//! Compact JWS (RFC 7515) signing with `ring`; verification with `ring`
//! (`ES256`) and `ed25519-dalek` (`EdDSA`, on a public key decoded once).
//!
//! Access tokens and other signed statements are compact JWS strings,
//! `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)`, signed
//! with one of two algorithms:
//!
//! | `alg` | key | signature |
//! |---|---|---|
//! | `EdDSA` | Ed25519 (RFC 8037) | 64 bytes, RFC 8032 `R ‖ S` |
//! | `ES256` | P-256 with SHA-256 | 64 bytes, IEEE P1363 `r ‖ s` (RFC 7518 §3.4), not DER |
//!
//! `EdDSA` is the default (DESIGN.md "Crypto choices"). RFC 9864 deprecates
//! the polymorphic `EdDSA` name in favour of `Ed25519`; keystead keeps
//! `EdDSA`, which every JOSE library understands today.
//!
//! # Keys
//!
//! A [`SigningKey`] is generated from `ring`'s `SystemRandom`
//! ([`SigningKey::generate`]) or imported from an unencrypted PKCS#8
//! document (RFC 5958, v1 or v2; [`SigningKey::from_pkcs8`]), and exported
//! again with [`SigningKey::to_pkcs8`] as a [`SecretBytes`] (redacted
//! `Debug`, wiped on drop) for at-rest sealing. Its public half is a
//! [`VerifyingKey`], exported as a public JWK (RFC 7517) with `kty`, `crv`,
//! `x` (and `y` for P-256), `kid`, `alg` and `use: "sig"`
//! ([`VerifyingKey::to_jwk`]). A key's `kid` is its RFC 7638 JWK thumbprint
//! (SHA-256 of `{"crv","kty","x"[,"y"]}` in that order without whitespace,
//! base64url) unless the embedder sets another with `with_kid`.
//!
//! # Signing
//!
//! [`sign`] writes the protected header `{"alg":…,"kid":…,"typ":…}` (members
//! in that order, no whitespace; `typ` only when given), so equal inputs give
//! equal headers; with Ed25519 the whole token is deterministic. The payload
//! is the caller's bytes — normally the serialized JSON claims. Tokens longer
//! than [`MAX_TOKEN_LEN`] are refused when signing too, so everything [`sign`]
//! produces can be verified.
//!
//! # Example
//!
//! ```
//! use keystead::crypto::jws::{self, HeaderParams, JwsAlgorithm, JwsKeySet, SigningKey};
//!
//! let key = SigningKey::generate(JwsAlgorithm::EdDsa)?;
//! let claims = br#"{"sub":"u1","exp":1900000000}"#;
//! let token = jws::sign(&key, &HeaderParams::with_typ("at+jwt"), claims)?;
//!
//! let trusted: JwsKeySet = [key.verifying_key().clone()].into_iter().collect();
//! let verified = jws::verify(&token, &trusted)?;
//! assert_eq!(verified.payload, claims);
//! assert_eq!(verified.header.typ.as_deref(), Some("at+jwt"));
//! // The token service now checks exp, iss, aud, … in `verified.payload`.
//! # Ok::<(), keystead::CryptoError>(())
//! ```
//!
//! # Verification rules, and why
//!
//! [`verify`] takes the token and the [`JwsKeySet`] the caller trusts for this
//! purpose (for example one realm's current and recently retired keys). It
//! checks, in this order, and fails with a distinct [`CryptoError`]:
//!
//! 1. Length ≤ [`MAX_TOKEN_LEN`] (8 KiB), before anything is parsed, so an
//!    attacker cannot make the server decode or hash megabytes
//!    ([`CryptoError::JwsTooLarge`], `JWS_TOO_LARGE`).
//! 2. Exactly three `.`-separated parts, each canonical unpadded base64url
//!    (RFC 7515 §2): no padding, no whitespace, no `+`/`/`, and no
//!    non-zero trailing bits in the last character. With canonical
//!    encoding each signature has exactly one token string, so a token is
//!    never malleable, and any change to its characters changes the signed
//!    bytes or fails to decode ([`CryptoError::JwsMalformed`], `JWS_MALFORMED`,
//!    with a [`JwsDefect`] saying which rule).
//! 3. The header is a JSON object (RFC 7515 §4) with no member name twice:
//!    RFC 7515 allows a parser to take the last duplicate, which lets two
//!    parsers disagree about the same token, so keystead rejects them. `alg`,
//!    `kid` and `typ`, when present, must be strings; `alg` must be present
//!    (`JWS_MALFORMED`).
//! 4. No `crit` member. RFC 7515 §4.1.11 requires rejecting a token whose
//!    critical extensions are not understood, and keystead understands none
//!    (this also rules out RFC 7797 unencoded payloads)
//!    ([`CryptoError::JwsCritical`], `JWS_CRIT_UNSUPPORTED`).
//! 5. `alg` is not `none` in any letter case: an unsecured JWS is never
//!    accepted ([`CryptoError::JwsUnsecured`], `JWS_UNSECURED`).
//! 6. `kid` is present and names a key of the key set. Keys embedded in or
//!    referenced by the header (`jwk`, `jku`, `x5c`, `x5u`) are ignored: the
//!    verifier decides which keys it trusts, never the token
//!    ([`CryptoError::JwsUnknownKey`], `JWS_UNKNOWN_KEY`).
//! 7. The header's `alg` is exactly the algorithm **of that key**. The
//!    algorithm is pinned by the key and never taken from the token, so
//!    algorithm-confusion attacks (an `ES256` header aimed at an Ed25519
//!    key, HMAC with a public key as secret, …) cannot even reach a
//!    signature check ([`CryptoError::JwsAlgorithmMismatch`],
//!    `JWS_ALGORITHM_MISMATCH`).
//! 8. Only then is the signature verified, over the ASCII bytes
//!    `header.payload` exactly as received ([`CryptoError::JwsBadSignature`],
//!    `JWS_BAD_SIGNATURE`). Ed25519 is RFC 8032's cofactorless check
//!    (`ed25519-dalek`, the same verdict as `ring`'s on every Wycheproof
//!    and RFC 8032 case) and rejects non-canonical `S` (signature
//!    malleability); `ES256` (`ring`) accepts only 64-byte `r ‖ s`.
//!
//! Every step before the last one is cheap and happens before any
//! public-key operation.
//!
//! # Not checked here
//!
//! This module verifies that the *bytes* were signed by a trusted key; it
//! does not look inside the payload. Claims — `exp`, `nbf`, `iat`, `iss`,
//! `aud`, `typ` expectations — are checked by the token service on the
//! [`Verified`] result, with its documented leeway. A caller that skips that
//! step accepts expired tokens.

use super::{CryptoError, sha256};
use crate::secret::SecretBytes;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use zeroize::Zeroizing;

/// The longest compact JWS [`verify`] accepts and [`sign`] produces: 8 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Length of an Ed25519 public key.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;
/// Length of an uncompressed SEC1 P-256 public key (`0x04 ‖ x ‖ y`).
pub const P256_PUBLIC_KEY_LEN: usize = 65;
/// Length of a signature of either algorithm.
pub const SIGNATURE_LEN: usize = 64;

/// PKCS#8 v1 (RFC 8410 §7) prefix of an Ed25519 private key; the 32-byte
/// seed follows.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A JWS signature algorithm keystead supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwsAlgorithm {
    /// `EdDSA` with Ed25519 (RFC 8037). The default.
    EdDsa,
    /// `ES256`: ECDSA on P-256 with SHA-256, `r ‖ s` signatures (RFC 7518).
    Es256,
}

impl JwsAlgorithm {
    /// The `alg` header value: `"EdDSA"` or `"ES256"`.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::EdDsa => "EdDSA",
            JwsAlgorithm::Es256 => "ES256",
        }
    }

    /// The algorithm whose `alg` value is exactly `name` (case-sensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(JwsAlgorithm::EdDsa),
            "ES256" => Some(JwsAlgorithm::Es256),
            _ => None,
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            JwsAlgorithm::EdDsa => &signature::ED25519,
            JwsAlgorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the three parts of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsPart {
    /// The protected header.
    Header,
    /// The payload.
    Payload,
    /// The signature.
    Signature,
}

/// Which structural rule a malformed JWS breaks
/// ([`CryptoError::JwsMalformed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwsDefect {
    /// Not exactly three `.`-separated parts.
    Segments,
    /// A part is not canonical unpadded base64url.
    Base64(JwsPart),
    /// The header is not valid JSON (syntax, UTF-8, trailing data).
    HeaderJson,
    /// The header is JSON, but not an object.
    HeaderNotObject,
    /// A header member name appears more than once.
    DuplicateMember,
    /// A header member that must be a string (`alg`, `kid`, `typ`) is not.
    MemberType(&'static str),
    /// The header has no `alg`.
    MissingAlg,
}

impl fmt::Display for JwsDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwsDefect::Segments => f.write_str("not three dot-separated parts"),
            JwsDefect::Base64(part) => {
                let name = match part {
                    JwsPart::Header => "header",
                    JwsPart::Payload => "payload",
                    JwsPart::Signature => "signature",
                };
                write!(f, "the {name} is not canonical unpadded base64url")
            }
            JwsDefect::HeaderJson => f.write_str("the header is not valid JSON"),
            JwsDefect::HeaderNotObject => f.write_str("the header is not a JSON object"),
            JwsDefect::DuplicateMember => f.write_str("a header member appears twice"),
            JwsDefect::MemberType(member) => {
                write!(f, "the header member {member:?} is not a string")
            }
            JwsDefect::MissingAlg => f.write_str("the header has no \"alg\""),
        }
    }
}

fn malformed(defect: JwsDefect) -> CryptoError {
    CryptoError::JwsMalformed { defect }
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// RFC 7638 thumbprint of the JWK with these required members.
fn thumbprint_of(alg: JwsAlgorithm, public: &[u8]) -> String {
    // The members are base64url or fixed ASCII, so no JSON escaping is needed.
    let input = match alg {
        JwsAlgorithm::EdDsa => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(public)),
        JwsAlgorithm::Es256 => {
            let (x, y) = p256_coordinates(public);
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            )
        }
    };
    b64(&sha256(input.as_bytes()))
}

/// `x` and `y` of an uncompressed P-256 key whose length was checked.
fn p256_coordinates(public: &[u8]) -> (&[u8], &[u8]) {
    let coordinates = public.get(1..).unwrap_or_default();
    coordinates.split_at(coordinates.len() / 2)
}

/// A public JWK (RFC 7517) of a [`VerifyingKey`], as published in a JWKS.
///
/// Serializes (serde) to the JSON object with members `kty`, `crv`, `x`,
/// `y` (P-256 only), `kid`, `alg` and `use`; [`PublicJwk::to_json`] builds
/// the same object as a `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    /// `"OKP"` (Ed25519) or `"EC"` (P-256).
    pub kty: &'static str,
    /// `"Ed25519"` or `"P-256"`.
    pub crv: &'static str,
    /// The public key (Ed25519) or its x coordinate (P-256), base64url.
    pub x: String,
    /// The P-256 y coordinate, base64url; absent for Ed25519.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key id.
    pub kid: String,
    /// `"EdDSA"` or `"ES256"`.
    pub alg: &'static str,
    /// Always `"sig"`.
    #[serde(rename = "use")]
    pub key_use: &'static str,
}

impl PublicJwk {
    /// The JWK as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut jwk = serde_json::Map::new();
        jwk.insert("kty".into(), self.kty.into());
        jwk.insert("crv".into(), self.crv.into());
        jwk.insert("x".into(), self.x.clone().into());
        if let Some(y) = &self.y {
            jwk.insert("y".into(), y.clone().into());
        }
        jwk.insert("kid".into(), self.kid.clone().into());
        jwk.insert("alg".into(), self.alg.into());
        jwk.insert("use".into(), self.key_use.into());
        serde_json::Value::Object(jwk)
    }
}

/// A public key that verifies JWS signatures of exactly one algorithm.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: JwsAlgorithm,
    public: Vec<u8>,
    kid: String,
    /// An Ed25519 key's point, decoded once: `ring` decodes the public key
    /// on every verification (about a tenth of its cost), so Ed25519
    /// signatures are checked with `ed25519-dalek` on this decoded key —
    /// the same RFC 8032 check (cofactorless, `s` must be canonical), pinned
    /// by the RFC 8032 and Wycheproof vectors. `None` for P-256, and for
    /// 32 bytes that are not a point: such a key verifies nothing.
    ed25519: Option<ed25519_dalek::VerifyingKey>,
}

impl VerifyingKey {
    /// A key of algorithm `alg` from its raw public key: 32 bytes for
    /// Ed25519, 65-byte uncompressed SEC1 (`0x04 ‖ x ‖ y`) for P-256. The
    /// `kid` is the RFC 7638 thumbprint.
    ///
    /// Only the encoding is checked here; a P-256 point is checked to be on
    /// the curve when it verifies (by `ring`), an Ed25519 point is decoded
    /// here, and a key that is not a point never verifies anything.
    pub fn from_public_bytes(alg: JwsAlgorithm, public: &[u8]) -> Result<Self, CryptoError> {
        let ok = match alg {
            JwsAlgorithm::EdDsa => public.len() == ED25519_PUBLIC_KEY_LEN,
            JwsAlgorithm::Es256 => public.len() == P256_PUBLIC_KEY_LEN && public[0] == 0x04,
        };
        if !ok {
            return Err(CryptoError::InvalidPublicKey {
                reason: match alg {
                    JwsAlgorithm::EdDsa => "an Ed25519 public key is exactly 32 bytes",
                    JwsAlgorithm::Es256 => {
                        "a P-256 public key is 65 bytes of uncompressed SEC1 (0x04, x, y)"
                    }
                },
            });
        }
        let ed25519 = match alg {
            JwsAlgorithm::EdDsa => <&[u8; ED25519_PUBLIC_KEY_LEN]>::try_from(public)
                .ok()
                .and_then(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).ok()),
            JwsAlgorithm::Es256 => None,
        };
        Ok(Self {
            alg,
            kid: thumbprint_of(alg, public),
            public: public.to_vec(),
            ed25519,
        })
    }

    /// The same key under another `kid`.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// The algorithm this key is pinned to.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw public key, as given to [`VerifyingKey::from_public_bytes`].
    pub fn public_bytes(&self) -> &[u8] {
        &self.public
    }

    /// The RFC 7638 JWK thumbprint (base64url of SHA-256), whatever the
    /// `kid` is.
    pub fn thumbprint(&self) -> String {
        thumbprint_of(self.alg, &self.public)
    }

    /// The public JWK, for a JWKS document.
    pub fn to_jwk(&self) -> PublicJwk {
        let (kty, crv, x, y) = match self.alg {
            JwsAlgorithm::EdDsa => ("OKP", "Ed25519", b64(&self.public), None),
            JwsAlgorithm::Es256 => {
                let (x, y) = p256_coordinates(&self.public);
                ("EC", "P-256", b64(x), Some(b64(y)))
            }
        };
        PublicJwk {
            kty,
            crv,
            x,
            y,
            kid: self.kid.clone(),
            alg: self.alg.name(),
            key_use: "sig",
        }
    }

    /// Check a raw signature of `message` with this key's algorithm: no JWS
    /// parsing, no header rules. [`verify`] calls this last; it is public
    /// for known-answer tests and benchmarks.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        match self.alg {
            JwsAlgorithm::EdDsa => {
                use ed25519_dalek::Verifier as _;
                let key = self.ed25519.as_ref().ok_or(CryptoError::JwsBadSignature)?;
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| CryptoError::JwsBadSignature)?;
                key.verify(message, &signature)
                    .map_err(|_| CryptoError::JwsBadSignature)
            }
            JwsAlgorithm::Es256 => UnparsedPublicKey::new(self.alg.verification(), &self.public)
                .verify(message, signature)
                .map_err(|_| CryptoError::JwsBadSignature),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("x", &b64(&self.public))
            .finish_non_exhaustive()
    }
}

enum KeyPair {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

/// A private JWS signing key (Ed25519 or P-256).
///
/// `Debug` prints the algorithm and `kid` only. The PKCS#8 document it was
/// made from is kept in a [`SecretBytes`] (wiped on drop) so it can be
/// exported for sealing at rest.
pub struct SigningKey {
    pair: KeyPair,
    pkcs8: SecretBytes,
    public: VerifyingKey,
}

impl SigningKey {
    /// A fresh key of algorithm `alg` from `ring`'s `SystemRandom`.
    pub fn generate(alg: JwsAlgorithm) -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        let document = match alg {
            JwsAlgorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng),
            JwsAlgorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| CryptoError::RandomUnavailable)?;
        Self::from_pkcs8(alg, document.as_ref())
    }

    /// Import an unencrypted PKCS#8 private key (RFC 5958) of algorithm
    /// `alg`. Ed25519 accepts v1 (seed only) and v2 (seed and public key,
    /// which must match); P-256 needs the public key inside the
    /// `ECPrivateKey` and checks that it matches.
    pub fn from_pkcs8(alg: JwsAlgorithm, pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = match alg {
            JwsAlgorithm::EdDsa => Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .map(KeyPair::Ed25519)
                .map_err(|_| CryptoError::InvalidSecretKey {
                    reason: "not an unencrypted PKCS#8 Ed25519 private key",
                })?,
            JwsAlgorithm::Es256 => EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8,
                &SystemRandom::new(),
            )
            .map(KeyPair::Es256)
            .map_err(|_| CryptoError::InvalidSecretKey {
                reason: "not an unencrypted PKCS#8 P-256 private key with its public key",
            })?,
        };
        let public = match &pair {
            KeyPair::Ed25519(p) => p.public_key().as_ref().to_vec(),
            KeyPair::Es256(p) => p.public_key().as_ref().to_vec(),
        };
        let public = VerifyingKey::from_public_bytes(alg, &public)?;
        Ok(Self {
            pair,
            pkcs8: SecretBytes::new(pkcs8.to_vec()),
            public,
        })
    }

    /// An Ed25519 key from its 32-byte RFC 8032 seed (the JWK `d`). It
    /// exports as PKCS#8 v1.
    pub fn ed25519_from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        if seed.len() != 32 {
            return Err(CryptoError::InvalidSecretKey {
                reason: "an Ed25519 seed is exactly 32 bytes",
            });
        }
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        pkcs8.extend_from_slice(seed);
        Self::from_pkcs8(JwsAlgorithm::EdDsa, &pkcs8)
    }

    /// The PKCS#8 document, for sealing at rest. Wiped on drop.
    pub fn to_pkcs8(&self) -> SecretBytes {
        self.pkcs8.clone()
    }

    /// The same key under another `kid` (the default is the thumbprint).
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.public = self.public.with_kid(kid);
        self
    }

    /// The algorithm of every signature this key makes.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.public.alg
    }

    /// The key id written to the header.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The public half, with the same `kid`.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The public JWK ([`VerifyingKey::to_jwk`]).
    pub fn public_jwk(&self) -> PublicJwk {
        self.public.to_jwk()
    }

    /// A raw signature of `message` (no JWS framing).
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.pair {
            KeyPair::Ed25519(p) => Ok(p.sign(message).as_ref().to_vec()),
            // ECDSA needs a random nonce; ring fails only if the RNG does.
            KeyPair::Es256(p) => p
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::RandomUnavailable),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("kid", &self.public.kid)
            .field("private", &format_args!("[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Optional header members for [`sign`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderParams<'a> {
    /// The `typ` member (for example `"at+jwt"`), or none.
    pub typ: Option<&'a str>,
    /// Whether to write the key's `kid` (default `true`). [`verify`] requires
    /// a `kid`; leave this on except to reproduce foreign examples such as
    /// RFC 8037 A.4, whose header is only `{"alg":"EdDSA"}`.
    pub include_kid: bool,
}

impl Default for HeaderParams<'_> {
    fn default() -> Self {
        Self {
            typ: None,
            include_kid: true,
        }
    }
}

impl<'a> HeaderParams<'a> {
    /// `kid` and the given `typ`.
    pub fn with_typ(typ: &'a str) -> Self {
        Self {
            typ: Some(typ),
            include_kid: true,
        }
    }
}

#[derive(Serialize)]
struct ProtectedHeader<'a> {
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
}

/// Unpadded base64url length of `n` bytes.
fn b64_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

/// Sign `payload` (normally serialized JSON claims) with `key` as a compact
/// JWS: `b64url(header).b64url(payload).b64url(signature)`, header
/// `{"alg","kid","typ"}` (see [`HeaderParams`]).
///
/// Fails with [`CryptoError::JwsTooLarge`] if the token would be longer than
/// [`MAX_TOKEN_LEN`], which [`verify`] would reject.
pub fn sign(
    key: &SigningKey,
    params: &HeaderParams<'_>,
    payload: &[u8],
) -> Result<String, CryptoError> {
    let header = ProtectedHeader {
        alg: key.algorithm().name(),
        kid: params.include_kid.then_some(key.kid()),
        typ: params.typ,
    };
    let header = serde_json::to_vec(&header).map_err(|e| CryptoError::InvalidInput {
        field: "header",
        reason: e.to_string(),
    })?;
    let len = b64_len(header.len().min(MAX_TOKEN_LEN + 1))
        .saturating_add(b64_len(payload.len().min(MAX_TOKEN_LEN + 1)))
        .saturating_add(2 + b64_len(SIGNATURE_LEN));
    if len > MAX_TOKEN_LEN {
        return Err(CryptoError::JwsTooLarge { len });
    }
    let mut token = String::with_capacity(len);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign_raw(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

/// The keys a verifier trusts, by `kid`. Each key pins its algorithm.
///
/// Build one set per trust domain — typically one realm's current and
/// recently retired signing keys — and never merge realms: a token signed by
/// another realm's key then fails with [`CryptoError::JwsUnknownKey`] even
/// if that key is perfectly valid elsewhere.
#[derive(Debug, Clone, Default)]
pub struct JwsKeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl JwsKeySet {
    /// An empty set (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `key` under its [`VerifyingKey::kid`]; returns the key it
    /// replaces, if any.
    pub fn insert(&mut self, key: VerifyingKey) -> Option<VerifyingKey> {
        self.keys.insert(key.kid.clone(), key)
    }

    /// Remove the key with this `kid`.
    pub fn remove(&mut self, kid: &str) -> Option<VerifyingKey> {
        self.keys.remove(kid)
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values()
    }

    /// A JWKS document (RFC 7517 §5), `{"keys":[…]}`, keys sorted by `kid`.
    pub fn to_jwks(&self) -> serde_json::Value {
        let mut keys: Vec<&VerifyingKey> = self.keys.values().collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let keys = keys.into_iter().map(|k| k.to_jwk().to_json()).collect();
        let mut doc = serde_json::Map::new();
        doc.insert("keys".into(), serde_json::Value::Array(keys));
        serde_json::Value::Object(doc)
    }
}

impl FromIterator<VerifyingKey> for JwsKeySet {
    fn from_iter<I: IntoIterator<Item = VerifyingKey>>(iter: I) -> Self {
        let mut set = Self::new();
        for key in iter {
            set.insert(key);
        }
        set
    }
}

/// The protected header of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHeader {
    /// The algorithm (equal to the key's).
    pub alg: JwsAlgorithm,
    /// The `kid` of the key that verified the token.
    pub kid: String,
    /// The `typ` member, if any. Checking it is the caller's job.
    pub typ: Option<String>,
}

/// A token whose signature verified. The payload is not interpreted: check
/// its claims before trusting them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The protected header.
    pub header: VerifiedHeader,
    /// The decoded payload bytes (normally JSON claims).
    pub payload: Vec<u8>,
}

/// The header members the rules look at, with flags for `crit` and for a
/// repeated name. Other members are parsed and dropped (names are borrowed
/// from the header bytes when they have no escapes), so parsing the usual
/// header allocates for `alg`, `kid` and `typ` only.
struct RawHeader {
    alg: Option<serde_json::Value>,
    kid: Option<serde_json::Value>,
    typ: Option<serde_json::Value>,
    crit: bool,
    duplicate: bool,
}

/// A member name, borrowed unless it contains escapes.
struct MemberName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = MemberName<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name.to_owned())))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawHeader;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut header = RawHeader {
                    alg: None,
                    kid: None,
                    typ: None,
                    crit: false,
                    duplicate: false,
                };
                // A header has a handful of members: a linear search is
                // cheaper than any map.
                let mut names: Vec<MemberName<'de>> = Vec::new();
                while let Some(name) = map.next_key::<MemberName<'de>>()? {
                    // Every value is parsed, so serde_json's nesting limit
                    // refuses absurd depth in members nobody reads too.
                    let value = map.next_value::<serde_json::Value>()?;
                    match name.0.as_ref() {
                        "alg" => header.alg = Some(value),
                        "kid" => header.kid = Some(value),
                        "typ" => header.typ = Some(value),
                        other => header.crit |= other == "crit",
                    }
                    if names.iter().any(|seen| seen.0 == name.0) {
                        header.duplicate = true;
                    }
                    names.push(name);
                }
                Ok(header)
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl RawHeader {
    fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let header: RawHeader = serde_json::from_slice(bytes).map_err(|e| {
            malformed(if e.classify() == serde_json::error::Category::Data {
                JwsDefect::HeaderNotObject
            } else {
                JwsDefect::HeaderJson
            })
        })?;
        if header.duplicate {
            return Err(malformed(JwsDefect::DuplicateMember));
        }
        Ok(header)
    }

    /// Member `member` if present, which must be a string.
    fn string(
        value: Option<serde_json::Value>,
        member: &'static str,
    ) -> Result<Option<String>, CryptoError> {
        match value {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(malformed(JwsDefect::MemberType(member))),
        }
    }
}

fn decode(part: &[u8], which: JwsPart) -> Result<Vec<u8>, CryptoError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(JwsDefect::Base64(which)))
}

/// A compact JWS that passed every rule of the module docs that needs no
/// key (steps 1 to 6): made by [`parse`], checked by [`Parsed::verify`].
/// Splitting the two lets a caller refuse a malformed token before it
/// reads any keys from storage. `Debug` shows the header only: the rest
/// would rebuild the bearer token.
pub struct Parsed<'a> {
    /// `header.payload` exactly as received: what the signature covers.
    signing_input: &'a [u8],
    alg: String,
    kid: String,
    typ: Option<String>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Apply the rules that need no key to `token` (length, three canonical
/// base64url segments, the header's JSON, member types, `crit`, `alg`
/// present and not `none`, `kid` present), in the order of the module docs.
pub fn parse(token: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(CryptoError::JwsTooLarge { len: token.len() });
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(JwsDefect::Segments));
    };
    let header_bytes = decode(header_b64, JwsPart::Header)?;
    let payload = decode(payload_b64, JwsPart::Payload)?;
    let signature = decode(signature_b64, JwsPart::Signature)?;

    let header = RawHeader::parse(&header_bytes)?;
    let alg = RawHeader::string(header.alg, "alg")?;
    let kid = RawHeader::string(header.kid, "kid")?;
    let typ = RawHeader::string(header.typ, "typ")?;
    if header.crit {
        return Err(CryptoError::JwsCritical);
    }
    let alg = alg.ok_or_else(|| malformed(JwsDefect::MissingAlg))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(CryptoError::JwsUnsecured);
    }
    let Some(kid) = kid else {
        return Err(CryptoError::JwsUnknownKey { kid: None });
    };
    Ok(Parsed {
        signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
        alg,
        kid,
        typ,
        payload,
        signature,
    })
}

impl fmt::Debug for Parsed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parsed")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("typ", &self.typ)
            .finish_non_exhaustive()
    }
}

impl Parsed<'_> {
    /// The `kid` the token names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The decoded payload, **not yet verified**: for reading what a
    /// verification will need (which records to fetch) before the
    /// signature is checked, never for deciding anything.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The remaining rules (steps 7 and 8): the `kid` must name a key of
    /// `keys`, `alg` must be that key's algorithm, and only then is the
    /// signature checked.
    pub fn verify(self, keys: &JwsKeySet) -> Result<Verified, CryptoError> {
        let key = keys
            .get(&self.kid)
            .ok_or_else(|| CryptoError::JwsUnknownKey {
                kid: Some(self.kid.clone()),
            })?;
        if self.alg != key.alg.name() {
            return Err(CryptoError::JwsAlgorithmMismatch {
                expected: key.alg,
                found: self.alg,
            });
        }
        key.verify_signature(self.signing_input, &self.signature)?;
        Ok(Verified {
            header: VerifiedHeader {
                alg: key.alg,
                kid: self.kid,
                typ: self.typ,
            },
            payload: self.payload,
        })
    }
}

/// Verify a compact JWS against the trusted `keys`, applying the rules in
/// the module docs in order ([`parse`], then [`Parsed::verify`]); only the
/// last step does public-key work.
///
/// Returns the header and the payload bytes. Claims (`exp`, `iss`, `aud`, …)
/// are **not** checked here.
pub fn verify(token: impl AsRef<[u8]>, keys: &JwsKeySet) -> Result<Verified, CryptoError> {
    parse(token.as_ref())?.verify(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIMS: &[u8] = br#"{"sub":"u1","iss":"https://realm-a.example","exp":2000000000}"#;

    fn key_set(keys: &[&SigningKey]) -> JwsKeySet {
        keys.iter().map(|k| k.verifying_key().clone()).collect()
    }

    /// A token with an arbitrary header, signed (validly) by `key`.
    fn forge(key: &SigningKey, header: &str, payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
        let sig = key.sign_raw(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    fn code(token: impl AsRef<[u8]>, keys: &JwsKeySet) -> &'static str {
        verify(token, keys).unwrap_err().code()
    }

    #[test]
    fn round_trip_both_algorithms() {
        for alg in [JwsAlgorithm::EdDsa, JwsAlgorithm::Es256] {
            let key = SigningKey::generate(alg).unwrap();
            let token = sign(&key, &HeaderParams::with_typ("at+jwt"), CLAIMS).unwrap();
            let header = URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap();
            assert_eq!(
                String::from_utf8(header).unwrap(),
                format!(
                    r#"{{"alg":"{}","kid":"{}","typ":"at+jwt"}}"#,
                    alg.name(),
                    key.kid()
                )
            );
            let verified = verify(&token, &key_set(&[&key])).unwrap();
            assert_eq!(verified.payload, CLAIMS);
            assert_eq!(verified.header.alg, alg);
            assert_eq!(verified.header.kid, key.kid());
            assert_eq!(verified.header.typ.as_deref(), Some("at+jwt"));
        }
    }

    #[test]
    fn pkcs8_round_trip_and_redaction() {
        for alg in [JwsAlgorithm::EdDsa, JwsAlgorithm::Es256] {
            let key = SigningKey::generate(alg).unwrap();
            let der = key.to_pkcs8();
            let printed = format!("{key:?} {der:?}");
            assert!(printed.contains("[redacted"), "{printed}");
            assert!(!printed.contains(&b64(der.expose())), "{printed}");
            let again = SigningKey::from_pkcs8(alg, der.expose()).unwrap();
            assert_eq!(again.verifying_key(), key.verifying_key());
            let token = sign(&again, &HeaderParams::default(), CLAIMS).unwrap();
            verify(&token, &key_set(&[&key])).unwrap();
        }
        let ed = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let e = SigningKey::from_pkcs8(JwsAlgorithm::Es256, ed.to_pkcs8().expose()).unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_SECRET_KEY");
        let e = SigningKey::from_pkcs8(JwsAlgorithm::EdDsa, b"not a key").unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_SECRET_KEY");
        let e = SigningKey::ed25519_from_seed(&[1; 31]).unwrap_err();
        assert_eq!(e.code(), "CRYPTO_INVALID_SECRET_KEY");
    }

    #[test]
    fn jwk_export_has_the_required_members() {
        let ec = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let jwk = ec.public_jwk().to_json();
        let public = ec.verifying_key().public_bytes();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["x"], b64(&public[1..33]));
        assert_eq!(jwk["y"], b64(&public[33..]));
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], ec.kid());
        assert_eq!(ec.kid(), ec.verifying_key().thumbprint());
        assert_eq!(serde_json::to_value(ec.public_jwk()).unwrap(), jwk);
        let ed = SigningKey::generate(JwsAlgorithm::EdDsa)
            .unwrap()
            .with_kid("k1");
        let jwk = ed.public_jwk().to_json();
        assert_eq!(jwk.as_object().unwrap().len(), 6, "{jwk}");
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["kty"], "OKP");
        let jwks = key_set(&[&ec, &ed]).to_jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn public_key_encodings_are_checked() {
        for (alg, bytes) in [
            (JwsAlgorithm::EdDsa, vec![1u8; 31]),
            (JwsAlgorithm::Es256, vec![4u8; 64]),
            (JwsAlgorithm::Es256, vec![2u8; 65]),
        ] {
            let e = VerifyingKey::from_public_bytes(alg, &bytes).unwrap_err();
            assert_eq!(e.code(), "CRYPTO_INVALID_PUBLIC_KEY");
        }
        // Not on the curve: encodes fine, verifies nothing.
        let bogus = VerifyingKey::from_public_bytes(JwsAlgorithm::Es256, &[4u8; 65]).unwrap();
        assert_eq!(
            bogus.verify_signature(b"m", &[1u8; 64]),
            Err(CryptoError::JwsBadSignature)
        );
    }

    #[test]
    fn algorithm_confusion_is_rejected_before_signature_work() {
        let ed = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let ec = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let keys = key_set(&[&ed]);
        // ES256 header naming the EdDSA kid, validly signed by the EC key.
        let header = format!(r#"{{"alg":"ES256","kid":"{}"}}"#, ed.kid());
        let token = forge(&ec, &header, CLAIMS);
        assert_eq!(
            verify(&token, &keys).unwrap_err(),
            CryptoError::JwsAlgorithmMismatch {
                expected: JwsAlgorithm::EdDsa,
                found: "ES256".into()
            }
        );
        // Same with an Ed25519 signature; and HS256 / wrong letter case.
        for alg in ["ES256", "HS256", "eddsa", "RS256", ""] {
            let header = format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, ed.kid());
            assert_eq!(
                code(forge(&ed, &header, CLAIMS), &keys),
                "JWS_ALGORITHM_MISMATCH",
                "{alg}"
            );
        }
        // alg none, with an empty or a real signature, in any case.
        for alg in ["none", "None", "NONE"] {
            let header = format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, ed.kid());
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(CLAIMS));
            assert_eq!(code(&unsigned, &keys), "JWS_UNSECURED");
            assert_eq!(code(forge(&ed, &header, CLAIMS), &keys), "JWS_UNSECURED");
        }
    }

    #[test]
    fn kid_from_another_realm_is_unknown() {
        let realm_a = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let realm_b = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let token_b = sign(&realm_b, &HeaderParams::default(), CLAIMS).unwrap();
        assert_eq!(
            verify(&token_b, &key_set(&[&realm_a])).unwrap_err(),
            CryptoError::JwsUnknownKey {
                kid: Some(realm_b.kid().to_owned())
            }
        );
        // Realm B's key relabelled with realm A's kid: the kid is found, the
        // signature is not A's.
        let spoof = SigningKey::from_pkcs8(JwsAlgorithm::EdDsa, realm_b.to_pkcs8().expose())
            .unwrap()
            .with_kid(realm_a.kid());
        let token = sign(&spoof, &HeaderParams::default(), CLAIMS).unwrap();
        assert_eq!(code(&token, &key_set(&[&realm_a])), "JWS_BAD_SIGNATURE");
        assert_eq!(code(&token, &JwsKeySet::new()), "JWS_UNKNOWN_KEY");
        // No kid at all.
        let no_kid = HeaderParams {
            typ: None,
            include_kid: false,
        };
        let token = sign(&realm_a, &no_kid, CLAIMS).unwrap();
        assert_eq!(
            verify(&token, &key_set(&[&realm_a])).unwrap_err(),
            CryptoError::JwsUnknownKey { kid: None }
        );
    }

    #[test]
    fn header_rules() {
        let key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let keys = key_set(&[&key]);
        let kid = key.kid();
        let defect = |header: &str| match verify(forge(&key, header, CLAIMS), &keys) {
            Err(CryptoError::JwsMalformed { defect }) => Some(defect),
            _ => None,
        };
        assert_eq!(defect("not json"), Some(JwsDefect::HeaderJson));
        assert_eq!(defect(r#"{"alg":"EdDSA""#), Some(JwsDefect::HeaderJson));
        assert_eq!(defect(r#"{"alg":"EdDSA"} x"#), Some(JwsDefect::HeaderJson));
        assert_eq!(defect(""), Some(JwsDefect::HeaderJson));
        for not_object in [r#"["alg"]"#, r#""EdDSA""#, "null", "42"] {
            assert_eq!(defect(not_object), Some(JwsDefect::HeaderNotObject));
        }
        assert_eq!(
            defect(&format!(r#"{{"alg":"EdDSA","kid":"{kid}","alg":"EdDSA"}}"#)),
            Some(JwsDefect::DuplicateMember)
        );
        assert_eq!(
            defect(&format!(r#"{{"alg":"none","kid":"{kid}","alg":"EdDSA"}}"#)),
            Some(JwsDefect::DuplicateMember)
        );
        assert_eq!(
            defect(&format!(r#"{{"alg":"EdDSA","kid":"{kid}","x":1,"x":2}}"#)),
            Some(JwsDefect::DuplicateMember)
        );
        for (header, member) in [
            (format!(r#"{{"alg":["EdDSA"],"kid":"{kid}"}}"#), "alg"),
            (r#"{"alg":"EdDSA","kid":7}"#.to_owned(), "kid"),
            (
                format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":null}}"#),
                "typ",
            ),
            (format!(r#"{{"alg":null,"kid":"{kid}"}}"#), "alg"),
        ] {
            assert_eq!(defect(&header), Some(JwsDefect::MemberType(member)));
        }
        assert_eq!(
            defect(&format!(r#"{{"kid":"{kid}"}}"#)),
            Some(JwsDefect::MissingAlg)
        );
        for crit in [r#"["exp"]"#, "[]", r#"["b64"]"#] {
            let header = format!(r#"{{"alg":"EdDSA","kid":"{kid}","crit":{crit},"b64":false}}"#);
            assert_eq!(
                code(forge(&key, &header, CLAIMS), &keys),
                "JWS_CRIT_UNSUPPORTED"
            );
        }
        // Embedded keys are ignored, not trusted: a token carrying its own
        // jwk still needs a kid of the set and that key's signature.
        let other = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let header = format!(
            r#"{{"alg":"EdDSA","kid":"{}","jwk":{}}}"#,
            other.kid(),
            other.public_jwk().to_json()
        );
        assert_eq!(
            code(forge(&other, &header, CLAIMS), &keys),
            "JWS_UNKNOWN_KEY"
        );
        // Deep nesting is a JSON error, not a stack overflow.
        let deep = format!(
            r#"{{"alg":"EdDSA","kid":"{kid}","x":{}{}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        assert_eq!(defect(&deep), Some(JwsDefect::HeaderJson));
        // Whitespace and member order do not matter; unknown members are ok.
        let header =
            format!(r#" {{ "typ" : "JWT", "x5u":"https://evil", "kid":"{kid}", "alg":"EdDSA" }}"#);
        let verified = verify(forge(&key, &header, CLAIMS), &keys).unwrap();
        assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn framing_and_base64_rules() {
        let key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let keys = key_set(&[&key]);
        let token = sign(&key, &HeaderParams::default(), CLAIMS).unwrap();
        verify(&token, &keys).unwrap();
        let malformed_defect = |t: &str| match verify(t, &keys) {
            Err(CryptoError::JwsMalformed { defect }) => Some(defect),
            other => panic!("{t}: {other:?}"),
        };
        let (h, rest) = token.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            String::new(),
            ".".into(),
            "..".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}."),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}{s}"),
            h.to_owned(),
        ] {
            let d = if bad == ".." {
                Some(JwsDefect::HeaderJson)
            } else {
                Some(JwsDefect::Segments)
            };
            assert_eq!(malformed_defect(&bad), d, "{bad:?}");
        }
        let b64_defect = |part| Some(JwsDefect::Base64(part));
        assert_eq!(
            malformed_defect(&format!("{h}=.{p}.{s}")),
            b64_defect(JwsPart::Header)
        );
        assert_eq!(
            malformed_defect(&format!("{h}.{p} .{s}")),
            b64_defect(JwsPart::Payload)
        );
        assert_eq!(
            malformed_defect(&format!("{h}.{p}.{s}==")),
            b64_defect(JwsPart::Signature)
        );
        let std_alphabet = s.replace('-', "+").replace('_', "/");
        if std_alphabet != s {
            assert_eq!(
                malformed_defect(&format!("{h}.{p}.{std_alphabet}")),
                b64_defect(JwsPart::Signature)
            );
        }
        // A 64-byte signature is 86 characters; the last carries 4 bits of
        // which the low 2 must be zero. Setting one is non-canonical.
        let mut chars: Vec<u8> = s.as_bytes().to_vec();
        let last = chars.len() - 1;
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == chars[last]).unwrap();
        chars[last] = alphabet[index | 1];
        let sloppy = String::from_utf8(chars).unwrap();
        assert_eq!(
            malformed_defect(&format!("{h}.{p}.{sloppy}")),
            b64_defect(JwsPart::Signature)
        );
        // Truncated tokens: every proper prefix fails.
        for end in 0..token.len() {
            assert!(
                verify(&token[..end], &keys).is_err(),
                "prefix of {end} bytes"
            );
        }
        // Truncated or empty signature is a bad signature, not a panic.
        assert_eq!(code(format!("{h}.{p}."), &keys), "JWS_BAD_SIGNATURE");
        assert_eq!(
            code(format!("{h}.{p}.{}", &s[..84]), &keys),
            "JWS_BAD_SIGNATURE"
        );
        // Non-UTF-8 bytes are rejected, not a panic.
        assert_eq!(code(b"\xff\xfe.\x80.\x00", &keys), "JWS_MALFORMED");
    }

    #[test]
    fn size_limit_is_8_kib() {
        let key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let keys = key_set(&[&key]);
        let overhead = sign(&key, &HeaderParams::default(), b"").unwrap().len();
        // The largest payload whose token fits: 3 bytes → 4 characters.
        let max_payload = (MAX_TOKEN_LEN - overhead) / 4 * 3;
        let token = sign(&key, &HeaderParams::default(), &vec![b'a'; max_payload]).unwrap();
        assert!(token.len() <= MAX_TOKEN_LEN);
        verify(&token, &keys).unwrap();
        let e = sign(&key, &HeaderParams::default(), &vec![b'a'; MAX_TOKEN_LEN]).unwrap_err();
        assert_eq!(e.code(), "JWS_TOO_LARGE");
        let e = sign(&key, &HeaderParams::default(), &vec![b'a'; 1 << 20]).unwrap_err();
        assert_eq!(e.code(), "JWS_TOO_LARGE");
        // Exactly 8 KiB parses (and fails on content); 8 KiB + 1 does not.
        let exact = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN - token.len()));
        assert_eq!(exact.len(), MAX_TOKEN_LEN);
        assert_ne!(code(&exact, &keys), "JWS_TOO_LARGE");
        let over = "A".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&over, &keys).unwrap_err(),
            CryptoError::JwsTooLarge {
                len: MAX_TOKEN_LEN + 1
            }
        );
        let over = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN + 1 - token.len()));
        assert_eq!(code(&over, &keys), "JWS_TOO_LARGE");
    }

    #[test]
    fn payload_tampering_and_key_set_rotation() {
        let old = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
        let new = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let mut keys = key_set(&[&old, &new]);
        let t_old = sign(&old, &HeaderParams::default(), CLAIMS).unwrap();
        let t_new = sign(&new, &HeaderParams::default(), CLAIMS).unwrap();
        verify(&t_old, &keys).unwrap();
        verify(&t_new, &keys).unwrap();
        // Swap payloads between tokens.
        let (h, _) = t_old.split_once('.').unwrap();
        let other_payload = b64(br#"{"sub":"admin"}"#);
        let sig = t_old.rsplit_once('.').unwrap().1;
        assert_eq!(
            code(format!("{h}.{other_payload}.{sig}"), &keys),
            "JWS_BAD_SIGNATURE"
        );
        keys.remove(old.kid());
        assert_eq!(code(&t_old, &keys), "JWS_UNKNOWN_KEY");
        verify(&t_new, &keys).unwrap();
        assert_eq!(keys.len(), 1);
    }
}
