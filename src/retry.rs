//! The retry policy, as plain data, and the delays it gives: exponential backoff
//! (from `backon`) with full jitter, a cap, a floor for maintenance (455), and the
//! service's `Retry-After` when it sends one.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::api::ApiError;

/// How a request is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries of one request in all, the first included.
    pub max_attempts: u32,
    /// The nominal delay before the first retry; it doubles with each retry.
    pub base: Duration,
    /// No delay is longer than this (a `Retry-After` excepted).
    pub cap: Duration,
    /// A 455 (maintenance) waits at least this long.
    pub maintenance_floor: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        base: Duration::from_secs(2),
        cap: Duration::from_secs(60),
        maintenance_floor: Duration::from_secs(30),
    };

    /// Nominal delays before retry 1, 2, ... (`max_attempts - 1` of them).
    pub fn nominal_delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.cap)
            .with_factor(2.0)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }

    /// The delay to wait after `error`, given the nominal one: full jitter (uniform in
    /// zero to nominal, so that many jobs refused together do not retry together),
    /// raised to the maintenance floor for 455, replaced by `Retry-After` when sent.
    pub fn delay(&self, nominal: Duration, error: &ApiError, rng: &mut fastrand::Rng) -> Duration {
        if let Some(after) = error.retry_after {
            return after.min(self.cap.max(self.maintenance_floor) * 10);
        }
        let jittered = nominal.mul_f64(rng.f64());
        if error.code == Some(455) {
            jittered.max(self.maintenance_floor)
        } else {
            jittered
        }
    }

    /// Scales every duration (the simulator's time scale).
    pub fn scaled(self, factor: f64) -> RetryPolicy {
        RetryPolicy {
            base: self.base.mul_f64(factor),
            cap: self.cap.mul_f64(factor),
            maintenance_floor: self.maintenance_floor.mul_f64(factor),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::ErrorClass;

    fn err(code: i64, retry_after: Option<Duration>) -> ApiError {
        ApiError {
            class: ErrorClass::Retryable,
            code: Some(code),
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_stop() {
        let p = RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(2),
            cap: Duration::from_secs(20),
            maintenance_floor: Duration::from_secs(30),
        };
        let secs: Vec<u64> = p.nominal_delays().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 20, 20, 20]);
        let one = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(one.nominal_delays().count(), 0);
    }

    #[test]
    fn retry_after_and_maintenance() {
        let p = RetryPolicy::DEFAULT;
        let mut rng = fastrand::Rng::with_seed(1);
        let nominal = Duration::from_secs(4);
        assert_eq!(
            p.delay(nominal, &err(429, Some(Duration::from_secs(7))), &mut rng),
            Duration::from_secs(7)
        );
        assert!(p.delay(nominal, &err(455, None), &mut rng) >= p.maintenance_floor);
    }

    proptest! {
        #[test]
        fn full_jitter_stays_within_nominal(seed in any::<u64>(), ms in 0u64..120_000) {
            let p = RetryPolicy::DEFAULT;
            let mut rng = fastrand::Rng::with_seed(seed);
            let nominal = Duration::from_millis(ms);
            let d = p.delay(nominal, &err(500, None), &mut rng);
            prop_assert!(d <= nominal);
        }

        #[test]
        fn attempts_are_bounded(max in 1u32..20) {
            let p = RetryPolicy { max_attempts: max, ..RetryPolicy::DEFAULT };
            prop_assert_eq!(p.nominal_delays().count() as u32, max - 1);
            prop_assert!(p.nominal_delays().all(|d| d <= p.cap));
        }
    }
}
