//! The Responses API's output shapes: message and function-call items, the usage object,
//! the response object, and the chat message a response adds to its stored conversation.

use serde_json::{json, Map, Value};
use tandem_engine::Usage;

use crate::api::chat::random_id;
use crate::api::responses::input::item_messages;

/// Where a response's settings and identity come from.
pub struct Shell {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    pub echo: Map<String, Value>,
}

pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_id())
}

pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub fn message_item(id: &str, text: Option<&str>, status: &str) -> Value {
    let content: Vec<Value> = text.map(text_part).into_iter().collect();
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

pub fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
           "name": name, "arguments": arguments})
}

/// A function call's item status once the response ended with `finish`: a call whose
/// arguments `max_output_tokens` cut off (they do not parse) is `incomplete`.
pub fn call_status(finish: &str, arguments: &str) -> &'static str {
    let cut = finish == "length" && serde_json::from_str::<Value>(arguments).is_err();
    if cut {
        "incomplete"
    } else {
        "completed"
    }
}

/// A chat assistant message's output items: its text (unless blank, as streaming does) as a
/// message, then each call as a function call whose `call_id` is the chat call's id (see
/// [`call_status`] for its status).
pub fn output_items(message: &Value, finish: &str) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.trim().is_empty()) {
        items.push(message_item(&item_id("msg"), Some(text), "completed"));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let (f, call_id) = (&call["function"], call["id"].as_str().unwrap_or_default());
        let name = f["name"].as_str().unwrap_or_default();
        let args = f["arguments"].as_str().unwrap_or_default();
        let status = call_status(finish, args);
        items.push(call_item(&item_id("fc"), call_id, name, args, status));
    }
    items
}

/// The chat messages that output items add to the conversation (for `previous_response_id`):
/// the items read back as input items, so the stored conversation is the one a client that
/// sends the items back gets. A turn with no items still adds an empty assistant message.
pub fn history_messages(items: &[Value]) -> Vec<Value> {
    match item_messages(items) {
        Ok(messages) if !messages.is_empty() => messages,
        _ => vec![json!({"role": "assistant", "content": ""})],
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens(),
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens() + u.completion_tokens,
    })
}

/// A chat finish reason as the response's status: `length` leaves it incomplete.
pub fn status_of(finish: &str) -> (&'static str, Value) {
    match finish {
        "length" => ("incomplete", json!({"reason": "max_output_tokens"})),
        _ => ("completed", Value::Null),
    }
}

/// The response object. `end`: the finish reason and usage once the generation ended
/// (before that the response is `in_progress`).
pub fn response_json(shell: &Shell, output: &[Value], end: Option<(&str, &Usage)>) -> Value {
    let (status, incomplete, usage) = match end {
        None => ("in_progress", Value::Null, Value::Null),
        Some((finish, u)) => {
            let (status, details) = status_of(finish);
            (status, details, usage_json(u))
        }
    };
    let mut v = json!({
        "id": shell.id, "object": "response", "created_at": shell.created_at,
        "model": shell.model, "status": status, "error": null,
        "incomplete_details": incomplete, "output": output, "usage": usage,
    });
    if let Some(obj) = v.as_object_mut() {
        obj.extend(shell.echo.clone());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_with_calls_round_trips_through_items() {
        let m = json!({"role": "assistant", "content": "checking",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "w", "arguments": "{\"a\":1}"}}]});
        let items = output_items(&m, "tool_calls");
        assert_eq!(items[0]["content"][0]["text"], "checking");
        assert_eq!(items[1]["call_id"], "call_1");
        assert!(items[1]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(history_messages(&items), [m]);
        assert_eq!(
            history_messages(&[]),
            [json!({"role": "assistant", "content": ""})]
        );
    }

    #[test]
    fn calls_alone_give_no_message_item() {
        let m = json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c", "function": {"name": "w", "arguments": "{}"}}]});
        let items = output_items(&m, "tool_calls");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["type"], "function_call");
    }

    #[test]
    fn a_call_cut_by_the_token_limit_is_incomplete() {
        let m = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "function": {"name": "w", "arguments": "{}"}},
            {"id": "b", "function": {"name": "w", "arguments": "{\"q\": \"par"}}]});
        let status = |finish| -> Vec<Value> {
            output_items(&m, finish)
                .iter()
                .map(|i| i["status"].clone())
                .collect()
        };
        assert_eq!(status("length"), ["completed", "incomplete"]);
        assert_eq!(status("stop"), ["completed", "completed"]);
    }

    #[test]
    fn a_length_finish_is_incomplete() {
        let shell = Shell {
            id: "resp_1".into(),
            created_at: 1,
            model: "m".into(),
            echo: Map::new(),
        };
        let u = Usage {
            prompt_tokens: 3,
            completion_tokens: 2,
            ..Default::default()
        };
        let r = response_json(&shell, &[], Some(("length", &u)));
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(r["usage"]["total_tokens"], 5);
        let r = response_json(&shell, &[], Some(("tool_calls", &u)));
        assert_eq!(r["status"], "completed");
    }
}
