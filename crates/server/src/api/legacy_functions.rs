//! OpenAI's deprecated function calling, served by translation to tools: a request's
//! `functions` and `function_call` become `tools` and `tool_choice` (one call per turn, as
//! that API returns one), earlier turns' `function_call` messages and `role: "function"`
//! results become tool calls and tool messages; the reply's tool call is shown as
//! `message.function_call` (`delta.function_call` when streamed) with
//! `finish_reason: "function_call"`. Older clients and agent code written for that API keep
//! working; the generation itself is the tools path's.

use serde_json::{json, Map, Value};

use crate::api::stream::ChunkFn;
use crate::api::types::ChatRequest;
use crate::error::ApiError;

/// Rewrites a request that uses the function-calling fields into its tools form. Returns
/// whether the reply must be shown in that API's shape (the request sent `functions`).
/// `role: "function"` messages are translated whichever fields the request uses.
pub fn translate(req: &mut ChatRequest) -> Result<bool, ApiError> {
    translate_messages(&mut req.messages)?;
    let functions = req.functions.take().filter(|f| !f.is_null());
    let function_call = req.function_call.take().filter(|c| !c.is_null());
    if let Some(call) = function_call {
        if req.tool_choice.is_some() {
            return Err(both("function_call", "tool_choice"));
        }
        req.tool_choice = Some(tool_choice(&call)?);
    }
    let Some(functions) = functions else {
        return Ok(false);
    };
    if req.tools.is_some() {
        return Err(both("functions", "tools"));
    }
    req.tools = Some(tools(&functions)?);
    req.parallel_tool_calls.get_or_insert(Value::Bool(false));
    Ok(true)
}

fn both(legacy: &'static str, current: &str) -> ApiError {
    let msg = format!("`{legacy}` (the deprecated function calling) and `{current}` cannot be combined: send one of them");
    ApiError::invalid(msg, legacy)
}

/// Each function definition as a tool.
fn tools(functions: &Value) -> Result<Value, ApiError> {
    let list = functions.as_array().ok_or_else(|| {
        ApiError::invalid(
            "`functions` must be a list of function definitions",
            "functions",
        )
    })?;
    let tools = list.iter().enumerate().map(|(i, f)| {
        if f.get("name").and_then(Value::as_str).is_none() {
            let msg = format!("functions[{i}] must be an object with a `name`");
            return Err(ApiError::invalid_at(msg, format!("functions[{i}]")));
        }
        Ok(json!({"type": "function", "function": f}))
    });
    Ok(Value::Array(tools.collect::<Result<_, _>>()?))
}

/// `"none"`, `"auto"` or `{"name": ...}` as the tool choice it means.
fn tool_choice(call: &Value) -> Result<Value, ApiError> {
    match call {
        Value::String(s) if s == "none" || s == "auto" => Ok(call.clone()),
        Value::Object(o) => match o.get("name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
            None => Err(bad_function_call()),
        },
        _ => Err(bad_function_call()),
    }
}

fn bad_function_call() -> ApiError {
    ApiError::invalid(
        "`function_call` must be \"none\", \"auto\" or {\"name\": \"...\"}",
        "function_call",
    )
}

/// An assistant message's `function_call` becomes its one tool call (id `call_fn_{i}`, `i` its
/// message's index); a `role: "function"` message becomes the tool message answering the
/// latest call of that name.
fn translate_messages(messages: &mut [Value]) -> Result<(), ApiError> {
    let mut latest: Map<String, Value> = Map::new();
    for (i, m) in messages.iter_mut().enumerate() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        match obj.get("role").and_then(Value::as_str) {
            Some("assistant") => assistant_call(obj, i, &mut latest)?,
            Some("function") => function_result(obj, i, &latest)?,
            _ => {}
        }
    }
    Ok(())
}

fn assistant_call(
    obj: &mut Map<String, Value>,
    i: usize,
    latest: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(call) = obj.remove("function_call").filter(|c| !c.is_null()) else {
        return Ok(());
    };
    let name = call.get("name").and_then(Value::as_str);
    let (Some(name), true) = (name, obj.get("tool_calls").is_none()) else {
        let msg = "an assistant message's `function_call` must have a `name`, and no `tool_calls` beside it";
        return Err(ApiError::invalid_at(
            msg,
            format!("messages[{i}].function_call"),
        ));
    };
    let id = Value::String(format!("call_fn_{i}"));
    let arguments = call.get("arguments").cloned().unwrap_or(json!("{}"));
    let function = json!({"name": name, "arguments": arguments});
    obj.insert(
        "tool_calls".into(),
        json!([{"id": id, "type": "function", "function": function}]),
    );
    latest.insert(name.to_string(), id);
    Ok(())
}

fn function_result(
    obj: &mut Map<String, Value>,
    i: usize,
    latest: &Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(name) = obj.get("name").and_then(Value::as_str) else {
        let msg = "a `function` message must name the function whose result it holds";
        return Err(ApiError::invalid_at(msg, format!("messages[{i}].name")));
    };
    let id = (latest.get(name).cloned()).unwrap_or_else(|| json!(format!("call_fn_{i}")));
    obj.insert("role".into(), json!("tool"));
    obj.insert("tool_call_id".into(), id);
    Ok(())
}

