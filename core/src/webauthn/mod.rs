//! WebAuthn / passkeys: registration and authentication ceremonies, as a
//! second factor and as passwordless login.
//!
//! Get a handle bound to one realm with
//! [`Keystead::webauthn`](crate::Keystead::webauthn). The cryptography —
//! CBOR, COSE keys, attestation objects, signatures, origin and rp-id
//! checks — is `webauthn-rs` 0.5's; this module owns what it leaves to the
//! relying party: where ceremony state lives, single use, expiry, which
//! credentials a user owns, sign counters and what a successful assertion
//! proves.
//!
//! # Relying party
//!
//! Each realm has its own relying party ([`RelyingParty`]: rp id, name, the
//! allowed origins, whether passkeys may log in without a password), set
//! with [`Webauthn::configure`]. It is a record of this module rather than
//! a field of [`RealmSettings`](crate::realm::RealmSettings), so realm
//! records keep their format. Until it is set, every ceremony fails with
//! `WEBAUTHN_NOT_CONFIGURED`.
//!
//! # Ceremonies
//!
//! [`Webauthn::create_options`] and [`Webauthn::request_options`] return the
//! `PublicKeyCredentialCreationOptions` / `…RequestOptions` JSON for
//! `navigator.credentials.create/get` together with a
//! [`ChallengeId`](crate::id::ChallengeId), and store the ceremony state
//! (webauthn-rs's, serialised) under that id. The state expires
//! [`CEREMONY_TTL_SECS`] after it was made, by the injected clock. It is
//! single use: finishing a ceremony deletes it with a `Version`
//! precondition in the same batch that saves the credential or records the
//! new sign count, so of two finishes with the same challenge exactly one
//! succeeds and the other gets `WEBAUTHN_CHALLENGE_NOT_FOUND`. A response
//! that fails verification writes nothing (the ceremony stays usable until
//! it expires: a forged signature can't be guessed, so there is nothing to
//! throttle).
//!
//! # Credentials
//!
//! [`Webauthn::create`] verifies an attestation and saves a
//! [`WebauthnCredential`]: its id, public key (inside the stored passkey),
//! sign count, transports, backup flags, a label and when it was created
//! and last used. A credential id is registered at most once per realm (an
//! index key written with `Absent`), and new registrations exclude the
//! user's existing credentials. A user holds at most [`MAX_CREDENTIALS`]
//! (checked when options are made and again on `create`; it bounds storage
//! per user, so registrations racing past it by the few in flight are
//! tolerated rather than serialised on a counter record).
//! [`Webauthn::list`], [`Webauthn::rename`] and [`Webauthn::delete`] manage
//! them.
//!
//! # Authentication and `amr`
//!
//! [`Webauthn::authenticate`] is passwordless login: it needs the realm's
//! [`RelyingParty::passwordless`] and accepts both user-bound and
//! discoverable (usernameless) ceremonies; [`Webauthn::login`] is the same
//! check that also opens the user's session in the commit that spends the
//! ceremony (methods `hwk` or `swk`), for embedders that issue tokens.
//! [`Webauthn::authenticate_for_user`] is the second-factor check that the
//! login's MFA challenge calls for the user who passed the password. Both
//! return a [`WebauthnAssertion`] with the user, the updated credential and
//! the `amr` value it proves ([`PasskeyAmr`], RFC 8176):
//!
//! * `swk` when the authenticator reports the credential **backup
//!   eligible** (BE flag): its private key may be synced or exported, so it
//!   is a software-protected key;
//! * `hwk` when it is not: the key is bound to one authenticator.
//!
//! Passkey registration asks for no attestation, so `hwk` rests on the
//! authenticator's signed flags, not on a vendor certificate.
//!
//! Every ceremony requires user verification (webauthn-rs's passkey policy):
//! a passkey alone is two factors, the device and its PIN or biometric.
//!
//! # Sign counters
//!
//! When the presented or the stored sign count is non-zero, the presented
//! one must be greater than the stored one. If it is not, a copy of the key
//! may exist elsewhere (a cloned authenticator): the assertion fails with
//! `WEBAUTHN_SIGN_COUNT_REGRESSION` and the credential is flagged
//! ([`WebauthnCredential::flagged_at`]) in a persisted write; a flagged
//! credential is refused with `WEBAUTHN_CREDENTIAL_FLAGGED` until the user
//! deletes it.
//!
//! # Bad input
//!
//! Wrong origin (`WEBAUTHN_WRONG_ORIGIN`) or rp id (`WEBAUTHN_WRONG_RP_ID`),
//! a replayed (`WEBAUTHN_CHALLENGE_NOT_FOUND`), expired
//! (`WEBAUTHN_CHALLENGE_EXPIRED`) or mismatched
//! (`WEBAUTHN_CHALLENGE_MISMATCH`) challenge, tampered client or
//! authenticator data (`WEBAUTHN_INVALID_RESPONSE`), and unknown credential
//! ids, credentials of another user or of another realm — all three the same
//! `WEBAUTHN_UNKNOWN_CREDENTIAL`, so nothing tells which — are typed errors
//! and write nothing. Malformed JSON is `VALIDATION_FAILED` naming
//! `response`.
//!
//! # Storage
//!
//! Under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `webauthn-rp` | `RelyingPartyRecord` ([`RelyingParty`]) |
//! | `webauthn-ceremony/<challenge id>` | `CeremonyRecord` (kind, user, webauthn-rs state, expiry) |
//! | `webauthn-credential/<user>/<SHA-256 of credential id>` | `CredentialRecord` ([`WebauthnCredential`] and the webauthn-rs passkey) |
//! | `webauthn-credential-id/<SHA-256 of credential id>` | the owner's user id: discoverable lookup and realm-wide uniqueness |
//!
//! Realm deletion sweeps all of it with the realm's prefix.
//! [`Webauthn::delete_all`] removes a user's credentials and their index
//! entries (for user deletion); a deleted user's credentials are unusable
//! before that anyway, since every authentication loads the owner and
//! requires an active user.

