//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tandem_engine::Usage;
use tandem_tools::ToolCallParser;

use crate::api::body::parse_json;
use crate::api::generate::{usage_json, Generation};
use crate::api::stream::{sse_response, ChunkFn};
use crate::api::tool_calls::{self, DeltaStream, ToolPlan};
use crate::api::types::{normalize_messages, ChatRequest};
use crate::error::ApiError;
use crate::state::AppState;

/// Renders the conversation with the model's template and tokenizes it.
fn prompt_tokens(st: &AppState, req: &ChatRequest, plan: &ToolPlan) -> Result<Vec<i32>, ApiError> {
    let messages = normalize_messages(&req.messages)?;
    let (messages, tools) = plan.prompt_inputs(st, &messages);
    let text = st.template.render(&messages, tools.as_deref())?;
    let bos = st.model.special_text(st.model.bos());
    let add_bos = st.model.add_bos() && !text.starts_with(&bos);
    Ok(st.model.tokenize(&text, add_bos, true))
}

/// The route handler; errors become OpenAI error responses through `ApiError`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_json(body, st.body_limit)?;
    st.check_model(req.common.model.as_deref())?;
    let params = req.common.validate()?;
    let plan = ToolPlan::parse(&req)?;
    let prompt = prompt_tokens(&st, &req, &plan)?;
    let constraint = plan.constraint(&st)?;
    let parser = plan.parser(&st);
    let id = format!("chatcmpl-{}", random_id());
    let (model, created) = (st.served_name.clone(), unix_now());
    let gen = Generation::start(st, prompt, &params, constraint)?;
    if params.stream {
        let chunk = chunk_fn(id.clone(), model.clone(), created, parser);
        let first = chunk_json(
            &id,
            &model,
            created,
            json!({"role": "assistant", "content": ""}),
            None,
        );
        return Ok(sse_response(Some(first), gen, chunk, params.include_usage));
    }
    let (text, finish, usage) = gen.collect().await?;
    let message = match parser {
        Some(p) => tool_calls::message(p, &text),
        None => json!({"role": "assistant", "content": text}),
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        finish
    };
    Ok(Json(full_response(&id, &model, created, message, finish, &usage)).into_response())
}

fn full_response(
    id: &str,
    model: &str,
    created: u64,
    message: Value,
    finish: &str,
    u: &Usage,
) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message,
                     "logprobs": null, "finish_reason": finish}],
        "usage": usage_json(u),
    })
}

fn chunk_json(id: &str, model: &str, created: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

fn chunk_fn(id: String, model: String, created: u64, parser: Option<ToolCallParser>) -> ChunkFn {
    let mut deltas = parser.map(DeltaStream::new);
    Box::new(move |text, finish| {
        let chunk =
            |delta: Value, finish: Option<&str>| chunk_json(&id, &model, created, delta, finish);
        let Some(d) = deltas.as_mut() else {
            let delta = text.map_or_else(|| json!({}), |t| json!({"content": t}));
            return vec![chunk(delta, finish)];
        };
        match (text, finish) {
            (Some(t), _) => d.text(t).into_iter().map(|v| chunk(v, None)).collect(),
            (None, Some(f)) => {
                let (tail, called) = d.finish();
                let f = if called { "tool_calls" } else { f };
                let mut out: Vec<Value> = tail.into_iter().map(|v| chunk(v, None)).collect();
                out.push(chunk(json!({}), Some(f)));
                out
            }
            (None, None) => vec![chunk(json!({}), None)],
        }
    })
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
