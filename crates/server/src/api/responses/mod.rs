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
use crate::api::reshape;
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
    let run = chat::start(st.clone(), &p.chat).map_err(|e| e.about_prompt("input"))?;
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
    let chat::Answer {
        message,
        finish,
        usage,
        ..
    } = chat::collect_message(run).await?;
    let items = output_items(&message, finish);
    let response = response_json(&shell, &items, Some((finish, &usage)));
    if let Some(to) = store_to {
        to.save(shell.id, response.clone(), history_messages(&items));
    }
    Ok(Json(response).into_response())
}

/// The event stream of a response: chat deltas made by the chat chunk maker, reshaped.
fn stream(run: ChatRun, shell: Shell, store_to: Option<StoreTo>) -> Response {
    let mut ev = EventStream::new(shell, store_to);
    let first = ev.start();
    reshape::stream(run, first, ev)
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
