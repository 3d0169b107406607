//! Whether a sink stage has read what its partitions held when it got
//! them: each partition placed is expected to reach the log's end as it
//! was then (under `read_committed`, its last stable offset), measured by
//! the consumer's position, which moves past transaction markers that
//! follow the last record. Pure: the loop feeds it the log's bounds and
//! the consumer's positions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::runtime::source::LogBounds;

type Tp = (String, i32);

/// How often the partitions still behind are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The end each partition must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The log's end when placed.
    End(i64),
    /// The broker did not say: asked again at the next check.
    Unknown,
}

/// What a sink stage still has to catch up on.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    targets: BTreeMap<Tp, Target>,
    /// Since when a placement is waiting to be reported caught up.
    since: Option<Instant>,
    last_log: Option<Instant>,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Check {
    /// Every placed partition reached its end: after this long.
    CaughtUp(Duration),
    /// Still behind; log these (`topic/partition at position of end`)
    /// when `Some`.
    Behind(Option<Vec<String>>),
    /// Nothing new since the last report.
    Quiet,
}

impl CatchUp {
    /// `part` is read from `from` (`None`: the log's start); the log's
    /// bounds were `bounds` (`None`: the broker did not say).
    pub fn placed(&mut self, part: Tp, from: Option<i64>, bounds: Option<LogBounds>, now: Instant) {
        self.since.get_or_insert(now);
        match bounds {
            None => {
                self.targets.insert(part, Target::Unknown);
            }
            Some(b) => self.set_end(part, from, b),
        }
    }

    /// The end of `part`, once the broker said it.
    pub fn set_end(&mut self, part: Tp, from: Option<i64>, b: LogBounds) {
        let start = from.unwrap_or(b.low).max(b.low);
        if b.high > start {
            self.targets.insert(part, Target::End(b.high));
        } else {
            self.targets.remove(&part);
        }
    }

    /// `part` is no longer read here (revoked, refused, lost).
    pub fn forget(&mut self, part: &Tp) {
        self.targets.remove(part);
    }

    /// Every partition: none is read here any more.
    pub fn clear(&mut self) {
        self.targets.clear();
    }

    /// Whether a check has anything to do.
    pub fn is_pending(&self) -> bool {
        self.since.is_some()
    }

    /// The partitions whose end the broker did not say yet.
    pub fn unknown(&self) -> Vec<Tp> {
        self.targets
            .iter()
            .filter(|(_, t)| **t == Target::Unknown)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Checks the consumer's `positions` (partitions whose position cannot
    /// be trusted yet left out); reports being caught up once per
    /// placement.
    pub fn check(&mut self, positions: &BTreeMap<Tp, i64>, now: Instant) -> Check {
        let Some(since) = self.since else {
            return Check::Quiet;
        };
        self.targets.retain(|p, t| match (t, positions.get(p)) {
            (Target::End(end), Some(at)) => at < end,
            _ => true,
        });
        if self.targets.is_empty() {
            self.since = None;
            self.last_log = None;
            return Check::CaughtUp(now.saturating_duration_since(since));
        }
        let due = self
            .last_log
            .is_none_or(|l| now.saturating_duration_since(l) >= LOG_EVERY)
            && now.saturating_duration_since(since) >= LOG_EVERY;
        if !due {
            return Check::Behind(None);
        }
        self.last_log = Some(now);
        let behind = self
            .targets
            .iter()
            .map(|((topic, partition), t)| {
                let at = positions
                    .get(&(topic.clone(), *partition))
                    .map_or("none".into(), i64::to_string);
                match t {
                    Target::End(end) => format!("{topic}/{partition} at {at} of {end}"),
                    Target::Unknown => format!("{topic}/{partition} at {at} of unknown"),
                }
            })
            .collect();
        Check::Behind(Some(behind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_owned(), p)
    }

    fn b(low: i64, high: i64) -> Option<LogBounds> {
        Some(LogBounds { low, high })
    }

    fn at(pairs: &[(i32, i64)]) -> BTreeMap<Tp, i64> {
        pairs.iter().map(|(p, o)| (tp(*p), *o)).collect()
    }

    #[test]
    fn caught_up_once_every_partition_reached_its_end_then_quiet() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        assert_eq!(c.check(&at(&[]), t0), Check::Quiet, "nothing placed");
        c.placed(tp(0), None, b(0, 10), t0);
        c.placed(tp(1), None, b(3, 8), t0);
        assert_eq!(c.check(&at(&[(0, 10), (1, 7)]), t0), Check::Behind(None));
        // Past the end: a transaction marker after the last record.
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(
            c.check(&at(&[(0, 10), (1, 9)]), t1),
            Check::CaughtUp(Duration::from_millis(40))
        );
        assert_eq!(c.check(&at(&[(0, 10), (1, 9)]), t1), Check::Quiet);
    }

    #[test]
    fn an_empty_or_already_read_partition_is_caught_up_at_once() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.placed(tp(0), None, b(5, 5), t0); // every record aged out
        c.placed(tp(1), Some(12), b(0, 12), t0); // the sink holds it all
        assert_eq!(c.check(&at(&[]), t0), Check::CaughtUp(Duration::ZERO));
    }

    #[test]
    fn a_partition_placed_later_must_catch_up_too() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.placed(tp(0), None, b(0, 2), t0);
        assert!(matches!(c.check(&at(&[(0, 2)]), t0), Check::CaughtUp(_)));
        c.placed(tp(1), None, b(0, 4), t0);
        assert_eq!(c.check(&at(&[(0, 2), (1, 1)]), t0), Check::Behind(None));
        assert!(matches!(
            c.check(&at(&[(0, 2), (1, 4)]), t0),
            Check::CaughtUp(_)
        ));
    }

    #[test]
    fn an_unknown_end_holds_until_the_broker_says_it_and_a_forgotten_partition_does_not() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.placed(tp(0), None, None, t0);
        c.placed(tp(1), None, b(0, 9), t0);
        assert_eq!(c.unknown(), [tp(0)]);
        assert_eq!(c.check(&at(&[(0, 50)]), t0), Check::Behind(None));
        c.set_end(tp(0), None, LogBounds { low: 0, high: 50 });
        c.forget(&tp(1));
        assert!(matches!(c.check(&at(&[(0, 50)]), t0), Check::CaughtUp(_)));
    }

    #[test]
    fn the_partitions_behind_are_logged_every_ten_seconds() {
        let t0 = Instant::now();
        let mut c = CatchUp::default();
        c.placed(tp(0), None, b(0, 10), t0);
        assert_eq!(
            c.check(&at(&[(0, 1)]), t0 + LOG_EVERY / 2),
            Check::Behind(None)
        );
        assert_eq!(
            c.check(&at(&[(0, 4)]), t0 + LOG_EVERY),
            Check::Behind(Some(vec!["t/0 at 4 of 10".into()]))
        );
        assert_eq!(
            c.check(&at(&[]), t0 + LOG_EVERY * 3 / 2),
            Check::Behind(None)
        );
        assert_eq!(
            c.check(&at(&[]), t0 + LOG_EVERY * 2),
            Check::Behind(Some(vec!["t/0 at none of 10".into()]))
        );
    }
}
