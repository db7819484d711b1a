//! Completing the login's MFA challenge.
//!
//! [`Users::authenticate`](crate::user::Users::authenticate) (and a magic
//! link) answers a passed first factor of a user with an active factor with
//! `LoginOutcome::MfaRequired { challenge }`. The challenge lists the
//! factors that may answer it — `totp`, `recovery` (only while the user
//! has unburnt codes) and `trusted_device` — so a front-end shows only what
//! can work; any other answer is `MFA_FACTOR_NOT_ALLOWED`.
//! [`Mfa::complete_challenge`] takes the challenge id and a second factor and,
//! in ONE batch, deletes the challenge (`Version`: single use, so of two
//! concurrent completions exactly one gets a session), records the TOTP step
//! or burns the recovery code (both with `Version`), checks the user record's
//! version, clears the failure counter and opens the session with methods
//! `pwd` + `otp` or `pwd` + `recovery`.
//!
//! # Enrolment
//!
//! In a realm with [`MfaPolicy::Required`]
//! a user without any factor gets `LoginOutcome::MfaEnrollmentRequired {
//! challenge }` instead of a session. That challenge is the setup path:
//! [`Mfa::create_totp_key_for_challenge`] makes a pending key for its user,
//! and [`Mfa::complete_enrollment`] activates it and — in the same batch —
//! consumes the challenge and opens the session (`pwd` + `otp`). Until then
//! the user has no session at all, so nothing but enrolment can be done
//! with a password alone.

use super::service::Mfa;
use super::{MfaError, MfaFactor, MfaKeyId, MfaKeyStatus, NewTotpKey, StoredKey, keys, parse_code};
use crate::error::Error;
use crate::id::{ChallengeId, SessionId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::realm::MfaPolicy;
use crate::secret::{SecretBytes, SecretString};
use crate::store::{Batch, Precondition, StorageError, record};
use crate::user::login::LiveChallenge;
use crate::user::{AuthError, AuthMethod, ChallengePurpose, Session, StoredUser};
use chrono::{DateTime, Utc};

/// A second factor answering an MFA challenge.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum MfaAnswer {
    /// A code of one of the user's active TOTP keys.
    Totp(SecretString),
    /// One of the user's recovery codes (burnt on success).
    Recovery(SecretString),
    /// A trusted-device token of the user (see [`trusted`](super::trusted)):
    /// skips the MFA step; the session's methods stay `pwd`.
    TrustedDevice(SecretString),
    /// A WebAuthn assertion (the browser's `PublicKeyCredential` JSON)
    /// answering the ceremony `ceremony` that
    /// [`Webauthn::request_options`](crate::webauthn::Webauthn::request_options)
    /// started for the challenge's user. The ceremony is consumed in the
    /// same batch as the challenge; the session gets `hwk` or `swk`.
    Webauthn {
        /// The WebAuthn ceremony's id.
        ceremony: ChallengeId,
        /// The assertion JSON.
        response: String,
    },
}

/// Active keys with their versions, and their opened seeds (same order).
type OpenedKeys = (Vec<(StoredKey, u64)>, Vec<SecretBytes>);

impl MfaAnswer {
    /// The factor this answer is of.
    pub fn factor(&self) -> MfaFactor {
        match self {
            MfaAnswer::Totp(_) => MfaFactor::Totp,
            MfaAnswer::Recovery(_) => MfaFactor::Recovery,
            MfaAnswer::TrustedDevice(_) => MfaFactor::TrustedDevice,
            MfaAnswer::Webauthn { .. } => MfaFactor::Webauthn,
        }
    }
}

/// What one completion attempt carries across retries.
struct Attempt {
    /// Whether the attempt was counted on the failure counter already.
    reserved: bool,
    /// Seeds opened by an earlier round, reused while the key set is the same.
    seeds: Option<OpenedKeys>,
}

