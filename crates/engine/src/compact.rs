//! Keeps running requests in consecutive KV slots. With one KV stream per sequence
//! (docs/kv-layout.md), llama.cpp cuts a batch into ubatches of *consecutive* sequence ids
//! (`llama_batch_allocr::split_equal` with `sequential`), and each ubatch is a forward pass of
//! its own over all the weights: a decode step over slots {0, 1, 5, 8} costs three passes
//! where {0, 1, 2, 3} costs one. On a CPU a pass costs about the same for 1 row as for 8, and
//! in a client-side tool loop conversations come back to whichever slot kept them, so steps
//! ran about two passes on average (docs/kv-layout.md, "Slot compaction").
//!
//! So a new request takes a free slot beside running ones, and when the running requests sit
//! in several runs of slots they are moved into one window: the window of as many slots as
//! there are running requests whose filling copies the fewest KV tokens, with no paused
//! request in it. A running request outside it moves into a free slot of it; a retained
//! conversation inside it moves out to a free slot first, or, with none free, leaves the
//! device as it would for a new request (to the host pool, or dropped). A move is a copy
//! through the state API (as a prefix copy is) and a clear of the old slot. It happens only
//! when the copies cost less than the forward passes they save over the next steps, and at
//! most a step's swap budget of tokens is moved per step (the rest follows in the next
//! steps).
//! tandem's own: llama-server leaves each request in its slot.

use crate::plan::KvOp;
use crate::prefix::Loc;
use crate::scheduler::Scheduler;
use crate::types::SeqId;

/// Steps ahead over which a move's saving is counted, at most.
const HORIZON_STEPS: usize = 16;

/// Number of runs of consecutive ids in `seqs` (sorted).
pub fn runs(seqs: &[SeqId]) -> usize {
    match seqs.len() {
        0 => 0,
        _ => 1 + seqs.windows(2).filter(|w| w[1] != w[0] + 1).count(),
    }
}

/// What holds a slot, as compaction sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    Free,
    Running,
    /// A retained conversation: it may move out of the window.
    Retained,
    /// Anything else that holds a slot (a paused request's KV): it stays.
    Fixed,
}

/// The start of the window of `k` slots whose filling with the running requests copies the
/// fewest tokens (`used[i]`: KV tokens in slot `i`; a retained conversation in the window
/// counts too, as it moves out or leaves the device), and that count; `None` when every
/// window holds a fixed slot.
pub fn best_window(holders: &[Holder], used: &[usize], k: usize) -> Option<(usize, usize)> {
    let window = |s: usize| {
        let mut cost = 0;
        for (i, h) in holders.iter().enumerate() {
            match (*h, (s..s + k).contains(&i)) {
                (Holder::Fixed, true) => return None,
                (Holder::Running, false) | (Holder::Retained, true) => cost += used[i],
                _ => {}
            }
        }
        Some((s, cost))
    };
    let starts = 0..=holders.len().checked_sub(k)?;
    starts.filter_map(window).min_by_key(|&(s, cost)| (cost, s))
}

/// A step toward filling a window with the running requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// KV from slot `.0` to the free slot `.1`.
    Slot(usize, usize),
    /// The retained conversation in the slot leaves the device (to the host pool or dropped,
    /// as when a slot is needed for a new request): no slot is free to move it to.
    Offload(usize),
}

/// One move toward the window: a running request outside it into a free slot inside (the
/// one with the fewest tokens first), else a retained conversation inside it out to a free
/// slot outside, or off the device when none is free.
fn next_move(holders: &[Holder], used: &[usize], start: usize, k: usize) -> Option<Move> {
    let inside = |i: &usize| (start..start + k).contains(i);
    let slots = |h: Holder, within: bool| {
        (0..holders.len()).filter(move |i| holders[*i] == h && inside(i) == within)
    };
    let into = slots(Holder::Free, true).next();
    let mover = slots(Holder::Running, false).min_by_key(|&i| used[i]);
    if let (Some(from), Some(to)) = (mover, into) {
        return Some(Move::Slot(from, to));
    }
    let retained = slots(Holder::Retained, true).min_by_key(|&i| used[i])?;
    Some(match slots(Holder::Free, false).next() {
        Some(out) => Move::Slot(retained, out),
        None => Move::Offload(retained),
    })
}

impl Scheduler {
    /// Each slot's holder and KV tokens.
    fn holders(&self) -> (Vec<Holder>, Vec<usize>) {
        let n = self.kv.n_slots();
        let mut holders: Vec<Holder> = (0..n as SeqId)
            .map(|s| match self.kv.is_free(s) {
                true => Holder::Free,
                false => Holder::Fixed,
            })
            .collect();
        for r in &self.running {
            holders[r.seq as usize] = Holder::Running;
        }
        for seq in self.retained.device_seqs() {
            holders[seq as usize] = Holder::Retained;
        }
        let used = (0..n as SeqId).map(|s| self.kv.used(s)).collect();
        (holders, used)
    }

    /// The running requests' slots, sorted.
    pub(crate) fn running_seqs(&self) -> Vec<SeqId> {
        let mut seqs: Vec<SeqId> = self.running.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        seqs
    }

