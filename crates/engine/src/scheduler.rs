//! The scheduler: fills each step's token budget — decode tokens of running requests first,
//! then prefill chunks in arrival order, then admissions (`admit.rs`) — and turns the
//! runner's samples into events, finishing requests on EOG or length and pausing them at
//! interceptions (`intercept.rs` places paused requests' KV and resumes them).

use std::collections::VecDeque;

use crate::cost::CostModel;
use crate::kv::KvPool;
use crate::plan::{KvOp, PlanItem, Sampled, ScoreRows, Scored, StepPlan, StepResult};
use crate::policy::{Estimator, InterceptPolicy, ResumeOrder, Waste};
use crate::prefix::{Loc, Retained, RetainedSet};
use crate::request::{Active, Run};
use crate::swap::{SwapHandle, SwapPool};
use crate::types::{
    mask_allows, Event, FinishReason, NewRequest, RequestId, SeqId, Token, TokenConstraint,
    TokenLogprobs, TokenMask,
};

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
    pub intercept: InterceptConfig,
    /// Prompt lookup (`lookup`): draft from a request's own context once its last this many
    /// tokens occur earlier in it, for requests without a prediction. 0: off.
    pub prompt_lookup: usize,
    /// Keep running requests in consecutive slots, moving KV when that pays (`compact`).
    pub compact_slots: bool,
}

/// How paused requests are handled.
#[derive(Clone, Debug)]
pub struct InterceptConfig {
    pub policy: InterceptPolicy,
    pub resume_order: ResumeOrder,
    /// Capacity of the host swap pool in bytes.
    pub swap_bytes: usize,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            policy: InterceptPolicy::MinWaste,
            resume_order: ResumeOrder::Arrival,
            swap_bytes: 4 << 30,
        }
    }
}

/// Prefill chunks are at least this long (unless the whole remainder is shorter), so every
/// prompt token's KV is computed by the same multi-row kernels however the budget splits it.
pub(crate) const MIN_PREFILL_CHUNK: usize = 2;

pub(crate) struct Waiting {
    pub id: RequestId,
    pub req: NewRequest,
    pub arrival: f64,
}

/// A request waiting for a KV slot: a new one, or a resumed one whose KV left the device.
pub(crate) enum Queued {
    New(Waiting),
    /// `swap`: its KV is in the host pool (swap in on admission); `None`: discarded.
    Resumed {
        r: Active,
        swap: Option<SwapHandle>,
    },
}

impl Queued {
    pub fn id(&self) -> RequestId {
        match self {
            Queued::New(w) => w.id,
            Queued::Resumed { r, .. } => r.id,
        }
    }

    pub fn arrival(&self) -> f64 {
        match self {
            Queued::New(w) => w.arrival,
            Queued::Resumed { r, .. } => r.arrival,
        }
    }

    fn closed(&self) -> bool {
        match self {
            Queued::New(w) => w.req.events.is_closed(),
            Queued::Resumed { r, .. } => r.events.is_closed(),
        }
    }
}

/// Where a paused request's KV is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    Device,
    Host(SwapHandle),
    Discarded,
}

pub(crate) struct Paused {
    pub r: Active,
    pub since: f64,
    pub tool: String,
    pub place: Place,
    /// Tokens staged ahead of the resume (`stage.rs`), at the end of `r.tokens`.
    pub staged: usize,
    /// A stage did not fit: this pause takes no more.
    pub stage_refused: bool,
}

pub struct Scheduler {
    pub(crate) cfg: SchedulerConfig,
    pub(crate) kv: KvPool,
    pub(crate) swap: SwapPool,
    pub(crate) retained: RetainedSet,
    pub(crate) waiting: VecDeque<Queued>,
    /// Requests with a KV slot, in arrival order.
    pub(crate) running: Vec<Active>,
    pub(crate) paused: Vec<Paused>,
    pub(crate) ops: Vec<KvOp>,
    pub(crate) released: Vec<RequestId>,
    pub(crate) cost: CostModel,
    /// Tokens that may be copied between device and host in one step.
    pub(crate) swap_budget: usize,
    pub(crate) estimator: Estimator,
    pub(crate) counters: InterceptCounters,
}

