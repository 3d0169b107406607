//! In-memory ports for the loop's tests: [`World`] is a small broker
//! (partition logs, the group's committed offsets, the consumer's
//! positions and pauses, what was produced) that both fakes share.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::runtime::output::{NextOffset, Output, OutputFailure};
use crate::runtime::source::{Consumed, LogBounds, PollError, RebalanceEvent, Source};
use crate::runtime::{AssignedPartition, OutRecord, RuntimeError, Shutdown};

pub type Tp = (String, i32);

/// How long the consumer must find nothing before a scripted event
/// happens (and, with the script done, before the loop is shut down).
const SETTLE: Duration = Duration::from_millis(20);

pub fn tp(p: i32) -> Tp {
    ("in".to_owned(), p)
}

/// Something scripted to happen at a given poll.
#[derive(Debug, Clone)]
pub enum Event {
    /// A rebalance; for `Assigned`, positions start at the committed
    /// offsets.
    Rebalance(RebalanceEvent),
    /// A consumer error.
    PollError(&'static str),
    /// The log of a partition is cut back to `len` records (the broker lost
    /// acknowledged writes) and the consumer is sent back to its start.
    Truncate(Tp, usize),
}

#[derive(Default)]
pub struct State {
    pub logs: BTreeMap<Tp, Vec<Vec<u8>>>,
    pub committed: BTreeMap<Tp, i64>,
    pub positions: BTreeMap<Tp, i64>,
    /// After the last record the application was given (librdkafka's
    /// application position); a seek does not move it.
    pub app_positions: BTreeMap<Tp, i64>,
    pub paused: BTreeSet<Tp>,
    pub generation: u64,
    pub pending: Vec<RebalanceEvent>,
    /// Once this many records were delivered and the consumer then found
    /// nothing for [`SETTLE`] (the loop has handled them), this happens;
    /// at 0: on the first poll.
    pub script: BTreeMap<u64, Vec<Event>>,
    /// Once exactly this many records were delivered, at the next poll,
    /// whatever the loop is doing (gathering a batch, say).
    pub at_once: BTreeMap<u64, Vec<Event>>,
    pub polls: u64,
    pub delivered: u64,
    pub idle_since: Option<Instant>,
    /// Committed outputs.
    pub produced: Vec<OutRecord>,
    /// Outputs sent outside transactions, and whether each was delivered.
    pub sent: Vec<OutRecord>,
    pub fail_deliveries: bool,
    /// Failures of the next transactions, in order.
    pub transact_failures: VecDeque<OutputFailure>,
    pub aborts: u32,
    pub seeks: Vec<(Tp, Option<i64>)>,
    /// How many of the next seeks fail (the fetcher not started yet).
    pub fail_seeks: u32,
    pub async_commits: Vec<(String, i32, i64)>,
}

/// The shared broker model.
#[derive(Clone, Default)]
pub struct World(pub Rc<RefCell<State>>);

impl World {
    /// A world whose partition `p` of `in` holds `n` records `"p:i"`.
    pub fn with_logs(partitions: &[(i32, usize)]) -> Self {
        let w = World::default();
        for (p, n) in partitions {
            let log = (0..*n).map(|i| format!("{p}:{i}").into_bytes()).collect();
            w.0.borrow_mut().logs.insert(tp(*p), log);
        }
        w
    }

    /// Schedules `event` for the poll after the `n`th record, at once.
    pub fn at_once(&self, n: u64, event: Event) -> &Self {
        self.0
            .borrow_mut()
            .at_once
            .entry(n)
            .or_default()
            .push(event);
        self
    }

    /// Replaces record `i` of partition `p`.
    pub fn set(&self, p: i32, i: usize, payload: &str) -> &Self {
        self.0.borrow_mut().logs.get_mut(&tp(p)).expect("a log")[i] = payload.as_bytes().to_vec();
        self
    }

    /// Schedules `event` once `n` records were delivered and handled.
    pub fn at(&self, n: u64, event: Event) -> &Self {
        self.0.borrow_mut().script.entry(n).or_default().push(event);
        self
    }

