//! Throttling of failed logins: exponential back-off and a hard cap.
//!
//! NIST SP 800-63B §5.2.2 ("Rate Limiting (Throttling)") requires a verifier
//! to limit consecutive failed authentication attempts on one account to no
//! more than 100, and allows techniques such as waiting periods that grow
//! with the number of failures. keystead applies the realm's
//! [`LockoutPolicy`]:
//!
//! * a counter of **consecutive** failures per username, reset by a
//!   successful login, an administrator's [`Users::unlock`] or a password
//!   change;
//! * the first `free_attempts` failures cost nothing; after failure number
//!   `n ≥ free_attempts` the next attempt must wait
//!   `min(base_delay · 2^(n − free_attempts), max_delay)` from that failure;
//! * after `hard_cap` (≤ 100, validated on the realm settings) consecutive
//!   failures the account is locked until an administrator unlocks it.
//!
//! An attempt made while throttled or locked is refused with
//! `TOO_MANY_ATTEMPTS` **before** any password is checked: no argon2 runs,
//! and the refused attempt is not counted (it could not have succeeded).
//!
//! An admitted attempt is counted as a failure, and its password result is
//! used only once that count has landed (the write runs alongside the argon2
//! check, so its fsync hides behind the hash); a success then resets the
//! counter in the same batch that opens the session. Admission and increment are one compare-and-swap, so
//! concurrent attempts are admitted one at a time against the current count:
//! a burst of parallel guesses can't slip past the back-off or the hard cap
//! (of 20 simultaneous attempts with 5 free ones, exactly 5 reach argon2).
//!
//! The counter is keyed by the normalised username, not the user id, so an
//! unknown username is throttled exactly like a real one and the lockout
//! response can't be used to discover accounts. (This means attempts on
//! unknown names leave small counter records behind; they are bounded by the
//! username length rule and removed by a success, `unlock` or user deletion.)
//!
//! The counter record is updated with compare-and-swap (`Version(v)`, or
//! `Absent` for the first failure) and the update is retried until it lands
//! or the attempt is refused, so concurrent failures are all counted: each
//! lost race means another attempt was counted first.

use super::keys;
use super::service::Users;
use crate::error::Error;
use crate::id::UserId;
use crate::realm::LockoutPolicy;
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many times recording one failure may lose a race before giving up.
/// Every lost race means another concurrent failure was recorded, so this
/// bounds the number of attempts racing on one username, not correctness.
const FAILURE_RETRIES: usize = 256;

/// The consecutive-failure counter of one username.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Consecutive failed attempts.
    pub failures: u32,
    /// When the last one happened.
    pub last_failure_at: Option<DateTime<Utc>>,
}

/// Whether an attempt may be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the password.
    Allowed,
    /// Refuse; the caller may retry after this long.
    Wait(std::time::Duration),
    /// Refuse until an administrator unlocks the account.
    Locked,
}

impl LockoutState {
    /// The waiting period imposed after the current number of failures
    /// (zero while within the free attempts).
    pub fn delay(&self, policy: &LockoutPolicy) -> std::time::Duration {
        let Some(excess) = self.failures.checked_sub(policy.free_attempts) else {
            return std::time::Duration::ZERO;
        };
        let factor = 1u64 << excess.min(32);
        let secs = u64::from(policy.base_delay_secs)
            .saturating_mul(factor)
            .min(u64::from(policy.max_delay_secs));
        std::time::Duration::from_secs(secs)
    }

    /// The pure admission rule at `now`.
    pub fn admission(&self, policy: &LockoutPolicy, now: DateTime<Utc>) -> Admission {
        if self.failures >= policy.hard_cap {
            return Admission::Locked;
        }
        let delay = self.delay(policy);
        let Some(last) = self.last_failure_at else {
            return Admission::Allowed;
        };
        let Ok(delay_chrono) = chrono::Duration::from_std(delay) else {
            return Admission::Locked;
        };
        let Some(until) = last.checked_add_signed(delay_chrono) else {
            return Admission::Locked;
        };
        if now < until {
            Admission::Wait((until - now).to_std().unwrap_or(delay))
        } else {
            Admission::Allowed
        }
    }

    /// The state after one more failure at `now`.
    #[must_use]
    pub fn with_failure(self, now: DateTime<Utc>) -> Self {
        Self {
            failures: self.failures.saturating_add(1),
            last_failure_at: Some(now),
        }
    }
}

/// How a lockout counter is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LockoutRecord {
    V1(LockoutState),
}

impl Users {
    /// Load the counter of a normalised username and its version.
    pub(crate) async fn load_lockout(
        &self,
        username_key: &str,
    ) -> Result<(LockoutState, Option<u64>), Error> {
        let key = keys::lockout(self.realm, username_key);
        match self.ctx.store.get(key.as_bytes()).await? {
            None => Ok((LockoutState::default(), None)),
            Some(stored) => {
                let LockoutRecord::V1(state) = record::decode(key.as_bytes(), &stored.value)?;
                Ok((state, Some(stored.version)))
            }
        }
    }

