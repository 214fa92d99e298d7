//! The step plan (scheduler → runner) and the step result (runner → scheduler). The plan
//! carries every KV operation explicitly; the runner decides nothing.

use crate::prefix::Loc;
use crate::swap::SwapHandle;
use crate::types::{RequestId, SamplingParams, SeqId, Token, TokenLogprobs, TokenMask};

/// A KV-cache operation, applied by the runner before the batch runs, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum KvOp {
    /// Free every cell of the sequence.
    Clear { seq: SeqId },
    /// Keep positions `0..keep` of the sequence, free the rest (prefix reuse).
    Truncate { seq: SeqId, keep: usize },
    /// Copy the sequence's KV (`tokens` cells) to host buffer `handle`, then free its cells.
    SwapOut {
        seq: SeqId,
        handle: SwapHandle,
        tokens: usize,
    },
    /// Restore host buffer `handle` into the (empty) sequence and drop the buffer.
    SwapIn { seq: SeqId, handle: SwapHandle },
    /// Drop host buffer `handle` (its request ended while swapped out).
    DropSwap { handle: SwapHandle },
    /// Copy positions `0..keep` of another sequence's KV (`from`: a slot, or a host buffer,
    /// which both stay as they are) into the empty sequence `seq`: a prefix a new request
    /// shares with a retained conversation (system prompt, tool definitions).
    CopyPrefix { from: Loc, seq: SeqId, keep: usize },
}

/// Tokens of one request to run this step, at positions `start_pos..start_pos+tokens.len()`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanItem {
    pub request: RequestId,
    pub seq: SeqId,
    pub start_pos: usize,
    pub tokens: Vec<Token>,
    /// Sample a next token from the last token's logits with these parameters.
    pub sample: Option<SamplingParams>,
    /// Only these tokens may be sampled (a constrained request); set by the scheduler after
    /// planning.
    pub mask: Option<TokenMask>,
    /// Prompt rows to score (a request with `SamplingParams::prompt_logprobs`); `None` for
    /// nearly every item.
    pub score: Option<ScoreRows>,
    /// The last `draft` tokens are predicted, not yet output (`predict`): the runner samples
    /// from the row before them on, one `Sampled` per row, and stops after the first sampled
    /// token that differs from the drafted one (or after the last row). 0 for most items.
    pub draft: usize,
    /// A constrained drafted item's masks for the rows after each drafted token (`mask` is
    /// the first row's): one per drafted token; empty for every other item.
    pub draft_masks: Vec<Option<TokenMask>>,
}

impl PlanItem {
    /// The mask of the item's `k`-th sampled row: 0 is the row before the draft (the only
    /// one of an item without a draft), `k` the row after the `k`-th drafted token.
    pub fn row_mask(&self, k: usize) -> Option<&TokenMask> {
        match k {
            0 => self.mask.as_ref(),
            _ => self.draft_masks.get(k - 1)?.as_ref(),
        }
    }
}

/// Score the first `targets.len()` rows of an item: row `i`'s logits give the
/// log-probability of `targets[i]` (the prompt token after it), with `top` alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRows {
    pub targets: Vec<Token>,
    pub top: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepPlan {
    pub kv_ops: Vec<KvOp>,
    pub items: Vec<PlanItem>,
    /// Requests that ended: the runner drops any per-request state (sampler RNG).
    pub released: Vec<RequestId>,
}

impl StepPlan {
    pub fn batch_tokens(&self) -> usize {
        self.items.iter().map(|i| i.tokens.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.kv_ops.is_empty() && self.items.is_empty() && self.released.is_empty()
    }
}

/// One sampled token. `eog` is the model's verdict that it ends generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub request: RequestId,
    pub token: Token,
    pub eog: bool,
    /// When the request asked for them (`SamplingParams::logprobs`).
    pub logprobs: Option<TokenLogprobs>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepResult {
    pub sampled: Vec<Sampled>,
    pub scored: Vec<Scored>,
    /// Forward passes (llama.cpp ubatches) the step ran: `ubatch::plan_passes`.
    pub passes: usize,
}

/// The figures of an item's scored rows (`PlanItem::score`), in row order.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub request: RequestId,
    /// Position of the item's first row.
    pub start_pos: usize,
    pub logprobs: Vec<TokenLogprobs>,
}
