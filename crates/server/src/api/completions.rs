//! `POST /v1/completions` (text in, text out; no chat template).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::try_join_all;
use serde_json::{json, Value};

use tandem_engine::Constraint;
use tandem_tools::grammar::for_output_rule;
use tandem_tools::structured::Structured;

use crate::api::body::parse_json;
use crate::api::chat::{random_id, unix_now};
use crate::api::generate::{combined_usage, usage_json, Generation};
use crate::api::logprobs;
use crate::api::stream::{sse_choices, stop_reason, ChunkFn, ChunkOf, LogprobsFn, StreamSpec};
use crate::api::tokenize::checked_ids;
use crate::api::types::{CompletionRequest, PromptSpec};
use crate::error::ApiError;
use crate::state::AppState;

/// The prompt's text (for `echo`) and tokens.
fn prompt(st: &AppState, spec: &PromptSpec) -> Result<(String, Vec<i32>), ApiError> {
    let text = match spec {
        PromptSpec::Text(t) => t.clone(),
        PromptSpec::Texts(v) if v.len() == 1 => v[0].clone(),
        PromptSpec::Texts(_) => {
            return Err(ApiError::invalid(
                "only one prompt per request is supported",
                "prompt",
            ))
        }
        PromptSpec::Tokens(ids) => return token_prompt(st, ids),
        PromptSpec::TokenLists(v) if v.len() == 1 => return token_prompt(st, &v[0]),
        PromptSpec::TokenLists(_) => {
            return Err(ApiError::invalid(
                "only one prompt per request is supported",
                "prompt",
            ))
        }
    };
    if text.is_empty() {
        return Err(ApiError::invalid("prompt must not be empty", "prompt"));
    }
    let tokens = st.model.tokenize(&text, st.model.add_bos(), false);
    Ok((text, tokens))
}

fn token_prompt(st: &AppState, ids: &[i64]) -> Result<(String, Vec<i32>), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt must not be empty", "prompt"));
    }
    let tokens = checked_ids(ids, st.model.n_vocab(), "prompt")?;
    Ok((st.model.detokenize(&tokens, false), tokens))
}

/// The route handler; errors become OpenAI error responses through `ApiError`.
pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(body, st.body_limit)?;
    st.check_model(req.common.model.as_deref())?;
    let mut params = req.common.validate(st.model.n_vocab())?;
    params.output = req.output(params.output.take())?;
    let asked = logprobs::completion_request(req.logprobs, req.echo, params.stream)?;
    params.sampling.logprobs = asked.map(|a| a.k);
    params.sampling.prompt_logprobs = asked.filter(|a| a.prompt).map(|a| a.k);
    let want_logprobs = asked.is_some();
    let (prompt_text, tokens) = prompt(&st, &req.prompt)?;
    let id = format!("cmpl-{}", random_id());
    let (model, created) = (st.served_name.clone(), unix_now());
    let first_piece = st.model.piece(tokens[0]);
    let echo = req.echo.then_some(prompt_text);
    let gens = (0..params.n).map(|i| {
        let constraint = constraint(&st, params.output.as_ref())?;
        Generation::start(st.clone(), tokens.clone(), &params.choice(i), constraint)
    });
    let gens = gens.collect::<Result<Vec<_>, _>>()?;
    if params.stream {
        let streams = gens.into_iter().map(|gen| {
            let first = echo
                .as_ref()
                .map(|t| chunk_json(&id, &model, created, t, None));
            let mut offset = 0;
            let chunk = chunk_fn(id.clone(), model.clone(), created);
            let spec = StreamSpec {
                logprobs: want_logprobs.then(|| -> LogprobsFn {
                    Box::new(move |e| logprobs::completion_json(e, &mut offset))
                }),
                ..StreamSpec::completions(first, chunk, params.include_usage)
            };
            (gen, spec)
        });
        return Ok(sse_choices(streams.collect()));
    }
    let collected = try_join_all(gens.into_iter().map(Generation::collect_turns)).await?;
    let mut choices = Vec::with_capacity(collected.len());
    let mut usages = Vec::with_capacity(collected.len());
    for (i, c) in collected.into_iter().enumerate() {
        let lps = match (want_logprobs, echo.is_some()) {
            (false, _) => None,
            (true, false) => Some(logprobs::completion_json(&c.logprobs, &mut 0)),
            (true, true) => Some(logprobs::echo_completion_json(
                first_piece.clone(),
                &c.prompt_logprobs,
                &c.logprobs,
            )),
        };
        let text: String = c.turns.into_iter().map(|t| t.0).collect();
        let text = echo.clone().unwrap_or_default() + &text;
        choices.push(json!({
            "index": i, "text": text, "logprobs": lps, "finish_reason": c.finish,
            "stop_reason": c.stop,
        }));
        usages.push(c.usage);
    }
    Ok(Json(json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": choices, "usage": usage_json(&combined_usage(&usages)),
    }))
    .into_response())
}

/// A choice's constraint from the structured-output extensions (each choice its own).
fn constraint(st: &AppState, output: Option<&Structured>) -> Result<Option<Constraint>, ApiError> {
    let Some(o) = output else { return Ok(None) };
    let guided = st.tools.guided(&for_output_rule(&o.rule), &o.field)?;
    Ok(Some(Constraint(Box::new(guided))))
}

fn chunk_json(id: &str, model: &str, created: u64, text: &str, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "text_completion", "created": created, "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
    })
}

fn chunk_fn(id: String, model: String, created: u64) -> ChunkFn {
    Box::new(move |of| {
        let chunk = |text, finish| chunk_json(&id, &model, created, text, finish);
        match of {
            ChunkOf::Text(t) => vec![chunk(t, None)],
            ChunkOf::Finish(f, _, stop) => vec![stop_reason(chunk("", Some(f)), stop)],
            ChunkOf::Error(e) => vec![e.body()],
            ChunkOf::ToolResults(..) | ChunkOf::Skeleton => vec![chunk("", None)],
        }
    })
}
