//! Interceptions: pausing a request at a trigger, placing its KV while it waits (preserve,
//! swap to the host pool, discard) by the configured policy, swapping it back in ahead of the
//! predicted end of the interception, and resuming it with the tool's output appended.
//!
//! Placement runs at the start of every step. Fixed policies move a paused request's KV as
//! soon as it pauses. min-waste prices the options (`policy.rs`) for each paused request and
//! moves KV off the device only when slots are in demand (waiting requests with no free or
//! evictable slot), the requests with the largest saving first: memory no one is waiting for
//! is not wasted, so tandem does not pay for copies then. Copies per step are bounded by
//! the swap budget. When the host pool has room for only part of a request's KV, the head
//! that fits is swapped and the tail discarded (recomputed on resume); min-waste prices each
//! move again against the room the moves before it left.

use crate::policy::{InterceptPolicy, Placement, ResumeOrder, Waste, WasteInputs};
use crate::request::Active;
use crate::scheduler::{Paused, Place, Queued, Scheduler};
use crate::swap::SwapHandle;
use crate::types::{Event, RequestId, SeqId, Token};

/// Tokens that may still be copied this step; the first copy of a step always may (a
/// sequence larger than the budget would otherwise never move).
struct SwapAllowance {
    left: usize,
    used: bool,
}

impl SwapAllowance {
    fn take(&mut self, n: usize) -> bool {
        if self.used && n > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(n);
        self.used = true;
        true
    }
}

impl Scheduler {
    /// Pauses a running request (it was just removed from `running`).
    pub(crate) fn pause(&mut self, mut r: Active, tool: String, now: f64) {
        if r.intercept.after_tokens.get(r.scripted_done).map(|a| a.0) == Some(r.generated) {
            r.scripted_done += 1;
        }
        self.counters.interceptions += 1;
        let event = Event::Intercepted {
            tool: tool.clone(),
            generated: r.generated,
            last: r.tokens.last().copied(),
        };
        if r.events.send(event).is_err() {
            return self.retire(r, now);
        }
        self.paused.push(Paused {
            r,
            since: now,
            tool,
            place: Place::Device,
            staged: 0,
            stage_refused: false,
        });
    }

    /// Resumes a paused request with `appended` tokens (the tool's output) after its last
    /// token (after any staged ones, which are kept: `resume_staged` keeps fewer). Unknown
    /// ids are ignored (cancelled meanwhile). A result that overflows the sequence's capacity
    /// fails the request.
    pub fn resume(&mut self, id: RequestId, appended: Vec<Token>, now: f64) {
        let Some(i) = self.paused.iter().position(|p| p.r.id == id) else {
            return;
        };
        let mut p = self.paused.remove(i);
        self.estimator.record(&p.tool, now - p.since);
        let n = appended.len();
        p.r.appended += n;
        p.r.tokens.extend(appended);
        p.r.segment_generated = 0;
        if let Some(c) = p.r.constraint.as_mut() {
            c.0.resumed();
        }
        let cells = self.cfg.cells_per_seq;
        if p.r.tokens.len() >= cells {
            let msg = format!(
                "the tool result makes the context {} tokens; at most {} fit",
                p.r.tokens.len(),
                cells - 1
            );
            let _ = p.r.events.send(Event::Failed(msg));
            return self.drop_paused(p);
        }
        metrics::counter!("tandem_appended_tokens_total").increment(n as u64);
        p.r.max_tokens = p.r.max_tokens.min(p.r.generated + cells - p.r.tokens.len());
        match p.place {
            Place::Device => {
                self.insert_running(p.r);
            }
            Place::Host(h) => self.enqueue_resumed(Queued::Resumed {
                r: p.r,
                swap: Some(h),
            }),
            Place::Discarded => self.enqueue_resumed(Queued::Resumed { r: p.r, swap: None }),
        }
    }

    /// Head of the queue in arrival order among resumed requests, or the tail (baseline).
    fn enqueue_resumed(&mut self, q: Queued) {
        let idx = match self.cfg.intercept.resume_order {
            ResumeOrder::Tail => self.waiting.len(),
            ResumeOrder::Arrival => self.waiting.partition_point(|w| {
                matches!(w, Queued::Resumed { .. }) && w.arrival() <= q.arrival()
            }),
        };
        self.waiting.insert(idx, q);
    }

    /// Cancels a paused request, if there is one with this id.
    pub(crate) fn cancel_paused(&mut self, id: RequestId, now: f64) {
        let Some(i) = self.paused.iter().position(|p| p.r.id == id) else {
            return;
        };
        let p = self.paused.remove(i);
        if p.place == Place::Device {
            self.retire(p.r, now);
        } else {
            self.drop_paused(p);
        }
    }

    /// Frees a paused request's KV wherever it is and releases it.
    pub(crate) fn drop_paused(&mut self, p: Paused) {
        match p.place {
            Place::Device => self.free_slot(p.r.seq),
            Place::Host(h) => self.drop_swap(Some(h)),
            Place::Discarded => {}
        }
        self.released.push(p.r.id);
    }

    /// Whether a fixed policy has a paused request's KV still to move off the device. Those
    /// policies move it as soon as the request pauses, so the engine must plan again at once
    /// rather than wait for the next message: an idle engine that waited would leave the KV
    /// in place for a tool that returns within the wait (a discard baseline that keeps KV
    /// across short tool calls is not vLLM's behavior).
    pub(crate) fn placement_pending(&self) -> bool {
        let moves = matches!(
            self.cfg.intercept.policy,
            InterceptPolicy::Swap | InterceptPolicy::Discard
        );
        moves && self.paused.iter().any(|p| p.place == Place::Device)
    }

