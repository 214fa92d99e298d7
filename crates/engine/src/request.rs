//! A request inside the scheduler: its full token sequence, how much of it is in KV, and its
//! generation limits. Prefill, decode, recompute after a discard and resumed tool output are
//! the same thing here: tokens not yet run.

use tokio::sync::mpsc::UnboundedSender;

use crate::drafter::Drafter;
use crate::types::{
    Constraint, Event, InterceptSpec, RequestId, SamplingParams, SeqId, Token, Usage,
};

#[derive(Debug)]
pub struct Active {
    pub id: RequestId,
    /// The KV slot; meaningful only while the request's KV is on the device.
    pub seq: SeqId,
    /// Prompt, then every generated and appended token (the last one is not in KV until the
    /// next step).
    pub tokens: Vec<Token>,
    /// Tokens whose KV is at positions `0..n_cached` of `seq`.
    pub n_cached: usize,
    /// Most tokens ever in KV: positions below it that run again are recomputation.
    pub high_water: usize,
    /// Per position: whether its KV was written by a one-token item (decode kernels). An
    /// exact recompute repeats that split (see `next_run`).
    pub single_row: Vec<bool>,
    pub prompt_len: usize,
    /// Prompt tokens taken from a retained sequence.
    pub reused: usize,
    pub generated: usize,
    /// Tokens appended by resumes, over all pauses.
    pub appended: usize,
    /// Already clipped to the slot's capacity.
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub events: UnboundedSender<Event>,
    pub intercept: InterceptSpec,
    pub constraint: Option<Constraint>,
    /// Scripted pauses already taken.
    pub scripted_done: usize,
    /// Tokens generated since the request started or last resumed (triggers match only these).
    pub segment_generated: usize,
    /// Rows below this position have had their prompt scores sent (a recomputed chunk is
    /// scored again but not reported twice).
    pub prompt_scored: usize,
    pub arrival: f64,
    pub last_token_at: Option<f64>,
    /// Where drafts come from (the client's prediction, or prompt lookup), followed as tokens
    /// are generated.
    pub drafter: Option<Drafter>,
    /// Predicted tokens accepted and rejected so far.
    pub accepted_predicted: usize,
    pub rejected_predicted: usize,
}

/// The largest cut at or below `k` (cells kept) from which recomputing the rest repeats how
/// each position was written (`written[p]`: by a one-token item): never one position short
/// of the end of a multi-token run, which would leave that position to be recomputed as a
/// one-token item. Runs written by chunks have at least two positions, so one step back is
/// enough.
pub fn exact_cut(written: &[bool], k: usize) -> usize {
    let lone_multi = k > 0 && k + 1 < written.len() && !written[k] && written[k + 1];
    if lone_multi {
        k - 1
    } else {
        k
    }
}

/// How the next tokens of a request must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// One token (a decode, or recomputing a position a decode wrote).
    Single,
    /// A multi-token chunk of at most this many tokens.
    Multi(usize),
}

