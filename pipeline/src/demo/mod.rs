//! `kusanagi run --demo`: synthetic game traffic through the real pipeline.
//!
//! The generator produces JSON events (ordinary trades, smurfing fan-in
//! bursts, big direct trades, RMT slang, a few malformed records) to
//! `events.raw` at a fixed rate. A `read_committed` reader tails `events`
//! and `events.dlq`, so what the status line and the summary report is what
//! the ingest stage committed, end to end through the broker, with the
//! latency from event time to visibility in `events`.

mod traffic;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_connectors::kafka::enqueue;
use kusanagi_schemas::GameEventCodec;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub use traffic::{Generated, Pattern, Traffic};

use crate::config::Topology;
use crate::runtime::{Metrics, Shutdown};

/// How much traffic a demo sends.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Records to generate.
    pub events: u64,
    /// Records per second.
    pub rate: u64,
    /// Seed of the generator.
    pub seed: u64,
}

/// What one demo run saw.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Records generated, per pattern.
    pub generated: BTreeMap<Pattern, u64>,
    /// Valid events seen committed in `events`.
    pub ingested: u64,
    /// Records seen committed in `events.dlq`, per reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Seconds from the first record sent to the last one seen.
    pub seconds: f64,
    /// Latency from event time to being readable in `events`, microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// Whether every generated record was accounted for.
    pub complete: bool,
}

impl DemoReport {
    fn total(&self) -> u64 {
        self.generated.values().sum()
    }

    fn expected_valid(&self) -> u64 {
        self.total()
            - self
                .generated
                .get(&Pattern::Malformed)
                .copied()
                .unwrap_or(0)
    }
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dlq: u64 = self.dead_letters.values().sum();
        writeln!(f, "Kusanagi demo summary")?;
        writeln!(
            f,
            "  generated     {} records in {:.1} s",
            self.total(),
            self.seconds
        )?;
        for (pattern, n) in &self.generated {
            writeln!(f, "                {n:>8}  {}", pattern.label())?;
        }
        writeln!(
            f,
            "  ingested      {} of {} valid events, committed to `events` as Avro (zstd)",
            self.ingested,
            self.expected_valid()
        )?;
        let reasons: Vec<String> = self
            .dead_letters
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            f,
            "  dead letters  {dlq} in `events.dlq` ({})",
            if reasons.is_empty() {
                "none".into()
            } else {
                reasons.join(", ")
            }
        )?;
        if self.seconds > 0.0 {
            writeln!(
                f,
                "  throughput    {:.0} records/s end to end",
                (self.ingested + dlq) as f64 / self.seconds
            )?;
        }
        if let Some(h) = self.latency_us.as_ref().filter(|h| !h.is_empty()) {
            writeln!(
                f,
                "  latency       event time -> readable in `events`: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3
            )?;
        }
        write!(
            f,
            "  result        {}",
            if self.complete {
                "every record accounted for, exactly once"
            } else {
                "INCOMPLETE: some records were not seen (see the log)"
            }
        )
    }
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    ingested: AtomicU64,
    dead_letters: AtomicU64,
    duplicates: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// Runs the demo against the brokers of `settings`; returns when every
