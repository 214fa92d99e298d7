//! `POST /v1/embeddings` (served with `--embeddings`): OpenAI's request (`input` as a string,
//! a list of strings, token ids or a list of token-id lists; `encoding_format` `float` or
//! `base64`, which the `openai` Python client asks for by default) and response, the vectors
//! from `tandem_llama::Embedder` on a blocking thread.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tandem_llama::EmbedError;

use crate::api::body::{parse_json, RequestBody};
use crate::api::tokenize::checked_ids;
use crate::error::ApiError;
use crate::state::AppState;

/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingRequest {
    input: Value,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
}

impl RequestBody for EmbeddingRequest {}

pub async fn handler(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = parse_json(body, st.body_limit)?;
    st.check_model(req.model.as_deref())?;
    let Some(embedder) = st.embedder.clone() else {
        return Err(ApiError::NotEnabled(
            "this server does not serve embeddings; start it with --embeddings".into(),
        ));
    };
    if let Some(d) = req.dimensions.filter(|&d| d != embedder.dims() as i64) {
        let msg = format!(
            "dimensions {d} is not supported: this model's embeddings have {}",
            embedder.dims()
        );
        return Err(ApiError::invalid(msg, "dimensions"));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            let msg = "encoding_format must be \"float\" or \"base64\"";
            return Err(ApiError::invalid(msg, "encoding_format"));
        }
    };
    let inputs = inputs(&st, &req.input)?;
    let (count, tokens) = (inputs.len(), inputs.iter().map(Vec::len).sum::<usize>());
    let start = std::time::Instant::now();
    let vectors = tokio::task::spawn_blocking(move || embedder.embed(inputs))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(embed_error)?;
    metrics::histogram!("tandem_embedding_request_seconds").record(start.elapsed().as_secs_f64());
    metrics::counter!("tandem_embedding_inputs_total").increment(count as u64);
    metrics::counter!("tandem_embedding_tokens_total").increment(tokens as u64);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": encode(v, base64)}))
        .collect();
    let usage = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    let body = json!({"object": "list", "data": data, "model": st.served_name, "usage": usage});
    Ok(Json(body).into_response())
}

fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::TooLong { .. } | EmbedError::Empty(_) => {
            ApiError::invalid(e.to_string(), "input")
        }
        EmbedError::Llama(_) | EmbedError::Gone => ApiError::Internal(e.to_string()),
    }
}

/// A vector as a JSON list, or as base64 of its little-endian f32 bytes.
fn encode(v: &[f32], base64: bool) -> Value {
    if !base64 {
        return json!(v);
    }
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The inputs' tokens, each non-empty.
fn inputs(st: &AppState, input: &Value) -> Result<Vec<Vec<i32>>, ApiError> {
    let bad = || {
        let msg = "input must be a non-empty string, a list of them, a list of token ids or a list of such lists";
        ApiError::invalid(msg, "input")
    };
    let text = |s: &str| -> Result<Vec<i32>, ApiError> {
        if s.is_empty() {
            return Err(ApiError::invalid(
                "input must not contain empty strings",
                "input",
            ));
        }
        Ok(st.model.tokenize(s, st.model.add_bos(), false))
    };
    let ids = |v: &Value| -> Result<Vec<i32>, ApiError> {
        let list: Option<Vec<i64>> = v
            .as_array()
            .map(|l| l.iter().map(Value::as_i64).collect())
            .and_then(|l: Vec<Option<i64>>| l.into_iter().collect());
        let list = list.filter(|l| !l.is_empty()).ok_or_else(bad)?;
        checked_ids(&list, st.model.n_vocab(), "input")
    };
    let out = match input {
        Value::String(s) => vec![text(s)?],
        Value::Array(items) if items.is_empty() || items.len() > MAX_INPUTS => {
            let msg = format!("input must have 1 to {MAX_INPUTS} items");
            return Err(ApiError::invalid(msg, "input"));
        }
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| i.as_str().ok_or_else(bad).and_then(text))
                .collect::<Result<_, _>>()?,
            Value::Number(_) => vec![ids(input)?],
            Value::Array(_) => items.iter().map(ids).collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let Value::String(s) = encode(&[1.0, -2.5], true) else {
            panic!("a string")
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
        assert_eq!(encode(&[0.5], false), json!([0.5]));
    }
}
