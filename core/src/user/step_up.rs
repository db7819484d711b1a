//! Step-up: how recent an authentication a change to a user's credentials
//! needs.
//!
//! A bearer token proves that *someone* holds it, not that the user is
//! there now. Adding or removing a credential (password, TOTP key, passkey,
//! recovery codes, trusted device, application token) from a token alone
//! would let a leaked token — or a long-lived scoped one — become a
//! permanent login. So every such call takes an [`Authority`], and the
//! library checks it before anything is written:
//!
//! * [`Authority::Session`]: the user's own session, which must hold
//!   *fresh* proofs of the factors the change needs;
//! * [`Authority::Operator`]: the embedder's own operator path (an admin
//!   console acting on its own credentials, an account-recovery desk).
//!   Nothing checks it: use it only where the caller is not the user's
//!   bearer token.
//!
//! # Policy
//!
//! A session remembers when each factor was last proved: at login, and
//! again by a re-authentication ([`Users::reauthenticate`] with the
//! password, [`Mfa::reauthenticate`](crate::mfa::Mfa::reauthenticate) with
//! a TOTP code, recovery code or passkey). A proof is fresh for the realm's
//! [`StepUpPolicy::max_age_secs`](crate::realm::StepUpPolicy) (default five
//! minutes). A change needs:
//!
//! 1. a fresh first factor: password (`pwd`), magic link (`magic_link`) or
//!    passkey (`hwk`/`swk`);
//! 2. and, when the user has a second factor (an active TOTP key or a
//!    passkey) or the realm requires MFA, a fresh second factor: TOTP
//!    (`otp`), recovery code (`recovery`) or passkey. A passkey with user
//!    verification is both.
//!
//! An application-token session (`app_token`) and a trusted-device login
//! prove neither: they are how a user *avoids* re-entering factors. A
//! refusal is `STEP_UP_REQUIRED` with the `max_age` to ask for and whether
//! a second factor is missing (RFC 9470's `insufficient_user_authentication`).
//! Tokens that never authorize a change, whatever their session — scoped,
//! exchanged (delegated) and one-time-token access tokens — are refused by
//! [`AccessClaims::authority`](crate::token::AccessClaims::authority).

use super::service::Users;
use super::session::Proof;
use super::{AuthError, AuthMethod, SessionRecord, StoredSession, StoredUser, keys};
use crate::error::Error;
use crate::id::{SessionId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::realm::{MfaPolicy, Realm};
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};

/// Who vouches for a change to a user's credentials; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The user, through this session of theirs: it must hold fresh proofs
    /// of the factors the change needs.
    Session(SessionId),
    /// A token handed on from the user's login — scoped, exchanged or made
    /// from a one-time token ([`AccessClaims::authority`](crate::token::AccessClaims::authority)):
    /// never authorizes a change (`STEP_UP_REQUIRED`), however fresh its
    /// session.
    Delegated,
    /// The embedder's operator, not the user: no freshness check. Never
    /// derive this from a user's request.
    Operator,
}

/// Methods that prove the first factor.
const FIRST: &[AuthMethod] = &[
    AuthMethod::Pwd,
    AuthMethod::MagicLink,
    AuthMethod::Hwk,
    AuthMethod::Swk,
];
/// Methods that prove a second factor.
const SECOND: &[AuthMethod] = &[
    AuthMethod::Otp,
    AuthMethod::Recovery,
    AuthMethod::Hwk,
    AuthMethod::Swk,
];

impl AuthMethod {
    /// Whether this method proves a second factor (TOTP, a recovery code,
    /// a passkey — which is something the user has and, verified, is or
    /// knows). A trusted device and an application token prove nothing.
    pub fn proves_second_factor(self) -> bool {
        SECOND.contains(&self)
    }
}

/// Whether `proofs` satisfy the [policy](self) at `now`: `Ok`, or the
/// `STEP_UP_REQUIRED` to answer with. `just_proved` are methods the call
/// itself proves now (the current password of a password change).
pub(crate) fn judge(
    proofs: &[Proof],
    just_proved: &[AuthMethod],
    needs_second: bool,
    max_age_secs: u32,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let oldest = now - chrono::Duration::seconds(i64::from(max_age_secs));
    let fresh = |wanted: &[AuthMethod]| {
        just_proved.iter().any(|m| wanted.contains(m))
            || proofs
                .iter()
                .any(|p| wanted.contains(&p.method) && p.at >= oldest && p.at <= now)
    };
    let second_ok = !needs_second || fresh(SECOND);
    if fresh(FIRST) && second_ok {
        Ok(())
    } else {
        Err(AuthError::StepUpRequired {
            max_age_secs,
            needs_mfa: !second_ok,
        })
    }
}

