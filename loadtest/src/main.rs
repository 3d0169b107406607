//! `kusanagi-loadtest`: drives `events.raw` with valid JSON game events at a
//! fixed rate and measures, end to end through the ingest stage, how many
//! come out in `events` and how long each took.
//!
//! | module | what |
//! |---|---|
//! | [`cluster`] | the brokers: embedded (broker, topics and ingest stage in this process) or external |
//! | [`pacing`] | the fixed-rate send schedule |
//! | [`ledger`] | event ids of a run, send instants of events not yet seen, live counters |
//! | [`drive`] | the producer side: warm-up probes, then the measured events on schedule |
//! | [`observe`] | the `read_committed` reader of `events` and the latency histogram |
//! | [`session`] | one run from warm-up to drain |
//! | [`report`] | the figures, as text on stdout and as JSON |
//! | [`view`] | `kusanagi-loadtest view`: latest-state lookups over many connections |
//! | [`drain`] | `kusanagi-loadtest drain`: every stage working off a preloaded backlog |
//! | [`block`] | `kusanagi-loadtest block`: time from a suspicious trade to a refused withdrawal |
//! | [`cpu`] | CPU time per thread group, from `/proc` |
//!
//! Exit status: 0 when every event was seen exactly once, 1 when some were
//! missing or duplicated, 2 when the run could not be carried out.

mod block;
mod cluster;
mod cpu;
mod drain;
mod drive;
mod ledger;
mod observe;
mod pacing;
mod report;
mod session;
mod view;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kusanagi_pipeline::stages::registry::StageSpec;
use kusanagi_pipeline::stages::{ingest, screen};

use crate::cluster::{Cluster, Target};
use crate::ledger::RunIds;
use crate::report::Report;
use crate::session::Plan;

/// Load test of Kusanagi's ingest path: JSON events to `events.raw` at a
/// fixed rate, measured until readable (read_committed) as Avro in `events`.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Events per second to send.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    duration: u64,
    /// Brokers of an external cluster whose ingest stage runs elsewhere
    /// (default: KAFKA_BOOTSTRAP, or the topology's kafka.bootstrap).
    #[arg(long, conflicts_with = "embedded")]
    bootstrap: Option<String>,
    /// Start the embedded broker and the ingest stage in this process (the
    /// default when no bootstrap is given).
    #[arg(long)]
    embedded: bool,
    /// Topology file (topic names, client settings, ingest batching).
    #[arg(long, short, env = "KUSANAGI_TOPOLOGY")]
    topology: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Least seconds of warm-up before the clock starts.
    #[arg(long, default_value_t = 3)]
    warm_up: u64,
    /// Seconds to wait after the last send for every event to be seen.
    #[arg(long, default_value_t = 30)]
    drain: u64,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 20_261_124)]
    seed: u64,
    /// Where an event's measured trip ends: readable in `events` (the
    /// ingest stage) or its screening readable in `screenings` (ingest and
    /// screen: the L1 latency).
    #[arg(long, value_enum, default_value = "events")]
    until: observe::Watch,
}

/// Other load tests.
#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// The state API: `GET /api/v1/accounts/{id}` over many concurrent
    /// connections (`docs/loadtest.md`).
    View(view::ViewArgs),
    /// How fast every stage works off a backlog: N events preloaded, then
    /// the stages started (`docs/loadtest.md`).
    Drain(drain::DrainArgs),
    /// Time to block: a suspicious trade -> the withdrawal check answers
    /// 423, over a background load (`docs/loadtest.md`).
    Block(block::BlockArgs),
}

/// jemalloc, not glibc's malloc: the stages allocate and free small
/// buffers for every record (decoded events, window entries, encoded
/// records) on one thread each, and glibc's allocator was about a fifth of
/// their CPU in the drain benchmark. With jemalloc the stages take about a
/// fifth less CPU per event; mimalloc made the screen cheaper but the
/// archive and the broker's large buffers dearer (docs/loadtest.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    // The stages' own logs, when asked for (`RUST_LOG=info`): quiet by
    // default, so that the report stays readable.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(Sub::Drain(d)) = &args.command {
        return run_drain(d);
    }
    if let Some(Sub::Block(b)) = &args.command {
        return run_block(b);
    }
    if let Some(Sub::View(v)) = &args.command {
        return match view::run(v) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("kusanagi-loadtest view: error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(&args) {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kusanagi-loadtest: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let topology = cluster::topology(args.topology.as_deref())?;
    let target = Target::choose(
        args.embedded,
        args.bootstrap.as_deref(),
        &topology.kafka.bootstrap,
    );
    let plan = Plan {
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        warm_up: Duration::from_secs(args.warm_up),
        drain: Duration::from_secs(args.drain),
        seed: args.seed,
        watch: args.until,
    };
    let ids = RunIds::fresh();
    let rt = cluster::runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("loadtest: interrupted; stopping and reporting");
                stop.store(true, Ordering::Relaxed);
            }
        });
    }

    let stages: &[&'static StageSpec] = match args.until {
        observe::Watch::Events => &[&ingest::SPEC],
        observe::Watch::Screenings => &[&ingest::SPEC, &screen::SPEC],
    };
    let cluster = rt.block_on(Cluster::start(topology, target, ids.run(), stages))?;
    // The figures are out before the teardown, which can take a while (the
    // embedded broker saves its state).
    let published = session::run(&cluster, &ids, &plan, &stop)
        .and_then(|report| publish(&report, args.json.as_deref()).map(|()| report));
    let stopped = rt.block_on(cluster.stop());
    let report = published?;
    stopped?;
    Ok(report)
}

fn run_drain(args: &drain::DrainArgs) -> ExitCode {
    let result = drain::run(args, &stop_on_ctrl_c()).and_then(|report| {
        print_and_save(&report, report.to_json(), args.json.as_deref())?;
        Ok(report)
    });
    exit_code("drain", result, |r| r.dead_letters == 0)
}

fn run_block(args: &block::BlockArgs) -> ExitCode {
    let result = block::run(args, &stop_on_ctrl_c()).and_then(|report| {
        print_and_save(&report, report.to_json(), args.json.as_deref())?;
        Ok(report)
    });
    exit_code("block", result, block::BlockReport::passed)
}

/// A flag that Ctrl-C sets (the run then gives up without a report).
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = std::thread::Builder::new()
        .name("loadtest-signal".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt
                && rt.block_on(tokio::signal::ctrl_c()).is_ok()
            {
                flag.store(true, Ordering::Relaxed);
            }
        });
    stop
}

/// Prints `report` on stdout and writes `json` to `path`.
fn print_and_save(
    report: &dyn std::fmt::Display,
    json: serde_json::Value,
    path: Option<&Path>,
) -> anyhow::Result<()> {
    println!("{report}");
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&json)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// 0 when `passed`, 1 when not, 2 when the run failed.
fn exit_code<R>(
    command: &str,
    result: anyhow::Result<R>,
    passed: impl FnOnce(&R) -> bool,
) -> ExitCode {
    match result {
        Ok(report) if passed(&report) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kusanagi-loadtest {command}: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints the report on stdout and writes its JSON form to `json`.
fn publish(report: &Report, json: Option<&Path>) -> anyhow::Result<()> {
    println!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.to_json())? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
