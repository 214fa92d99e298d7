//! Server-sent events for streamed completions: one chunk per text piece, a final chunk with
//! the finish reason, an optional usage chunk, then `data: [DONE]`. An error mid-stream is
//! sent as an OpenAI error object before `[DONE]`.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tandem_engine::Usage;

use crate::api::generate::{usage_json, Generation, Piece};

/// Builds the JSON of one chunk from its text (or none) and finish reason (or none).
pub type ChunkFn = Box<dyn Fn(Option<&str>, Option<&str>) -> Value + Send>;

enum Phase {
    Running(Generation),
    Usage(Usage),
    Done,
    End,
}

struct StreamState {
    phase: Phase,
    chunk: ChunkFn,
    include_usage: bool,
}

fn json_event(v: &Value) -> Event {
    Event::default().data(v.to_string())
}

async fn advance(mut s: StreamState) -> Option<(Event, StreamState)> {
    match std::mem::replace(&mut s.phase, Phase::End) {
        Phase::Running(mut gen) => match gen.next().await {
            Some(Ok(Piece::Text(t))) => {
                let ev = json_event(&(s.chunk)(Some(&t), None));
                s.phase = Phase::Running(gen);
                Some((ev, s))
            }
            Some(Ok(Piece::Done {
                finish_reason,
                usage,
            })) => {
                let ev = json_event(&(s.chunk)(None, Some(finish_reason)));
                s.phase = if s.include_usage {
                    Phase::Usage(usage)
                } else {
                    Phase::Done
                };
                Some((ev, s))
            }
            Some(Err(e)) => {
                s.phase = Phase::Done;
                Some((json_event(&e.body()), s))
            }
            None => Some((Event::default().data("[DONE]"), s)), // phase is already End
        },
        Phase::Usage(u) => {
            let mut v = (s.chunk)(None, None);
            v["choices"] = Value::Array(vec![]);
            v["usage"] = usage_json(&u);
            s.phase = Phase::Done;
            Some((json_event(&v), s))
        }
        Phase::Done => Some((Event::default().data("[DONE]"), s)),
        Phase::End => None,
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
        phase: Phase::Running(gen),
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