/// record was seen, or 60 s after the last was sent, or on `shutdown`.
pub async fn run(
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    options: DemoOptions,
    shutdown: &Shutdown,
) -> Result<DemoReport, KafkaError> {
    // Start the clock once the ingest stage owns its partitions, so the
    // latency reported is the pipeline's, not the consumer group's join.
    let joined = Instant::now();
    while metrics.assigned_partitions_now(crate::stages::ingest::STAGE) == 0
        && joined.elapsed() < Duration::from_secs(30)
        && !shutdown.is_triggered()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_id = format!("demo-{}", chrono_like_stamp());
    let progress = Arc::new(Progress::default());
    *progress.latency_us.lock().expect("lock") = Histogram::new_with_bounds(1, 600_000_000, 3).ok();

    let reader_stop = Shutdown::new();
    let reader = {
        let consumer = tail_from_end(
            settings,
            &[&topology.topics.events, &topology.topics.dead_letter],
        )?;
        let (progress, stop, prefix) = (progress.clone(), reader_stop.clone(), run_id.clone());
        let events_topic = topology.topics.events.clone();
        std::thread::spawn(move || read_outputs(consumer, &events_topic, &prefix, &progress, &stop))
    };

    let producer: FutureProducer = settings.producer_config().create()?;
    let started = Instant::now();
    let mut report = DemoReport::default();
    let mut traffic = Traffic::new(&run_id, options.seed);
    let status = tokio::spawn(print_status(
        progress.clone(),
        options.events,
        reader_stop.clone(),
    ));

    let per_tick = (options.rate / 100).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut deliveries = Vec::new();
    'send: while (progress.sent.load(Ordering::Relaxed)) < options.events {
        tick.tick().await;
        for _ in 0..per_tick {
            if shutdown.is_triggered() || progress.sent.load(Ordering::Relaxed) >= options.events {
                break 'send;
            }
            let now = kusanagi_schemas::EventTime::from(chrono::Utc::now()).to_rfc3339();
            let g = traffic.next_record(&now);
            *report.generated.entry(g.pattern).or_insert(0) += 1;
            let record = FutureRecord::to(&topology.topics.raw)
                .key(&g.key)
                .payload(&g.json);
            deliveries.push(enqueue(&producer, record).await?);
            progress.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    for d in deliveries {
        if let Ok(Err((e, _))) = d.await {
            tracing::error!(error = %e, "a demo record was not delivered");
        }
    }

    let expected_valid = report.expected_valid();
    let expected_dlq = report.total() - expected_valid;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !shutdown.is_triggered() {
        if progress.ingested.load(Ordering::Relaxed) >= expected_valid
            && progress.dead_letters.load(Ordering::Relaxed) >= expected_dlq
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader_stop.trigger();
    let _ = status.await;
    let _ = reader.join();

    report.seconds = started.elapsed().as_secs_f64();
    report.ingested = progress.ingested.load(Ordering::Relaxed);
    report.dead_letters = progress.reasons.lock().expect("lock").clone();
    report.latency_us = progress.latency_us.lock().expect("lock").take();
    let duplicates = progress.duplicates.load(Ordering::Relaxed);
    if duplicates > 0 {
        tracing::error!(duplicates, "events seen more than once");
    }
    report.complete = duplicates == 0
        && report.ingested == expected_valid
        && report.dead_letters.values().sum::<u64>() == expected_dlq;
    Ok(report)
}

/// A reader outside any group, positioned at the current end of `topics`.
fn tail_from_end(settings: &KafkaSettings, topics: &[&str]) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = settings.reader_config("kusanagi-demo-reader").create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) =
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn read_outputs(
    consumer: BaseConsumer,
    events_topic: &str,
    prefix: &str,
    progress: &Progress,
    stop: &Shutdown,
) {
    let codec = GameEventCodec::new();
    let mut seen = std::collections::HashSet::new();
    while !stop.is_triggered() {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if m.topic() == events_topic {
            let Some(event) = m.payload().and_then(|p| codec.decode(p).ok()) else {
                continue;
            };
            if !event.event_id.starts_with(prefix) {
                continue;
            }
            if !seen.insert(event.event_id) {
                progress.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            progress.ingested.fetch_add(1, Ordering::Relaxed);
            let now = chrono::Utc::now().timestamp_micros();
            let latency = (now - event.timestamp.as_micros()).max(1) as u64;
            if let Some(h) = progress.latency_us.lock().expect("lock").as_mut() {
                let _ = h.record(latency);
            }
        } else {
            let reason = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == crate::runtime::dead_letter::REASON_HEADER)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_else(|| "unknown".into());
            progress.dead_letters.fetch_add(1, Ordering::Relaxed);
            *progress
                .reasons
                .lock()
                .expect("lock")
                .entry(reason)
                .or_insert(0) += 1;
        }
    }
}

async fn print_status(progress: Arc<Progress>, total: u64, stop: Shutdown) {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait() => break,
        }
        let ingested = progress.ingested.load(Ordering::Relaxed);
        let dlq = progress.dead_letters.load(Ordering::Relaxed);
        let done = ingested + dlq;
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), done);
        let p99 = progress
            .latency_us
            .lock()
            .expect("lock")
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.99) as f64 / 1e3)
            .unwrap_or(0.0);
        let line = format!(
            "[{:>4.0}s] sent {:>7}/{total} | ingested {ingested:>7} | dead letters {dlq:>4} | {rate:>6.0} events/s | p99 {p99:.0} ms",
            started.elapsed().as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
        );
        let mut out = std::io::stdout().lock();
        let _ = if tty {
            write!(out, "\r{line}")
        } else {
            writeln!(out, "{line}")
        };
        let _ = out.flush();
    }
    if tty {
        println!();
    }
}

/// A compact UTC stamp (`20261124T142501`) naming a run.
fn chrono_like_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string()
}