    pub fn ports(&self, shutdown: &Shutdown) -> (FakeSource, FakeOutput) {
        (
            FakeSource {
                world: self.clone(),
                shutdown: shutdown.clone(),
            },
            FakeOutput {
                world: self.clone(),
                open: Vec::new(),
            },
        )
    }

    /// The payloads produced (committed), as text.
    pub fn produced(&self) -> Vec<String> {
        let s = self.0.borrow();
        s.produced
            .iter()
            .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into())
            .collect()
    }
}

pub struct FakeSource {
    world: World,
    shutdown: Shutdown,
}

impl FakeSource {
    fn happen(s: &mut State, event: Event) -> Option<Result<Consumed, PollError>> {
        match event {
            Event::Rebalance(r) => {
                match &r {
                    RebalanceEvent::Assigned(parts) => {
                        for p in parts {
                            let at = s.committed.get(p).copied().unwrap_or(0);
                            s.positions.insert(p.clone(), at);
                            s.app_positions.remove(p);
                        }
                    }
                    RebalanceEvent::Revoked(parts) => {
                        for p in parts {
                            s.positions.remove(p);
                            s.paused.remove(p);
                        }
                    }
                    RebalanceEvent::Lost => {
                        s.positions.clear();
                        s.paused.clear();
                    }
                }
                s.generation += 1;
                s.pending.push(r);
                None
            }
            Event::PollError("fenced") => Some(Err(PollError::Fenced)),
            Event::PollError(e) => Some(Err(PollError::Transient(e.into()))),
            Event::Truncate(p, len) => {
                s.logs.get_mut(&p).expect("a log").truncate(len);
                // A consumer past the log's end starts again from its start
                // (auto.offset.reset = earliest).
                s.positions.insert(p, 0);
                None
            }
        }
    }
}

impl Source for FakeSource {
    type Group = ();

    fn poll(&mut self, _timeout: Duration) -> Option<Result<Consumed, PollError>> {
        let mut s = self.world.0.borrow_mut();
        s.polls += 1;
        let settled = s.idle_since.is_some_and(|t| t.elapsed() >= SETTLE);
        let due: Vec<u64> = s
            .script
            .keys()
            .copied()
            .filter(|k| *k == 0 || (*k <= s.delivered && settled))
            .collect();
        let mut first = None;
        let delivered = s.delivered;
        let now: Vec<Event> = s.at_once.remove(&delivered).unwrap_or_default();
        for e in now {
            if let Some(r) = Self::happen(&mut s, e) {
                first.get_or_insert(r);
            }
        }
        for k in due {
            for e in s.script.remove(&k).unwrap_or_default() {
                if let Some(r) = Self::happen(&mut s, e) {
                    first.get_or_insert(r);
                }
            }
            s.idle_since = None;
        }
        if first.is_some() {
            return first;
        }
        let next = s
            .positions
            .iter()
            .filter(|(p, _)| !s.paused.contains(*p))
            .find(|(p, at)| (**at as usize) < s.logs.get(*p).map_or(0, Vec::len))
            .map(|(p, at)| (p.clone(), *at));
        let Some((p, at)) = next else {
            let since = *s.idle_since.get_or_insert_with(Instant::now);
            if s.script.is_empty() && s.at_once.is_empty() && since.elapsed() >= 3 * SETTLE {
                self.shutdown.trigger();
            }
            return None;
        };
        s.idle_since = None;
        s.delivered += 1;
        s.positions.insert(p.clone(), at + 1);
        s.app_positions.insert(p.clone(), at + 1);
        let payload = s.logs[&p][at as usize].clone();
        Some(Ok(Consumed {
            topic: p.0.clone(),
            partition: p.1,
            offset: at,
            key: None,
            payload: Some(payload),
            timestamp_ms: None,
            trace: None,
        }))
    }

    fn generation(&self) -> u64 {
        self.world.0.borrow().generation
    }

