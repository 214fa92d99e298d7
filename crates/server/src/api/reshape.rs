//! Streaming a chat generation in another API's event shapes (the Responses API, Anthropic's
//! Messages API): the chat chunk maker makes the deltas (text, tool-call deltas, the finish
//! reason) and a [`Reshape`] turns each into that API's events, closing with its last events.

use axum::response::Response;
use serde_json::Value;
use tandem_engine::Usage;

use crate::api::chat::{self, ChatRun};
use crate::api::stream::{sse_response, ChunkFn, ChunkOf, StreamSpec};
use crate::error::ApiError;

/// An API's events for the parts of a chat generation.
pub trait Reshape: Send + 'static {
    /// A piece of the reply's text.
    fn text(&mut self, t: &str) -> Vec<Value>;
    /// A chat tool-call delta (the first of a call carries its `id` and name).
    fn call_delta(&mut self, call: &Value) -> Vec<Value>;
    /// The chat finish reason, when the last chunk says it.
    fn finish_reason(&mut self, f: &str);
    /// The last events, with the generation's usage and the stop string that ended it.
    fn complete(&mut self, usage: &Usage, stop: Option<&str>) -> Vec<Value>;
    /// The events for a failure after the stream started.
    fn error(&mut self, e: &ApiError) -> Vec<Value>;

    /// The events for one chat completion chunk: its text, its tool-call deltas, and its
    /// finish reason.
    fn chat_chunk(&mut self, chunk: &Value) -> Vec<Value> {
        let choice = &chunk["choices"][0];
        let mut out = Vec::new();
        if let Some(t) = choice["delta"]["content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            out.extend(self.text(t));
        }
        let calls = choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten();
        for call in calls {
            out.extend(self.call_delta(call));
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish_reason(f);
        }
        out
    }
}

/// The SSE response of a chat run in `r`'s shapes, `first` sent before anything else; events
/// are named after their `type` and there is no `[DONE]`.
pub fn stream(run: ChatRun, first: Vec<Value>, mut r: impl Reshape) -> Response {
    let mut chat = chat::chunk_fn(String::new(), String::new(), 0, run.parser, run.ids);
    let chunk: ChunkFn = Box::new(move |of| match of {
        ChunkOf::Error(e) => r.error(e),
        ChunkOf::Finish(f, usage, stop) => {
            let chunks = chat(ChunkOf::Finish(f, usage, stop));
            let mut out: Vec<Value> = chunks.iter().flat_map(|c| r.chat_chunk(c)).collect();
            out.extend(r.complete(usage, stop));
            out
        }
        of => chat(of).iter().flat_map(|c| r.chat_chunk(c)).collect(),
    });
    let spec = StreamSpec {
        first,
        chunk,
        include_usage: false,
        logprobs: None,
        named_events: true,
        done_marker: false,
    };
    sse_response(run.gen, spec)
}
