//! The one back-off of the runtime and the stages: exponential with
//! jitter (`backon`), capped, reset after a success.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays between retries: `min`, then doubling (plus up to as much again
/// in jitter, so copies that failed together do not retry together), at
/// most `max` before jitter.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A back-off from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .without_max_times()
            .with_jitter();
        Self {
            builder,
            delays: builder.build(),
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // The back-off has no limit on attempts: `next` always answers.
        self.delays.next().unwrap_or(self.max)
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        if self.failures > 0 {
            self.delays = self.builder.build();
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_start_again_after_a_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        let mut b = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= min && delays[0] <= 2 * min, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 2 * max), "{delays:?}");
        assert!(delays[7] >= max, "capped at max (plus jitter): {delays:?}");
        assert_eq!(b.failures(), 8);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= 2 * min);
    }
}
