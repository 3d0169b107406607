//! Gemini's generateContent (`POST
//! {base_url}/models/{model}:generateContent`, key in `x-goog-api-key`),
//! with `responseMimeType: application/json` and a `responseSchema`.

use serde_json::{Value, json};

use super::{LlmFailure, Prompt, shorten};

/// Gemini's schema dialect is an OpenAPI subset: it has no
/// `additionalProperties`, so that key is dropped.
fn gemini_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "additionalProperties")
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// The request body.
pub(crate) fn body(max_output_tokens: u32, prompt: &Prompt) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": prompt.system}]},
        "contents": [{"role": "user", "parts": [{"text": prompt.user}]}],
        "generationConfig": {
            "temperature": 0,
            "maxOutputTokens": max_output_tokens,
            "responseMimeType": "application/json",
            "responseSchema": gemini_schema(&prompt.schema),
        },
    })
}

/// The answer's text from a 200 response.
pub(crate) fn answer(response: &Value) -> Result<String, LlmFailure> {
    let candidate = response.pointer("/candidates/0").ok_or_else(|| {
        let blocked = response
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str);
        LlmFailure::Malformed {
            detail: match blocked {
                Some(reason) => format!("the prompt was blocked: {reason}"),
                None => "no candidates in the response".into(),
            },
        }
    })?;
    if candidate.get("finishReason").and_then(Value::as_str) == Some("MAX_TOKENS") {
        return Err(LlmFailure::TokenLimit);
    }
    let parts = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .ok_or_else(|| LlmFailure::Malformed {
            detail: "no content parts in the first candidate".into(),
        })?;
    Ok(parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect())
}

/// Classifies a 4xx answer other than 429.
pub(crate) fn client_error(status: u16, body: &str) -> LlmFailure {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or(body);
    let lower = message.to_ascii_lowercase();
    if lower.contains("exceeds the maximum number of tokens") || lower.contains("context length") {
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