/// A non-streamed choice in the function-calling shape.
pub fn reply(choice: &mut Value) {
    call_as_function(&mut choice["message"]);
    rename_finish(choice);
}

/// A stream's chunks in the function-calling shape: a tool-call delta becomes a
/// `function_call` delta (its name first, then pieces of its arguments).
pub fn chunks(mut inner: ChunkFn) -> ChunkFn {
    Box::new(move |of| {
        let mut out = inner(of);
        for chunk in &mut out {
            let choices = chunk.get_mut("choices").and_then(Value::as_array_mut);
            for choice in choices.into_iter().flatten() {
                delta(choice);
            }
        }
        out
    })
}

fn delta(choice: &mut Value) {
    call_as_function(&mut choice["delta"]);
    rename_finish(choice);
}

/// A message's (or delta's) `tool_calls` replaced by its first call's `function`, as
/// `function_call` (the request allowed one call).
fn call_as_function(message: &mut Value) {
    let first = message
        .as_object_mut()
        .and_then(|m| m.remove("tool_calls"))
        .and_then(|calls| calls.get(0).cloned());
    if let Some(call) = first {
        message["function_call"] = call["function"].clone();
    }
}

fn rename_finish(choice: &mut Value) {
    if choice["finish_reason"] == "tool_calls" {
        choice["finish_reason"] = json!("function_call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).expect("a chat request")
    }

    #[test]
    fn functions_become_tools_with_one_call() {
        let mut req = request(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"},
        }));
        assert!(translate(&mut req).unwrap());
        assert_eq!(req.tools.unwrap()[0]["function"]["name"], "f");
        assert_eq!(req.tool_choice.unwrap()["function"]["name"], "f");
        assert_eq!(req.parallel_tool_calls, Some(json!(false)));
        assert!(req.functions.is_none() && req.function_call.is_none());
    }

    #[test]
    fn a_call_and_its_result_become_a_tool_call_and_tool_message() {
        let mut req = request(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null,
             "function_call": {"name": "w", "arguments": "{\"c\": 1}"}},
            {"role": "function", "name": "w", "content": "sunny"},
        ]}));
        assert!(
            !translate(&mut req).unwrap(),
            "no functions: the reply keeps the tools shape"
        );
        let call = &req.messages[1]["tool_calls"][0];
        assert_eq!(
            call["function"],
            json!({"name": "w", "arguments": "{\"c\": 1}"})
        );
        assert!(req.messages[1].get("function_call").is_none());
        assert_eq!(req.messages[2]["role"], "tool");
        assert_eq!(req.messages[2]["tool_call_id"], call["id"]);
    }

    #[test]
    fn mixing_the_apis_or_bad_fields_is_refused() {
        let cases = [
            (
                json!({"functions": [{"name": "f"}], "tools": []}),
                "functions",
            ),
            (
                json!({"function_call": "auto", "tool_choice": "auto"}),
                "function_call",
            ),
            (json!({"function_call": "required"}), "function_call"),
            (json!({"functions": [{"parameters": {}}]}), "functions[0]"),
            (json!({"functions": {"name": "f"}}), "functions"),
        ];
        for (fields, param) in cases {
            let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
            body.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            let err = translate(&mut request(body)).unwrap_err();
            assert_eq!(err.param(), Some(param), "{err}");
        }
        let mut nameless = request(json!({"messages": [{"role": "function", "content": "x"}]}));
        let err = translate(&mut nameless).unwrap_err();
        assert_eq!(err.param(), Some("messages[0].name"));
    }

    #[test]
    fn the_reply_shows_the_call_as_a_function_call() {
        let call = json!({"id": "c", "type": "function",
                          "function": {"name": "f", "arguments": "{}"}});
        let mut choice = json!({"message": {"role": "assistant", "content": null,
                                            "tool_calls": [call]},
                                "finish_reason": "tool_calls"});
        reply(&mut choice);
        assert_eq!(choice["message"]["function_call"]["name"], "f");
        assert!(choice["message"].get("tool_calls").is_none());
        assert_eq!(choice["finish_reason"], "function_call");
        let mut text = json!({"message": {"content": "hi"}, "finish_reason": "stop"});
        reply(&mut text);
        assert_eq!(text["finish_reason"], "stop");
        assert!(text["message"].get("function_call").is_none());
    }

    #[test]
    fn streamed_call_deltas_become_function_call_deltas() {
        let mut first = json!({"delta": {"tool_calls": [{"index": 0, "id": "c",
            "type": "function", "function": {"name": "f", "arguments": ""}}]},
            "finish_reason": null});
        delta(&mut first);
        assert_eq!(
            first["delta"]["function_call"],
            json!({"name": "f", "arguments": ""})
        );
        assert!(first["delta"].get("tool_calls").is_none());
        let mut last = json!({"delta": {}, "finish_reason": "tool_calls"});
        delta(&mut last);
        assert_eq!(last["finish_reason"], "function_call");
    }
}
