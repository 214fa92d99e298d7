//! The interception policy (InferCept's min-waste, mission.md §1): for a paused request,
//! estimate how much longer its interception lasts, price keeping its KV on the device,
//! swapping it to host memory and discarding it, and pick the cheapest. Also the remaining-
//! time estimator (elapsed time, blended with each tool's history).
//!
//! Waste is memory held idle multiplied by time, in token·seconds (the paper's formulas with
//! the per-token size M factored out, since it is common to every option):
//! - preserve: `T_remaining * C`
//! - discard (chunked recompute in `n` chunks): `T_fwd(C)*C/2 + n*T_fwd(C/n)*C_other`, where
//!   each forward time also carries the recompute's attention, `T_attn(C)` (its `C^2/2`
//!   (query, key) pairs at the measured price; on a CPU this is what makes recomputing a deep
//!   context cost more than its tokens' share of the batch line)
//! - swap: `(T_out(C) + T_in(C)) * C_batch` (the batch stalls while the copies run)
//!
//! A partial form (tandem's, where llama.cpp allows it): when the host pool has room for only
//! `H < C` tokens, the swap option copies the first `H` and discards the tail, which is
//! recomputed on resume: `(T_out(H) + T_in(H)) * C_batch` plus the discard waste of `C - H`
//! tokens. llama.cpp can drop a sequence's tail (`seq_rm` from a position) and copy what is
//! left; it cannot copy a tail alone, and with one KV stream per slot keeping a head on the
//! device frees nothing, so this is the only partial form that gives a slot back.

use std::collections::{HashMap, VecDeque};

use crate::cost::CostModel;

/// `--intercept-policy`: how paused requests' KV is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InterceptPolicy {
    /// Cheapest option per request and step, by measured costs.
    #[default]
    MinWaste,
    /// Always keep KV on the device.
    Preserve,
    /// Always swap to host memory (when the pool has room for only part of the KV, the
    /// head; the tail is discarded).
    Swap,
    /// Always free and recompute on resume.
    Discard,
}

/// Where a paused request's KV is (or should go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Preserve,
    Swap,
    Discard,
}

/// `--resume-order`: where a resumed request that lost its KV slot queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResumeOrder {
    /// Ahead of new requests, in original arrival order (InferCept).
    #[default]
    Arrival,
    /// Behind every waiting request, like a new one (vLLM's behavior; the baseline).
    Tail,
}

/// What the waste formulas need to know about one paused request and the batch around it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WasteInputs {
    /// Context tokens of the paused request (its KV).
    pub context: usize,
    /// Context tokens of the running requests (stalled by a recompute).
    pub others: usize,
    /// Context tokens of the whole batch (stalled by a copy).
    pub batch: usize,
    /// Estimated remaining interception time.
    pub remaining_s: f64,
    /// Tokens per step a recompute can use (the step budget).
    pub chunk: usize,
    /// Tokens of KV the swap pool can take now (its free room, plus what retained
    /// conversations held there would give up).
    pub swap_room: usize,
}

/// Waste of each option, in token·seconds; `swap` is infinite when the pool has no room.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Waste {
    pub preserve: f64,
    pub swap: f64,
    pub discard: f64,
    /// Tokens the swap option copies: the whole context, or the head the pool has room for
    /// (the tail is then discarded); 0 when the pool has no room.
    pub swap_tokens: usize,
}

impl Waste {
    pub fn compute(x: &WasteInputs, cost: &CostModel) -> Self {
        let head = x.context.min(x.swap_room);
        let swap = if head == 0 && x.context > 0 {
            f64::INFINITY
        } else {
            (cost.t_swap_out(head) + cost.t_swap_in(head)) * x.batch as f64
                + recompute_waste(head, x.context - head, x, cost)
        };
        Self {
            preserve: x.remaining_s * x.context as f64,
            swap,
            discard: recompute_waste(0, x.context, x, cost),
            swap_tokens: head,
        }
    }

    /// The cheapest option (ties keep the KV where it is: preserve, then swap).
    pub fn best(&self) -> Placement {
        if self.preserve <= self.swap && self.preserve <= self.discard {
            Placement::Preserve
        } else if self.swap <= self.discard {
            Placement::Swap
        } else {
            Placement::Discard
        }
    }

    /// How much choosing the best option saves over keeping the KV.
    pub fn saving(&self) -> f64 {
        self.preserve - self.swap.min(self.discard).min(self.preserve)
    }
}