pub mod authentication;
pub(crate) mod ceremony;
pub mod credential;
pub mod registration;
pub mod relying_party;
pub mod response;
pub(crate) mod service;

pub use authentication::{PasskeyAmr, RequestOptions, WebauthnAssertion};
pub use credential::{CredentialId, WebauthnCredential};
pub use registration::CreationOptions;
pub use relying_party::RelyingParty;
pub use response::{parse_authentication_response, parse_registration_response};
pub use service::Webauthn;

/// How long a ceremony's state is accepted after it was made (5 minutes);
/// also the `timeout` the options give the browser.
pub const CEREMONY_TTL_SECS: i64 = 300;
/// The most credentials one user may register.
pub const MAX_CREDENTIALS: usize = 32;
/// Longest credential label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// Why a WebAuthn operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebauthnError {
    /// The realm has no relying party yet ([`Webauthn::configure`]).
    #[error("WebAuthn is not configured for this realm")]
    NotConfigured,
    /// The realm does not allow passkeys to log in without a password.
    #[error("passwordless login is not allowed in this realm")]
    PasswordlessNotAllowed,
    /// No live ceremony with that id for this user and purpose: unknown,
    /// already used (replay), or of another user, realm or ceremony kind.
    #[error("WebAuthn challenge not found")]
    ChallengeNotFound,
    /// The ceremony's time ran out ([`CEREMONY_TTL_SECS`]).
    #[error("WebAuthn challenge expired")]
    ChallengeExpired,
    /// The response answers another challenge than the ceremony's.
    #[error("the response answers another challenge")]
    ChallengeMismatch,
    /// The client data names an origin the relying party does not allow.
    #[error("origin not allowed")]
    WrongOrigin,
    /// The authenticator data is for another relying-party id.
    #[error("relying-party id mismatch")]
    WrongRpId,
    /// The authenticator did not verify the user (PIN or biometric).
    #[error("user verification required")]
    UserNotVerified,
    /// The response does not verify: bad signature, tampered or malformed
    /// authenticator or client data.
    #[error("invalid WebAuthn response: {reason}")]
    InvalidResponse {
        /// What failed, for logs (safe to show: no secrets).
        reason: String,
    },
    /// No such credential for this user in this realm (also for
    /// credentials of other users or realms: indistinguishable on purpose).
    #[error("unknown credential")]
    UnknownCredential,
    /// The credential is registered already (to this or another user).
    #[error("credential already registered")]
    CredentialExists,
    /// The user holds [`MAX_CREDENTIALS`] credentials.
    #[error("credential limit reached")]
    CredentialLimitReached,
    /// The user has no usable credential to authenticate with.
    #[error("no usable credential")]
    NoCredentials,
    /// The sign count did not increase: the authenticator may be cloned.
    /// The credential is now flagged.
    #[error("sign count regression: credential flagged")]
    SignCountRegression,
    /// The credential was flagged after a sign-count regression and is
    /// refused until deleted.
    #[error("credential flagged")]
    CredentialFlagged,
}

