//! Login with username and password.
//!
//! `authenticate` reads the clock once, refuses throttled usernames before
//! any hashing ([`lockout`](super::lockout)), counts the attempt with a
//! compare-and-swap on the counter while it verifies the password with
//! argon2id off the executor (against a dummy hash for unknown usernames),
//! and then either opens a session, or — when the user has an active
//! factor (a TOTP key or an unflagged WebAuthn credential) — stores a short-lived [`Challenge`] for the MFA step, or — when
//! the realm requires MFA and the user has no factor — an enrolment
//! challenge ([`LoginOutcome::MfaEnrollmentRequired`]). Every failure is the same `INVALID_CREDENTIALS`: unknown user,
//! wrong password and disabled account alike (a disabled account's
//! password is still checked, so timing does not tell it apart either).
//!
//! On success one batch writes the session (or challenge), clears the
//! failure counter, re-hashes the password if the realm's argon2 parameters
//! changed, and checks the user record's version — so a user disabled or
//! deleted concurrently can't end up with a session.

use super::lockout::Admission;
use super::password::{self, Verified};
use super::service::Users;
use super::{
    AuthError, CHALLENGE_TTL_SECS, ChallengeId, ChallengeRecord, Session, StoredUser, UserRecord,
    UserStatus, keys, normalize_username,
};
use crate::error::Error;
use crate::id::{RealmId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::mfa::MfaFactor;
use crate::realm::{MAX_PASSWORD_LEN, MfaPolicy, Realm};
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::session::AuthMethod;

/// A pending second-factor step after a correct password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The id the client presents with its second factor.
    pub id: ChallengeId,
    /// Who is logging in.
    pub user: UserId,
    /// The realm.
    pub realm: RealmId,
    /// When the password was accepted.
    pub created_at: DateTime<Utc>,
    /// When the challenge stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// The methods already passed (`pwd`).
    pub methods: Vec<AuthMethod>,
    /// What the challenge is for.
    pub purpose: ChallengePurpose,
    /// The factors that may answer it (for a [`ChallengePurpose::SecondFactor`]
    /// challenge), or the factor to enrol (for a
    /// [`ChallengePurpose::Enrollment`] one) — so a front-end shows only
    /// what can work, and an answer of any other kind is refused
    /// (`MFA_FACTOR_NOT_ALLOWED`).
    pub factors: Vec<MfaFactor>,
}

/// Why a login stopped at a [`Challenge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengePurpose {
    /// The user has a second factor: answer with one of
    /// [`Challenge::factors`] ([`Mfa::complete_challenge`](crate::mfa::Mfa::complete_challenge)).
    SecondFactor,
    /// The realm requires MFA and the user has no factor yet: enrol one with
    /// [`Mfa::create_totp_key_for_challenge`](crate::mfa::Mfa::create_totp_key_for_challenge)
    /// and finish the login with
    /// [`Mfa::complete_enrollment`](crate::mfa::Mfa::complete_enrollment).
    Enrollment,
}

/// The result of a correct password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum LoginOutcome {
    /// Logged in.
    Authenticated(Session),
    /// A second factor is needed; complete the challenge with the MFA
    /// service.
    MfaRequired {
        /// The pending challenge ([`ChallengePurpose::SecondFactor`]).
        challenge: Challenge,
    },
    /// The realm requires MFA and the user has no active factor: no session
    /// until one is enrolled. The challenge ([`ChallengePurpose::Enrollment`])
    /// is the setup path: it lets the user — who just proved the first
    /// factor — create and activate a TOTP key, and activation opens the
    /// session.
    MfaEnrollmentRequired {
        /// The pending enrolment challenge.
        challenge: Challenge,
    },
}

/// `Ok` for an admitted attempt, `TOO_MANY_ATTEMPTS` otherwise.
pub(crate) fn admission_result(admission: Admission) -> Result<(), Error> {
    match admission {
        Admission::Allowed => Ok(()),
        Admission::Wait(d) => Err(AuthError::TooManyAttempts {
            retry_after: Some(d),
        }
        .into()),
        Admission::Locked => Err(AuthError::TooManyAttempts { retry_after: None }.into()),
    }
}

