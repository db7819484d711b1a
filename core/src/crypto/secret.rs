//! Bearer secrets: refresh, one-time, magic-link and trusted-device tokens.
//!
//! A bearer token is `prefix` ‖ `_` ‖ base64url (RFC 4648 §5, no padding) of
//! 32 random bytes from `ring`'s `SystemRandom` — 256 bits, 43 characters.
//! Each [`TokenKind`] has its own prefix, so a leaked token is recognisable
//! (by secret scanners, and by people) and a token of one kind is never
//! accepted as another.
//!
//! A token may carry a public *locator* before its random bytes
//! ([`generate_located`]): ids that name the record to read, so the lookup
//! needs no digest index first (refresh tokens carry their family, session
//! and user). It proves nothing; the digest still has to match.
//!
//! Only the token's [`TokenDigest`] — SHA-256 of the whole token string,
//! prefix included — is stored. A presented token is checked for shape,
//! hashed and looked up by digest; where two digests are compared, the
//! comparison is constant-time ([`TokenDigest::matches`]).

use super::{CryptoError, random_array, sha256};
use crate::secret::SecretString;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;
use subtle::ConstantTimeEq;

/// Random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// Length of the base64url part of a token (32 bytes, unpadded).
pub const TOKEN_BODY_LEN: usize = 43;

/// What a bearer token is for; decides its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenKind {
    /// A refresh token (`ksrt_…`).
    Refresh,
    /// A one-time code delivered as a link or token (`ksot_…`).
    OneTime,
    /// A magic-link login token (`ksml_…`).
    MagicLink,
    /// A trusted-device ("remember this device") token (`kstd_…`).
    TrustedDevice,
    /// A long-lived application token for programmatic login (`ksat_…`).
    AppToken,
    /// The confirmation of a pending sign-up, mailed to its address
    /// (`kssu_…`).
    SignUp,
}

impl TokenKind {
    /// The prefix before the `_`.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Refresh => "ksrt",
            TokenKind::OneTime => "ksot",
            TokenKind::MagicLink => "ksml",
            TokenKind::TrustedDevice => "kstd",
            TokenKind::AppToken => "ksat",
            TokenKind::SignUp => "kssu",
        }
    }
}

/// SHA-256 of a token string: what storage keeps instead of the token.
#[derive(Clone, Copy, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// Compare with `other` in constant time.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl PartialEq for TokenDigest {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl std::hash::Hash for TokenDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({})", crate::store::key::hex(&self.0))
    }
}

/// A freshly generated token: give `token` to the client once, store
/// `digest`.
#[derive(Debug)]
pub struct IssuedToken {
    /// The token string (secret; `Debug` is redacted).
    pub token: SecretString,
    /// What to store.
    pub digest: TokenDigest,
}

/// Generate a new token of `kind`.
pub fn generate(kind: TokenKind) -> Result<IssuedToken, CryptoError> {
    generate_located(kind, &[])
}

/// Generate a new token of `kind` whose body starts with `locator` — public
/// ids that let the server find the token's record in one read instead of
/// a digest-index lookup first — followed by [`TOKEN_BYTES`] random bytes.
/// The locator is not secret and proves nothing: the digest of the whole
/// token must still match the stored one.
pub fn generate_located(kind: TokenKind, locator: &[u8]) -> Result<IssuedToken, CryptoError> {
    let random = random_array::<TOKEN_BYTES>()?;
    let mut body = Vec::with_capacity(locator.len() + TOKEN_BYTES);
    body.extend_from_slice(locator);
    body.extend_from_slice(random.as_ref());
    let mut token = String::with_capacity(kind.prefix().len() + 1 + body_len(locator.len()));
    token.push_str(kind.prefix());
    token.push('_');
    URL_SAFE_NO_PAD.encode_string(&body, &mut token);
    let digest = TokenDigest(sha256(token.as_bytes()));
    Ok(IssuedToken {
        token: SecretString::new(token),
        digest,
    })
}

/// Length of the base64url body of a token with a `locator_len`-byte locator.
fn body_len(locator_len: usize) -> usize {
    ((locator_len + TOKEN_BYTES) * 4).div_ceil(3)
}

