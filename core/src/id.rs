//! Typed identifiers.
//!
//! Every entity has its own id type, so a `DeviceId` can never be passed where
//! a `UserId` is expected. Ids are UUID v7: the first 48 bits are the creation
//! time in milliseconds, so ids sort by creation in keys and listings, and the
//! remaining 74 bits come from `ring`'s system CSPRNG. The timestamp comes from
//! the caller's [`Clock`](crate::clock::Clock), never from the system clock
//! behind its back. The inner UUID is private: ids are made by [`generate`],
//! parsed from strings, or decoded from the 16 bytes used in storage keys.
//!
//! In human-readable formats (JSON) an id is its hyphenated string; in binary
//! formats (stored records) it is its 16 bytes.
//!
//! [`generate`]: RealmId::generate

use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A string or byte sequence that is not a valid id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdParseError {
    /// Which id type was being parsed (`"RealmId"`, …).
    pub kind: &'static str,
    /// What was wrong with the input.
    pub reason: &'static str,
}

/// Fresh UUID v7 bytes: `now` in milliseconds plus 74 random bits.
fn new_v7(now: DateTime<Utc>) -> Uuid {
    let mut random = [0u8; 10];
    SystemRandom::new()
        .fill(&mut random)
        .expect("the operating system's CSPRNG failed; no safe id can be made");
    // UUID v7 holds 48 bits of milliseconds since the epoch; times before the
    // epoch clamp to zero instead of wrapping around.
    let millis = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

fn parse_v7(kind: &'static str, uuid: Uuid) -> Result<Uuid, IdParseError> {
    if uuid.get_version_num() == 7 {
        Ok(uuid)
    } else {
        Err(IdParseError {
            kind,
            reason: "not a UUID version 7",
        })
    }
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random id stamped with `now` (read from the service's clock).
            ///
            /// Panics only if the operating system's CSPRNG fails, when no
            /// safe id (or key, or token) can be made at all.
            pub fn generate(now: DateTime<Utc>) -> Self {
                Self(new_v7(now))
            }

            /// The 16 bytes used in storage keys; they sort by creation time.
            pub fn to_bytes(self) -> [u8; 16] {
                *self.0.as_bytes()
            }

            /// Decode the 16 storage-key bytes; rejects anything but UUID v7.
            pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdParseError> {
                parse_v7(stringify!($name), Uuid::from_bytes(bytes)).map(Self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let uuid = Uuid::try_parse(s).map_err(|_| IdParseError {
                    kind: stringify!($name),
                    reason: "not a UUID",
                })?;
                parse_v7(stringify!($name), uuid).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(self.0.as_bytes())
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                if deserializer.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                    s.parse().map_err(D::Error::custom)
                } else {
                    let bytes = <serde_bytes_16::Bytes16>::deserialize(deserializer)?;
                    Self::from_bytes(bytes.0).map_err(D::Error::custom)
                }
            }
        }
    };
}

/// Deserializes exactly 16 bytes from a binary format without a helper crate.
mod serde_bytes_16 {
    use serde::de::{Error, Visitor};
    use std::fmt;

    pub(super) struct Bytes16(pub(super) [u8; 16]);

    impl<'de> serde::Deserialize<'de> for Bytes16 {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Bytes16;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("16 id bytes")
                }
                fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes16, E> {
                    v.try_into()
                        .map(Bytes16)
                        .map_err(|_| E::invalid_length(v.len(), &self))
                }
            }
            deserializer.deserialize_bytes(V)
        }
    }
}

define_id!(
    /// A realm (tenant): every other record lives under one.
    RealmId
);
define_id!(
    /// A user account inside a realm.
    UserId
);
define_id!(
    /// A device group sharing one end-to-end-encrypted group key.
    GroupId
);
define_id!(
    /// A device enrolled in a group.
    DeviceId
);
define_id!(
    /// A login session (the parent of its refresh-token family).
    SessionId
);
define_id!(
    /// An MFA credential (TOTP key, WebAuthn credential, …).
    MfaKeyId
);
define_id!(
    /// A device's request for the current group key.
    KeyRequestId
);
define_id!(
    /// A token-signing key (its `kid`).
    SigningKeyId
);
define_id!(
    /// A refresh-token family: every token rotated from one grant.
    TokenFamilyId
);
define_id!(
    /// A magic link (the id half; the secret half is only stored hashed).
    MagicLinkId
);
define_id!(
    /// An application token (the secret itself is never stored).
    AppTokenId
);
define_id!(
    /// A pending MFA login challenge.
    ChallengeId
);
define_id!(
    /// A trusted ("remember this browser") device of a user.
    TrustedDeviceId
);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn string_round_trip_and_kind_in_errors() {
        let id = UserId::generate(at(1_700_000_000));
        let parsed: UserId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let err = "nope".parse::<UserId>().unwrap_err();
        assert_eq!(err.kind, "UserId");
        // A valid UUID of another version is refused.
        let v4 = "0b7a4ab4-1a43-4c55-9d1f-6f0f3f63a9c1"
            .parse::<DeviceId>()
            .unwrap_err();
        assert_eq!(v4.reason, "not a UUID version 7");
    }

    #[test]
    fn ids_sort_by_creation_time() {
        let earlier = RealmId::generate(at(1_700_000_000));
        let later = RealmId::generate(at(1_700_000_001));
        assert!(earlier.to_bytes() < later.to_bytes());
        assert!(earlier < later);
    }

    #[test]
    fn serde_is_string_in_json_and_bytes_in_postcard() {
        let id = DeviceId::generate(at(1_700_000_000));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
        let bin = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bin.len(), 17, "length prefix + 16 bytes");
        assert_eq!(postcard::from_bytes::<DeviceId>(&bin).unwrap(), id);
        assert!(postcard::from_bytes::<DeviceId>(&[3, 1, 2, 3]).is_err());
    }

    #[test]
    fn debug_names_the_kind() {
        let id = GroupId::generate(at(0));
        assert!(format!("{id:?}").starts_with("GroupId("));
    }
}
