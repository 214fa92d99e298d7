//! Server-sent events for streamed completions: one chunk per text piece (carrying its
//! tokens' log-probabilities when asked for), a final chunk with the finish reason, an
//! optional usage chunk, then `data: [DONE]`. An error mid-stream is sent as the endpoint's
//! error chunk before `[DONE]`. The choices of a request with `n` > 1 stream side by side,
//! each chunk with its choice's index, and share one usage chunk. The Responses API uses the
//! same loop with named events and no `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tandem_engine::Usage;

use crate::api::generate::{combined_usage, usage_json, Generation, Piece};
use crate::api::logprobs::TokenLp;
use crate::api::server_calls::ToolResult;
use crate::error::ApiError;

/// What a chunk is made for.
pub enum ChunkOf<'a> {
    Text(&'a str),
    /// Results of server-side tool calls (chat completions only), and whether a new
    /// assistant turn follows.
    ToolResults(&'a [ToolResult], bool),
    /// The finish reason, the generation's token counts and the stop string that ended it.
    Finish(&'a str, &'a Usage, Option<&'a str>),
    /// A failure after the stream started.
    Error(&'a ApiError),
    /// The skeleton of a chunk (for the usage chunk).
    Skeleton,
}

/// Builds the chunks for a piece: usually one, none or several when a tool-call parser
/// holds text back or splits it into deltas.
pub type ChunkFn = Box<dyn FnMut(ChunkOf) -> Vec<Value> + Send>;

/// Makes a chunk's `logprobs` object from the tokens it carries (endpoints differ).
pub type LogprobsFn = Box<dyn FnMut(&[TokenLp]) -> Value + Send>;

/// What a generation's stream yields before it becomes SSE events: a chunk, or (when usage
/// is asked for) the generation's usage at its end.
enum Out {
    Chunk(Value),
    Usage(Usage),
}

enum Phase {
    Running(Box<Generation>),
    Usage(Usage),
    End,
}

struct StreamState {
    phase: Phase,
    /// Chunks made but not sent yet.
    pending: VecDeque<Value>,
    chunk: ChunkFn,
    include_usage: bool,
    /// Log-probabilities of tokens whose chunk has not been made yet, and their format
    /// (`None`: the request did not ask for them).
    logprobs: Vec<TokenLp>,
    logprobs_json: Option<LogprobsFn>,
}

impl StreamState {
    /// Queues a piece's chunks; the first of them carries the log-probabilities of every
    /// token since the last chunk (a tool-call parser may hold text back: those wait).
    fn push_chunks(&mut self, mut chunks: Vec<Value>) {
        if let (Some(first), Some(f)) = (chunks.first_mut(), self.logprobs_json.as_mut()) {
            if !self.logprobs.is_empty() {
                first["choices"][0]["logprobs"] = f(&std::mem::take(&mut self.logprobs));
            }
        }
        self.pending.extend(chunks);
    }

    /// Makes the chunks of the generation's next piece; the phase after it.
    fn on_piece(&mut self, gen: Box<Generation>, piece: Option<Result<Piece, ApiError>>) -> Phase {
        match piece {
            Some(Ok(Piece::Text(t))) => {
                let chunks = (self.chunk)(ChunkOf::Text(&t));
                self.push_chunks(chunks);
            }
            // Not streamed: a streamed request cannot ask to score its prompt.
            Some(Ok(Piece::PromptLogprobs(_))) => {}
            Some(Ok(Piece::Logprobs(lp))) => self.logprobs.push(lp),
            Some(Ok(Piece::ToolResults { results, continues })) => {
                let chunks = (self.chunk)(ChunkOf::ToolResults(&results, continues));
                self.push_chunks(chunks);
            }
            Some(Ok(Piece::Done {
                finish_reason,
                usage,
                stop,
            })) => {
                let chunks = (self.chunk)(ChunkOf::Finish(finish_reason, &usage, stop.as_deref()));
                self.push_chunks(chunks);
                return match self.include_usage {
                    true => Phase::Usage(usage),
                    false => Phase::End,
                };
            }
            Some(Err(e)) => {
                let chunks = (self.chunk)(ChunkOf::Error(&e));
                self.pending.extend(chunks);
                return Phase::End;
            }
            None => return Phase::End,
        }
        Phase::Running(gen)
    }
}

async fn advance(mut s: StreamState) -> Option<(Out, StreamState)> {
    loop {
        if let Some(v) = s.pending.pop_front() {
            return Some((Out::Chunk(v), s));
        }
        match std::mem::replace(&mut s.phase, Phase::End) {
            Phase::Running(mut gen) => {
                let piece = gen.next().await;
                s.phase = s.on_piece(gen, piece);
            }
            Phase::Usage(u) => return Some((Out::Usage(u), s)),
            Phase::End => return None,
        }
    }
}

/// How a generation is streamed: the first chunks (e.g. the role delta), the chunk maker,
/// whether a usage chunk ends the stream, the log-probabilities' format when asked for,
/// whether each event is named after its JSON `type` and whether `[DONE]` ends the stream.
pub struct StreamSpec {
    pub first: Vec<Value>,
    pub chunk: ChunkFn,
    pub include_usage: bool,
    pub logprobs: Option<LogprobsFn>,
    pub named_events: bool,
    pub done_marker: bool,
}

impl StreamSpec {
    /// Chat and text completions: unnamed events, `[DONE]` at the end.
    pub fn completions(first: Option<Value>, chunk: ChunkFn, include_usage: bool) -> Self {
        Self {
            first: first.into_iter().collect(),
            chunk,
            include_usage,
            logprobs: None,
            named_events: false,
            done_marker: true,
        }
    }

    /// The usage chunk's skeleton (a chunk with no choices), when usage is asked for.
    fn usage_skeleton(&mut self) -> Option<Value> {
        if !self.include_usage {
            return None;
        }
        let mut v = (self.chunk)(ChunkOf::Skeleton).pop().unwrap_or_default();
        v["choices"] = Value::Array(vec![]);
        Some(v)
    }
}

/// A generation's chunks (and usage), before they become events.
fn outputs(gen: Generation, spec: StreamSpec) -> impl Stream<Item = Out> {
    let state = StreamState {
        phase: Phase::Running(Box::new(gen)),
        pending: spec.first.into(),
        chunk: spec.chunk,
        include_usage: spec.include_usage,
        logprobs: Vec::new(),
        logprobs_json: spec.logprobs,
    };
    stream::unfold(state, advance)
}

fn event(v: &Value, named: bool) -> Event {
    let e = Event::default().data(v.to_string());
    match v["type"].as_str() {
        Some(name) if named => e.event(name),
        _ => e,
    }
}

fn usage_event(skeleton: Option<&Value>, u: &Usage) -> Event {
    let mut v = skeleton.cloned().unwrap_or_default();
    v["usage"] = usage_json(u);
    event(&v, false)
}

/// The SSE response: the events, then `[DONE]` where the endpoint has one.
fn respond(events: impl Stream<Item = Event> + Send + 'static, done_marker: bool) -> Response {
    let done = done_marker.then(|| Event::default().data("[DONE]"));
    let events = events.chain(stream::iter(done)).map(Ok::<_, Infallible>);
    Sse::new(events).into_response()
}

/// Marks a chunk as choice `i`'s; an event without choices (an error body, a Responses or
/// Messages event) is left as it is.
fn set_choice_index(v: &mut Value, i: usize) {
    set_in_choice(v, "index", i.into());
}

/// A final chunk with vLLM's `stop_reason`: the stop string that ended the choice, or null.
pub fn stop_reason(mut chunk: Value, stop: Option<&str>) -> Value {
    set_in_choice(&mut chunk, "stop_reason", stop.into());
    chunk
}

/// Sets `key` in a chunk's choice; a chunk without choices is left as it is.
fn set_in_choice(v: &mut Value, key: &str, value: Value) {
    if let Some(c) = v.get_mut("choices").and_then(|c| c.get_mut(0)) {
        c[key] = value;
    }
}

/// The SSE response for a generation.
pub fn sse_response(gen: Generation, spec: StreamSpec) -> Response {
    sse_choices(vec![(gen, spec)], 1)
}

/// The SSE response for the choices of one request (`n` to each of its prompts, in prompt
/// order; one for most), each with its own
/// spec (the first one's says whether events are named, usage is sent and `[DONE]` ends the
/// stream): their chunks as they come, each carrying its choice's `index`, then one usage
/// chunk for them all (`combined_usage`) when asked for, then `[DONE]`.
pub fn sse_choices(choices: Vec<(Generation, StreamSpec)>, per_prompt: usize) -> Response {
    let n = choices.len();
    let first = choices.first().map(|(_, s)| s);
    let (named, done, include_usage) = first.map_or((false, true, false), |s| {
        (s.named_events, s.done_marker, s.include_usage)
    });
    let usages = Arc::new(Mutex::new(vec![Usage::default(); n]));
    let mut skeleton = None;
    let mut streams = Vec::with_capacity(n);
    for (i, (gen, mut spec)) in choices.into_iter().enumerate() {
        skeleton = skeleton.or_else(|| spec.usage_skeleton());
        streams.push(outputs(gen, spec).map(move |o| (i, o)).boxed());
    }
    let sink = Arc::clone(&usages);
    let chunks = stream::select_all(streams).filter_map(move |(i, o)| {
        let ev = match o {
            Out::Chunk(mut v) => {
                set_choice_index(&mut v, i);
                Some(event(&v, named))
            }
            Out::Usage(u) => {
                sink.lock().expect("usage lock")[i] = u;
                None
            }
        };
        std::future::ready(ev)
    });
    // Made once every choice has ended (the merged stream is drained first).
    let usage = stream::once(async move {
        let total = combined_usage(&usages.lock().expect("usage lock"), per_prompt);
        usage_event(skeleton.as_ref(), &total)
    });
    let usage = usage.filter(move |_| std::future::ready(include_usage));
    respond(chunks.chain(usage), done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_chunks_with_choices_get_an_index() {
        let mut chunk = json!({"choices": [{"index": 0, "delta": {}}]});
        set_choice_index(&mut chunk, 2);
        assert_eq!(chunk["choices"][0]["index"], 2);
        let body = json!({"error": {"message": "x"}});
        let mut v = body.clone();
        set_choice_index(&mut v, 1);
        assert_eq!(v, body, "no `choices` key is added");
    }
}
