//! Log-probabilities of generated tokens: the request fields that ask for them (chat's
//! `logprobs` + `top_logprobs`, a text completion's integer `logprobs`) and the two response
//! shapes OpenAI defines (chat's `content` list, the legacy `tokens` / `token_logprobs` /
//! `top_logprobs` / `text_offset` arrays, with the prompt's first when `echo` asks). The
//! numbers come from the engine (`Event::Logprobs`, `Event::PromptLogprobs`): the model's raw
//! distribution, before penalties, bias, temperature or a grammar's mask, as vLLM reports
//! them by default.

use serde_json::{json, Map, Value};
use tandem_engine::{Token, TokenLogprobs};
use tandem_llama::Model;

use crate::error::ApiError;

/// Most alternatives a request may ask for per token (OpenAI's and vLLM's default limit).
pub const MAX_TOP: i64 = 20;

/// One generated token's figures, with the text of each token involved.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLp {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(Vec<u8>, f32)>,
}

impl TokenLp {
    pub fn new(model: &Model, token: Token, lp: &TokenLogprobs) -> Self {
        Self {
            bytes: model.piece(token),
            logprob: lp.logprob,
            top: lp.top.iter().map(|&(t, l)| (model.piece(t), l)).collect(),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Chat: `logprobs: true` asks for them, `top_logprobs` (0 to 20) for alternatives.
pub fn chat_request(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<u32>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (false, None) => Ok(None),
        (false, Some(_)) => Err(ApiError::invalid(
            "top_logprobs needs logprobs set to true",
            "top_logprobs",
        )),
        (true, top) => count(top.unwrap_or(0), "top_logprobs").map(Some),
    }
}

/// What a text completion asks for: `k` alternatives for each generated token and, with
/// `echo`, for each prompt token too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompletionLogprobs {
    pub k: u32,
    pub prompt: bool,
}

/// Text completions: `logprobs: k` (0 to 20) asks for them with k alternatives; with `echo`
/// the prompt's are computed too (not streamed: a 400 says so).
pub fn completion_request(
    logprobs: Option<i64>,
    echo: bool,
    stream: bool,
) -> Result<Option<CompletionLogprobs>, ApiError> {
    let Some(k) = logprobs else {
        return Ok(None);
    };
    if echo && stream {
        return Err(ApiError::invalid(
            "echo with logprobs (the prompt's log-probabilities) is not supported when streaming",
            "stream",
        ));
    }
    let k = count(k, "logprobs")?;
    Ok(Some(CompletionLogprobs { k, prompt: echo }))
}

fn count(k: i64, field: &'static str) -> Result<u32, ApiError> {
    if !(0..=MAX_TOP).contains(&k) {
        let msg = format!("{field} must be between 0 and {MAX_TOP}, got {k}");
        return Err(ApiError::invalid(msg, field));
    }
    Ok(k as u32)
}

/// Chat's `logprobs` object for these tokens.
pub fn chat_json(entries: &[TokenLp]) -> Value {
    let one = |bytes: &[u8], logprob: f32| json!({"token": text(bytes), "logprob": logprob, "bytes": bytes});
    let content: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = one(&e.bytes, e.logprob);
            let top: Vec<Value> = e.top.iter().map(|(b, l)| one(b, *l)).collect();
            v["top_logprobs"] = Value::Array(top);
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A text completion's `logprobs` object; `offset` is the character offset of the first
/// token in the completion's text, advanced past these tokens (for the next chunk).
pub fn completion_json(entries: &[TokenLp], offset: &mut usize) -> Value {
    let mut offsets = Vec::with_capacity(entries.len());
    for e in entries {
        offsets.push(*offset);
        *offset += text(&e.bytes).chars().count();
    }
    let top: Vec<Value> = entries
        .iter()
        .map(|e| {
            // The chosen token is listed with the alternatives, as OpenAI's legacy API does.
            let mut m = Map::new();
            m.insert(text(&e.bytes), json!(e.logprob));
            for (b, l) in &e.top {
                m.insert(text(b), json!(l));
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "tokens": entries.iter().map(|e| text(&e.bytes)).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// An echoed completion's `logprobs`: the prompt's tokens, the first without figures (null,
/// as OpenAI and vLLM write it), then the generated ones.
pub fn echo_completion_json(first: Vec<u8>, prompt: &[TokenLp], generated: &[TokenLp]) -> Value {
    let head = TokenLp {
        bytes: first,
        logprob: 0.0,
        top: Vec::new(),
    };
    let all: Vec<TokenLp> = std::iter::once(head)
        .chain(prompt.iter().cloned())
        .chain(generated.iter().cloned())
        .collect();
    let mut v = completion_json(&all, &mut 0);
    v["token_logprobs"][0] = Value::Null;
    v["top_logprobs"][0] = Value::Null;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(t: &str, l: f32, top: &[(&str, f32)]) -> TokenLp {
        TokenLp {
            bytes: t.as_bytes().to_vec(),
            logprob: l,
            top: top
                .iter()
                .map(|(b, l)| (b.as_bytes().to_vec(), *l))
                .collect(),
        }
    }

    #[test]
    fn requests_are_checked() {
        assert_eq!(chat_request(None, None).unwrap(), None);
        assert_eq!(chat_request(Some(true), None).unwrap(), Some(0));
        assert_eq!(chat_request(Some(true), Some(5)).unwrap(), Some(5));
        assert!(chat_request(Some(false), Some(2)).is_err());
        assert!(chat_request(Some(true), Some(21)).is_err());
        let asks = |k, prompt| Some(CompletionLogprobs { k, prompt });
        assert_eq!(
            completion_request(Some(3), false, true).unwrap(),
            asks(3, false)
        );
        assert_eq!(
            completion_request(Some(3), true, false).unwrap(),
            asks(3, true)
        );
        assert!(completion_request(Some(3), true, true).is_err());
        assert!(completion_request(Some(-1), false, false).is_err());
        assert_eq!(completion_request(None, true, true).unwrap(), None);
    }

    #[test]
    fn chat_shape() {
        let v = chat_json(&[entry(" hi", -0.5, &[(" hi", -0.5), (" yo", -1.5)])]);
        let c = &v["content"][0];
        assert_eq!(c["token"], " hi");
        assert_eq!(c["bytes"], json!([32, 104, 105]));
        assert_eq!(c["top_logprobs"][1]["token"], " yo");
        assert_eq!(c["top_logprobs"][1]["logprob"], -1.5);
    }

    #[test]
    fn completion_shape_carries_offsets_across_chunks() {
        let mut off = 0;
        let a = completion_json(&[entry("ab", -1.0, &[("cd", -0.5)])], &mut off);
        let b = completion_json(&[entry("é", -2.0, &[])], &mut off);
        assert_eq!(a["text_offset"], json!([0]));
        assert_eq!(a["top_logprobs"][0], json!({"ab": -1.0, "cd": -0.5}));
        assert_eq!(b["text_offset"], json!([2]));
        assert_eq!(off, 3);
        assert_eq!(b["tokens"], json!(["é"]));
    }

    #[test]
    fn an_echo_starts_with_the_first_prompt_token_without_figures() {
        let prompt = [entry(" b", -1.0, &[(" c", -0.5)])];
        let v = echo_completion_json(b"a".to_vec(), &prompt, &[entry("!", -2.0, &[])]);
        assert_eq!(v["tokens"], json!(["a", " b", "!"]));
        assert_eq!(v["token_logprobs"], json!([null, -1.0, -2.0]));
        assert_eq!(v["top_logprobs"][0], Value::Null);
        assert_eq!(v["top_logprobs"][1], json!({" b": -1.0, " c": -0.5}));
        assert_eq!(v["text_offset"], json!([0, 1, 3]));
    }
}
