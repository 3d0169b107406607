//! `kusanagi-loadtest block`: how long a fraudster's withdrawal still
//! passes after the trade that should block it.
//!
//! In one process, on the embedded broker: every stage `kusanagi run`
//! starts, and its HTTP API (event intake and the state API) on a free
//! port. Ordinary trades flow to `events.raw` at `--background-rate` in the
//! background (the demo's generator, as the rate-based run sends them).
//! Then, one trial at a time: a suspicious trade for a fresh account (a
//! price 200 times the market's with payment slang in the chat: rules R3
//! and R4, which every analyzer keeps blocked) is sent, through Kafka
//! (`events.raw`, then ingest) or through the HTTP intake (`POST
//! /api/v1/events`); the clock starts just before the send, and `POST
//! /api/v1/withdrawals/check` for the account is asked again 1 ms after
//! each answer until it refuses the withdrawal (423, or 403 if banned). The first trial warms the path up and is not
//! counted.

pub mod hops;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use kusanagi_pipeline::api::{Keys, auth};
use kusanagi_pipeline::config::{KeyConfig, Role};
use kusanagi_pipeline::run;
use kusanagi_pipeline::stages::registry;
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::cluster::{self, Cluster, Target};
use crate::drive::{Driver, Sending};
use crate::ledger::{Counters, Ledger, RunIds};
use crate::pacing::Schedule;
pub use report::BlockReport;

/// How a trial's trade is sent.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To `events.raw`, through the ingest stage.
    Kafka,
    /// `POST /api/v1/events`, straight to `events`.
    Http,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Kafka => "kafka",
            Via::Http => "http",
        }
    }
}

/// Arguments of `kusanagi-loadtest block`.
#[derive(clap::Args, Debug)]
pub struct BlockArgs {
    /// Ordinary trades per second to `events.raw` meanwhile (0: none).
    #[arg(long, default_value_t = 5_000)]
    pub background_rate: u64,
    /// Trials counted.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..))]
    pub trials: u64,
    /// How each suspicious trade is sent.
    #[arg(long, value_enum, default_value = "kafka")]
    pub via: Via,
    /// Milliseconds between one trial's block and the next trade.
    #[arg(long, default_value_t = 100)]
    pub pause_ms: u64,
    /// Seconds a trial may take before it counts as failed.
    #[arg(long, default_value_t = 10)]
    pub trial_timeout: u64,
    /// Topology file (topic names, client and stage settings).
    #[arg(long, short, env = "KUSANAGI_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Seed of the background generator.
    #[arg(long, default_value_t = 20_261_124)]
    pub seed: u64,
}

/// What the trials need to send and ask.
struct Trials {
    via: Via,
    producer: FutureProducer,
    raw: String,
    http: reqwest::Client,
    base: String,
    key: String,
    run: String,
}

/// The suspicious trade of trial `i`.
fn trade(run: &str, i: u64) -> (String, String) {
    let account = format!("{run}-blk-{i:05}");
    let event = json!({
        "event_id": format!("{run}-blk-ev-{i:05}"),
        "timestamp": kusanagi_schemas::EventTime::from(chrono::Utc::now()).to_rfc3339(),
        "event_type": "TRADE",
        "actor_id": format!("{run}-mule-{i:05}"),
        "target_id": account,
        "action_details": {"currency_amount": 1_000_000, "item_id": "gem-pack", "market_avg_price": 5_000},
        "context_metadata": {"actor_level": 3, "account_age_days": 2, "recent_chat_log": "1000k gems, PayPal ok?"},
    });
    (account, event.to_string())
}

