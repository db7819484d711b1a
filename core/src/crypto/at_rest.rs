//! Sealing secrets kept at rest (TOTP seeds, token-signing private keys).
//!
//! A secret is encrypted with XChaCha20-Poly1305 under a key-encryption key
//! (KEK) that the embedder's [`KeyProvider`] supplies — typically backed by a
//! KMS. The blob names the KEK it was sealed under, so blobs sealed before a
//! rotation still open afterwards, and [`reseal`] moves a blob to the newest
//! KEK. The AAD binds the blob to its storage record key, so a blob copied
//! into another record fails to open.
//!
//! # Blob format, version 1
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 1 | format version, `0x01` |
//! | 1 | 1 | key id length `L`, 1 ≤ `L` ≤ [`MAX_KEY_ID_LEN`] |
//! | 2 | `L` | key id (ASCII letters, digits, `.`, `_`, `-`, `:`) |
//! | 2 + `L` | 24 | XChaCha20 nonce, random per seal |
//! | 26 + `L` | n + 16 | ciphertext of the n-byte secret, Poly1305 tag last |
//!
//! AAD = bytes `0 .. 2 + L` of the blob (format, key id length, key id) ‖ the
//! record key. The prefix is self-delimiting, so the concatenation is
//! unambiguous. Nonces are 24 random bytes from `ring`'s `SystemRandom`; at
//! 192 bits, random nonces do not collide in any realistic number of seals
//! under one KEK.

use super::{CryptoError, fill_random};
use crate::secret::SecretBytes;
use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The only blob format version this code writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// The longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;
/// Length of the random XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// The name of one key-encryption key, stored in every blob sealed under it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Check and wrap a key id: 1 to [`MAX_KEY_ID_LEN`] bytes of ASCII
    /// letters, digits, `.`, `_`, `-` or `:`.
    pub fn new(id: impl Into<String>) -> Result<Self, CryptoError> {
        let id = id.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':');
        if id.is_empty() || id.len() > MAX_KEY_ID_LEN || !id.chars().all(ok_char) {
            return Err(CryptoError::InvalidInput {
                field: "key_id",
                reason: format!(
                    "a key id is 1 to {MAX_KEY_ID_LEN} ASCII letters, digits, '.', '_', '-' or ':'"
                ),
            });
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 32-byte key-encryption key. `Debug` is redacted; wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Kek([u8; KEK_LEN]);

impl Kek {
    /// Wrap 32 bytes of key material (from the embedder's KMS or config).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key: [u8; KEK_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidSecretKey {
                reason: "a key-encryption key is exactly 32 bytes",
            })?;
        Ok(Self(key))
    }

    /// A fresh random KEK (for tests, the quickstart and key ceremonies).
    pub fn generate() -> Result<Self, CryptoError> {
        let bytes = super::random_array::<KEK_LEN>()?;
        Ok(Self(*bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        // Borrowed as an `Array` view: no unwiped copy of the key is made.
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

/// Supplies key-encryption keys by id, so they can rotate.
///
/// Embedders implement it over their KMS or secret store. `current` names
/// the KEK new blobs are sealed under; `key` must keep returning retired
/// KEKs for as long as blobs sealed under them exist (until [`reseal`] has
/// moved them).
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// The newest KEK and its id.
    async fn current(&self) -> Result<(KeyId, Kek), CryptoError>;

    /// The KEK named `id`, or `None` if this provider does not know it.
    async fn key(&self, id: &KeyId) -> Result<Option<Kek>, CryptoError>;
}

/// A [`KeyProvider`] holding its KEKs in memory: for tests, the quickstart,
/// and embedders that load KEKs from configuration.
#[derive(Debug, Clone)]
pub struct StaticKeyProvider {
    current: (KeyId, Kek),
    retired: Vec<(KeyId, Kek)>,
}

impl StaticKeyProvider {
    /// A provider with one fresh random KEK named `static-1`: for tests,
    /// demos and the quickstart. Blobs it seals die with the process unless
    /// you keep the KEK, so production uses [`StaticKeyProvider::new`] with a
    /// stored key, or a KMS-backed [`KeyProvider`].
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::new(KeyId::new("static-1")?, Kek::generate()?))
    }

    /// A provider whose newest KEK is `kek`, named `id`.
    pub fn new(id: KeyId, kek: Kek) -> Self {
        Self {
            current: (id, kek),
            retired: Vec::new(),
        }
    }

    /// Also accept blobs sealed under an older KEK (never used to seal).
    #[must_use]
    pub fn with_retired(mut self, id: KeyId, kek: Kek) -> Self {
        self.retired.push((id, kek));
        self
    }
}

