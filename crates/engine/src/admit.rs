//! Admission: gives the request at the head of the queue a KV slot. A new request takes over
//! the retained sequence its prompt continues (swapping it in first when it is in the host
//! pool); one that only shares a prefix with it gets a copy of that prefix when copying pays,
//! else takes it over on a weaker match. A resumed request gets its swapped KV back, or a
//! fresh slot to recompute into. When no slot is free, the least recently used retained
//! sequence leaves the device: swapped to the host pool when the policy prefers that, else
//! dropped.

use crate::drafter::Drafter;
use crate::inflight::reusable;
use crate::plan::KvOp;
use crate::policy::{InterceptPolicy, Placement, Waste, WasteInputs};
use crate::prefix::{Loc, Retained};
use crate::request::Active;
use crate::scheduler::{Queued, Scheduler, Waiting};
use crate::swap::SwapHandle;
use crate::types::{Event, NewRequest, SeqId, Token};

impl Scheduler {
    /// Admits the head of the queue if a slot can be had (and a new request is not better off
    /// waiting for a running one to prefill the prefix they share); `budget_left`: step tokens
    /// still free. Returns its index in `running`.
    pub(crate) fn admit_front(&mut self, now: f64, budget_left: usize) -> Option<usize> {
        match self.waiting.front()? {
            Queued::New(_) => self.admit_new(now, budget_left),
            Queued::Resumed { .. } => self.admit_resumed(now),
        }
    }

    fn admit_new(&mut self, now: f64, budget_left: usize) -> Option<usize> {
        let Some(Queued::New(w)) = self.waiting.front() else {
            unreachable!("admit_new on a new request")
        };
        if self.holds_for_shared_prefill(&w.req, budget_left) {
            self.counters.shared_prefill_waits += 1;
            return None;
        }
        // Without a free slot some retained sequence leaves the device anyway; if it would be
        // dropped, a weak prefix match still saves prefill, but if it can go to the host pool
        // it is worth more kept whole (its conversation may come back).
        let must_drop = self.kv.free_slots() == 0 && !self.swaps_retained();
        let prompt_len = w.req.prompt.len();
        // A prompt to score is prefilled whole: reused positions have no logits.
        let scores = w.req.sampling.prompt_logprobs.is_some();
        let taken = match scores || self.copy_instead(&w.req.prompt) {
            true => None,
            false => self.retained.take_match(&w.req.prompt, must_drop),
        };
        let (seq, reused) = match taken {
            Some((e, n)) => {
                self.estimator.record(CLIENT_TURN, now - e.last_used);
                let len = e.tokens.len();
                let seq = self.restore_to_device(e, now)?;
                (seq, self.reuse(seq, len, n, prompt_len))
            }
            None => {
                let seq = self.alloc_slot(now)?;
                let copied = if scores {
                    0
                } else {
                    self.copy_shared_prefix(seq)
                };
                (seq, copied)
            }
        };
        let Some(Queued::New(w)) = self.waiting.pop_front() else {
            unreachable!("front exists")
        };
        metrics::counter!("tandem_prompt_tokens_total").increment(prompt_len as u64);
        metrics::counter!("tandem_prefix_reused_tokens_total").increment(reused as u64);
        let cells = self.cfg.cells_per_seq;
        let _ = w.req.events.send(Event::Admitted {
            cached_tokens: reused,
        }); // a closed channel: the owner is gone and the request is reaped next step
        let lookup = self.cfg.prompt_lookup;
        self.running.push(activate(w, seq, reused, cells, lookup));
        Some(self.running.len() - 1)
    }

    fn admit_resumed(&mut self, now: f64) -> Option<usize> {
        let seq = self.alloc_slot(now)?;
        let Some(Queued::Resumed { mut r, swap }) = self.waiting.pop_front() else {
            unreachable!("admit_resumed on a resumed request")
        };
        match swap {
            Some(h) => self.swap_in(h, seq, r.n_cached),
            None => r.n_cached = 0, // a fresh slot holds no cells
        }
        r.seq = seq;
        Some(self.insert_running(r))
    }