impl Users {
    /// Check that `by` may change the credentials of `user` now (see the
    /// [module docs](self)); `just_proved` are factors the calling
    /// operation proves itself. `SESSION_NOT_FOUND` for a session that is
    /// gone or another user's, `STEP_UP_REQUIRED` for a stale one.
    pub(crate) async fn authorize_change(
        &self,
        user: UserId,
        by: Authority,
        just_proved: &[AuthMethod],
    ) -> Result<(), Error> {
        let realm = self.active_realm().await?;
        let max_age_secs = realm.settings.step_up.max_age_secs;
        let id = match by {
            Authority::Operator => return Ok(()),
            Authority::Delegated => {
                return Err(AuthError::StepUpRequired {
                    max_age_secs,
                    needs_mfa: false,
                }
                .into());
            }
            Authority::Session(id) => id,
        };
        let (session, _) = self.live_session(id).await?;
        if session.session.user != user {
            return Err(AuthError::SessionNotFound.into());
        }
        let (stored, _) = self.require_user(user).await?;
        let needs_second = self.has_second_factor(&realm, &stored).await?;
        judge(
            &session.proofs,
            just_proved,
            needs_second,
            max_age_secs,
            self.now(),
        )
        .map_err(Error::from)
    }

    /// Whether a change for `user` needs a second factor: the user has one
    /// (TOTP key or usable passkey), or the realm requires MFA.
    async fn has_second_factor(&self, realm: &Realm, user: &StoredUser) -> Result<bool, Error> {
        if realm.settings.mfa == MfaPolicy::Required || user.active_factors > 0 {
            return Ok(true);
        }
        let passkeys = crate::webauthn::Webauthn {
            users: self.clone(),
        }
        .usable_credentials(user.user.id)
        .await?;
        Ok(passkeys > 0)
    }

    /// Re-authenticate the user of `session` with their password: the
    /// check of [`verify_password`](Self::verify_password) (counted on the
    /// failure counter, `INVALID_CREDENTIALS` when wrong), then the session
    /// records a fresh `pwd` proof for [step-up](self).
    pub async fn reauthenticate(
        &self,
        session: SessionId,
        password: SecretString,
    ) -> Result<(), Error> {
        let (found, _) = self.live_session(session).await?;
        self.verify_password(found.session.user, password).await?;
        self.record_proof(session, AuthMethod::Pwd).await
    }

    /// Record on `session` that its user proved `method` now (replacing an
    /// older proof of the same method).
    pub(crate) async fn record_proof(
        &self,
        session: SessionId,
        method: AuthMethod,
    ) -> Result<(), Error> {
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (stored, version) = self.live_session(session).await?;
            let mut batch = Batch::new();
            self.proof_writes(&mut batch, stored, version, method, self.now())?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| AuthError::SessionNotFound.into(), Error::from))
    }

    /// Add to `batch` the rewrite of session `stored` (at `version`) with a
    /// fresh proof of `method`.
    pub(crate) fn proof_writes(
        &self,
        batch: &mut Batch,
        mut stored: StoredSession,
        version: u64,
        method: AuthMethod,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        stored.proofs.retain(|p| p.method != method);
        stored.proofs.push(Proof { method, at: now });
        let key = keys::session(self.realm, stored.session.id);
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &SessionRecord::V2(stored))?,
            Precondition::Version(version),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn proofs(list: &[(AuthMethod, i64)]) -> Vec<Proof> {
        list.iter()
            .map(|&(method, secs)| Proof {
                method,
                at: at(secs),
            })
            .collect()
    }

    /// Proofs (method, seconds after the start), methods the call proves
    /// itself, whether a second factor is needed, and the outcome: `None`
    /// passes, `Some(needs_mfa)` is refused.
    type Case = (
        &'static [(AuthMethod, i64)],
        &'static [AuthMethod],
        bool,
        Option<bool>,
    );

    #[test]
    fn the_policy_table() {
        use AuthMethod::*;
        let now = at(1000);
        let cases: &[Case] = &[
            (&[(Pwd, 900)], &[], false, None),
            (&[(Pwd, 699)], &[], false, Some(false)), // 301 s old
            (&[(Pwd, 700)], &[], false, None),        // exactly max_age
            (&[(Pwd, 900)], &[], true, Some(true)),
            (&[(Pwd, 900), (Otp, 950)], &[], true, None),
            (&[(Pwd, 900), (Otp, 100)], &[], true, Some(true)),
            (&[(Pwd, 100), (Otp, 950)], &[], true, Some(false)),
            (&[(Swk, 950)], &[], true, None),
            (&[(Hwk, 950)], &[], true, None),
            (&[(MagicLink, 950)], &[], false, None),
            (&[(MagicLink, 950)], &[], true, Some(true)),
            (&[(Recovery, 950), (Pwd, 950)], &[], true, None),
            (&[(AppToken, 999)], &[], false, Some(false)),
            (&[(Otp, 999)], &[], true, Some(false)),
            (&[], &[Pwd], false, None),
            (&[(Pwd, 100)], &[Pwd], true, Some(true)),
            (&[(Otp, 990)], &[Pwd], true, None),
            // A proof from the future (clock skew, tampering) is not fresh.
            (&[(Pwd, 2000)], &[], false, Some(false)),
        ];
        for (i, (list, just, needs_second, expected)) in cases.iter().enumerate() {
            let got = judge(&proofs(list), just, *needs_second, 300, now);
            match expected {
                None => assert_eq!(got, Ok(()), "case {i}"),
                Some(needs_mfa) => assert_eq!(
                    got,
                    Err(AuthError::StepUpRequired {
                        max_age_secs: 300,
                        needs_mfa: *needs_mfa
                    }),
                    "case {i}"
                ),
            }
        }
    }
}
