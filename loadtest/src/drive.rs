//! Sending: valid JSON `GameEvent`s to `events.raw`, first warm-up probes
//! until the pipeline answers, then the measured events on the schedule.
//!
//! The events come from the demo's generator ([`Traffic`]), with its
//! malformed records skipped: every measured event is valid and must come
//! out in `events`. The producer is the one the demo and the HTTP API use
//! ([`KafkaSettings::producer_config`]: idempotent, `acks=all`, zstd,
//! `linger.ms=5`), as a [`ThreadedProducer`] whose delivery reports are
//! counted, not awaited one by one. The driver runs on its own thread and
//! sleeps between ticks ([`crate::pacing`]); a full producer queue makes it
//! wait and retry, which shows as lag behind the schedule.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_pipeline::demo::{Generated, Pattern, Traffic};
use kusanagi_schemas::EventTime;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use crate::ledger::{Counters, Ledger, RunIds};
use crate::pacing::{Schedule, TICK};

/// Delivery reports, counted.
#[derive(Debug, Default)]
pub struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    /// Records the brokers refused so far, and the first error.
    pub fn failures(&self) -> (u64, Option<String>) {
        (
            self.failed.load(Ordering::Relaxed),
            self.first_error.lock().expect("error lock").clone(),
        )
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .expect("error lock")
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// What the measured phase sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sending {
    /// Measured events handed to the producer.
    pub sent: u64,
    /// When the first was handed over.
    pub first: Instant,
    /// When the last was handed over.
    pub last: Instant,
    /// The largest delay of a hand-over behind its scheduled time.
    pub max_lag: Duration,
}

/// What the brokers acknowledged, once the producer was flushed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records acknowledged (warm-up probes included).
    pub ok: u64,
    /// Records the producer gave up on.
    pub failed: u64,
    /// The first delivery error, if any.
    pub first_error: Option<String>,
}

/// Sends one run's events.
pub struct Driver {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    warm_up: Traffic,
    measured: Traffic,
    /// `Traffic`'s sequence number of the last measured record generated.
    measured_seq: u64,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
}

impl Driver {
    /// A driver producing to `topic`, with event ids from `ids`.
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        ids: &RunIds,
        seed: u64,
        ledger: Arc<Ledger>,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let producer = settings
            .producer_config()
            .create_with_context(Deliveries::default())
            .context("creating the producer")?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            warm_up: Traffic::new(&ids.warm_up_prefix(), seed ^ 0x5eed),
            measured: Traffic::new(&ids.measured_prefix(), seed),
            measured_seq: 0,
            ledger,
            counters,
        })
    }

    /// Sends a probe every 10 ms until one came through to `events` and at
    /// least `min` passed (the consumer group of the ingest stage has its
    /// partitions and its producer its transactional id), then waits up to
    /// 5 s for the probes still in flight. Fails after `timeout` without
    /// any probe seen, or on `stop`. Returns the number of probes sent.
    pub fn warm_up(
        &mut self,
        min: Duration,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<u64> {
        let started = Instant::now();
        let mut probes = 0u64;
        let seen = || self.counters.warm_up_seen.load(Ordering::Relaxed);
        loop {
            let g = next_valid(&mut self.warm_up, &now_rfc3339(), &mut 0);
            hand_over(&self.producer, &self.topic, &g, |_| {})?;
            probes += 1;
            std::thread::sleep(Duration::from_millis(10));
            if seen() > 0 && started.elapsed() >= min {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted during the warm-up");
            }
            if started.elapsed() >= timeout {
                bail!(
                    "no warm-up event came through `events` within {} s: is the ingest stage \
                     running against these brokers?",
                    timeout.as_secs()
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen() < probes && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(probes)
    }

    /// Sends the measured events on `schedule`, until done or `stop`.
    pub fn run(&mut self, schedule: Schedule, stop: &AtomicBool) -> anyhow::Result<Sending> {
        let start = Instant::now();
        let mut next_tick = start;
        let mut out = Sending {
            sent: 0,
            first: start,
            last: start,
            max_lag: Duration::ZERO,
        };
        while out.sent < schedule.total && !stop.load(Ordering::Relaxed) {
            let now = now_rfc3339();
            let due = schedule.due_by(start.elapsed());
            while out.sent < due {
                let g = next_valid(&mut self.measured, &now, &mut self.measured_seq);
                let seq = self.measured_seq;
                let ledger = &self.ledger;
                let at = hand_over(&self.producer, &self.topic, &g, |at| ledger.sent(seq, at))?;
                let lag = at.saturating_duration_since(start + schedule.due_at(out.sent));
                out.max_lag = out.max_lag.max(lag);
                if out.sent == 0 {
                    out.first = at;
                }
                out.last = at;
                out.sent += 1;
                self.counters.sent.store(out.sent, Ordering::Relaxed);
            }
            next_tick += TICK;
            match next_tick.checked_duration_since(Instant::now()) {
                Some(wait) => std::thread::sleep(wait),
                None => next_tick = Instant::now(),
            }
        }
        Ok(out)
    }

    /// Waits up to `timeout` for every record to be acknowledged.
    pub fn finish(self, timeout: Duration) -> Delivered {
        if let Err(e) = self.producer.flush(timeout) {
            eprintln!("loadtest: flushing the producer: {e}");
        }
        let d = self.producer.context();
        Delivered {
            ok: d.ok.load(Ordering::Relaxed),
            failed: d.failed.load(Ordering::Relaxed),
            first_error: d.first_error.lock().expect("error lock").clone(),
        }
    }
}

/// The current time as an event time.
fn now_rfc3339() -> String {
    EventTime::from(chrono::Utc::now()).to_rfc3339()
}

/// The next valid record of `traffic`, counting every record it generates
/// in `seq` (its event ids end in that count, malformed records included).
pub(crate) fn next_valid(traffic: &mut Traffic, now: &str, seq: &mut u64) -> Generated {
    loop {
        *seq += 1;
        let g = traffic.next_record(now);
        if g.pattern != Pattern::Malformed {
            return g;
        }
    }
}

/// Hands `g` to the producer, calling `before` with the instant just before
/// each attempt; waits and retries while the producer's queue is full.
/// Returns the instant of the attempt that was accepted.
fn hand_over(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    g: &Generated,
    before: impl Fn(Instant),
) -> anyhow::Result<Instant> {
    let mut record = BaseRecord::to(topic).key(&g.key).payload(&g.json);
    loop {
        let at = Instant::now();
        before(at);
        match producer.send(record) {
            Ok(()) => return Ok(at),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("handing a record to the producer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::IdKind;

    #[test]
    fn the_counted_sequence_is_the_event_ids() {
        let ids = RunIds::new("lt-x-1");
        let mut traffic = Traffic::new(&ids.measured_prefix(), 20_261_124);
        let mut seq = 0;
        let mut skipped = 0;
        for _ in 0..5_000 {
            let before = seq;
            let g = next_valid(&mut traffic, "2099-01-01T00:00:00Z", &mut seq);
            skipped += seq - before - 1;
            let event = kusanagi_schemas::parse_event(&g.json).expect("only valid events");
            assert_eq!(ids.classify(&event.event_id), IdKind::Measured(seq));
        }
        assert!(skipped > 0, "malformed records were generated and skipped");
    }
}
