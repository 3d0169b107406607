//! The OpenAI-compatible chat-completions protocol (`POST
//! {base_url}/chat/completions`), as OpenAI, vLLM, Ollama and llama.cpp's
//! server speak it, with `response_format: json_schema`.

use serde_json::{Value, json};

use super::{LlmFailure, Prompt, shorten};

/// The request body.
pub(crate) fn body(model: &str, max_output_tokens: u32, prompt: &Prompt) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ],
        "temperature": 0,
        "max_tokens": max_output_tokens,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": prompt.schema_name, "schema": prompt.schema, "strict": true},
        },
    })
}

/// The answer's text from a 200 response.
pub(crate) fn answer(response: &Value) -> Result<String, LlmFailure> {
    let choice = response
        .pointer("/choices/0")
        .ok_or_else(|| LlmFailure::Malformed {
            detail: "no choices in the response".into(),
        })?;
    if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
        return Err(LlmFailure::TokenLimit);
    }
    choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| LlmFailure::Malformed {
            detail: "no message content in the first choice".into(),
        })
}

/// Classifies a 4xx answer other than 429.
pub(crate) fn client_error(status: u16, body: &str) -> LlmFailure {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or(body);
    if code == "context_length_exceeded" || message.contains("maximum context length") {
        LlmFailure::ContextLength {
            detail: shorten(message),
        }
    } else {
        LlmFailure::Refused {
            status,
            detail: shorten(message),
        }
    }
}
