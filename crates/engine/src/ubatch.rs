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

use std::collections::{HashMap, VecDeque};

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
    // Each sequence's unused tokens, in batch order.
    let mut left: HashMap<i32, VecDeque<usize>> = HashMap::new();
    for (i, &s) in seqs.iter().enumerate() {
        left.entry(s).or_default().push_back(i);
    }
    let mut used = vec![false; seqs.len()];
    let mut passes = 0;
    loop {
        let set = sequence_set(seqs, &used, n_ubatch);
        if set.is_empty() {
            return passes;
        }
        take_equal(&mut left, &mut used, &set, n_ubatch);
        passes += 1;
    }
}

/// The sequences of the next ubatch: scanning unused tokens in order, each id that is one
/// past the last taken (any id for the first), up to just over `n_ubatch` of them.
fn sequence_set(seqs: &[i32], used: &[bool], n_ubatch: usize) -> Vec<i32> {
    let mut set: Vec<i32> = Vec::new();
    for (&s, _) in seqs.iter().zip(used).filter(|(_, &u)| !u) {
        if set.last().is_none_or(|&last| s == last + 1) {
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
fn take_equal(
    left: &mut HashMap<i32, VecDeque<usize>>,
    used: &mut [bool],
    set: &[i32],
    n_ubatch: usize,
) {
    let mut rounds = 0;
    while set.iter().all(|s| !left[s].is_empty()) {
        for s in set {
            let i = left
                .get_mut(s)
                .and_then(VecDeque::pop_front)
                .expect("checked");
            used[i] = true;
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

    /// llama.cpp's `split_equal(n_ubatch, sequential = true)` loop transcribed line by line
    /// (single-sequence tokens), as an oracle for the faster replay.
    fn transcribed(seqs: &[i32], n_ubatch: usize) -> usize {
        let n = seqs.len();
        let mut used = vec![false; n];
        let mut ubatches = 0;
        loop {
            let mut cur: Vec<i32> = Vec::new();
            let mut last = -1;
            for i in 0..n {
                if used[i] {
                    continue;
                }
                let mut add = !cur.contains(&seqs[i]);
                add = add && (cur.is_empty() || seqs[i] == last + 1);
                if add {
                    cur.push(seqs[i]);
                    last = seqs[i];
                    if cur.len() > n_ubatch {
                        break;
                    }
                }
            }
            if cur.is_empty() {
                return ubatches;
            }
            let map: Vec<Vec<usize>> = cur
                .iter()
                .map(|&s| (0..n).filter(|&i| seqs[i] == s).collect())
                .collect();
            let mut idx: Vec<usize> = map
                .iter()
                .map(|m| m.iter().position(|&i| !used[i]).unwrap())
                .collect();
            let mut taken = 0;
            loop {
                if (0..cur.len()).any(|s| idx[s] >= map[s].len()) {
                    break;
                }
                for s in 0..cur.len() {
                    used[map[s][idx[s]]] = true;
                    idx[s] += 1;
                }
                taken += 1;
                if (taken + 1) * cur.len() > n_ubatch {
                    break;
                }
            }
            ubatches += 1;
        }
    }

    #[test]
    fn the_replay_agrees_with_llama_cpps_loop_on_random_batches() {
        // A small deterministic generator (no dependency for one test).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..2000 {
            let items = 1 + next(6) as usize;
            let mut seqs = Vec::new();
            for _ in 0..items {
                let (seq, len) = (next(8) as i32, 1 + next(20) as usize);
                seqs.extend(std::iter::repeat_n(seq, len));
            }
            let n_ubatch = 4 + next(60) as usize;
            assert_eq!(
                passes(&seqs, n_ubatch, true),
                transcribed(&seqs, n_ubatch),
                "{seqs:?} in ubatches of {n_ubatch}"
            );
        }
    }

    #[test]
    fn one_stream_takes_tokens_in_order() {
        assert_eq!(passes(&[0, 1, 5, 8], 512, false), 1);
        assert_eq!(passes(&rows(&[(0, 300), (7, 300)]), 512, false), 2);
    }
}
