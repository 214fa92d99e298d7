//! `POST /tokenize` and `POST /detokenize`: the served model's tokenizer, as llama-server and
//! vLLM expose it (each server's field names are accepted), so a client can count tokens or
//! find the ids `logit_bias` needs. `POST /apply-template` (llama-server's): the prompt a chat
//! request would be given, so a client can see what the model reads.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::body::{parse_json, RequestBody};
use crate::api::types::ChatRequest;
use crate::api::{chat, legacy_functions};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    /// llama-server's name for the text; vLLM's is `prompt`.
    #[serde(alias = "prompt")]
    pub content: String,
    /// Add the model's BOS token where it uses one (llama-server's `add_special`, vLLM's
    /// `add_special_tokens`); default off.
    #[serde(default, alias = "add_special_tokens")]
    pub add_special: bool,
    /// Each token as `{"id", "piece"}` instead of a bare id (llama-server).
    #[serde(default)]
    pub with_pieces: bool,
}

impl RequestBody for TokenizeRequest {}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<i64>,
}

impl RequestBody for DetokenizeRequest {}

/// Special tokens written in the text (`<|im_end|>`) become their ids, as a chat template's
/// output does.
pub async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse_json(body, st.body_limit)?;
    let add_bos = req.add_special && st.model.add_bos();
    let ids = st.model.tokenize(&req.content, add_bos, true);
    let tokens: Vec<Value> = if req.with_pieces {
        let piece = |t: i32| st.model.special_text(t);
        ids.iter()
            .map(|&t| json!({"id": t, "piece": piece(t)}))
            .collect()
    } else {
        ids.iter().map(|&t| json!(t)).collect()
    };
    Ok(Json(json!({
        "tokens": tokens, "count": ids.len(), "max_model_len": st.cells_per_seq,
    })))
}

/// The text of the ids, special tokens written out, in `content` (llama-server) and
/// `prompt` (vLLM).
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse_json(body, st.body_limit)?;
    let ids = checked_ids(&req.tokens, st.model.n_vocab(), "tokens")?;
    let text = st.model.detokenize(&ids, true);
    Ok(Json(json!({"content": text, "prompt": text})))
}

/// The chat request's prompt text, as `/v1/chat/completions` renders it (tools and tool
/// results included), in llama-server's `prompt` field. Nothing is generated.
pub async fn apply_template(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut req: ChatRequest = parse_json(body, st.body_limit)?;
    legacy_functions::translate(&mut req)?;
    Ok(Json(json!({"prompt": chat::prompt_of(&st, &req)?})))
}

/// Token ids from a request, each checked to be in the vocabulary (a 400 naming `field`).
pub fn checked_ids(ids: &[i64], n_vocab: usize, field: &str) -> Result<Vec<i32>, ApiError> {
    let n = n_vocab as i64;
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= n) {
        let msg = format!("{field}: token ids must be in 0..{n}, got {bad}");
        return Err(ApiError::invalid_at(msg, field));
    }
    Ok(ids.iter().map(|&t| t as i32).collect())
}
