//! L1 evaluation throughput, per core: the windows and rules alone
//! (`observe`), and the whole screen stage on a batch (Avro decode,
//! windows, rules, Avro encode of the screening).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kusanagi_pipeline::runtime::{InRecord, NoHistory, Stage};
use kusanagi_pipeline::stages::screen::{PartitionWindows, ScreenConfig, ScreenStage};
use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 20_000;

/// 20,000 events over 2,000 targets and 20 minutes of event time (so
/// windows fill and expire), jittered by up to 30 s, a few with chat.
fn events() -> Vec<GameEvent> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..EVENTS)
        .map(|i| GameEvent {
            event_id: format!("ev-{i:08}"),
            timestamp: EventTime::from_micros(
                4_070_908_800_000_000 + i as i64 * 60_000 - rng.random_range(0..30_000_000),
            ),
            event_type: "TRADE".into(),
            actor_id: format!("player_{}", rng.random_range(0..5_000)),
            target_id: format!("acct_{:04}", rng.random_range(0..2_000)),
            action_details: ActionDetails {
                currency_amount: rng.random_range(100..200_000),
                item_id: Some("itm_001".into()),
                market_avg_price: Some(rng.random_range(500..5_000)),
            },
            context_metadata: ContextMetadata {
                recent_chat_log: (i % 20 == 0).then(|| "gg thanks, 5kで送金します".to_owned()),
                ..ContextMetadata::default()
            },
            tenant_id: "default".into(),
        })
        .collect()
}

fn l1(c: &mut Criterion) {
    let events = events();
    let config = ScreenConfig::default();
    let mut group = c.benchmark_group("l1");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(20);
    group.bench_function("windows_and_rules", |b| {
        b.iter_batched(
            || PartitionWindows::new(config.window_spec()),
            |mut w| {
                for (offset, e) in events.iter().enumerate() {
                    std::hint::black_box(w.observe(
                        offset as i64,
                        e,
                        config.thresholds_for(&e.tenant_id),
                    ));
                }
                w
            },
            BatchSize::LargeInput,
        )
    });
    let codec = GameEventCodec::new();
    let payloads: Vec<Vec<u8>> = events.iter().map(|e| codec.encode(e)).collect();
    group.bench_function("screen_stage_avro_in_out", |b| {
        b.iter_batched(
            || {
                ScreenStage::new(
                    config.clone(),
                    "events",
                    "screenings",
                    "events.dlq",
                    Box::new(NoHistory),
                )
            },
            |mut stage| {
                let mut out = Vec::with_capacity(2_000);
                for (chunk_no, chunk) in payloads.chunks(2_000).enumerate() {
                    let batch: Vec<InRecord<'_>> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, p)| InRecord {
                            topic: "events",
                            partition: 0,
                            offset: (chunk_no * 2_000 + i) as i64,
                            key: None,
                            payload: Some(p),
                            timestamp_ms: None,
                            trace: None,
                        })
                        .collect();
                    out.clear();
                    stage.process(&batch, &mut out).expect("screening");
                    std::hint::black_box(&out);
                }
                stage
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, l1);
criterion_main!(benches);