impl Active {
    /// Tokens still to run through the model.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.n_cached
    }

    /// Steps it likely still runs: its pending tokens in chunks of `chunk`, then a decode
    /// step per token it may still generate.
    pub fn steps_left(&self, chunk: usize) -> usize {
        let left = self.max_tokens.saturating_sub(self.generated);
        self.pending().div_ceil(chunk.max(1)) + left
    }

    /// The next run. With `exact`, recomputed positions repeat how they were first written
    /// (one-token items stay one-token, multi-token runs are not merged with them), so their
    /// KV is bit-identical to before the discard (llama.cpp's CPU kernels round differently
    /// for one-row batches).
    pub fn next_run(&self, exact: bool) -> Run {
        let pending = self.pending();
        let written = self.single_row.len();
        if pending == 1 || (exact && self.n_cached < written && self.single_row[self.n_cached]) {
            return Run::Single;
        }
        if !exact || self.n_cached >= written {
            return Run::Multi(pending);
        }
        let run = self.single_row[self.n_cached..]
            .iter()
            .take_while(|s| !**s)
            .count();
        if self.n_cached + run == written {
            Run::Multi(pending)
        } else if run < 2 {
            // Cannot happen (multi-token runs are written by chunks of at least two), but a
            // one-token chunk must never be planned as multi-token.
            Run::Single
        } else {
            Run::Multi(run)
        }
    }

    /// Where to cut this request's KV to keep about `k` cells (see `exact_cut`).
    pub fn cut_at_or_below(&self, k: usize) -> usize {
        exact_cut(&self.single_row, k)
    }

    /// Records that positions `start..start+n` now hold KV, written by an item of one row
    /// when `one_row` (a verified draft's rows may be kept down to one of several).
    pub fn wrote(&mut self, start: usize, n: usize, one_row: bool) {
        let end = start + n;
        if self.single_row.len() < end {
            self.single_row.resize(end, false);
        }
        self.single_row[start..end].fill(one_row);
        self.n_cached = end;
        self.high_water = self.high_water.max(end);
    }

    /// Whether tokens its constraint forces are appended without sampling (jump-forward): not
    /// when the request asked for log-probabilities, which every output token needs a sampled
    /// row for.
    pub fn jumps_forward(&self) -> bool {
        self.sampling.logprobs.is_none()
    }

    /// Records a verified draft of `drafted` tokens, `accepted` of them taken: the next draft
    /// length and `/metrics`; for a client's prediction also the usage counts and
    /// `Event::Predicted`.
    pub fn verified_draft(&mut self, drafted: usize, accepted: usize) {
        let rejected = drafted - accepted;
        let Some(d) = self.drafter.as_mut() else {
            return;
        };
        d.verified(drafted, accepted);
        if !d.is_prediction() {
            metrics::counter!("tandem_lookup_accepted_tokens_total").increment(accepted as u64);
            metrics::counter!("tandem_lookup_rejected_tokens_total").increment(rejected as u64);
            return;
        }
        self.accepted_predicted += accepted;
        self.rejected_predicted += rejected;
        metrics::counter!("tandem_prediction_accepted_tokens_total").increment(accepted as u64);
        metrics::counter!("tandem_prediction_rejected_tokens_total").increment(rejected as u64);
        let _ = self.events.send(Event::Predicted { accepted, rejected });
    }

    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated,
            cached_tokens: self.reused,
            appended_tokens: self.appended,
            accepted_prediction_tokens: self.accepted_predicted,
            rejected_prediction_tokens: self.rejected_predicted,
        }
    }

    /// The tool to pause for after the token just generated, if any.
    pub fn pause_for(&self) -> Option<String> {
        if let Some((n, tool)) = self.intercept.after_tokens.get(self.scripted_done) {
            if *n == self.generated {
                return Some(tool.clone());
            }
        }
        let out = &self.tokens[self.tokens.len() - self.segment_generated..];
        self.intercept
            .triggers
            .iter()
            .any(|t| !t.is_empty() && out.ends_with(t))
            .then(|| "trigger".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::exact_cut;

    #[test]
    fn a_cut_never_leaves_one_position_of_a_multi_token_run() {
        // Positions 0..4 by a chunk, 4..6 by decodes, 6..9 by a chunk, 9 by a decode.
        let w = [
            false, false, false, false, true, true, false, false, false, true,
        ];
        assert_eq!(
            exact_cut(&w, 3),
            2,
            "3 would leave position 3 of the first chunk alone"
        );
        assert_eq!(
            exact_cut(&w, 8),
            7,
            "same for the last position of the second chunk"
        );
        for k in [0, 1, 2, 4, 5, 6, 7, 9, 10] {
            assert_eq!(exact_cut(&w, k), k, "cut at {k} is clean");
        }
        // The last run may end where KV ends: it is recomputed with the new tokens.
        assert_eq!(exact_cut(&[false, false, false], 2), 2);
    }
}
