//! Tools in the prompt. A chat template that knows tools gets them (and the history's tool
//! calls, with arguments as objects, as Hugging Face templates expect). For a template that
//! does not (SmolLM2's), tandem writes the tool definitions into the system message in the
//! selected parser's format, the history's calls as that format's text, and tool results as
//! `<tool_response>` blocks in a user turn (left to the template when no tools are shown and
//! it writes a `tool` turn).

use serde_json::{json, Value};

use crate::defs::ToolDef;
use crate::grammar::grammar_json;
use crate::parser::ParserKind;

/// Whether a chat template renders `tools` itself.
pub fn template_supports_tools(template: &str) -> bool {
    template.contains("tools")
}

/// How a call is written in each format (the example in the instructions, and history);
/// `args` is the arguments' JSON text.
fn call_text(kind: ParserKind, name: &str, args: &str) -> String {
    // Written by hand: `name` first, as the grammar generates it (a `Value` sorts its keys).
    let key = if kind == ParserKind::Llama3 {
        "parameters"
    } else {
        "arguments"
    };
    let object = format!("{{\"name\": {}, \"{key}\": {args}}}", json!(name));
    match kind {
        ParserKind::Hermes => format!("<tool_call>\n{object}\n</tool_call>"),
        ParserKind::Llama3 => object,
        ParserKind::Mistral => format!("[TOOL_CALLS][{object}]"),
    }
}

/// How a chat template without tool support writes a `tool` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultTurns {
    /// As a turn of its own (ChatML templates such as SmolLM2's write any role).
    Tool,
    /// Not as a turn of its own: it refuses the role (Gemma's) or writes it as a user turn.
    Wrapped,
}

/// The system-prompt section that describes the tools and the call format.
pub fn tools_prompt(kind: ParserKind, tools: &[ToolDef]) -> String {
    let defs: Vec<String> = tools.iter().map(|t| t.to_json().to_string()).collect();
    let example = call_text(
        kind,
        "function_name",
        &grammar_json(&json!({"argument": "value"})),
    );
    format!(
        "# Tools\n\nYou may call one or more of these functions to answer. Their definitions, \
         with JSON Schema parameters, are inside <tools></tools>:\n<tools>\n{}\n</tools>\n\n\
         To call a function, write its name and arguments like this:\n{example}\n\
         Function results come back inside <tool_response></tool_response>.",
        defs.join("\n")
    )
}

/// Messages for a template without tool support: tool definitions in the system message,
/// calls in the history as text. Tool results are `<tool_response>` blocks in a user turn
/// when the tools are shown (as the tools section says) or the template has no tool turn
/// (`results`); else they stay `tool` messages for the template to write, as llama-server
/// and vLLM write them (the wrapping would cost about 12 tokens a result).
pub fn inline_tools(
    kind: ParserKind,
    messages: &[Value],
    tools: &[ToolDef],
    results: ResultTurns,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let section = tools_prompt(kind, tools);
        match messages.first() {
            Some(m) if m["role"] == "system" => {
                let text = format!("{}\n\n{section}", m["content"].as_str().unwrap_or_default());
                out.push(json!({"role": "system", "content": text}));
            }
            _ => out.push(json!({"role": "system", "content": section})),
        }
    }
    let skip =
        usize::from(!out.is_empty() && messages.first().is_some_and(|m| m["role"] == "system"));
    let wrap = !tools.is_empty() || results == ResultTurns::Wrapped;
    for m in &messages[skip..] {
        match m["role"].as_str() {
            Some("assistant") => out.push(assistant_text(kind, m)),
            Some("tool") if wrap => push_tool_result(&mut out, m),
            _ => out.push(m.clone()),
        }
    }
    out
}

