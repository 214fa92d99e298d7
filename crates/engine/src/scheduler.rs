//! The scheduler: admits requests into KV slots (reusing retained prefixes), fills each step's
//! token budget — decode tokens of running requests first, then prefill chunks in arrival
//! order — and turns the runner's samples into events, finishing requests on EOG or length.

use std::collections::VecDeque;

use crate::kv::KvPool;
use crate::plan::{KvOp, PlanItem, Sampled, StepPlan, StepResult};
use crate::prefix::{Retained, RetainedSet};
use crate::request::Active;
use crate::types::{Event, FinishReason, NewRequest, RequestId};

/// Which retained KV a new request may reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrefixReuse {
    /// Only KV written by prefill (multi-token chunks). llama.cpp's CPU kernels round
    /// differently for a one-row batch than for a multi-row one, so KV written while decoding
    /// is not bit-identical to what a cold prefill of the same tokens writes; reusing only
    /// prefill KV keeps a reused request's output identical to a cold one.
    #[default]
    Exact,
    /// Also KV written while decoding (the previous reply): less prefill on follow-ups, but
    /// greedy output can differ slightly from a cold request (as with llama-server's cache).
    All,
    /// No reuse.
    Off,
}

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most tokens run in one step (decode tokens plus prefill chunks).
    pub max_batch_tokens: usize,
    /// KV slots = most sequences (running plus retained) at once.
    pub n_slots: usize,
    pub cells_per_seq: usize,
    pub prefix_reuse: PrefixReuse,
}

/// Prefill chunks are at least this long (unless the whole remainder is shorter), so every
/// prompt token's KV is computed by the same multi-row kernels however the budget splits it.
const MIN_PREFILL_CHUNK: usize = 2;

struct Waiting {
    id: RequestId,
    req: NewRequest,
    arrival: f64,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvPool,
    retained: RetainedSet,
    waiting: VecDeque<Waiting>,
    /// Admitted requests in arrival order.
    running: Vec<Active>,
    ops: Vec<KvOp>,
    released: Vec<RequestId>,
}

/// Counters the engine exports as gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
    pub retained: usize,
    pub kv_used: usize,
    pub kv_free: usize,
}

impl Scheduler {
    /// Smallest step budget for `n_slots`: every running request may take one decode token
    /// and a prefill chunk (≥ `MIN_PREFILL_CHUNK`, never leaving one token) must still fit,
    /// or prompts could wait forever behind decodes.
    pub fn min_batch_tokens(n_slots: usize) -> usize {
        n_slots + MIN_PREFILL_CHUNK + 1
    }

    pub fn new(cfg: SchedulerConfig) -> Self {
        assert!(cfg.n_slots > 0 && cfg.cells_per_seq > 1);
        assert!(
            cfg.max_batch_tokens >= Self::min_batch_tokens(cfg.n_slots),
            "step budget too small"
        );
        let kv = KvPool::new(cfg.n_slots, cfg.cells_per_seq);
        Self {
            cfg,
            kv,
            retained: RetainedSet::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            ops: Vec::new(),
            released: Vec::new(),
        }
    }

    /// Longest prompt a request may have (one cell stays free for a generated token).
    pub fn max_prompt_tokens(&self) -> usize {
        self.cfg.cells_per_seq - 1
    }

    /// Queues a request. A prompt that is empty or cannot fit a slot fails at once.
    pub fn add(&mut self, id: RequestId, req: NewRequest, now: f64) {
        let n = req.prompt.len();
        if n == 0 || n > self.max_prompt_tokens() {
            let msg = format!(
                "prompt has {n} tokens; allowed 1..={}",
                self.max_prompt_tokens()
            );
            let _ = req.events.send(Event::Failed(msg));
            return;
        }
        self.waiting.push_back(Waiting {
            id,
            req,
            arrival: now,
        });
    }