impl Users {
    /// Log in with username and password; see the [module docs](self).
    pub async fn authenticate(
        &self,
        username: &str,
        password: SecretString,
    ) -> Result<LoginOutcome, Error> {
        let realm = self.active_realm().await?;
        let now = self.now();
        let policy = realm.settings.password;
        // A name that can't exist, or an over-long password, can't be right;
        // neither says anything about an account.
        let Ok((_, username_key)) = normalize_username(username) else {
            return Err(AuthError::InvalidCredentials.into());
        };
        if password.expose().len() > MAX_PASSWORD_LEN as usize {
            return Err(AuthError::InvalidCredentials.into());
        }
        // A throttled name is refused here, before any hashing.
        let lockout = realm.settings.lockout;
        let counter = self.load_lockout(&username_key).await?;
        admission_result(counter.0.admission(&lockout, now))?;
        // The attempt is counted (compare-and-swap, re-checking admission)
        // while the password is checked: the fsynced write hides behind
        // argon2. If a concurrent attempt won the race and this one is now
        // refused, the check's result is thrown away.
        let reserve = self.reserve_attempt(&username_key, &lockout, now, Some(counter));
        let check = async {
            match self.user_by_key(&username_key).await? {
                None => {
                    password::verify_dummy(&*self.ctx.blocking, &policy, password).await?;
                    Ok::<_, Error>(None)
                }
                Some((found, version)) => {
                    let hash = found.password_hash.clone();
                    let verified =
                        password::verify(&*self.ctx.blocking, &policy, hash, password).await?;
                    Ok(Some((found, version, verified)))
                }
            }
        };
        let (reserved, checked) = futures::future::join(reserve, check).await;
        reserved?;
        let Some((found, found_version, verified)) = checked? else {
            return Err(AuthError::InvalidCredentials.into());
        };
        let rehash = match verified {
            Verified::Correct { rehash } if found.user.status == UserStatus::Active => rehash,
            _ => return Err(AuthError::InvalidCredentials.into()),
        };
        let verified_hash = found.password_hash.clone();
        let user_id = found.user.id;
        let mut loaded = Some((found, found_version));
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            // The batch is conditional on this exact version of the user;
            // after a conflict, reload.
            let current = match loaded.take() {
                Some(first) => Some(first),
                None => self.load_user(user_id).await?,
            };
            let Some((mut user, version)) = current else {
                return Err(AuthError::InvalidCredentials.into());
            };
            if user.user.status != UserStatus::Active || user.password_hash != verified_hash {
                return Err(AuthError::InvalidCredentials.into());
            }
            let mut batch = Batch::new();
            let user_key = keys::user(self.realm, user.user.id);
            if let Some(new_hash) = &rehash {
                user.password_hash.clone_from(new_hash);
                batch.put(
                    user_key.clone(),
                    record::encode(user_key.as_bytes(), &UserRecord::V1(user.clone()))?,
                    Precondition::Version(version),
                )?;
            } else {
                batch.check(user_key, Precondition::Version(version))?;
            }
            batch.delete(keys::lockout(self.realm, &username_key), Precondition::Any)?;
            let outcome = self
                .next_step(&mut batch, &realm, &user, vec![AuthMethod::Pwd], now)
                .await?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(outcome),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| AuthError::InvalidCredentials.into(), Error::from))
    }

    /// What follows a passed first factor (`methods`), added to `batch`: a
    /// session when no second factor is due; an MFA challenge naming the
    /// factors the user can answer with; or, when the realm requires MFA
    /// and the user has no active factor, an enrolment challenge.
    pub(crate) async fn next_step(
        &self,
        batch: &mut Batch,
        realm: &Realm,
        user: &StoredUser,
        methods: Vec<AuthMethod>,
        now: DateTime<Utc>,
    ) -> Result<LoginOutcome, Error> {
        let passkeys = crate::webauthn::Webauthn {
            users: self.clone(),
        }
        .usable_credentials(user.user.id)
        .await?;
        if user.active_factors > 0 || passkeys > 0 {
            let mut factors = Vec::with_capacity(4);
            if user.active_factors > 0 {
                factors.push(MfaFactor::Totp);
            }
            if passkeys > 0 {
                factors.push(MfaFactor::Webauthn);
            }
            if self.mfa().recovery_codes_left(user.user.id).await? > 0 {
                factors.push(MfaFactor::Recovery);
            }
            factors.push(MfaFactor::TrustedDevice);
            let challenge = self.add_challenge(
                batch,
                user,
                methods,
                ChallengePurpose::SecondFactor,
                factors,
                now,
            )?;
            return Ok(LoginOutcome::MfaRequired { challenge });
        }
        if realm.settings.mfa == MfaPolicy::Required {
            let challenge = self.add_challenge(
                batch,
                user,
                methods,
                ChallengePurpose::Enrollment,
                vec![MfaFactor::Totp],
                now,
            )?;
            return Ok(LoginOutcome::MfaEnrollmentRequired { challenge });
        }
        let session = self.add_session(batch, user, methods, Vec::new(), None, now)?;
        Ok(LoginOutcome::Authenticated(session))
    }

    /// Add a pending challenge for `user`, who already passed `methods`, to
    /// `batch`.
    fn add_challenge(
        &self,
        batch: &mut Batch,
        user: &StoredUser,
        methods: Vec<AuthMethod>,
        purpose: ChallengePurpose,
        factors: Vec<MfaFactor>,
        now: DateTime<Utc>,
    ) -> Result<Challenge, Error> {
        let challenge = Challenge {
            id: ChallengeId::generate(now),
            user: user.user.id,
            realm: self.realm,
            created_at: now,
            expires_at: now + chrono::Duration::seconds(CHALLENGE_TTL_SECS),
            methods,
            purpose,
            factors,
        };
        let key = keys::challenge(self.realm, challenge.id);
        batch.put(
            key.clone(),
            record::encode(
                key.as_bytes(),
                &ChallengeRecord::V2 {
                    challenge: challenge.clone(),
                    epoch: user.session_epoch,
                },
            )?,
            Precondition::Absent,
        )?;
        Ok(challenge)
    }

    /// A pending MFA challenge that has not expired and whose user is still
    /// active (with the same session epoch), for the MFA service to
    /// complete; otherwise `CHALLENGE_NOT_FOUND`.
    pub async fn pending_challenge(&self, id: ChallengeId) -> Result<Challenge, Error> {
        self.active_realm().await?;
        let now = self.now();
        Ok(self.live_challenge(id, now).await?.challenge)
    }

    /// The live challenge `id` at `now` with the versions the MFA service
    /// needs to consume it in one batch (challenge deleted with `Version`,
    /// user record checked with `Version`); otherwise `CHALLENGE_NOT_FOUND`.
    pub(crate) async fn live_challenge(
        &self,
        id: ChallengeId,
        now: DateTime<Utc>,
    ) -> Result<LiveChallenge, Error> {
        let key = keys::challenge(self.realm, id);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(AuthError::ChallengeNotFound)?;
        let (challenge, epoch) =
            record::decode::<ChallengeRecord>(key.as_bytes(), &stored.value)?.into_parts();
        let user = self
            .load_user(challenge.user)
            .await?
            .filter(|(u, _)| u.user.status == UserStatus::Active && u.session_epoch == epoch);
        let Some((user, user_version)) = user else {
            return Err(AuthError::ChallengeNotFound.into());
        };
        if now >= challenge.expires_at {
            return Err(AuthError::ChallengeNotFound.into());
        }
        Ok(LiveChallenge {
            challenge,
            version: stored.version,
            user,
            user_version,
        })
    }
}

