//! Group-key envelopes: a group key sealed to one device with HPKE.
//!
//! A front-end that holds a group key seals it to each member device's
//! X25519 public key with [`seal`]; the device opens it with [`open`] and its
//! private key. The server stores envelopes it cannot open, and checks their
//! format, recipient and key version with [`inspect`], which needs no secret.
//!
//! # Cipher suite
//!
//! HPKE (RFC 9180) **base mode** (`mode_base` = 0x00, no PSK, no sender
//! authentication) with:
//!
//! | part | algorithm | RFC 9180 id |
//! |---|---|---|
//! | KEM | DHKEM(X25519, HKDF-SHA256) | `kem_id` = 0x0020 |
//! | KDF | HKDF-SHA256 | `kdf_id` = 0x0001 |
//! | AEAD | ChaCha20-Poly1305 | `aead_id` = 0x0003 |
//!
//! One message is sealed per HPKE context (sequence number 0), i.e. RFC 9180
//! §6.1 `SealBase(pkR, info, aad, pt)` / `OpenBase(enc, skR, info, aad, ct)`.
//!
//! # Wire format, version 1
//!
//! All integers are big-endian. Offsets are in bytes.
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 1 | format version, `0x01` |
//! | 1 | 2 | `kem_id` = `0x0020` |
//! | 3 | 2 | `kdf_id` = `0x0001` |
//! | 5 | 2 | `aead_id` = `0x0003` |
//! | 7 | 4 | group key version (`u32`) |
//! | 11 | 32 | recipient fingerprint: SHA-256 of the recipient's 32-byte X25519 public key |
//! | 43 | 32 | `enc`: the HPKE encapsulated key (the sender's ephemeral X25519 public key) |
//! | 75 | n + 16 | HPKE ciphertext of the n-byte group key (ChaCha20-Poly1305 output, tag last) |
//!
//! Bytes 0..75 are the **header** ([`HEADER_LEN`]). The whole envelope is
//! `HEADER_LEN + n + 16` bytes, with 1 ≤ n ≤ [`MAX_GROUP_KEY_LEN`].
//!
//! # Binding
//!
//! * `info` (fixed 72 bytes) = ASCII `"keystead/envelope/v1"` (20 bytes) ‖
//!   realm id (16) ‖ group id (16) ‖ key version (`u32`, 4) ‖ recipient
//!   device id (16). Ids are the 16 bytes of their UUID (RFC 9562 byte
//!   order, as [`RealmId::to_bytes`] returns).
//! * `aad` = the 75-byte header.
//!
//! So an envelope fails to open for another realm, group, key version or
//! device (different `info`, different key schedule), and any change to the
//! header (format, suite, version, fingerprint, `enc`) fails authentication.
//!
//! # Checks
//!
//! [`inspect`] rejects a wrong length, an unknown format version or suite,
//! and an `enc` of small order. [`open`] additionally rejects an envelope
//! whose fingerprint is not the opener's key ([`CryptoError::WrongRecipient`])
//! or whose version is not the expected one
//! ([`CryptoError::KeyVersionMismatch`]) before doing any HPKE work.
//! Recipient public keys are validated when parsed ([`DevicePublicKey`]).
//!
//! [`RealmId::to_bytes`]: crate::id::RealmId::to_bytes

use super::{CryptoError, DevicePublicKey, DeviceSecretKey, KeyFingerprint, X25519_KEY_LEN};
use crate::id::{DeviceId, GroupId, RealmId};
use crate::secret::SecretBytes;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, HpkeError, OpModeR, OpModeS, Serializable};
use std::convert::Infallible;
use zeroize::Zeroizing;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The only format version this code writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// `kem_id ‖ kdf_id ‖ aead_id` as they appear at offset 1 of an envelope.
pub const SUITE_ID: [u8; 6] = [0x00, 0x20, 0x00, 0x01, 0x00, 0x03];
/// The ASCII label that starts `info`.
pub const INFO_LABEL: &[u8] = b"keystead/envelope/v1";
/// Length of the header (format, suite, version, fingerprint, `enc`).
pub const HEADER_LEN: usize = 1 + 6 + 4 + 32 + X25519_KEY_LEN;
/// Length of the ChaCha20-Poly1305 tag that ends the ciphertext.
pub const TAG_LEN: usize = 16;
/// The largest group key an envelope carries, in bytes.
pub const MAX_GROUP_KEY_LEN: usize = 1024;

const OFF_VERSION: usize = 7;
const OFF_FINGERPRINT: usize = 11;
const OFF_ENC: usize = 43;

/// What an envelope is bound to. Opening with any field changed fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnvelopeContext {
    /// The realm the group lives in.
    pub realm: RealmId,
    /// The device group whose key is sealed.
    pub group: GroupId,
    /// The group key's version (it increases on every rotation).
    pub key_version: u32,
    /// The device the envelope is addressed to.
    pub recipient: DeviceId,
}

