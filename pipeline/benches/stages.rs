//! Every Kafka-to-Kafka stage's processing core on a batch, Avro (or the
//! producers' JSON) in and Avro out, per core, no broker: ingest (JSON ->
//! `events`), decide (`screenings` -> accounts, transitions, L2 requests)
//! and analyze with the fallback analyzer (`l2.requests` -> verdicts).
//! The screen stage has its own bench (`screen`). Each stage's input is
//! the previous stage's output on the same workload: 20,000 trades over
//! 2,000 accounts, a sixth of them screened.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kusanagi_pipeline::config::TopicsConfig;
use kusanagi_pipeline::runtime::{InRecord, NoHistory, OutRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer};
use kusanagi_pipeline::stages::decide::{DecideStage, DecideTopics};
use kusanagi_pipeline::stages::ingest::IngestStage;
use kusanagi_pipeline::stages::screen::{ScreenConfig, ScreenStage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 20_000;
const BATCH: usize = 2_000;

/// The producers' JSON of 20,000 trades over 2,000 targets and 20 minutes.
fn json_events() -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..EVENTS)
        .map(|i| {
            let us = 4_070_908_800_000_000i64 + i as i64 * 60_000 - rng.random_range(0..30_000_000);
            let at = chrono::DateTime::from_timestamp_micros(us)
                .expect("a valid time")
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let chat = if i % 20 == 0 {
                "\"gg thanks, 5kで送金します\"".to_owned()
            } else {
                "null".to_owned()
            };
            format!(
                r#"{{"event_id":"ev-{i:08}","timestamp":"{at}","event_type":"TRADE","actor_id":"player_{}","target_id":"acct_{:04}","action_details":{{"currency_amount":{},"item_id":"itm_001","market_avg_price":{}}},"context_metadata":{{"actor_level":3,"account_age_days":40,"recent_chat_log":{chat}}},"tenant_id":"default"}}"#,
                rng.random_range(0..5_000),
                rng.random_range(0..2_000),
                rng.random_range(100..200_000),
                rng.random_range(500..5_000),
            )
            .into_bytes()
        })
        .collect()
}

/// Runs `payloads` (of `topic`) through `stage` in batches; returns what
/// it produced.
fn feed(stage: &mut dyn Stage, topic: &'static str, payloads: &[Vec<u8>]) -> Vec<OutRecord> {
    let mut all = Vec::new();
    for (n, chunk) in payloads.chunks(BATCH).enumerate() {
        let batch: Vec<InRecord<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| InRecord {
                topic,
                partition: 0,
                offset: (n * BATCH + i) as i64,
                key: None,
                payload: Some(p),
                timestamp_ms: None,
                trace: None,
            })
            .collect();
        let mut out = Vec::with_capacity(BATCH);
        stage.process(&batch, &mut out).expect("a batch");
        all.extend(out);
    }
    all
}

fn values_of(out: &[OutRecord], topic: &str) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|r| r.topic == topic)
        .filter_map(|r| r.payload.clone())
        .collect()
}

fn stages(c: &mut Criterion) {
    let topics = TopicsConfig::default();
    let json = json_events();
    let ingest = || IngestStage::new(&topics.events, &topics.dead_letter, 1 << 20, 1 << 20);
    let events = values_of(&feed(&mut ingest(), "events.raw", &json), &topics.events);
    assert_eq!(events.len(), EVENTS, "every event is valid");
    let screen = || {
        ScreenStage::new(
            ScreenConfig::default(),
            &topics.events,
            &topics.screenings,
            &topics.dead_letter,
            Box::new(NoHistory),
        )
    };
    let screenings = values_of(&feed(&mut screen(), "events", &events), &topics.screenings);
    let decide = || DecideStage::new(DecideTopics::of(&topics), Box::new(NoHistory));
    let requests = values_of(
        &feed(&mut decide(), "screenings", &screenings),
        &topics.l2_requests,
    );

    let mut group = c.benchmark_group("stages");
    group.sample_size(20);
    group.throughput(Throughput::Elements(json.len() as u64));
    group.bench_function("ingest_json_in_avro_out", |b| {
        b.iter_batched(
            ingest,
            |mut s| feed(&mut s, "events.raw", &json),
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(screenings.len() as u64));
    group.bench_function("decide_avro_in_out", |b| {
        b.iter_batched(
            decide,
            |mut s| feed(&mut s, "screenings", &screenings),
            BatchSize::LargeInput,
        )
    });
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let analyze = || {
        AnalyzeStage::new(
            Analyzer::Fallback,
            &topics.l2_verdicts,
            &topics.dead_letter,
            rt.handle().clone(),
        )
    };
    group.throughput(Throughput::Elements(requests.len().max(1) as u64));
    group.bench_function("analyze_fallback_avro_in_out", |b| {
        b.iter_batched(
            analyze,
            |mut s| feed(&mut s, "l2.requests", &requests),
            BatchSize::LargeInput,
        )
    });
    group.finish();
    eprintln!(
        "stages: {} events, {} screenings, {} L2 requests",
        events.len(),
        screenings.len(),
        requests.len()
    );
}

criterion_group!(benches, stages);
criterion_main!(benches);
