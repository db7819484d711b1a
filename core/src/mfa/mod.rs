//! Multi-factor authentication: TOTP keys, replay-proof verification,
//! recovery codes and completion of the login's MFA challenge.
//!
//! Get a handle bound to one realm with [`Keystead::mfa`](crate::Keystead::mfa).
//!
//! # TOTP keys
//!
//! [`Mfa::create_totp_key`] makes a key in status
//! [`MfaKeyStatus::ActivationPending`] and returns its base32 secret and an
//! `otpauth://totp/…` URI (Google Authenticator key-URI format) exactly
//! once; the seed is stored sealed with the [`KeyProvider`](crate::crypto::at_rest::KeyProvider)
//! (AAD = the key record's storage key). [`Mfa::activate`] with a valid code
//! makes it [`MfaKeyStatus::Active`]. A pending key expires after
//! [`PENDING_TTL_SECS`]; a user has at most one live pending key and at most
//! [`MAX_ACTIVE_KEYS`] active ones. The user record's factor count (read by
//! login to ask for a second factor) is written in the same batch as every
//! activation and deletion of an active key.
//!
//! # Verification and replay
//!
//! Codes are checked for the current time step and one step either side
//! (±30 s by default), compared in constant time. The last accepted time
//! step is stored in the key record and advanced with a `Version`
//! compare-and-swap, so a code — or any code of an earlier or equal step —
//! is accepted at most once, even when two verifications race (exactly one
//! wins; the loser reloads, sees the step taken and fails). Every checked
//! code is first counted on the user's failed-login counter
//! ([`lockout`](crate::user::lockout)); a success clears it in the batch that
//! records the step. A throttled user gets `TOO_MANY_ATTEMPTS` before any
//! code is checked.
//!
//! Codes may be typed the way authenticator apps show them: the digits, or
//! the digits split into two groups by one ASCII space (`"123 456"`,
//! `"1234 5678"`). Anything else (other whitespace, signs, letters, wrong
//! length) is a `VALIDATION_FAILED` naming `code`, with nothing written.
//!
//! # Recovery codes
//!
//! [`Mfa::generate_recovery_codes`] returns [`RECOVERY_CODE_COUNT`] codes of
//! 80 random bits each, written as four groups of four Crockford base32
//! characters (`k3f9-0xq2-…`), shown once. Only a SHA-256 digest bound to
//! the realm and user is stored, under the user's current code generation;
//! regenerating moves the generation (compare-and-swap), so every earlier
//! code stops working at once. Burning a code deletes it with a `Version`
//! precondition: of concurrent burns of one code exactly one wins.
//!
//! # Storage
//!
//! Under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `mfa-key/<user>/<key id>` | `MfaKeyRecord` (status, params, sealed seed, last accepted step) |
//! | `mfa-pending/<user>` | the id of the user's pending key (at most one, `Absent`) |
//! | `mfa-recovery-set/<user>` | `RecoverySetRecord` (generation, remaining count) |
//! | `mfa-recovery/<user>/<generation>/<digest>` | `RecoveryCodeRecord` |
//! | `mfa-trusted/<user>/<device id>` | `TrustedDeviceRecord` ([`TrustedDevice`], token digest, epoch, generation) |
//! | `mfa-trusted-token/<SHA-256 of the token>` | user id ‖ device id: lookup by presented token |
//! | `mfa-trust/<user>` | `TrustGenerationRecord`: moves when an MFA key is deleted |

pub mod challenge;
pub mod recovery;
pub(crate) mod service;
pub mod trusted;

pub use crate::id::MfaKeyId;
pub use crate::user::ChallengePurpose;
pub use challenge::MfaAnswer;
pub use service::{Mfa, NewTotpKey};
pub use trusted::{NewTrustedDevice, TrustedDevice};

use crate::error::ValidationError;
use crate::id::{RealmId, UserId};
use crate::secret::SecretString;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// How long a key stays in activation before it expires (10 minutes).
pub const PENDING_TTL_SECS: i64 = 600;
/// The most active TOTP keys one user may hold.
pub const MAX_ACTIVE_KEYS: usize = 5;
/// How many recovery codes one generation holds.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Time steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;

