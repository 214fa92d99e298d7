//! `POST /v1/completions` (text in, text out; no chat template).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::try_join_all;
use serde_json::{json, Value};

use tandem_engine::{Constraint, Usage};
use tandem_tools::grammar::for_output_rule;
use tandem_tools::structured::Structured;

use crate::api::body::parse_json;
use crate::api::chat::{random_id, unix_now};
use crate::api::generate::{combined_usage, usage_json, Collected, Generation};
use crate::api::logprobs;
use crate::api::stream::{sse_choices, stop_reason, ChunkFn, ChunkOf, LogprobsFn, StreamSpec};
use crate::api::tokenize::checked_ids;
use crate::api::types::{CompletionRequest, GenParams, PromptSpec};
use crate::error::ApiError;
use crate::state::AppState;

/// Most completions one request may ask for: prompts times `n`.
const MAX_COMPLETIONS: usize = 2048;

/// One prompt: its text (for `echo`), tokens, and its first token's bytes (the unscored
/// head of echoed log-probabilities).
struct Prompt {
    text: String,
    tokens: Vec<i32>,
    first_piece: Vec<u8>,
    /// Where the request gave it: `prompt`, or `prompt[i]` in a list.
    field: String,
}

impl Prompt {
    fn new(st: &AppState, text: String, tokens: Vec<i32>, field: String) -> Self {
        let first_piece = st.model.piece(tokens[0]);
        Self {
            text,
            tokens,
            first_piece,
            field,
        }
    }
}

/// The request's prompts: one, or each of a list (OpenAI's batch form). Their choices come
/// prompt by prompt, `n` each, so choice `p * n + i` is the `i`-th of prompt `p`.
fn prompts(st: &AppState, spec: &PromptSpec, n: usize) -> Result<Vec<Prompt>, ApiError> {
    match spec {
        PromptSpec::Text(t) => Ok(vec![text_prompt(st, t, "prompt".into())?]),
        PromptSpec::Tokens(ids) => Ok(vec![token_prompt(st, ids, "prompt".into())?]),
        PromptSpec::Texts(v) => listed(st, v, n, |t, field| text_prompt(st, t, field)),
        PromptSpec::TokenLists(v) => listed(st, v, n, |ids, field| token_prompt(st, ids, field)),
    }
}

/// A list of prompts, each read by `one` under its field name `prompt[i]`.
fn listed<T>(
    st: &AppState,
    list: &[T],
    n: usize,
    one: impl Fn(&T, String) -> Result<Prompt, ApiError>,
) -> Result<Vec<Prompt>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid(
            "prompt must not be an empty list",
            "prompt",
        ));
    }
    let count = list.len();
    check_count(
        count * n,
        st.engine.max_queue(),
        format_args!("{count} prompts with n = {n}"),
    )?;
    (list.iter().enumerate())
        .map(|(i, p)| one(p, format!("prompt[{i}]")))
        .collect()
}

/// A request's completions all queue at once, so they must fit the queue (`--max-queue`) as
/// well as the per-request limit.
fn check_count(count: usize, max_queue: usize, got: std::fmt::Arguments) -> Result<(), ApiError> {
    let (limit, why) = if max_queue < MAX_COMPLETIONS {
        (max_queue, "the server's queue (--max-queue)")
    } else {
        (MAX_COMPLETIONS, "a request")
    };
    if count <= limit {
        return Ok(());
    }
    let msg = format!(
        "at most {limit} completions (prompts times n) fit {why}, got {got}; send the prompts in smaller requests"
    );
    Err(ApiError::invalid(msg, "prompt"))
}

fn text_prompt(st: &AppState, text: &str, field: String) -> Result<Prompt, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid_at(
            format!("{field} must not be empty"),
            field,
        ));
    }
    let tokens = st.model.tokenize(text, st.model.add_bos(), false);
    Ok(Prompt::new(st, text.to_string(), tokens, field))
}

fn token_prompt(st: &AppState, ids: &[i64], field: String) -> Result<Prompt, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid_at(
            format!("{field} must not be empty"),
            field,
        ));
    }
    let tokens = checked_ids(ids, st.model.n_vocab(), &field)?;
    let text = st.model.detokenize(&tokens, false);
    Ok(Prompt::new(st, text, tokens, field))
}

/// What every choice's JSON shares.
#[derive(Clone)]
struct Reply {
    id: String,
    model: String,
    created: u64,
    echo: bool,
    logprobs: bool,
}

/// The route handler; errors become OpenAI error responses through `ApiError`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body, st.body_limit)?;
    req.unserved()?;
    st.check_model(req.common.model.as_deref())?;
    let mut params = req.common.validate(&st.model)?;
    params.output = req.output(params.output.take())?;
    let asked = logprobs::completion_request(req.logprobs, req.echo, params.stream)?;
    params.sampling.logprobs = asked.map(|a| a.k);
    params.sampling.prompt_logprobs = asked.filter(|a| a.prompt).map(|a| a.k);
    let prompts = prompts(&st, &req.prompt, params.n)?;
    let reply = Reply {
        id: format!("cmpl-{}", random_id()),
        model: st.served_name.clone(),
        created: unix_now(),
        echo: req.echo,
        logprobs: asked.is_some(),
    };
    let gens = start_all(&st, &prompts, &params)?;
    if params.stream {
        return Ok(stream_reply(&reply, &prompts, gens, &params));
    }
    let collected = try_join_all(gens.into_iter().map(Generation::collect_turns)).await?;
    Ok(Json(whole_reply(&reply, &prompts, collected, params.n)).into_response())
}

