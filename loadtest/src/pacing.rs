//! The send schedule: event `i` (0-based) of a run is due at `i / rate`
//! seconds after the clock starts.
//!
//! The driver wakes every [`TICK`] and sends every event that is due by
//! then. The count due is computed from the time elapsed since the start,
//! never by adding a fixed number per tick, so a late wake-up (a busy core,
//! a slow `send`) is caught up on the next tick and the long-run rate stays
//! exactly the target; what a late tick costs shows as the lag behind
//! schedule the report prints.

use std::time::Duration;

/// How often the driver wakes to send what is due.
pub const TICK: Duration = Duration::from_millis(1);

/// A fixed-rate schedule of `total` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Events per second.
    pub rate: u64,
    /// Events in the run.
    pub total: u64,
}

impl Schedule {
    /// `rate` events/s for `duration` (at least one event).
    pub fn new(rate: u64, duration: Duration) -> Self {
        let rate = rate.max(1);
        let total = (u128::from(rate) * duration.as_micros() / 1_000_000).max(1);
        Self {
            rate,
            total: u64::try_from(total).unwrap_or(u64::MAX),
        }
    }

    /// How many events are due once `elapsed` has passed since the start:
    /// those whose scheduled time is at or before `elapsed`.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let due = u128::from(self.rate) * elapsed.as_micros() / 1_000_000 + 1;
        u64::try_from(due).unwrap_or(u64::MAX).min(self.total)
    }

    /// When event `i` (0-based) is due, after the start (rounded up to the
    /// microsecond, so that `due_by(due_at(i))` includes event `i`).
    pub fn due_at(&self, i: u64) -> Duration {
        let micros = (u128::from(i) * 1_000_000).div_ceil(u128::from(self.rate));
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn totals_follow_rate_and_duration() {
        assert_eq!(Schedule::new(10_000, 30 * S).total, 300_000);
        assert_eq!(
            Schedule::new(5_000, Duration::from_millis(1_500)).total,
            7_500
        );
        assert_eq!(Schedule::new(0, 30 * S).rate, 1);
        assert_eq!(Schedule::new(10, Duration::ZERO).total, 1);
    }

    #[test]
    fn the_first_event_is_due_at_once_and_the_last_at_the_end() {
        let s = Schedule::new(10_000, 30 * S);
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_at(0), Duration::ZERO);
        let last = s.due_at(s.total - 1);
        assert_eq!(last, Duration::from_micros(29_999_900));
        assert_eq!(s.due_by(last), s.total);
        assert_eq!(s.due_by(last - Duration::from_micros(1)), s.total - 1);
        assert_eq!(s.due_by(3_600 * S), s.total, "never more than the total");
    }

    #[test]
    fn each_tick_sends_rate_times_tick() {
        let s = Schedule::new(10_000, 30 * S);
        let per_tick: Vec<u64> = (1..=1_000u32)
            .map(|k| s.due_by(TICK * k) - s.due_by(TICK * (k - 1)))
            .collect();
        assert!(per_tick.iter().all(|&n| n == 10), "{per_tick:?}");
        // A rate that does not divide into ticks alternates, averaging out.
        let s = Schedule::new(2_500, 30 * S);
        let sent: u64 = (1..=1_000u32)
            .map(|k| s.due_by(TICK * k) - s.due_by(TICK * (k - 1)))
            .sum();
        assert_eq!(sent, 2_500);
    }

    #[test]
    fn a_late_tick_is_caught_up_not_lost() {
        let s = Schedule::new(1_000, 10 * S);
        // Woken 250 ms late after 1 s: everything due by then is owed at once.
        assert_eq!(s.due_by(Duration::from_millis(1_250)), 1_251);
        assert_eq!(
            s.due_by(Duration::from_millis(1_250)) - s.due_by(S),
            250,
            "the missed events are sent on the late tick"
        );
    }

    #[test]
    fn due_at_and_due_by_agree() {
        let s = Schedule::new(7_777, 3 * S);
        for i in [0, 1, 2, 100, 7_776, 7_777, s.total - 1] {
            assert!(
                s.due_by(s.due_at(i)) > i,
                "event {i} is due at its own time"
            );
        }
    }
}
