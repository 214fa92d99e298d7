//! The Messages API's output shapes: content blocks (`text`, `tool_use`), the stop reason,
//! the usage object, the message object and its error object.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tandem_engine::Usage;

use crate::error::ApiError;

pub fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// A tool call's block; `arguments` (JSON text) becomes the `input` object.
pub fn tool_use_block(id: &str, name: &str, arguments: &str) -> Value {
    let input = match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    };
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

/// A chat assistant message's content blocks: its text (unless blank), then its calls.
pub fn content_blocks(message: &Value) -> Vec<Value> {
    let text = message["content"].as_str().filter(|t| !t.trim().is_empty());
    let calls = message["tool_calls"].as_array().into_iter().flatten();
    let calls = calls.map(|c| {
        let f = &c["function"];
        let (name, args) = (f["name"].as_str(), f["arguments"].as_str());
        tool_use_block(
            c["id"].as_str().unwrap_or_default(),
            name.unwrap_or_default(),
            args.unwrap_or("{}"),
        )
    });
    text.map(text_block).into_iter().chain(calls).collect()
}

/// The chat finish reason as a Messages `stop_reason` (`stop`: the stop sequence that ended
/// the message, if one did).
pub fn stop_reason(finish: &str, stop: Option<&str>) -> &'static str {
    match (finish, stop) {
        ("length", _) => "max_tokens",
        ("tool_calls", _) => "tool_use",
        (_, Some(_)) => "stop_sequence",
        _ => "end_turn",
    }
}

/// Anthropic counts input tokens served from the cache apart from `input_tokens`.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens() - u.cached_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    })
}

/// A message; `stop`: its stop reason and the stop sequence that ended it (none while it is
/// being streamed).
pub fn message_json(
    id: &str,
    model: &str,
    content: Vec<Value>,
    stop: Option<(&str, Option<&str>)>,
    u: &Usage,
) -> Value {
    let (reason, sequence) = stop.unzip();
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": reason, "stop_sequence": sequence.flatten(), "usage": usage_json(u),
    })
}

/// The `type` of an Anthropic error for an HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An Anthropic error object (`{"type": "error", "error": {"type", "message"}}`).
pub fn error_json(e: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(e.status()), "message": e.to_string()}})
}

/// A failure of a Messages endpoint, answered in Anthropic's error shape with the status the
/// same failure has on the OpenAI endpoints.
pub struct MessagesError(pub ApiError);

impl From<ApiError> for MessagesError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for MessagesError {
    fn into_response(self) -> Response {
        (self.0.status(), Json(error_json(&self.0))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_message_becomes_blocks() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}]});
        let b = content_blocks(&m);
        assert_eq!(
            b[0],
            json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
        );
        assert_eq!(b[1]["input"], json!({}));
        assert_eq!(
            content_blocks(&json!({"content": "  "})),
            Vec::<Value>::new()
        );
        assert_eq!(
            content_blocks(&json!({"content": "hi"})),
            vec![text_block("hi")]
        );
    }

    #[test]
    fn usage_and_errors_in_anthropic_terms() {
        let u = Usage {
            prompt_tokens: 30,
            completion_tokens: 5,
            cached_tokens: 20,
            appended_tokens: 0,
            ..Usage::default()
        };
        assert_eq!(usage_json(&u)["input_tokens"], 10);
        assert_eq!(usage_json(&u)["cache_read_input_tokens"], 20);
        assert_eq!(stop_reason("tool_calls", None), "tool_use");
        assert_eq!(stop_reason("stop", Some("END")), "stop_sequence");
        assert_eq!(stop_reason("stop", None), "end_turn");
        let e = error_json(&ApiError::invalid("bad", "x"));
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(
            error_json(&ApiError::Overloaded("busy".into()))["error"]["type"],
            "overloaded_error"
        );
    }
}