/// Waste of recomputing the `tokens` tokens from position `start` of the request on resume,
/// in chunks of the step budget: `(T_fwd(C) + T_attn)*C/2 + (n*T_fwd(C/n) + T_attn)*C_other`,
/// `T_attn` the attention of those tokens over everything before them (the same however they
/// are chunked). Nothing to recompute costs nothing.
fn recompute_waste(start: usize, tokens: usize, x: &WasteInputs, cost: &CostModel) -> f64 {
    if tokens == 0 {
        return 0.0;
    }
    let n = tokens.div_ceil(x.chunk.max(1)).max(1);
    let attn = cost.t_attend_chunked(start, tokens, x.chunk);
    (cost.t_fwd(tokens) + attn) * tokens as f64 / 2.0
        + (n as f64 * cost.t_fwd(tokens / n) + attn) * x.others as f64
}

/// Remaining interception time. Without history, InferCept's estimator: an interception that
/// has lasted `t` is expected to last about `t` more. With a history of the tool's durations,
/// the mean residual of the past calls that outlasted `t` (how much longer such calls ran),
/// blended with the elapsed-time estimate until `HISTORY_FULL_WEIGHT` calls are known; when
/// no past call lasted this long, elapsed time is all there is to go on.
#[derive(Debug, Default)]
pub struct Estimator {
    history: HashMap<String, VecDeque<f64>>,
}

/// Calls of history after which the history alone decides.
const HISTORY_FULL_WEIGHT: f64 = 4.0;
/// Durations kept per tool.
const HISTORY_LEN: usize = 64;

impl Estimator {
    pub fn remaining(&self, tool: &str, elapsed: f64) -> f64 {
        let Some(h) = self.history.get(tool) else {
            return elapsed;
        };
        let (n, sum) = h
            .iter()
            .filter(|&&d| d > elapsed)
            .fold((0usize, 0.0), |(n, s), d| (n + 1, s + d - elapsed));
        if n == 0 {
            return elapsed;
        }
        let residual = sum / n as f64;
        let w = (h.len() as f64 / HISTORY_FULL_WEIGHT).min(1.0);
        w * residual + (1.0 - w) * elapsed
    }

    /// Whether any interception of `tool` has been seen.
    pub fn knows(&self, tool: &str) -> bool {
        self.history.contains_key(tool)
    }

