//! Users of a realm: registration, profiles, passwords, lockout, login,
//! sessions and application tokens.
//!
//! Get a handle bound to one realm with [`Keystead::users`](crate::Keystead::users);
//! every call checks first that the realm exists and is active.
//!
//! # Names and addresses
//!
//! * **Username**: normalised with Unicode NFKC, lower-cased, and NFKC again,
//!   so `"Alice"`, `"alice"` and `"ＡＬＩＣＥ"` are the same name. The
//!   normalised form must be 1 to [`MAX_USERNAME_CHARS`] characters of
//!   Unicode letters, digits, `.`, `_` and `-`, starting with a letter or a
//!   digit. The user keeps the NFKC form they registered with for display;
//!   uniqueness is decided on the normalised form through an index key
//!   written with `Absent`, so two concurrent registrations of the same name
//!   can't both win. Usernames never change.
//! * **Email** (optional): at most [`MAX_EMAIL_LEN`] bytes after NFKC, exactly
//!   one `@`, a local part of 1–64 bytes without whitespace or control
//!   characters, and a domain of dot-separated labels (letters, digits, `-`,
//!   not starting or ending with `-`) with at least one dot. Unique per realm,
//!   compared lower-cased.
//! * **Display name** (optional): 1 to [`MAX_DISPLAY_NAME_CHARS`] characters,
//!   no control characters.
//!
//! # Storage
//!
//! Every key lives under the realm's prefix `realm/<realm>/`:
//!
//! | key | value |
//! |---|---|
//! | `user/<user id>` | `UserRecord` (profile, status, PHC hash, session epoch, factor count) |
//! | `username/<normalised>` | the user id (unique index, `Absent`) |
//! | `email/<normalised>` | the user id (unique index, `Absent`) |
//! | `lockout/<normalised username>` | [`LockoutState`](lockout) failure counter (CAS) |
//! | `session/<session id>` | `SessionRecord` ([`Session`]) |
//! | `user-session/<user id>/<session id>` | empty: per-user session listing |
//! | `challenge/<challenge id>` | `ChallengeRecord` ([`Challenge`]) pending MFA challenge |
//! | `user-app-token/<user id>/<token id>` | `AppTokenRecord` ([`AppToken`]) (digest, name, scopes) |
//! | `app-token/<SHA-256 of the token>` | user id ‖ token id: lookup by presented token |
//! | `sign-up/<SHA-256 of the token>` | a pending sign-up ([`sign_up`]) |
//!
//! # Deleting a user
//!
//! One batch deletes the user record, its username and email index entries
//! and its lockout counter. Every credential lookup (session, application
//! token, MFA challenge) also loads the user record and requires it to be
//! active with the same session epoch, so from that commit on nothing the
//! user owned is usable. The user's sessions, application tokens and MFA
//! records (keys, recovery codes, trusted devices) are then swept in pages;
//! a sweep interrupted half-way leaves only unreachable data.
//! MFA challenges are not swept with the user: they expire after
//! [`CHALLENGE_TTL_SECS`], and [`Tokens::purge_expired`](crate::token::Tokens::purge_expired)
//! removes expired ones.

pub mod app_token;
pub mod by_email;
pub mod lockout;
pub mod login;
pub mod password;
pub mod reauth;
pub(crate) mod service;
pub mod session;
pub mod sign_up;
pub mod step_up;

pub use crate::id::{AppTokenId, ChallengeId};
pub use app_token::{AppToken, NewAppToken};
pub use lockout::{Admission, LockoutState};
pub use login::{Challenge, ChallengePurpose, LoginOutcome};
pub use service::Users;
pub use session::{AuthMethod, Session};
pub use sign_up::{SignUpMail, SignUpRequest};
pub use step_up::Authority;

use crate::error::ValidationError;
use crate::id::{RealmId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Longest username, in characters after normalisation.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Longest email address, in bytes after NFKC (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest email local part, in bytes (RFC 5321).
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// How long a pending MFA challenge stays valid (5 minutes).
pub const CHALLENGE_TTL_SECS: i64 = 300;

/// A user as callers see it (never holds the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// The realm the user belongs to.
    pub realm: RealmId,
    /// The username as registered (NFKC form).
    pub username: String,
    /// The email address (NFKC form), if any.
    pub email: Option<String>,
    /// A free-form name for display, if any.
    pub display_name: Option<String>,
    /// Whether the user may log in.
    pub status: UserStatus,
    /// When the user registered.
    pub created_at: DateTime<Utc>,
    /// When the profile, status or password last changed.
    pub updated_at: DateTime<Utc>,
}

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Normal operation.
    Active,
    /// Logins fail with `INVALID_CREDENTIALS`; sessions and application
    /// tokens stop working until `enable`.
    Disabled,
}

