//! The llama.cpp runner: applies a plan's KV operations (including swaps to and from host
//! buffers through llama.cpp's per-sequence state API), decodes its tokens as one batch and
//! samples where the plan asks, with per-request sampler state kept until the plan releases it.
//! Its costs come from the startup profile (`profile.rs`) or are given (`use_costs`).

use std::collections::HashMap;
use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::{LlamaStateSeqFlags, SeqState};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use tandem_engine::ubatch::plan_passes;
use tandem_engine::{
    CostModel, KvOp, Loc, PlanItem, RequestId, Runner, RunnerError, Sampled, SamplingParams,
    Scored, StepPlan, StepResult, SwapHandle, TokenLogprobs, TokenMask,
};

use crate::model::{backend, Model, ModelError};

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub n_slots: usize,
    pub cells_per_seq: usize,
    pub max_batch_tokens: usize,
    pub threads: usize,
    /// llama.cpp flash attention: `None` lets llama.cpp decide.
    pub flash_attn: Option<bool>,
    /// One shared KV pool instead of a stream per sequence. Only for the layout measurement
    /// (examples/kv_layout.rs): the engine's accounting assumes per-sequence streams.
    pub kv_unified: bool,
}

pub struct LlamaRunner {
    pub(crate) model: Model,
    pub(crate) ctx: LlamaContext<'static>,
    pub(crate) batch: LlamaBatch<'static>,
    samplers: HashMap<RequestId, LlamaSampler>,
    /// Swapped-out sequences (the host swap pool's contents).
    host: HashMap<SwapHandle, SeqState>,
    pub(crate) max_batch_tokens: usize,
    pub(crate) cells_per_seq: usize,
    pub(crate) n_slots: usize,
    /// A KV stream per sequence (not unified, more than one slot): how llama.cpp cuts a
    /// batch into passes (`tandem_engine::ubatch`).
    streams: bool,
    /// The interception policy's costs once known: given (`use_costs`) or profiled by the
    /// first `profile`, which later calls return.
    costs: Option<CostModel>,
}

/// A cost profile that does not fit this runner.
#[derive(Debug, thiserror::Error)]
pub enum CostsError {
    #[error("it gives {given} KV bytes per token, but this model takes {measured}: it was measured with another model (or another KV type)")]
    OtherModel { given: usize, measured: usize },
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// The request's llama.cpp sampler chain, in llama.cpp's own order: logit bias, penalties
/// (over the tokens this sampler accepted, i.e. the request's sampled tokens, at most
/// `history` of them), then greedy, or top-k, top-p, min-p, temperature and a seeded draw.
fn make_sampler(p: &SamplingParams, n_vocab: i32, history: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    if !p.logit_bias.is_empty() {
        let bias: Vec<LlamaLogitBias> = p
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &bias));
    }
    let q = &p.penalties;
    if !q.is_off() {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            history,
            q.repeat,
            q.frequency,
            q.presence,
        ));
    }
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    let seed = p
        .seed
        .map_or(RANDOM_SEED, |s| (s % u64::from(u32::MAX)) as u32);
    if p.top_k > 0 {
        chain.push(LlamaSampler::top_k(p.top_k as i32));
    }
    chain.push(LlamaSampler::top_p(p.top_p, 1));
    if p.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(p.min_p, 1));
    }
    chain.push(LlamaSampler::temp(p.temperature));
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

fn flash_policy(on: Option<bool>) -> llama_cpp_sys_2::llama_flash_attn_type {
    match on {
        None => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
        Some(true) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        Some(false) => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    }
}

impl LlamaRunner {
    pub fn new(model: Model, cfg: &RunnerConfig) -> Result<Self, ModelError> {
        let n_ctx = (cfg.n_slots * cfg.cells_per_seq) as u32;
        let threads = cfg.threads as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(cfg.max_batch_tokens as u32)
            .with_n_ubatch(cfg.max_batch_tokens as u32)
            .with_n_seq_max(cfg.n_slots as u32)
            .with_kv_unified(cfg.kv_unified)
            .with_flash_attention_policy(flash_policy(cfg.flash_attn))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model
            .inner
            .new_context(backend()?, params)
            .map_err(|e| ModelError::Context(e.to_string()))?;
        let batch = LlamaBatch::new(cfg.max_batch_tokens, 1);
        let max_batch_tokens = cfg.max_batch_tokens;
        Ok(Self {
            model,
            ctx,
            batch,
            samplers: HashMap::new(),
            host: HashMap::new(),
            max_batch_tokens,
            cells_per_seq: cfg.cells_per_seq,
            n_slots: cfg.n_slots,
            streams: !cfg.kv_unified && cfg.n_slots > 1,
            costs: None,
        })
    }

    /// Takes these costs instead of profiling at startup (a saved profile: the same policy
    /// decisions at every start, and a start seconds faster). Checked against the model by
    /// its KV bytes per token, within 2%.
    pub fn use_costs(&mut self, costs: CostModel) -> Result<(), CostsError> {
        let measured = crate::profile::kv_bytes_per_token(self)?;
        let given = costs.kv_bytes_per_token;
        if given.abs_diff(measured) * 50 > measured {
            return Err(CostsError::OtherModel { given, measured });
        }
        self.costs = Some(costs);
        Ok(())
    }