/// Cumulative interception counters, and the last step's summed waste estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InterceptCounters {
    pub swap_out_bytes: u64,
    pub swap_in_bytes: u64,
    pub recomputed_tokens: u64,
    pub interceptions: u64,
    /// Paused requests swapped out in part: the head the host pool had room for, the tail
    /// discarded.
    pub partial_swaps: u64,
    /// Retained conversations swapped out in part: the head the host pool had room for, the
    /// tail dropped (a follow-up reuses the head).
    pub retained_partial_swaps: u64,
    /// New requests that got a prefix shared with a retained conversation (system prompt,
    /// tool definitions) copied into their own slot, and the tokens so copied.
    pub prefix_copies: u64,
    pub prefix_copied_tokens: u64,
    /// Of those copies, the ones taken from a running request's computed prompt (inflight.rs).
    pub inflight_prefix_copies: u64,
    /// KV moved to another slot to keep running requests in consecutive slots (compact.rs),
    /// and the tokens so moved.
    pub slot_moves: u64,
    pub slot_moved_tokens: u64,
    /// Steps in which the head of the queue waited for a running request to prefill the
    /// prefix they share.
    pub shared_prefill_waits: u64,
    /// Sum over device-resident paused requests of each option's estimated waste
    /// (token·seconds; swap counts only requests the pool can take).
    pub waste: Option<Waste>,
}

