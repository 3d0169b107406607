//! The topology file's typed form: which stages run, where Kafka is, the
//! topics, and each stage's limits. Every field has a default, so an empty
//! file is a valid topology (the embedded default).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole topology file (`topologies/*.toml`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Topology {
    /// This process's identity within the cluster.
    pub instance: InstanceConfig,
    /// Where Kafka is and how clients behave.
    pub kafka: KafkaConfig,
    /// The in-process broker started when `kafka.bootstrap` is empty.
    pub embedded_broker: EmbeddedBrokerConfig,
    /// Topic names and layout.
    pub topics: TopicsConfig,
    /// Per-stage settings.
    pub stages: StagesConfig,
    /// The Parquet archive: tiers, catalog, tier ages.
    pub archive: super::ArchiveConfig,
    /// The HTTP server (ingest API, state API, health, metrics).
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Traces (OpenTelemetry).
    pub telemetry: TelemetryConfig,
    /// Erasure: the subject-hash salt, the certificate key, subject filters.
    pub gdpr: super::GdprConfig,
}

/// `[telemetry]`: OpenTelemetry traces of events through the stages. Its
/// `Debug` hides the password of the endpoint's URL.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Export traces. Env: `KUSANAGI_TRACES` (`true`/`false`).
    pub traces: bool,
    /// The OTLP/HTTP traces endpoint (protobuf). Env:
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub otlp_endpoint: String,
    /// Share of new traces kept (0..=1); a record that arrives with a
    /// sampled `traceparent` is always traced.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            traces: false,
            otlp_endpoint: "http://localhost:4318/v1/traces".into(),
            sample_ratio: 0.01,
            service_name: "kusanagi".into(),
        }
    }
}

impl TelemetryConfig {
    /// Problems as (key under `telemetry`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            p.push((
                "sample_ratio".into(),
                format!("expected 0.0..=1.0, found {}", self.sample_ratio),
            ));
        }
        match url::Url::parse(&self.otlp_endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => p.push((
                "otlp_endpoint".into(),
                format!(
                    "expected an http(s) URL such as http://localhost:4318/v1/traces, found {:?}",
                    self.otlp_endpoint
                ),
            )),
        }
        if self.service_name.trim().is_empty() {
            p.push(("service_name".into(), "expected a name, found \"\"".into()));
        }
        p
    }
}

/// This process's identity.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// A name unique among the copies of a stage and stable across their
    /// restarts (a pod's StatefulSet name, a host name). It makes the
    /// transactional ids, so a restarted copy fences its dead predecessor
    /// at once. Empty: the host name. Env: `KUSANAGI_INSTANCE_ID`.
    pub id: String,
}

/// Kafka clients. Its `Debug` hides secret properties.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]` of the brokers. Empty: start the embedded
    /// broker. Env: `KAFKA_BOOTSTRAP`.
    pub bootstrap: String,
    /// Prefix of every client id.
    pub client_id: String,
    /// Consumer group session timeout in milliseconds: how long a dead
    /// copy keeps its partitions before they move to a live one.
    pub session_timeout_ms: u32,
    /// Largest record any Kusanagi producer sends, in bytes.
    pub message_max_bytes: u32,
    /// Stage consumers are static group members (KIP-345): a restarted copy
    /// (same instance id) takes its partitions back without a rebalance,
    /// and a stopped copy's partitions move after `session_timeout_ms`.
    /// `false`: a clean stop hands its partitions over at once (scale-down),
    /// and every restart rebalances the group.
    pub static_membership: bool,
    /// Extra librdkafka properties for every client (`security.protocol`, ...).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap: String::new(),
            client_id: "kusanagi".into(),
            session_timeout_ms: 10_000,
            message_max_bytes: 8 * 1024 * 1024,
            static_membership: true,
            properties: BTreeMap::new(),
        }
    }
}

/// The embedded broker.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Address to listen on; port 0 picks a free one (printed at start).
    pub listen: String,
    /// Where the broker keeps its state. Env: `KUSANAGI_DATA_DIR` (the
    /// broker then uses `<dir>/broker`).
    pub data_dir: PathBuf,
    /// How often the broker writes a checkpoint (its whole state, when
    /// anything changed), in milliseconds. Every change is in the journal
    /// before it is acknowledged anyway; a checkpoint lets the journal
    /// before it go, and bounds how much a start replays.
    pub snapshot_interval_ms: u64,
    /// When the journal is made durable before an answer: `os` (written to
    /// the operating system: survives a crash of the process, as Apache
    /// Kafka's default) or `always` (also fsynced: survives a power loss,
    /// at the cost of a disk flush per request).
    pub flush: BrokerFlush,
    /// The broker's `group.initial.rebalance.delay.ms`: how long a new
    /// consumer group's first round waits for more members before it
    /// assigns partitions. Apache Kafka's default (3 s) suits many
    /// consumers starting together; in one `kusanagi run` each stage's
    /// group has one member, and every start would wait for nothing.
    pub group_initial_rebalance_delay_ms: u64,
}