    fn apply(&mut self, op: &KvOp) -> Result<(), RunnerError> {
        match *op {
            KvOp::Clear { seq } => self.remove(seq, 0),
            KvOp::Truncate { seq, keep } => self.remove(seq, keep),
            KvOp::SwapOut { seq, handle, .. } => {
                let state = self.save(seq)?;
                self.host.insert(handle, state);
                self.remove(seq, 0)
            }
            KvOp::SwapIn { seq, handle } => {
                let state = self.take_host(handle)?;
                self.restore(&state, seq)
            }
            KvOp::DropSwap { handle } => {
                self.host.remove(&handle);
                Ok(())
            }
            KvOp::CopyPrefix { from, seq, keep } => self.copy_prefix(from, seq, keep),
        }
    }

    /// Copies positions `0..keep` of a slot or host buffer into the empty sequence `seq`: the
    /// state API copies a sequence whole, so the rest is removed after.
    fn copy_prefix(&mut self, from: Loc, seq: i32, keep: usize) -> Result<(), RunnerError> {
        match from {
            Loc::Device(src) => {
                let state = self.save(src)?;
                self.restore(&state, seq)?;
            }
            Loc::Host(h) => {
                // Out of the pool and back (a move, not a copy): the retained entry keeps it.
                let state = self.take_host(h)?;
                let restored = self.restore(&state, seq);
                self.host.insert(h, state);
                restored?;
            }
        }
        self.remove(seq, keep)
    }

    /// Takes host buffer `handle` out of the pool.
    fn take_host(&mut self, handle: SwapHandle) -> Result<SeqState, RunnerError> {
        self.host
            .remove(&handle)
            .ok_or_else(|| RunnerError::Kv(format!("no swap buffer {handle}")))
    }

    /// Frees positions `keep..` of the sequence.
    pub(crate) fn remove(&mut self, seq: i32, keep: usize) -> Result<(), RunnerError> {
        let p0 = (keep > 0).then_some(keep as u32);
        match self.ctx.clear_kv_cache_seq(Some(seq as u32), p0, None) {
            Ok(true) => Ok(()),
            Ok(false) => Err(RunnerError::Kv(format!(
                "removing seq {seq} from {keep} refused by llama.cpp"
            ))),
            Err(e) => Err(RunnerError::Kv(e.to_string())),
        }
    }

    /// Copies the sequence's KV to a host buffer.
    pub(crate) fn save(&self, seq: i32) -> Result<SeqState, RunnerError> {
        self.ctx
            .state_seq_get(seq, LlamaStateSeqFlags::empty())
            .map_err(|e| RunnerError::Kv(format!("swap out of seq {seq}: {e}")))
    }

    /// Copies a host buffer into the (empty) sequence.
    pub(crate) fn restore(&mut self, state: &SeqState, seq: i32) -> Result<(), RunnerError> {
        self.ctx
            .state_seq_set(state, seq)
            .map_err(|e| RunnerError::Kv(format!("swap in to seq {seq}: {e}")))
    }

    /// Fills the batch; returns each item's first row index in the batch. Rows get logits
    /// where they sample (an item's last, or from the row before a draft on) or score
    /// (`PlanItem::score`, its first ones).
    pub(crate) fn fill_batch(&mut self, items: &[PlanItem]) -> Result<Vec<i32>, RunnerError> {
        self.batch.clear();
        let mut firsts = Vec::with_capacity(items.len());
        for item in items {
            firsts.push(self.batch.n_tokens());
            let last = item.tokens.len() - 1;
            let scored = item.score.as_ref().map_or(0, |s| s.targets.len());
            for (i, &t) in item.tokens.iter().enumerate() {
                let logits = (i + item.draft >= last && item.sample.is_some()) || i < scored;
                let pos = (item.start_pos + i) as i32;
                self.batch
                    .add(LlamaToken(t), pos, &[item.seq], logits)
                    .map_err(|e| RunnerError::Decode(e.to_string()))?;
            }
        }
        Ok(firsts)
    }

    /// The figures of an item's scored rows, its first at batch row `first`.
    fn score(&self, item: &PlanItem, first: i32) -> Option<Scored> {
        let rows = item.score.as_ref()?;
        let k = rows.top as usize;
        let row = |i: usize| self.ctx.get_logits_ith(first + i as i32);
        let lps = rows.targets.iter().enumerate();
        Some(Scored {
            request: item.request,
            start_pos: item.start_pos,
            logprobs: lps.map(|(i, &t)| logprobs(row(i), t, k)).collect(),
        })
    }