/// A change to a user's profile; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// `Some(Some(email))` sets the email, `Some(None)` removes it.
    pub email: Option<Option<String>>,
    /// `Some(Some(name))` sets the display name, `Some(None)` removes it.
    pub display_name: Option<Option<String>>,
}

/// Why a user operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// No user with that id or username in this realm.
    #[error("user not found")]
    NotFound,
    /// Another user of the realm has that username (after normalisation).
    #[error("username is taken")]
    UsernameTaken,
    /// Another user of the realm has that email (after normalisation).
    #[error("email is taken")]
    EmailTaken,
    /// The user is disabled (administrative calls only: logins never say so).
    #[error("user is disabled")]
    Disabled,
    /// The realm does not let anyone sign up this way
    /// ([`RealmSettings::sign_up`](crate::realm::RealmSettings::sign_up)):
    /// accounts are made by the embedder, or sign-up goes through a
    /// verified address.
    #[error("this realm does not allow this kind of sign-up")]
    RegistrationClosed,
    /// No pending sign-up has that token (unknown, expired or used).
    #[error("no such pending sign-up")]
    SignUpNotFound,
}

impl UserError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            UserError::NotFound => "USER_NOT_FOUND",
            UserError::UsernameTaken => "USERNAME_TAKEN",
            UserError::EmailTaken => "EMAIL_TAKEN",
            UserError::Disabled => "USER_DISABLED",
            UserError::RegistrationClosed => "REGISTRATION_CLOSED",
            UserError::SignUpNotFound => "SIGN_UP_NOT_FOUND",
        }
    }
}

/// Why an authentication failed. Never says which factor was wrong or
/// whether the account exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown user, wrong password, disabled account, or an unknown,
    /// revoked or malformed token: deliberately indistinguishable.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many consecutive failures for this username: try again after
    /// `retry_after`, or (when `None`) only once an administrator unlocked
    /// the account. No password was checked.
    #[error("too many failed attempts")]
    TooManyAttempts {
        /// How long to wait; `None` when locked until an administrator unlocks.
        retry_after: Option<std::time::Duration>,
    },
    /// No such session, or it was revoked or belongs to a user who is gone
    /// or disabled.
    #[error("session not found")]
    SessionNotFound,
    /// No such pending MFA challenge, or it expired.
    #[error("challenge not found or expired")]
    ChallengeNotFound,
    /// No application token with that id for that user.
    #[error("application token not found")]
    AppTokenNotFound,
    /// A credential change needs an authentication more recent than
    /// `max_age_secs`, or with the factors it needs, and the caller's
    /// session has neither (RFC 9470: the front-end asks the user to log in
    /// again, or re-authenticates them, then retries).
    #[error("a fresh authentication is required for this change")]
    StepUpRequired {
        /// The most age, in seconds, the authentication may have.
        max_age_secs: u32,
        /// Whether a second factor is needed as well (the user has one, or
        /// the realm requires one).
        needs_mfa: bool,
    },
}

impl AuthError {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::InvalidCredentials => "INVALID_CREDENTIALS",
            AuthError::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            AuthError::SessionNotFound => "SESSION_NOT_FOUND",
            AuthError::ChallengeNotFound => "CHALLENGE_NOT_FOUND",
            AuthError::AppTokenNotFound => "APP_TOKEN_NOT_FOUND",
            AuthError::StepUpRequired { .. } => "STEP_UP_REQUIRED",
        }
    }
}

/// NFKC, lower case, NFKC: the form uniqueness is decided on.
fn fold(s: &str) -> String {
    s.nfkc().collect::<String>().to_lowercase().nfkc().collect()
}