    fn rebalances(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.world.0.borrow_mut().pending)
    }

    fn committed(&self, parts: &[Tp]) -> Result<Vec<AssignedPartition>, RuntimeError> {
        let s = self.world.0.borrow();
        Ok(parts
            .iter()
            .map(|p| AssignedPartition {
                topic: p.0.clone(),
                partition: p.1,
                committed: s.committed.get(p).copied(),
                metadata: None,
            })
            .collect())
    }

    fn assignment(&self) -> Result<Vec<Tp>, RuntimeError> {
        Ok(self.world.0.borrow().positions.keys().cloned().collect())
    }

    fn seek(&mut self, topic: &str, partition: i32, next: Option<i64>) -> bool {
        let mut s = self.world.0.borrow_mut();
        let p = (topic.to_owned(), partition);
        s.seeks.push((p.clone(), next));
        if s.fail_seeks > 0 {
            s.fail_seeks -= 1;
            return false;
        }
        s.positions.insert(p, next.unwrap_or(0));
        true
    }

    fn pause(&mut self, topic: &str, partition: i32) {
        self.world
            .0
            .borrow_mut()
            .paused
            .insert((topic.into(), partition));
    }

    /// As librdkafka does, a resume restarts the fetch at the application's
    /// position (or the group's committed offset, if it was given nothing
    /// yet), not where a seek put it.
    fn resume(&mut self, topic: &str, partition: i32) {
        let mut s = self.world.0.borrow_mut();
        let p = (topic.to_owned(), partition);
        s.paused.remove(&p);
        if s.positions.contains_key(&p) {
            let at = s
                .app_positions
                .get(&p)
                .or(s.committed.get(&p))
                .copied()
                .unwrap_or(0);
            s.positions.insert(p, at);
        }
    }

    fn log_bounds(&mut self, topic: &str, partition: i32) -> Option<LogBounds> {
        let s = self.world.0.borrow();
        let len = s.logs.get(&(topic.to_owned(), partition))?.len();
        Some(LogBounds {
            low: 0,
            high: len as i64,
        })
    }

    fn positions(&self) -> Vec<(Tp, i64)> {
        let s = self.world.0.borrow();
        s.app_positions
            .iter()
            .filter(|(p, _)| s.positions.contains_key(*p))
            .map(|(p, o)| (p.clone(), *o))
            .collect()
    }

    fn group(&self) -> Option<()> {
        Some(())
    }

    fn commit_async(&mut self, offsets: &[(String, i32, i64)]) {
        let mut s = self.world.0.borrow_mut();
        for (t, p, o) in offsets {
            s.committed.insert((t.clone(), *p), *o);
            s.async_commits.push((t.clone(), *p, *o));
        }
    }

    fn close(&mut self) {}
}

pub struct FakeOutput {
    world: World,
    open: Vec<OutRecord>,
}

impl Output<()> for FakeOutput {
    fn transact(
        &mut self,
        _group: &(),
        out: &[OutRecord],
        offsets: &[NextOffset],
    ) -> Result<(), OutputFailure> {
        let mut s = self.world.0.borrow_mut();
        if let Some(f) = s.transact_failures.pop_front() {
            return Err(f);
        }
        s.produced.extend(out.iter().cloned());
        for o in offsets {
            s.committed.insert((o.topic.clone(), o.partition), o.offset);
        }
        Ok(())
    }

    fn abort(&mut self) -> Result<(), OutputFailure> {
        self.world.0.borrow_mut().aborts += 1;
        Ok(())
    }

    fn send(&mut self, out: &[OutRecord]) -> Result<(), OutputFailure> {
        self.open.extend(out.iter().cloned());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputFailure> {
        let mut s = self.world.0.borrow_mut();
        if std::mem::take(&mut s.fail_deliveries) {
            self.open.clear();
            return Err(OutputFailure::Abortable {
                operation: "flush",
                detail: "not delivered".into(),
            });
        }
        s.sent.append(&mut self.open);
        Ok(())
    }
}
