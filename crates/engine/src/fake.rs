//! A deterministic fake runner for scheduler tests: it keeps the actual token contents of each
//! sequence's KV, checks every plan against them (contiguous positions, capacity, no use of a
//! freed sequence), and "samples" a token that is a hash of the sequence's whole KV content,
//! so a wrong prefix reuse or lost KV changes the output just as it would with a real model.

use std::collections::HashMap;

use crate::clock::ManualClock;
use crate::cost::CostModel;
use crate::plan::{KvOp, PlanItem, Sampled, Scored, StepPlan, StepResult};
use crate::prefix::Loc;
use crate::swap::SwapHandle;
use crate::types::{SeqId, Token, TokenLogprobs};
use crate::ubatch::plan_passes;
use crate::{Runner, RunnerError};

pub struct FakeRunner {
    pub n_slots: usize,
    pub cells_per_seq: usize,
    pub vocab: i32,
    pub eog: Token,
    /// Each step advances this clock by `step_base_s + step_per_token_s * batch_tokens`.
    pub clock: Option<ManualClock>,
    pub step_base_s: f64,
    pub step_per_token_s: f64,
    /// Fail the next `execute` with a decode error.
    pub fail_next: bool,
    /// What `profile` reports.
    pub cost: CostModel,
    kv: HashMap<SeqId, Vec<Token>>,
    host: HashMap<SwapHandle, Vec<Token>>,
    pub steps: usize,
    pub batch_sizes: Vec<usize>,
    /// Forward passes of each step (`StepResult::passes`).
    pub passes: Vec<usize>,
    /// A model that copies: after a token that occurred earlier in the context, the token
    /// that followed its first occurrence (prompt-lookup tests).
    pub echo: bool,
}

fn echoed(context: &[Token]) -> Option<Token> {
    let (&last, earlier) = context.split_last()?;
    let i = earlier.iter().position(|&t| t == last)?;
    Some(context[i + 1])
}

impl FakeRunner {
    pub fn new(n_slots: usize, cells_per_seq: usize) -> Self {
        Self {
            n_slots,
            cells_per_seq,
            vocab: 1000,
            eog: 2,
            clock: None,
            step_base_s: 0.01,
            step_per_token_s: 0.001,
            fail_next: false,
            cost: CostModel::default(),
            kv: HashMap::new(),
            host: HashMap::new(),
            steps: 0,
            batch_sizes: Vec::new(),
            passes: Vec::new(),
            echo: false,
        }
    }

    /// Tokens held in the sequence's KV.
    pub fn seq(&self, seq: SeqId) -> &[Token] {
        self.kv.get(&seq).map_or(&[], Vec::as_slice)
    }

    pub fn used_cells(&self) -> usize {
        self.kv.values().map(Vec::len).sum()
    }

    /// Tokens held in each host buffer.
    pub fn host(&self) -> &HashMap<SwapHandle, Vec<Token>> {
        &self.host
    }

    /// The token a context of exactly these tokens produces.
    pub fn next_token(&self, context: &[Token]) -> Token {
        if self.echo {
            if let Some(t) = echoed(context) {
                return t;
            }
        }
        let mut h: u64 = 0xcbf29ce484222325;
        for t in context {
            h = (h ^ (*t as u64)).wrapping_mul(0x100000001b3);
        }
        (h % self.vocab as u64) as Token
    }

    /// The item's sampled tokens: one from its last row, or for a drafted item one per row
    /// from the row before the draft, up to the first that differs from the drafted token.
    fn sample_rows(&self, item: &PlanItem) -> Vec<Sampled> {
        let seq = self.seq(item.seq);
        let first = seq.len() - item.draft;
        let logprobs = item.sample.as_ref().and_then(|p| p.logprobs);
        let mut out = Vec::new();
        for (k, row) in (first..=seq.len()).enumerate() {
            let mut token = self.next_token(&seq[..row]);
            if let Some(mask) = item.row_mask(k) {
                token = first_allowed(mask, token);
            }
            out.push(Sampled {
                request: item.request,
                token,
                eog: token == self.eog,
                logprobs: logprobs.map(|k| fake_logprobs(token, k)),
            });
            if seq.get(row) != Some(&token) {
                break;
            }
        }
        out
    }

