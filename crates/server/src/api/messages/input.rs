//! An Anthropic Messages API request (`POST /v1/messages`) turned into the chat request tandem
//! runs: `system` becomes a system message, each message's content blocks become chat
//! messages (`text` → content, `tool_use` → an assistant tool call, `tool_result` → a tool
//! message), `tools` (`input_schema`) become chat function tools, `tool_choice`,
//! `stop_sequences`, `max_tokens` and the sampling fields their chat equivalents.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::body::{from_value, insert_some, RequestBody};
use crate::api::types::ChatRequest;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub messages: Vec<Value>,
    pub system: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub thinking: Option<Value>,
    // `metadata`, `service_tier` and other fields are accepted and not used.
}

impl RequestBody for MessagesRequest {}

/// The chat request for a Messages request (`count_only`: for counting tokens, where
/// `max_tokens` is not required).
pub fn chat_request(req: &MessagesRequest, count_only: bool) -> Result<ChatRequest, ApiError> {
    if let Some(t) = &req.thinking {
        if t["type"] != "disabled" {
            return Err(ApiError::invalid(
                "extended thinking is not supported",
                "thinking",
            ));
        }
    }
    let mut chat = Map::new();
    let messages = messages(req)?;
    // A last assistant message is the start of the reply (Anthropic's prefill).
    let prefill = messages.last().is_some_and(|m| m["role"] == "assistant");
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("continue_final_message".into(), json!(prefill));
    if !count_only {
        let max = req
            .max_tokens
            .ok_or_else(|| ApiError::invalid("max_tokens is required", "max_tokens"))?;
        chat.insert("max_tokens".into(), json!(max));
    }
    insert_some(&mut chat, "model", req.model.clone().map(Value::from));
    insert_some(&mut chat, "stream", req.stream.map(Value::from));
    insert_some(&mut chat, "temperature", req.temperature.map(Value::from));
    insert_some(&mut chat, "top_p", req.top_p.map(Value::from));
    insert_some(&mut chat, "top_k", req.top_k.map(Value::from));
    insert_some(
        &mut chat,
        "stop",
        req.stop_sequences.clone().map(Value::from),
    );
    insert_some(
        &mut chat,
        "tools",
        req.tools.as_deref().map(tools).transpose()?,
    );
    if let Some(c) = &req.tool_choice {
        let (choice, parallel) = tool_choice(c)?;
        chat.insert("tool_choice".into(), choice);
        insert_some(&mut chat, "parallel_tool_calls", parallel.map(Value::from));
    }
    from_value(&Value::Object(chat))
}

/// The chat messages: the system prompt, then each message's blocks.
fn messages(req: &MessagesRequest) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(s) = &req.system {
        out.push(json!({"role": "system", "content": text_of(s, "system")?}));
    }
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages must not be empty", "messages"));
    }
    for m in &req.messages {
        match m["role"].as_str() {
            Some("user") => out.extend(user_messages(&m["content"])?),
            Some("assistant") => out.push(assistant_message(&m["content"])?),
            _ => {
                let msg = "each message needs a role of `user` or `assistant`";
                return Err(ApiError::invalid(msg, "messages"));
            }
        }
    }
    Ok(out)
}

/// Text given as a string or a list of `text` blocks (joined).
fn text_of(v: &Value, param: &'static str) -> Result<String, ApiError> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_string());
    }
    let blocks = v.as_array().ok_or_else(|| {
        ApiError::invalid(
            format!("{param} must be a string or a list of text blocks"),
            param,
        )
    })?;
    blocks.iter().map(|b| block_text(b, param)).collect()
}

fn block_text(b: &Value, param: &'static str) -> Result<String, ApiError> {
    match (b["type"].as_str(), b["text"].as_str()) {
        (Some("text"), Some(t)) => Ok(t.to_string()),
        (Some("text"), None) => Err(ApiError::invalid("a text block needs `text`", param)),
        (kind, _) => Err(unsupported_block(kind, param)),
    }
}

fn unsupported_block(kind: Option<&str>, param: &'static str) -> ApiError {
    let kind = kind.unwrap_or("(none)");
    ApiError::invalid(
        format!("content blocks of type `{kind}` are not supported here"),
        param,
    )
}

/// A message's content given as a list of blocks (the caller took the string form).
fn message_blocks(content: &Value) -> Result<&Vec<Value>, ApiError> {
    content.as_array().ok_or_else(|| {
        ApiError::invalid(
            "message content must be a string or a list of blocks",
            "messages",
        )
    })
}

/// A user message's blocks: its tool results become tool messages (first, as the calls they
/// answer come right before), its text one user message.
fn user_messages(content: &Value) -> Result<Vec<Value>, ApiError> {
    if let Some(s) = content.as_str() {
        return Ok(vec![json!({"role": "user", "content": s})]);
    }
    let blocks = message_blocks(content)?;
    let mut out = Vec::new();
    let mut text = String::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("tool_result") => out.push(tool_message(b)?),
            _ => text.push_str(&block_text(b, "messages")?),
        }
    }
    if !text.is_empty() || out.is_empty() {
        out.push(json!({"role": "user", "content": text}));
    }
    Ok(out)
}

