//! `POST /v1/chat/completions`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tandem_engine::Usage;
use tandem_tools::ParserKind;

use crate::api::body::parse_json;
use crate::api::generate::{usage_json, Collected, Generation};
use crate::api::logprobs;
use crate::api::replay::Replay;
use crate::api::server_calls::{ServerCalls, ToolResult};
use crate::api::stream::{sse_response, ChunkFn, ChunkOf, LogprobsFn, StreamSpec};
use crate::api::tool_calls::{self, CallIds, DeltaStream, ToolPlan};
use crate::api::types::{normalize_messages, ChatRequest, GenParams};
use crate::error::ApiError;
use crate::state::AppState;

/// Renders the conversation with the model's template and tokenizes it.
fn prompt_tokens(st: &AppState, messages: &[Value], plan: &ToolPlan) -> Result<Vec<i32>, ApiError> {
    let (messages, tools) = plan.prompt_inputs(st, messages);
    let text = st.template.render(&messages, tools.as_deref())?;
    let bos = st.model.special_text(st.model.bos());
    let add_bos = st.model.add_bos() && !text.starts_with(&bos);
    Ok(st.model.tokenize(&text, add_bos, true))
}

/// A chat generation, started, and what its output needs.
pub struct ChatRun {
    pub gen: Generation,
    pub params: GenParams,
    pub parser: Option<ParserKind>,
    pub ids: CallIds,
    pub serves_tools: bool,
    pub want_logprobs: bool,
}

/// Validates a chat request, renders and tokenizes its prompt and queues its generation
/// (shared by chat completions and the Responses API).
pub fn start(st: Arc<AppState>, req: &ChatRequest) -> Result<ChatRun, ApiError> {
    st.check_model(req.common.model.as_deref())?;
    let mut params = req.common.validate(st.model.n_vocab())?;
    params.sampling.logprobs = logprobs::chat_request(req.logprobs, req.top_logprobs)?;
    let want_logprobs = params.sampling.logprobs.is_some();
    let plan = ToolPlan::parse(req, &st.registry)?;
    let messages = normalize_messages(&req.messages)?;
    let prompt = prompt_tokens(&st, &messages, &plan)?;
    let replay = req
        .replay
        .as_deref()
        .map(|t| Replay::new(&st, t))
        .transpose()?;
    let abort = Arc::new(AtomicBool::new(false));
    let constraint = plan.constraint(&st, replay, Arc::clone(&abort))?;
    let parser = plan.parser_kind(&st);
    let ids = CallIds::new();
    let mut gen = Generation::start(st.clone(), prompt, &params, constraint)?;
    let serves_tools = plan.serves_tools();
    if serves_tools {
        let calls = ServerCalls::new(st, plan, ids.clone(), messages, abort);
        gen = gen.with_server_calls(calls);
    }
    Ok(ChatRun {
        gen,
        params,
        parser,
        ids,
        serves_tools,
        want_logprobs,
    })
}

/// The route handler; errors become OpenAI error responses through `ApiError`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_json(body, st.body_limit)?;
    let run = start(st.clone(), &req)?;
    let id = format!("chatcmpl-{}", random_id());
    let (model, created) = (st.served_name.clone(), unix_now());
    if run.params.stream {
        let chunk = chunk_fn(id.clone(), model.clone(), created, run.parser, run.ids);
        // `content` null, as llama-server sends it: a client (the OpenAI Agents SDK) that starts
        // a text message on any non-null content would show an empty one before a tool call.
        let role = json!({"role": "assistant", "content": null});
        let first = chunk_json(&id, &model, created, role, None);
        let spec = StreamSpec {
            logprobs: run
                .want_logprobs
                .then(|| -> LogprobsFn { Box::new(logprobs::chat_json) }),
            ..StreamSpec::completions(Some(first), chunk, run.params.include_usage)
        };
        return Ok(sse_response(run.gen, spec));
    }
    let Collected {
        turns,
        finish,
        usage,
        logprobs: lps,
        ..
    } = run.gen.collect_turns().await?;
    let lps = run.want_logprobs.then(|| logprobs::chat_json(&lps));
    let (message, added) = final_message(run.parser, &run.ids, turns);
    let finish = turn_finish(finish, message.get("tool_calls").is_some());
    let mut body = full_response(&id, &model, created, message, finish, &usage, lps);
    if run.serves_tools {
        body["choices"][0]["messages"] = json!(added);
    }
    Ok(Json(body).into_response())
}