#[async_trait]
impl KeyProvider for StaticKeyProvider {
    async fn current(&self) -> Result<(KeyId, Kek), CryptoError> {
        Ok(self.current.clone())
    }

    async fn key(&self, id: &KeyId) -> Result<Option<Kek>, CryptoError> {
        Ok(std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|(k, _)| k == id)
            .map(|(_, kek)| kek.clone()))
    }
}

fn malformed(reason: impl Into<String>) -> CryptoError {
    CryptoError::Malformed {
        what: "at-rest blob",
        reason: reason.into(),
    }
}

/// The parts of a blob: the AAD prefix, key id, nonce and ciphertext.
struct Parsed<'a> {
    prefix: &'a [u8],
    key_id: KeyId,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

fn parse(blob: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    let (&format, rest) = blob.split_first().ok_or_else(|| malformed("empty blob"))?;
    if format != FORMAT_V1 {
        return Err(malformed(format!(
            "unsupported format version {format:#04x}"
        )));
    }
    let (&id_len, rest) = rest
        .split_first()
        .ok_or_else(|| malformed("truncated before the key id"))?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN + TAG_LEN {
        return Err(malformed("truncated: shorter than key id, nonce and tag"));
    }
    let (id, rest) = rest.split_at(id_len);
    let id = std::str::from_utf8(id).map_err(|_| malformed("key id is not ASCII"))?;
    let key_id = KeyId::new(id).map_err(|_| malformed("invalid key id"))?;
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Parsed {
        prefix: &blob[..2 + id_len],
        key_id,
        nonce,
        ciphertext,
    })
}

fn aad(prefix: &[u8], record_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + record_key.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(record_key);
    aad
}

fn seal_with(
    key_id: &KeyId,
    kek: &Kek,
    record_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let id = key_id.as_str().as_bytes();
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    let mut blob = Vec::with_capacity(2 + id.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    blob.push(FORMAT_V1);
    // KeyId::new guarantees 1..=64 bytes.
    blob.push(u8::try_from(id.len()).map_err(|_| CryptoError::SealFailed)?);
    blob.extend_from_slice(id);
    let aad = aad(&blob, record_key);
    let ciphertext = kek
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::SealFailed)?;
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    Ok(blob)
}

/// The id of the KEK a blob was sealed under (no key needed).
pub fn key_id_of(blob: &[u8]) -> Result<KeyId, CryptoError> {
    parse(blob).map(|p| p.key_id)
}

/// Seal `plaintext` for the record stored under `record_key`, with the
/// provider's current KEK.
pub async fn seal<P: KeyProvider + ?Sized>(
    provider: &P,
    record_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (id, kek) = provider.current().await?;
    seal_with(&id, &kek, record_key, plaintext)
}

/// Open a blob stored under `record_key`, with whichever KEK it names.
pub async fn open<P: KeyProvider + ?Sized>(
    provider: &P,
    record_key: &[u8],
    blob: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let parsed = parse(blob)?;
    let kek = provider
        .key(&parsed.key_id)
        .await?
        .ok_or_else(|| CryptoError::UnknownKey {
            key_id: parsed.key_id.as_str().to_owned(),
        })?;
    let nonce = XNonce::try_from(parsed.nonce).map_err(|_| malformed("nonce is not 24 bytes"))?;
    let plaintext = kek
        .cipher()
        .decrypt(
            &nonce,
            Payload {
                msg: parsed.ciphertext,
                aad: &aad(parsed.prefix, record_key),
            },
        )
        .map_err(|_| CryptoError::OpenFailed)?;
    Ok(SecretBytes::new(plaintext))
}