    /// Moves running requests (and retained conversations in their way) toward one window of
    /// consecutive slots, when that pays; see the module doc.
    pub(crate) fn compact_slots(&mut self, now: f64) {
        let runs = runs(&self.running_seqs());
        if !self.cfg.compact_slots || runs <= 1 {
            return;
        }
        let (mut holders, mut used) = self.holders();
        let k = self.running.len();
        let Some((start, tokens)) = best_window(&holders, &used, k) else {
            return;
        };
        if !self.compaction_pays(tokens, runs, &holders, start) {
            return;
        }
        let mut moved = 0;
        while let Some(m) = next_move(&holders, &used, start, k) {
            let from = match m {
                Move::Slot(from, _) | Move::Offload(from) => from,
            };
            if moved > 0 && moved + used[from] > self.swap_budget {
                break;
            }
            moved += used[from];
            match m {
                Move::Slot(from, to) => {
                    self.move_slot(from as SeqId, to as SeqId, holders[from]);
                    holders.swap(from, to);
                    used.swap(from, to);
                }
                Move::Offload(slot) => {
                    let e = self.retained.take_at(slot as SeqId);
                    self.offload_retained(e.expect("a retained conversation in the slot"), now);
                    (holders[slot], used[slot]) = (Holder::Free, 0);
                }
            }
        }
    }

    /// Whether copying `tokens` costs less than the forward passes saved: one per extra run
    /// of the `runs`, each step until the first request to move is likely done (at most
    /// `HORIZON_STEPS`).
    fn compaction_pays(
        &self,
        tokens: usize,
        runs: usize,
        holders: &[Holder],
        start: usize,
    ) -> bool {
        let k = self.running.len();
        let outside = |seq: SeqId| !(start..start + k).contains(&(seq as usize));
        let steps = self
            .running
            .iter()
            .filter(|r| outside(r.seq) && holders[r.seq as usize] == Holder::Running)
            .map(|r| r.steps_left(self.cfg.max_batch_tokens))
            .min()
            .unwrap_or(0)
            .min(HORIZON_STEPS);
        let c = &self.cost;
        let copy = c.t_swap_out(tokens) + c.t_swap_in(tokens);
        // An extra pass costs what a one-token step does (its weights are read all the same);
        // not the fitted base alone, which a noisy startup profile can put near 0.
        let pass = c.t_fwd(1);
        let saved = pass * (runs - 1) as f64 * steps as f64;
        copy < saved
    }

    /// Moves the KV in slot `from` to the free slot `to`, and its owner with it.
    fn move_slot(&mut self, from: SeqId, to: SeqId, holder: Holder) {
        let n = self.kv.used(from);
        if n > 0 {
            let from = Loc::Device(from);
            self.ops.push(KvOp::CopyPrefix {
                from,
                seq: to,
                keep: n,
            });
        }
        self.ops.push(KvOp::Clear { seq: from });
        self.kv.take(to);
        self.kv.set_used(to, n);
        self.kv.free(from);
        match holder {
            Holder::Running => {
                let r = self.running.iter_mut().find(|r| r.seq == from);
                r.expect("a running request in the slot").seq = to;
            }
            Holder::Retained => self.retained.relocate(from, to),
            Holder::Free | Holder::Fixed => unreachable!("only running and retained KV moves"),
        }
        self.counters.slot_moves += 1;
        self.counters.slot_moved_tokens += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Holder::{Fixed as X, Free as F, Retained as T, Running as R};

    #[test]
    fn runs_count_breaks_in_the_ids() {
        assert_eq!(runs(&[]), 0);
        assert_eq!(runs(&[3]), 1);
        assert_eq!(runs(&[0, 1, 2, 3]), 1);
        assert_eq!(runs(&[0, 1, 5, 8]), 3);
    }

    #[test]
    fn the_window_copies_the_fewest_tokens() {
        // Running at 0, 1 and 5: moving 0 and 1 (10 + 10 tokens) beside 5 beats moving 5 (40)
        // beside them; of the two windows that do, the lower.
        let holders = [R, R, F, F, F, R, F];
        let used = [10, 10, 0, 0, 0, 40, 0];
        assert_eq!(best_window(&holders, &used, 3), Some((3, 20)));
        // A paused request's slot is never in the window.
        let holders = [R, X, R, F, F];
        let used = [5, 9, 5, 0, 0];
        assert_eq!(best_window(&holders, &used, 2), Some((2, 5)));
        // A retained conversation in the way moves out (or off the device), at its tokens'
        // price.
        let used = [5, 50, 5, 9];
        assert_eq!(best_window(&[R, T, R, X], &used, 2), Some((0, 55)));
        assert_eq!(best_window(&[R, T, R, F], &used, 2), Some((2, 5)));
        assert_eq!(best_window(&[X, R, X, R], &[1, 5, 1, 5], 2), None);
        assert_eq!(best_window(&[R, T, R, F], &[5, 50, 5, 0], 2), Some((2, 5)));
        let used = [40, 3, 40, 9, 0];
        assert_eq!(best_window(&[R, T, R, X, F], &used, 2), Some((0, 43)));
    }

    #[test]
    fn moves_fill_the_window_then_clear_retained_out_of_it() {
        let holders = [R, F, T, R];
        let used = [5, 0, 30, 8];
        // Window 0..2: running 3 moves into 1.
        assert_eq!(next_move(&holders, &used, 0, 2), Some(Move::Slot(3, 1)));
        // Window 2..4 needs the retained conversation out first (to a free slot outside).
        assert_eq!(next_move(&holders, &used, 2, 2), Some(Move::Slot(2, 1)));
        // With no free slot it leaves the device.
        let holders = [R, T, R];
        assert_eq!(
            next_move(&holders, &[5, 30, 8], 0, 2),
            Some(Move::Offload(1))
        );
    }
}
