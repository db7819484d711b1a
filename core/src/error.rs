//! The one error type every keystead call returns.
//!
//! Errors are grouped by domain (storage, validation, crypto, …; later issues add
//! authentication, MFA, devices and tokens), and every variant has a stable
//! machine-readable [`Error::code`] that front-ends and the example server map
//! to HTTP status codes. Codes never change between releases; messages may.

use crate::crypto::CryptoError;
use crate::device::DeviceError;
use crate::mfa::MfaError;
use crate::oauth::OAuthError;
use crate::realm::RealmError;
use crate::store::{BatchError, StorageError};
use crate::token::TokenError;
use crate::user::{AuthError, UserError};
use crate::webauthn::WebauthnError;

/// Every failure a keystead call can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Input was rejected before anything was read or written.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The storage backend failed or a precondition did not hold.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A cryptographic operation failed (bad key, altered ciphertext, …).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A realm is missing, disabled or its name is taken.
    #[error(transparent)]
    Realm(#[from] RealmError),
    /// A user is missing, disabled, or its username or email is taken.
    #[error(transparent)]
    User(#[from] UserError),
    /// Authentication failed, is throttled, or a session, challenge or
    /// application token is unknown.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A device group, device, envelope or key version was refused.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// An MFA key is missing or in the wrong state, or a second factor was
    /// wrong.
    #[error(transparent)]
    Mfa(#[from] MfaError),
    /// A token is malformed, untrusted, expired or revoked, or a grant is
    /// invalid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A WebAuthn ceremony or credential was refused (wrong origin or rp
    /// id, replayed or expired challenge, tampered response, unknown or
    /// flagged credential, …).
    #[error(transparent)]
    Webauthn(#[from] WebauthnError),
    /// An OAuth client, authorization request, login transaction or
    /// authorization code was refused.
    #[error(transparent)]
    OAuth(#[from] OAuthError),
}

impl Error {
    /// A stable, upper-case identifier for this failure (`VALIDATION_FAILED`,
    /// `STORAGE_CONFLICT`, …), safe to show to clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "VALIDATION_FAILED",
            Error::Storage(e) => e.code(),
            Error::Crypto(e) => e.code(),
            Error::Realm(e) => e.code(),
            Error::User(e) => e.code(),
            Error::Auth(e) => e.code(),
            Error::Device(e) => e.code(),
            Error::Mfa(e) => e.code(),
            Error::Token(e) => e.code(),
            Error::Webauthn(e) => e.code(),
            Error::OAuth(e) => e.code(),
        }
    }

    /// The OAuth 2.0 error code (RFC 6749 §5.2, RFC 6750 §3.1) a token or
    /// introspection endpoint should answer with: `invalid_request` for
    /// rejected input, `invalid_grant` for failed credentials and grants,
    /// `invalid_token` for rejected access tokens, `unsupported_grant_type`,
    /// `invalid_scope`, `temporarily_unavailable` when throttled, the codes
    /// of the authorization-code flow ([`OAuthError::oauth_code`]:
    /// `invalid_client`, `unauthorized_client`, `access_denied`,
    /// `unsupported_response_type`, …), and `server_error` for everything
    /// else.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "invalid_request",
            Error::Token(e) => e.oauth_code(),
            Error::OAuth(e) => e.oauth_code(),
            Error::Auth(AuthError::TooManyAttempts { .. }) => "temporarily_unavailable",
            Error::Auth(AuthError::StepUpRequired { .. }) => "insufficient_user_authentication",
            Error::Auth(_) => "invalid_grant",
            _ => "server_error",
        }
    }
}

/// Input that breaks a documented rule; names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct ValidationError {
    /// The input field (`"username"`, `"batch.value"`, …).
    pub field: &'static str,
    /// What is wrong with it, in words a developer can act on.
    pub problem: String,
}

impl ValidationError {
    /// A validation failure of `field` described by `problem`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

impl From<BatchError> for ValidationError {
    fn from(e: BatchError) -> Self {
        let field = match e {
            BatchError::EmptyKey | BatchError::KeyTooLarge { .. } => "batch.key",
            BatchError::ValueTooLarge { .. } => "batch.value",
            BatchError::DuplicateKey { .. } => "batch",
        };
        Self::new(field, e.to_string())
    }
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        Error::Validation(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let v: Error = ValidationError::new("username", "too long").into();
        assert_eq!(v.code(), "VALIDATION_FAILED");
        assert_eq!(v.to_string(), "invalid username: too long");
        let c: Error = StorageError::Conflict { key: b"k".to_vec() }.into();
        assert_eq!(c.code(), "STORAGE_CONFLICT");
        let b: Error = BatchError::EmptyKey.into();
        assert_eq!(b.code(), "VALIDATION_FAILED");
    }

