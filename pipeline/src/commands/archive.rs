//! The archive commands as the `kusanagi` binary runs them: open the
//! catalog and tiers a topology names, show progress on stderr (indicatif,
//! hidden when stderr is not a terminal), print the result on stdout.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use kusanagi_schemas::{GameEvent, GameEventCodec};
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use kusanagi_pipeline::catalog::stats::stats;
use kusanagi_pipeline::catalog::{Action, Catalog, Rewind, Tier, Tiers};
use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::erasure::{Erased, Secrets};
use kusanagi_pipeline::ops::restore::{Restored, TimeRange, restore};
use kusanagi_pipeline::ops::verify::{selected, verify};
use kusanagi_pipeline::stages::archive::Table;

/// Counts the records the broker did not take.
#[derive(Default)]
struct FailedDeliveries(AtomicU64);

impl ClientContext for FailedDeliveries {}

impl ProducerContext for FailedDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn bar(len: u64, what: &str, bytes: bool) -> ProgressBar {
    let template = if bytes {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})"
    } else {
        "{msg} [{bar:30}] {pos}/{len} ({eta})"
    };
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_owned());
    pb
}

async fn open(topology: &Topology, writer: &str) -> anyhow::Result<(Tiers, Catalog)> {
    let a = &topology.archive;
    let tiers = a.open_tiers().context("opening the archive tiers")?;
    let store = a.open_catalog_store().context("opening the catalog")?;
    let catalog = Catalog::open(store, writer)
        .await
        .with_context(|| format!("reading the catalog at {}", a.catalog))?;
    Ok((tiers, catalog))
}

fn table_names() -> Vec<&'static str> {
    Table::ALL.iter().map(|t| t.name()).collect()
}

/// `kusanagi catalog ls`: one line per file (or JSON).
pub async fn catalog_ls(
    topology: &Topology,
    table: Option<&str>,
    tier: Option<Tier>,
    json: bool,
) -> anyhow::Result<()> {
    let (_, catalog) = open(topology, "catalog-ls").await?;
    let files: Vec<_> = selected(&catalog, table, tier).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&files)?);
        return Ok(());
    }
    println!(
        "{:<5} {:>9} {:>11} {:<27} {:<27} {:<12} path",
        "tier", "rows", "bytes", "first event", "last event", "sha256"
    );
    for f in &files {
        let t = |us| kusanagi_schemas::EventTime::from_micros(us).to_rfc3339();
        println!(
            "{:<5} {:>9} {:>11} {:<27} {:<27} {:<12} {}",
            f.tier.as_str(),
            f.rows,
            f.size_bytes,
            t(f.min_event_time_us),
            t(f.max_event_time_us),
            f.sha256.get(..12).unwrap_or(&f.sha256),
            f.path
        );
    }
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(|f| f.size_bytes).sum();
    println!(
        "{} files, {rows} rows, {bytes} bytes (catalog version {}, {})",
        files.len(),
        catalog.state().version(),
        catalog.url()
    );
    Ok(())
}

/// `kusanagi catalog rewind`: moves `topic`/`partition`'s archived offset
/// back to `to` (the broker's log end), after the broker lost records it
/// had acknowledged; the archive stage then archives the records that
/// reuse those offsets.
pub async fn catalog_rewind(
    topology: &Topology,
    topic: &str,
    partition: i32,
    to: i64,
    reason: &str,
    force: bool,
) -> anyhow::Result<()> {
    let (_, mut catalog) = open(topology, "catalog-rewind").await?;
    let Some(from) = catalog.state().next_offset(topic, partition) else {
        anyhow::bail!("the catalog has archived nothing of {topic}/{partition}: nothing to rewind");
    };
    anyhow::ensure!(
        (0..from).contains(&to),
        "--to {to} is not below {topic}/{partition}'s archived offset {from}: a rewind only moves it back"
    );
    // Only a log that went back is rewound, and never past its end.
    // `--force`: its end has passed the archived offset again since the
    // archive refused it (new records arrived meanwhile).
    if !force {
        let log_end = log_end(topology, topic, partition)?;
        anyhow::ensure!(
            log_end < from,
            "the broker's log of {topic}/{partition} ends at {log_end}, not below the archived \
             offset {from}: it did not go back, and a rewind would archive its records twice \
             (--force if the archive refused it and records have arrived since)"
        );
        anyhow::ensure!(
            to <= log_end,
            "--to {to} is past the broker's log end of {topic}/{partition} ({log_end}): the \
             records from {log_end} to {to} would never be archived"
        );
    }
    let rewind = Action::Rewind(Rewind {
        topic: topic.to_owned(),
        partition,
        from,
        to,
        reason: reason.to_owned(),
    });
    let version = catalog
        .commit("rewind", vec![rewind])
        .await
        .with_context(|| format!("committing the rewind to {}", catalog.url()))?;
    println!(
        "{topic}/{partition}: archived offset {from} -> {to} (catalog version {version}). \
         Restart the archive stage's copies: they archive {topic}/{partition} from offset {to}."
    );
    Ok(())
}

