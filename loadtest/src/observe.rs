//! Watching `events` (or `screenings`): a `read_committed` reader outside
//! any consumer group, assigned every partition of the topic at its high
//! watermark before the first event is sent, so it sees exactly what the
//! ingest stage (or the screen stage) commits from then on.
//!
//! On its own thread it decodes each Avro record, keeps this run's events,
//! and for a measured event seen the first time takes its send instant out
//! of the [`Ledger`] and records the latency, in microseconds, into an HDR
//! histogram. A second sighting counts as a duplicate; an id of this run
//! that was never sent counts as unexpected.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_schemas::{GameEventCodec, RecordCodec, Screening};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::ledger::{Counters, IdKind, Ledger, RunIds};

/// Largest latency the histogram holds (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600 * 1_000_000;

/// Which topic a run watches, and so how far through the pipeline its
/// latency reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Watch {
    /// `events`: through the ingest stage.
    Events,
    /// `screenings`: through the ingest and screen stages (the L1 latency).
    Screenings,
}

/// Reads the event id out of a record of the watched topic.
enum Decoder {
    Events(GameEventCodec),
    Screenings(RecordCodec<Screening>),
}

impl Decoder {
    fn new(watch: Watch) -> Self {
        match watch {
            Watch::Events => Decoder::Events(GameEventCodec::new()),
            Watch::Screenings => Decoder::Screenings(RecordCodec::new()),
        }
    }

    fn event_id(&self, payload: &[u8]) -> Option<String> {
        match self {
            Decoder::Events(c) => c.decode(payload).ok().map(|e| e.event_id),
            Decoder::Screenings(c) => c.decode(payload).ok().map(|s| s.event_id),
        }
    }
}

/// What the observer saw.
#[derive(Debug)]
pub struct Observed {
    /// Measured events seen, once each.
    pub seen: u64,
    /// Further sightings of measured events.
    pub duplicated: u64,
    /// Events with this run's measured prefix that were never sent.
    pub unexpected: u64,
    /// Records of `events` that could not be decoded.
    pub undecodable: u64,
    /// When the last measured event was first seen.
    pub last_seen: Option<Instant>,
    /// Hand-over to the producer -> readable in `events`, microseconds.
    pub latency_us: Histogram<u64>,
}

/// An empty latency histogram: 1 µs to 1 h, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// A partition's first offset and end.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The partition.
    pub partition: i32,
    /// Its first offset.
    pub low: i64,
    /// Its end (the offset of the next record).
    pub high: i64,
}

/// A `read_committed` reader outside any group (`group` names it in the
/// brokers' logs), and the bounds of every partition of `topic`.
pub fn reader_with_bounds(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
) -> anyhow::Result<(BaseConsumer, Vec<Bounds>)> {
    let consumer: BaseConsumer = settings
        .reader_config(group)
        .create()
        .context("creating the reader")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of `{topic}`"))?;
    let mut bounds = Vec::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .with_context(|| format!("reading the ends of `{topic}` [{}]", p.id()))?;
        bounds.push(Bounds {
            partition: p.id(),
            low,
            high,
        });
    }
    if bounds.is_empty() {
        bail!("topic `{topic}` has no partitions: does it exist on these brokers?");
    }
    Ok((consumer, bounds))
}

/// A reader of `topic` outside any group, positioned at the current end of
/// every partition; also returns the number of partitions.
pub fn tail_from_end(
    settings: &KafkaSettings,
    topic: &str,
) -> anyhow::Result<(BaseConsumer, usize)> {
    let (consumer, bounds) = reader_with_bounds(settings, "kusanagi-loadtest-reader", topic)?;
    let mut tpl = TopicPartitionList::new();
    for b in &bounds {
        tpl.add_partition_offset(topic, b.partition, Offset::Offset(b.high))?;
    }
    consumer.assign(&tpl)?;
    Ok((consumer, tpl.count()))
}

/// Starts the observer thread; it runs until `stop` and returns what it saw.
pub fn spawn(
    watch: Watch,
    consumer: BaseConsumer,
    ids: RunIds,
    ledger: Arc<Ledger>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Observed> {
    std::thread::Builder::new()
        .name("loadtest-observe".into())
        .spawn(move || observe(watch, &consumer, &ids, &ledger, &counters, &stop))
        .expect("spawning a thread")
}

fn observe(
    watch: Watch,
    consumer: &BaseConsumer,
    ids: &RunIds,
    ledger: &Ledger,
    counters: &Counters,
    stop: &AtomicBool,
) -> Observed {
    let decoder = Decoder::new(watch);
    let mut seen = HashSet::new();
    let mut out = Observed {
        seen: 0,
        duplicated: 0,
        unexpected: 0,
        undecodable: 0,
        last_seen: None,
        latency_us: latency_histogram(),
    };
    while !stop.load(Ordering::Relaxed) {
        let Some(polled) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let now = Instant::now();
        let m = match polled {
            Ok(m) => m,
            Err(e) => {
                eprintln!("loadtest: reader: {e}");
                continue;
            }
        };
        let Some(event_id) = m.payload().and_then(|p| decoder.event_id(p)) else {
            out.undecodable += 1;
            continue;
        };
        match ids.classify(&event_id) {
            IdKind::Foreign => {}
            IdKind::WarmUp => {
                counters.warm_up_seen.fetch_add(1, Ordering::Relaxed);
            }
            IdKind::Measured(seq) => {
                if !seen.insert(seq) {
                    out.duplicated += 1;
                    counters.duplicated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match ledger.take(seq) {
                    Some(sent_at) => {
                        let us = now.saturating_duration_since(sent_at).as_micros();
                        out.latency_us
                            .saturating_record(u64::try_from(us).unwrap_or(MAX_LATENCY_US).max(1));
                        out.seen += 1;
                        out.last_seen = Some(now);
                        counters.seen.fetch_add(1, Ordering::Relaxed);
                    }
                    None => out.unexpected += 1,
                }
            }
        }
    }
    out
}
