//! Streaming a response: the chat deltas of a generation turned into the Responses API's
//! semantic events (`response.created`, `response.output_item.added`,
//! `response.output_text.delta`, `response.function_call_arguments.delta`, ...,
//! `response.completed`), each numbered by `sequence_number`. At the end the response is
//! stored like a non-streamed one.

use serde_json::{json, Value};
use tandem_engine::Usage;

use crate::api::reshape::Reshape;
use crate::api::responses::output::{
    call_item, call_status, history_messages, item_id, message_item, response_json, text_part,
    Shell,
};
use crate::api::responses::store::StoreTo;
use crate::error::ApiError;

/// The output item being streamed.
enum Open {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        args: String,
    },
}

pub struct EventStream {
    shell: Shell,
    seq: u64,
    /// Output items finished so far.
    items: Vec<Value>,
    open: Option<Open>,
    /// Blank text outside a message (between calls), sent only if more text follows: a
    /// non-streamed response drops it too.
    blank: String,
    finish: String,
    /// Where the finished response goes, with the conversation before its output.
    store: Option<StoreTo>,
}

impl EventStream {
    pub fn new(shell: Shell, store: Option<StoreTo>) -> Self {
        Self {
            shell,
            seq: 0,
            items: Vec::new(),
            open: None,
            blank: String::new(),
            finish: "stop".into(),
            store,
        }
    }

    fn event(&mut self, kind: &str, mut body: Value) -> Value {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.seq);
        self.seq += 1;
        body
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let r = response_json(&self.shell, &[], None);
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    /// Finishes the open item: its `.done` events, then `response.output_item.done`.
    fn close(&mut self) -> Vec<Value> {
        let index = self.items.len();
        let (mut out, item) = match self.open.take() {
            None => return Vec::new(),
            Some(Open::Text { id, text }) => {
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                let mut part = at;
                part["part"] = text_part(&text);
                let out = vec![
                    self.event("response.output_text.done", done),
                    self.event("response.content_part.done", part),
                ];
                (out, message_item(&id, Some(&text), "completed"))
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                args,
            }) => {
                let body =
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": args});
                let out = vec![self.event("response.function_call_arguments.done", body)];
                let status = call_status(&self.finish, &args);
                (out, call_item(&id, &call_id, &name, &args, status))
            }
        };
        let body = json!({"output_index": index, "item": item});
        out.push(self.event("response.output_item.done", body));
        self.items.push(item);
        out
    }
}