/// Counters the engine exports as gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
    pub retained: usize,
    pub kv_used: usize,
    /// Of `kv_used`, the cells retained sequences hold in their slots.
    pub kv_retained: usize,
    pub kv_free: usize,
    pub paused_device: usize,
    pub paused_host: usize,
    pub paused_discarded: usize,
    pub swap_used_bytes: usize,
    pub swap_entries: usize,
    pub counters: InterceptCounters,
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
        let cost = CostModel::default();
        let swap = SwapPool::new(cfg.intercept.swap_bytes, cost.kv_bytes_per_token);
        let mut s = Self {
            cfg,
            kv,
            swap,
            retained: RetainedSet::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            paused: Vec::new(),
            ops: Vec::new(),
            released: Vec::new(),
            cost,
            swap_budget: 0,
            estimator: Estimator::default(),
            counters: InterceptCounters::default(),
        };
        s.set_costs(cost);
        s
    }

    /// Uses measured costs (from `Runner::profile`). The per-step swap budget is the number
    /// of tokens whose copy out takes half a full decode step: on a GPU that copy hides behind
    /// compute; on a CPU it bounds how long a step can stall on copies.
    pub fn set_costs(&mut self, cost: CostModel) {
        self.cost = cost;
        self.swap.set_bytes_per_token(cost.kv_bytes_per_token);
        let step = cost.t_fwd(self.cfg.n_slots);
        let per_token = cost.swap_out_per_token_s.max(1e-9);
        self.swap_budget = ((0.5 * step / per_token) as usize).max(1);
    }

    pub fn costs(&self) -> &CostModel {
        &self.cost
    }

    pub fn swap_budget(&self) -> usize {
        self.swap_budget
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
        self.waiting.push_back(Queued::New(Waiting {
            id,
            req,
            arrival: now,
        }));
    }

    /// Drops a waiting request, or ends a running or paused one (its KV on the device is
    /// retained, in the host pool dropped). Unknown ids are ignored (the request may have
    /// finished in the meantime).
    pub fn cancel(&mut self, id: RequestId, now: f64) {
        if let Some(pos) = self.waiting.iter().position(|q| q.id() == id) {
            if let Some(Queued::Resumed { r, swap }) = self.waiting.remove(pos) {
                self.drop_swap(swap);
                self.released.push(r.id);
            }
        }
        if let Some(pos) = self.running.iter().position(|r| r.id == id) {
            let r = self.running.remove(pos);
            self.retire(r, now);
        }
        self.cancel_paused(id, now);
    }

    /// Requests queued for a KV slot (new and resumed).
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing to plan until a message arrives (a request, a resume, a cancel): the engine
    /// loop then blocks instead of planning.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.running.is_empty()
            && self.ops.is_empty()
            && self.released.is_empty()
            && !self.placement_pending()
            && !self.staging_pending()
    }

    pub fn stats(&self) -> SchedulerStats {
        let placed = |f: fn(&Place) -> bool| self.paused.iter().filter(|x| f(&x.place)).count();
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            retained: self.retained.len(),
            kv_used: self.kv.used_cells(),
            kv_retained: self.retained.device_cells(&self.kv),
            kv_free: self.kv.free_cells(),
            paused_device: placed(|p| *p == Place::Device),
            paused_host: placed(|p| matches!(p, Place::Host(_))),
            paused_discarded: placed(|p| *p == Place::Discarded),
            swap_used_bytes: self.swap.used_bytes(),
            swap_entries: self.swap.len(),
            counters: self.counters,
        }
    }

    pub fn kv(&self) -> &KvPool {
        &self.kv
    }

    pub fn swap_pool(&self) -> &SwapPool {
        &self.swap
    }

    /// Frees every retained sequence, on the device and in the host pool (e.g. on shutdown,
    /// or in tests to check for leaks).
    pub fn evict_all_retained(&mut self) {
        for e in self.retained.drain() {
            self.evict(e);
        }
    }

    pub(crate) fn exact(&self) -> bool {
        self.cfg.prefix_reuse == PrefixReuse::Exact
    }

    /// Builds the next step's plan.
    pub fn schedule(&mut self, now: f64) -> StepPlan {
        self.reap_disconnected(now);
        self.place_paused(now);
        self.compact_slots(now);
        let exact = self.exact();
        let mut budget = self.cfg.max_batch_tokens;
        let mut items = Vec::new();
        for r in &self.running {
            if budget > 0 && r.next_run(exact) == Run::Single {
                items.push(chunk(r, 1));
                budget -= 1;
            }
        }
        for r in &self.running {
            if let Run::Multi(cap) = r.next_run(exact) {
                push_prefill(&mut items, &mut budget, r, cap);
            }
        }
        // Admit only while a newcomer's chunk surely fits: with a budget above
        // MIN_PREFILL_CHUNK, `prefill_chunk` finds one for any prompt, so no slot is taken by a
        // request that cannot run this step.
        while budget > MIN_PREFILL_CHUNK {
            let Some(idx) = self.admit_front(now, budget) else {
                break;
            };
            let r = &self.running[idx];
            match r.next_run(exact) {
                Run::Single => {
                    items.push(chunk(r, 1));
                    budget -= 1;
                }
                Run::Multi(cap) => {
                    let pushed = push_prefill(&mut items, &mut budget, r, cap);
                    debug_assert!(pushed, "a chunk fits any budget above MIN_PREFILL_CHUNK");
                }
            }
        }
        items.extend(self.staged_items(&mut budget));
        self.add_drafts(&mut items, budget);
        // Rows in sequence order: llama.cpp splits a batch over per-sequence KV streams into
        // ubatches, and an unordered one can cost extra ubatches (docs/architecture.md).
        items.sort_by_key(|i| i.seq);
        self.attach_masks(&mut items);
        StepPlan {
            kv_ops: std::mem::take(&mut self.ops),
            items,
            released: std::mem::take(&mut self.released),
        }
    }

    /// Appends predicted tokens to the items that sample (a decode, a prompt's or a resume's
    /// last chunk, a jump-forward run), within the budget the step has left after every
    /// decode and prefill chunk (a draft never delays a prompt), as many as
    /// the prediction's adaptive length allows, and never past the request's `max_tokens` or
    /// KV capacity.
    fn add_drafts(&self, items: &mut [PlanItem], mut budget: usize) {
        if self.running.iter().all(|r| r.drafter.is_none()) {
            return; // the usual step: no lookups per item
        }
        for item in items.iter_mut() {
            if budget == 0 {
                return;
            }
            if item.sample.is_none() {
                continue;
            }
            let Some(r) = self.running.iter().find(|r| r.id == item.request) else {
                continue;
            };
            let Some(d) = &r.drafter else {
                continue;
            };
            let room = (r.max_tokens.saturating_sub(r.generated + 1))
                .min(self.cfg.cells_per_seq.saturating_sub(r.n_cached + 1));
            let draft = d.draft(&r.tokens, budget.min(room));
            item.tokens.extend_from_slice(draft);
            item.draft = draft.len();
            budget -= draft.len();
        }
    }

    /// KV operations decided but not yet handed to the runner.
    pub fn pending_kv_ops(&self) -> usize {
        self.ops.len()
    }

    /// Applies a step's result: advances KV, emits tokens, finishes or pauses requests.
    /// Returns how many of the plan's tokens recomputed KV that had been discarded.
    pub fn update(&mut self, plan: &StepPlan, result: &StepResult, now: f64) -> usize {
        let mut recomputed = 0;
        for item in &plan.items {
            if item.sample.is_none()
                && self.wrote_staged(item.request, item.start_pos, item.tokens.len())
            {
                continue;
            }
            if let Some(r) = self.running.iter_mut().find(|r| r.id == item.request) {
                let end = item.start_pos + item.tokens.len();
                recomputed += r.high_water.min(end).saturating_sub(item.start_pos);
                let kept = kept_rows(r, item, result);
                r.wrote(item.start_pos, kept, item.tokens.len() == 1);
                self.kv.set_used(r.seq, r.n_cached);
                if kept < item.tokens.len() {
                    // The rejected draft rows' KV goes before anything else runs.
                    self.ops.push(KvOp::Truncate {
                        seq: r.seq,
                        keep: r.n_cached,
                    });
                }
            }
        }
        self.counters.recomputed_tokens += recomputed as u64;
        for s in &result.scored {
            self.report_scores(s);
        }
        for (i, s) in result.sampled.iter().enumerate() {
            // Of a drafted item's tokens, only the last may be followed by forced ones.
            let next = result.sampled.get(i + 1);
            let last = next.is_none_or(|n| n.request != s.request);
            self.accept(s, last, now);
        }
        recomputed
    }

    /// Fails every request in a plan the runner could not execute and clears their KV.
    pub fn fail_plan(&mut self, plan: &StepPlan, msg: &str) {
        for item in &plan.items {
            self.fail_request(item.request, msg);
        }
    }

    /// Asks each constrained request that samples this step for its allowed tokens; a
    /// request whose constraint fails is failed and taken out of the plan.
    fn attach_masks(&mut self, items: &mut Vec<PlanItem>) {
        let mut failed = Vec::new();
        let t0 = std::time::Instant::now();
        let mut masks = 0u64;
        for item in items.iter_mut().filter(|i| i.sample.is_some()) {
            let Some(r) = self.running.iter_mut().find(|r| r.id == item.request) else {
                continue;
            };
            let jump_forward = r.jumps_forward();
            let Some(c) = r.constraint.as_mut() else {
                continue;
            };
            let masked = c.0.allowed().and_then(|mask| {
                item.mask = mask;
                mask_draft(c.0.as_mut(), item, jump_forward)
            });
            match masked {
                Ok(()) => {
                    let rows = std::iter::once(&item.mask).chain(&item.draft_masks);
                    masks += rows.filter(|m| m.is_some()).count() as u64;
                }
                Err(e) => failed.push((item.request, e)),
            }
        }
        if masks > 0 {
            metrics::counter!("tandem_constraint_masks_total").increment(masks);
            let us = t0.elapsed().as_micros() as u64;
            metrics::counter!("tandem_constraint_mask_microseconds_total").increment(us);
        }
        for (id, e) in &failed {
            items.retain(|i| i.request != *id);
            self.fail_request(*id, &format!("constrained decoding: {e}"));
        }
    }

    fn fail_request(&mut self, id: RequestId, msg: &str) {
        if let Some(pos) = self.running.iter().position(|r| r.id == id) {
            let r = self.running.remove(pos);
            let _ = r.events.send(Event::Failed(msg.to_string()));
            self.ops.push(KvOp::Clear { seq: r.seq });
            self.kv.free(r.seq);
            self.released.push(r.id);
        } else if let Some(pos) = self.paused.iter().position(|p| p.r.id == id) {
            // A paused request whose staged chunk failed.
            let p = self.paused.remove(pos);
            let _ = p.r.events.send(Event::Failed(msg.to_string()));
            self.drop_paused(p);
        }
    }

    /// Sends a request the prompt scores it has not had yet, each with the token it scores.
    fn report_scores(&mut self, s: &Scored) {
        let Some(r) = self.running.iter_mut().find(|r| r.id == s.request) else {
            return;
        };
        let entries: Vec<(Token, TokenLogprobs)> = (s.start_pos..)
            .zip(&s.logprobs)
            .filter(|(pos, _)| *pos >= r.prompt_scored && pos + 1 < r.prompt_len)
            .map(|(pos, lp)| (r.tokens[pos + 1], lp.clone()))
            .collect();
        r.prompt_scored = r.prompt_scored.max(s.start_pos + s.logprobs.len());
        if !entries.is_empty() {
            let _ = r.events.send(Event::PromptLogprobs(entries));
        }
    }

    /// Takes a sampled token; after the last one an item sampled this step, appends the
    /// tokens the request's constraint forces (jump-forward).
    fn accept(&mut self, s: &Sampled, last: bool, now: f64) {
        let Some(pos) = self.running.iter().position(|r| r.id == s.request) else {
            return;
        };
        if let Some(lp) = &s.logprobs {
            let _ = self.running[pos].events.send(Event::Logprobs(lp.clone()));
        }
        if self.take_token(pos, s.token, s.eog, now) && last && self.running[pos].jumps_forward() {
            self.jump_forward(pos, now);
        }
    }

    /// Appends the tokens the request's constraint forces after its last one, each taken as
    /// if sampled; they run through the model together in the next step (one chunk) instead
    /// of one decode step each. Stops where the request finishes or pauses.
    fn jump_forward(&mut self, pos: usize, now: f64) {
        let forced = match self.running[pos].constraint.as_mut() {
            Some(c) => c.0.forced(),
            None => return,
        };
        if !forced.is_empty() {
            tracing::trace!(request = self.running[pos].id, ?forced, "jump-forward");
        }
        for token in forced {
            metrics::counter!("tandem_forced_tokens_total").increment(1);
            if !self.take_token(pos, token, false, now) {
                return;
            }
        }
    }

    /// Takes one generated token into `running[pos]`: output, finish or pause. Returns
    /// whether the request is still running.
    fn take_token(&mut self, pos: usize, token: Token, eog: bool, now: f64) -> bool {
        let r = &mut self.running[pos];
        let mut constraint_pause = None;
        if let Some(c) = r.constraint.as_mut() {
            match c.0.commit(token) {
                Ok(()) => constraint_pause = c.0.pause_requested(),
                Err(e) => {
                    tracing::warn!(request = r.id, "constraint rejected a token: {e}");
                    r.constraint = None;
                }
            }
        }
        r.generated += 1;
        record_latency(r, now);
        let finish = if eog && constraint_pause.is_some() {
            // The turn ends at a pause (server-side calls to run): the end-of-turn token
            // is kept for the KV, so the tool turn appended on resume follows it, but it is
            // not output.
            r.tokens.push(token);
            r.segment_generated += 1;
            None
        } else if eog && (!r.ignore_eos || r.constraint.as_ref().is_some_and(|c| c.0.complete())) {
            Some(FinishReason::Stop)
        } else {
            r.tokens.push(token);
            r.segment_generated += 1;
            if let Some(d) = r.drafter.as_mut() {
                d.observe(&r.tokens, r.prompt_len);
            }
            metrics::counter!("tandem_generation_tokens_total").increment(1);
            let sent = r.events.send(Event::Token(token)).is_ok();
            (!sent || r.generated >= r.max_tokens).then_some(FinishReason::Length)
        };
        if let Some(reason) = finish {
            self.settle_draft(pos);
            let r = self.running.remove(pos);
            let _ = r.events.send(Event::Finished {
                reason,
                usage: r.usage(),
            });
            self.retire(r, now);
            false
        } else if let Some(tool) = constraint_pause.or_else(|| self.running[pos].pause_for()) {
            self.settle_draft(pos);
            let r = self.running.remove(pos);
            self.pause(r, tool, now);
            false
        } else {
            true
        }
    }

    /// A request that finishes or pauses at a drafted token its step accepted had KV written
    /// for accepted tokens after it, which it never took: that KV goes.
    fn settle_draft(&mut self, pos: usize) {
        let r = &mut self.running[pos];
        if r.n_cached > r.tokens.len() {
            r.n_cached = r.tokens.len();
            self.ops.push(KvOp::Truncate {
                seq: r.seq,
                keep: r.n_cached,
            });
            self.kv.set_used(r.seq, r.n_cached);
        }
    }

    /// Ends a running request: its valid KV becomes a retained sequence.
    pub(crate) fn retire(&mut self, r: Active, now: f64) {
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
            loc: Loc::Device(r.seq),
            tokens,
            prompt_len: r.prompt_len.min(keep),
            last_used: now,
        });
    }

    /// Frees a retained entry's KV wherever it is.
    pub(crate) fn evict(&mut self, e: Retained) {
        match e.loc {
            Loc::Device(seq) => self.free_slot(seq),
            Loc::Host(h) => self.drop_swap(Some(h)),
        }
    }

    pub(crate) fn free_slot(&mut self, seq: SeqId) {
        self.ops.push(KvOp::Clear { seq });
        self.kv.free(seq);
    }

    pub(crate) fn drop_swap(&mut self, h: Option<SwapHandle>) {
        if let Some(handle) = h {
            self.ops.push(KvOp::DropSwap { handle });
            self.swap.free(handle);
        }
    }

    /// Cancels requests whose owner dropped its event receiver (client gone).
    fn reap_disconnected(&mut self, now: f64) {
        let waiting = self.waiting.iter().filter(|q| q.closed()).map(Queued::id);
        let running = self.running.iter().filter(|r| r.events.is_closed());
        let paused = self.paused.iter().filter(|p| p.r.events.is_closed());
        let gone: Vec<_> = waiting
            .chain(running.map(|r| r.id))
            .chain(paused.map(|p| p.r.id))
            .collect();
        for id in gone {
            self.cancel(id, now);
        }
    }
}