/// The end of `topic`/`partition`'s log in the topology's brokers
/// (`kafka.bootstrap`, else the embedded broker's `listen` address).
fn log_end(topology: &Topology, topic: &str, partition: i32) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let bootstrap = if topology.kafka.bootstrap.is_empty() {
        topology.embedded_broker.listen.clone()
    } else {
        topology.kafka.bootstrap.clone()
    };
    let consumer: BaseConsumer = topology
        .kafka_settings(&bootstrap)
        .consumer_config("kusanagi-catalog-rewind", None)
        .create()
        .context("creating a Kafka client")?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, std::time::Duration::from_secs(10))
        .with_context(|| format!("reading the end of {topic}/{partition} from {bootstrap}"))?;
    Ok(high)
}

/// `kusanagi tier`: one tiering pass.
pub async fn tier(topology: &Topology, now: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let now_us = match now {
        None => chrono::Utc::now().timestamp_micros(),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|_| anyhow::anyhow!("--now: expected an RFC 3339 time, found {s:?}"))?,
    };
    let pb = bar(0, "moving", false);
    let pass = kusanagi_pipeline::stages::tier::pass(
        &topology.archive,
        "tier",
        topology.stages.archive.zstd_level,
        now_us,
        dry_run,
        |n| pb.set_length(n),
        |k| pb.inc(k),
    )
    .await?;
    pb.finish_and_clear();
    for m in pass.moves.iter().filter(|_| dry_run) {
        let from: Vec<String> = m.sources.iter().map(|f| f.key().to_string()).collect();
        println!("{} <- {}", m.to, from.join(", "));
    }
    match pass.report {
        None => println!(
            "{} moves planned (dry run: nothing moved)",
            pass.moves.len()
        ),
        Some(r) => {
            println!(
                "moved {} files ({} rows) into {} files, {} bytes written; {} moves deferred",
                r.files_moved, r.rows, r.files_written, r.bytes_written, r.deferred
            );
            if !r.damaged.is_empty() {
                for d in &r.damaged {
                    eprintln!("damaged, not moved: {d}");
                }
                bail!(
                    "{} damaged files were not moved; run `kusanagi verify`",
                    r.damaged.len()
                );
            }
        }
    }
    Ok(())
}

/// `kusanagi verify`: fails (non-zero exit) on any problem.
pub async fn verify_cmd(
    topology: &Topology,
    table: Option<&str>,
    tier: Option<Tier>,
) -> anyhow::Result<()> {
    let (tiers, mut catalog) = open(topology, "verify").await?;
    let files: Vec<_> = selected(&catalog, table, tier).cloned().collect();
    let total: u64 = files.iter().map(|f| f.size_bytes).sum();
    let pb = bar(total, "verifying", true);
    let tables = match table {
        Some(t) => vec![t],
        None => table_names(),
    };
    let report = verify(&tiers, &mut catalog, files, &tables, |b| pb.inc(b)).await?;
    pb.finish_and_clear();
    for p in &report.problems {
        println!("FAILED {p}");
    }
    println!(
        "{} files, {} rows, {} bytes checked: {}",
        report.files,
        report.rows,
        report.bytes,
        if report.ok() {
            "all match the catalog".to_owned()
        } else {
            format!("{} problems", report.problems.len())
        }
    );
    if !report.ok() {
        bail!("verify found {} problems", report.problems.len());
    }
    Ok(())
}