impl Reshape for EventStream {
    fn text(&mut self, t: &str) -> Vec<Value> {
        let mut out = Vec::new();
        if !matches!(self.open, Some(Open::Text { .. })) {
            if t.trim().is_empty() {
                self.blank.push_str(t);
                return out;
            }
            out.extend(self.close());
            let id = item_id("msg");
            let index = self.items.len();
            let item = message_item(&id, None, "in_progress");
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
            let part = json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")});
            out.push(self.event("response.content_part.added", part));
            self.open = Some(Open::Text {
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Text { id, text }) = &mut self.open {
            let t = std::mem::take(&mut self.blank) + t;
            text.push_str(&t);
            let body = json!({"item_id": id, "output_index": self.items.len(), "content_index": 0,
                              "delta": t, "logprobs": []});
            out.push(self.event("response.output_text.delta", body));
        }
        out
    }

    fn call_delta(&mut self, call: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        let f = &call["function"];
        if let Some(call_id) = call["id"].as_str() {
            self.blank.clear();
            out.extend(self.close());
            let (id, name) = (item_id("fc"), f["name"].as_str().unwrap_or_default());
            let item = call_item(&id, call_id, name, "", "in_progress");
            let body = json!({"output_index": self.items.len(), "item": item});
            out.push(self.event("response.output_item.added", body));
            let (call_id, name, args) = (call_id.into(), name.into(), String::new());
            self.open = Some(Open::Call {
                id,
                call_id,
                name,
                args,
            });
        }
        let fragment = f["arguments"].as_str().filter(|a| !a.is_empty());
        if let (Some(Open::Call { id, args, .. }), Some(fragment)) = (&mut self.open, fragment) {
            args.push_str(fragment);
            let body = json!({"item_id": id, "output_index": self.items.len(), "delta": fragment});
            out.push(self.event("response.function_call_arguments.delta", body));
        }
        out
    }

    fn finish_reason(&mut self, f: &str) {
        self.finish = f.to_string();
    }

    /// The last events: the open item closed, then `response.completed` (or
    /// `response.incomplete` when `max_output_tokens` cut it); the response is stored.
    fn complete(&mut self, usage: &Usage, _stop: Option<&str>) -> Vec<Value> {
        let mut out = self.close();
        let r = response_json(&self.shell, &self.items, Some((&self.finish, usage)));
        if let Some(to) = self.store.take() {
            to.save(
                self.shell.id.clone(),
                r.clone(),
                history_messages(&self.items),
            );
        }
        let kind = match r["status"].as_str() {
            Some("incomplete") => "response.incomplete",
            _ => "response.completed",
        };
        out.push(self.event(kind, json!({"response": r})));
        out
    }

    /// A failure mid-stream: an `error` event, then `response.failed`.
    fn error(&mut self, e: &ApiError) -> Vec<Value> {
        let body = e.body()["error"].clone();
        let err = json!({"code": body["code"], "message": body["message"], "param": body["param"]});
        let mut r = response_json(&self.shell, &self.items, None);
        r["status"] = json!("failed");
        r["error"] = json!({"code": body["code"].as_str().unwrap_or("server_error"), "message": body["message"]});
        vec![
            self.event("error", err),
            self.event("response.failed", json!({"response": r})),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::responses::store::ResponseStore;
    use serde_json::Map;
    use std::sync::Arc;

    fn stream() -> EventStream {
        let shell = Shell {
            id: "resp_1".into(),
            created_at: 0,
            model: "m".into(),
            echo: Map::new(),
        };
        EventStream::new(shell, None)
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn text_then_a_call_stream_as_two_items_in_order() {
        let mut s = stream();
        let mut ev = s.start();
        ev.extend(s.chat_chunk(&chunk(json!({"content": "Let me"}), None)));
        ev.extend(s.chat_chunk(&chunk(json!({"content": " check."}), None)));
        let start = json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                           "function": {"name": "w", "arguments": ""}}]});
        ev.extend(s.chat_chunk(&chunk(start, None)));
        let args = json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]});
        ev.extend(s.chat_chunk(&chunk(args, None)));
        ev.extend(s.chat_chunk(&chunk(json!({}), Some("tool_calls"))));
        ev.extend(s.complete(&Usage::default(), None));
        assert_eq!(
            kinds(&ev),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = ev
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..ev.len() as u64).collect::<Vec<_>>());
        let done = &ev.last().unwrap()["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Let me check.");
        assert_eq!(done["output"][1]["call_id"], "call_a");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(ev[10]["output_index"], 1);
    }

    #[test]
    fn a_call_cut_by_the_token_limit_ends_incomplete() {
        let mut s = stream();
        let call = json!({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                          "function": {"name": "w", "arguments": "{\"q\": \"pa"}}]});
        s.chat_chunk(&chunk(call, None));
        s.chat_chunk(&chunk(json!({}), Some("length")));
        let ev = s.complete(&Usage::default(), None);
        let item_done = &ev[ev.len() - 2];
        assert_eq!(item_done["type"], "response.output_item.done");
        assert_eq!(item_done["item"]["status"], "incomplete");
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn blank_text_between_calls_makes_no_message() {
        let mut s = stream();
        let call = |i: usize| {
            json!({"tool_calls": [{"index": i, "id": format!("c{i}"),
            "function": {"name": "w", "arguments": "{}"}}]})
        };
        s.chat_chunk(&chunk(call(0), None));
        s.chat_chunk(&chunk(json!({"content": "\n"}), None));
        s.chat_chunk(&chunk(call(1), None));
        s.chat_chunk(&chunk(json!({"content": "\n"}), None));
        let ev = s.complete(&Usage::default(), None);
        let out = &ev.last().unwrap()["response"]["output"];
        let types: Vec<&str> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["function_call", "function_call"]);
        let mut s = stream();
        s.chat_chunk(&chunk(json!({"content": "\n"}), None));
        s.chat_chunk(&chunk(json!({"content": "Hi"}), None));
        let ev = s.complete(&Usage::default(), None);
        assert_eq!(
            ev.last().unwrap()["response"]["output"][0]["content"][0]["text"],
            "\nHi"
        );
    }

    #[test]
    fn a_failure_mid_stream_sends_an_error_then_a_failed_response() {
        let mut s = stream();
        s.start();
        s.chat_chunk(&chunk(json!({"content": "Hi"}), None));
        let ev = s.error(&ApiError::Internal("engine stopped".into()));
        assert_eq!(kinds(&ev), ["error", "response.failed"]);
        assert_eq!(ev[0]["message"], "engine stopped");
        assert_eq!(ev[1]["response"]["status"], "failed");
        assert_eq!(ev[1]["sequence_number"], 6);
    }

    #[test]
    fn a_cut_generation_ends_incomplete_and_is_stored() {
        let store = Arc::new(ResponseStore::new(4));
        let shell = Shell {
            id: "resp_2".into(),
            created_at: 0,
            model: "m".into(),
            echo: Map::new(),
        };
        let history = vec![json!({"role": "user", "content": "hi"})];
        let to = StoreTo {
            store: store.clone(),
            history,
        };
        let mut s = EventStream::new(shell, Some(to));
        s.chat_chunk(&chunk(json!({"content": "Hel"}), None));
        s.chat_chunk(&chunk(json!({}), Some("length")));
        let ev = s.complete(&Usage::default(), None);
        assert_eq!(ev.last().unwrap()["type"], "response.incomplete");
        let stored = store.get("resp_2").unwrap();
        assert_eq!(
            stored.history[1],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(stored.response["status"], "incomplete");
    }
}
