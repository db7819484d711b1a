//! Time as a parameter.
//!
//! Every rule that depends on time (expiry, lockout windows, TOTP steps, token
//! lifetimes) takes `now` as an argument; services read it once per operation
//! from a [`Clock`]. Storage adapters never read the clock, so a test can move
//! time forward without sleeping and a replayed operation sees the same `now`.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(feature = "test-utils")]
pub use manual::ManualClock;

#[cfg(feature = "test-utils")]
mod manual {
    use super::Clock;
    use chrono::{DateTime, Duration, Utc};
    use std::sync::{Arc, Mutex, PoisonError};

    /// A clock that only moves when told to; clones share one time.
    ///
    /// For tests of expiry, lockout and replay rules without sleeping.
    #[derive(Debug, Clone)]
    pub struct ManualClock {
        now: Arc<Mutex<DateTime<Utc>>>,
    }

    impl ManualClock {
        /// A clock frozen at `start`.
        pub fn new(start: DateTime<Utc>) -> Self {
            Self {
                now: Arc::new(Mutex::new(start)),
            }
        }

        /// Jump to `instant` (may move backwards, to test clock skew).
        pub fn set(&self, instant: DateTime<Utc>) {
            *self.now.lock().unwrap_or_else(PoisonError::into_inner) = instant;
        }

        /// Move forward (or backward, with a negative duration) by `by`.
        pub fn advance(&self, by: Duration) {
            let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
            *now += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.now.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn clones_share_time_and_advance() {
            let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
            let clock = ManualClock::new(start);
            let other = clock.clone();
            clock.advance(Duration::seconds(30));
            assert_eq!(other.now(), start + Duration::seconds(30));
            other.set(start);
            assert_eq!(clock.now(), start);
        }
    }
}
