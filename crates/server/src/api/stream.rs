//! Server-sent events for streamed completions: one chunk per text piece (carrying its
//! tokens' log-probabilities when asked for), a final chunk with the finish reason, an
//! optional usage chunk, then `data: [DONE]`. An error mid-stream is sent as the endpoint's
//! error chunk before `[DONE]`. The Responses API uses the same loop with named events and
//! no `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tandem_engine::Usage;

use crate::api::generate::{usage_json, Generation, Piece};
use crate::api::logprobs::TokenLp;
use crate::api::server_calls::ToolResult;
use crate::error::ApiError;

/// What a chunk is made for.
pub enum ChunkOf<'a> {
    Text(&'a str),
    /// Results of server-side tool calls (chat completions only), and whether a new
    /// assistant turn follows.
    ToolResults(&'a [ToolResult], bool),
    /// The finish reason and the generation's token counts.
    Finish(&'a str, &'a Usage),
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

enum Phase {
    Running(Box<Generation>),
    Usage(Usage),
    Done,
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
    named_events: bool,
    done_marker: bool,
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

    fn event(&self, v: &Value) -> Event {
        let e = Event::default().data(v.to_string());
        match v["type"].as_str() {
            Some(name) if self.named_events => e.event(name),
            _ => e,
        }
    }

    /// The end of the stream: `[DONE]` where the endpoint has one.
    fn last(&mut self) -> Option<Event> {
        self.phase = Phase::End;
        self.done_marker.then(|| Event::default().data("[DONE]"))
    }
}

async fn advance(mut s: StreamState) -> Option<(Event, StreamState)> {
    loop {
        if let Some(v) = s.pending.pop_front() {
            return Some((s.event(&v), s));
        }
        match std::mem::replace(&mut s.phase, Phase::End) {
            Phase::Running(mut gen) => match gen.next().await {
                Some(Ok(Piece::Text(t))) => {
                    let chunks = (s.chunk)(ChunkOf::Text(&t));
                    s.push_chunks(chunks);
                    s.phase = Phase::Running(gen);
                }
                // Not streamed: a streamed request cannot ask to score its prompt.
                Some(Ok(Piece::PromptLogprobs(_))) => s.phase = Phase::Running(gen),
                Some(Ok(Piece::Logprobs(lp))) => {
                    s.logprobs.push(lp);
                    s.phase = Phase::Running(gen);
                }
                Some(Ok(Piece::ToolResults { results, continues })) => {
                    let chunks = (s.chunk)(ChunkOf::ToolResults(&results, continues));
                    s.push_chunks(chunks);
                    s.phase = Phase::Running(gen);
                }
                Some(Ok(Piece::Done {
                    finish_reason,
                    usage,
                })) => {
                    let chunks = (s.chunk)(ChunkOf::Finish(finish_reason, &usage));
                    s.push_chunks(chunks);
                    s.phase = if s.include_usage {
                        Phase::Usage(usage)
                    } else {
                        Phase::Done
                    };
                }
                Some(Err(e)) => {
                    let chunks = (s.chunk)(ChunkOf::Error(&e));
                    s.pending.extend(chunks);
                    s.phase = Phase::Done;
                }
                None => return s.last().map(|e| (e, s)),
            },
            Phase::Usage(u) => {
                let mut v = (s.chunk)(ChunkOf::Skeleton).pop().unwrap_or_default();
                v["choices"] = Value::Array(vec![]);
                v["usage"] = usage_json(&u);
                s.phase = Phase::Done;
                return Some((s.event(&v), s));
            }
            Phase::Done => return s.last().map(|e| (e, s)),
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
}

fn events(gen: Generation, spec: StreamSpec) -> impl Stream<Item = Result<Event, Infallible>> {
    let state = StreamState {
        phase: Phase::Running(Box::new(gen)),
        pending: spec.first.into(),
        chunk: spec.chunk,
        include_usage: spec.include_usage,
        logprobs: Vec::new(),
        logprobs_json: spec.logprobs,
        named_events: spec.named_events,
        done_marker: spec.done_marker,
    };
    stream::unfold(state, advance).map(Ok)
}

/// The SSE response for a generation.
pub fn sse_response(gen: Generation, spec: StreamSpec) -> Response {
    Sse::new(events(gen, spec)).into_response()
}