    /// Admit one attempt on `username_key` at `now`, counting it as a
    /// failure before any password is checked; or refuse it with
    /// `TOO_MANY_ATTEMPTS` without writing anything. The admission check and
    /// the increment are one compare-and-swap, retried on conflict with a
    /// fresh check, so concurrent attempts are admitted one at a time.
    /// `preloaded` is the counter as just read, saving the first read.
    pub(crate) async fn reserve_attempt(
        &self,
        username_key: &str,
        policy: &LockoutPolicy,
        now: DateTime<Utc>,
        mut preloaded: Option<(LockoutState, Option<u64>)>,
    ) -> Result<(), Error> {
        let key = keys::lockout(self.realm, username_key);
        let mut last = None;
        for _ in 0..FAILURE_RETRIES {
            let (state, version) = match preloaded.take() {
                Some(loaded) => loaded,
                None => self.load_lockout(username_key).await?,
            };
            super::login::admission_result(state.admission(policy, now))?;
            let next = state.with_failure(now);
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &LockoutRecord::V1(next))?,
                version.map_or(Precondition::Absent, Precondition::Version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| StorageError::Conflict {
                key: key.into_bytes(),
            })
            .into())
    }

    /// The failure counter of a user (for administration and tests).
    pub async fn lockout(&self, user: UserId) -> Result<LockoutState, Error> {
        self.active_realm().await?;
        let (stored, _) = self.require_user(user).await?;
        Ok(self.load_lockout(&stored.username_key).await?.0)
    }

    /// Clear a user's failure counter, lifting a back-off or a hard lock.
    pub async fn unlock(&self, user: UserId) -> Result<(), Error> {
        self.active_realm().await?;
        let (stored, _) = self.require_user(user).await?;
        let mut batch = Batch::new();
        batch.delete(
            keys::lockout(self.realm, &stored.username_key),
            Precondition::Any,
        )?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn back_off_doubles_and_caps() {
        let policy = LockoutPolicy {
            free_attempts: 3,
            base_delay_secs: 2,
            max_delay_secs: 10,
            hard_cap: 8,
        };
        let mut s = LockoutState::default();
        for i in 0..3 {
            assert_eq!(s.admission(&policy, at(i)), Admission::Allowed);
            s = s.with_failure(at(i));
        }
        // 3 failures: wait 2 s from the last one.
        assert_eq!(
            s.admission(&policy, at(2)),
            Admission::Wait(std::time::Duration::from_secs(2))
        );
        assert_eq!(s.admission(&policy, at(4)), Admission::Allowed);
        s = s.with_failure(at(4));
        assert_eq!(s.delay(&policy).as_secs(), 4);
        s = s.with_failure(at(10));
        assert_eq!(s.delay(&policy).as_secs(), 8);
        s = s.with_failure(at(20));
        assert_eq!(s.delay(&policy).as_secs(), 10, "capped at max_delay");
        s = s.with_failure(at(40));
        assert_eq!(s.failures, 7);
        s = s.with_failure(at(60));
        assert_eq!(s.admission(&policy, at(1_000_000)), Admission::Locked);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let policy = LockoutPolicy::default();
        let s = LockoutState {
            failures: u32::MAX,
            last_failure_at: Some(at(0)),
        };
        assert_eq!(s.delay(&policy).as_secs(), 900);
        assert_eq!(s.with_failure(at(1)).failures, u32::MAX);
        assert_eq!(s.admission(&policy, at(5)), Admission::Locked);
    }

    proptest::proptest! {
        #[test]
        fn delay_is_monotone_and_bounded(
            free in 0u32..10,
            base in 1u32..100,
            extra in 0u32..1000,
            cap in 11u32..=100,
            n in 0u32..200,
        ) {
            let policy = LockoutPolicy {
                free_attempts: free,
                base_delay_secs: base,
                max_delay_secs: base + extra,
                hard_cap: cap,
            };
            let s = LockoutState { failures: n, last_failure_at: Some(at(0)) };
            let next = s.with_failure(at(1));
            proptest::prop_assert!(s.delay(&policy) <= next.delay(&policy));
            proptest::prop_assert!(next.delay(&policy).as_secs() <= u64::from(base + extra));
            proptest::prop_assert_eq!(next.failures, n + 1);
            if n >= cap {
                proptest::prop_assert_eq!(s.admission(&policy, at(1_000_000_000)), Admission::Locked);
            } else if n < free {
                proptest::prop_assert_eq!(s.admission(&policy, at(0)), Admission::Allowed);
            }
        }
    }

    #[test]
    fn record_golden_bytes() {
        let record = LockoutRecord::V1(LockoutState {
            failures: 7,
            last_failure_at: Some(at(0)),
        });
        crate::store::record::assert_golden(
            &record,
            "0100070114323032332d31312d31345432323a31333a32305a",
        );
    }
}
