//! Server-sent events for streamed completions: one chunk per text piece, a final chunk with
//! the finish reason, an optional usage chunk, then `data: [DONE]`. An error mid-stream is
//! sent as an OpenAI error object before `[DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tandem_engine::Usage;

use crate::api::generate::{usage_json, Generation, Piece};
use crate::api::server_calls::ToolResult;

/// What a chunk is made for.
pub enum ChunkOf<'a> {
    Text(&'a str),
    /// Results of server-side tool calls (chat completions only), and whether a new
    /// assistant turn follows.
    ToolResults(&'a [ToolResult], bool),
    Finish(&'a str),
    /// The skeleton of a chunk (for the usage chunk).
    Skeleton,
}

/// Builds the chunks for a piece: usually one, none or several when a tool-call parser
/// holds text back or splits it into deltas.
pub type ChunkFn = Box<dyn FnMut(ChunkOf) -> Vec<Value> + Send>;

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
}

fn json_event(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

async fn advance(mut s: StreamState) -> Option<(Event, StreamState)> {
    loop {
        if let Some(v) = s.pending.pop_front() {
            return Some((json_event(&v), s));
        }
        match std::mem::replace(&mut s.phase, Phase::End) {
            Phase::Running(mut gen) => match gen.next().await {
                Some(Ok(Piece::Text(t))) => {
                    s.pending.extend((s.chunk)(ChunkOf::Text(&t)));
                    s.phase = Phase::Running(gen);
                }
                Some(Ok(Piece::ToolResults { results, continues })) => {
                    s.pending
                        .extend((s.chunk)(ChunkOf::ToolResults(&results, continues)));
                    s.phase = Phase::Running(gen);
                }
                Some(Ok(Piece::Done {
                    finish_reason,
                    usage,
                })) => {
                    s.pending.extend((s.chunk)(ChunkOf::Finish(finish_reason)));
                    s.phase = if s.include_usage {
                        Phase::Usage(usage)
                    } else {
                        Phase::Done
                    };
                }
                Some(Err(e)) => {
                    s.phase = Phase::Done;
                    return Some((json_event(&e.body()), s));
                }
                None => return Some((Event::default().data("[DONE]"), s)), // phase is End
            },
            Phase::Usage(u) => {
                let mut v = (s.chunk)(ChunkOf::Skeleton).pop().unwrap_or_default();
                v["choices"] = Value::Array(vec![]);
                v["usage"] = usage_json(&u);
                s.phase = Phase::Done;
                return Some((json_event(&v), s));
            }
            Phase::Done => return Some((Event::default().data("[DONE]"), s)),
            Phase::End => return None,
        }
    }
}

fn events(
    first: Option<Value>,
    gen: Generation,
    chunk: ChunkFn,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let head = stream::iter(first.map(|v| Ok(json_event(&v))));
    let state = StreamState {
        phase: Phase::Running(Box::new(gen)),
        pending: VecDeque::new(),
        chunk,
        include_usage,
    };
    let body = stream::unfold(state, advance).map(Ok);
    head.chain(body)
}

/// The SSE response for a generation; `first` is sent before any text (e.g. the role delta).
pub fn sse_response(
    first: Option<Value>,
    gen: Generation,
    chunk: ChunkFn,
    include_usage: bool,
) -> Response {
    Sse::new(events(first, gen, chunk, include_usage)).into_response()
}