    /// Puts a request into `running` at its arrival position; returns the index.
    pub(crate) fn insert_running(&mut self, r: Active) -> usize {
        let idx = self.running.partition_point(|x| x.arrival <= r.arrival);
        self.running.insert(idx, r);
        idx
    }

    /// Copies host buffer `h` (`tokens` cells) into the empty slot `seq`.
    pub(crate) fn swap_in(&mut self, h: SwapHandle, seq: SeqId, tokens: usize) {
        self.ops.push(KvOp::SwapIn { seq, handle: h });
        self.swap.free(h);
        self.kv.set_used(seq, tokens);
        self.counters.swap_in_bytes += self.swap.bytes(tokens) as u64;
    }

    /// Copies slot `seq` (`tokens` cells) to the host pool and frees the slot; `None` (and
    /// nothing moved) when the pool cannot take it.
    pub(crate) fn swap_out(&mut self, seq: SeqId, tokens: usize) -> Option<SwapHandle> {
        let handle = self.swap_alloc(tokens)?;
        self.ops.push(KvOp::SwapOut {
            seq,
            handle,
            tokens,
        });
        self.kv.free(seq);
        self.counters.swap_out_bytes += self.swap.bytes(tokens) as u64;
        Some(handle)
    }

    /// Swaps out the first `head` of the `n` cells of `seq`, dropping the rest first
    /// (llama.cpp copies a sequence whole, so the tail must go before the copy).
    pub(crate) fn swap_out_cut(&mut self, seq: SeqId, n: usize, head: usize) -> Option<SwapHandle> {
        if head < n {
            self.ops.push(KvOp::Truncate { seq, keep: head });
            self.kv.set_used(seq, head);
        }
        self.swap_out(seq, head)
    }

    /// The retained entry's slot, swapping it in first if it is in the host pool. Gives the
    /// entry back to the set when no slot can be had.
    fn restore_to_device(&mut self, e: Retained, now: f64) -> Option<SeqId> {
        match e.loc {
            Loc::Device(seq) => Some(seq),
            Loc::Host(h) => match self.alloc_slot(now) {
                Some(seq) => {
                    self.swap_in(h, seq, e.tokens.len());
                    Some(seq)
                }
                None => {
                    self.retained.insert(e);
                    None
                }
            },
        }
    }

    /// Keeps the first `matched` cells of a retained sequence of `len` tokens for a prompt of
    /// `prompt_len` tokens. At least `MIN_PREFILL_CHUNK` prompt tokens are always run (there
    /// must be logits to sample from, and a one-token prefill would use the decode kernels).
    fn reuse(&mut self, seq: SeqId, len: usize, matched: usize, prompt_len: usize) -> usize {
        let keep = reusable(matched, prompt_len);
        if keep < len {
            self.ops.push(KvOp::Truncate { seq, keep });
        }
        self.kv.set_used(seq, keep);
        keep
    }

    /// Whether the head request waits this step for a running request that is prefilling a
    /// prefix they share (inflight.rs). A request scoring its prompt reuses nothing, so never.
    fn holds_for_shared_prefill(&self, req: &NewRequest, budget_left: usize) -> bool {
        if req.sampling.prompt_logprobs.is_some() {
            return false;
        }
        let prompt = &req.prompt;
        let retained = self.retained.shared(prompt).map_or(0, |(_, n)| n);
        let running = self.running_source(prompt).map_or(0, |s| s.matched);
        let now = reusable(retained.max(running), prompt.len());
        self.waits_for_shared_prefill(prompt, now, budget_left)
    }