/// Gives a constrained item's drafted rows their masks: the constraint commits the drafted
/// tokens one by one, each allowed by the mask before it, and gives the mask after each;
/// then it rolls them all back (the step's accepted tokens are committed as sampled ones).
/// The draft is cut before the first token the grammar refuses. Where the grammar forces
/// text (jump-forward on), the row's mask allows only the first forced token, so a draft
/// that goes on through forced text keeps the tokens jump-forward would have appended.
fn mask_draft(c: &mut dyn TokenConstraint, item: &mut PlanItem, jump: bool) -> Result<(), String> {
    if item.draft == 0 {
        return Ok(());
    }
    let first = item.tokens.len() - item.draft;
    let mut masks: Vec<Option<TokenMask>> = Vec::with_capacity(item.draft);
    for &token in &item.tokens[first..] {
        let before = masks.last().unwrap_or(&item.mask);
        if before.as_ref().is_some_and(|m| !mask_allows(m, token)) || c.complete() {
            break;
        }
        c.commit(token)?;
        let forced = if jump { c.forced() } else { Vec::new() };
        masks.push(match forced.first() {
            Some(&f) => Some(only(f)),
            None => c.allowed()?,
        });
    }
    c.rollback(masks.len())?;
    item.tokens.truncate(first + masks.len());
    item.draft = masks.len();
    item.draft_masks = masks;
    Ok(())
}

