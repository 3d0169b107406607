//! What a run measures: an external cluster whose ingest stage runs
//! elsewhere, or, embedded, the whole path in this process: the embedded
//! Kafka-protocol broker on a free port with its data in a fresh temporary
//! directory, the topology's topics, and the ingest stage (`events.raw` ->
//! `events`, `events.dlq`), started exactly as `kusanagi run` starts them.

use std::path::PathBuf;
use std::thread::JoinHandle;

use anyhow::Context;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::run::{self, Brokers};
use kusanagi_pipeline::runtime::{Metrics, RuntimeError, Shutdown};

/// Which brokers a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start the embedded broker and the ingest stage here.
    Embedded,
    /// Use the brokers at this `bootstrap.servers`; the ingest stage runs
    /// elsewhere.
    External(String),
}

impl Target {
    /// `--embedded` wins; then `--bootstrap`; then the topology's
    /// `kafka.bootstrap` (which `KAFKA_BOOTSTRAP` overrides); else embedded.
    pub fn choose(embedded: bool, bootstrap: Option<&str>, topology_bootstrap: &str) -> Self {
        let external = bootstrap
            .filter(|b| !b.trim().is_empty())
            .or(Some(topology_bootstrap).filter(|b| !b.trim().is_empty()));
        match external {
            Some(b) if !embedded => Self::External(b.trim().to_owned()),
            _ => Self::Embedded,
        }
    }
}

/// The brokers, and the ingest stage when it runs here. Stop it with
/// [`Cluster::stop`]; dropping it only signals the stage to stop.
pub struct Cluster {
    /// The topology in force (topic names, client settings).
    pub topology: Topology,
    /// Client settings for the brokers.
    pub settings: KafkaSettings,
    /// `embedded` or `external`.
    pub mode: &'static str,
    shutdown: Shutdown,
    ingest: Option<JoinHandle<Result<(), RuntimeError>>>,
    brokers: Option<Brokers>,
    data_dir: Option<PathBuf>,
}

impl Cluster {
    /// Connects to, or starts, what `target` says; `run` names the
    /// temporary directory of an embedded broker.
    pub async fn start(mut topology: Topology, target: Target, run: &str) -> anyhow::Result<Self> {
        let shutdown = Shutdown::new();
        match target {
            Target::External(bootstrap) => {
                topology.kafka.bootstrap = bootstrap;
                let settings = topology.kafka_settings(&topology.kafka.bootstrap);
                Ok(Self {
                    topology,
                    settings,
                    mode: "external",
                    shutdown,
                    ingest: None,
                    brokers: None,
                    data_dir: None,
                })
            }
            Target::Embedded => {
                let data_dir = std::env::temp_dir().join(format!("kusanagi-loadtest-{run}"));
                if data_dir.exists() {
                    std::fs::remove_dir_all(&data_dir)
                        .with_context(|| format!("clearing {}", data_dir.display()))?;
                }
                topology.kafka.bootstrap.clear();
                topology.embedded_broker.listen = "127.0.0.1:0".into();
                topology.embedded_broker.data_dir = data_dir.clone();
                let mut cluster = Self {
                    settings: KafkaSettings::new(""),
                    topology,
                    mode: "embedded",
                    shutdown,
                    ingest: None,
                    brokers: None,
                    data_dir: Some(data_dir),
                };
                let brokers =
                    Brokers::embed(&cluster.topology).context("starting the embedded broker")?;
                cluster.settings = cluster.topology.kafka_settings(&brokers.bootstrap);
                cluster.brokers = Some(brokers);
                run::prepare_topics(&cluster.topology, &cluster.settings)
                    .await
                    .context("creating the topics")?;
                cluster.ingest = Some(run::spawn_stage(
                    run::StageKind::Ingest,
                    &cluster.topology,
                    &cluster.settings,
                    &Metrics::new(),
                    &cluster.shutdown,
                ));
                Ok(cluster)
            }
        }
    }

    /// Whether the ingest stage started here has stopped on its own (a
    /// fatal error: the run cannot complete).
    pub fn ingest_stopped(&self) -> bool {
        self.ingest.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Stops the ingest stage and the embedded broker, and removes the
    /// broker's temporary directory. Fails if the stage failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        let stage = match self.ingest.take() {
            Some(handle) => match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(result)) => result.context("the ingest stage failed"),
                _ => Err(anyhow::anyhow!("the ingest stage panicked")),
            },
            None => Ok(()),
        };
        self.cleanup();
        stage
    }

    fn cleanup(&mut self) {
        drop(self.brokers.take());
        if let Some(dir) = self.data_dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("loadtest: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(handle) = self.ingest.take() {
            let _ = handle.join();
        }
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_unless_a_bootstrap_is_given() {
        assert_eq!(Target::choose(false, None, ""), Target::Embedded);
        assert_eq!(Target::choose(false, Some(" "), ""), Target::Embedded);
        assert_eq!(
            Target::choose(false, Some("k:9092"), ""),
            Target::External("k:9092".into())
        );
        assert_eq!(
            Target::choose(false, None, "env:9092"),
            Target::External("env:9092".into()),
            "KAFKA_BOOTSTRAP or kafka.bootstrap"
        );
        assert_eq!(
            Target::choose(false, Some("flag:9092"), "env:9092"),
            Target::External("flag:9092".into()),
            "the flag wins"
        );
        assert_eq!(Target::choose(true, None, "env:9092"), Target::Embedded);
    }
}