/// `embedded_broker.flush`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BrokerFlush {
    /// Written to the OS before the answer.
    #[default]
    Os,
    /// Fsynced before the answer.
    Always,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9092".into(),
            data_dir: PathBuf::from("data/broker"),
            snapshot_interval_ms: 5_000,
            flush: BrokerFlush::Os,
            group_initial_rebalance_delay_ms: 0,
        }
    }
}

/// Topic names and layout.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Partitions of each topic Kusanagi creates: the most copies of a
    /// stage that can share the work.
    pub partitions: i32,
    /// Replicas of each partition (1 for the embedded broker, 3 in production).
    pub replication_factor: i32,
    /// Raw JSON events from producers.
    pub raw: String,
    /// Validated events, Avro.
    pub events: String,
    /// Rejected records with their reasons.
    pub dead_letter: String,
    /// One L1 screening per distinct event (the screen stage's output).
    pub screenings: String,
    /// L2 analysis requests, coalesced per account.
    pub l2_requests: String,
    /// L2 verdicts.
    pub l2_verdicts: String,
    /// The latest state of every account (compacted).
    pub accounts: String,
    /// Every move of every account, applied or refused.
    pub transitions: String,
    /// Erasure requests, keyed by subject (compacted).
    pub erasures: String,
    /// The audit trail: erasure steps, state overrides, admin actions
    /// (no personal data; kept forever, and archived).
    pub audit: String,
    /// How long the raw and dead-letter topics keep data, in milliseconds.
    pub raw_retention_ms: i64,
    /// How long `screenings` and `l2.requests` keep data, in milliseconds.
    /// Their records carry L2 evidence: the newest events of a window with
    /// the senders' chat (personal data), so an erasure certificate states
    /// this bound. `-1`: forever. Set when Kusanagi creates the topics.
    pub evidence_retention_ms: i64,
    /// How long `accounts.transitions` keeps moves, in milliseconds: how
    /// far back the state API's `/at` and `/versions` reach (older moves
    /// are in the archive's `transitions` table). `-1`: forever.
    pub transitions_retention_ms: i64,
    /// Largest record the raw and dead-letter topics accept, in bytes
    /// (their `max.message.bytes`).
    pub raw_max_message_bytes: u32,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 1,
            raw: "events.raw".into(),
            events: "events".into(),
            dead_letter: "events.dlq".into(),
            screenings: "screenings".into(),
            l2_requests: "l2.requests".into(),
            l2_verdicts: "l2.verdicts".into(),
            accounts: "accounts".into(),
            transitions: "accounts.transitions".into(),
            erasures: "erasures".into(),
            audit: "audit".into(),
            raw_retention_ms: 7 * 24 * 3_600_000,
            evidence_retention_ms: 7 * 24 * 3_600_000,
            transitions_retention_ms: 30 * 24 * 3_600_000,
            raw_max_message_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Per-stage settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StagesConfig {
    /// The ingest stage (`events.raw` to `events` and `events.dlq`).
    pub ingest: super::stages::ingest::IngestConfig,
    /// The screen stage (`events` to `screenings`).
    pub screen: super::stages::screen::ScreenConfig,
    /// The decide stage (`screenings`, `l2.verdicts` to `accounts`,
    /// `accounts.transitions`, `l2.requests`).
    pub decide: super::stages::decide::DecideConfig,
    /// The analyze stage (`l2.requests` to `l2.verdicts`).
    pub analyze: super::stages::analyze::AnalyzeConfig,
    /// The archive stage (`events`, `screenings`, `accounts.transitions` to
    /// Parquet in the hot tier).
    pub archive: super::stages::archive::ArchiveStageConfig,
    /// The tier stage (moves archive files between tiers by age).
    pub tier: super::stages::tier::TierStageConfig,
    /// The view stage (`accounts`, `accounts.transitions` to the state API).
    pub view: super::stages::view::ViewConfig,
    /// The compact stage (`erasures` to the archive's purge, certificates
    /// and `audit`).
    pub compact: super::stages::compact::CompactStageConfig,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP at all.
    pub enabled: bool,
    /// Address to listen on. Env: `KUSANAGI_HTTP_LISTEN`.
    pub listen: String,
    /// Most events one `POST /api/v1/events` may carry.
    pub max_batch_events: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, body included, in milliseconds; then it
    /// is answered 503.
    pub request_timeout_ms: u64,
    /// The API keys accepted; every route but `/healthz` needs one.
    pub auth: super::AuthConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            max_batch_events: 10_000,
            max_body_bytes: 16 * 1024 * 1024,
            request_timeout_ms: 30_000,
            auth: super::AuthConfig::default(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `kusanagi=debug`. Env: `RUST_LOG`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