/// A kind of answer to a login challenge. Names are stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MfaFactor {
    /// A code of an active TOTP key.
    Totp,
    /// A recovery code.
    Recovery,
    /// A trusted-device token ("remember this browser").
    TrustedDevice,
    /// A WebAuthn credential (security key or passkey).
    Webauthn,
}

impl MfaFactor {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaFactor::Totp => "totp",
            MfaFactor::Recovery => "recovery",
            MfaFactor::TrustedDevice => "trusted_device",
            MfaFactor::Webauthn => "webauthn",
        }
    }
}

/// What kind of factor a key is. Ids and names are stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MfaKeyType {
    /// Time-based one-time password (RFC 6238).
    Totp,
}

impl MfaKeyType {
    /// Every type, for listing.
    pub const ALL: [MfaKeyType; 1] = [MfaKeyType::Totp];

    /// The stable numeric id.
    pub fn id(self) -> u16 {
        match self {
            MfaKeyType::Totp => 1,
        }
    }

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaKeyType::Totp => "totp",
        }
    }
}

/// Where a key is in its lifecycle. Ids and names are stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MfaKeyStatus {
    /// Created; waits for a first valid code until it expires.
    ActivationPending,
    /// Usable as a second factor.
    Active,
}

impl MfaKeyStatus {
    /// Every status, for listing.
    pub const ALL: [MfaKeyStatus; 2] = [MfaKeyStatus::ActivationPending, MfaKeyStatus::Active];

    /// The stable numeric id. It follows the seeds' account API (001/002),
    /// whose activation call says "use 1 for ACTIVE": `1` active, `2`
    /// activation pending — so an HTTP layer passes it through unmapped.
    /// (Stored key records keep the status by variant, not by this id.)
    pub fn id(self) -> u16 {
        match self {
            MfaKeyStatus::Active => 1,
            MfaKeyStatus::ActivationPending => 2,
        }
    }

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaKeyStatus::ActivationPending => "activation_pending",
            MfaKeyStatus::Active => "active",
        }
    }
}

