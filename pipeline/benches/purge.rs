//! The erasure purge at scale: an archive of 10,000 files (500,000 demo
//! events in folders), then the purge of one subject at a time, against a
//! baseline measured in the same run: reading every file, which is what a
//! purge without subject filters would have to do. Prints the files each
//! purge opened and rewrote, out of those listed.

use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use kusanagi_pipeline::catalog::parquet::read_batches;
use kusanagi_pipeline::catalog::{Catalog, Erasure};
use kusanagi_pipeline::config::ArchiveConfig;
use kusanagi_pipeline::demo::archive::write_demo_archive;
use kusanagi_pipeline::stages::compact::purge::{Target, purge};
use kusanagi_pipeline::stages::tier::mover::{Rewrite, read_checked};

const HOURS: i64 = 1_000;
const PER_HOUR: usize = 500;
const FILES_PER_HOUR: usize = 10;

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("kusanagi-purge-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let at = |name: &str| dir.join(name).display().to_string();
    let config = ArchiveConfig {
        catalog: at("catalog"),
        hot: at("hot"),
        warm: at("warm"),
        cold: at("cold"),
        ..ArchiveConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = rt
        .block_on(write_demo_archive(&config, HOURS, PER_HOUR, FILES_PER_HOUR))
        .expect("archive");
    let tiers = config.open_tiers().unwrap();
    let mut catalog = rt
        .block_on(Catalog::open(config.open_catalog_store().unwrap(), "bench"))
        .unwrap();
    let files = catalog.state().files().count();
    eprintln!("archive: {} events in {files} files", events.len());
    // Subjects: distinct targets, far apart in the stream.
    let mut subjects: Vec<String> = events
        .iter()
        .step_by(4_999)
        .map(|e| e.target_id.clone())
        .collect();
    subjects.dedup();
    let next = AtomicUsize::new(0);
    let rewrite = Rewrite {
        zstd_level: 3,
        subject_filter_fpp: config.subject_filter_fpp,
    };
    let mut opened = Vec::new();
    let mut g = c.benchmark_group("purge");
    g.sample_size(10);
    g.bench_function("one_subject_of_10000_files", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let subject = &subjects[n % subjects.len()];
            let target = Target {
                erasure: Erasure {
                    request_id: format!("bench-{n}"),
                    subject_hash: format!("{n:064x}"),
                    requested_at_ms: 0,
                    requested_by: "bench".into(),
                },
                subject: subject.clone(),
            };
            let report = rt
                .block_on(purge(&mut catalog, &tiers, &[target], rewrite, |_| {}))
                .expect("purge");
            opened.push((
                report.files_opened,
                report.files_rewritten,
                report.files_listed,
            ));
        })
    });
    let all: Vec<_> = catalog.state().files().cloned().collect();
    g.bench_function("baseline_read_every_file", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut rows = 0;
                for f in &all {
                    let bytes = read_checked(&tiers, f).await.expect("read");
                    rows += read_batches(bytes)
                        .expect("parquet")
                        .iter()
                        .map(|b| b.num_rows())
                        .sum::<usize>();
                }
                rows
            })
        })
    });
    g.finish();
    opened.sort_unstable();
    if let Some(&(o, r, l)) = opened.get(opened.len() / 2) {
        eprintln!(
            "files per purge (median of {}): opened {o}, rewritten {r}, of {l} listed; max opened {}",
            opened.len(),
            opened.iter().map(|x| x.0).max().unwrap_or(0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
