//! What a run measures: an external cluster whose ingest stage runs
//! elsewhere, or, embedded, the whole path in this process: the embedded
//! Kafka-protocol broker on a free port with its data in a fresh temporary
//! directory, the topology's topics, and the stages the run goes through
//! (ingest; ingest and screen), started exactly as `kusanagi run` starts them.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::run::{self, Brokers};
use kusanagi_pipeline::runtime::{Metrics, RuntimeError, Shutdown};
use kusanagi_pipeline::stages::registry::StageSpec;
use kusanagi_pipeline::stages::view::View;

/// The topology at `path`, or the built-in one with the environment's
/// overrides.
pub fn topology(path: Option<&std::path::Path>) -> anyhow::Result<Topology> {
    Ok(match path {
        Some(p) => Topology::load(p)?,
        None => Topology::default_with_env()?,
    })
}

/// The async runtime of a run: one worker (the stages have threads of
/// their own; it carries object-storage I/O and the HTTP parts).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

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
    metrics: Metrics,
    view: Arc<View>,
    stages: Vec<(&'static StageSpec, JoinHandle<Result<(), RuntimeError>>)>,
    brokers: Option<Brokers>,
    data_dir: Option<PathBuf>,
}

impl Cluster {
    /// Connects to, or starts, what `target` says; `run` names the
    /// temporary directory of an embedded broker.
    pub async fn start(
        mut topology: Topology,
        target: Target,
        run: &str,
        stages: &[&'static StageSpec],
    ) -> anyhow::Result<Self> {
        let shutdown = Shutdown::new();
        match target {
            Target::External(bootstrap) => {
                topology.kafka.bootstrap = bootstrap;
                let settings = topology.kafka_settings(&topology.kafka.bootstrap);
                Ok(Self {
                    view: Arc::new(View::new(topology.stages.view.max_versions)),
                    topology,
                    settings,
                    mode: "external",
                    shutdown,
                    metrics: Metrics::new(),
                    stages: Vec::new(),
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
                    view: Arc::new(View::new(topology.stages.view.max_versions)),
                    topology,
                    mode: "embedded",
                    shutdown,
                    metrics: Metrics::new(),
                    stages: Vec::new(),
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
                cluster.start_stages(stages)?;
                Ok(cluster)
            }
        }
    }

    /// Starts `stages` here, as `kusanagi run` starts them.
    ///
    /// # Panics
    ///
    /// When called outside the tokio runtime the stages are to use.
    pub fn start_stages(&mut self, stages: &[&'static StageSpec]) -> anyhow::Result<()> {
        let ctx = run::stage_context(
            &self.topology,
            &self.settings,
            &self.metrics,
            &self.shutdown,
            &self.view,
        );
        for &spec in stages {
            let handle = run::spawn_stage(spec, &ctx)
                .with_context(|| format!("starting the {} stage", spec.name))?;
            self.stages.push((spec, handle));
        }
        Ok(())
    }

    /// The shutdown of the stages started here.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The view's index the stages started here fill.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view)
    }

    /// The metrics of the stages started here.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Puts the archive's catalog and tiers in the run's temporary
    /// directory (embedded), so that a run starts from an empty archive
    /// and leaves nothing behind.
    pub fn archive_in_run_dir(&mut self) {
        if let Some(dir) = &self.data_dir {
            let at = |name: &str| dir.join("archive").join(name).display().to_string();
            let archive = &mut self.topology.archive;
            archive.catalog = at("catalog");
            archive.hot = at("hot");
            archive.warm = at("warm");
            archive.cold = at("cold");
        }
    }

    /// The number of partitions of `topic`.
    pub fn partitions_of(&self, topic: &str) -> anyhow::Result<i32> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = self
            .settings
            .reader_config("kusanagi-loadtest-metadata")
            .create()
            .context("creating a metadata client")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of `{topic}`"))?;
        let n = metadata
            .topics()
            .iter()
            .map(|t| t.partitions().len())
            .sum::<usize>();
        i32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("`{topic}` has no partitions"))
    }

    /// Whether a stage started here has stopped on its own (a fatal
    /// error: the run cannot complete).
    pub fn stage_stopped(&self) -> bool {
        self.stages.iter().any(|(_, h)| h.is_finished())
    }

    /// Stops the ingest stage and the embedded broker, and removes the
    /// broker's temporary directory. Fails if the stage failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        let mut result = Ok(());
        for (spec, handle) in std::mem::take(&mut self.stages) {
            let joined = match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(r)) => r.with_context(|| format!("the {} stage failed", spec.name)),
                _ => Err(anyhow::anyhow!("the {} stage panicked", spec.name)),
            };
            if result.is_ok() {
                result = joined;
            }
        }
        self.cleanup();
        result
    }

    fn cleanup(&mut self) {
        drop(self.brokers.take());
        if let Some(dir) = self.data_dir.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            eprintln!("loadtest: cannot remove {}: {e}", dir.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for (_, handle) in std::mem::take(&mut self.stages) {
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