/// The HMAC of a TOTP key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1 (the default; what every authenticator app supports).
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth` URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    /// The seed length RFC 6238's reference code uses for this HMAC.
    pub fn seed_len(self) -> usize {
        match self {
            TotpAlgorithm::Sha1 => 20,
            TotpAlgorithm::Sha256 => 32,
            TotpAlgorithm::Sha512 => 64,
        }
    }

    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// How codes of a TOTP key are made: SHA-1, 6 digits, 30 s by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TotpParams {
    /// The HMAC.
    pub algorithm: TotpAlgorithm,
    /// Digits per code, 6 to 8.
    pub digits: u8,
    /// Seconds per time step, 15 to 300.
    pub period_secs: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period_secs: 30,
        }
    }
}

impl TotpParams {
    /// Check the documented ranges.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(6..=8).contains(&self.digits) {
            return Err(ValidationError::new("totp.digits", "6 to 8 digits"));
        }
        if !(15..=300).contains(&self.period_secs) {
            return Err(ValidationError::new(
                "totp.period_secs",
                "15 to 300 seconds",
            ));
        }
        Ok(())
    }
}

/// A TOTP key as callers see it (never holds the seed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaKey {
    /// Stable id.
    pub id: MfaKeyId,
    /// The owner.
    pub user: UserId,
    /// The owner's realm.
    pub realm: RealmId,
    /// The factor type.
    pub kind: MfaKeyType,
    /// Pending or active.
    pub status: MfaKeyStatus,
    /// How codes are made.
    pub params: TotpParams,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// While pending: when activation stops being possible.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// When a code of this key was last accepted.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl MfaKey {
    /// Whether the key is pending and its activation window has passed.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.status == MfaKeyStatus::ActivationPending && self.expires_at.is_some_and(|e| now >= e)
    }
}

/// Why an MFA operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MfaError {
    /// No key with that id for that user in this realm.
    #[error("MFA key not found")]
    KeyNotFound,
    /// The code is wrong, already used, or of an already used time step.
    #[error("invalid code")]
    InvalidCode,
    /// The user already has a pending key (activate or delete it first).
    #[error("a key is already pending activation")]
    PendingKeyExists,
    /// The user holds the maximum number of active keys.
    #[error("MFA key limit reached")]
    KeyLimitReached,
    /// The key is already active.
    #[error("MFA key is already active")]
    AlreadyActive,
    /// The key is still pending activation and can't verify codes.
    #[error("MFA key is not active")]
    KeyNotActive,
    /// The activation window of the pending key has passed.
    #[error("MFA key activation expired")]
    ActivationExpired,
    /// The user has no active factor that could answer.
    #[error("no active MFA factor")]
    NoActiveFactor,
    /// The realm requires MFA and the user has no active key yet: set one
    /// up with `create_totp_key` and `activate` first.
    #[error("MFA enrollment required")]
    EnrollmentRequired,
    /// A trusted device can only be remembered from a session that passed
    /// an MFA step.
    #[error("an MFA step is required")]
    MfaStepRequired,
    /// No trusted device with that id for that user.
    #[error("trusted device not found")]
    TrustedDeviceNotFound,
    /// The challenge does not accept this kind of answer: a factor it does
    /// not list, or an enrolment step on a second-factor challenge.
    #[error("this challenge does not accept that factor")]
    FactorNotAllowed,
}

impl MfaError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            MfaError::KeyNotFound => "MFA_KEY_NOT_FOUND",
            MfaError::InvalidCode => "MFA_INVALID_CODE",
            MfaError::PendingKeyExists => "MFA_PENDING_KEY_EXISTS",
            MfaError::KeyLimitReached => "MFA_KEY_LIMIT_REACHED",
            MfaError::AlreadyActive => "MFA_KEY_ALREADY_ACTIVE",
            MfaError::KeyNotActive => "MFA_KEY_NOT_ACTIVE",
            MfaError::ActivationExpired => "MFA_ACTIVATION_EXPIRED",
            MfaError::NoActiveFactor => "MFA_NO_ACTIVE_FACTOR",
            MfaError::EnrollmentRequired => "MFA_ENROLLMENT_REQUIRED",
            MfaError::MfaStepRequired => "MFA_STEP_REQUIRED",
            MfaError::TrustedDeviceNotFound => "TRUSTED_DEVICE_NOT_FOUND",
            MfaError::FactorNotAllowed => "MFA_FACTOR_NOT_ALLOWED",
        }
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub(crate) key: MfaKey,
    /// The seed, sealed at rest (AAD = this record's storage key).
    pub(crate) sealed_seed: Vec<u8>,
    /// The last accepted time step; no step ≤ it is accepted again.
    pub(crate) last_step: Option<u64>,
}

/// How a key is stored. Never change a released variant: add `V2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MfaKeyRecord {
    V1(StoredKey),
}

/// Parse a code as typed: `digits` ASCII digits, optionally split into two
/// groups by one space at the middle (`"123 456"`). Returns the bare digits.
pub fn parse_code(code: &str, digits: u8) -> Result<String, ValidationError> {
    let digits = usize::from(digits);
    let bad = || {
        ValidationError::new(
            "code",
            format!("{digits} digits, optionally split into two groups by one space"),
        )
    };
    let bare: String = match code.len() {
        n if n == digits => code.to_owned(),
        n if n == digits + 1 => {
            let mid = digits / 2;
            if code.as_bytes().get(mid) != Some(&b' ') {
                return Err(bad());
            }
            let (a, b) = code.split_at(mid);
            format!("{a}{}", &b[1..])
        }
        _ => return Err(bad()),
    };
    if bare.len() == digits && bare.bytes().all(|b| b.is_ascii_digit()) {
        Ok(bare)
    } else {
        Err(bad())
    }
}

/// The code an authenticator app shows at `unix_time` for a key with
/// `params` and the base32 secret from
/// [`create_totp_key`](Mfa::create_totp_key) — for front-ends, CLIs and tests
/// that act as the authenticator. Servers never need it: they verify with
/// [`Mfa::verify`].
pub fn totp_code(
    params: TotpParams,
    secret_base32: &str,
    unix_time: u64,
) -> Result<SecretString, ValidationError> {
    let seed = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|_| ValidationError::new("totp.secret", "not RFC 4648 base32"))?;
    let code = generator(params, seed.as_ref())?.generate(unix_time);
    Ok(SecretString::new(code.to_string()))
}