    /// Copies into the empty slot `seq` of the request at the head of the queue the longest
    /// prefix its prompt shares with a retained conversation it does not take over (a system
    /// prompt, tool definitions) or with a running request's computed prompt, when copying
    /// costs less than prefilling those tokens; returns the tokens copied. tandem's own:
    /// taking over the slot that holds the prefix (as llama-server does) would give up that
    /// conversation's own follow-up, and prefilling repeats work the KV already holds.
    /// llama.cpp copies a sequence whole, so the price is the source's whole length, and the
    /// runner drops what follows the prefix.
    fn copy_shared_prefix(&mut self, seq: SeqId) -> usize {
        let Some(Queued::New(w)) = self.waiting.front() else {
            return 0;
        };
        let prompt = &w.req.prompt;
        let retained = self.retained.shared(prompt);
        let retained = retained.map(|(e, n)| (e.loc, e.tokens.len(), n, false));
        let running = self.running_source(prompt);
        let running = running.map(|s| (Loc::Device(s.seq), s.len, s.matched, true));
        let best = [retained, running]
            .into_iter()
            .flatten()
            .max_by_key(|c| c.2);
        let Some((from, len, matched, inflight)) = best else {
            return 0;
        };
        let keep = reusable(matched, prompt.len());
        if !self.copy_pays(from, keep, len) {
            return 0;
        }
        self.ops.push(KvOp::CopyPrefix { from, seq, keep });
        self.kv.set_used(seq, keep);
        self.counters.prefix_copies += 1;
        self.counters.prefix_copied_tokens += keep as u64;
        self.counters.inflight_prefix_copies += inflight as u64;
        keep
    }

    /// Whether a new request should copy the prefix it shares with the best-matching retained
    /// conversation rather than take that conversation's slot over: its prompt does not
    /// continue the conversation (it shares only a system prompt, say) and the copy pays.
    /// Taking over would cost the conversation its own follow-up's cache.
    fn copy_instead(&self, prompt: &[Token]) -> bool {
        let Some((e, matched)) = self.retained.shared(prompt) else {
            return false;
        };
        let keep = reusable(matched, prompt.len());
        !e.continued_by(matched) && self.copy_pays(e.loc, keep, e.tokens.len())
    }

    /// Whether copying `keep` tokens out of a `len`-token sequence at `from` is cheaper than
    /// prefilling them (the copy is a swap-out and swap-in of the whole source, or only the
    /// swap-in when it is in the host pool; the prefill's attention counts too, chunked by the
    /// step budget as the prefill would be, as min-waste prices a recompute).
    pub(crate) fn copy_pays(&self, from: Loc, keep: usize, len: usize) -> bool {
        let c = &self.cost;
        let copy = match from {
            Loc::Device(_) => c.t_swap_out(len) + c.t_swap_in(len),
            Loc::Host(_) => c.t_swap_in(len),
        };
        let attend = c.t_attend_chunked(0, keep, self.cfg.max_batch_tokens);
        keep > 0 && copy < c.fwd_per_token_s * keep as f64 + attend
    }

    /// A free slot (beside running ones, compact.rs), making one by moving the least
    /// recently used retained sequence off the device if needed.
    pub(crate) fn alloc_slot(&mut self, now: f64) -> Option<SeqId> {
        let busy = self.running_seqs();
        if let Some(seq) = self.kv.alloc_near(&busy) {
            return Some(seq);
        }
        let e = self.retained.pop_lru(false)?;
        self.offload_retained(e, now);
        self.kv.alloc_near(&busy)
    }

    /// Moves a retained sequence off the device: into the host pool when the policy swaps
    /// and that is cheaper than recomputing it on a follow-up, else frees it. A pool short of
    /// room takes the head that fits (the conversation's start, which a follow-up shares
    /// first: system prompt, tool definitions) and the rest is dropped.
    pub(crate) fn offload_retained(&mut self, e: Retained, now: f64) {
        let Loc::Device(seq) = e.loc else {
            return self.evict(e);
        };
        let n = e.tokens.len();
        let head = n.min(self.swap_room());
        if head > 0 && self.retained_placement(n, head, now - e.last_used) == Placement::Swap {
            if head < n {
                self.counters.retained_partial_swaps += 1;
            }
            if let Some(h) = self.swap_out_cut(seq, n, head) {
                let tokens = e.tokens[..head].to_vec();
                self.retained.insert(Retained {
                    loc: Loc::Host(h),
                    tokens,
                    prompt_len: e.prompt_len.min(head),
                    ..e
                });
                return;
            }
        }
        self.evict(e);
    }

