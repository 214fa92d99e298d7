//! OpenAI's Responses API: `POST /v1/responses` (streamed or not), `GET` and
//! `DELETE /v1/responses/{id}`. A request is turned into a chat request (input.rs) and run by
//! the chat completions machinery, so templates, tool-call parsing, constrained decoding and
//! KV reuse are the same; its output is reshaped into items (output.rs) or semantic events
//! (events.rs). Responses are stored (store.rs) so that `previous_response_id` continues a
//! conversation: the follow-up's prompt extends the stored one token for token, and the
//! engine resumes from the KV it retained for it instead of prefilling it again.

pub mod events;
pub mod input;
pub mod output;
pub mod store;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::api::body::parse_json;
use crate::api::chat::{self, unix_now, ChatRun};
use crate::api::generate::Collected;
use crate::api::stream::{sse_response, ChunkFn, ChunkOf, StreamSpec};
use crate::error::ApiError;
use crate::state::AppState;
use events::EventStream;
use input::ResponsesRequest;
use output::{history_messages, item_id, output_items, response_json, Shell};
use store::StoreTo;

pub async fn create(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ResponsesRequest = parse_json(body, st.body_limit)?;
    let previous = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => match st.responses.get(id) {
            Some(s) => s.history.clone(),
            None => return Err(ApiError::PreviousResponseNotFound(id.clone())),
        },
    };
    let p = input::prepare(req, previous)?;
    let run = chat::start(st.clone(), &p.chat)?;
    let shell = Shell {
        id: item_id("resp"),
        created_at: unix_now(),
        model: st.served_name.clone(),
        echo: p.echo,
    };
    let store_to = p.store.then(|| StoreTo {
        store: st.responses.clone(),
        history: p.history,
    });
    if run.params.stream {
        return Ok(stream(run, shell, store_to));
    }
    let Collected {
        turns,
        finish,
        usage,
        ..
    } = run.gen.collect_turns().await?;
    let (message, _) = chat::final_message(run.parser, &run.ids, turns);
    let finish = chat::turn_finish(finish, message.get("tool_calls").is_some());
    let items = output_items(&message);
    let response = response_json(&shell, &items, Some((finish, &usage)));
    if let Some(to) = store_to {
        to.save(shell.id, response.clone(), history_messages(&items));
    }
    Ok(Json(response).into_response())
}

/// The event stream of a response: chat deltas made by the chat chunk maker, reshaped.
fn stream(run: ChatRun, shell: Shell, store_to: Option<StoreTo>) -> Response {
    let mut chat = chat::chunk_fn(String::new(), String::new(), 0, run.parser, run.ids);
    let mut ev = EventStream::new(shell, store_to);
    let first = ev.start();
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

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("No response found with id '{id}'."))
}

pub async fn retrieve(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = st.responses.get(&id).ok_or_else(|| not_found(&id))?;
    Ok(Json(stored.response.clone()))
}

pub async fn delete(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !st.responses.remove(&id) {
        return Err(not_found(&id));
    }
    Ok(Json(
        json!({"id": id, "object": "response.deleted", "deleted": true}),
    ))
}