    /// The item's sampled tokens: from its last row, or for a drafted item from each row
    /// from the one before the draft, in order, up to the first token that differs from the
    /// drafted one. Each is sampled as without a draft (the sampler sees every kept token).
    fn sample_rows(&mut self, item: &PlanItem, first: i32) -> Vec<Sampled> {
        let n = item.tokens.len();
        let mut out = Vec::with_capacity(item.draft + 1);
        for (k, i) in (n - 1 - item.draft..n).enumerate() {
            let s = self.sample(item, first + i as i32, item.row_mask(k));
            let drafted = item.tokens.get(i + 1).copied();
            let go_on = i + 1 < n && drafted == Some(s.token);
            out.push(s);
            if !go_on {
                break;
            }
        }
        out
    }

    fn sample(&mut self, item: &PlanItem, row: i32, mask: Option<&TokenMask>) -> Sampled {
        let params = item.sample.as_ref().expect("sampling item");
        let (n_vocab, history) = (self.model.n_vocab() as i32, self.cells_per_seq as i32);
        let sampler = self
            .samplers
            .entry(item.request)
            .or_insert_with(|| make_sampler(params, n_vocab, history));
        let token = match mask {
            None => sampler.sample(&self.ctx, row).0,
            Some(mask) => sample_masked(&self.ctx, row, sampler, mask),
        };
        let logprobs = params
            .logprobs
            .map(|k| logprobs(self.ctx.get_logits_ith(row), token, k as usize));
        Sampled {
            request: item.request,
            token,
            eog: self.model.is_eog(token),
            logprobs,
        }
    }
}

/// `token`'s log-probability under the raw logits (a log-softmax over the whole vocabulary)
/// and the `k` most likely tokens with theirs, best first.
fn logprobs(logits: &[f32], token: i32, k: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let norm = max + sum.ln() as f32;
    let lp = |t: usize| logits.get(t).map_or(f32::NEG_INFINITY, |l| l - norm);
    TokenLogprobs {
        logprob: lp(token as usize),
        top: top_ids(logits, k)
            .into_iter()
            .map(|t| (t as i32, lp(t)))
            .collect(),
    }
}

/// The ids of the `k` largest logits, largest first.
fn top_ids(logits: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]);
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    if k < ids.len() {
        ids.select_nth_unstable_by(k - 1, by_logit);
        ids.truncate(k);
    }
    ids.sort_by(by_logit);
    ids
}

/// Samples among the tokens a constrained request may take: only they become candidates
/// (read off the mask's set bits, so a narrow mask costs little), then the sampler chain runs
/// as usual. An empty mask, which a grammar never gives, falls back to all tokens.
fn sample_masked(ctx: &LlamaContext, row: i32, sampler: &mut LlamaSampler, mask: &[u32]) -> i32 {
    let logits = ctx.get_logits_ith(row);
    let mut allowed = Vec::new();
    for (w, &bits) in mask.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            let t = w * 32 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(&logit) = logits.get(t) {
                allowed.push(LlamaTokenData::new(LlamaToken(t as i32), logit, 0.0));
            }
        }
    }
    if allowed.is_empty() {
        return sampler.sample(ctx, row).0;
    }
    let mut data = LlamaTokenDataArray::new(allowed, false);
    data.apply_sampler(sampler);
    let token = data.selected_token().unwrap_or(data.data[0].id());
    sampler.accept(token);
    token.0
}

impl Runner for LlamaRunner {
    fn execute(&mut self, plan: &StepPlan) -> Result<StepResult, RunnerError> {
        for id in &plan.released {
            self.samplers.remove(id);
        }
        for op in &plan.kv_ops {
            self.apply(op)?;
        }
        if plan.items.is_empty() {
            return Ok(StepResult::default());
        }
        if plan.batch_tokens() > self.max_batch_tokens {
            return Err(RunnerError::Decode("plan exceeds the batch size".into()));
        }
        let firsts = self.fill_batch(&plan.items)?;
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| RunnerError::Decode(e.to_string()))?;
        let items = || plan.items.iter().zip(firsts.iter().copied());
        let scored = items()
            .filter_map(|(item, first)| self.score(item, first))
            .collect();
        let sampled = items()
            .filter(|(item, _)| item.sample.is_some())
            .flat_map(|(item, first)| self.sample_rows(item, first))
            .collect();
        let passes = plan_passes(&plan.items, self.max_batch_tokens, self.streams);
        Ok(StepResult {
            sampled,
            scored,
            passes,
        })
    }

    fn profile(&mut self) -> Result<CostModel, RunnerError> {
        if let Some(c) = self.costs {
            return Ok(c);
        }
        let c = crate::profile::measure(self)?;
        self.costs = Some(c);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0_f32.ln()];
        let lp = logprobs(&logits, 2, 2);
        let total: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((lp.logprob - (2.0f32.exp() / total).ln()).abs() < 1e-5);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((lp.top[0].1 - (3.0f32.exp() / total).ln()).abs() < 1e-5);
        assert!(logprobs(&logits, 0, 0).top.is_empty());
        assert_eq!(
            logprobs(&logits, 0, 9).top.len(),
            4,
            "k is capped by the vocabulary"
        );
    }
}
