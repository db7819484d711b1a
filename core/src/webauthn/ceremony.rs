//! Ceremony state between its two calls: stored under the challenge id,
//! single use, expiring.

use crate::id::{ChallengeId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a ceremony is for, with webauthn-rs's serialised state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CeremonyKind {
    /// Registration of a new credential for `user` (`PasskeyRegistration`).
    Registration { user: UserId, state: Vec<u8> },
    /// Authentication of `user` with one of their credentials
    /// (`PasskeyAuthentication`).
    Authentication { user: UserId, state: Vec<u8> },
    /// Usernameless authentication: the credential names its user
    /// (`DiscoverableAuthentication`).
    Discoverable { state: Vec<u8> },
}

/// A pending ceremony.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ceremony {
    pub(crate) id: ChallengeId,
    pub(crate) kind: CeremonyKind,
    pub(crate) created_at: DateTime<Utc>,
    /// From this instant on the ceremony is refused (expiry is data: the
    /// record may outlive it).
    pub(crate) expires_at: DateTime<Utc>,
}

impl Ceremony {
    /// Whether the ceremony's time has run out at `now`.
    pub(crate) fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }
}

/// How a ceremony is stored. Never change a released variant: add `V2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CeremonyRecord {
    V1(Ceremony),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_boundary() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let c = Ceremony {
            id: ChallengeId::generate(at),
            kind: CeremonyKind::Discoverable { state: vec![] },
            created_at: at,
            expires_at: at + chrono::Duration::seconds(300),
        };
        assert!(!c.is_expired(at + chrono::Duration::seconds(299)));
        assert!(c.is_expired(at + chrono::Duration::seconds(300)));
    }

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |last: u8| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let record = CeremonyRecord::V1(Ceremony {
            id: ChallengeId::from_bytes(id(5)).unwrap(),
            kind: CeremonyKind::Authentication {
                user: UserId::from_bytes(id(2)).unwrap(),
                state: b"{}".to_vec(),
            },
            created_at: at,
            expires_at: at + chrono::Duration::seconds(300),
        });
        crate::store::record::assert_golden(
            &record,
            "010010018bcfe56800700080000000000000050110018bcfe5680070008000000000000002027b7d14323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31383a32305a",
        );
    }
}