    /// Drops a waiting request, or ends a running one and retains its KV. Unknown ids are
    /// ignored (the request may have finished in the meantime).
    pub fn cancel(&mut self, id: RequestId, now: f64) {
        self.waiting.retain(|w| w.id != id);
        if let Some(pos) = self.running.iter().position(|r| r.id == id) {
            let r = self.running.remove(pos);
            self.retire(r, now);
        }
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.running.is_empty()
            && self.ops.is_empty()
            && self.released.is_empty()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            retained: self.retained.len(),
            kv_used: self.kv.used_cells(),
            kv_free: self.kv.free_cells(),
        }
    }

    pub fn kv(&self) -> &KvPool {
        &self.kv
    }

    /// Frees every retained sequence (e.g. on shutdown, or in tests to check for leaks).
    pub fn evict_all_retained(&mut self) {
        for e in self.retained.drain() {
            self.evict(e);
        }
    }

    /// Builds the next step's plan.
    pub fn schedule(&mut self, now: f64) -> StepPlan {
        self.reap_disconnected(now);
        let mut budget = self.cfg.max_batch_tokens;
        let mut items = Vec::new();
        for r in self.running.iter().filter(|r| r.pending() == 1) {
            if budget == 0 {
                break;
            }
            items.push(chunk(r, 1));
            budget -= 1;
        }
        for r in self.running.iter().filter(|r| r.pending() > 1) {
            push_prefill(&mut items, &mut budget, r);
        }
        // Admit only while a newcomer's chunk surely fits: with a budget above
        // MIN_PREFILL_CHUNK, `prefill_chunk` finds one for any prompt, so no slot is taken by a
        // request that cannot run this step.
        while budget > MIN_PREFILL_CHUNK && self.admit_front() {
            let r = self.running.last().expect("just admitted");
            let pushed = push_prefill(&mut items, &mut budget, r);
            debug_assert!(pushed, "a chunk fits any budget above MIN_PREFILL_CHUNK");
        }
        // Rows in sequence order: llama.cpp splits a batch over per-sequence KV streams into
        // ubatches, and an unordered one can cost extra ubatches (docs/architecture.md).
        items.sort_by_key(|i| i.seq);
        StepPlan {
            kv_ops: std::mem::take(&mut self.ops),
            items,
            released: std::mem::take(&mut self.released),
        }
    }

    /// KV operations decided but not yet handed to the runner.
    pub fn pending_kv_ops(&self) -> usize {
        self.ops.len()
    }

    /// Applies a step's result: advances KV, emits tokens, finishes requests.
    pub fn update(&mut self, plan: &StepPlan, result: &StepResult, now: f64) {
        for item in &plan.items {
            if let Some(r) = self.running.iter_mut().find(|r| r.id == item.request) {
                r.n_cached += item.tokens.len();
                self.kv.set_used(r.seq, r.n_cached);
            }
        }
        for s in &result.sampled {
            self.accept(s, now);
        }
    }

    /// Fails every request in a plan the runner could not execute and clears their KV.
    pub fn fail_plan(&mut self, plan: &StepPlan, msg: &str) {
        for item in &plan.items {
            if let Some(pos) = self.running.iter().position(|r| r.id == item.request) {
                let r = self.running.remove(pos);
                let _ = r.events.send(Event::Failed(msg.to_string()));
                self.ops.push(KvOp::Clear { seq: r.seq });
                self.kv.free(r.seq);
                self.released.push(r.id);
            }
        }
    }

    fn accept(&mut self, s: &Sampled, now: f64) {
        let Some(pos) = self.running.iter().position(|r| r.id == s.request) else {
            return;
        };
        let r = &mut self.running[pos];
        r.generated += 1;
        record_latency(r, now);
        let finish = if s.eog && !r.ignore_eos {
            Some(FinishReason::Stop)
        } else {
            r.tokens.push(s.token);
            metrics::counter!("tandem_generation_tokens_total").increment(1);
            let sent = r.events.send(Event::Token(s.token)).is_ok();
            (!sent || r.generated >= r.max_tokens).then_some(FinishReason::Length)
        };
        if let Some(reason) = finish {
            let r = self.running.remove(pos);
            let _ = r.events.send(Event::Finished {
                reason,
                usage: r.usage(),
            });
            self.retire(r, now);
        }
    }

    /// Ends a running request: its valid KV becomes a retained sequence.
    fn retire(&mut self, r: Active, now: f64) {
        self.released.push(r.id);
        let keep = match self.cfg.prefix_reuse {
            PrefixReuse::All => r.n_cached,
            PrefixReuse::Exact => r.n_cached.min(r.prompt_len),
            PrefixReuse::Off => 0,
        };
        if keep == 0 {
            self.ops.push(KvOp::Clear { seq: r.seq });
            self.kv.free(r.seq);
            return;
        }
        if keep < r.n_cached {
            self.ops.push(KvOp::Truncate { seq: r.seq, keep });
            self.kv.set_used(r.seq, keep);
        }
        let tokens = r.tokens[..keep].to_vec();
        self.retained.insert(Retained {
            seq: r.seq,
            tokens,
            last_used: now,
        });
    }

    fn evict(&mut self, e: Retained) {
        self.ops.push(KvOp::Clear { seq: e.seq });
        self.kv.free(e.seq);
    }

    /// Cancels requests whose owner dropped its event receiver (client gone).
    fn reap_disconnected(&mut self, now: f64) {
        self.waiting.retain(|w| !w.req.events.is_closed());
        let gone: Vec<_> = self
            .running
            .iter()
            .filter(|r| r.events.is_closed())
            .map(|r| r.id)
            .collect();
        for id in gone {
            self.cancel(id, now);
        }
    }

    /// Admits the oldest waiting request if a slot can be had. Returns whether it did.
    fn admit_front(&mut self) -> bool {
        let Some(w) = self.waiting.front() else {
            return false;
        };
        let no_free = self.kv.free_slots() == 0;
        let (seq, reused) = match self.retained.take_match(&w.req.prompt, no_free) {
            Some((e, n)) => (e.seq, self.reuse(e, n, w.req.prompt.len())),
            None => match self.kv.alloc().or_else(|| self.evict_lru_and_alloc()) {
                Some(seq) => (seq, 0),
                None => return false,
            },
        };
        let w = self.waiting.pop_front().expect("front exists");
        metrics::counter!("tandem_prompt_tokens_total").increment(w.req.prompt.len() as u64);
        metrics::counter!("tandem_prefix_reused_tokens_total").increment(reused as u64);
        self.running
            .push(activate(w, seq, reused, self.cfg.cells_per_seq));
        true
    }

    /// Keeps the first `matched` cells of a retained sequence for a prompt of `prompt_len`
    /// tokens. At least `MIN_PREFILL_CHUNK` prompt tokens are always run (there must be
    /// logits to sample from, and a one-token prefill would use the decode kernels).
    fn reuse(&mut self, e: Retained, matched: usize, prompt_len: usize) -> usize {
        let keep = matched.min(prompt_len.saturating_sub(MIN_PREFILL_CHUNK));
        if keep < e.tokens.len() {
            self.ops.push(KvOp::Truncate { seq: e.seq, keep });
        }
        self.kv.set_used(e.seq, keep);
        keep
    }

    fn evict_lru_and_alloc(&mut self) -> Option<i32> {
        let e = self.retained.pop_lru()?;
        self.evict(e);
        self.kv.alloc()
    }
}

