//! A request inside the scheduler: its full token sequence, how much of it is in KV, and its
//! generation limits. Prefill, decode and (later) resumed tool output are the same thing here:
//! tokens not yet run.

use tokio::sync::mpsc::UnboundedSender;

use crate::types::{Event, RequestId, SamplingParams, SeqId, Token, Usage};

#[derive(Debug)]
pub struct Active {
    pub id: RequestId,
    pub seq: SeqId,
    /// Prompt, then every generated token (the last one is not in KV until the next step).
    pub tokens: Vec<Token>,
    /// Tokens whose KV is at positions `0..n_cached` of `seq`.
    pub n_cached: usize,
    pub prompt_len: usize,
    /// Prompt tokens taken from a retained sequence.
    pub reused: usize,
    pub generated: usize,
    /// Already clipped to the slot's capacity.
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub events: UnboundedSender<Event>,
    pub arrival: f64,
    pub last_token_at: Option<f64>,
}

impl Active {
    /// Tokens still to run through the model.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.n_cached
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated,
            cached_tokens: self.reused,
        }
    }
}