/// Where `kusanagi restore` puts the rows.
#[derive(Debug, Clone)]
pub enum RestoreTarget<'a> {
    /// `<dir>/<table>.jsonl`.
    Dir(&'a Path),
    /// A Kafka topic (events only), Avro, keyed by target_id.
    Topic(&'a str),
}

/// `kusanagi restore`.
pub async fn restore_cmd(
    topology: &Topology,
    bootstrap: Option<&str>,
    table: Table,
    from: &str,
    to: &str,
    target: RestoreTarget<'_>,
) -> anyhow::Result<()> {
    let range = TimeRange::parse(from, to)?;
    if matches!(target, RestoreTarget::Topic(_)) && table != Table::Events {
        bail!(
            "--to-topic restores the events table only; use --out DIR for {}",
            table.name()
        );
    }
    let (tiers, catalog) = open(topology, "restore").await?;
    // Erased subjects are skipped (`is_deleted`), even before their purge.
    let secrets = if catalog.state().erasures().next().is_some() {
        Some(Secrets::load(
            &topology.gdpr,
            topology.kafka.bootstrap.is_empty(),
        )?)
    } else {
        None
    };
    let erased = Erased::of(catalog.state(), secrets)?;
    let files = kusanagi_pipeline::ops::restore::files_for(&catalog, table, range);
    let pb = bar(files.iter().map(|f| f.size_bytes).sum(), "reading", true);
    let restored = restore(&tiers, &catalog, table, range, &erased, |b| pb.inc(b)).await?;
    if !erased.is_empty() {
        eprintln!(
            "{} erased subjects skipped (kusanagi erasures ls)",
            erased.len()
        );
    }
    pb.finish_and_clear();
    match target {
        RestoreTarget::Dir(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("{}.jsonl", table.name()));
            std::fs::write(&path, restored.to_json_lines())
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "{} rows of {} from {} files -> {}",
                restored.len(),
                table.name(),
                files.len(),
                path.display()
            );
        }
        RestoreTarget::Topic(topic) => {
            let Restored::Events(events) = &restored else {
                bail!("only events can go back into a topic");
            };
            let bootstrap = bootstrap.filter(|b| !b.is_empty()).context(
                "--to-topic needs a Kafka cluster: set KAFKA_BOOTSTRAP or kafka.bootstrap",
            )?;
            produce_restored(topology, bootstrap, topic, events).await?;
            println!(
                "{} events from {} files -> topic {topic}",
                events.len(),
                files.len()
            );
        }
    }
    Ok(())
}

/// Produces restored `events` to `topic` (made like `events` if missing),
/// each acknowledged.
async fn produce_restored(
    topology: &Topology,
    bootstrap: &str,
    topic: &str,
    events: &[GameEvent],
) -> anyhow::Result<()> {
    let settings = topology.kafka_settings(bootstrap);
    let spec = kusanagi_connectors::kafka::TopicSpec {
        name: topic.to_owned(),
        partitions: topology.topics.partitions,
        replication_factor: topology.topics.replication_factor,
        configs: vec![("compression.type".into(), "producer".into())],
    };
    kusanagi_connectors::kafka::ensure_topics(&settings, &[spec])
        .await
        .with_context(|| format!("creating topic {topic}"))?;
    let producer: ThreadedProducer<FailedDeliveries> = settings
        .producer_config()
        .create_with_context(FailedDeliveries::default())
        .context("creating the Kafka producer")?;
    let codec = GameEventCodec::new();
    let pb = bar(events.len() as u64, "producing", false);
    for e in events {
        let value = codec.encode(e);
        let mut record = BaseRecord::to(topic).key(e.kafka_key()).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => bail!("cannot produce to {topic}: {e}"),
            }
        }
        pb.inc(1);
    }
    producer
        .flush(Duration::from_secs(60))
        .context("not every restored event was acknowledged")?;
    let failed = producer.context().0.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} restored events were not delivered to {topic}");
    }
    pb.finish_and_clear();
    Ok(())
}

/// One line on what the archive holds per table (the demo's summary).
pub async fn archive_summary(topology: &Topology) -> anyhow::Result<String> {
    let (_, catalog) = open(topology, "summary").await?;
    let parts: Vec<String> = stats(catalog.state())
        .into_iter()
        .filter(|s| s.tier == "all")
        .map(|s| {
            format!(
                "{} {} in {} files ({:.1}% smaller than JSON)",
                s.rows,
                s.table,
                s.files,
                s.saving * 100.0
            )
        })
        .collect();
    Ok(format!(
        "archived: {} (under {})",
        parts.join(", "),
        topology.archive.hot
    ))
}

/// `kusanagi stats`.
pub async fn stats_cmd(topology: &Topology, json: bool) -> anyhow::Result<()> {
    let (_, catalog) = open(topology, "stats").await?;
    let rows = stats(catalog.state());
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<5} {:>7} {:>10} {:>13} {:>13} {:>7}",
        "table", "tier", "files", "rows", "bytes stored", "bytes json", "saving"
    );
    for s in rows {
        println!(
            "{:<12} {:<5} {:>7} {:>10} {:>13} {:>13} {:>6.1}%",
            s.table,
            s.tier,
            s.files,
            s.rows,
            s.bytes_stored,
            s.bytes_json,
            s.saving * 100.0
        );
    }
    Ok(())
}