impl EnvelopeContext {
    /// The 72-byte HPKE `info` string for this context (see module docs).
    pub fn info(&self) -> [u8; 72] {
        let mut info = [0u8; 72];
        info[..20].copy_from_slice(INFO_LABEL);
        info[20..36].copy_from_slice(&self.realm.to_bytes());
        info[36..52].copy_from_slice(&self.group.to_bytes());
        info[52..56].copy_from_slice(&self.key_version.to_be_bytes());
        info[56..72].copy_from_slice(&self.recipient.to_bytes());
        info
    }
}

/// What anyone can learn from an envelope without a secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The format version (always [`FORMAT_V1`] for a header that parsed).
    pub format: u8,
    /// The group key version the envelope claims.
    pub key_version: u32,
    /// SHA-256 of the recipient's public key.
    pub recipient: KeyFingerprint,
    /// Length of the sealed group key in bytes.
    pub group_key_len: usize,
}

fn malformed(reason: impl Into<String>) -> CryptoError {
    CryptoError::Malformed {
        what: "envelope",
        reason: reason.into(),
    }
}

/// Parse and check an envelope's header without any secret.
///
/// Fails with [`CryptoError::Malformed`] for a wrong length, unknown format
/// version or suite, and [`CryptoError::InvalidPublicKey`] for an `enc` of
/// small order.
pub fn inspect(envelope: &[u8]) -> Result<EnvelopeHeader, CryptoError> {
    let Some(header) = envelope.get(..HEADER_LEN) else {
        return Err(malformed(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            envelope.len()
        )));
    };
    if header[0] != FORMAT_V1 {
        return Err(malformed(format!(
            "unsupported format version {:#04x}",
            header[0]
        )));
    }
    if header[1..OFF_VERSION] != SUITE_ID {
        return Err(malformed("unsupported HPKE cipher suite"));
    }
    let ct_len = envelope.len() - HEADER_LEN;
    if ct_len <= TAG_LEN || ct_len - TAG_LEN > MAX_GROUP_KEY_LEN {
        return Err(malformed(format!(
            "ciphertext of {ct_len} bytes; expected 1 to {MAX_GROUP_KEY_LEN} bytes plus a {TAG_LEN}-byte tag"
        )));
    }
    DevicePublicKey::from_bytes(&header[OFF_ENC..HEADER_LEN])?;
    let mut version = [0u8; 4];
    version.copy_from_slice(&header[OFF_VERSION..OFF_FINGERPRINT]);
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&header[OFF_FINGERPRINT..OFF_ENC]);
    Ok(EnvelopeHeader {
        format: header[0],
        key_version: u32::from_be_bytes(version),
        recipient: KeyFingerprint(fingerprint),
        group_key_len: ct_len - TAG_LEN,
    })
}

/// Seal `group_key` (1 to [`MAX_GROUP_KEY_LEN`] bytes) to `recipient`,
/// bound to `context`. Each call uses a fresh ephemeral key, so sealing the
/// same key twice gives different envelopes.
pub fn seal(
    group_key: &SecretBytes,
    recipient: &DevicePublicKey,
    context: &EnvelopeContext,
) -> Result<Vec<u8>, CryptoError> {
    if group_key.is_empty() || group_key.len() > MAX_GROUP_KEY_LEN {
        return Err(CryptoError::InvalidInput {
            field: "group_key",
            reason: format!(
                "{} bytes; a group key is 1 to {MAX_GROUP_KEY_LEN} bytes",
                group_key.len()
            ),
        });
    }
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.to_bytes()).map_err(|_| {
        CryptoError::InvalidPublicKey {
            reason: "not an X25519 public key",
        }
    })?;
    let mut rng = SeededRng::from_system()?;
    // The ephemeral key comes from the RNG, so `enc` is known only after
    // encapsulation; the header (the AAD) needs it, hence the two steps.
    let (enc, mut sender) = hpke::setup_sender_with_rng::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        &pk,
        &context.info(),
        &mut rng,
    )
    .map_err(|e| match e {
        HpkeError::EncapError => CryptoError::InvalidPublicKey {
            reason: "the point has small order (the shared secret would be all zeros)",
        },
        _ => CryptoError::SealFailed,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + group_key.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&SUITE_ID);
    out.extend_from_slice(&context.key_version.to_be_bytes());
    out.extend_from_slice(&recipient.fingerprint().0);
    out.extend_from_slice(&enc.to_bytes());
    let ciphertext = sender
        .seal(group_key.expose(), &out)
        .map_err(|_| CryptoError::SealFailed)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Open an envelope with the recipient device's secret key and the context
/// it is expected to be bound to.
///
/// Checks the header ([`inspect`]), that the envelope is addressed to
/// `recipient`'s public key and carries `context.key_version`, then opens it.
/// Any other mismatch (realm, group, device) or alteration gives
/// [`CryptoError::OpenFailed`].
pub fn open(
    envelope: &[u8],
    recipient: &DeviceSecretKey,
    context: &EnvelopeContext,
) -> Result<SecretBytes, CryptoError> {
    let header = inspect(envelope)?;
    if header.recipient != recipient.public_key().fingerprint() {
        return Err(CryptoError::WrongRecipient);
    }
    if header.key_version != context.key_version {
        return Err(CryptoError::KeyVersionMismatch {
            expected: context.key_version,
            found: header.key_version,
        });
    }
    let (aad, ciphertext) = envelope.split_at(HEADER_LEN);
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(recipient.as_bytes()).map_err(|_| {
        CryptoError::InvalidSecretKey {
            reason: "not an X25519 secret key",
        }
    })?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&aad[OFF_ENC..HEADER_LEN])
        .map_err(|_| malformed("enc is not an X25519 public key"))?;
    let plaintext = hpke::single_shot_open::<Aead, Kdf, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        &context.info(),
        ciphertext,
        aad,
    )
    .map_err(|_| CryptoError::OpenFailed)?;
    Ok(SecretBytes::new(plaintext))
}

