//! A Responses API request (`POST /v1/responses`) turned into the chat request tandem runs:
//! `instructions` and `input` items become chat messages (after the stored conversation of
//! `previous_response_id`), flat function tools become chat tools, `max_output_tokens`,
//! `text.format` and `tool_choice` their chat equivalents. Sampling fields and tandem's chat
//! extensions pass through unchanged.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::body::{from_value, insert_some, RequestBody};
use crate::api::types::ChatRequest;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    pub input: Option<Value>,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub store: Option<bool>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub max_output_tokens: Option<i64>,
    pub text: Option<Value>,
    pub stream: Option<bool>,
    pub metadata: Option<Value>,
    #[serde(default)]
    pub include: Vec<String>,
    pub reasoning: Option<Value>,
    pub truncation: Option<String>,
    pub background: Option<bool>,
    pub user: Option<String>,
    /// Sampling fields (`temperature`, `top_p`, `seed`, ...) and tandem's extensions.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl RequestBody for ResponsesRequest {}

/// A Responses request as tandem runs it.
pub struct Prepared {
    pub chat: ChatRequest,
    /// The conversation without the instructions: the previous response's, then this input.
    pub history: Vec<Value>,
    /// The request's settings as the response object reports them.
    pub echo: Map<String, Value>,
    pub store: bool,
}

/// Chat-completions fields that have a Responses name, and that name.
const CHAT_ONLY: [(&str, &str); 8] = [
    ("messages", "use `input`"),
    ("max_tokens", "use `max_output_tokens`"),
    ("max_completion_tokens", "use `max_output_tokens`"),
    ("response_format", "use `text.format`"),
    (
        "stream_options",
        "the stream always ends with `response.completed`",
    ),
    ("n", "a response has one output"),
    (
        "logprobs",
        "log-probabilities are served by /v1/chat/completions",
    ),
    (
        "top_logprobs",
        "log-probabilities are served by /v1/chat/completions",
    ),
];

/// `previous`: the stored conversation of `previous_response_id`, already looked up.
pub fn prepare(req: ResponsesRequest, previous: Vec<Value>) -> Result<Prepared, ApiError> {
    check_unsupported(&req)?;
    let input = match &req.input {
        Some(v) => input_messages(v)?,
        None => Vec::new(),
    };
    if input.is_empty() && previous.is_empty() {
        return Err(ApiError::invalid("input must not be empty", "input"));
    }
    let history: Vec<Value> = previous.into_iter().chain(input).collect();
    let mut messages = Vec::new();
    if let Some(i) = &req.instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    messages.extend(history.iter().cloned());
    let mut chat = req.rest.clone();
    chat.insert("messages".into(), Value::Array(messages));
    insert_some(&mut chat, "model", req.model.clone().map(Value::from));
    insert_some(
        &mut chat,
        "max_tokens",
        req.max_output_tokens.map(Value::from),
    );
    insert_some(&mut chat, "stream", req.stream.map(Value::from));
    insert_some(
        &mut chat,
        "parallel_tool_calls",
        req.parallel_tool_calls.map(Value::from),
    );
    insert_some(
        &mut chat,
        "tools",
        req.tools.as_deref().map(chat_tools).transpose()?,
    );
    let choice = req.tool_choice.as_ref().map(chat_tool_choice).transpose()?;
    insert_some(&mut chat, "tool_choice", choice);
    let format = req
        .text
        .as_ref()
        .map(response_format)
        .transpose()?
        .flatten();
    insert_some(&mut chat, "response_format", format);
    let chat: ChatRequest = from_value(&Value::Object(chat))?;
    Ok(Prepared {
        chat,
        history,
        echo: echo(&req),
        store: req.store.unwrap_or(true),
    })
}

fn check_unsupported(req: &ResponsesRequest) -> Result<(), ApiError> {
    let bad = |msg: String, param: &'static str| Err(ApiError::invalid(msg, param));
    if let Some((field, hint)) = CHAT_ONLY.iter().find(|(f, _)| req.rest.contains_key(*f)) {
        return bad(
            format!("`{field}` is not a Responses API field: {hint}"),
            field,
        );
    }
    if req.rest.contains_key("server_tools") {
        let msg = "server-side tools (`server_tools`) are served by /v1/chat/completions";
        return bad(msg.into(), "server_tools");
    }
    if req.background == Some(true) {
        return bad(
            "background responses are not supported".into(),
            "background",
        );
    }
    if let Some(t) = req.truncation.as_deref().filter(|t| *t != "disabled") {
        let msg = format!("truncation '{t}' is not supported; only 'disabled' (a prompt longer than the context is a 400)");
        return bad(msg, "truncation");
    }
    if let Some(n) = req.max_output_tokens.filter(|n| *n < 1) {
        return bad(
            format!("max_output_tokens must be at least 1, got {n}"),
            "max_output_tokens",
        );
    }
    if req.text.as_ref().is_some_and(|t| !t.is_object()) {
        return bad(
            "text must be an object such as {\"format\": {\"type\": \"text\"}}".into(),
            "text",
        );
    }
    if !req.metadata.as_ref().is_none_or(valid_metadata) {
        let msg = "metadata must be an object of at most 16 string values";
        return bad(msg.into(), "metadata");
    }
    if let Some(i) = req.include.iter().find(|i| i.contains("logprobs")) {
        let msg = format!(
            "include '{i}' is not supported: log-probabilities are served by /v1/chat/completions"
        );
        return bad(msg, "include");
    }
    Ok(())
}