/// Build the totp-rs generator for a seed (skew handled here, not there).
pub(crate) fn generator(params: TotpParams, seed: &[u8]) -> Result<totp_rs::Totp, ValidationError> {
    params.validate()?;
    totp_rs::Builder::new()
        .with_algorithm(params.algorithm.to_totp_rs())
        .with_digits(params.digits)
        .with_step_duration(u64::from(params.period_secs))
        .with_skew(0)
        .with_secret(seed.to_vec())
        .build()
        .map_err(|e| ValidationError::new("totp.seed", e.to_string()))
}

/// The pure verification rule: the time step in `[now − 1, now + 1]` whose
/// code equals `code` (compared in constant time, every candidate checked)
/// and which is later than `last_step`; `None` if there is none.
pub(crate) fn match_step(
    totp: &totp_rs::Totp,
    period: u64,
    code: &str,
    now: DateTime<Utc>,
    last_step: Option<u64>,
) -> Option<u64> {
    let unix = u64::try_from(now.timestamp()).ok()?;
    let current = unix / period.max(1);
    let mut found = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let Some(time) = step.checked_mul(period) else {
            continue;
        };
        let expected = totp.generate(time).to_string();
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let fresh = last_step.is_none_or(|last| step > last);
        if equal && fresh {
            found = Some(step);
        }
    }
    found
}

/// The keys of one realm's MFA data.
pub(crate) mod keys {
    use crate::id::{MfaKeyId, RealmId, TrustedDeviceId, UserId};
    use crate::realm::service::data_prefix;
    use crate::store::key::Key;