    #[test]
    fn user_and_auth_codes_are_stable() {
        let cases: [(Error, &str); 7] = [
            (AuthError::InvalidCredentials.into(), "INVALID_CREDENTIALS"),
            (
                AuthError::TooManyAttempts { retry_after: None }.into(),
                "TOO_MANY_ATTEMPTS",
            ),
            (UserError::UsernameTaken.into(), "USERNAME_TAKEN"),
            (UserError::EmailTaken.into(), "EMAIL_TAKEN"),
            (UserError::NotFound.into(), "USER_NOT_FOUND"),
            (UserError::Disabled.into(), "USER_DISABLED"),
            (UserError::RegistrationClosed.into(), "REGISTRATION_CLOSED"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn device_codes_are_stable() {
        use crate::device::{DeviceAction, DeviceStatus};
        let cases: [(Error, &str); 5] = [
            (
                DeviceError::LimitReached { limit: 5 }.into(),
                "DEVICE_LIMIT_REACHED",
            ),
            (
                DeviceError::KeyVersionConflict { current: 3 }.into(),
                "KEY_VERSION_CONFLICT",
            ),
            (
                DeviceError::InvalidTransition {
                    from: DeviceStatus::Revoked,
                    action: DeviceAction::Activate,
                }
                .into(),
                "INVALID_TRANSITION",
            ),
            (DeviceError::NoKeyAvailable.into(), "NO_KEY_AVAILABLE"),
            (DeviceError::NotFound.into(), "DEVICE_NOT_FOUND"),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn mfa_codes_are_stable() {
        let cases: [(Error, &str); 11] = [
            (MfaError::MfaStepRequired.into(), "MFA_STEP_REQUIRED"),
            (
                MfaError::TrustedDeviceNotFound.into(),
                "TRUSTED_DEVICE_NOT_FOUND",
            ),
            (MfaError::KeyNotFound.into(), "MFA_KEY_NOT_FOUND"),
            (MfaError::InvalidCode.into(), "MFA_INVALID_CODE"),
            (MfaError::PendingKeyExists.into(), "MFA_PENDING_KEY_EXISTS"),
            (MfaError::KeyLimitReached.into(), "MFA_KEY_LIMIT_REACHED"),
            (MfaError::AlreadyActive.into(), "MFA_KEY_ALREADY_ACTIVE"),
            (MfaError::KeyNotActive.into(), "MFA_KEY_NOT_ACTIVE"),
            (MfaError::ActivationExpired.into(), "MFA_ACTIVATION_EXPIRED"),
            (MfaError::NoActiveFactor.into(), "MFA_NO_ACTIVE_FACTOR"),
            (
                MfaError::EnrollmentRequired.into(),
                "MFA_ENROLLMENT_REQUIRED",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn webauthn_codes_are_stable() {
        let cases: [(Error, &str); 6] = [
            (
                WebauthnError::ChallengeNotFound.into(),
                "WEBAUTHN_CHALLENGE_NOT_FOUND",
            ),
            (
                WebauthnError::ChallengeExpired.into(),
                "WEBAUTHN_CHALLENGE_EXPIRED",
            ),
            (WebauthnError::WrongOrigin.into(), "WEBAUTHN_WRONG_ORIGIN"),
            (
                WebauthnError::UnknownCredential.into(),
                "WEBAUTHN_UNKNOWN_CREDENTIAL",
            ),
            (
                WebauthnError::SignCountRegression.into(),
                "WEBAUTHN_SIGN_COUNT_REGRESSION",
            ),
            (
                WebauthnError::PasswordlessNotAllowed.into(),
                "WEBAUTHN_PASSWORDLESS_NOT_ALLOWED",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn crypto_codes_are_stable() {
        let open: Error = CryptoError::OpenFailed.into();
        assert_eq!(open.code(), "CRYPTO_OPEN_FAILED");
        let key: Error = CryptoError::InvalidPublicKey {
            reason: "low order",
        }
        .into();
        assert_eq!(key.code(), "CRYPTO_INVALID_PUBLIC_KEY");
    }
}