    fn apply(&mut self, op: &KvOp) -> Result<(), RunnerError> {
        match *op {
            KvOp::Clear { seq } => {
                self.kv.remove(&seq);
            }
            KvOp::Truncate { seq, keep } => {
                let s = self
                    .kv
                    .get_mut(&seq)
                    .ok_or(RunnerError::Kv(format!("no seq {seq}")))?;
                assert!(keep <= s.len(), "truncate beyond end of seq {seq}");
                s.truncate(keep);
            }
            KvOp::SwapOut {
                seq,
                handle,
                tokens,
            } => {
                let s = self.kv.remove(&seq).unwrap_or_default();
                assert_eq!(s.len(), tokens, "swap-out size of seq {seq}");
                assert!(self.host.insert(handle, s).is_none(), "handle reused");
            }
            KvOp::SwapIn { seq, handle } => {
                let s = self
                    .host
                    .remove(&handle)
                    .ok_or(RunnerError::Kv(format!("no swap buffer {handle}")))?;
                assert!(self.seq(seq).is_empty(), "swap-in into a used seq {seq}");
                self.kv.insert(seq, s);
            }
            KvOp::DropSwap { handle } => {
                assert!(
                    self.host.remove(&handle).is_some(),
                    "drop of unknown {handle}"
                );
            }
            KvOp::CopyPrefix { from, seq, keep } => {
                let src = match from {
                    Loc::Device(s) => self.kv.get(&s),
                    Loc::Host(h) => self.host.get(&h),
                }
                .ok_or(RunnerError::Kv(format!("no copy source {from:?}")))?;
                assert!(keep <= src.len(), "copy beyond the end of {from:?}");
                let head = src[..keep].to_vec();
                assert!(self.seq(seq).is_empty(), "copy into a used seq {seq}");
                self.kv.insert(seq, head);
            }
        }
        Ok(())
    }
}

impl Runner for FakeRunner {
    fn execute(&mut self, plan: &StepPlan) -> Result<StepResult, RunnerError> {
        for op in &plan.kv_ops {
            self.apply(op)?;
        }
        if std::mem::take(&mut self.fail_next) {
            return Err(RunnerError::Decode("injected failure".into()));
        }
        let mut sampled = Vec::new();
        let mut scored = Vec::new();
        for item in &plan.items {
            assert!(
                (item.seq as usize) < self.n_slots,
                "seq {} out of range",
                item.seq
            );
            let s = self.kv.entry(item.seq).or_default();
            assert_eq!(
                item.start_pos,
                s.len(),
                "non-contiguous positions in seq {}",
                item.seq
            );
            s.extend_from_slice(&item.tokens);
            if let Some(rows) = &item.score {
                assert!(
                    rows.targets.len() <= item.tokens.len(),
                    "more scores than rows"
                );
                let lps = rows.targets.iter().map(|&t| fake_logprobs(t, rows.top));
                scored.push(Scored {
                    request: item.request,
                    start_pos: item.start_pos,
                    logprobs: lps.collect(),
                });
            }
            assert!(
                s.len() <= self.cells_per_seq,
                "seq {} over capacity",
                item.seq
            );
            if item.sample.is_some() {
                sampled.extend(self.sample_rows(item));
            }
        }
        self.steps += 1;
        self.batch_sizes.push(plan.batch_tokens());
        if let Some(c) = &self.clock {
            c.advance(self.step_base_s + self.step_per_token_s * plan.batch_tokens() as f64);
        }
        // A stream per sequence, as the llama runner has; a ubatch as large as the batch.
        let passes = plan_passes(&plan.items, plan.batch_tokens(), true);
        self.passes.push(passes);
        Ok(StepResult {
            sampled,
            scored,
            passes,
        })
    }

    fn profile(&mut self) -> Result<CostModel, RunnerError> {
        Ok(self.cost)
    }
}

/// Made-up but consistent log-probabilities: the sampled token first, then `k - 1` others.
fn fake_logprobs(token: Token, k: u32) -> TokenLogprobs {
    let logprob = -0.5;
    let top = (0..k as Token)
        .map(|i| (token + i, logprob - i as f32))
        .collect();
    TokenLogprobs { logprob, top }
}

/// The first token at or after `token` (wrapping) that `mask` allows; `token` if none is.
fn first_allowed(mask: &[u32], token: Token) -> Token {
    let n = (mask.len() * 32) as Token;
    (0..n)
        .map(|i| (token + i).rem_euclid(n))
        .find(|&t| crate::types::mask_allows(mask, t))
        .unwrap_or(token)
}
