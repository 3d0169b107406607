//! Starting a Kusanagi process: the broker (embedded, when none is
//! configured), the topics, the stages and the HTTP server, and stopping
//! them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::kafka::{
    EmbeddedBroker, FlushPolicy, KafkaSettings, PartitionReader, ensure_topics,
};
use kusanagi_connectors::llm::LlmClient;
use kusanagi_schemas::GameEventCodec;
use rdkafka::producer::FutureProducer;

use crate::api::{self, EventsApi, Keys, Services};
use crate::config::{BrokerFlush, Topology};
use crate::erasure::Secrets;
use crate::runtime::{Backoff, LoopConfig, Metrics, RuntimeError, Shutdown, StageLoop};
use crate::stages::analyze::{self, AnalyzeStage, Analyzer};
use crate::stages::archive::{self, ArchiveCopy, ArchiveStage, ArchiveTopics};
use crate::stages::compact::{self, CompactStage};
use crate::stages::decide::{self, DecideStage, DecideTopics};
use crate::stages::ingest::{self, IngestStage};
use crate::stages::screen::{self, ScreenStage};
use crate::stages::tier;
use crate::stages::view::{self, View, ViewFeed, ViewTopics};

/// Why a process could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Kafka or the embedded broker failed.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// A stage stopped for good.
    #[error(transparent)]
    Stage(#[from] RuntimeError),
    /// The HTTP server could not bind or serve.
    #[error("HTTP server on {listen}: {source}")]
    Http {
        /// The address.
        listen: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration does not allow this mode.
    #[error("{0}")]
    Usage(String),
}

/// A Kafka cluster to use: the configured one, or an embedded broker
/// started here (kept alive as long as this value).
#[derive(Debug)]
pub struct Brokers {
    /// `bootstrap.servers` for clients.
    pub bootstrap: String,
    /// The embedded broker, when this process runs one.
    pub embedded: Option<EmbeddedBroker>,
}

impl Brokers {
    /// Uses `kafka.bootstrap`, or starts the embedded broker when it is empty.
    pub fn connect_or_embed(topology: &Topology) -> Result<Self, RunError> {
        if !topology.kafka.bootstrap.is_empty() {
            return Ok(Self {
                bootstrap: topology.kafka.bootstrap.clone(),
                embedded: None,
            });
        }
        Self::embed(topology)
    }

    /// Starts the embedded broker of `topology`.
    pub fn embed(topology: &Topology) -> Result<Self, RunError> {
        let b = &topology.embedded_broker;
        let flush = match b.flush {
            BrokerFlush::Os => FlushPolicy::Os,
            BrokerFlush::Always => FlushPolicy::Always,
        };
        let broker = EmbeddedBroker::start_with(
            &b.listen,
            &b.data_dir,
            Duration::from_millis(b.snapshot_interval_ms),
            flush,
        )?;
        let bootstrap = broker.addr().to_string();
        Ok(Self {
            bootstrap,
            embedded: Some(broker),
        })
    }
}

/// Creates the topology's topics, waiting up to 60 s for the brokers.
pub async fn prepare_topics(topology: &Topology, settings: &KafkaSettings) -> Result<(), RunError> {
    let started = Instant::now();
    loop {
        match ensure_topics(settings, &topology.topic_specs()).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() && started.elapsed() < Duration::from_secs(60) => {
                tracing::warn!(error = %e, bootstrap = %settings.bootstrap, "brokers not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A stage this process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum StageKind {
    /// `events.raw` -> `events`, `events.dlq` (and `POST /api/v1/events`).
    Ingest,
    /// `events` -> `screenings`: the L1 rules over 5-minute windows.
    Screen,
    /// `screenings`, `l2.verdicts` -> `accounts`, `accounts.transitions`,
    /// `l2.requests`: the account state machine.
    Decide,
    /// `l2.requests` -> `l2.verdicts`: the LLM analysis, with the fallback.
    Analyze,
    /// `events`, `screenings`, `accounts.transitions` -> Parquet in the hot
    /// tier, listed in the catalog.
    Archive,
    /// Moves archive files hot -> warm -> cold by age, every
    /// `stages.tier.interval_seconds`.
    Tier,
    /// `accounts`, `accounts.transitions` -> the state API (every copy
    /// reads every partition and serves it all).
    View,
    /// `erasures` -> the archive's purge, deletion certificates, `audit`.
    Compact,
}

impl StageKind {
    /// The stage's name in metrics, logs and thread names.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ingest => ingest::STAGE,
            StageKind::Screen => screen::STAGE,
            StageKind::Decide => decide::STAGE,
            StageKind::Analyze => analyze::STAGE,
            StageKind::Archive => archive::STAGE,
            StageKind::Tier => tier::STAGE,
            StageKind::View => view::STAGE,
            StageKind::Compact => compact::STAGE,
        }
    }

    /// The stages `kusanagi run` starts for `topology`, in data-flow order.
    pub fn enabled(topology: &Topology) -> Vec<StageKind> {
        let s = &topology.stages;
        [
            (StageKind::Ingest, s.ingest.enabled),
            (StageKind::Screen, s.screen.enabled),
            (StageKind::Decide, s.decide.enabled),
            (StageKind::Analyze, s.analyze.enabled),
            (StageKind::Archive, s.archive.enabled),
            (StageKind::Tier, s.tier.enabled),
            (StageKind::View, s.view.enabled),
            (StageKind::Compact, s.compact.enabled),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect()
    }
}

/// Runs `kind` on its own thread until `shutdown`, restarting its clients
/// after an error a restart can mend; a fenced copy or a bad configuration
/// ends it. The view stage fills `view`, which the HTTP server serves.
///
/// # Panics
///
/// When called outside the process's tokio runtime: the stages do their
/// object-storage I/O on it.
pub fn spawn_stage(
    kind: StageKind,
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    shutdown: &Shutdown,
    view: &Arc<View>,
) -> JoinHandle<Result<(), RuntimeError>> {
    let (settings, metrics, shutdown) = (settings.clone(), metrics.clone(), shutdown.clone());
    let topics = topology.topics.clone();
    let instance = topology.instance_id();
    let thread = std::thread::Builder::new().name(format!("stage-{}", kind.name()));
    let loop_config = |inputs: &[&str], group: &str, max: usize, wait_ms: u64| LoopConfig {
        stage: kind.name(),
        input_topics: inputs.iter().map(|t| (*t).to_owned()).collect(),
        group_id: group.to_owned(),
        transactional_id: format!("{group}-{instance}"),
        batch_max_records: max,
        batch_max_wait: Duration::from_millis(wait_ms),
    };
    match kind {
        StageKind::Ingest => {
            let cfg = topology.stages.ingest.clone();
            let lc = loop_config(
                &[&topics.raw],
                &cfg.group_id,
                cfg.batch_max_records,
                cfg.batch_max_wait_ms,
            );
            let max_record = (topology.kafka.message_max_bytes as usize)
                .min(topics.raw_max_message_bytes as usize);
            thread.spawn(move || {
                supervise(&shutdown, || {
                    let stage = IngestStage::new(
                        &topics.events,
                        &topics.dead_letter,
                        cfg.max_event_bytes,
                        max_record,
                    );
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Screen => {
            let cfg = topology.stages.screen.clone();
            let lc = loop_config(
                &[&topics.events],
                &cfg.group_id,
                cfg.batch_max_records,
                cfg.batch_max_wait_ms,
            );
            thread.spawn(move || {
                supervise(&shutdown, || {
                    let reader = replay_reader(screen::STAGE, &settings)?;
                    let stage = ScreenStage::new(
                        cfg.clone(),
                        &topics.events,
                        &topics.screenings,
                        &topics.dead_letter,
                        Box::new(reader),
                    );
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Decide => {
            let cfg = topology.stages.decide.clone();
            let lc = loop_config(
                &[&topics.screenings, &topics.l2_verdicts, &topics.erasures],
                &cfg.group_id,
                cfg.batch_max_records,
                cfg.batch_max_wait_ms,
            );
            let decide_topics = DecideTopics::of(&topics);
            thread.spawn(move || {
                supervise(&shutdown, || {
                    let reader = replay_reader(decide::STAGE, &settings)?;
                    let stage = DecideStage::new(decide_topics.clone(), Box::new(reader));
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Compact => {
            let cfg = topology.stages.compact.clone();
            let lc = loop_config(
                &[&topics.erasures],
                &cfg.group_id,
                cfg.batch_max_records,
                cfg.batch_max_wait_ms,
            );
            let topology = topology.clone();
            thread.spawn(move || {
                let secrets = Secrets::load(&topology.gdpr, topology.kafka.bootstrap.is_empty())
                    .map_err(|detail| RuntimeError::Setup {
                        stage: compact::STAGE,
                        detail,
                    })?;
                supervise(&shutdown, || {
                    let stage =
                        CompactStage::new(&topology, secrets.clone(), &instance).map_err(|e| {
                            RuntimeError::Storage {
                                stage: compact::STAGE,
                                detail: e.message,
                            }
                        })?;
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Analyze => {
            let cfg = topology.stages.analyze.clone();
            let evidence = topology.stages.screen.evidence.clone();
            let lc = loop_config(
                &[&topics.l2_requests],
                &cfg.group_id,
                cfg.batch_max_records,
                cfg.batch_max_wait_ms,
            );
            thread.spawn(move || {
                supervise(&shutdown, || {
                    let setup = |detail: String| RuntimeError::Setup {
                        stage: analyze::STAGE,
                        detail,
                    };
                    let analyzer = match &cfg.model {
                        None => Analyzer::Fallback,
                        Some(m) => {
                            let client = LlmClient::new(m.llm_config(|k| std::env::var(k).ok()))
                                .map_err(|e| setup(e.to_string()))?;
                            Analyzer::model(
                                client,
                                m.max_concurrency,
                                cfg.cache_capacity,
                                Duration::from_secs(cfg.cache_ttl_seconds),
                            )
                        }
                    };
                    let stage =
                        AnalyzeStage::new(analyzer, &topics.l2_verdicts, &topics.dead_letter)
                            .map_err(|e| setup(format!("cannot start its async runtime: {e}")))?
                            .with_evidence(evidence.clone());
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Archive => {
            let cfg = topology.stages.archive.clone();
            let archive = topology.archive.clone();
            let archive_topics = ArchiveTopics {
                events: topics.events.clone(),
                screenings: topics.screenings.clone(),
                transitions: topics.transitions.clone(),
                audit: topics.audit.clone(),
                dead_letter: topics.dead_letter.clone(),
            };
            let lc = LoopConfig {
                input_topics: archive_topics.inputs(),
                ..loop_config(
                    &[],
                    &cfg.group_id,
                    ARCHIVE_BATCH_RECORDS,
                    ARCHIVE_BATCH_WAIT_MS,
                )
            };
            let copy = ArchiveCopy {
                instance: instance.clone(),
                max_dead_letter_bytes: (settings.message_max_bytes as usize)
                    .saturating_sub(64 * 1024),
                metrics: metrics.clone(),
                // Needed only once the archive records an erasure.
                secrets: Secrets::load(&topology.gdpr, topology.kafka.bootstrap.is_empty()),
                rt: tokio::runtime::Handle::current(),
            };
            thread.spawn(move || {
                supervise(&shutdown, || {
                    let stage = ArchiveStage::new(
                        cfg.clone(),
                        archive_topics.clone(),
                        &archive,
                        copy.clone(),
                    )?;
                    StageLoop::kafka(stage, &settings, lc.clone(), metrics.clone())
                })
            })
        }
        StageKind::Tier => {
            let cfg = topology.stages.tier.clone();
            let archive = topology.archive.clone();
            let zstd_level = topology.stages.archive.zstd_level;
            thread.spawn(move || tier::run_periodically(&cfg, &archive, zstd_level, &shutdown))
        }
        StageKind::View => {
            let cfg = topology.stages.view.clone();
            let view_topics = ViewTopics {
                accounts: topics.accounts.clone(),
                transitions: topics.transitions.clone(),
                erasures: topics.erasures.clone(),
            };
            let view = Arc::clone(view);
            thread.spawn(move || {
                supervise_with(&shutdown, || {
                    ViewFeed::new(
                        &settings,
                        view_topics.clone(),
                        Arc::clone(&view),
                        cfg.clone(),
                        metrics.clone(),
                    )?
                    .run(&shutdown)
                })
            })
        }
    }
    .expect("spawning a thread")
}

fn replay_reader(
    stage: &'static str,
    settings: &KafkaSettings,
) -> Result<PartitionReader, RuntimeError> {
    PartitionReader::new(settings, REPLAY_TIMEOUT).map_err(|e| RuntimeError::Setup {
        stage,
        detail: e.to_string(),
    })
}

/// Most records the archive takes in one turn of its loop, and the
/// longest wait for them: it buffers into open files, so these only bound
/// how long a turn takes, not what is committed at once.
const ARCHIVE_BATCH_RECORDS: usize = 10_000;
const ARCHIVE_BATCH_WAIT_MS: u64 = 50;

/// How long a replay may go without reading anything before it fails.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a stage loop, recreating it after a fatal error until `shutdown`.
fn supervise<S: crate::runtime::Stage>(
    shutdown: &Shutdown,
    mut make: impl FnMut() -> Result<
        StageLoop<S, crate::runtime::kafka::KafkaSource, crate::runtime::kafka::KafkaOutput>,
        RuntimeError,
    >,
) -> Result<(), RuntimeError> {
    supervise_with(shutdown, || make().and_then(|mut l| l.run(shutdown)))
}

/// Runs `run_once` (a stage from start to stop) again after a fatal error,
/// until `shutdown`; a fenced copy or a configuration error ends it.
fn supervise_with(
    shutdown: &Shutdown,
    mut run_once: impl FnMut() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    while !shutdown.is_triggered() {
        let result = run_once();
        match result {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, restarts = backoff.failures(), "stage failed; restarting its Kafka clients");
                shutdown.sleep(delay);
            }
        }
    }
    Ok(())
}

/// The API keys this process accepts: the configured ones; with none
/// configured and the embedded broker (a local run), an admin key kept in
/// `<data dir>/admin.key` (its path is returned); with none configured
/// against a cluster, an error (no route may be left open).
pub fn load_keys(
    topology: &Topology,
    embedded: bool,
) -> Result<(Arc<Keys>, Option<std::path::PathBuf>), RunError> {
    let keys = Keys::load(&topology.http.auth, Vec::new()).map_err(RunError::Usage)?;
    if !keys.is_empty() || !topology.http.enabled {
        return Ok((Arc::new(keys), None));
    }
    if !embedded {
        return Err(RunError::Usage(
            "http.auth: no API keys are configured, and every route but /healthz needs one. \
             Create one with `kusanagi keys new --name NAME --role ROLE` and list it under \
             [[http.auth.keys]] or in http.auth.keys_file (KUSANAGI_KEYS_FILE), \
             or set http.enabled = false"
                .into(),
        ));
    }
    let dir = topology
        .embedded_broker
        .data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let (key, path) = api::auth::local_admin_key(dir).map_err(RunError::Usage)?;
    let admin = crate::config::KeyConfig {
        name: "local-admin".into(),
        sha256: api::auth::hash_key(&key),
        roles: vec![crate::config::Role::Admin],
        tenant: None,
    };
    let keys = Keys::load(&topology.http.auth, vec![admin]).map_err(RunError::Usage)?;
    Ok((Arc::new(keys), Some(path)))
}

/// Binds and serves the HTTP API until `shutdown`: event intake when
/// `with_events`, the state API when `view` is given.
pub async fn serve_http(
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    shutdown: &Shutdown,
    keys: Arc<Keys>,
    with_events: bool,
    view: Option<Arc<View>>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), RunError> {
    let listen = topology.http.listen.clone();
    // One client for every route that produces (clones share it).
    let producer: FutureProducer =
        settings
            .producer_config()
            .create()
            .map_err(|source| ConnectorError::KafkaConfig {
                client: "producer",
                source,
            })?;
    let events = if with_events {
        Some(Arc::new(EventsApi {
            producer: producer.clone(),
            codec: GameEventCodec::new(),
            topic: topology.topics.events.clone(),
            max_event_bytes: topology.stages.ingest.max_event_bytes,
            max_batch_events: topology.http.max_batch_events,
            metrics: metrics.clone(),
        }))
    } else {
        None
    };
    tokio::spawn(Arc::clone(&keys).watch(shutdown.clone()));
    let overrides = view.as_ref().map(|view| {
        Arc::new(api::OverridesApi {
            producer: producer.clone(),
            verdicts: topology.topics.l2_verdicts.clone(),
            audit: topology.topics.audit.clone(),
            view: Arc::clone(view),
            metrics: metrics.clone(),
        })
    });
    let app = api::router(Services {
        metrics: metrics.clone(),
        keys,
        events,
        view,
        erasures: Some(Arc::new(api::ErasuresApi {
            producer,
            topic: topology.topics.erasures.clone(),
            metrics: metrics.clone(),
        })),
        overrides,
        max_body_bytes: topology.http.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| RunError::Http {
            listen: listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| RunError::Http {
        listen: listen.clone(),
        source,
    })?;
    let shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let stop = async move { shutdown.wait().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((addr, task))
}

/// Waits for Ctrl-C or SIGTERM, then triggers `shutdown`.
pub async fn shutdown_on_signal(shutdown: Shutdown) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async move {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
            _ = shutdown.wait() => return,
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = ctrl_c => {}
        _ = shutdown.wait() => return,
    }
    tracing::info!("shutting down: finishing the current batches");
    shutdown.trigger();
}