fn tool_message(b: &Value) -> Result<Value, ApiError> {
    let id = b["tool_use_id"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("a tool_result block needs `tool_use_id`", "messages"))?;
    let content = match &b["content"] {
        Value::Null => String::new(),
        c => text_of(c, "messages")?,
    };
    let content = match b["is_error"].as_bool() {
        Some(true) => format!("Error: {content}"),
        _ => content,
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// An assistant message: its text, and its `tool_use` blocks as tool calls.
fn assistant_message(content: &Value) -> Result<Value, ApiError> {
    if let Some(s) = content.as_str() {
        return Ok(json!({"role": "assistant", "content": s}));
    }
    let blocks = message_blocks(content)?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("tool_use") => calls.push(tool_call(b)?),
            // Reasoning a client sends back: tandem's models do not produce it.
            Some("thinking") | Some("redacted_thinking") => {}
            _ => text.push_str(&block_text(b, "messages")?),
        }
    }
    let mut m = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        m["tool_calls"] = Value::Array(calls);
    }
    Ok(m)
}

fn tool_call(b: &Value) -> Result<Value, ApiError> {
    let (Some(id), Some(name)) = (b["id"].as_str(), b["name"].as_str()) else {
        let msg = "a tool_use block needs `id` and `name`";
        return Err(ApiError::invalid(msg, "messages"));
    };
    let input = match &b["input"] {
        Value::Null => json!({}),
        v => v.clone(),
    };
    Ok(json!({"id": id, "type": "function",
              "function": {"name": name, "arguments": input.to_string()}}))
}

/// Anthropic tools (`name`, `description`, `input_schema`) as chat function tools. Anthropic's
/// own server tools (`web_search_...`, with a `type`) are not served.
fn tools(list: &[Value]) -> Result<Value, ApiError> {
    let tool = |t: &Value| {
        let custom = t["type"].is_null() || t["type"] == "custom";
        let Some(name) = t["name"].as_str().filter(|_| custom) else {
            let kind = t["type"].as_str().unwrap_or("(no name)");
            let msg = format!(
                "only client tools with a `name` and `input_schema` are supported, not `{kind}`"
            );
            return Err(ApiError::invalid(msg, "tools"));
        };
        let schema = match &t["input_schema"] {
            Value::Null => json!({"type": "object", "properties": {}}),
            s @ Value::Object(_) => s.clone(),
            _ => {
                let msg = format!("the input_schema of tool `{name}` must be a JSON Schema object");
                return Err(ApiError::invalid(msg, "tools"));
            }
        };
        let mut f = json!({"name": name, "parameters": schema});
        if let Some(d) = t["description"].as_str() {
            f["description"] = json!(d);
        }
        Ok(json!({"type": "function", "function": f}))
    };
    list.iter()
        .map(tool)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice` as the chat field, and `parallel_tool_calls` when the choice disables them.
fn tool_choice(c: &Value) -> Result<(Value, Option<bool>), ApiError> {
    let choice = match (c["type"].as_str(), c["name"].as_str()) {
        (Some("auto"), _) => json!("auto"),
        (Some("any"), _) => json!("required"),
        (Some("none"), _) => json!("none"),
        (Some("tool"), Some(name)) => json!({"type": "function", "function": {"name": name}}),
        _ => {
            let msg = "tool_choice must be {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}";
            return Err(ApiError::invalid(msg, "tool_choice"));
        }
    };
    let parallel = c["disable_parallel_tool_use"].as_bool().map(|d| !d);
    Ok((choice, parallel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_tool_round_trip_becomes_chat_messages() {
        let r = req(json!({
            "max_tokens": 32, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                    {"type": "text", "text": "Thanks."}]}],
            "tools": [{"name": "weather", "description": "Weather now",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "top_k": 5}));
        let m = messages(&r).unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "Thanks."}));
        let chat = chat_request(&r, false).unwrap();
        assert_eq!(chat.tool_choice, Some(json!("required")));
        assert_eq!(chat.parallel_tool_calls, Some(json!(false)));
        assert_eq!(
            chat.tools.unwrap()[0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
    }

    #[test]
    fn unsupported_input_is_a_400_naming_the_field() {
        let base = json!({"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            chat_request(&req(b), false).err().map(|e| e.to_string())
        };
        assert!(with(
            "thinking",
            json!({"type": "enabled", "budget_tokens": 1024})
        )
        .unwrap()
        .contains("thinking"));
        assert!(with(
            "tools",
            json!([{"type": "web_search_20250305", "name": "web_search"}])
        )
        .unwrap()
        .contains("web_search_20250305"));
        assert!(with("tool_choice", json!({"type": "tool"})).is_some());
        let image = json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]);
        assert!(with("messages", image).unwrap().contains("`image`"));
        assert!(with("messages", json!([{"role": "system", "content": "x"}])).is_some());
        let mut no_max = base.clone();
        no_max.as_object_mut().unwrap().remove("max_tokens");
        assert!(chat_request(&req(no_max.clone()), false).is_err());
        assert!(
            chat_request(&req(no_max), true).is_ok(),
            "counting needs no max_tokens"
        );
    }
}
