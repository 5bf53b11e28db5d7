//! Time as an input: expiry and back-off logic ask a [`Clock`], so tests can
//! step time instead of sleeping.

use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The real clock (UTC).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[cfg(any(test, feature = "test-hooks"))]
pub use manual::ManualClock;

/// Test code only: it exists in builds with the `test-hooks` feature (the
/// integration tests turn it on), never in a release build of the service.
#[cfg(any(test, feature = "test-hooks"))]
mod manual {
    use std::sync::Mutex;
    use std::time::Duration;

    use time::OffsetDateTime;

    use super::Clock;

    /// A clock that only moves when told to.
    #[derive(Debug)]
    pub struct ManualClock(Mutex<OffsetDateTime>);

    impl ManualClock {
        pub fn new(start: OffsetDateTime) -> Self {
            Self(Mutex::new(start))
        }

        pub fn advance(&self, by: Duration) {
            if let Ok(mut t) = self.0.lock() {
                *t += by;
            }
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> OffsetDateTime {
            self.0
                .lock()
                .map(|t| *t)
                .unwrap_or_else(|p| *p.into_inner())
        }
    }
}
