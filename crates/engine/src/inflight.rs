//! In-flight prefix sharing: a new request copies the prefix its prompt shares with a
//! *running* request's prompt, as far as that request has computed it, and waits at the head
//! of the queue while that request is still prefilling the shared part if waiting finishes
//! its own prompt in no more steps than prefilling it alone would. A burst of requests with
//! one system prompt (an agent's parallel sub-agents, `n` > 1 choices) then prefills it once.
//!
//! tandem's own: llama-server's slots reuse only their own previous prompt, and prefix caches
//! in the vLLM style share only blocks already computed, so requests that arrive together
//! each compute the shared part. Retained sequences (finished turns) are the other source of
//! copies (admit.rs); the longer copy wins.

use crate::prefix::{common_prefix, Loc};
use crate::scheduler::{PrefixReuse, Scheduler};
use crate::types::{SeqId, Token};

/// A running request's KV that a new prompt may copy from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source {
    pub seq: SeqId,
    /// Prompt tokens shared and already computed.
    pub matched: usize,
    /// Cells the source holds (a copy moves them all).
    pub len: usize,
}

impl Scheduler {
    /// The running request whose computed prompt shares the longest prefix with `prompt`.
    pub(crate) fn running_source(&self, prompt: &[Token]) -> Option<Source> {
        if self.cfg.prefix_reuse == PrefixReuse::Off {
            return None;
        }
        let sources = self.running.iter().map(|r| Source {
            seq: r.seq,
            matched: common_prefix(&r.tokens[..r.n_cached.min(r.prompt_len)], prompt),
            len: r.n_cached,
        });
        sources.filter(|s| s.matched > 0).max_by_key(|s| s.matched)
    }

    /// Whether the head request, whose prompt could reuse `reusable_now` tokens at once, should
    /// wait for a running request still prefilling a longer shared prefix. Counted in steps of
    /// the step budget: the source's tokens still to go, then the rest of the prompt, against
    /// the prompt prefilled alone starting with the `budget_left` of this step. A tie waits:
    /// the shared tokens are then computed once instead of twice in the same steps.
    pub(crate) fn waits_for_shared_prefill(
        &self,
        prompt: &[Token],
        reusable_now: usize,
        budget_left: usize,
    ) -> bool {
        if self.cfg.prefix_reuse == PrefixReuse::Off {
            return false;
        }
        let budget = self.cfg.max_batch_tokens;
        let prefilling = self.running.iter().filter(|r| r.n_cached < r.prompt_len);
        let eventual = prefilling.map(|r| {
            let keep = reusable(
                common_prefix(&r.tokens[..r.prompt_len], prompt),
                prompt.len(),
            );
            (keep, keep.saturating_sub(r.n_cached), r.seq, r.prompt_len)
        });
        let Some((keep, to_go, seq, src_len)) = eventual.max_by_key(|e| e.0) else {
            return false;
        };
        if keep <= reusable_now || to_go == 0 || !self.copy_pays(Loc::Device(seq), keep, src_len) {
            return false;
        }
        let waiting = to_go.div_ceil(budget) + (prompt.len() - keep).div_ceil(budget);
        waiting <= steps_alone(prompt.len() - reusable_now, budget_left, budget)
    }
}

/// Steps to prefill `n` tokens with `first` of them in this step and `budget` in each next.
fn steps_alone(n: usize, first: usize, budget: usize) -> usize {
    1 + n.saturating_sub(first).div_ceil(budget)
}

/// How many of `matched` shared tokens a prompt of `prompt_len` may reuse: a chunk of at least
/// `MIN_PREFILL_CHUNK` is left to prefill.
pub(crate) fn reusable(matched: usize, prompt_len: usize) -> usize {
    matched.min(prompt_len.saturating_sub(crate::scheduler::MIN_PREFILL_CHUNK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_alone_counts_this_step_then_whole_budgets() {
        assert_eq!(steps_alone(50, 60, 512), 1);
        assert_eq!(steps_alone(450, 62, 512), 2);
        assert_eq!(steps_alone(1086, 62, 512), 3);
        assert_eq!(steps_alone(1087, 62, 512), 4);
    }

    #[test]
    fn reuse_leaves_a_chunk() {
        assert_eq!(reusable(400, 450), 400);
        assert_eq!(reusable(450, 450), 448);
    }
}