fn assistant_text(kind: ParserKind, m: &Value) -> Value {
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = m["content"].as_str().filter(|c| !c.is_empty()) {
        parts.push(c.to_string());
    }
    let calls = m["tool_calls"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let texts: Vec<String> = calls
        .iter()
        .map(|c| {
            call_text(
                kind,
                c["function"]["name"].as_str().unwrap_or_default(),
                &arguments_text(c),
            )
        })
        .collect();
    match kind {
        ParserKind::Llama3 if !texts.is_empty() => parts.push(texts.join("; ")),
        _ => parts.extend(texts),
    }
    json!({"role": "assistant", "content": parts.join("\n")})
}

/// A call's arguments as the history writes them. The text the client sent back, when it
/// is JSON, is kept as it is: it is what the model wrote, so the rendered history
/// stays a token prefix of the conversation's cached KV (re-serializing it, even only its
/// spacing, would cut the cache match in the middle of the call). Anything else is written
/// as the grammars write JSON.
fn arguments_text(call: &Value) -> String {
    match &call["function"]["arguments"] {
        Value::String(s) if serde_json::from_str::<Value>(s).is_ok() => s.trim().to_string(),
        _ => grammar_json(&arguments(call)),
    }
}

/// A call's arguments as a JSON value (OpenAI sends them as a JSON string).
fn arguments(call: &Value) -> Value {
    match &call["function"]["arguments"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        v => v.clone(),
    }
}

/// Tool results become `<tool_response>` blocks of a user turn (consecutive ones merged).
fn push_tool_result(out: &mut Vec<Value>, m: &Value) {
    let block = format!(
        "<tool_response>\n{}\n</tool_response>",
        m["content"].as_str().unwrap_or_default()
    );
    if let Some(last) = out.last_mut() {
        if last["tool_results"] == json!(true) {
            let text = format!("{}\n{block}", last["content"].as_str().unwrap_or_default());
            last["content"] = json!(text);
            return;
        }
    }
    out.push(json!({"role": "user", "content": block, "tool_results": true}));
}

/// Messages for a template with tool support: call arguments as objects.
pub fn template_messages(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                for c in calls.iter_mut() {
                    let args = arguments(c);
                    c["function"]["arguments"] = args;
                }
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_written_in_the_parser_format() {
        let tools = vec![ToolDef {
            name: "w".into(),
            description: Some("weather".into()),
            parameters: json!({"type": "object"}),
        }];
        let msgs = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Paris?"}),
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}),
            json!({"role": "tool", "tool_call_id": "c2", "content": "warm"}),
        ];
        let out = inline_tools(ParserKind::Hermes, &msgs, &tools, ResultTurns::Wrapped);
        assert_eq!(out.len(), 4);
        let sys = out[0]["content"].as_str().unwrap();
        assert!(sys.starts_with("Be brief.\n\n# Tools") && sys.contains("\"name\":\"w\""));
        assert!(sys.contains("<tool_response>"));
        assert_eq!(
            out[2]["content"],
            "<tool_call>\n{\"name\": \"w\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
        );
        let results = out[3]["content"].as_str().unwrap();
        assert!(results.contains("sunny") && results.contains("warm") && out[3]["role"] == "user");
        let shown = inline_tools(ParserKind::Hermes, &msgs, &tools, ResultTurns::Tool);
        assert_eq!(
            shown, out,
            "with tools shown, results are as the tools section says"
        );
        let native = inline_tools(ParserKind::Hermes, &msgs, &[], ResultTurns::Tool);
        assert_eq!(native.len(), 5, "one tool turn per result");
        assert_eq!(native[3], msgs[3]);
        assert_eq!(native[4], msgs[4]);
        let wrapped = inline_tools(ParserKind::Hermes, &msgs, &[], ResultTurns::Wrapped);
        assert_eq!(wrapped[3]["role"], "user");
        let t = template_messages(&msgs);
        assert_eq!(
            t[2]["tool_calls"][0]["function"]["arguments"]["city"],
            "Paris"
        );
    }

    #[test]
    fn history_keeps_the_arguments_text_the_client_sent_back() {
        let call = |args: Value| json!({"function": {"name": "w", "arguments": args}});
        let sent = "{\"city\":  \"Paris\" }";
        assert_eq!(arguments_text(&call(json!(sent))), sent.trim());
        let object = json!({"city": "Paris", "days": [1, 2]});
        assert_eq!(
            arguments_text(&call(object)),
            "{\"city\": \"Paris\", \"days\": [1, 2]}",
            "an object is written as the grammars write JSON"
        );
        assert_eq!(
            arguments_text(&call(json!("{\"city\": \"Par"))),
            "\"{\\\"city\\\": \\\"Par\""
        );
    }
}
