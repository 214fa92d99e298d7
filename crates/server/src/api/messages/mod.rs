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
use crate::api::reshape;
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
    let a = chat::collect_message(run).await?;
    let stop = a.stop.as_deref();
    let end = (stop_reason(a.finish, stop), stop);
    let body = message_json(&id, &model, content_blocks(&a.message), Some(end), &a.usage);
    Ok(Json(body).into_response())
}

/// The event stream of a message: chat deltas made by the chat chunk maker, reshaped.
fn stream(run: ChatRun, id: &str, model: &str) -> Response {
    let first = vec![EventStream::start(id, model, run.gen.prompt_tokens())];
    reshape::stream(run, first, EventStream::new())
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
