//! How many forward passes llama.cpp runs for one batch. Its KV cache cuts a batch into
//! ubatches (`llama_kv_cache::init_batch`), and each ubatch is a pass over all the weights.
//! With one stream (a unified cell pool, or a single sequence) it takes tokens in order,
//! `n_ubatch` at a time (`split_simple`). With a stream per sequence it calls
//! `split_equal(n_ubatch, sequential = true)`: a ubatch holds sequences of consecutive ids
//! in the order they first appear, and the same number of tokens of each, so decode rows
//! in slots {0, 1, 5} take two passes and a prefill chunk beside decode rows takes one pass
//! for the rows (and the chunk's first token) and one for the rest of the chunk.
//!
//! Replayed by hand because llama.cpp does not report it (llama-batch.cpp of the vendored
//! llama.cpp, for single-sequence tokens, which is all tandem's batches hold); runners
//! report it per step so `/metrics` counts passes (`tandem_forward_passes_total`), which
//! measures slot compaction and mixed steps without the timing noise of a shared machine.

use crate::plan::PlanItem;

/// Passes llama.cpp runs for a plan's items, each a run of tokens of its sequence.
pub fn plan_passes(items: &[PlanItem], n_ubatch: usize, streams: bool) -> usize {
    let seqs: Vec<i32> = items
        .iter()
        .flat_map(|i| std::iter::repeat_n(i.seq, i.tokens.len()))
        .collect();
    passes(&seqs, n_ubatch, streams)
}

/// Passes llama.cpp runs for a batch whose tokens belong to `seqs` (one sequence id per
/// token, in batch order), ubatches of at most `n_ubatch` tokens, with `streams` true for a
/// stream per sequence (more than one sequence slot, `kv_unified` off).
pub fn passes(seqs: &[i32], n_ubatch: usize, streams: bool) -> usize {
    let n_ubatch = n_ubatch.max(1);
    if !streams {
        return seqs.len().div_ceil(n_ubatch);
    }
    let mut used = vec![false; seqs.len()];
    let mut passes = 0;
    loop {
        let set = sequence_set(seqs, &used, n_ubatch);
        if set.is_empty() {
            return passes;
        }
        take_equal(seqs, &mut used, &set, n_ubatch);
        passes += 1;
    }
}

/// The sequences of the next ubatch: scanning unused tokens in order, each new id that is
/// one past the last taken (any id for the first), up to just over `n_ubatch` of them.
fn sequence_set(seqs: &[i32], used: &[bool], n_ubatch: usize) -> Vec<i32> {
    let mut set: Vec<i32> = Vec::new();
    for (&s, _) in seqs.iter().zip(used).filter(|(_, &u)| !u) {
        let next = set.last().is_none_or(|&last| s == last + 1);
        if next && !set.contains(&s) {
            set.push(s);
            if set.len() > n_ubatch {
                break;
            }
        }
    }
    set
}

/// Marks the ubatch's tokens used: one unused token of each sequence in `set` at a time,
/// while every one of them has another and the ubatch has room for a further round.
fn take_equal(seqs: &[i32], used: &mut [bool], set: &[i32], n_ubatch: usize) {
    let mut queues: Vec<Vec<usize>> = set
        .iter()
        .map(|&s| {
            (0..seqs.len())
                .filter(|&i| seqs[i] == s && !used[i])
                .collect()
        })
        .collect();
    queues.iter_mut().for_each(|q| q.reverse());
    let mut rounds = 0;
    while queues.iter().all(|q| !q.is_empty()) {
        for q in &mut queues {
            used[q.pop().expect("checked")] = true;
        }
        rounds += 1;
        if (rounds + 1) * set.len() > n_ubatch {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::passes;

    fn rows(seqs: &[(i32, usize)]) -> Vec<i32> {
        seqs.iter()
            .flat_map(|&(s, n)| std::iter::repeat_n(s, n))
            .collect()
    }

    #[test]
    fn decode_rows_take_a_pass_per_run_of_consecutive_slots() {
        let b = |s: &[i32]| passes(s, 512, true);
        assert_eq!(b(&[]), 0);
        assert_eq!(b(&[0, 1, 2, 3]), 1);
        assert_eq!(b(&[0, 1, 5, 8]), 3);
        assert_eq!(b(&[3, 4, 5, 9, 10]), 2);
        // Out of order, 2 after 1 joins the first run; 0 then starts another.
        assert_eq!(b(&[1, 2, 0]), 2);
    }

    #[test]
    fn sequences_take_equal_shares_of_a_pass() {
        // A 64-token chunk in slot 3 beside decode rows in 0..3: the rows and the chunk's
        // first token, then the other 63.
        assert_eq!(
            passes(&rows(&[(0, 1), (1, 1), (2, 1), (3, 64)]), 512, true),
            2
        );
        // Two chunks of 10 and 30 in slots 0 and 1: 10 of each, then the 20 left.
        assert_eq!(passes(&rows(&[(0, 10), (1, 30)]), 512, true), 2);
        // Equal chunks share every pass.
        assert_eq!(passes(&rows(&[(4, 16), (5, 16)]), 512, true), 1);
        // A pass holds at most n_ubatch tokens, in whole rounds: three sequences of 8 in
        // ubatches of 12 take 4 rounds a pass (12 tokens); in ubatches of 10, 3 rounds (9).
        assert_eq!(passes(&rows(&[(0, 8), (1, 8), (2, 8)]), 12, true), 2);
        assert_eq!(passes(&rows(&[(0, 8), (1, 8), (2, 8)]), 10, true), 3);
    }

    #[test]
    fn one_stream_takes_tokens_in_order() {
        assert_eq!(passes(&[0, 1, 5, 8], 512, false), 1);
        assert_eq!(passes(&rows(&[(0, 300), (7, 300)]), 512, false), 2);
    }
}