/// Starts every choice of every prompt, prompt by prompt.
fn start_all(
    st: &Arc<AppState>,
    prompts: &[Prompt],
    params: &GenParams,
) -> Result<Vec<Generation>, ApiError> {
    let choices = prompts
        .iter()
        .flat_map(|p| (0..params.n).map(move |i| (p, i)));
    choices
        .map(|(p, i)| {
            let constraint = constraint(st, params.output.as_ref())?;
            Generation::start(st.clone(), p.tokens.clone(), &params.choice(i), constraint)
                .map_err(|e| e.about_prompt(&p.field))
        })
        .collect()
}

fn stream_reply(
    reply: &Reply,
    prompts: &[Prompt],
    gens: Vec<Generation>,
    params: &GenParams,
) -> Response {
    let streams = gens.into_iter().enumerate().map(|(i, gen)| {
        let p = &prompts[i / params.n];
        let first = (reply.echo).then(|| chunk_json(reply, &p.text, None));
        let mut offset = 0;
        let spec = StreamSpec {
            logprobs: reply.logprobs.then(|| -> LogprobsFn {
                Box::new(move |e| logprobs::completion_json(e, &mut offset))
            }),
            ..StreamSpec::completions(first, chunk_fn(reply), params.include_usage)
        };
        (gen, spec)
    });
    sse_choices(streams.collect(), params.n)
}

fn whole_reply(reply: &Reply, prompts: &[Prompt], collected: Vec<Collected>, n: usize) -> Value {
    let usages: Vec<Usage> = collected.iter().map(|c| c.usage).collect();
    let choices = collected.into_iter().enumerate().map(|(i, c)| {
        let prompt = &prompts[i / n];
        choice_json(reply, prompt, c, i)
    });
    json!({
        "id": reply.id, "object": "text_completion", "created": reply.created,
        "model": reply.model, "choices": choices.collect::<Vec<_>>(),
        "usage": usage_json(&combined_usage(&usages, n)),
    })
}

fn choice_json(reply: &Reply, prompt: &Prompt, c: Collected, index: usize) -> Value {
    let lps = match (reply.logprobs, reply.echo) {
        (false, _) => None,
        (true, false) => Some(logprobs::completion_json(&c.logprobs, &mut 0)),
        (true, true) => Some(logprobs::echo_completion_json(
            prompt.first_piece.clone(),
            &c.prompt_logprobs,
            &c.logprobs,
        )),
    };
    let text: String = c.turns.into_iter().map(|t| t.0).collect();
    let echoed = if reply.echo { prompt.text.as_str() } else { "" };
    json!({
        "index": index, "text": format!("{echoed}{text}"), "logprobs": lps,
        "finish_reason": c.finish, "stop_reason": c.stop,
    })
}

/// A choice's constraint from the structured-output extensions (each choice its own).
fn constraint(st: &AppState, output: Option<&Structured>) -> Result<Option<Constraint>, ApiError> {
    let Some(o) = output else { return Ok(None) };
    let plan = for_output_rule(&o.rule, o.layout(st.tools.json_layout));
    let guided = st.tools.guided(&plan, &o.field)?;
    Ok(Some(Constraint(Box::new(guided))))
}

fn chunk_json(reply: &Reply, text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": reply.id, "object": "text_completion", "created": reply.created,
        "model": reply.model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
    })
}

fn chunk_fn(reply: &Reply) -> ChunkFn {
    let reply = reply.clone();
    Box::new(move |of| {
        let chunk = |text, finish| chunk_json(&reply, text, finish);
        match of {
            ChunkOf::Text(t) => vec![chunk(t, None)],
            ChunkOf::Finish(f, _, stop) => vec![stop_reason(chunk("", Some(f)), stop)],
            ChunkOf::Error(e) => vec![e.body()],
            ChunkOf::ToolResults(..) | ChunkOf::Skeleton => vec![chunk("", None)],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_must_fit_the_queue_and_the_request_limit() {
        let check = |count, queue| {
            check_count(count, queue, format_args!("{count}")).map_err(|e| e.to_string())
        };
        assert!(check(256, 256).is_ok());
        let err = check(257, 256).unwrap_err();
        assert!(
            err.contains("at most 256") && err.contains("--max-queue"),
            "{err}"
        );
        assert!(check(2048, 10_000).is_ok());
        let err = check(2049, 10_000).unwrap_err();
        assert!(
            err.contains("at most 2048") && err.contains("a request"),
            "{err}"
        );
    }
}
