//! Registered credentials: what keystead keeps of each passkey, how it is
//! stored, and how callers name one.

use super::MAX_LABEL_CHARS;
use crate::error::ValidationError;
use crate::id::{RealmId, UserId};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest credential id WebAuthn allows (bytes).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// A WebAuthn credential id (the authenticator's `rawId`), shown and parsed
/// as unpadded base64url — the `id` a browser reports.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId(Vec<u8>);

impl CredentialId {
    /// A credential id from its bytes: 1 to [`MAX_CREDENTIAL_ID_LEN`].
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Result<Self, ValidationError> {
        let bytes = bytes.into();
        if bytes.is_empty() || bytes.len() > MAX_CREDENTIAL_ID_LEN {
            return Err(ValidationError::new(
                "credential_id",
                format!("1 to {MAX_CREDENTIAL_ID_LEN} bytes"),
            ));
        }
        Ok(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The SHA-256 of the id: its storage-key segment, fixed-size whatever
    /// the id's length.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({self})")
    }
}

impl FromStr for CredentialId {
    type Err = ValidationError;

    /// Parse unpadded base64url (trailing `=` padding is tolerated).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| ValidationError::new("credential_id", "not base64url"))?;
        Self::from_bytes(bytes)
    }
}

impl Serialize for CredentialId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for CredentialId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let bytes = <Vec<u8>>::deserialize(deserializer)?;
            Self::from_bytes(bytes).map_err(D::Error::custom)
        }
    }
}

/// A registered credential as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebauthnCredential {
    /// The authenticator's credential id.
    pub id: CredentialId,
    /// The owner.
    pub user: UserId,
    /// The owner's realm.
    pub realm: RealmId,
    /// The user's name for it ("YubiKey 5", "Work laptop").
    pub label: String,
    /// The COSE algorithm of its public key (`-7` ES256, `-8` EdDSA, `-257`
    /// RS256); the key itself is kept with the stored passkey.
    pub algorithm: i64,
    /// The last accepted signature counter (0 for authenticators without
    /// one, which most synced passkeys are).
    pub sign_count: u32,
    /// Transport hints the authenticator reported (`usb`, `nfc`, `ble`,
    /// `internal`, `hybrid`); not a security property.
    pub transports: Vec<String>,
    /// BE flag: the key may be synced or backed up (see the `amr` rule in
    /// the [module docs](super)).
    pub backup_eligible: bool,
    /// BS flag: the key is currently backed up or synced.
    pub backup_state: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last verified an assertion.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When a sign-count regression flagged it; a flagged credential is
    /// refused.
    pub flagged_at: Option<DateTime<Utc>>,
}

/// A credential as stored: the view plus webauthn-rs's passkey (public key,
/// counter, flags) as its own JSON, which that crate keeps readable across
/// its releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCredential {
    pub(crate) credential: WebauthnCredential,
    pub(crate) passkey: Vec<u8>,
}

/// How a credential is stored. Never change a released variant: add `V2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CredentialRecord {
    V1(StoredCredential),
}

/// Check a label: 1 to [`MAX_LABEL_CHARS`] characters, no control
/// characters, not only whitespace. Returns it trimmed.
pub fn validate_label(label: &str) -> Result<String, ValidationError> {
    let trimmed = label.trim();
    let chars = trimmed.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS || trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "label",
            format!("1 to {MAX_LABEL_CHARS} characters, no control characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// The wire name of a transport hint (`usb`, `nfc`, `ble`, `internal`,
/// `hybrid`, …): webauthn-rs's own lower-case serde name, so an unnamed
/// transport type needs no mirror enum here.
pub(crate) fn transport_name<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_round_trip_as_base64url() {
        let id = CredentialId::from_bytes(vec![0xfb, 0xff, 0x00, 1]).unwrap();
        assert_eq!(id.to_string(), "-_8AAQ");
        assert_eq!("-_8AAQ".parse::<CredentialId>().unwrap(), id);
        assert_eq!("-_8AAQ==".parse::<CredentialId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"-_8AAQ\"");
        assert_eq!(serde_json::from_str::<CredentialId>(&json).unwrap(), id);
        for bad in ["", "+/8AAQ", "a b", "é"] {
            assert_eq!(
                bad.parse::<CredentialId>().unwrap_err().field,
                "credential_id"
            );
        }
        assert!(CredentialId::from_bytes(vec![0; MAX_CREDENTIAL_ID_LEN + 1]).is_err());
        assert_ne!(
            id.digest(),
            CredentialId::from_bytes(vec![1]).unwrap().digest()
        );
    }

    #[test]
    fn labels() {
        assert_eq!(validate_label("  YubiKey 5 ").unwrap(), "YubiKey 5");
        assert_eq!(validate_label(&"é".repeat(64)).unwrap().chars().count(), 64);
        for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
            assert_eq!(validate_label(bad).unwrap_err().field, "label", "{bad:?}");
        }
    }

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |last: u8| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let record = CredentialRecord::V1(StoredCredential {
            credential: WebauthnCredential {
                id: CredentialId::from_bytes(vec![9, 9, 9]).unwrap(),
                user: UserId::from_bytes(id(2)).unwrap(),
                realm: RealmId::from_bytes(id(1)).unwrap(),
                label: "Key".into(),
                algorithm: -7,
                sign_count: 3,
                transports: vec!["usb".into()],
                backup_eligible: false,
                backup_state: false,
                created_at: at,
                last_used_at: Some(at),
                flagged_at: None,
            },
            passkey: b"{}".to_vec(),
        });
        crate::store::record::assert_golden(
            &record,
            "01000309090910018bcfe568007000800000000000000210018bcfe5680070008000000000000001034b65790d030103757362000014323032332d31312d31345432323a31333a32305a0114323032332d31312d31345432323a31333a32305a00027b7d",
        );
    }
}
