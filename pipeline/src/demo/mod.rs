//! `kusanagi run --demo`: synthetic game traffic through the real pipeline.
//!
//! The generator produces JSON events (ordinary trades, smurfing fan-in
//! bursts, big direct trades, RMT slang, a few malformed records) to
//! `events.raw` at a fixed rate. A `read_committed` reader tails `events`,
//! `events.dlq`, `screenings`, `accounts.transitions`, `l2.requests` and
//! `l2.verdicts`, so what the status line and the summary report is what the
//! stages committed, end to end through the broker: events ingested and
//! screened, accounts restricted, analysed, put under surveillance, banned
//! or recovered, with the latency from event time to visibility.

pub mod archive;
mod report;
mod traffic;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_connectors::kafka::enqueue;
use kusanagi_schemas::{GameEventCodec, L2Request, RecordCodec, Screening, Transition, Verdict};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub use report::{Decisions, DemoReport};
pub use traffic::{Generated, Pattern, Traffic};

use crate::config::{TopicsConfig, Topology};
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

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    ingested: AtomicU64,
    dead_letters: AtomicU64,
    duplicates: AtomicU64,
    reasons: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Option<Histogram<u64>>>,
    decisions: Mutex<Decisions>,
    screening_latency_us: Mutex<Option<Histogram<u64>>>,
    /// When a screening-side output was last seen.
    last_decision: Mutex<Option<Instant>>,
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
    *progress.screening_latency_us.lock().expect("lock") =
        Histogram::new_with_bounds(1, 600_000_000, 3).ok();

    let reader_stop = Shutdown::new();
    let reader = {
        let t = &topology.topics;
        let consumer = tail_from_end(
            settings,
            &[
                &t.events,
                &t.dead_letter,
                &t.screenings,
                &t.transitions,
                &t.l2_requests,
                &t.l2_verdicts,
            ],
        )?;
        let (progress, stop, prefix) = (progress.clone(), reader_stop.clone(), run_id.clone());
        let topics = t.clone();
        std::thread::spawn(move || read_outputs(consumer, &topics, &prefix, &progress, &stop))
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

    wait_for_outputs(topology, &progress, &report, shutdown).await;
    reader_stop.trigger();
    let _ = status.await;
    let _ = reader.join();
    report.seconds = started.elapsed().as_secs_f64();
    tally(&mut report, &progress, topology);
    Ok(report)
}

