//! `POST /v1/chat/completions`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::try_join_all;
use serde_json::{json, Value};
use tandem_engine::Usage;
use tandem_tools::ParserKind;

use crate::api::body::parse_json;
use crate::api::generate::{combined_usage, usage_json, Collected, Generation};
use crate::api::legacy_functions;
use crate::api::logprobs;
use crate::api::replay::Replay;
use crate::api::server_calls::{ServerCalls, ToolResult};
use crate::api::stream::{sse_choices, stop_reason, ChunkFn, ChunkOf, LogprobsFn, StreamSpec};
use crate::api::tool_calls::{self, CallIds, DeltaStream, ToolPlan};
use crate::api::types::{normalize_messages, ChatRequest, GenParams};
use crate::error::ApiError;
use crate::state::AppState;

/// Renders the conversation with the model's template. With `prefill`, the last message is
/// the start of the reply: the rest is rendered with the assistant's generation prompt and
/// that message's text follows it.
fn prompt_text(
    st: &AppState,
    messages: &[Value],
    plan: &ToolPlan,
    prefill: bool,
) -> Result<String, ApiError> {
    let (messages, tools) = plan.prompt_inputs(st, messages);
    let (head, start) = split_prefill(&messages, prefill)?;
    Ok(st.template.render(head, tools.as_deref())? + start)
}

/// The prompt text tokenized, with the model's BOS token when it uses one and the template
/// did not write it.
fn tokenize_prompt(st: &AppState, text: &str) -> Vec<i32> {
    let bos = st.model.special_text(st.model.bos());
    let add_bos = st.model.add_bos() && !text.starts_with(&bos);
    st.model.tokenize(text, add_bos, true)
}

