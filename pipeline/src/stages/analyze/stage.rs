//! The analyze stage: `l2.requests` -> `l2.verdicts`, one verdict per
//! request, co-partitioned with its input.
//!
//! A batch's requests are analysed concurrently (up to the model's
//! `max_concurrency`, paced by its rate limit), started in turns between
//! tenants by their `tenant_shares` ([`super::fair`]), and their verdicts
//! produced in request order, in the transaction that commits the batch. A request
//! whose window profile was judged recently takes the cached judgment
//! (moka, keyed by [`ProfileKey`]). Any model failure (timeout, 429, 5xx,
//! malformed or schema-violating JSON, context or token limit) gets the
//! deterministic fallback's verdict, which records why; so no request is
//! ever left without a verdict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kusanagi_connectors::llm::LlmClient;
use kusanagi_schemas::{AccountState, L2Request, RecordCodec, RuleSet, Verdict};
use moka::sync::Cache;

use super::fair::fair_order;
use super::fallback::fallback_verdict;
use super::prompt::{Judgment, parse_judgment, prompt_for};
use crate::runtime::dead_letter::reject_record;
use crate::runtime::trace::TraceCause;
use crate::runtime::{InRecord, Metrics, OutRecord, ScreeningTally, Stage, StageError};
use crate::stages::screen::EvidenceConfig;

/// The stage's name in metrics and logs.
pub const STAGE: &str = "analyze";

/// The longest a batch's analyses may take together; requests still
/// unanswered then get the fallback (`timeout`). It keeps a batch well
/// inside the consumer's `max.poll.interval.ms` (5 minutes), whatever the
/// model's timeouts, retries and rate limit add up to.
pub const BATCH_DEADLINE: Duration = Duration::from_secs(120);

/// What makes two requests "the same case" for the cache: the tenant, the
/// account's state, the rules, the window's counts, its total rounded to
/// two significant digits, and what the evidence events show (amounts,
/// prices, items, the senders' levels and ages, chat; not ids, times or
/// who sent them). Two cases that differ only in chat are two cases.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    tenant_id: String,
    state: AccountState,
    rules: RuleSet,
    total_received: i64,
    transaction_count: i32,
    distinct_senders: i32,
    evidence: u64,
}

impl ProfileKey {
    /// The key of `request`.
    pub fn of(request: &L2Request) -> Self {
        let w = &request.window;
        Self {
            tenant_id: request.tenant_id.clone(),
            state: request.account_state,
            rules: request.rules,
            total_received: two_significant_digits(w.total_received),
            transaction_count: w.transaction_count,
            distinct_senders: w.distinct_senders,
            evidence: evidence_digest(request),
        }
    }
}

fn evidence_digest(request: &L2Request) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for e in &request.evidence_events {
        (
            e.amount,
            e.market_avg_price,
            &e.item_id,
            e.sender_level,
            e.sender_account_age_days,
            &e.chat,
        )
            .hash(&mut h);
    }
    h.finish()
}

fn two_significant_digits(v: i64) -> i64 {
    let mut scale = 1i64;
    while v / scale >= 100 {
        scale = scale.saturating_mul(10);
    }
    (v / scale) * scale
}

/// Who answers requests.
pub enum Analyzer {
    /// The deterministic fallback, for every request (no model configured).
    Fallback,
    /// A model, with a cache of its judgments.
    Model {
        /// The paced client.
        client: Arc<LlmClient>,
        /// Judgments by profile.
        cache: Option<Cache<ProfileKey, Judgment>>,
        /// Most analyses in flight.
        concurrency: usize,
    },
}

impl Analyzer {
    /// A model analyzer with a cache of `capacity` judgments kept for `ttl`.
    pub fn model(client: LlmClient, concurrency: usize, capacity: u64, ttl: Duration) -> Self {
        let cache = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build()
        });
        Analyzer::Model {
            client: Arc::new(client),
            cache,
            concurrency: concurrency.max(1),
        }
    }

    async fn analyze(&self, request: &L2Request) -> (Verdict, Outcome) {
        let Analyzer::Model { client, cache, .. } = self else {
            return (
                fallback_verdict(request, "no_model", ""),
                Outcome::Fallback("no_model"),
            );
        };
        let key = ProfileKey::of(request);
        if let Some(j) = cache.as_ref().and_then(|c| c.get(&key)) {
            return (j.verdict(request, &client.name()), Outcome::CacheHit);
        }
        let answer = client.complete(&prompt_for(request)).await;
        match answer.and_then(|text| parse_judgment(&text)) {
            Ok(j) => {
                let verdict = j.verdict(request, &client.name());
                if let Some(c) = cache {
                    c.insert(key, j);
                }
                (verdict, Outcome::Model)
            }
            Err(failure) => {
                tracing::info!(stage = STAGE, target = %request.target_id, request = %request.request_id, %failure, "model failed; fallback verdict");
                let reason = failure.reason();
                (
                    fallback_verdict(request, reason, &failure.to_string()),
                    Outcome::Fallback(reason),
                )
            }
        }
    }
}

enum Outcome {
    Model,
    CacheHit,
    Fallback(&'static str),
}

/// What the stage did, for metrics and the demo.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AnalyzeStats {
    /// Verdicts produced.
    pub verdicts: u64,
    /// Answered by the model.
    pub model: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Answered by the fallback, by reason.
    pub fallbacks: BTreeMap<&'static str, u64>,
}