/// Waits until every record sent was seen where the enabled stages put
/// it (at most 60 s, or until `shutdown`).
async fn wait_for_outputs(
    topology: &Topology,
    progress: &Progress,
    report: &DemoReport,
    shutdown: &Shutdown,
) {
    let expected_valid = report.expected_valid();
    let expected_dlq = report.total() - expected_valid;
    let on = &topology.stages;
    let screening = on.screen.enabled;
    let deciding = screening && on.decide.enabled;
    let analysing = deciding && on.analyze.enabled;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !shutdown.is_triggered() {
        let d = progress.decisions.lock().expect("lock").clone();
        let quiet = progress
            .last_decision
            .lock()
            .expect("lock")
            .is_none_or(|t| t.elapsed() > Duration::from_secs(2));
        if progress.ingested.load(Ordering::Relaxed) >= expected_valid
            && progress.dead_letters.load(Ordering::Relaxed) >= expected_dlq
            && (!screening || d.screenings >= expected_valid)
            && (!analysing || d.verdicts >= d.requests)
            && (!deciding || quiet)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fills `report` from what was seen, and whether it is complete.
fn tally(report: &mut DemoReport, progress: &Progress, topology: &Topology) {
    let expected_valid = report.expected_valid();
    let expected_dlq = report.total() - expected_valid;
    let on = &topology.stages;
    let screening = on.screen.enabled;
    let analysing = screening && on.decide.enabled && on.analyze.enabled;
    report.ingested = progress.ingested.load(Ordering::Relaxed);
    report.dead_letters = progress.reasons.lock().expect("lock").clone();
    report.latency_us = progress.latency_us.lock().expect("lock").take();
    report.screening_latency_us = progress.screening_latency_us.lock().expect("lock").take();
    report.decisions = progress.decisions.lock().expect("lock").clone();
    let duplicates = progress.duplicates.load(Ordering::Relaxed);
    if duplicates > 0 {
        tracing::error!(duplicates, "events seen more than once");
    }
    let d = &report.decisions;
    report.complete = duplicates == 0
        && report.ingested == expected_valid
        && report.dead_letters.values().sum::<u64>() == expected_dlq
        && (!screening || d.screenings == expected_valid)
        && (!analysing || d.verdicts == d.requests);
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
    topics: &TopicsConfig,
    prefix: &str,
    progress: &Progress,
    stop: &Shutdown,
) {
    let codec = GameEventCodec::new();
    let screenings = RecordCodec::<Screening>::new();
    let transitions = RecordCodec::<Transition>::new();
    let requests = RecordCodec::<L2Request>::new();
    let verdicts = RecordCodec::<Verdict>::new();
    let mut seen = std::collections::HashSet::new();
    while !stop.is_triggered() {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let payload = m.payload().unwrap_or_default();
        let topic = m.topic();
        if topic == topics.events {
            let Ok(event) = codec.decode(payload) else {
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
            record_latency(&progress.latency_us, event.timestamp.as_micros());
        } else if topic == topics.dead_letter {
            if header(&m, crate::runtime::dead_letter::STAGE_HEADER).as_deref() != Some("ingest") {
                continue;
            }
            let reason = header(&m, crate::runtime::dead_letter::REASON_HEADER)
                .unwrap_or_else(|| "unknown".into());
            progress.dead_letters.fetch_add(1, Ordering::Relaxed);
            *progress
                .reasons
                .lock()
                .expect("lock")
                .entry(reason)
                .or_insert(0) += 1;
        } else {
            let mut d = progress.decisions.lock().expect("lock");
            if topic == topics.screenings {
                let Ok(s) = screenings.decode(payload) else {
                    continue;
                };
                if !s.event_id.starts_with(prefix) {
                    continue;
                }
                d.screenings += 1;
                if s.screened {
                    d.screened += 1;
                    for r in s.triggered_rules.iter() {
                        *d.by_rule.entry(r.as_str().to_owned()).or_insert(0) += 1;
                    }
                }
                record_latency(&progress.screening_latency_us, s.event_time.as_micros());
            } else if topic == topics.transitions {
                let Ok(t) = transitions.decode(payload) else {
                    continue;
                };
                if !t.source_id.starts_with(prefix) {
                    continue;
                }
                use kusanagi_schemas::AccountState::*;
                match (t.applied, t.to_state) {
                    (false, _) => d.refused += 1,
                    (true, RestrictedWithdrawal) => d.restricted += 1,
                    (true, UnderSurveillance) => d.surveillance += 1,
                    (true, Banned) => d.banned += 1,
                    (true, Normal) => d.recovered += 1,
                }
            } else if topic == topics.l2_requests {
                if requests
                    .decode(payload)
                    .is_ok_and(|r| r.request_id.starts_with(prefix))
                {
                    d.requests += 1;
                }
            } else if topic == topics.l2_verdicts {
                let Ok(v) = verdicts.decode(payload) else {
                    continue;
                };
                if !v.request_id.starts_with(prefix) {
                    continue;
                }
                d.verdicts += 1;
                if let Some(reason) = v.fallback_reason {
                    *d.fallbacks.entry(reason).or_insert(0) += 1;
                }
            }
            *progress.last_decision.lock().expect("lock") = Some(Instant::now());
        }
    }
}

fn record_latency(histogram: &Mutex<Option<Histogram<u64>>>, event_time_us: i64) {
    let now = chrono::Utc::now().timestamp_micros();
    let latency = (now - event_time_us).max(1) as u64;
    if let Some(h) = histogram.lock().expect("lock").as_mut() {
        let _ = h.record(latency);
    }
}

fn header(m: &rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<String> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
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
        let d = progress.decisions.lock().expect("lock").clone();
        let line = format!(
            "[{:>4.0}s] sent {:>7}/{total} | ingested {ingested:>7} | dlq {dlq:>3} | {rate:>6.0} ev/s | p99 {p99:.0} ms | screened {} | restricted {} | analysed {} | surveillance {} | banned {} | recovered {}",
            started.elapsed().as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
            d.screened,
            d.restricted,
            d.verdicts,
            d.surveillance,
            d.banned,
            d.recovered,
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
