//! JSON -> GameEvent -> Avro (the ingest stage's per-record work) and Avro
//! decoding (what every downstream stage does), in events per second.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kusanagi_schemas::{GameEventCodec, parse_event};
use std::hint::black_box;

fn sample_events(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"event_id":"evt-{i:08}","timestamp":"2099-01-01T00:{:02}:{:02}Z","event_type":"TRADE","actor_id":"player_{}","target_id":"player_{}","action_details":{{"currency_amount":{},"item_id":"itm_{}","market_avg_price":{}}},"context_metadata":{{"actor_level":{},"account_age_days":{},"recent_chat_log":{}}},"tenant_id":"game-1"}}"#,
                (i / 60) % 60,
                i % 60,
                i % 977,
                i % 131,
                1_000 + i * 37 % 90_000,
                i % 50,
                500 + i % 300,
                1 + i % 99,
                i % 2000,
                if i % 10 == 0 { "\"gg, see you\"" } else { "null" }
            )
            .into_bytes()
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let inputs = sample_events(1_000);
    let codec = GameEventCodec::new();
    let encoded: Vec<Vec<u8>> = inputs
        .iter()
        .map(|j| codec.encode(&parse_event(j).unwrap()))
        .collect();

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("json_to_avro", |b| {
        b.iter(|| {
            for j in &inputs {
                let event = parse_event(black_box(j)).unwrap();
                black_box(codec.encode(&event));
            }
        })
    });
    group.bench_function("json_parse_only", |b| {
        b.iter(|| {
            for j in &inputs {
                black_box(parse_event(black_box(j)).unwrap());
            }
        })
    });
    group.bench_function("avro_decode", |b| {
        b.iter(|| {
            for a in &encoded {
                black_box(codec.decode(black_box(a)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