/// `l2.requests` -> `l2.verdicts`.
pub struct AnalyzeStage {
    analyzer: Analyzer,
    /// Whose chat may reach the model (the screen stage's evidence
    /// settings): requests written before a tenant turned chat off still
    /// carry it, and lose it here.
    evidence: EvidenceConfig,
    /// Each tenant's share of the model within a batch (1 when unlisted).
    shares: BTreeMap<String, u32>,
    verdicts_topic: String,
    dead_letter_topic: String,
    requests: RecordCodec<L2Request>,
    verdicts: RecordCodec<Verdict>,
    runtime: tokio::runtime::Handle,
    stats: AnalyzeStats,
    /// What the current batch did, recorded when it commits.
    tally: ScreeningTally,
    /// The model client's counters at the last report.
    reported_calls: (u64, u64, u64),
}

impl AnalyzeStage {
    /// A stage answering with `analyzer`, writing to `verdicts_topic`; the
    /// model calls run on `runtime` (the process's).
    pub fn new(
        analyzer: Analyzer,
        verdicts_topic: &str,
        dead_letter_topic: &str,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            analyzer,
            evidence: EvidenceConfig::default(),
            shares: BTreeMap::new(),
            verdicts_topic: verdicts_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            requests: RecordCodec::new(),
            verdicts: RecordCodec::new(),
            runtime,
            stats: AnalyzeStats::default(),
            tally: ScreeningTally::default(),
            reported_calls: (0, 0, 0),
        }
    }

    /// Leaves out of prompts the chat of the tenants `evidence` keeps it
    /// from (`[stages.screen.evidence]`).
    pub fn with_evidence(mut self, evidence: EvidenceConfig) -> Self {
        self.evidence = evidence;
        self
    }

    /// Each tenant's share of the model when several tenants' requests
    /// wait in one batch (`[stages.analyze] tenant_shares`).
    pub fn with_shares(mut self, shares: BTreeMap<String, u32>) -> Self {
        self.shares = shares;
        self
    }

    /// What the stage did so far.
    pub fn stats(&self) -> &AnalyzeStats {
        &self.stats
    }
}

impl Stage for AnalyzeStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        let mut decoded: Vec<(usize, L2Request)> = Vec::with_capacity(batch.len());
        let mut slots: Vec<Option<OutRecord>> = vec![None; batch.len()];
        for (i, record) in batch.iter().enumerate() {
            match record.payload.map(|v| self.requests.decode(v)) {
                Some(Ok(mut r)) => {
                    if !self.evidence.include_chat(&r.tenant_id) {
                        for e in &mut r.evidence_events {
                            e.chat = None;
                        }
                    }
                    decoded.push((i, r));
                }
                other => {
                    let detail = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "the record has no value".into(),
                    };
                    slots[i] = Some(reject_record(
                        STAGE,
                        &self.dead_letter_topic,
                        record,
                        "undecodable",
                        detail,
                    ));
                }
            }
        }
        let concurrency = match &self.analyzer {
            Analyzer::Model { concurrency, .. } => *concurrency,
            Analyzer::Fallback => 1,
        };
        let analyzer = &self.analyzer;
        let tenants: Vec<&str> = decoded.iter().map(|(_, r)| r.tenant_id.as_str()).collect();
        let shares = &self.shares;
        let order = fair_order(&tenants, |t| shares.get(t).copied().unwrap_or(1));
        let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
        let results: Vec<(Verdict, Outcome)> = self.runtime.block_on(
            futures::stream::iter(order.iter().map(|&k| &decoded[k].1).map(|r| async move {
                match tokio::time::timeout_at(deadline, analyzer.analyze(r)).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        let why =
                            format!("the batch's {} s deadline passed", BATCH_DEADLINE.as_secs());
                        (
                            fallback_verdict(r, "timeout", &why),
                            Outcome::Fallback("timeout"),
                        )
                    }
                }
            }))
            .buffered(concurrency)
            .collect(),
        );
        for (&k, (verdict, outcome)) in order.iter().zip(results) {
            let i = decoded[k].0;
            let tenant = decoded[k].1.tenant_id.as_str();
            self.stats.verdicts += 1;
            match outcome {
                Outcome::Model => {
                    self.stats.model += 1;
                    self.tally.verdict("model", "", tenant);
                }
                Outcome::CacheHit => {
                    self.stats.cache_hits += 1;
                    self.tally.verdict("cache", "", tenant);
                }
                Outcome::Fallback(reason) => {
                    *self.stats.fallbacks.entry(reason).or_insert(0) += 1;
                    self.tally.verdict("fallback", reason, tenant);
                }
            }
            slots[i] = Some(OutRecord {
                topic: self.verdicts_topic.clone(),
                partition: Some(batch[i].partition),
                key: Some(verdict.target_id.as_bytes().to_vec()),
                payload: Some(self.verdicts.encode(&verdict)),
                headers: vec![],
                timestamp_ms: None,
                trace: TraceCause::of(batch[i].trace),
            });
        }
        out.extend(slots.into_iter().flatten());
        Ok(())
    }

    fn on_rewind(&mut self, _assigned: &[crate::runtime::AssignedPartition]) {
        self.tally = ScreeningTally::default();
    }

    fn on_commit(&mut self, metrics: &Metrics) {
        metrics.screening.record_committed(&mut self.tally);
        if let Analyzer::Model { client, .. } = &self.analyzer {
            use std::sync::atomic::Ordering::Relaxed;
            let s = client.stats();
            let now = (
                s.attempts.load(Relaxed),
                s.retries.load(Relaxed),
                s.rate_limit_waits.load(Relaxed),
            );
            let last = self.reported_calls;
            metrics
                .screening
                .l2_calls(now.0 - last.0, now.1 - last.1, now.2 - last.2);
            self.reported_calls = now;
        }
    }
}