/// Validate a username and return `(display form, normalised form)`.
pub fn normalize_username(username: &str) -> Result<(String, String), ValidationError> {
    let rule = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit";
    let display: String = username.nfkc().collect();
    let key = fold(username);
    let count = key.chars().count();
    let ok = (1..=MAX_USERNAME_CHARS).contains(&count)
        && key.chars().next().is_some_and(char::is_alphanumeric)
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && display.chars().all(|c| !c.is_control());
    if ok {
        Ok((display, key))
    } else {
        Err(ValidationError::new("username", rule))
    }
}

/// Validate an email address and return `(display form, normalised form)`.
pub fn normalize_email(email: &str) -> Result<(String, String), ValidationError> {
    let rule = "an address local@domain.tld of at most 254 bytes (local part at most 64), \
                without whitespace or control characters";
    let display: String = email.nfkc().collect();
    let bad = || ValidationError::new("email", rule);
    if display.len() > MAX_EMAIL_LEN || display.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    let (local, domain) = display.split_once('@').ok_or_else(bad)?;
    if local.is_empty() || local.len() > MAX_EMAIL_LOCAL_LEN || domain.contains('@') {
        return Err(bad());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Err(bad());
    }
    let key = fold(&display);
    Ok((display, key))
}

/// Validate a display name (1–128 characters, no control characters).
pub fn validate_display_name(name: &str) -> Result<(), ValidationError> {
    let count = name.chars().count();
    if (1..=MAX_DISPLAY_NAME_CHARS).contains(&count) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "display_name",
            "1 to 128 characters without control characters",
        ))
    }
}

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    pub(crate) user: User,
    /// Normalised username (the index key).
    pub(crate) username_key: String,
    /// Normalised email (the index key), if any.
    pub(crate) email_key: Option<String>,
    /// argon2id PHC string.
    pub(crate) password_hash: String,
    /// Bumped whenever every session must die (password change, revoke
    /// all, disable); sessions record the epoch they were made in.
    pub(crate) session_epoch: u64,
    /// Active MFA factors (kept by the MFA service; 0 until it exists).
    pub(crate) active_factors: u32,
}

/// How a user is stored. Never change a released variant: add `V2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum UserRecord {
    V1(StoredUser),
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub(crate) session: Session,
    /// The user's session epoch when the session was made.
    pub(crate) epoch: u64,
    /// The application token the session came from, which must still exist.
    pub(crate) app_token: Option<AppTokenId>,
    /// When each factor was last proved in this session ([`step_up`]).
    pub(crate) proofs: Vec<session::Proof>,
}

/// A session as `SessionRecord::V1` stored it: before step-up proofs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSessionV1 {
    pub(crate) session: Session,
    pub(crate) epoch: u64,
    pub(crate) app_token: Option<AppTokenId>,
}

/// How a session is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SessionRecord {
    /// Before step-up: its login methods count as proved at its creation.
    V1(StoredSessionV1),
    /// Current.
    V2(StoredSession),
}

impl SessionRecord {
    /// The session, whatever version it was stored as.
    pub(crate) fn into_session(self) -> StoredSession {
        match self {
            SessionRecord::V1(old) => StoredSession {
                proofs: session::Proof::at_login(&old.session),
                session: old.session,
                epoch: old.epoch,
                app_token: old.app_token,
            },
            SessionRecord::V2(session) => session,
        }
    }
}

/// How a pending MFA challenge is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ChallengeRecord {
    /// Before challenges named their purpose and factors: decodes as a
    /// second-factor challenge answerable by every factor of that release.
    V1 {
        challenge: login::ChallengeV1,
        /// The user's session epoch when the password was checked.
        epoch: u64,
    },
    /// Current.
    V2 {
        challenge: Challenge,
        /// The user's session epoch when the first factor was checked.
        epoch: u64,
    },
}

impl ChallengeRecord {
    /// The challenge and the session epoch it was made under.
    pub(crate) fn into_parts(self) -> (Challenge, u64) {
        match self {
            ChallengeRecord::V1 { challenge, epoch } => (challenge.upgrade(), epoch),
            ChallengeRecord::V2 { challenge, epoch } => (challenge, epoch),
        }
    }
}

/// How an application token is stored (its digest, never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum AppTokenRecord {
    V1 { token: AppToken, digest: [u8; 32] },
}

/// The keys of one realm's user data.
pub(crate) mod keys {
    use crate::id::{RealmId, SessionId, UserId};
    use crate::realm::service::data_prefix;
    use crate::store::key::Key;

    use super::{AppTokenId, ChallengeId};

