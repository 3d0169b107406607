//! The screen stage's settings (`[stages.screen]`).

use kusanagi_schemas::GameEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[stages.screen]`: windows, thresholds and batching.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Length of a target's window, in seconds (SCREENING.md: 300).
    pub window_seconds: u64,
    /// How far behind the newest event time of its partition an event may
    /// be and still be screened over a complete window, in seconds. Later
    /// events are screened over what is retained and flagged `late`. The
    /// state holds `allowed_lateness_seconds + 2 * window_seconds` of event
    /// time per partition, and a rebuild replays that much.
    pub allowed_lateness_seconds: u64,
    /// How far an event's time may be ahead of the time it was ingested
    /// (its Kafka record timestamp), in seconds; an event further ahead is
    /// dead-lettered (`future_event`) instead of screened, so that one
    /// wrong producer clock cannot push a partition's watermark into the
    /// future. 0 turns the check off (replaying historical or synthetic
    /// data stamped ahead of the clock).
    pub max_future_seconds: u64,
    /// The thresholds of every tenant without its own.
    pub thresholds: Thresholds,
    /// Per-tenant thresholds (`[stages.screen.tenants.<tenant_id>]`), each
    /// a whole set (unset keys take the built-in defaults).
    pub tenants: BTreeMap<String, Thresholds>,
    /// What a screened event's L2 evidence holds (`[stages.screen.evidence]`).
    pub evidence: EvidenceConfig,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds. 0 (the default): a batch is what the consumer holds,
    /// so batches grow with the load (what arrived during the previous
    /// transaction) and an idle stage adds no wait; more saves transactions
    /// at moderate rates for latency (docs/configuration.md).
    pub batch_max_wait_ms: u64,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-screen".into(),
            window_seconds: 300,
            allowed_lateness_seconds: 600,
            max_future_seconds: 3_600,
            thresholds: Thresholds::default(),
            tenants: BTreeMap::new(),
            evidence: EvidenceConfig::default(),
            batch_max_records: 5_000,
            batch_max_wait_ms: 0,
        }
    }
}

/// `[stages.screen.evidence]`: the events of its window a screened event
/// carries to the L2 analysis (SCREENING.md, "L2 request and prompt").
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Put the senders' chat text in the evidence (and so in `screenings`,
    /// `l2.requests`, `accounts` and the model's prompt). Chat is personal
    /// data, and what lets a model catch slang the rules miss.
    pub include_chat: bool,
    /// Per tenant (`[stages.screen.evidence.tenants.<tenant_id>]`).
    pub tenants: BTreeMap<String, TenantEvidence>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            include_chat: true,
            tenants: BTreeMap::new(),
        }
    }
}

/// `[stages.screen.evidence.tenants.<tenant_id>]`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantEvidence {
    /// Put this tenant's chat text in the evidence.
    pub include_chat: bool,
}

impl EvidenceConfig {
    /// Whether `tenant`'s chat text goes into the evidence.
    pub fn include_chat(&self, tenant: &str) -> bool {
        self.tenants
            .get(tenant)
            .map_or(self.include_chat, |t| t.include_chat)
    }
}

impl ScreenConfig {
    /// The window length and lateness in microseconds.
    pub fn window_spec(&self) -> WindowSpec {
        let us = |s: u64| {
            i64::try_from(s)
                .unwrap_or(i64::MAX / 4)
                .saturating_mul(1_000_000)
        };
        WindowSpec {
            window_us: us(self.window_seconds),
            allowed_lateness_us: us(self.allowed_lateness_seconds),
        }
    }

    /// How many seconds `event` is ahead of its ingest time
    /// (`record_timestamp_ms`), when that is more than `max_future_seconds`.
    pub fn from_the_future(
        &self,
        event: &GameEvent,
        record_timestamp_ms: Option<i64>,
    ) -> Option<i64> {
        let ingested_ms = record_timestamp_ms.filter(|_| self.max_future_seconds > 0)?;
        let ahead_s = event.timestamp.as_millis().saturating_sub(ingested_ms) / 1_000;
        (ahead_s > i64::try_from(self.max_future_seconds).unwrap_or(i64::MAX)).then_some(ahead_s)
    }

    /// The thresholds for `tenant`.
    pub fn thresholds_for(&self, tenant: &str) -> &Thresholds {
        self.tenants.get(tenant).unwrap_or(&self.thresholds)
    }

    /// Problems as (key under `stages.screen`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.group_id.trim().is_empty() {
            p.push((
                "group_id".into(),
                "expected a consumer group name, found \"\"".into(),
            ));
        }
        if !(1..=86_400).contains(&self.window_seconds) {
            p.push((
                "window_seconds".into(),
                format!("expected 1..=86400, found {}", self.window_seconds),
            ));
        }
        if self.allowed_lateness_seconds > 7 * 86_400 {
            p.push((
                "allowed_lateness_seconds".into(),
                format!(
                    "expected at most 604800 (7 days), found {}",
                    self.allowed_lateness_seconds
                ),
            ));
        }
        for (key, msg) in self.thresholds.validate() {
            p.push((format!("thresholds.{key}"), msg));
        }
        for (tenant, t) in &self.tenants {
            for (key, msg) in t.validate() {
                p.push((format!("tenants.{tenant}.{key}"), msg));
            }
        }
        p
    }
}

/// One tenant's rule thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// R1 fires when the window's total received reaches this.
    pub r1_total_received: i64,
    /// R2 fires when the window holds at least this many events.
    pub r2_transaction_count: i32,
    /// R3 fires when one trade's amount is at least this many times the
    /// item's market average price.
    pub r3_price_multiplier: i64,
    /// R4 (RMT slang in chat) is evaluated.
    pub r4_slang: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            r1_total_received: 1_000_000,
            r2_transaction_count: 10,
            r3_price_multiplier: 100,
            r4_slang: true,
        }
    }
}

impl Thresholds {
    /// Problems as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.r1_total_received < 1 {
            p.push((
                "r1_total_received".into(),
                format!("expected at least 1, found {}", self.r1_total_received),
            ));
        }
        if self.r2_transaction_count < 1 {
            p.push((
                "r2_transaction_count".into(),
                format!("expected at least 1, found {}", self.r2_transaction_count),
            ));
        }
        if self.r3_price_multiplier < 1 {
            p.push((
                "r3_price_multiplier".into(),
                format!("expected at least 1, found {}", self.r3_price_multiplier),
            ));
        }
        p
    }
}

/// Window length and allowed lateness, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Length of a window.
    pub window_us: i64,
    /// How far behind the watermark an event may be and still be screened
    /// over a complete window.
    pub allowed_lateness_us: i64,
}
