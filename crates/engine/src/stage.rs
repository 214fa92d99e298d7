//! Staged tool output: tokens given to a paused request before its tool call has returned —
//! the start of the result, already known — and prefilled while the request still waits, so
//! that only the rest of the result is left to prefill when it resumes.
//!
//! This is partial execution in the other direction (tandem's own idea, next to Conveyor's
//! partial inputs): a tool that runs several pieces of work (a plan's steps, a search's
//! queries) knows the start of its result before its last piece is done, and the model can
//! read that start while the last piece runs. The owner stages tokens with
//! [`Scheduler::stage`] and resumes with [`Scheduler::resume_staged`], saying how many of the
//! staged tokens the final result still begins with; the rest are dropped from the sequence
//! and its KV, so the request continues exactly as if the whole result had been appended at
//! once (a staged guess that turned out wrong costs only its prefill).
//!
//! Staged tokens are prefilled only while the paused request's KV is on the device, with the
//! step budget left after running and admitted requests, never sampling, and never the last
//! staged token (so a resume always has a token to sample from). Elsewhere (swapped out,
//! discarded) they wait in the sequence and run with the resume.

use crate::plan::{KvOp, PlanItem};
use crate::request::Run;
use crate::scheduler::{push_prefill, Paused, Place, Scheduler, MIN_PREFILL_CHUNK};
use crate::types::{RequestId, Token};

impl Paused {
    /// Staged tokens it may prefill now, at most (all but the last pending token), if its KV
    /// is here; `push_prefill` sizes the chunk within the step's budget.
    fn stageable(&self, exact: bool) -> usize {
        if self.staged == 0 || self.place != Place::Device {
            return 0;
        }
        match self.r.next_run(exact) {
            Run::Multi(cap) => cap.min(self.r.pending() - 1),
            Run::Single => 0,
        }
    }
}

impl Scheduler {
    /// Appends `tokens` (the known start of a paused request's tool output) after its last
    /// token, to be prefilled while it waits. Ignored for unknown ids (cancelled, resumed).
    /// A stage that would not fit the sequence refuses this and every later stage of the
    /// pause, so what was staged stays a prefix of what the owner sent.
    pub fn stage(&mut self, id: RequestId, tokens: Vec<Token>) {
        let cells = self.cfg.cells_per_seq;
        let Some(p) = self.paused.iter_mut().find(|p| p.r.id == id) else {
            return;
        };
        if p.stage_refused || p.r.tokens.len() + tokens.len() >= cells {
            p.stage_refused = true;
            return;
        }
        p.staged += tokens.len();
        p.r.tokens.extend(tokens);
    }

    /// Resumes a paused request with its tool's whole `output`, of which the first `keep`
    /// tokens are the staged ones the owner found it begins with. Staged tokens the engine
    /// has (a refused stage is not among them) are kept up to that count, the rest dropped
    /// with their KV, and the output goes on from there.
    pub fn resume_staged(&mut self, id: RequestId, keep: usize, output: Vec<Token>, now: f64) {
        let Some(i) = self.paused.iter().position(|p| p.r.id == id) else {
            return;
        };
        let kept = keep.min(self.paused[i].staged).min(output.len());
        self.drop_staged(i, kept, kept == output.len());
        self.paused[i].r.appended += kept;
        metrics::counter!("tandem_staged_tokens_kept_total").increment(kept as u64);
        self.resume(id, output[kept..].to_vec(), now);
    }

    /// Cuts paused request `i` back to `keep` (at most its) staged tokens; with nothing to
    /// append, one more position leaves the KV, so the resume has a token to run and sample
    /// from.
    fn drop_staged(&mut self, i: usize, keep: usize, nothing_after: bool) {
        let p = &mut self.paused[i];
        let dropped = p.staged - keep;
        metrics::counter!("tandem_staged_tokens_dropped_total").increment(dropped as u64);
        let len = p.r.tokens.len() - dropped;
        p.r.tokens.truncate(len);
        p.staged = 0;
        let cap = if nothing_after { len - 1 } else { len };
        if p.r.n_cached <= cap {
            return;
        }
        let cut = p.r.cut_at_or_below(cap);
        p.r.n_cached = cut;
        let (seq, place) = (p.r.seq, p.place);
        match place {
            Place::Device => {
                self.ops.push(KvOp::Truncate { seq, keep: cut });
                self.kv.set_used(seq, cut);
            }
            Place::Host(h) => {
                // The host copy holds cells past the cut; recomputing is simpler than cutting
                // a copy, and this happens only when a staged guess and a swap coincide.
                self.paused[i].r.n_cached = 0;
                self.paused[i].place = Place::Discarded;
                self.drop_swap(Some(h));
            }
            Place::Discarded => {}
        }
    }

    /// Plan items prefilling staged tokens, within `budget`. Never up to a request's last
    /// token, so they do not sample.
    pub(crate) fn staged_items(&self, budget: &mut usize) -> Vec<PlanItem> {
        let exact = self.exact();
        let mut items = Vec::new();
        for p in &self.paused {
            let cap = p.stageable(exact);
            // `push_prefill` takes more than one pending token, as a prompt chunk has.
            if cap >= MIN_PREFILL_CHUNK {
                push_prefill(&mut items, budget, &p.r, cap);
            }
        }
        debug_assert!(items.iter().all(|i| i.sample.is_none()));
        items
    }

    /// Whether some paused request has staged tokens to prefill.
    pub(crate) fn staging_pending(&self) -> bool {
        let exact = self.exact();
        self.paused
            .iter()
            .any(|p| p.stageable(exact) >= MIN_PREFILL_CHUNK)
    }

    /// Records a staged chunk the runner wrote; false if `id` is not a paused request.
    pub(crate) fn wrote_staged(&mut self, id: RequestId, start: usize, n: usize) -> bool {
        let Some(p) = self.paused.iter_mut().find(|p| p.r.id == id) else {
            return false;
        };
        p.r.wrote(start, n, n == 1);
        self.kv.set_used(p.r.seq, p.r.n_cached);
        true
    }
}
