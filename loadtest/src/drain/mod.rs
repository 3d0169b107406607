//! `kusanagi-loadtest drain`: how fast the stages work off a backlog.
//!
//! In one process, on the embedded broker: N valid events are generated;
//! the bare broker's rate on them is measured first (produce to a scratch
//! topic, read back: [`ceiling`]); then they are written to `events.raw`,
//! and only then are the stages `kusanagi run` starts for the topology
//! started, exactly as it starts them (the archive in the run's temporary
//! folder, rotating files every `--archive-rotate-seconds`). Every 20 ms the run reads how many
//! records each stage has committed (its `kusanagi_records_in_total`:
//! counted when a batch's transaction, or the archive's catalog commit,
//! holds), and notes when each stage has committed all N. The CPU time of
//! every thread is read from `/proc` before the stages start and once all
//! are done ([`crate::cpu`]).

mod ceiling;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::demo::Traffic;
use kusanagi_pipeline::runtime::Metrics;
use kusanagi_pipeline::stages::registry;

use crate::cluster::{self, Cluster, Target};
use crate::cpu::Snapshot;
use crate::drive::next_valid;
use crate::ledger::RunIds;
pub use report::{DrainReport, StageDrain};

/// Arguments of `kusanagi-loadtest drain`.
#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// Events to preload into `events.raw`.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Topology file (topic names, client and stage settings); the archive
    /// is always written under the run's temporary directory.
    #[arg(long, short, env = "KUSANAGI_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seconds the stages may take before the run gives up.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 20_261_124)]
    pub seed: u64,
    /// The archive's `rotate_after_seconds` for the run. The archive
    /// commits when a file is old or big enough; under a backlog of small
    /// events the age decides, so the topology's default (300 s) would
    /// measure that wait, not the archive's pace.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub archive_rotate_seconds: u64,
}

/// The generated records: (key, JSON) of valid events.
pub struct Preload {
    /// In order of generation.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Preload {
    /// `n` valid events of the demo's generator.
    pub fn generate(ids: &RunIds, n: u64, seed: u64) -> Self {
        let mut traffic = Traffic::new(&ids.measured_prefix(), seed);
        let now = kusanagi_schemas::EventTime::from(chrono::Utc::now()).to_rfc3339();
        let mut seq = 0;
        let records = (0..n)
            .map(|_| {
                let g = next_valid(&mut traffic, &now, &mut seq);
                (g.key.into_bytes(), g.json)
            })
            .collect();
        Self { records }
    }
}

/// What each stage must have committed, all N, for the run to end:
/// (stage, the topic it reads).
fn milestones(topology: &Topology) -> Vec<(&'static str, String)> {
    let t = &topology.topics;
    vec![
        ("ingest", t.raw.clone()),
        ("screen", t.events.clone()),
        ("decide", t.screenings.clone()),
        ("archive", t.events.clone()),
    ]
}

/// Runs the drain; `stop` (Ctrl-C) gives up early.
pub fn run(args: &DrainArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<DrainReport> {
    let topology = cluster::topology(args.topology.as_deref())?;
    let ids = RunIds::fresh();
    let rt = cluster::runtime()?;
    let mut cluster = rt.block_on(Cluster::start(topology, Target::Embedded, ids.run(), &[]))?;
    cluster.archive_in_run_dir();
    cluster.topology.stages.archive.rotate_after_seconds = args.archive_rotate_seconds;
    let n = args.events;
    eprintln!("drain: generating {n} events");
    let preload = Preload::generate(&ids, n, args.seed);
    let partitions = cluster.partitions_of(&cluster.topology.topics.raw.clone())?;

    eprintln!(
        "drain: the bare broker: producing {n} records to a scratch topic and reading them back"
    );
    rt.block_on(ceiling::create_topic(&cluster.settings, partitions))?;
    let ceiling = ceiling::measure(&cluster.settings, &preload)?;

    let raw = cluster.topology.topics.raw.clone();
    eprintln!("drain: writing {n} events to `{raw}`");
    let preload_seconds = ceiling::produce_all(&cluster.settings, &raw, &preload)?;
    drop(preload);

    let stages = registry::enabled(&cluster.topology);
    let names: Vec<&str> = stages.iter().map(|s| s.name).collect();
    if let Some((missing, _)) = milestones(&cluster.topology)
        .into_iter()
        .find(|(stage, _)| !names.contains(stage))
    {
        bail!("the drain measures the {missing} stage, which the topology disables");
    }
    eprintln!("drain: starting the stages ({})", names.join(", "));
    let cpu_before = Snapshot::take();
    let started = Instant::now();
    {
        let _in_runtime = rt.enter();
        cluster.start_stages(&stages)?;
    }
    let milestones = milestones(&cluster.topology);
    let done = wait_for(
        &cluster,
        cluster.metrics(),
        &milestones,
        n,
        started,
        Duration::from_secs(args.timeout),
        stop,
    );
    let cpu = Snapshot::take().since(&cpu_before);
    let wall = started.elapsed().as_secs_f64();
    let dead_letters = dead_letters(cluster.metrics());
    let transactions = crate::block::hops::transactions(&cluster.metrics().encode());
    let stopped = rt.block_on(cluster.stop());
    let done = done?;
    stopped?;
    Ok(DrainReport {
        run: ids.run().to_owned(),
        events: n,
        partitions,
        ceiling,
        preload_seconds,
        stages: done,
        cpu_seconds: cpu,
        wall_seconds: wall,
        dead_letters,
        cores: std::thread::available_parallelism().map_or(1, |c| c.get()),
        transactions,
    })
}

/// Polls the stages' committed counts until each milestone reached `n`;
/// returns each stage's seconds from `started`.
fn wait_for(
    cluster: &Cluster,
    metrics: &Metrics,
    milestones: &[(&'static str, String)],
    n: u64,
    started: Instant,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<StageDrain>> {
    let mut done: Vec<Option<f64>> = vec![None; milestones.len()];
    let mut next_status = Instant::now() + Duration::from_secs(1);
    while done.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = started.elapsed();
        let counts: Vec<u64> = milestones
            .iter()
            .map(|(stage, topic)| metrics.records_in_total(stage, topic))
            .collect();
        for (i, count) in counts.iter().enumerate() {
            if done[i].is_none() && *count >= n {
                done[i] = Some(elapsed.as_secs_f64());
            }
        }
        if Instant::now() >= next_status {
            next_status += Duration::from_secs(1);
            let line: Vec<String> = milestones
                .iter()
                .zip(&counts)
                .map(|((stage, _), c)| format!("{stage} {c}"))
                .collect();
            eprintln!("[{:>5.1}s] {}", elapsed.as_secs_f64(), line.join(" | "));
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if cluster.stage_stopped() {
            bail!("a stage stopped on its own; see its log above");
        }
        if elapsed > timeout {
            bail!(
                "not drained within {} s: {:?}",
                timeout.as_secs(),
                milestones.iter().zip(&counts).collect::<Vec<_>>()
            );
        }
    }
    Ok(milestones
        .iter()
        .zip(done)
        .map(|((stage, topic), seconds)| StageDrain {
            stage,
            topic: topic.clone(),
            seconds: seconds.unwrap_or_default(),
        })
        .collect())
}

/// Records any stage dead-lettered, read from the metrics' exposition.
fn dead_letters(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("kusanagi_dead_letters_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
