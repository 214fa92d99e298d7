//! Streaming a message: the chat deltas of a generation turned into the Messages API's events
//! (`message_start`, `content_block_start`, `content_block_delta` with `text_delta` or
//! `input_json_delta`, `content_block_stop`, `message_delta` with the stop reason and usage,
//! `message_stop`; `error` on a failure).

use serde_json::{json, Value};
use tandem_engine::Usage;

use crate::api::messages::output::{error_json, stop_reason, text_block, usage_json};
use crate::api::reshape::Reshape;
use crate::error::ApiError;

/// The content block being streamed.
#[derive(PartialEq)]
enum Open {
    None,
    Text,
    ToolUse,
}

pub struct EventStream {
    /// Blocks started so far (the open one included).
    blocks: usize,
    open: Open,
    /// Blank text outside a text block (between calls), sent only if more text follows: a
    /// non-streamed message drops it too.
    blank: String,
    finish: String,
}

impl EventStream {
    pub fn new() -> Self {
        Self {
            blocks: 0,
            open: Open::None,
            blank: String::new(),
            finish: "stop".into(),
        }
    }

    /// `message_start`: the message with no content yet; `input_tokens` is the prompt's
    /// length until the end says how much of it came from the cache.
    pub fn start(id: &str, model: &str, prompt_tokens: usize) -> Value {
        let usage = Usage {
            prompt_tokens,
            ..Usage::default()
        };
        let message = super::output::message_json(id, model, Vec::new(), None, &usage);
        json!({"type": "message_start", "message": message})
    }

    fn close(&mut self) -> Vec<Value> {
        if std::mem::replace(&mut self.open, Open::None) == Open::None {
            return Vec::new();
        }
        vec![json!({"type": "content_block_stop", "index": self.blocks - 1})]
    }

    fn begin(&mut self, block: Value, open: Open) -> Vec<Value> {
        let mut out = self.close();
        out.push(
            json!({"type": "content_block_start", "index": self.blocks, "content_block": block}),
        );
        self.blocks += 1;
        self.open = open;
        out
    }

    fn delta(&self, delta: Value) -> Value {
        json!({"type": "content_block_delta", "index": self.blocks - 1, "delta": delta})
    }
}

impl Reshape for EventStream {
    fn text(&mut self, t: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if self.open != Open::Text {
            if t.trim().is_empty() {
                self.blank.push_str(t);
                return out;
            }
            out = self.begin(text_block(""), Open::Text);
        }
        let t = std::mem::take(&mut self.blank) + t;
        out.push(self.delta(json!({"type": "text_delta", "text": t})));
        out
    }

    fn call_delta(&mut self, call: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        let f = &call["function"];
        if let Some(id) = call["id"].as_str() {
            self.blank.clear();
            let name = f["name"].as_str().unwrap_or_default();
            let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
            out = self.begin(block, Open::ToolUse);
        }
        let fragment = f["arguments"].as_str().filter(|a| !a.is_empty());
        if let (Open::ToolUse, Some(fragment)) = (&self.open, fragment) {
            out.push(self.delta(json!({"type": "input_json_delta", "partial_json": fragment})));
        }
        out
    }

    fn finish_reason(&mut self, f: &str) {
        self.finish = f.to_string();
    }

    /// The last events: the open block closed, `message_delta` with the stop reason and the
    /// usage, `message_stop`.
    fn complete(&mut self, usage: &Usage, stop: Option<&str>) -> Vec<Value> {
        let mut out = self.close();
        let delta = json!({"stop_reason": stop_reason(&self.finish, stop), "stop_sequence": stop});
        out.push(json!({"type": "message_delta", "delta": delta, "usage": usage_json(usage)}));
        out.push(json!({"type": "message_stop"}));
        out
    }

    /// A failure after the stream started: the `error` event.
    fn error(&mut self, e: &ApiError) -> Vec<Value> {
        vec![error_json(e)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn kinds(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn text_then_a_call_streams_two_blocks() {
        let mut s = EventStream::new();
        let mut ev = Vec::new();
        ev.extend(s.chat_chunk(&chunk(json!({"content": "Let me check."}), None)));
        ev.extend(s.chat_chunk(&chunk(json!({"content": "\n"}), None)));
        let call = json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                          "function": {"name": "weather", "arguments": ""}}]});
        ev.extend(s.chat_chunk(&chunk(call, None)));
        let args = json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]});
        ev.extend(s.chat_chunk(&chunk(args, None)));
        ev.extend(s.chat_chunk(&chunk(json!({}), Some("tool_calls"))));
        let usage = Usage {
            prompt_tokens: 40,
            completion_tokens: 12,
            cached_tokens: 0,
            appended_tokens: 0,
            ..Usage::default()
        };
        ev.extend(s.complete(&usage, None));
        // The newline goes on in the open text block, as the non-streamed text keeps it.
        assert_eq!(
            kinds(&ev),
            [
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            ev[1]["delta"],
            json!({"type": "text_delta", "text": "Let me check."})
        );
        assert_eq!(ev[4]["index"], 1);
        assert_eq!(ev[4]["content_block"]["name"], "weather");
        assert_eq!(ev[5]["delta"]["partial_json"], "{\"city\": \"Paris\"}");
        assert_eq!(ev[7]["delta"]["stop_reason"], "tool_use");
        assert_eq!(ev[7]["usage"]["output_tokens"], 12);
    }

    #[test]
    fn blank_text_before_a_call_makes_no_block() {
        let mut s = EventStream::new();
        assert!(s
            .chat_chunk(&chunk(json!({"content": "\n"}), None))
            .is_empty());
        let call = json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]});
        let ev = s.chat_chunk(&chunk(call, None));
        assert_eq!(kinds(&ev), ["content_block_start", "content_block_delta"]);
        assert_eq!(ev[0]["index"], 0);
    }
}