    pub(crate) fn user_keys(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm).push("mfa-key").push(user.to_bytes())
    }
    pub(crate) fn key(realm: RealmId, user: UserId, id: MfaKeyId) -> Key {
        user_keys(realm, user).push(id.to_bytes())
    }
    pub(crate) fn pending(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm).push("mfa-pending").push(user.to_bytes())
    }
    pub(crate) fn recovery_set(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm)
            .push("mfa-recovery-set")
            .push(user.to_bytes())
    }
    pub(crate) fn recovery_generation(realm: RealmId, user: UserId, generation: u32) -> Key {
        data_prefix(realm)
            .push("mfa-recovery")
            .push(user.to_bytes())
            .push(generation.to_be_bytes())
    }
    pub(crate) fn trusted_devices(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm).push("mfa-trusted").push(user.to_bytes())
    }
    pub(crate) fn trusted_device(realm: RealmId, user: UserId, id: TrustedDeviceId) -> Key {
        trusted_devices(realm, user).push(id.to_bytes())
    }
    pub(crate) fn trusted_token(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("mfa-trusted-token").push(digest)
    }
    pub(crate) fn trust_generation(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm).push("mfa-trust").push(user.to_bytes())
    }
    pub(crate) fn recovery_code(
        realm: RealmId,
        user: UserId,
        generation: u32,
        digest: &[u8; 32],
    ) -> Key {
        recovery_generation(realm, user, generation).push(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_as_apps_show_them() {
        assert_eq!(parse_code("123456", 6).unwrap(), "123456");
        assert_eq!(parse_code("123 456", 6).unwrap(), "123456");
        assert_eq!(parse_code("1234 5678", 8).unwrap(), "12345678");
        assert_eq!(parse_code("123 4567", 7).unwrap(), "1234567");
        for bad in [
            "",
            "12345",
            "1234567",
            "12 3456",
            "123  456",
            " 123456",
            "123456 ",
            "123\t456",
            "123\u{a0}456",
            "+12345",
            "-12345",
            "12345a",
            "１２３４５６",
            "123 45",
        ] {
            assert_eq!(parse_code(bad, 6).unwrap_err().field, "code", "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The pure rule: over random clock moves and code offsets, an
        /// accepted step is within ±1 of now, later than every earlier one,
        /// and a code of step ±2 or of a used step is never accepted.
        #[test]
        fn match_step_never_accepts_a_step_twice(
            ops in proptest::collection::vec((0i64..90, -3i64..=3), 1..60)
        ) {
            let params = TotpParams::default();
            let totp = generator(params, b"12345678901234567890").unwrap();
            let mut now = 1_750_000_000i64;
            let mut last: Option<u64> = None;
            for (advance, off) in ops {
                now += advance;
                let current = u64::try_from(now / 30).unwrap();
                let step = current.checked_add_signed(off).unwrap();
                let code = totp.generate(step * 30).to_string();
                let at = DateTime::from_timestamp(now, 0).unwrap();
                if let Some(got) = match_step(&totp, 30, &code, at, last) {
                    proptest::prop_assert!(got.abs_diff(current) <= 1);
                    proptest::prop_assert!(last.is_none_or(|l| got > l));
                    last = Some(got);
                } else {
                    let fresh = last.is_none_or(|l| step > l);
                    // Refused: out of the window, or not fresh (a collision
                    // of two steps' codes is the only other possibility).
                    proptest::prop_assert!(off.abs() > 1 || !fresh);
                }
            }
        }
    }

    #[test]
    fn ids_are_stable() {
        assert_eq!(MfaKeyType::Totp.id(), 1);
        assert_eq!(MfaKeyType::Totp.as_str(), "totp");
        assert_eq!(MfaKeyStatus::Active.id(), 1);
        assert_eq!(
            MfaKeyStatus::ActivationPending.as_str(),
            "activation_pending"
        );
        assert_eq!(MfaKeyStatus::ActivationPending.id(), 2);
        assert_eq!(MfaKeyStatus::Active.as_str(), "active");
    }

    #[test]
    fn params_are_validated() {
        TotpParams::default().validate().unwrap();
        for bad in [
            TotpParams {
                digits: 5,
                ..TotpParams::default()
            },
            TotpParams {
                digits: 9,
                ..TotpParams::default()
            },
            TotpParams {
                period_secs: 0,
                ..TotpParams::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::mfa::recovery::{RecoveryCodeRecord, RecoverySetRecord};

    fn id_bytes(last: u8) -> [u8; 16] {
        [
            0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
        ]
    }

    #[test]
    fn key_record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let record = MfaKeyRecord::V1(StoredKey {
            key: MfaKey {
                id: MfaKeyId::from_bytes(id_bytes(7)).unwrap(),
                user: UserId::from_bytes(id_bytes(2)).unwrap(),
                realm: RealmId::from_bytes(id_bytes(1)).unwrap(),
                kind: MfaKeyType::Totp,
                status: MfaKeyStatus::Active,
                params: TotpParams::default(),
                created_at: at,
                expires_at: None,
                activated_at: Some(at),
                last_used_at: Some(at),
            },
            sealed_seed: vec![1, 2, 3],
            last_step: Some(56_666_666),
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe568007000800000000000000710018bcfe568007000800000000000000210018bcfe5680070008000000000000001000100061e14323032332d31312d31345432323a31333a32305a000114323032332d31312d31345432323a31333a32305a0114323032332d31312d31345432323a31333a32305a0301020301aad4821b",
        );
    }

    #[test]
    fn recovery_records_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        crate::store::record::assert_golden(
            &RecoverySetRecord::V1 {
                generation: 2,
                remaining: 9,
                created_at: at,
            },
            "0100020914323032332d31312d31345432323a31333a32305a",
        );
        crate::store::record::assert_golden(
            &RecoveryCodeRecord::V1 { created_at: at },
            "010014323032332d31312d31345432323a31333a32305a",
        );
    }

    #[test]
    fn trusted_device_records_golden_bytes() {
        use crate::id::TrustedDeviceId;
        use crate::mfa::trusted::{TrustGenerationRecord, TrustedDeviceRecord};
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        crate::store::record::assert_golden(
            &TrustedDeviceRecord::V1 {
                device: TrustedDevice {
                    id: TrustedDeviceId::from_bytes(id_bytes(9)).unwrap(),
                    user: UserId::from_bytes(id_bytes(2)).unwrap(),
                    label: "Firefox".into(),
                    created_at: at,
                    last_used_at: None,
                    expires_at: at,
                },
                digest: [7; 32],
                epoch: 1,
                generation: 2,
            },
            "010010018bcfe568007000800000000000000910018bcfe56800700080000000000000020746697265666f7814323032332d31312d31345432323a31333a32305a0014323032332d31312d31345432323a31333a32305a07070707070707070707070707070707070707070707070707070707070707070102",
        );
        crate::store::record::assert_golden(&TrustGenerationRecord::V1 { generation: 3 }, "010003");
    }
}