impl Mfa {
    /// Add the acceptance of `code` by one of the user's active keys to
    /// `batch` (the key's new last step, `Version`); `false` if no active
    /// key accepts it now.
    fn totp_writes(
        &self,
        batch: &mut Batch,
        opened: &OpenedKeys,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let (active, seeds) = opened;
        for ((key, version), seed) in active.iter().zip(seeds) {
            let Ok(bare) = parse_code(code, key.key.params.digits) else {
                continue;
            };
            if let Some(step) = self.count_and_match(key, seed, &bare, now)? {
                let mut key = key.clone();
                key.last_step = Some(step);
                key.key.last_used_at = Some(now);
                let k = keys::key(self.realm(), key.key.user, key.key.id);
                batch.put(
                    k.clone(),
                    record::encode(k.as_bytes(), &super::MfaKeyRecord::V1(key))?,
                    Precondition::Version(*version),
                )?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn active_keys(&self, user: UserId) -> Result<Vec<(StoredKey, u64)>, Error> {
        Ok(self
            .user_keys(user)
            .await?
            .into_iter()
            .filter(|(k, _)| k.key.status == MfaKeyStatus::Active)
            .collect())
    }

    /// Check `answer` for the challenge's user and add its writes (TOTP
    /// step or recovery burn) to `batch`; the method it proves.
    async fn answer_writes(
        &self,
        batch: &mut Batch,
        user: &StoredUser,
        answer: &MfaAnswer,
        required: bool,
        attempt: &mut Attempt,
        now: DateTime<Utc>,
    ) -> Result<AuthMethod, Error> {
        let user_id = user.user.id;
        match answer {
            MfaAnswer::Totp(code) => {
                let active = self.active_keys(user_id).await?;
                if active.is_empty() {
                    return Err(if required {
                        MfaError::EnrollmentRequired
                    } else {
                        MfaError::NoActiveFactor
                    }
                    .into());
                }
                // Malformed for every key: a validation error, nothing written.
                if active
                    .iter()
                    .all(|(k, _)| parse_code(code.expose(), k.key.params.digits).is_err())
                {
                    let digits = active.first().map_or(6, |(k, _)| k.key.params.digits);
                    parse_code(code.expose(), digits)?;
                }
                if !attempt.reserved {
                    self.reserve(user, now).await?;
                    attempt.reserved = true;
                }
                // Open seeds once; reopen only if the set of keys changed.
                let same = attempt.seeds.as_ref().is_some_and(|(ks, _)| {
                    ks.len() == active.len()
                        && ks
                            .iter()
                            .zip(&active)
                            .all(|(a, b)| a.0.key.id == b.0.key.id)
                });
                if !same {
                    let mut opened = Vec::with_capacity(active.len());
                    for (k, _) in &active {
                        opened.push(self.open_seed(k).await?);
                    }
                    attempt.seeds = Some((Vec::new(), opened));
                }
                let Some(opened) = attempt.seeds.as_mut() else {
                    return Err(MfaError::InvalidCode.into());
                };
                // Current versions, previously opened seeds.
                opened.0 = active;
                if self.totp_writes(batch, opened, code.expose(), now)? {
                    Ok(AuthMethod::Otp)
                } else {
                    Err(MfaError::InvalidCode.into())
                }
            }
            MfaAnswer::Recovery(code) => {
                let normalized = super::recovery::normalize_recovery_code(code.expose())?;
                if !attempt.reserved {
                    self.reserve(user, now).await?;
                    attempt.reserved = true;
                }
                match self.burn_writes(batch, user_id, &normalized, now).await? {
                    Some(_) => Ok(AuthMethod::Recovery),
                    None => Err(MfaError::InvalidCode.into()),
                }
            }
            MfaAnswer::Webauthn { ceremony, response } => {
                let parsed = crate::webauthn::parse_authentication_response(response)?;
                let passkeys = crate::webauthn::Webauthn {
                    users: self.users.clone(),
                };
                // The challenge's own batch checks the user record, so the
                // assertion must not check it a second time.
                let assertion = passkeys
                    .assertion_writes(
                        batch,
                        *ceremony,
                        &parsed,
                        crate::webauthn::authentication::Purpose::SecondFactor(user_id),
                        false,
                        now,
                    )
                    .await?;
                Ok(match assertion.amr {
                    crate::webauthn::PasskeyAmr::Hwk => AuthMethod::Hwk,
                    crate::webauthn::PasskeyAmr::Swk => AuthMethod::Swk,
                })
            }
            MfaAnswer::TrustedDevice(token) => {
                if self
                    .trusted_writes(batch, user, token.expose(), now)
                    .await?
                {
                    Ok(AuthMethod::Pwd)
                } else {
                    Err(MfaError::InvalidCode.into())
                }
            }
        }
    }

    /// Complete a pending login challenge with a second factor; see the
    /// [module docs](self). Fails with `CHALLENGE_NOT_FOUND` (unknown,
    /// expired, used, user disabled or changed password),
    /// `MFA_ENROLLMENT_REQUIRED` (realm requires MFA, user has no active
    /// key: a TOTP answer is impossible — set one up), `MFA_NO_ACTIVE_FACTOR`,
    /// `VALIDATION_FAILED` (malformed code; nothing written),
    /// `TOO_MANY_ATTEMPTS` or `MFA_INVALID_CODE`.
    pub async fn complete_challenge(
        &self,
        id: ChallengeId,
        answer: &MfaAnswer,
    ) -> Result<Session, Error> {
        let realm = self.users.active_realm().await?;
        let required = realm.settings.mfa == MfaPolicy::Required;
        let now = self.users.now();
        let mut attempt = Attempt {
            reserved: false,
            seeds: None,
        };
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let live = self.users.live_challenge(id, now).await?;
            if live.challenge.realm != self.realm() {
                return Err(AuthError::ChallengeNotFound.into());
            }
            match live.challenge.purpose {
                // Nothing to answer with yet: the setup path is the way on.
                ChallengePurpose::Enrollment => return Err(MfaError::EnrollmentRequired.into()),
                ChallengePurpose::SecondFactor => {}
            }
            if !live.challenge.factors.contains(&answer.factor()) {
                return Err(MfaError::FactorNotAllowed.into());
            }
            let user_id = live.user.user.id;
            let mut batch = Batch::new();
            let method = self
                .answer_writes(&mut batch, &live.user, answer, required, &mut attempt, now)
                .await?;
            batch
                .delete(
                    crate::user::keys::challenge(self.realm(), id),
                    Precondition::Version(live.version),
                )?
                .check(
                    crate::user::keys::user(self.realm(), user_id),
                    Precondition::Version(live.user_version),
                )?
                .delete(
                    crate::user::keys::lockout(self.realm(), &live.user.username_key),
                    Precondition::Any,
                )?;
            let mut methods = live.challenge.methods.clone();
            if !methods.contains(&method) {
                methods.push(method);
            }
            let session =
                self.users
                    .add_session(&mut batch, &live.user, methods, Vec::new(), None, now)?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(session),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }

    /// Re-authenticate the user of `session` with a second factor (a TOTP
    /// code, a recovery code — burnt — or a passkey assertion of theirs), so
    /// the session holds a fresh proof of it for [step-up](crate::user::step_up).
    /// The factor's own write (TOTP step, burnt code, sign count) and the
    /// session's new proof are one batch. A trusted-device token proves no
    /// factor and is refused (`MFA_FACTOR_NOT_ALLOWED`). Other errors are
    /// those of [`complete_challenge`](Self::complete_challenge) and
    /// `SESSION_NOT_FOUND`.
    pub async fn reauthenticate(
        &self,
        session: SessionId,
        answer: &MfaAnswer,
    ) -> Result<(), Error> {
        if matches!(answer, MfaAnswer::TrustedDevice(_)) {
            return Err(MfaError::FactorNotAllowed.into());
        }
        self.users.active_realm().await?;
        let now = self.users.now();
        let mut attempt = Attempt {
            reserved: false,
            seeds: None,
        };
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored, version) = self.users.live_session(session).await?;
            let (user, user_version) = self.active_user(stored.session.user).await?;
            let mut batch = Batch::new();
            let method = self
                .answer_writes(&mut batch, &user, answer, false, &mut attempt, now)
                .await?;
            batch
                .check(
                    crate::user::keys::user(self.realm(), user.user.id),
                    Precondition::Version(user_version),
                )?
                .delete(
                    crate::user::keys::lockout(self.realm(), &user.username_key),
                    Precondition::Any,
                )?;
            self.users
                .proof_writes(&mut batch, stored, version, method, now)?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }

    /// The enrolment challenge `id` (from
    /// [`LoginOutcome::MfaEnrollmentRequired`](crate::user::LoginOutcome::MfaEnrollmentRequired)),
    /// live; `MFA_FACTOR_NOT_ALLOWED` for a second-factor challenge.
    async fn live_enrollment(
        &self,
        id: ChallengeId,
        now: DateTime<Utc>,
    ) -> Result<LiveChallenge, Error> {
        let live = self.users.live_challenge(id, now).await?;
        if live.challenge.realm != self.realm() {
            return Err(AuthError::ChallengeNotFound.into());
        }
        if live.challenge.purpose != ChallengePurpose::Enrollment {
            return Err(MfaError::FactorNotAllowed.into());
        }
        Ok(live)
    }

    /// The setup path of a login that stopped at
    /// [`LoginOutcome::MfaEnrollmentRequired`](crate::user::LoginOutcome::MfaEnrollmentRequired):
    /// create a pending TOTP key (realm parameters) for the challenge's
    /// user. The challenge stands in for a session — the user proved the
    /// first factor and has no second one to prove — and stays pending
    /// until [`complete_enrollment`](Self::complete_enrollment).
    pub async fn create_totp_key_for_challenge(
        &self,
        id: ChallengeId,
    ) -> Result<NewTotpKey, Error> {
        let now = self.users.now();
        let live = self.live_enrollment(id, now).await?;
        let realm = self.users.active_realm().await?;
        self.new_totp_key(live.user.user.id, realm.settings.totp)
            .await
    }

    /// Finish an enrolment login: activate the challenge user's pending key
    /// `key` with `code` and, in the same batch, consume the challenge
    /// (`Version`: single use) and open the session (`amr` = the first
    /// factor + `otp`). Errors are those of [`activate`](Self::activate)
    /// and `CHALLENGE_NOT_FOUND`; on any error nothing but the failure
    /// counter is written.
    pub async fn complete_enrollment(
        &self,
        id: ChallengeId,
        key: MfaKeyId,
        code: &SecretString,
    ) -> Result<Session, Error> {
        self.users.active_realm().await?;
        let now = self.users.now();
        let mut reserved = false;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let live = self.live_enrollment(id, now).await?;
            let mut batch = Batch::new();
            self.activation_writes(
                &mut batch,
                (live.user.clone(), live.user_version),
                key,
                code,
                &mut reserved,
                now,
            )
            .await?;
            batch.delete(
                crate::user::keys::challenge(self.realm(), id),
                Precondition::Version(live.version),
            )?;
            let mut methods = live.challenge.methods.clone();
            methods.push(AuthMethod::Otp);
            let session =
                self.users
                    .add_session(&mut batch, &live.user, methods, Vec::new(), None, now)?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(session),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| MfaError::InvalidCode.into(), Error::from))
    }
}
