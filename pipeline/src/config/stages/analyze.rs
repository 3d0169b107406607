//! The analyze stage's settings (`[stages.analyze]`, `[stages.analyze.model]`).

use kusanagi_connectors::llm::{LlmConfig, Provider};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;
use std::time::Duration;

/// `[stages.analyze]`: batching, the result cache and the model.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzeConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Most requests in one transaction (analysed concurrently, up to
    /// `model.max_concurrency` at a time).
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds.
    pub batch_max_wait_ms: u64,
    /// Model judgments kept, by window profile (0 disables the cache).
    pub cache_capacity: u64,
    /// How long a cached judgment is reused, in seconds.
    pub cache_ttl_seconds: u64,
    /// Each tenant's share of the model when several tenants' requests
    /// wait in one batch (a weight, 1 for a tenant not listed): the starts
    /// are interleaved by weight, and an idle tenant's turns go to the
    /// others (`stages/analyze/fair.rs`).
    pub tenant_shares: std::collections::BTreeMap<String, u32>,
    /// The model. Absent: the deterministic fallback analyzer answers
    /// every request.
    pub model: Option<ModelConfig>,
}

impl Default for AnalyzeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-analyze".into(),
            batch_max_records: 100,
            batch_max_wait_ms: 20,
            cache_capacity: 10_000,
            cache_ttl_seconds: 600,
            tenant_shares: std::collections::BTreeMap::new(),
            model: None,
        }
    }
}

/// Which API the model speaks.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, llama.cpp server.
    Openai,
    /// Google Gemini generateContent.
    Gemini,
}

/// `[stages.analyze.model]`: the LLM and how hard to use it. Its `Debug`
/// hides the password of `base_url`.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `openai` or `gemini`.
    pub provider: ProviderKind,
    /// The API root, such as `https://api.openai.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta` or
    /// `http://localhost:11434/v1` (Ollama).
    pub base_url: String,
    /// The model name (`gpt-4o-mini`, `gemini-2.0-flash`, `llama3.1`).
    pub model: String,
    /// The environment variable holding the API key; empty for servers
    /// without one. The key itself never goes in the file.
    #[serde(default)]
    pub api_key_env: String,
    /// Sustained requests per second to the provider (per stage copy).
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
    /// Requests that may go at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Most calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Longest wait for one answer, in milliseconds; then the fallback answers.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a 429, a 5xx or a connection error.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// The first retry's back-off in milliseconds; it doubles each time.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The answer's token limit.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
}

fn default_rps() -> u32 {
    5
}
fn default_burst() -> u32 {
    5
}
fn default_concurrency() -> usize {
    8
}
fn default_timeout_ms() -> u64 {
    20_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_max_output_tokens() -> u32 {
    512
}

impl ModelConfig {
    /// The client settings, with the key read from `api_key_env` through `var`.
    pub fn llm_config(&self, var: impl Fn(&str) -> Option<String>) -> LlmConfig {
        LlmConfig {
            provider: match self.provider {
                ProviderKind::Openai => Provider::OpenAi,
                ProviderKind::Gemini => Provider::Gemini,
            },
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            api_key: (!self.api_key_env.is_empty())
                .then(|| var(&self.api_key_env))
                .flatten(),
            requests_per_second: NonZeroU32::new(self.requests_per_second)
                .unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN),
            max_concurrency: self.max_concurrency.max(1),
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            backoff: Duration::from_millis(self.backoff_ms),
            max_output_tokens: self.max_output_tokens,
        }
    }
}

impl AnalyzeConfig {
    /// Problems as (key under `stages.analyze`, message); the API key's
    /// variable is looked up through `var`.
    pub fn validate(&self, var: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
        let mut p = crate::config::check_loop(
            &self.group_id,
            self.batch_max_records,
            self.batch_max_wait_ms,
        );
        for (tenant, share) in &self.tenant_shares {
            if !(1..=1_000).contains(share) {
                p.push((
                    format!("tenant_shares.{tenant}"),
                    format!("expected a weight in 1..=1000, found {share}"),
                ));
            }
        }
        let Some(m) = &self.model else { return p };
        if !(m.base_url.starts_with("http://") || m.base_url.starts_with("https://")) {
            p.push((
                "model.base_url".into(),
                format!(
                    "expected an http:// or https:// URL, found {:?}",
                    m.base_url
                ),
            ));
        }
        if m.model.trim().is_empty() {
            p.push((
                "model.model".into(),
                "expected a model name, found \"\"".into(),
            ));
        }
        if !m.api_key_env.is_empty() && var(&m.api_key_env).is_none_or(|k| k.is_empty()) {
            p.push((
                "model.api_key_env".into(),
                format!(
                    "expected the environment variable {} to hold the API key; it is not set",
                    m.api_key_env
                ),
            ));
        }
        for (key, value, min, max) in [
            (
                "requests_per_second",
                u64::from(m.requests_per_second),
                1,
                100_000,
            ),
            ("burst", u64::from(m.burst), 1, 100_000),
            ("max_concurrency", m.max_concurrency as u64, 1, 1_024),
            ("timeout_ms", m.timeout_ms, 100, 600_000),
            ("max_retries", u64::from(m.max_retries), 0, 10),
            ("backoff_ms", m.backoff_ms, 1, 60_000),
            (
                "max_output_tokens",
                u64::from(m.max_output_tokens),
                64,
                32_768,
            ),
        ] {
            if !(min..=max).contains(&value) {
                p.push((
                    format!("model.{key}"),
                    format!("expected {min}..={max}, found {value}"),
                ));
            }
        }
        p
    }
}
