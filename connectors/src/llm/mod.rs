//! LLM providers over HTTP, for the analyze stage: OpenAI-compatible chat
//! completions (OpenAI, vLLM, Ollama, llama.cpp server) and Gemini's
//! generateContent, both asked for JSON constrained by a JSON Schema.
//!
//! Design. [`LlmClient`] wraps one provider with what a shared, metered API
//! needs: a token-bucket rate limit (governor: requests per second and a
//! burst), a bound on concurrent calls, a timeout per attempt, and retries
//! with exponential back-off and jitter on 429 and 5xx (honouring
//! `Retry-After`). Every failure comes back classified as an
//! [`LlmFailure`], so the caller can fall back and record why.

mod client;
mod gemini;
mod openai;

pub use client::{LlmClient, LlmConfig, LlmStats, Provider};

/// Why a model call gave no usable answer. The analyze stage records
/// [`LlmFailure::reason`] in the fallback verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmFailure {
    /// No answer within the timeout (external; a retry may help).
    #[error("timed out after {after_ms} ms")]
    Timeout {
        /// The timeout that ran out.
        after_ms: u64,
    },
    /// The provider kept answering 429 (external; later may help).
    #[error("rate limited by the provider (HTTP 429) after {attempts} attempts")]
    RateLimited {
        /// Attempts made.
        attempts: u32,
    },
    /// The provider kept failing with 5xx (external).
    #[error("provider error HTTP {status} after {attempts} attempts: {detail}")]
    Server {
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The provider's message, shortened.
        detail: String,
    },
    /// The prompt is longer than the model's context window (ours to fix:
    /// a smaller prompt; a retry does not help).
    #[error("the prompt exceeds the model's context length: {detail}")]
    ContextLength {
        /// The provider's message, shortened.
        detail: String,
    },
    /// The answer was cut at the output token limit.
    #[error("the answer hit the output token limit")]
    TokenLimit,
    /// The answer is not the JSON asked for.
    #[error("malformed answer: {detail}")]
    Malformed {
        /// What was wrong.
        detail: String,
    },
    /// The answer is JSON but breaks the schema.
    #[error("the answer violates the schema: {detail}")]
    SchemaViolation {
        /// What was wrong.
        detail: String,
    },
    /// The request was refused for another reason (4xx: a bad key, a bad
    /// model name: the operator's to fix).
    #[error("provider refused the request: HTTP {status}: {detail}")]
    Refused {
        /// The status.
        status: u16,
        /// The provider's message, shortened.
        detail: String,
    },
    /// The connection failed (external).
    #[error("transport error: {detail}")]
    Transport {
        /// What failed.
        detail: String,
    },
}

impl LlmFailure {
    /// A stable, low-cardinality code for verdicts and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::ContextLength { .. } => "context_length",
            Self::TokenLimit => "token_limit",
            Self::Malformed { .. } => "malformed_json",
            Self::SchemaViolation { .. } => "schema_violation",
            Self::Refused { .. } => "refused",
            Self::Transport { .. } => "transport",
        }
    }
}

/// One request to a model: instructions, the input, and the JSON Schema
/// the answer must follow.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// The system instructions.
    pub system: String,
    /// The user message (the case to judge).
    pub user: String,
    /// The schema's name (OpenAI's `json_schema.name`).
    pub schema_name: String,
    /// The JSON Schema of the answer.
    pub schema: serde_json::Value,
}

/// Shortens a provider's message for errors and verdicts.
fn shorten(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}