/// The completion's last assistant message (content and tool calls, parsed with `parser`),
/// and, with a tool-call parser, every message the completion adds to the conversation.
pub fn final_message(
    parser: Option<ParserKind>,
    ids: &CallIds,
    turns: Vec<(String, Vec<ToolResult>)>,
) -> (Value, Vec<Value>) {
    let Some(kind) = parser else {
        let text: String = turns.into_iter().map(|t| t.0).collect();
        return (json!({"role": "assistant", "content": text}), Vec::new());
    };
    let added = turn_messages(kind, ids, &turns);
    let message = added
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .cloned()
        .unwrap_or_default();
    (message, added)
}

/// The messages a completion adds to the conversation: each assistant turn, followed by the
/// results of its server-side calls.
fn turn_messages(
    kind: ParserKind,
    ids: &CallIds,
    turns: &[(String, Vec<ToolResult>)],
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut base = 0;
    for (text, results) in turns {
        let (m, next) = tool_calls::message(kind.parser(), text, ids.clone(), base);
        base = next;
        out.push(m);
        out.extend(results.iter().map(ToolResult::message));
    }
    out
}

/// A turn that called tools ends with `tool_calls`, unless `max_tokens` cut it: then it is
/// `length`, as OpenAI reports it, and the calls completed before the cut are still listed.
pub fn turn_finish(finish: &str, called: bool) -> &str {
    if called && finish != "length" {
        "tool_calls"
    } else {
        finish
    }
}

fn full_response(
    id: &str,
    model: &str,
    created: u64,
    message: Value,
    finish: &str,
    u: &Usage,
    logprobs: Option<Value>,
) -> Value {
    json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message,
                     "logprobs": logprobs, "finish_reason": finish}],
        "usage": usage_json(u),
    })
}

fn chunk_json(id: &str, model: &str, created: u64, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    })
}

pub fn chunk_fn(
    id: String,
    model: String,
    created: u64,
    parser: Option<ParserKind>,
    ids: CallIds,
) -> ChunkFn {
    let mut deltas = parser.map(|k| DeltaStream::new(k, ids));
    Box::new(move |of| {
        let chunk =
            |delta: Value, finish: Option<&str>| chunk_json(&id, &model, created, delta, finish);
        let Some(d) = deltas.as_mut() else {
            return match of {
                ChunkOf::Text(t) => vec![chunk(json!({"content": t}), None)],
                ChunkOf::Finish(f, _) => vec![chunk(json!({}), Some(f))],
                ChunkOf::Error(e) => vec![e.body()],
                ChunkOf::ToolResults(..) | ChunkOf::Skeleton => vec![chunk(json!({}), None)],
            };
        };
        let plain = |vs: Vec<Value>| vs.into_iter().map(|v| chunk(v, None)).collect::<Vec<_>>();
        match of {
            ChunkOf::Text(t) => plain(d.text(t)),
            ChunkOf::ToolResults(r, continues) => {
                let mut out = if continues {
                    plain(d.end_turn())
                } else {
                    Vec::new()
                };
                let results: Vec<Value> = r.iter().map(ToolResult::to_json).collect();
                out.push(chunk(json!({"tool_results": results}), None));
                out
            }
            ChunkOf::Error(e) => vec![e.body()],
            ChunkOf::Finish(f, _) => {
                let (tail, called) = d.finish();
                let f = turn_finish(f, called);
                let mut out = plain(tail);
                out.push(chunk(json!({}), Some(f)));
                out
            }
            ChunkOf::Skeleton => vec![chunk(json!({}), None)],
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
