//! Anthropic's Messages API: `POST /v1/messages` (streamed or not) and
//! `POST /v1/messages/count_tokens`, for clients built on the `anthropic` SDK and agents that
//! speak it. A request is turned into a chat request (input.rs) and run by the chat
//! completions machinery, so templates, tool-call parsing, constrained decoding and KV reuse
//! are the same (a follow-up turn reuses the conversation's KV); its output is reshaped into
//! content blocks (output.rs) or the Messages events (events.rs). Errors have Anthropic's
//! shape.

pub mod events;
pub mod input;
pub mod output;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api::body::parse_json;
use crate::api::chat::{self, random_id, ChatRun};
use crate::api::generate::Collected;
use crate::api::stream::{sse_response, ChunkFn, ChunkOf, StreamSpec};
use crate::state::AppState;
use events::EventStream;
use input::MessagesRequest;
use output::{content_blocks, message_json, stop_reason, MessagesError};

pub async fn create(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, MessagesError> {
    let req: MessagesRequest = parse_json(body, st.body_limit)?;
    let run = chat::start(st.clone(), &input::chat_request(&req, false)?)?;
    let id = format!("msg_{}", random_id());
    let model = st.served_name.clone();
    if run.params.stream {
        return Ok(stream(run, &id, &model));
    }
    let Collected {
        turns,
        finish,
        usage,
        ..
    } = run.gen.collect_turns().await?;
    let (message, _) = chat::final_message(run.parser, &run.ids, turns);
    let finish = chat::turn_finish(finish, message.get("tool_calls").is_some());
    let content = content_blocks(&message);
    let body = message_json(&id, &model, content, Some(stop_reason(finish)), &usage);
    Ok(Json(body).into_response())
}

/// The event stream of a message: chat deltas made by the chat chunk maker, reshaped.
fn stream(run: ChatRun, id: &str, model: &str) -> Response {
    let mut chat = chat::chunk_fn(String::new(), String::new(), 0, run.parser, run.ids);
    let mut ev = EventStream::new();
    let first = vec![EventStream::start(id, model, run.gen.prompt_tokens())];
    let chunk: ChunkFn = Box::new(move |of| match of {
        ChunkOf::Error(e) => ev.error(e),
        ChunkOf::Finish(f, usage) => {
            let chunks = chat(ChunkOf::Finish(f, usage));
            let mut out: Vec<Value> = chunks.iter().flat_map(|c| ev.chat_chunk(c)).collect();
            out.extend(ev.complete(usage));
            out
        }
        of => chat(of).iter().flat_map(|c| ev.chat_chunk(c)).collect(),
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

/// `POST /v1/messages/count_tokens`: the prompt's length as the model's template renders it.
pub async fn count_tokens(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, MessagesError> {
    let req: MessagesRequest = parse_json(body, st.body_limit)?;
    let n = chat::prompt_len(&st, &input::chat_request(&req, true)?)?;
    Ok(Json(json!({"input_tokens": n})))
}
