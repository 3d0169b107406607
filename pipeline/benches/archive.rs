//! Archive write throughput, per core: one hour of one tenant's demo
//! traffic (50,000 events: ordinary trades, fan-in bursts, big trades, chat)
//! written as one Parquet file (sort, Arrow batch, zstd, SHA-256), at
//! zstd levels 3 and 6; and the stage's whole core from Avro in
//! (`avro_in_file_out`): every payload of `events` decoded as the stage
//! decodes it, with its JSON size, then the file at the default level.
//! Prints the file's size against the same events as JSON once, before
//! measuring: the compression at production density.

use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kusanagi_pipeline::demo::Traffic;
use kusanagi_pipeline::stages::archive::Table;
use kusanagi_pipeline::stages::archive::file::write_file;
use kusanagi_pipeline::stages::archive::layout::PartitionKey;
use kusanagi_pipeline::stages::archive::open_files::OpenFile;
use kusanagi_pipeline::stages::archive::table::{Decoders, Record, Row};
use kusanagi_schemas::avro::GameEventCodec;
use kusanagi_schemas::{EventTime, parse_event};

const EVENTS: usize = 50_000;

/// The demo's traffic for 10 minutes of one hour (about 83 events/s).
fn rows() -> Vec<Row> {
    let mut traffic = Traffic::new("bench", 42);
    let start = 4_070_908_800_000_000i64; // 2099-01-01T00:00:00Z
    let mut rows = Vec::with_capacity(EVENTS);
    let mut i = 0i64;
    while rows.len() < EVENTS {
        i += 1;
        let at = EventTime::from_micros(start + i * 12_000).to_rfc3339();
        let g = traffic.next_record(&at);
        if let Ok(e) = parse_event(&g.json) {
            rows.push(Row {
                record: Record::Event(e),
                partition: (i % 6) as i32,
                offset: i,
            });
        }
    }
    rows
}

fn open_file(rows: &[Row]) -> OpenFile {
    open_file_of(rows.to_vec())
}

/// The open file the stage would hold for `rows` (each row's JSON size
/// counted, as the stage counts it when the record arrives).
fn open_file_of(rows: Vec<Row>) -> OpenFile {
    OpenFile {
        bytes: rows.len() * 200,
        json_bytes: rows.iter().map(|r| r.record.json_len() as u64).sum(),
        rows,
        opened_at: Instant::now(),
    }
}

fn bench(c: &mut Criterion) {
    let rows = rows();
    let key = PartitionKey::of(Table::Events, "default", 4_070_908_800_000_000);
    for level in [3, 6] {
        let w = write_file(&key, "events", open_file(&rows), level, 0.01, 0).expect("write");
        eprintln!(
            "archive file, zstd {level}: {} rows, {} bytes Parquet for {} bytes of JSON: ratio {:.3}, saving {:.1}%",
            w.entry.rows,
            w.entry.size_bytes,
            w.entry.json_bytes,
            w.entry.size_bytes as f64 / w.entry.json_bytes as f64,
            100.0 * (1.0 - w.entry.size_bytes as f64 / w.entry.json_bytes as f64)
        );
    }
    let mut g = c.benchmark_group("archive");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(10);
    for level in [3, 6] {
        g.bench_function(format!("write_file_zstd{level}"), |b| {
            b.iter_batched(
                || open_file(&rows),
                |f| write_file(&key, "events", f, level, 0.01, 0).expect("write"),
                BatchSize::LargeInput,
            )
        });
    }
    let codec = GameEventCodec::new();
    let payloads: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| match &r.record {
            Record::Event(e) => codec.encode(e),
            _ => unreachable!("the bench's rows are events"),
        })
        .collect();
    let decoders = Decoders::new();
    g.bench_function("avro_in_file_out", |b| {
        b.iter(|| {
            let rows: Vec<Row> = payloads
                .iter()
                .enumerate()
                .map(|(i, bytes)| Row {
                    record: decoders.decode(Table::Events, bytes).expect("decodes"),
                    partition: (i % 6) as i32,
                    offset: i as i64,
                })
                .collect();
            write_file(&key, "events", open_file_of(rows), 6, 0.01, 0).expect("write")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