/// The messages to render and the reply's given start (empty without `prefill`).
fn split_prefill(messages: &[Value], prefill: bool) -> Result<(&[Value], &str), ApiError> {
    let Some((last, head)) = messages.split_last().filter(|_| prefill) else {
        return Ok((messages, ""));
    };
    match (last["role"].as_str(), last["content"].as_str()) {
        (Some("assistant"), Some(text)) if last.get("tool_calls").is_none() => Ok((head, text)),
        _ => Err(ApiError::invalid(
            "continuing the final message needs a last assistant message with text content and no tool calls",
            "messages",
        )),
    }
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

/// A validated chat request with its prompt rendered and tokenized: what each choice starts
/// from.
struct Prepared {
    params: GenParams,
    plan: ToolPlan,
    messages: Vec<Value>,
    prompt: Vec<i32>,
    replay: Option<Replay>,
}

/// A validated chat request's parameters, tool plan, normalized messages and prompt text.
fn render(
    st: &AppState,
    req: &ChatRequest,
) -> Result<(GenParams, ToolPlan, Vec<Value>, String), ApiError> {
    st.check_model(req.common.model.as_deref())?;
    let mut params = req.common.validate(&st.model)?;
    params.sampling.logprobs = logprobs::chat_request(req.logprobs, req.top_logprobs)?;
    let plan = ToolPlan::parse(req, &st.registry, params.output.clone())?;
    if params.n > 1 && (plan.serves_tools() || req.replay.is_some()) {
        let msg = "n > 1 cannot be combined with server_tools or replay";
        return Err(ApiError::invalid(msg, "n"));
    }
    check_prediction(req, &params)?;
    let messages = normalize_messages(&req.messages)?;
    let text = prompt_text(st, &messages, &plan, req.continue_final_message)?;
    Ok((params, plan, messages, text))
}

fn prepare(st: &AppState, req: &ChatRequest) -> Result<Prepared, ApiError> {
    let (params, plan, messages, text) = render(st, req)?;
    let prompt = tokenize_prompt(st, &text);
    let replay = req
        .replay
        .as_deref()
        .map(|t| Replay::new(st, t))
        .transpose()?;
    Ok(Prepared {
        params,
        plan,
        messages,
        prompt,
        replay,
    })
}

/// A predicted output is drafted under a forced grammar (`response_format`, structured
/// outputs), which rolls back, but not under tools: their grammar waits for a call's opening
/// tag, and OpenAI refuses a prediction with tools too. A replayed text has no use for one.
fn check_prediction(req: &ChatRequest, params: &GenParams) -> Result<(), ApiError> {
    if params.prediction.is_none() {
        return Ok(());
    }
    let has_tools = req
        .tools
        .as_ref()
        .is_some_and(|t| t.as_array().is_none_or(|a| !a.is_empty()));
    let conflict = if has_tools || req.server_tools.is_some() {
        Some("tools")
    } else if req.replay.is_some() {
        Some("replay")
    } else {
        None
    };
    match conflict {
        Some(field) => {
            let msg = format!("prediction cannot be combined with {field}");
            Err(ApiError::invalid(msg, "prediction"))
        }
        None => Ok(()),
    }
}

/// Queues choice `i` of a prepared request.
fn launch(st: Arc<AppState>, p: &mut Prepared, i: usize) -> Result<ChatRun, ApiError> {
    let abort = Arc::new(AtomicBool::new(false));
    let constraint = p
        .plan
        .constraint(&st, p.replay.take(), Arc::clone(&abort))?;
    let parser = p.plan.parser_kind(&st);
    let ids = CallIds::new();
    let params = p.params.choice(i);
    let mut gen = Generation::start(st.clone(), p.prompt.clone(), &params, constraint)?;
    let serves_tools = p.plan.serves_tools();
    if serves_tools {
        let messages = p.messages.clone();
        let calls = ServerCalls::new(st, p.plan.clone(), ids.clone(), messages, abort);
        gen = gen.with_server_calls(calls);
    }
    let want_logprobs = params.sampling.logprobs.is_some();
    Ok(ChatRun {
        gen,
        params,
        parser,
        ids,
        serves_tools,
        want_logprobs,
    })
}

/// Validates a chat request, renders and tokenizes its prompt and queues its generation
/// (the Responses API, which has one output: `n` is not among its fields).
pub fn start(st: Arc<AppState>, req: &ChatRequest) -> Result<ChatRun, ApiError> {
    let mut p = prepare(&st, req)?;
    launch(st, &mut p, 0)
}

/// A chat request's prompt as the template renders it, tools and tool results written as
/// for generation (nothing is queued).
pub fn prompt_of(st: &AppState, req: &ChatRequest) -> Result<String, ApiError> {
    Ok(render(st, req)?.3)
}

/// The length of a chat request's prompt as the template renders it (nothing is queued).
pub fn prompt_len(st: &AppState, req: &ChatRequest) -> Result<usize, ApiError> {
    Ok(prepare(st, req)?.prompt.len())
}

/// The same for every choice of a chat completion (`n`): each is its own engine request for
/// the same prompt; the engine prefills that prompt once and the others copy it
/// (in-flight prefix sharing).
fn start_choices(st: Arc<AppState>, req: &ChatRequest) -> Result<Vec<ChatRun>, ApiError> {
    let mut p = prepare(&st, req)?;
    (0..p.params.n)
        .map(|i| launch(st.clone(), &mut p, i))
        .collect()
}

/// The route handler; errors become OpenAI error responses through `ApiError`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut req: ChatRequest = parse_json(body, st.body_limit)?;
    req.unserved()?;
    let legacy = legacy_functions::translate(&mut req)?;
    let runs = start_choices(st.clone(), &req)?;
    let id = format!("chatcmpl-{}", random_id());
    let (model, created) = (st.served_name.clone(), unix_now());
    let params = runs[0].params.clone();
    if params.stream {
        let streams = runs.into_iter().map(|run| {
            let mut spec = stream_spec(&id, &model, created, &run);
            if legacy {
                spec.chunk = legacy_functions::chunks(spec.chunk);
            }
            (run.gen, spec)
        });
        return Ok(sse_choices(streams.collect(), params.n));
    }
    let choices = runs
        .into_iter()
        .enumerate()
        .map(|(i, r)| collect_choice(i, r));
    let (mut choices, usages): (Vec<Value>, Vec<Usage>) =
        try_join_all(choices).await?.into_iter().unzip();
    if legacy {
        choices.iter_mut().for_each(legacy_functions::reply);
    }
    let body = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": choices, "usage": usage_json(&combined_usage(&usages, usages.len())),
    });
    Ok(Json(body).into_response())
}

/// How one choice is streamed: its role chunk first, then its deltas.
fn stream_spec(id: &str, model: &str, created: u64, run: &ChatRun) -> StreamSpec {
    let chunk = chunk_fn(
        id.into(),
        model.into(),
        created,
        run.parser,
        run.ids.clone(),
    );
    // `content` null, as llama-server sends it: a client (the OpenAI Agents SDK) that starts
    // a text message on any non-null content would show an empty one before a tool call.
    let role = json!({"role": "assistant", "content": null});
    let first = chunk_json(id, model, created, role, None);
    StreamSpec {
        logprobs: run
            .want_logprobs
            .then(|| -> LogprobsFn { Box::new(logprobs::chat_json) }),
        ..StreamSpec::completions(Some(first), chunk, run.params.include_usage)
    }
}

