//! Scripted tool segments of a request (`--allow-scripted`): checked, and their tool
//! results tokenized, before the request is queued.

use std::collections::VecDeque;

use tandem_engine::{InterceptSpec, Token};

use crate::error::ApiError;
use crate::script::{self, Segment};
use crate::state::AppState;

/// The engine-facing parts of a scripted request.
pub struct Scripted {
    pub intercept: InterceptSpec,
    pub max_tokens: usize,
    pub tools: VecDeque<(f64, Vec<Token>)>,
}

/// Checks a request's scripted segments and tokenizes its tool results.
pub fn scripted(
    st: &AppState,
    segments: &[Segment],
    prompt_len: usize,
) -> Result<Scripted, ApiError> {
    if !st.allow_scripted {
        return Err(ApiError::invalid(
            "`segments` (scripted tool calls, for benchmarks) needs a server started with --allow-scripted",
            "segments",
        ));
    }
    script::check(segments).map_err(|m| ApiError::invalid(m, "segments"))?;
    let need = prompt_len + script::total_decode(segments) + script::total_results(segments);
    if need >= st.cells_per_seq {
        return Err(ApiError::context_length(format!(
            "the prompt, scripted output and tool results take {need} tokens; a sequence holds {}",
            st.cells_per_seq
        )));
    }
    let tools = script::tools(segments)
        .iter()
        .enumerate()
        .map(|(i, t)| (t.duration_s, result_tokens(st, t.result_tokens, i as u64)))
        .collect();
    Ok(Scripted {
        intercept: script::intercept_spec(segments),
        max_tokens: script::total_decode(segments),
        tools,
    })
}

/// Exactly `n` tokens of filler text.
fn result_tokens(st: &AppState, n: usize, seed: u64) -> Vec<Token> {
    let text = script::filler(n + 8, seed);
    let mut t = st.model.tokenize(&format!(" {text}"), false, false);
    while t.len() < n {
        t.extend_from_within(..);
    }
    t.truncate(n);
    t
}