/// [`Challenge`] as `ChallengeRecord::V1` stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChallengeV1 {
    id: ChallengeId,
    user: UserId,
    realm: RealmId,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    methods: Vec<AuthMethod>,
}

impl ChallengeV1 {
    /// V1 challenges were all second-factor challenges open to every
    /// factor of that release.
    pub(crate) fn upgrade(self) -> Challenge {
        Challenge {
            id: self.id,
            user: self.user,
            realm: self.realm,
            created_at: self.created_at,
            expires_at: self.expires_at,
            methods: self.methods,
            purpose: ChallengePurpose::SecondFactor,
            factors: vec![
                MfaFactor::Totp,
                MfaFactor::Recovery,
                MfaFactor::TrustedDevice,
            ],
        }
    }
}

/// A live challenge with what completing it must be conditional on.
pub(crate) struct LiveChallenge {
    pub(crate) challenge: Challenge,
    pub(crate) version: u64,
    pub(crate) user: StoredUser,
    pub(crate) user_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let bytes = |last| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let challenge = Challenge {
            id: ChallengeId::from_bytes(bytes(5)).unwrap(),
            user: UserId::from_bytes(bytes(2)).unwrap(),
            realm: RealmId::from_bytes(bytes(1)).unwrap(),
            created_at: at,
            expires_at: at + chrono::Duration::seconds(300),
            methods: vec![AuthMethod::Pwd],
            purpose: ChallengePurpose::SecondFactor,
            factors: vec![
                MfaFactor::Totp,
                MfaFactor::Recovery,
                MfaFactor::TrustedDevice,
            ],
        };
        let current = ChallengeRecord::V2 {
            challenge: challenge.clone(),
            epoch: 2,
        };
        crate::store::record::assert_golden(&current, GOLDEN_CHALLENGE_V2);
        // A V1 record of an earlier release decodes as a second-factor
        // challenge open to every factor of that release.
        let old: ChallengeRecord =
            record::decode(b"k", &crate::store::key::unhex(GOLDEN_CHALLENGE_V1)).unwrap();
        assert_eq!(old.into_parts(), (challenge, 2));
    }

    const GOLDEN_CHALLENGE_V1: &str = "010010018bcfe568007000800000000000000510018bcfe568007000800000000000000210018bcfe568007000800000000000000114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31383a32305a010002";
    const GOLDEN_CHALLENGE_V2: &str = "010110018bcfe568007000800000000000000510018bcfe568007000800000000000000210018bcfe568007000800000000000000114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31383a32305a0100000300010202";
}