/// Choice `index` read to its end: its `choices` entry and usage.
async fn collect_choice(index: usize, run: ChatRun) -> Result<(Value, Usage), ApiError> {
    let Collected {
        turns,
        finish,
        usage,
        stop,
        logprobs: lps,
        ..
    } = run.gen.collect_turns().await?;
    let lps = run.want_logprobs.then(|| logprobs::chat_json(&lps));
    let Final {
        message,
        added,
        finish,
    } = final_message(run.parser, &run.ids, turns, finish);
    let mut choice = json!({
        "index": index, "message": message, "logprobs": lps, "finish_reason": finish,
        "stop_reason": stop,
    });
    if run.serves_tools {
        choice["messages"] = json!(added);
    }
    Ok((choice, usage))
}

/// A run read to its end as the Responses and Messages APIs answer it.
pub struct Answer {
    /// The last assistant message.
    pub message: Value,
    pub finish: &'static str,
    pub usage: Usage,
    /// The stop string that ended it, if one did.
    pub stop: Option<String>,
}

pub async fn collect_message(run: ChatRun) -> Result<Answer, ApiError> {
    let c = run.gen.collect_turns().await?;
    let Final {
        message, finish, ..
    } = final_message(run.parser, &run.ids, c.turns, c.finish);
    Ok(Answer {
        message,
        finish,
        usage: c.usage,
        stop: c.stop,
    })
}

/// What a completion's turns come to.
pub struct Final {
    /// The last assistant message.
    pub message: Value,
    /// With a tool-call parser, every message the completion adds to the conversation.
    pub added: Vec<Value>,
    /// The choice's finish reason (see [`turn_finish`]).
    pub finish: &'static str,
}

/// The completion's last assistant message (content and tool calls, parsed with `parser`),
/// the messages it adds and its finish reason, from the engine's (`finish`).
pub fn final_message(
    parser: Option<ParserKind>,
    ids: &CallIds,
    turns: Vec<(String, Vec<ToolResult>)>,
    finish: &'static str,
) -> Final {
    let Some(kind) = parser else {
        let text: String = turns.into_iter().map(|t| t.0).collect();
        let message = json!({"role": "assistant", "content": text});
        return Final {
            message,
            added: Vec::new(),
            finish,
        };
    };
    let (added, called) = turn_messages(kind, ids, &turns);
    let message = added
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .cloned()
        .unwrap_or_default();
    let finish = turn_finish(finish, called);
    Final {
        message,
        added,
        finish,
    }
}

/// The messages a completion adds to the conversation: each assistant turn, followed by the
/// results of its server-side calls; and whether the last turn ended in complete calls.
fn turn_messages(
    kind: ParserKind,
    ids: &CallIds,
    turns: &[(String, Vec<ToolResult>)],
) -> (Vec<Value>, bool) {
    let mut out = Vec::new();
    let (mut base, mut called) = (0, false);
    for (text, results) in turns {
        let turn = tool_calls::message(kind.parser(), text, ids.clone(), base);
        (base, called) = (turn.next_base(), turn.ends_in_calls());
        out.push(turn.message());
        out.extend(results.iter().map(ToolResult::message));
    }
    (out, called)
}

/// A turn that ended in complete calls (`called`) finishes with `tool_calls`, unless
/// `max_tokens` cut it: then it is `length`, as OpenAI reports it, and the calls made before
/// the cut are still listed. A turn whose last call was cut keeps the engine's reason
/// (`length`, or `stop` for a stop string), so a client does not run a call half written.
pub fn turn_finish(finish: &str, called: bool) -> &str {
    if called && finish != "length" {
        "tool_calls"
    } else {
        finish
    }
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
                ChunkOf::Finish(f, _, stop) => vec![stop_reason(chunk(json!({}), Some(f)), stop)],
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
            ChunkOf::Finish(f, _, stop) => {
                let (tail, called) = d.finish();
                let f = turn_finish(f, called);
                let mut out = plain(tail);
                out.push(stop_reason(chunk(json!({}), Some(f)), stop));
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