/// A mask allowing `token` alone.
fn only(token: Token) -> TokenMask {
    let t = token as usize;
    let mut words = vec![0u32; t / 32 + 1];
    words[t / 32] = 1 << (t % 32);
    words.into()
}

/// An item's rows whose KV stays: all, or for a drafted item its tokens up to the last
/// accepted draft token (the runner sampled one row per accepted token, plus the first that
/// differed or the one after the draft); the request records the verified draft.
fn kept_rows(r: &mut Active, item: &PlanItem, result: &StepResult) -> usize {
    if item.draft == 0 {
        return item.tokens.len();
    }
    let sampled = result.sampled.iter().filter(|s| s.request == item.request);
    let accepted = sampled.count().saturating_sub(1).min(item.draft);
    r.verified_draft(item.draft, accepted);
    item.tokens.len() - item.draft + accepted
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

/// Adds the request's next prefill chunk (at most `cap` tokens) if one fits the budget;
/// returns whether it did.
pub(crate) fn push_prefill(
    items: &mut Vec<PlanItem>,
    budget: &mut usize,
    r: &Active,
    cap: usize,
) -> bool {
    let Some(n) = prefill_chunk(cap, *budget) else {
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
        mask: None,
        score: score_targets(r, start, n),
        draft: 0,
        draft_masks: Vec::new(),
    }
}

/// For a request that scores its prompt: the prompt tokens that the chunk's rows predict
/// (each row's next token), as far as the prompt goes.
fn score_targets(r: &Active, start: usize, n: usize) -> Option<ScoreRows> {
    let top = r.sampling.prompt_logprobs?;
    if start + 1 >= r.prompt_len {
        return None;
    }
    let end = (start + n).min(r.prompt_len - 1);
    let targets = r.tokens[start + 1..end + 1].to_vec();
    Some(ScoreRows { targets, top })
}

fn record_latency(r: &mut Active, now: f64) {
    match r.last_token_at {
        None => metrics::histogram!("tandem_time_to_first_token_seconds").record(now - r.arrival),
        Some(t) => metrics::histogram!("tandem_inter_token_latency_seconds").record(now - t),
    }
    r.last_token_at = Some(now);
}