/// Re-encrypt a blob under the provider's current KEK.
///
/// Returns `None` when the blob already names the current KEK (nothing to
/// do), otherwise the new blob, which the caller writes back in place of the
/// old one. The blob is opened first, so a damaged blob is an error, never
/// silently re-sealed.
pub async fn reseal<P: KeyProvider + ?Sized>(
    provider: &P,
    record_key: &[u8],
    blob: &[u8],
) -> Result<Option<Vec<u8>>, CryptoError> {
    let (id, kek) = provider.current().await?;
    let plaintext = open(provider, record_key, blob).await?;
    if key_id_of(blob)? == id {
        return Ok(None);
    }
    seal_with(&id, &kek, record_key, plaintext.expose()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(id: &str) -> (StaticKeyProvider, KeyId, Kek) {
        let id = KeyId::new(id).unwrap();
        let kek = Kek::generate().unwrap();
        (StaticKeyProvider::new(id.clone(), kek.clone()), id, kek)
    }

    #[tokio::test]
    async fn round_trip_and_binding() {
        let (p, id, _) = provider("kek-1");
        let blob = seal(&p, b"realm/1/totp/9", b"seed bytes").await.unwrap();
        assert_eq!(key_id_of(&blob).unwrap(), id);
        assert_eq!(blob.len(), 2 + 5 + NONCE_LEN + 10 + TAG_LEN);
        let opened = open(&p, b"realm/1/totp/9", &blob).await.unwrap();
        assert_eq!(opened.expose(), b"seed bytes");
        let moved = open(&p, b"realm/1/totp/8", &blob).await.unwrap_err();
        assert_eq!(moved, CryptoError::OpenFailed);
        for i in 0..blob.len() * 8 {
            let mut bad = blob.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(open(&p, b"realm/1/totp/9", &bad).await.is_err(), "bit {i}");
        }
        let again = seal(&p, b"realm/1/totp/9", b"seed bytes").await.unwrap();
        assert_ne!(blob, again, "random nonce per seal");
    }

    #[tokio::test]
    async fn rotation_and_reseal() {
        let (old, old_id, old_kek) = provider("kek-1");
        let blob = seal(&old, b"rk", b"secret").await.unwrap();
        let new_id = KeyId::new("kek-2").unwrap();
        let rotated = StaticKeyProvider::new(new_id.clone(), Kek::generate().unwrap())
            .with_retired(old_id, old_kek);
        assert_eq!(
            open(&rotated, b"rk", &blob).await.unwrap().expose(),
            b"secret"
        );
        let fresh = reseal(&rotated, b"rk", &blob).await.unwrap().unwrap();
        assert_eq!(key_id_of(&fresh).unwrap(), new_id);
        assert_eq!(
            open(&rotated, b"rk", &fresh).await.unwrap().expose(),
            b"secret"
        );
        assert_eq!(reseal(&rotated, b"rk", &fresh).await.unwrap(), None);
        let only_new = StaticKeyProvider::new(new_id, Kek::generate().unwrap());
        let err = open(&only_new, b"rk", &blob).await.unwrap_err();
        assert_eq!(err.code(), "CRYPTO_UNKNOWN_KEY");
    }

    #[tokio::test]
    async fn malformed_blobs_are_typed_errors() {
        let (p, _, _) = provider("k");
        for blob in [&b""[..], &[1], &[2, 1, b'k'], &[1, 1, b'k', 0, 0]] {
            let err = open(&p, b"rk", blob).await.unwrap_err();
            assert_eq!(err.code(), "CRYPTO_MALFORMED", "{blob:?}");
        }
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("has space").is_err());
        assert!(KeyId::new("x".repeat(65)).is_err());
        assert!(Kek::from_bytes(&[0; 31]).is_err());
        let printed = format!("{p:?}");
        assert!(printed.contains("Kek([redacted])"), "{printed}");
    }
}
