//! [`LlmClient`]: one provider behind a rate limit, a concurrency bound,
//! timeouts and retries.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::{LlmFailure, Prompt, gemini, openai, shorten};
use crate::ConnectorError;

/// Which protocol the provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI-compatible chat completions.
    OpenAi,
    /// Gemini generateContent.
    Gemini,
}

impl Provider {
    /// `openai` or `gemini`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
        }
    }
}

/// How to reach and pace one provider. Its `Debug` hides the API key.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// The protocol.
    pub provider: Provider,
    /// The API root: `https://api.openai.com/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`,
    /// `http://localhost:11434/v1` (Ollama), ...
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The API key, if the provider needs one.
    pub api_key: Option<String>,
    /// Sustained requests per second (the token bucket's refill rate).
    pub requests_per_second: NonZeroU32,
    /// Requests that may go at once after a quiet spell (the bucket's size).
    pub burst: NonZeroU32,
    /// Most calls in flight at once.
    pub max_concurrency: usize,
    /// Longest wait for one attempt's answer.
    pub timeout: Duration,
    /// Retries after a 429, a 5xx or a transport error.
    pub max_retries: u32,
    /// The first retry's back-off; each next one doubles (with jitter).
    pub backoff: Duration,
    /// The answer's token limit.
    pub max_output_tokens: u32,
}

impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field(
                "api_key",
                &self.api_key.as_ref().map(|_| crate::secrets::REDACTED),
            )
            .field("requests_per_second", &self.requests_per_second)
            .field("burst", &self.burst)
            .field("max_concurrency", &self.max_concurrency)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("max_output_tokens", &self.max_output_tokens)
            .finish()
    }
}

/// Counters of what the client did.
#[derive(Debug, Default)]
pub struct LlmStats {
    /// HTTP attempts sent.
    pub attempts: AtomicU64,
    /// Attempts that had to wait for the rate limiter.
    pub rate_limit_waits: AtomicU64,
    /// Retries (after a 429, a 5xx or a transport error).
    pub retries: AtomicU64,
    /// Calls that ended in a failure.
    pub failures: AtomicU64,
}

/// One provider, paced.
pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    limiter: DefaultDirectRateLimiter,
    permits: Semaphore,
    stats: Arc<LlmStats>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider", &self.config.provider)
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Result<String, LlmFailure>),
    Retry {
        failure: LlmFailure,
        after: Option<Duration>,
    },
}

impl LlmClient {
    /// A client for `config`.
    pub fn new(config: LlmConfig) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ConnectorError::Http {
                url: config.base_url.clone(),
                detail: e.to_string(),
            })?;
        let quota = Quota::per_second(config.requests_per_second).allow_burst(config.burst);
        Ok(Self {
            http,
            limiter: RateLimiter::direct(quota),
            permits: Semaphore::new(config.max_concurrency.max(1)),
            stats: Arc::new(LlmStats::default()),
            config,
        })
    }

    /// `<provider>:<model>`, as verdicts name their analyzer.
    pub fn name(&self) -> String {
        format!("{}:{}", self.config.provider.as_str(), self.config.model)
    }

    /// What the client did so far.
    pub fn stats(&self) -> &Arc<LlmStats> {
        &self.stats
    }

    /// Asks the model and returns the answer's text (JSON, unparsed), or why not.
    pub async fn complete(&self, prompt: &Prompt) -> Result<String, LlmFailure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LlmFailure::Transport {
                detail: "the client is shutting down".into(),
            })?;
        let mut attempt = 0u32;
        loop {
            if self.limiter.check().is_err() {
                self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                self.limiter.until_ready().await;
            }
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            attempt += 1;
            match self.attempt(prompt, attempt).await {
                Attempt::Done(result) => {
                    if result.is_err() {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    return result;
                }
                Attempt::Retry { failure, after } => {
                    if attempt > self.config.max_retries {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        return Err(failure);
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let exp = self
                        .config
                        .backoff
                        .saturating_mul(1 << (attempt - 1).min(10));
                    let jitter = rand::rng().random_range(0.5..1.5);
                    let wait = after
                        .unwrap_or(exp.mul_f64(jitter))
                        .min(Duration::from_secs(60));
                    tracing::debug!(model = %self.name(), %failure, ?wait, attempt, "retrying the model call");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// A request that failed below HTTP: a timeout ends the call (the
    /// fallback answers), anything else (a refused or reset connection) is
    /// retried.
    fn failed(&self, e: &reqwest::Error) -> Attempt {
        if e.is_timeout() {
            Attempt::Done(Err(LlmFailure::Timeout {
                after_ms: self.config.timeout.as_millis() as u64,
            }))
        } else {
            Attempt::Retry {
                failure: LlmFailure::Transport {
                    detail: e.to_string(),
                },
                after: None,
            }
        }
    }

    async fn attempt(&self, prompt: &Prompt, attempt: u32) -> Attempt {
        let c = &self.config;
        let root = c.base_url.trim_end_matches('/');
        let (url, body) = match c.provider {
            Provider::OpenAi => (
                format!("{root}/chat/completions"),
                openai::body(&c.model, c.max_output_tokens, prompt),
            ),
            Provider::Gemini => (
                format!("{root}/models/{}:generateContent", c.model),
                gemini::body(c.max_output_tokens, prompt),
            ),
        };
        let mut request = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = &c.api_key {
            request = match c.provider {
                Provider::OpenAi => request.bearer_auth(key),
                Provider::Gemini => request.header("x-goog-api-key", key),
            };
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return self.failed(&e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return self.failed(&e),
        };
        match status {
            200..=299 => {
                let parsed: Result<Value, _> = serde_json::from_str(&text);
                Attempt::Done(match parsed {
                    Err(e) => Err(LlmFailure::Malformed {
                        detail: format!("the response is not JSON: {e}"),
                    }),
                    Ok(v) => match c.provider {
                        Provider::OpenAi => openai::answer(&v),
                        Provider::Gemini => gemini::answer(&v),
                    },
                })
            }
            429 => Attempt::Retry {
                failure: LlmFailure::RateLimited { attempts: attempt },
                after: retry_after,
            },
            500..=599 => Attempt::Retry {
                failure: LlmFailure::Server {
                    status,
                    attempts: attempt,
                    detail: shorten(&text),
                },
                after: retry_after,
            },
            _ => Attempt::Done(Err(match c.provider {
                Provider::OpenAi => openai::client_error(status, &text),
                Provider::Gemini => gemini::client_error(status, &text),
            })),
        }
    }
}