    /// Records a finished interception of `tool` that lasted `duration` seconds.
    pub fn record(&mut self, tool: &str, duration: f64) {
        let h = self.history.entry(tool.to_string()).or_default();
        if h.len() == HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(context: usize, remaining_s: f64) -> WasteInputs {
        WasteInputs {
            context,
            others: 4000,
            batch: 4000 + context,
            remaining_s,
            chunk: 512,
            swap_room: usize::MAX,
        }
    }

    #[test]
    fn short_interceptions_preserve_long_ones_swap() {
        let cost = CostModel::default();
        let short = Waste::compute(&inputs(1000, 0.01), &cost);
        assert_eq!(short.best(), Placement::Preserve);
        let long = Waste::compute(&inputs(1000, 20.0), &cost);
        assert_eq!(long.best(), Placement::Swap);
    }

    #[test]
    fn a_full_swap_pool_falls_back_to_discard() {
        let cost = CostModel::default();
        let x = WasteInputs {
            swap_room: 0,
            ..inputs(1000, 20.0)
        };
        let w = Waste::compute(&x, &cost);
        assert_eq!(w.swap, f64::INFINITY);
        assert_eq!(w.best(), Placement::Discard);
    }

    #[test]
    fn a_pool_with_room_for_part_prices_the_head_copied_and_the_tail_recomputed() {
        let cost = CostModel::default();
        let whole = Waste::compute(&inputs(1000, 20.0), &cost);
        assert_eq!(whole.swap_tokens, 1000);
        let x = WasteInputs {
            swap_room: 600,
            ..inputs(1000, 20.0)
        };
        let part = Waste::compute(&x, &cost);
        assert_eq!(part.swap_tokens, 600);
        let copy = (cost.t_swap_out(600) + cost.t_swap_in(600)) * x.batch as f64;
        let tail = Waste::compute(&inputs(400, 20.0), &cost).discard;
        assert!((part.swap - (copy + tail)).abs() < 1e-9, "{part:?}");
        // Cheap copies: the head is worth copying, and recomputing less beats discarding all.
        assert!(whole.swap < part.swap && part.swap < part.discard);
        assert_eq!(part.best(), Placement::Swap);
    }

    #[test]
    fn a_head_too_small_to_pay_for_its_copies_is_not_swapped() {
        // Copies with a large fixed cost: copying 20 of 1000 tokens saves 20 tokens of
        // recompute and pays two fixed costs, so discarding everything is cheaper.
        let cost = CostModel {
            swap_base_s: 0.5,
            ..CostModel::default()
        };
        let x = WasteInputs {
            swap_room: 20,
            ..inputs(1000, 100.0)
        };
        let w = Waste::compute(&x, &cost);
        assert_eq!(w.swap_tokens, 20);
        assert!(w.swap > w.discard);
        assert_eq!(w.best(), Placement::Discard);
    }

    #[test]
    fn small_contexts_discard_large_ones_swap_when_copies_have_a_fixed_cost() {
        // A copy with a large fixed cost (e.g. a slow link): recomputing a few tokens is
        // cheaper than two copies, recomputing thousands is not.
        let cost = CostModel {
            swap_base_s: 0.5,
            ..CostModel::default()
        };
        assert_eq!(
            Waste::compute(&inputs(50, 100.0), &cost).best(),
            Placement::Discard
        );
        assert_eq!(
            Waste::compute(&inputs(1500, 100.0), &cost).best(),
            Placement::Swap
        );
    }

    #[test]
    fn attention_makes_a_deep_recompute_dearer_than_its_copies() {
        // Copies with a fixed cost, a context just under the size where they pay: without an
        // attention price discarding wins; with one, the recompute's C^2/2 pairs tip it.
        let flat = CostModel {
            swap_base_s: 0.5,
            ..CostModel::default()
        };
        let deep = CostModel {
            attn_per_pair_s: 1e-5,
            ..flat
        };
        let x = inputs(230, 100.0);
        assert_eq!(Waste::compute(&x, &flat).best(), Placement::Discard);
        let w = Waste::compute(&x, &deep);
        assert_eq!(w.best(), Placement::Swap);
        let attn = deep.t_attend(0, 230);
        let expect = (deep.t_fwd(230) + attn) * 115.0 + (deep.t_fwd(230) + attn) * 4000.0;
        assert!((w.discard - expect).abs() < 1e-6, "{w:?}");
        // A partial swap's tail is recomputed at its depth, after the head.
        let part = Waste::compute(
            &WasteInputs {
                swap_room: 130,
                ..x
            },
            &deep,
        );
        let copy = (deep.t_swap_out(130) + deep.t_swap_in(130)) * x.batch as f64;
        let tail = recompute_waste(130, 100, &x, &deep);
        assert!((part.swap - (copy + tail)).abs() < 1e-6);
        assert!(tail > recompute_waste(0, 100, &x, &deep));
    }

    #[test]
    fn the_flip_point_follows_the_formulas() {
        let cost = CostModel::default();
        let x = inputs(1000, 0.0);
        let swap = (cost.t_swap_out(1000) + cost.t_swap_in(1000)) * x.batch as f64;
        let flip = swap / 1000.0;
        let below = Waste::compute(
            &WasteInputs {
                remaining_s: flip * 0.9,
                ..x
            },
            &cost,
        );
        let above = Waste::compute(
            &WasteInputs {
                remaining_s: flip * 1.1,
                ..x
            },
            &cost,
        );
        assert_eq!(below.best(), Placement::Preserve);
        assert_eq!(above.best(), Placement::Swap);
    }

    #[test]
    fn estimator_uses_elapsed_then_history() {
        let mut e = Estimator::default();
        assert_eq!(e.remaining("search", 0.5), 0.5);
        for _ in 0..100 {
            e.record("search", 2.0);
        }
        let r = e.remaining("search", 0.5);
        assert!((r - 1.5).abs() < 1e-9, "{r}");
        assert!(e.remaining("search", 1.99) < 0.02, "near the usual end");
        assert_eq!(e.remaining("search", 3.0), 3.0, "longer than ever seen");
        assert_eq!(e.remaining("other", 0.3), 0.3);
        let mut one = Estimator::default();
        one.record("t", 2.0);
        let r = one.remaining("t", 0.5);
        assert!(
            (r - (0.25 * 1.5 + 0.75 * 0.5)).abs() < 1e-9,
            "one call weighs a quarter"
        );
    }
}