impl WebauthnError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            WebauthnError::NotConfigured => "WEBAUTHN_NOT_CONFIGURED",
            WebauthnError::PasswordlessNotAllowed => "WEBAUTHN_PASSWORDLESS_NOT_ALLOWED",
            WebauthnError::ChallengeNotFound => "WEBAUTHN_CHALLENGE_NOT_FOUND",
            WebauthnError::ChallengeExpired => "WEBAUTHN_CHALLENGE_EXPIRED",
            WebauthnError::ChallengeMismatch => "WEBAUTHN_CHALLENGE_MISMATCH",
            WebauthnError::WrongOrigin => "WEBAUTHN_WRONG_ORIGIN",
            WebauthnError::WrongRpId => "WEBAUTHN_WRONG_RP_ID",
            WebauthnError::UserNotVerified => "WEBAUTHN_USER_NOT_VERIFIED",
            WebauthnError::InvalidResponse { .. } => "WEBAUTHN_INVALID_RESPONSE",
            WebauthnError::UnknownCredential => "WEBAUTHN_UNKNOWN_CREDENTIAL",
            WebauthnError::CredentialExists => "WEBAUTHN_CREDENTIAL_EXISTS",
            WebauthnError::CredentialLimitReached => "WEBAUTHN_CREDENTIAL_LIMIT_REACHED",
            WebauthnError::NoCredentials => "WEBAUTHN_NO_CREDENTIALS",
            WebauthnError::SignCountRegression => "WEBAUTHN_SIGN_COUNT_REGRESSION",
            WebauthnError::CredentialFlagged => "WEBAUTHN_CREDENTIAL_FLAGGED",
        }
    }

    /// Map a verification failure of webauthn-rs to the typed error a
    /// caller can act on. `CredentialPossibleCompromise` is handled by the
    /// caller (it flags the credential) before this is reached.
    pub(crate) fn from_rs(e: &webauthn_rs::prelude::WebauthnError) -> Self {
        use webauthn_rs::prelude::WebauthnError as Rs;
        match e {
            Rs::InvalidRPOrigin | Rs::CredentialCrossOrigin => WebauthnError::WrongOrigin,
            Rs::InvalidRPIDHash => WebauthnError::WrongRpId,
            Rs::MismatchedChallenge => WebauthnError::ChallengeMismatch,
            Rs::UserNotVerified | Rs::UserNotPresent => WebauthnError::UserNotVerified,
            Rs::CredentialNotFound => WebauthnError::UnknownCredential,
            Rs::CredentialExcludedFromRequest | Rs::CredentialAlreadyExists => {
                WebauthnError::CredentialExists
            }
            Rs::CredentialPossibleCompromise => WebauthnError::SignCountRegression,
            other => WebauthnError::InvalidResponse {
                reason: other.to_string(),
            },
        }
    }
}

/// The keys of one realm's WebAuthn data.
pub(crate) mod keys {
    use crate::id::{ChallengeId, RealmId, UserId};
    use crate::realm::service::data_prefix;
    use crate::store::key::Key;

    pub(crate) fn relying_party(realm: RealmId) -> Key {
        data_prefix(realm).push("webauthn-rp")
    }
    pub(crate) fn ceremony(realm: RealmId, id: ChallengeId) -> Key {
        data_prefix(realm)
            .push("webauthn-ceremony")
            .push(id.to_bytes())
    }
    pub(crate) fn user_credentials(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm)
            .push("webauthn-credential")
            .push(user.to_bytes())
    }
    pub(crate) fn credential(realm: RealmId, user: UserId, digest: &[u8; 32]) -> Key {
        user_credentials(realm, user).push(digest)
    }
    pub(crate) fn credential_index(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm)
            .push("webauthn-credential-id")
            .push(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_rs::prelude::WebauthnError as Rs;

    #[test]
    fn codes_are_distinct_and_upper_case() {
        let all = [
            WebauthnError::NotConfigured,
            WebauthnError::PasswordlessNotAllowed,
            WebauthnError::ChallengeNotFound,
            WebauthnError::ChallengeExpired,
            WebauthnError::ChallengeMismatch,
            WebauthnError::WrongOrigin,
            WebauthnError::WrongRpId,
            WebauthnError::UserNotVerified,
            WebauthnError::InvalidResponse { reason: "x".into() },
            WebauthnError::UnknownCredential,
            WebauthnError::CredentialExists,
            WebauthnError::CredentialLimitReached,
            WebauthnError::NoCredentials,
            WebauthnError::SignCountRegression,
            WebauthnError::CredentialFlagged,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(WebauthnError::code).collect();
        assert_eq!(codes.len(), all.len());
        for code in codes {
            assert!(code.starts_with("WEBAUTHN_"), "{code}");
            assert_eq!(code, code.to_ascii_uppercase());
        }
    }

    #[test]
    fn library_errors_map_to_typed_errors() {
        let cases = [
            (Rs::InvalidRPOrigin, WebauthnError::WrongOrigin),
            (Rs::InvalidRPIDHash, WebauthnError::WrongRpId),
            (Rs::MismatchedChallenge, WebauthnError::ChallengeMismatch),
            (Rs::UserNotVerified, WebauthnError::UserNotVerified),
            (Rs::CredentialNotFound, WebauthnError::UnknownCredential),
            (
                Rs::CredentialExcludedFromRequest,
                WebauthnError::CredentialExists,
            ),
            (
                Rs::CredentialPossibleCompromise,
                WebauthnError::SignCountRegression,
            ),
        ];
        for (rs, ours) in cases {
            assert_eq!(WebauthnError::from_rs(&rs), ours);
        }
        assert_eq!(
            WebauthnError::from_rs(&Rs::AuthenticationFailure).code(),
            "WEBAUTHN_INVALID_RESPONSE"
        );
    }
}