/// A CSPRNG for the HPKE crate, seeded once from `ring`'s `SystemRandom`.
///
/// HPKE's `rand_core` interface is infallible, so the fallible system read
/// happens up front (a failure is a typed error, not a panic). Output block
/// `i` is SHA-256(`"keystead/envelope-rng"` ‖ seed ‖ `i`); encapsulation
/// reads one 32-byte block.
struct SeededRng {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl SeededRng {
    fn from_system() -> Result<Self, CryptoError> {
        Ok(Self {
            seed: super::random_array::<32>()?,
            counter: 0,
            block: Zeroizing::new([0u8; 32]),
            used: 32,
        })
    }

    fn refill(&mut self) {
        let mut input = Zeroizing::new([0u8; 21 + 32 + 8]);
        input[..21].copy_from_slice(b"keystead/envelope-rng");
        input[21..53].copy_from_slice(self.seed.as_ref());
        input[53..].copy_from_slice(&self.counter.to_be_bytes());
        *self.block = super::sha256(input.as_ref());
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let mut filled = 0;
        while filled < dst.len() {
            if self.used == self.block.len() {
                self.refill();
            }
            let n = (dst.len() - filled).min(self.block.len() - self.used);
            dst[filled..filled + n].copy_from_slice(&self.block[self.used..self.used + n]);
            filled += n;
            self.used += n;
        }
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn context() -> EnvelopeContext {
        let now = Utc::now();
        EnvelopeContext {
            realm: RealmId::generate(now),
            group: GroupId::generate(now),
            key_version: 7,
            recipient: DeviceId::generate(now),
        }
    }

    #[test]
    fn round_trip_and_header() {
        let sk = DeviceSecretKey::generate().unwrap();
        let ctx = context();
        let key = SecretBytes::new(vec![42u8; 32]);
        let env = seal(&key, &sk.public_key(), &ctx).unwrap();
        assert_eq!(env.len(), HEADER_LEN + 32 + TAG_LEN);
        let header = inspect(&env).unwrap();
        assert_eq!(header.format, FORMAT_V1);
        assert_eq!(header.key_version, 7);
        assert_eq!(header.recipient, sk.public_key().fingerprint());
        assert_eq!(header.group_key_len, 32);
        assert_eq!(open(&env, &sk, &ctx).unwrap().expose(), key.expose());
        let again = seal(&key, &sk.public_key(), &ctx).unwrap();
        assert_ne!(env, again, "fresh ephemeral key per seal");
    }

    #[test]
    fn typed_errors() {
        let sk = DeviceSecretKey::generate().unwrap();
        let other = DeviceSecretKey::generate().unwrap();
        let ctx = context();
        let env = seal(&SecretBytes::new(vec![1; 16]), &sk.public_key(), &ctx).unwrap();
        assert_eq!(
            open(&env, &other, &ctx).unwrap_err(),
            CryptoError::WrongRecipient
        );
        let v8 = EnvelopeContext {
            key_version: 8,
            ..ctx
        };
        assert_eq!(
            open(&env, &sk, &v8).unwrap_err().code(),
            "CRYPTO_KEY_VERSION_MISMATCH"
        );
        assert_eq!(inspect(&env[..10]).unwrap_err().code(), "CRYPTO_MALFORMED");
        let mut bad = env.clone();
        bad[0] = 2;
        assert_eq!(inspect(&bad).unwrap_err().code(), "CRYPTO_MALFORMED");
        let mut low = env.clone();
        low[OFF_ENC..HEADER_LEN].fill(0);
        assert_eq!(
            inspect(&low).unwrap_err().code(),
            "CRYPTO_INVALID_PUBLIC_KEY"
        );
        let empty = seal(&SecretBytes::new(Vec::new()), &sk.public_key(), &ctx).unwrap_err();
        assert_eq!(empty.code(), "CRYPTO_INVALID_INPUT");
    }

    #[test]
    fn rng_blocks_differ() {
        let mut rng = SeededRng::from_system().unwrap();
        let mut a = [0u8; 40];
        rng.try_fill_bytes(&mut a).unwrap();
        let mut b = [0u8; 40];
        rng.try_fill_bytes(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