    pub(crate) fn users(realm: RealmId) -> Key {
        data_prefix(realm).push("user")
    }
    pub(crate) fn user(realm: RealmId, id: UserId) -> Key {
        users(realm).push(id.to_bytes())
    }
    pub(crate) fn username(realm: RealmId, key: &str) -> Key {
        data_prefix(realm).push("username").push(key)
    }
    pub(crate) fn email(realm: RealmId, key: &str) -> Key {
        data_prefix(realm).push("email").push(key)
    }
    pub(crate) fn lockout(realm: RealmId, username_key: &str) -> Key {
        data_prefix(realm).push("lockout").push(username_key)
    }
    pub(crate) fn session(realm: RealmId, id: SessionId) -> Key {
        data_prefix(realm).push("session").push(id.to_bytes())
    }
    pub(crate) fn user_sessions(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm)
            .push("user-session")
            .push(user.to_bytes())
    }
    pub(crate) fn user_session(realm: RealmId, user: UserId, id: SessionId) -> Key {
        user_sessions(realm, user).push(id.to_bytes())
    }
    pub(crate) fn challenge(realm: RealmId, id: ChallengeId) -> Key {
        data_prefix(realm).push("challenge").push(id.to_bytes())
    }
    pub(crate) fn user_app_tokens(realm: RealmId, user: UserId) -> Key {
        data_prefix(realm)
            .push("user-app-token")
            .push(user.to_bytes())
    }
    pub(crate) fn user_app_token(realm: RealmId, user: UserId, id: AppTokenId) -> Key {
        user_app_tokens(realm, user).push(id.to_bytes())
    }
    pub(crate) fn app_token(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("app-token").push(digest)
    }

    pub(crate) fn sign_up(realm: RealmId, digest: &[u8; 32]) -> Key {
        data_prefix(realm).push("sign-up").push(digest)
    }
}

/// The last segment of a key as a 16-byte id.
pub(crate) fn last_id_bytes(key: &[u8]) -> Option<[u8; 16]> {
    let segments = crate::store::key::segments(key).ok()?;
    segments.last()?.as_slice().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_and_width() {
        let (_, a) = normalize_username("Alice").unwrap();
        let (_, b) = normalize_username("alice").unwrap();
        let (display, c) = normalize_username("ＡＬＩＣＥ").unwrap();
        assert_eq!(a, "alice");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(display, "ALICE");
        normalize_username("jürgen.o-k_1").unwrap();
        normalize_username(&"x".repeat(64)).unwrap();
        for bad in [
            "",
            " alice",
            "a b",
            "-a",
            ".a",
            "a@b",
            "a\u{0}",
            &"x".repeat(65),
        ] {
            assert_eq!(normalize_username(bad).unwrap_err().field, "username");
        }
    }

    #[test]
    fn emails_have_a_shape() {
        let (_, key) = normalize_email("Alice@Example.COM").unwrap();
        assert_eq!(key, "alice@example.com");
        for bad in [
            "",
            "alice",
            "@example.com",
            "a@b",
            "a@@b.c",
            "a@-b.com",
            "a b@c.d",
            "a@b..c",
            &format!("{}@b.c", "x".repeat(65)),
            &format!("a@{}.com", "b".repeat(250)),
        ] {
            assert_eq!(normalize_email(bad).unwrap_err().field, "email", "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalisation_is_idempotent(name in "\\PC{1,20}") {
            if let Ok((display, key)) = normalize_username(&name) {
                let (_, again) = normalize_username(&display).unwrap();
                proptest::prop_assert_eq!(&again, &key);
                let (_, of_key) = normalize_username(&key).unwrap();
                proptest::prop_assert_eq!(of_key, key);
            }
            let _ = normalize_email(&name);
        }
    }

    /// Folding is a fixed point for every single code point, so a
    /// normalised username never folds to yet another name.
    #[test]
    fn folding_every_code_point_is_idempotent() {
        let bad: Vec<char> = (0u32..0x11_0000)
            .filter_map(char::from_u32)
            .filter(|c| {
                let once = fold(&c.to_string());
                fold(&once) != once
            })
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn display_names() {
        validate_display_name("Alice Liddell").unwrap();
        assert!(validate_display_name("").is_err());
        assert!(validate_display_name("a\nb").is_err());
        assert!(validate_display_name(&"x".repeat(129)).is_err());
    }
}