    /// Whether retained sequences may be swapped rather than dropped.
    fn swaps_retained(&self) -> bool {
        let policy = self.cfg.intercept.policy;
        let swapping = matches!(policy, InterceptPolicy::MinWaste | InterceptPolicy::Swap);
        swapping && self.swap.capacity_bytes() > 0
    }

    /// Swap (of the first `head` tokens, the rest dropped) or discard for a retained sequence
    /// of `n` tokens idle for `idle` seconds (the client's turn): keeping it on the device is
    /// not an option here, its slot is needed.
    fn retained_placement(&self, n: usize, head: usize, idle: f64) -> Placement {
        match self.cfg.intercept.policy {
            InterceptPolicy::Swap => Placement::Swap,
            InterceptPolicy::Preserve | InterceptPolicy::Discard => Placement::Discard,
            InterceptPolicy::MinWaste => {
                let x = WasteInputs {
                    context: n,
                    others: self.running_context(),
                    batch: self.running_context() + n,
                    remaining_s: self.estimator.remaining(CLIENT_TURN, idle),
                    chunk: self.cfg.max_batch_tokens,
                    swap_room: head,
                };
                let w = Waste::compute(&x, &self.cost);
                if w.swap <= w.discard {
                    Placement::Swap
                } else {
                    Placement::Discard
                }
            }
        }
    }

    /// Reserves host-pool room for `n` tokens, dropping retained sequences held there (least
    /// recently used first) when that makes room. `None` when the pool cannot take them.
    pub(crate) fn swap_alloc(&mut self, n: usize) -> Option<SwapHandle> {
        loop {
            if let Some(h) = self.swap.alloc(n) {
                return Some(h);
            }
            let e = self.retained.pop_lru(true)?;
            self.evict(e);
        }
    }

    /// Tokens the host pool could take, counting the room retained entries held there would
    /// give up (`swap_alloc` drops them for a paused request).
    pub(crate) fn swap_room(&self) -> usize {
        self.swap.room_tokens() + self.retained.host_tokens()
    }

    /// Context tokens of the running requests.
    pub(crate) fn running_context(&self) -> usize {
        self.running.iter().map(|r| r.n_cached).sum()
    }
}

/// The "tool" name of a client's turn between two requests of a conversation.
pub const CLIENT_TURN: &str = "client";

fn activate(
    w: Waiting,
    seq: SeqId,
    reused: usize,
    cells_per_seq: usize,
    lookup_min: usize,
) -> Active {
    let prompt_len = w.req.prompt.len();
    // A constrained request's drafts need a mask per drafted row, which only a constraint
    // that can roll back its commits gives.
    let drafter = match &w.req.constraint {
        Some(c) if !c.0.can_rollback() => None,
        _ => Drafter::new(w.req.prediction, lookup_min),
    };
    // Prompt lookup may find a match in the prompt alone: the first draft can follow it.
    let drafter = drafter.map(|mut d| {
        d.observe(&w.req.prompt, prompt_len);
        d
    });
    Active {
        id: w.id,
        seq,
        n_cached: reused,
        high_water: reused,
        single_row: vec![false; reused],
        prompt_len,
        reused,
        generated: 0,
        appended: 0,
        max_tokens: w.req.max_tokens.min(cells_per_seq - prompt_len).max(1),
        ignore_eos: w.req.ignore_eos,
        sampling: w.req.sampling,
        events: w.req.events,
        intercept: w.req.intercept,
        constraint: w.req.constraint,
        scripted_done: 0,
        segment_generated: 0,
        prompt_scored: 0,
        tokens: w.req.prompt,
        arrival: w.arrival,
        last_token_at: None,
        drafter,
        accepted_predicted: 0,
        rejected_predicted: 0,
    }
}