fn valid_metadata(m: &Value) -> bool {
    m.as_object()
        .is_some_and(|o| o.len() <= 16 && o.values().all(Value::is_string))
}

/// `input`: a string (one user message) or a list of items.
fn input_messages(input: &Value) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Value::String(s) => return Ok(vec![json!({"role": "user", "content": s})]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::invalid(
                "input must be a string or a list of items",
                "input",
            ))
        }
    };
    item_messages(items).map_err(|(i, msg)| {
        ApiError::invalid_at(format!("input[{i}]: {msg}"), format!("input[{i}]"))
    })
}

/// Items as chat messages (input items, or a response's output items read back); an error
/// names the index of the item that has no chat form.
pub fn item_messages(items: &[Value]) -> Result<Vec<Value>, (usize, String)> {
    let mut out: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        add_item(&mut out, item).map_err(|msg| (i, msg))?;
    }
    Ok(out)
}

/// Appends one input item as chat messages; consecutive function calls join the assistant
/// message before them, as one turn.
fn add_item(out: &mut Vec<Value>, item: &Value) -> Result<(), String> {
    let kind = item.get("type").and_then(Value::as_str);
    match (kind, item.get("role").and_then(Value::as_str)) {
        (None | Some("message"), Some(role)) => {
            if !["user", "system", "developer", "assistant"].contains(&role) {
                return Err(format!(
                    "role '{role}' is not one of user, system, developer, assistant"
                ));
            }
            let content = text_of(item.get("content").unwrap_or(&Value::Null))?;
            out.push(json!({"role": role, "content": content}));
        }
        (Some("function_call"), _) => {
            let call = function_call(item)?;
            match out.last_mut() {
                Some(m) if m["role"] == "assistant" => push_call(m, call),
                _ => out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]})),
            }
        }
        (Some("function_call_output"), _) => {
            let call_id = str_field(item, "call_id")?;
            let output = text_of(item.get("output").unwrap_or(&Value::Null))?;
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // A reasoning item carries nothing a chat template renders (this server produces none).
        (Some("reasoning"), _) => {}
        (Some(other), _) => {
            return Err(format!("item type '{other}' is not supported; only messages, function_call, function_call_output and reasoning"));
        }
        (None, None) => return Err("an item needs a `type` or a `role`".into()),
    }
    Ok(())
}

fn function_call(item: &Value) -> Result<Value, String> {
    let arguments = item
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("{}");
    Ok(
        json!({"id": str_field(item, "call_id")?, "type": "function",
              "function": {"name": str_field(item, "name")?, "arguments": arguments}}),
    )
}

fn push_call(message: &mut Value, call: Value) {
    match message["tool_calls"].as_array_mut() {
        Some(calls) => calls.push(call),
        None => message["tool_calls"] = json!([call]),
    }
}

fn str_field<'a>(item: &'a Value, key: &str) -> Result<&'a str, String> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` must be a string"))
}

/// Message content or a call's output: a string, or text parts joined.
fn text_of(content: &Value) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts.iter().map(text_part).collect(),
        _ => Err("content must be a string or a list of text parts".into()),
    }
}

fn text_part(part: &Value) -> Result<&str, String> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match (kind, part.get("text").and_then(Value::as_str)) {
        ("input_text" | "output_text" | "text", Some(t)) => Ok(t),
        ("input_text" | "output_text" | "text", None) => {
            Err(format!("a '{kind}' content part needs a string `text`"))
        }
        ("refusal", _) => Ok(part.get("refusal").and_then(Value::as_str).unwrap_or("")),
        _ => Err(format!(
            "content part type '{kind}' is not supported; only text parts"
        )),
    }
}

/// Responses function tools (`{"type": "function", "name", ...}`) as chat tools.
fn chat_tools(tools: &[Value]) -> Result<Value, ApiError> {
    let tools = tools.iter().enumerate().map(|(i, t)| chat_tool(i, t));
    tools.collect::<Result<Vec<_>, _>>().map(Value::Array)
}

fn chat_tool(i: usize, tool: &Value) -> Result<Value, ApiError> {
    let bad = |message: String, param: String| ApiError::invalid_at(message, param);
    match tool.get("type").and_then(Value::as_str) {
        Some("function") if !tool["name"].is_string() => Err(bad(
            format!("tools[{i}].name must be a string"),
            format!("tools[{i}].name"),
        )),
        Some("function") => {
            let mut f = tool.as_object().cloned().unwrap_or_default();
            f.remove("type");
            Ok(json!({"type": "function", "function": f}))
        }
        other => Err(bad(
            format!("tools[{i}]: tool type {other:?} is not supported; only 'function' tools (server-side tools are on /v1/chat/completions)"),
            format!("tools[{i}]"),
        )),
    }
}

