//! Starting a Kusanagi process: the broker (embedded, when none is
//! configured), the topics, the stages and the HTTP server, and stopping
//! them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::kafka::{EmbeddedBroker, KafkaSettings, ensure_topics};
use kusanagi_schemas::GameEventCodec;
use rdkafka::producer::FutureProducer;

use crate::api::{self, EventsApi};
use crate::config::Topology;
use crate::runtime::{LoopConfig, Metrics, RuntimeError, Shutdown, TransactionalLoop};
use crate::stages::ingest::{self, IngestStage};

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
        let broker = EmbeddedBroker::start(
            &b.listen,
            &b.data_dir,
            Duration::from_millis(b.snapshot_interval_ms),
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

/// Runs the ingest stage on its own thread until `shutdown`, restarting its
/// clients after a fatal Kafka error; a fenced copy or a bad configuration
/// ends it.
pub fn spawn_ingest(
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> JoinHandle<Result<(), RuntimeError>> {
    let cfg = topology.stages.ingest.clone();
    let topics = topology.topics.clone();
    let loop_config = LoopConfig {
        stage: ingest::STAGE,
        input_topics: vec![topics.raw.clone()],
        group_id: cfg.group_id.clone(),
        transactional_id: format!("{}-{}", cfg.group_id, topology.instance_id()),
        batch_max_records: cfg.batch_max_records,
        batch_max_wait: Duration::from_millis(cfg.batch_max_wait_ms),
    };
    let max_record =
        (topology.kafka.message_max_bytes as usize).min(topics.raw_max_message_bytes as usize);
    let (settings, metrics, shutdown) = (settings.clone(), metrics.clone(), shutdown.clone());
    std::thread::Builder::new()
        .name("stage-ingest".into())
        .spawn(move || {
            supervise(&shutdown, || {
                let stage = IngestStage::new(
                    &topics.events,
                    &topics.dead_letter,
                    cfg.max_event_bytes,
                    max_record,
                );
                TransactionalLoop::new(stage, &settings, loop_config.clone(), metrics.clone())
            })
        })
        .expect("spawning a thread")
}

/// Runs a stage loop, recreating it after a fatal error until `shutdown`.
fn supervise<S: crate::runtime::Stage>(
    shutdown: &Shutdown,
    mut make: impl FnMut() -> Result<TransactionalLoop<S>, RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut restarts = 0u32;
    while !shutdown.is_triggered() {
        let result = make().and_then(|l| l.run(shutdown));
        match result {
            Ok(()) => return Ok(()),
            Err(e @ (RuntimeError::Fenced { .. } | RuntimeError::Client { .. })) => return Err(e),
            Err(e) => {
                restarts += 1;
                tracing::error!(error = %e, restarts, "stage failed; restarting its Kafka clients");
                shutdown.sleep(Duration::from_secs(u64::from(restarts.min(10))));
            }
        }
    }
    Ok(())
}

/// Binds and serves the HTTP API until `shutdown`.
pub async fn serve_http(
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    shutdown: &Shutdown,
    with_events: bool,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), RunError> {
    let listen = topology.http.listen.clone();
    let events = if with_events {
        let producer: FutureProducer =
            settings
                .producer_config()
                .create()
                .map_err(|source| ConnectorError::KafkaConfig {
                    client: "producer",
                    source,
                })?;
        Some(Arc::new(EventsApi {
            producer,
            codec: GameEventCodec::new(),
            topic: topology.topics.events.clone(),
            max_event_bytes: topology.stages.ingest.max_event_bytes,
            max_batch_events: topology.http.max_batch_events,
            metrics: metrics.clone(),
        }))
    } else {
        None
    };
    let app = api::router(metrics.clone(), events, topology.http.max_body_bytes);
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