    /// Moves paused requests' KV per the policy, then swaps in those about to resume.
    pub(crate) fn place_paused(&mut self, now: f64) {
        let mut allowance = SwapAllowance {
            left: self.swap_budget,
            used: false,
        };
        let policy = self.cfg.intercept.policy;
        let mut moves = self.evaluate(now);
        if policy == InterceptPolicy::MinWaste {
            let demand = self.slot_demand();
            moves.sort_by(|a, b| b.2.total_cmp(&a.2));
            moves.truncate(demand);
        }
        for (i, want, _) in moves {
            let want = match policy {
                InterceptPolicy::MinWaste => self.reprice(i, now),
                _ => want,
            };
            if want != Placement::Preserve {
                self.move_out(i, want, &mut allowance);
            }
        }
        if policy == InterceptPolicy::MinWaste && self.slot_demand() == 0 {
            self.prefetch(now, &mut allowance);
        }
    }

    /// Prices every device-resident paused request; returns the ones the policy would move
    /// off the device, with the saving over keeping them. Records the summed estimates.
    fn evaluate(&mut self, now: f64) -> Vec<(usize, Placement, f64)> {
        let policy = self.cfg.intercept.policy;
        let others = self.running_context();
        let mut sum = Waste {
            preserve: 0.0,
            swap: 0.0,
            discard: 0.0,
            swap_tokens: 0, // not summed: only the three wastes are exported
        };
        let mut moves = Vec::new();
        for (i, p) in self.paused.iter().enumerate() {
            if p.place != Place::Device {
                continue;
            }
            let w = self.waste_of(p, now, others);
            sum.preserve += w.preserve;
            sum.swap += if w.swap.is_finite() { w.swap } else { 0.0 };
            sum.discard += w.discard;
            let want = match policy {
                InterceptPolicy::MinWaste => w.best(),
                InterceptPolicy::Preserve => Placement::Preserve,
                InterceptPolicy::Swap => Placement::Swap,
                InterceptPolicy::Discard => Placement::Discard,
            };
            if want != Placement::Preserve {
                moves.push((i, want, w.saving()));
            }
        }
        self.counters.waste = Some(sum);
        moves
    }

    /// Prices paused request `i` again just before it moves. `evaluate` priced every request
    /// against the pool's room at the start of the step; the moves before this one may have
    /// used that room, leaving a head too small to pay for its copies.
    fn reprice(&self, i: usize, now: f64) -> Placement {
        self.waste_of(&self.paused[i], now, self.running_context())
            .best()
    }

    fn waste_of(&self, p: &Paused, now: f64, others: usize) -> Waste {
        let context = p.r.n_cached;
        let x = WasteInputs {
            context,
            others,
            batch: others + context,
            remaining_s: self.estimator.remaining(&p.tool, now - p.since),
            chunk: self.cfg.max_batch_tokens,
            swap_room: self.swap_room(),
        };
        Waste::compute(&x, &self.cost)
    }

    /// Slots wanted by queued requests beyond the free ones and those retained sequences
    /// would give up.
    fn slot_demand(&self) -> usize {
        let available = self.kv.free_slots() + self.retained.on_device();
        self.waiting.len().saturating_sub(available)
    }

    /// Moves paused request `i` off the device: swap (within the allowance; what the pool
    /// has no room for is discarded, all of it when it has none) or discard.
    fn move_out(&mut self, i: usize, want: Placement, allowance: &mut SwapAllowance) {
        let (seq, n) = (self.paused[i].r.seq, self.paused[i].r.n_cached);
        let head = match want {
            Placement::Swap => self.paused[i].r.cut_at_or_below(n.min(self.swap_room())),
            _ => 0,
        };
        if head > 0 {
            if !allowance.take(head) {
                return;
            }
            if let Some(handle) = self.swap_out_head(seq, n, head) {
                self.paused[i].r.n_cached = head;
                self.paused[i].place = Place::Host(handle);
                return;
            }
        }
        self.free_slot(seq);
        self.paused[i].r.n_cached = 0;
        self.paused[i].place = Place::Discarded;
    }

    /// `swap_out_cut` for a paused request, counting it when only its head goes.
    fn swap_out_head(&mut self, seq: SeqId, n: usize, head: usize) -> Option<SwapHandle> {
        if head < n {
            self.counters.partial_swaps += 1;
        }
        self.swap_out_cut(seq, n, head)
    }

    /// Swaps in requests whose interception is predicted to end within the time a swap-in
    /// and a step take, while a slot can be had (free, or held by a retained sequence), so
    /// the resume finds its KV in place. Only with a duration history for the tool: elapsed
    /// time alone always predicts more waiting.
    fn prefetch(&mut self, now: f64, allowance: &mut SwapAllowance) {
        let lead = self.cost.t_fwd(self.running.len().max(1));
        for i in 0..self.paused.len() {
            let p = &self.paused[i];
            let Place::Host(h) = p.place else { continue };
            let n = p.r.n_cached;
            let remaining = self.estimator.remaining(&p.tool, now - p.since);
            let due = remaining <= lead + self.cost.t_swap_in(n);
            if !due || !self.estimator.knows(&p.tool) || !allowance.take(n) {
                continue;
            }
            let Some(seq) = self.alloc_slot(now) else {
                break;
            };
            self.swap_in(h, seq, n);
            self.paused[i].r.seq = seq;
            self.paused[i].place = Place::Device;
        }
    }
}
