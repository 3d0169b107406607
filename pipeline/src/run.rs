//! Starting a Kusanagi process: the broker (embedded, when none is
//! configured), the topics, the stages and the HTTP server, and stopping
//! them in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::kafka::{EmbeddedBroker, FlushPolicy, KafkaSettings, ensure_topics};
use kusanagi_schemas::GameEventCodec;
use rdkafka::producer::FutureProducer;

use crate::api::{self, EventsApi, Keys, Services};
use crate::config::{BrokerFlush, Topology};
use crate::runtime::{Metrics, RuntimeError, Shutdown};
use crate::stages::registry::{StageContext, StageSpec};
use crate::stages::view::View;

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
        broker.set_config(
            "group.initial.rebalance.delay.ms",
            &b.group_initial_rebalance_delay_ms.to_string(),
        );
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

/// Starts `spec` on its own thread (named `stage-<name>`), built from
/// `ctx`; it runs until shutdown, restarting after an error a restart can
/// mend, and its thread returns the error that ended it otherwise.
pub fn spawn_stage(
    spec: &'static StageSpec,
    ctx: &StageContext,
) -> std::io::Result<JoinHandle<Result<(), RuntimeError>>> {
    let run = (spec.build)(ctx);
    std::thread::Builder::new()
        .name(format!("stage-{}", spec.name))
        .spawn(run)
}

/// What the stages of this process share: `topology`, the clients'
/// `settings`, the metrics, the shutdown, the view's index and the async
/// runtime.
///
/// # Panics
///
/// When called outside the process's tokio runtime: the stages do their
/// object-storage I/O on it.
pub fn stage_context(
    topology: &Topology,
    settings: &KafkaSettings,
    metrics: &Metrics,
    shutdown: &Shutdown,
    view: &Arc<View>,
) -> StageContext {
    StageContext {
        topology: Arc::new(topology.clone()),
        settings: settings.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        view: Arc::clone(view),
        rt: tokio::runtime::Handle::current(),
    }
}

/// The API keys this process accepts: the configured ones; with none
/// configured and the embedded broker (a local run), an admin key kept in
/// `<data dir>/admin.key` (its path is returned); with none configured
/// against a cluster, an error (no route may be left open).
pub fn load_keys(
    topology: &Topology,
    embedded: bool,
) -> Result<(Arc<Keys>, Option<std::path::PathBuf>), RunError> {
    let keys =
        Keys::load(&topology.http.auth, Vec::new()).map_err(|e| RunError::Usage(e.to_string()))?;
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
    let (key, path) =
        api::auth::local_admin_key(dir).map_err(|e| RunError::Usage(e.to_string()))?;
    let admin = crate::config::KeyConfig {
        name: "local-admin".into(),
        sha256: api::auth::hash_key(&key),
        roles: vec![crate::config::Role::Admin],
        tenant: None,
    };
    let keys =
        Keys::load(&topology.http.auth, vec![admin]).map_err(|e| RunError::Usage(e.to_string()))?;
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
    let request_timeout = std::time::Duration::from_millis(topology.http.request_timeout_ms);
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
    let app = api::with_request_timeout(app, request_timeout);
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