/// Check that `presented` has the shape of a `kind` token and return its
/// digest, for lookup or a [`TokenDigest::matches`] comparison.
///
/// A wrong prefix, length or alphabet is an [`CryptoError::InvalidInput`]
/// naming the problem (never echoing the token).
pub fn digest_of(kind: TokenKind, presented: &str) -> Result<TokenDigest, CryptoError> {
    parse_located(kind, presented, 0).map(|(_, digest)| digest)
}

/// Check that `presented` has the shape of a `kind` token with a
/// `locator_len`-byte locator ([`generate_located`]) and return the locator
/// and the digest of the whole token.
pub fn parse_located(
    kind: TokenKind,
    presented: &str,
    locator_len: usize,
) -> Result<(Vec<u8>, TokenDigest), CryptoError> {
    let invalid = |reason: String| CryptoError::InvalidInput {
        field: "token",
        reason,
    };
    let body = presented
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or_else(|| invalid(format!("expected a {}_ token", kind.prefix())))?;
    let expected = body_len(locator_len);
    if body.len() != expected {
        return Err(invalid(format!(
            "the part after the prefix is {} characters, expected {expected}",
            body.len()
        )));
    }
    // Decoding also rejects non-canonical trailing bits, so each token has
    // exactly one spelling.
    let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(body) else {
        return Err(invalid("not canonical base64url".to_owned()));
    };
    bytes.truncate(locator_len);
    Ok((bytes, TokenDigest(sha256(presented.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_tokens_round_trip_and_keep_their_length() {
        let locator = [7u8; 48];
        let issued = generate_located(TokenKind::Refresh, &locator).unwrap();
        let token = issued.token.expose();
        assert_eq!(token.len(), "ksrt_".len() + 107);
        let (found, digest) = parse_located(TokenKind::Refresh, token, 48).unwrap();
        assert_eq!(found, locator);
        assert!(digest.matches(&issued.digest));
        // The locator length is part of the shape.
        assert!(parse_located(TokenKind::Refresh, token, 0).is_err());
        assert!(digest_of(TokenKind::Refresh, token).is_err());
        assert!(parse_located(TokenKind::OneTime, token, 48).is_err());
    }

    #[test]
    fn only_canonical_base64url_is_accepted() {
        // 32 bytes encode to 43 characters whose last one carries 2 bits: a
        // last character with any of its low 4 bits set is a second spelling
        // of some token, and is refused.
        let canonical = format!("ksrt_{}", "A".repeat(43));
        assert!(digest_of(TokenKind::Refresh, &canonical).is_ok());
        let non_canonical = format!("ksrt_{}B", "A".repeat(42));
        assert_eq!(
            digest_of(TokenKind::Refresh, &non_canonical)
                .unwrap_err()
                .code(),
            "CRYPTO_INVALID_INPUT"
        );
        let bad_alphabet = format!("ksrt_{}+", "A".repeat(42));
        assert!(digest_of(TokenKind::Refresh, &bad_alphabet).is_err());
    }

    #[test]
    fn tokens_have_shape_and_digest() {
        let issued = generate(TokenKind::Refresh).unwrap();
        let token = issued.token.expose();
        assert!(token.starts_with("ksrt_"));
        assert_eq!(token.len(), 5 + TOKEN_BODY_LEN);
        let digest = digest_of(TokenKind::Refresh, token).unwrap();
        assert!(digest.matches(&issued.digest));
        assert!(!format!("{issued:?}").contains(token));
        let other = generate(TokenKind::Refresh).unwrap();
        assert_ne!(other.digest, issued.digest);
    }

    #[test]
    fn wrong_shape_is_rejected_and_bit_flips_change_the_digest() {
        let issued = generate(TokenKind::MagicLink).unwrap();
        let token = issued.token.expose();
        let err = digest_of(TokenKind::Refresh, token).unwrap_err();
        assert_eq!(err.code(), "CRYPTO_INVALID_INPUT");
        assert!(!err.to_string().contains(token));
        assert!(digest_of(TokenKind::MagicLink, &token[..token.len() - 1]).is_err());
        assert!(digest_of(TokenKind::MagicLink, &format!("{token}A")).is_err());
        let bytes = token.as_bytes();
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.to_vec();
            bad[i / 8] ^= 1 << (i % 8);
            let Ok(bad) = String::from_utf8(bad) else {
                continue;
            };
            if let Ok(d) = digest_of(TokenKind::MagicLink, &bad) {
                assert!(!d.matches(&issued.digest), "bit {i}");
            }
        }
    }
}