/// `tool_choice`: "auto", "none", "required", or `{"type": "function", "name"}`.
fn chat_tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(_) => Ok(choice.clone()),
        _ if choice["type"] == "function" && choice["name"].is_string() => {
            Ok(json!({"type": "function", "function": {"name": choice["name"]}}))
        }
        _ => Err(ApiError::invalid(
            "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}",
            "tool_choice",
        )),
    }
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn response_format(text: &Value) -> Result<Option<Value>, ApiError> {
    let format = &text["format"];
    match format["type"].as_str() {
        None if format.is_null() => Ok(None),
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") if !format["schema"].is_object() => Err(ApiError::invalid(
            "text.format.schema must be a JSON Schema object",
            "text.format.schema",
        )),
        Some("json_schema") => {
            let mut schema = format.as_object().cloned().unwrap_or_default();
            schema.remove("type");
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(ApiError::invalid(
            "text.format.type must be 'text', 'json_object' or 'json_schema'",
            "text.format",
        )),
    }
}

/// The request's settings, with OpenAI's defaults, as the response object repeats them.
fn echo(req: &ResponsesRequest) -> Map<String, Value> {
    let num = |k: &str, default: f64| req.rest.get(k).cloned().unwrap_or(json!(default));
    let v = json!({
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "metadata": req.metadata.clone().unwrap_or(json!({})),
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": req.previous_response_id,
        "reasoning": req.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null})),
        "store": req.store.unwrap_or(true),
        "temperature": num("temperature", 1.0),
        "text": req.text.clone().unwrap_or(json!({"format": {"type": "text"}})),
        "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")),
        "tools": req.tools.clone().unwrap_or_default(),
        "top_p": num("top_p", 1.0),
        "truncation": "disabled",
        "user": req.user,
    });
    v.as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn items_become_chat_messages_with_calls_joined_to_their_turn() {
        let r = req(json!({"instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "checking"}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "summary": []}]}));
        let p = prepare(r, vec![json!({"role": "user", "content": "hi"})]).unwrap();
        let m = &p.chat.messages;
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(m[1]["content"], "hi");
        assert_eq!(m[2], json!({"role": "user", "content": "weather?"}));
        assert_eq!(m[3]["content"], "checking");
        assert_eq!(m[3]["tool_calls"][1]["id"], "c2");
        assert_eq!(m[3]["tool_calls"][0]["function"]["name"], "w");
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
        );
        assert_eq!(m.len(), 5);
        assert_eq!(
            p.history.len(),
            4,
            "instructions are not part of the history"
        );
    }

    #[test]
    fn tools_choice_and_format_take_their_chat_shape() {
        let r = req(
            json!({"input": "x", "max_output_tokens": 7, "temperature": 0.0,
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}}}),
        );
        let p = prepare(r, vec![]).unwrap();
        let c = &p.chat;
        assert_eq!(c.tools.as_ref().unwrap()[0]["function"]["name"], "w");
        assert_eq!(c.tool_choice.as_ref().unwrap()["function"]["name"], "w");
        let f = c.response_format.as_ref().unwrap();
        assert_eq!(f["json_schema"]["name"], "s");
        assert_eq!(c.common.max_tokens, Some(7));
        assert_eq!(c.common.sampling.temperature, Some(0.0));
        assert_eq!(p.echo["temperature"], 0.0);
    }

    #[test]
    fn unsupported_input_is_a_400_naming_it() {
        let bad = [
            (json!({"input": [{"type": "input_image"}]}), "input[0]"),
            (
                json!({"input": [{"role": "tool", "content": "x"}]}),
                "input[0]",
            ),
            (json!({"input": 3}), "input"),
            (json!({"input": "x", "messages": []}), "messages"),
            (
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0]",
            ),
            (
                json!({"input": "x", "tool_choice": {"type": "file_search"}}),
                "tool_choice",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "xml"}}}),
                "text.format",
            ),
            (json!({"input": "x", "background": true}), "background"),
            (
                json!({"input": "x", "server_tools": ["calc"]}),
                "server_tools",
            ),
            (json!({"input": []}), "input"),
            (
                json!({"input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
            (json!({"input": "x", "text": "json"}), "text"),
            (json!({"input": "x", "metadata": [1]}), "metadata"),
            (
                json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
                "input[0]",
            ),
            (
                json!({"input": "x", "tools": [{"type": "function", "name": 5}]}),
                "tools[0].name",
            ),
            (
                json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "s"}}}),
                "text.format.schema",
            ),
        ];
        for (body, param) in bad {
            let e = prepare(req(body.clone()), vec![]).err().unwrap();
            let got = e.body()["error"]["param"].clone();
            assert_eq!(got, param, "{body}");
            assert_eq!(e.status(), 400, "{body}");
        }
    }
}
