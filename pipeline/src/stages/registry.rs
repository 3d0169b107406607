//! The registry of stages: each stage folder describes itself with a
//! [`StageSpec`] (its name, whether the topology enables it, and how to
//! build it from the topology), and [`STAGES`] lists them in data-flow
//! order. `kusanagi run` starts every enabled one, `kusanagi stage NAME`
//! one; adding a stage adds its folder and one line here, and touches no
//! `match` (vector's `SinkConfig::build`, arroyo's `OperatorConstructor`).

use std::sync::Arc;

use kusanagi_connectors::kafka::KafkaSettings;

use super::{analyze, archive, compact, decide, ingest, screen, tier, view};
use crate::config::Topology;
use crate::runtime::{LoopConfig, Metrics, RuntimeError, Shutdown};

/// What a stage gets from the process that starts it.
#[derive(Clone)]
pub struct StageContext {
    /// The topology, validated.
    pub topology: Arc<Topology>,
    /// The Kafka clients' settings.
    pub settings: KafkaSettings,
    /// Where every stage reports.
    pub metrics: Metrics,
    /// The process's shutdown.
    pub shutdown: Shutdown,
    /// The index the view stage fills and the HTTP API serves.
    pub view: Arc<view::View>,
    /// The process's async runtime, for object storage and HTTP calls.
    pub rt: tokio::runtime::Handle,
}

impl StageContext {
    /// The loop settings of one copy of `stage`, reading `inputs` in
    /// `group`: its member and transactional id is `<group>-<instance id>`.
    pub fn loop_config(
        &self,
        stage: &'static str,
        inputs: &[&str],
        group: &str,
        batch_max_records: usize,
        batch_max_wait_ms: u64,
    ) -> LoopConfig {
        LoopConfig {
            stage,
            input_topics: inputs.iter().map(|t| (*t).to_owned()).collect(),
            group_id: group.to_owned(),
            transactional_id: format!("{group}-{}", self.topology.instance_id()),
            batch_max_records,
            batch_max_wait: std::time::Duration::from_millis(batch_max_wait_ms),
        }
    }
}

/// A built stage: runs until shutdown (or an error no restart mends) on the
/// thread it is given.
pub type StageRun = Box<dyn FnOnce() -> Result<(), RuntimeError> + Send>;

/// A stage as the registry knows it.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec {
    /// Its name in metrics, logs, thread names and `kusanagi stage NAME`.
    pub name: &'static str,
    /// One line on what it reads and writes.
    pub about: &'static str,
    /// Whether `kusanagi run` starts it for this topology.
    pub enabled: fn(&Topology) -> bool,
    /// Builds it (its clients are created when it runs).
    pub build: fn(&StageContext) -> StageRun,
}

impl PartialEq for StageSpec {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Every stage, in data-flow order.
pub static STAGES: [StageSpec; 8] = [
    ingest::SPEC,
    screen::SPEC,
    decide::SPEC,
    analyze::SPEC,
    archive::SPEC,
    tier::SPEC,
    view::SPEC,
    compact::SPEC,
];

/// The stage called `name`.
pub fn find(name: &str) -> Option<&'static StageSpec> {
    STAGES.iter().find(|s| s.name == name)
}

/// The stages `kusanagi run` starts for `topology`, in data-flow order.
pub fn enabled(topology: &Topology) -> Vec<&'static StageSpec> {
    STAGES.iter().filter(|s| (s.enabled)(topology)).collect()
}

/// Every stage's name.
pub fn names() -> Vec<&'static str> {
    STAGES.iter().map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_found_by_its_own_name_and_the_defaults_enable_them_all() {
        for spec in &STAGES {
            assert_eq!(find(spec.name), Some(spec));
        }
        let unique: std::collections::BTreeSet<_> = names().into_iter().collect();
        assert_eq!(unique.len(), STAGES.len(), "names are unique");
        assert!(find("nope").is_none());
        let topology = Topology::default();
        assert_eq!(enabled(&topology).len(), STAGES.len());
        let mut off = Topology::default();
        off.stages.tier.enabled = false;
        assert!(enabled(&off).iter().all(|s| s.name != tier::STAGE));
    }
}