impl Trials {
    /// Waits until the state API can answer (`/healthz/ready`: the view
    /// has caught up with the account topics).
    async fn wait_until_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let ready = self
                .http
                .get(format!("{}/healthz/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!("the state API was not ready within {} s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends trial `i`'s trade and asks until the account is blocked;
    /// `None` when `timeout` passed first.
    async fn one(
        &self,
        i: u64,
        timeout: Duration,
    ) -> anyhow::Result<Option<(Duration, hops::Trial)>> {
        let (account, event) = trade(&self.run, i);
        let sent_ms = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        let delivery = match self.via {
            Via::Kafka => {
                let record = FutureRecord::to(&self.raw).key(&account).payload(&event);
                Some(
                    self.producer
                        .send_result(record)
                        .map_err(|(e, _)| e)
                        .context("handing the trade to the producer")?,
                )
            }
            Via::Http => {
                let status = self
                    .http
                    .post(format!("{}/api/v1/events", self.base))
                    .header("X-API-KEY", &self.key)
                    .header("content-type", "application/json")
                    .body(event)
                    .send()
                    .await
                    .context("POST /api/v1/events")?
                    .status();
                if !status.is_success() {
                    bail!("POST /api/v1/events answered {status}");
                }
                None
            }
        };
        let body = json!({ "account_id": account }).to_string();
        let blocked = loop {
            let status = self
                .http
                .post(format!("{}/api/v1/withdrawals/check", self.base))
                .header("X-API-KEY", &self.key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .context("POST /api/v1/withdrawals/check")?
                .status();
            // 423 restricted; 403 banned (an analyzer may ban at once).
            if matches!(status.as_u16(), 423 | 403) {
                let trial = hops::Trial {
                    account: account.clone(),
                    sent_ms,
                    refused_ms: chrono::Utc::now().timestamp_millis(),
                };
                break Some((started.elapsed(), trial));
            }
            // 503: this copy's view is catching up (a restart); ask again.
            if !status.is_success() && status.as_u16() != 503 {
                bail!("the withdrawal check answered {status}");
            }
            if started.elapsed() > timeout {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(d) = delivery {
            d.await
                .context("the trade's delivery")?
                .map_err(|(e, _)| e)
                .context("the brokers refused the trade")?;
        }
        Ok(blocked)
    }
}

/// Runs the trials; `stop` (Ctrl-C) gives up early.
pub fn run(args: &BlockArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<BlockReport> {
    let mut topology = cluster::topology(args.topology.as_deref())?;
    topology.http.listen = "127.0.0.1:0".into();
    let ids = RunIds::fresh();
    let rt = cluster::runtime()?;
    let mut cluster = rt.block_on(Cluster::start(topology, Target::Embedded, ids.run(), &[]))?;
    cluster.archive_in_run_dir();
    let (addr, key) = start_pipeline(&rt, &mut cluster)?;
    let trials = Trials {
        via: args.via,
        producer: cluster
            .settings
            .producer_config()
            .create()
            .context("creating the producer")?,
        raw: cluster.topology.topics.raw.clone(),
        // A stuck connection fails the run instead of hanging it.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("creating the HTTP client")?,
        base: format!("http://{addr}"),
        key,
        run: ids.run().to_owned(),
    };

    let background_stop = Arc::new(AtomicBool::new(false));
    let background = (args.background_rate > 0)
        .then(|| start_background(&cluster, &ids, args, &background_stop))
        .transpose()?;
    eprintln!(
        "block: {} background events/s; {} trials through {}",
        args.background_rate,
        args.trials,
        args.via.as_str()
    );

    let measured = rt.block_on(trial_loop(&trials, args, &cluster, stop));
    background_stop.store(true, Ordering::Relaxed);
    let background_sent = match background.map(|h| h.join()) {
        Some(Ok(Ok((driver, sending)))) => {
            drop(driver.finish(Duration::from_secs(10)));
            Some(sending)
        }
        Some(Ok(Err(e))) => return Err(e.context("the background sender")),
        Some(Err(_)) => bail!("the background sender panicked"),
        None => None,
    };
    let gaps = match &measured {
        Ok(m) => Some(
            hops::measure(&cluster.settings, &path(&cluster, args.via), &m.blocked).map(|mut h| {
                h.transactions = hops::transactions(&cluster.metrics().encode());
                h
            }),
        ),
        Err(_) => None,
    };
    let stopped = rt.block_on(cluster.stop());
    let measured = measured?;
    stopped?;
    let mut report = BlockReport::new(
        ids.run(),
        args.via.as_str(),
        args.background_rate,
        background_sent,
        &measured.latencies,
        measured.failed,
    );
    report.hops = gaps
        .transpose()
        .context("reading the trials' records back")?;
    Ok(report)
}

/// The topics a trial's trade passes through, in order.
fn path(cluster: &Cluster, via: Via) -> hops::Path {
    let t = &cluster.topology.topics;
    let mut topics = Vec::new();
    if via == Via::Kafka {
        topics.push((t.raw.clone(), "-> events.raw (producer)"));
        topics.push((t.events.clone(), "-> events (ingest)"));
    } else {
        topics.push((t.events.clone(), "-> events (HTTP intake)"));
    }
    topics.push((t.screenings.clone(), "-> screenings (screen)"));
    topics.push((t.transitions.clone(), "-> accounts.transitions (decide)"));
    hops::Path { topics }
}

/// Starts every stage of the topology and the HTTP API with a fresh admin
/// key; returns the API's address and the key.
fn start_pipeline(
    rt: &tokio::runtime::Runtime,
    cluster: &mut Cluster,
) -> anyhow::Result<(std::net::SocketAddr, String)> {
    let stages = registry::enabled(&cluster.topology);
    let key: String = {
        let bytes: [u8; 24] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let keys = Keys::load(
        &cluster.topology.http.auth,
        vec![KeyConfig {
            name: "loadtest".into(),
            sha256: auth::hash_key(&key),
            roles: vec![Role::Admin],
            tenant: None,
        }],
    )?;
    let _in_runtime = rt.enter();
    cluster.start_stages(&stages)?;
    let (addr, _server) = rt.block_on(run::serve_http(
        &cluster.topology,
        &cluster.settings,
        cluster.metrics(),
        cluster.shutdown(),
        Arc::new(keys),
        true,
        Some(cluster.view()),
    ))?;
    Ok((addr, key))
}

/// The background sender's thread: what it returns when `stop` is set.
type Background = std::thread::JoinHandle<anyhow::Result<(Driver, Sending)>>;

/// Starts sending ordinary trades at `args.background_rate` until `stop`.
fn start_background(
    cluster: &Cluster,
    ids: &RunIds,
    args: &BlockArgs,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Background> {
    let mut driver = Driver::new(
        &cluster.settings,
        &cluster.topology.topics.raw,
        ids,
        args.seed,
        Arc::new(Ledger::new()),
        Arc::new(Counters::default()),
    )?;
    let schedule = Schedule::new(args.background_rate, Duration::from_secs(24 * 3600));
    let stop = stop.clone();
    Ok(std::thread::Builder::new()
        .name("loadtest-background".into())
        .spawn(move || driver.run(schedule, &stop).map(|s| (driver, s)))?)
}

/// What the counted trials measured.
struct Measured {
    /// Time to block, microseconds.
    latencies: Histogram<u64>,
    /// Trials that timed out.
    failed: u64,
    /// The trials blocked.
    blocked: Vec<hops::Trial>,
}

/// The warm-up trial, then `args.trials` counted ones.
async fn trial_loop(
    trials: &Trials,
    args: &BlockArgs,
    cluster: &Cluster,
    stop: &AtomicBool,
) -> anyhow::Result<Measured> {
    let mut latencies = Histogram::<u64>::new(3).context("a latency histogram")?;
    let mut blocked = Vec::new();
    let mut failed = 0;
    trials.wait_until_ready(Duration::from_secs(60)).await?;
    if trials.one(0, Duration::from_secs(60)).await?.is_none() {
        bail!("the warm-up trade was not blocked within 60 s");
    }
    for i in 1..=args.trials {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if cluster.stage_stopped() {
            bail!("a stage stopped on its own; see its log above");
        }
        tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        match trials
            .one(i, Duration::from_secs(args.trial_timeout))
            .await?
        {
            Some((d, trial)) => {
                latencies.record(d.as_micros() as u64)?;
                blocked.push(trial);
            }
            None => failed += 1,
        }
        if i % 25 == 0 {
            eprintln!(
                "block: {i} trials, median so far {:.1} ms",
                latencies.value_at_quantile(0.5) as f64 / 1e3
            );
        }
    }
    Ok(Measured {
        latencies,
        failed,
        blocked,
    })
}