fn activate(w: Waiting, seq: i32, reused: usize, cells_per_seq: usize) -> Active {
    let prompt_len = w.req.prompt.len();
    Active {
        id: w.id,
        seq,
        n_cached: reused,
        prompt_len,
        reused,
        generated: 0,
        max_tokens: w.req.max_tokens.min(cells_per_seq - prompt_len).max(1),
        ignore_eos: w.req.ignore_eos,
        sampling: w.req.sampling,
        events: w.req.events,
        tokens: w.req.prompt,
        arrival: w.arrival,
        last_token_at: None,
    }
}

/// How many of `pending` (> 1) prompt tokens to prefill within `budget`: at least
/// `MIN_PREFILL_CHUNK`, and never leaving exactly one behind (it would run as a one-row batch).
fn prefill_chunk(pending: usize, budget: usize) -> Option<usize> {
    let mut n = pending.min(budget);
    if pending - n == 1 {
        n -= 1;
    }
    (n >= MIN_PREFILL_CHUNK).then_some(n)
}

/// Adds the request's next prefill chunk if one fits the budget; returns whether it did.
fn push_prefill(items: &mut Vec<PlanItem>, budget: &mut usize, r: &Active) -> bool {
    let Some(n) = prefill_chunk(r.pending(), *budget) else {
        return false;
    };
    items.push(chunk(r, n));
    *budget -= n;
    true
}

/// The next `n` pending tokens of a request; samples when they reach its end.
fn chunk(r: &Active, n: usize) -> PlanItem {
    let start = r.n_cached;
    PlanItem {
        request: r.id,
        seq: r.seq,
        start_pos: start,
        tokens: r.tokens[start..start + n].to_vec(),
        sample: (start + n == r.tokens.len()).then(|| r.sampling.clone()),
    }
}

fn record_latency(r: &mut Active, now: f64) {
    match r.last_token_at {
        None => metrics::histogram!("tandem_time_to_first_token_seconds").record(now - r.arrival),
        Some(t) => metrics::histogram!("tandem_inter_token_latency_seconds").record(now - t),
    }
    r.last_token_at = Some(now);
}
