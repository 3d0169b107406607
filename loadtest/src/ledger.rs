//! Which events a run sent, when, and how their ids are told apart.
//!
//! Every event id of a run starts with a prefix unique to that run
//! (`lt-<UTC time>-<pid>`), followed by `-w-` for the warm-up probes or `-m-`
//! for the measured events, then a sequence number. The driver writes the
//! instant it hands each measured event to the producer into the
//! [`Ledger`] just before the hand-over; the observer takes it out when it
//! first sees the event in `events`. What is left at the end was never seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// The ids of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIds {
    run: String,
}

/// What an event id seen in `events` belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A warm-up probe of this run.
    WarmUp,
    /// Measured event number `seq` of this run.
    Measured(u64),
    /// Some other producer's event, or another run's.
    Foreign,
}

impl RunIds {
    /// The ids of a run called `run`.
    pub fn new(run: impl Into<String>) -> Self {
        Self { run: run.into() }
    }

    /// A run name unique to this process and second: `lt-<UTC>-<pid>`.
    pub fn fresh() -> Self {
        Self::new(format!(
            "lt-{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            std::process::id()
        ))
    }

    /// The run's name (also names its temporary broker directory).
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The prefix `Traffic` is given for warm-up probes.
    pub fn warm_up_prefix(&self) -> String {
        format!("{}-w", self.run)
    }

    /// The prefix `Traffic` is given for measured events.
    pub fn measured_prefix(&self) -> String {
        format!("{}-m", self.run)
    }

    /// Classifies an `event_id`: `Traffic` ids are `<prefix>-<seq>`.
    pub fn classify(&self, event_id: &str) -> IdKind {
        let Some(rest) = event_id
            .strip_prefix(self.run.as_str())
            .and_then(|r| r.strip_prefix('-'))
        else {
            return IdKind::Foreign;
        };
        if let Some(seq) = rest.strip_prefix("m-") {
            return seq.parse().map_or(IdKind::Foreign, IdKind::Measured);
        }
        if rest.starts_with("w-") {
            return IdKind::WarmUp;
        }
        IdKind::Foreign
    }
}

/// Running counts the driver and the observer update and the status line
/// and the warm-up read.
#[derive(Debug, Default)]
pub struct Counters {
    /// Measured events handed to the producer.
    pub sent: AtomicU64,
    /// Measured events seen in `events`, first sightings only.
    pub seen: AtomicU64,
    /// Measured events seen again.
    pub duplicated: AtomicU64,
    /// Warm-up probes seen in `events`.
    pub warm_up_seen: AtomicU64,
}

/// The send instants of measured events not yet seen, by sequence number.
#[derive(Debug, Default)]
pub struct Ledger {
    in_flight: Mutex<HashMap<u64, Instant>>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that event `seq` is handed to the producer at `at`.
    pub fn sent(&self, seq: u64, at: Instant) {
        self.in_flight.lock().expect("ledger lock").insert(seq, at);
    }

    /// Takes out the send instant of event `seq`, the first time it is seen;
    /// `None` if it was never sent or already taken.
    pub fn take(&self, seq: u64) -> Option<Instant> {
        self.in_flight.lock().expect("ledger lock").remove(&seq)
    }

    /// Events sent and not yet seen.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("ledger lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusanagi_pipeline::demo::{Pattern, Traffic};

    #[test]
    fn traffic_ids_classify_by_phase() {
        let ids = RunIds::new("lt-20260101T000000-42");
        let mut warm = Traffic::new(&ids.warm_up_prefix(), 1);
        let mut measured = Traffic::new(&ids.measured_prefix(), 1);
        let id = |g: kusanagi_pipeline::demo::Generated| {
            assert_ne!(g.pattern, Pattern::Malformed);
            kusanagi_schemas::parse_event(&g.json).unwrap().event_id
        };
        let w = id(warm.next_record("2099-01-01T00:00:00Z"));
        let m1 = id(measured.next_record("2099-01-01T00:00:00Z"));
        let m2 = id(measured.next_record("2099-01-01T00:00:00Z"));
        assert_eq!(ids.classify(&w), IdKind::WarmUp);
        assert_eq!(ids.classify(&m1), IdKind::Measured(1));
        assert_eq!(ids.classify(&m2), IdKind::Measured(2));
    }

    #[test]
    fn other_runs_are_foreign() {
        let ids = RunIds::new("lt-20260101T000000-42");
        for other in [
            "lt-20260101T000000-421-m-00000001",
            "lt-20260101T000000-4-m-00000001",
            "demo-20260101T000000-00000001",
            "lt-20260101T000000-42-m-x",
            "lt-20260101T000000-42-q-00000001",
            "lt-20260101T000000-42",
        ] {
            assert_eq!(ids.classify(other), IdKind::Foreign, "{other}");
        }
    }

    #[test]
    fn fresh_runs_have_distinct_prefixes_per_process() {
        let ids = RunIds::fresh();
        assert!(ids.run().starts_with("lt-"));
        assert!(ids.run().ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn an_instant_is_taken_once() {
        let ledger = Ledger::new();
        let at = Instant::now();
        ledger.sent(7, at);
        assert_eq!(ledger.in_flight(), 1);
        assert_eq!(ledger.take(7), Some(at));
        assert_eq!(ledger.take(7), None);
        assert_eq!(ledger.take(8), None);
        assert_eq!(ledger.in_flight(), 0);
    }
}
