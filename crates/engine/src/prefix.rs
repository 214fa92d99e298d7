//! Retained sequences: KV of finished or cancelled requests, kept while slots allow so a later
//! request whose prompt extends it (the next turn of a conversation) continues from it instead
//! of prefilling again. Evicted least-recently-used.

use crate::types::{SeqId, Token};

#[derive(Debug, Clone)]
pub struct Retained {
    pub seq: SeqId,
    /// The tokens whose KV occupies positions `0..tokens.len()` of `seq`.
    pub tokens: Vec<Token>,
    pub last_used: f64,
}

#[derive(Debug, Default)]
pub struct RetainedSet {
    entries: Vec<Retained>,
}

/// Length of the common prefix of two token slices.
pub fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl RetainedSet {
    pub fn insert(&mut self, entry: Retained) {
        self.entries.push(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry sharing the longest prefix with `prompt`, and that length (0 if none shares).
    fn best(&self, prompt: &[Token]) -> Option<(usize, usize)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .max_by_key(|&(_, n)| n)
    }

    /// Takes the best-matching entry if reusing it is clearly right: the match covers at least
    /// half of the entry (the conversation continues) or of the prompt, or `must_evict` (no
    /// free slot, so some entry goes anyway and a partial match still saves prefill).
    pub fn take_match(&mut self, prompt: &[Token], must_evict: bool) -> Option<(Retained, usize)> {
        let (idx, n) = self.best(prompt)?;
        let len = self.entries[idx].tokens.len();
        let worth = n > 0 && (2 * n >= len || 2 * n >= prompt.len() || must_evict);
        worth.then(|| (self.entries.swap_remove(idx), n))
    }

    /// Removes the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<Retained> {
        let idx = (0..self.entries.len()).min_by(|&a, &b| {
            self.entries[a]
                .last_used
                .total_cmp(&self.entries[b].last_used)
        })?;
        Some(self.entries.swap_remove(idx))
    }

    pub fn drain(&mut self) -> Vec<Retained> {
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: SeqId, tokens: &[Token], t: f64) -> Retained {
        Retained {
            seq,
            tokens: tokens.to_vec(),
            last_used: t,
        }
    }

    #[test]
    fn prefers_longest_extension() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1, 2], 0.0));
        set.insert(entry(1, &[1, 2, 3, 4], 1.0));
        let (e, n) = set.take_match(&[1, 2, 3, 4, 5], false).unwrap();
        assert_eq!((e.seq, n), (1, 4));
    }

    #[test]
    fn weak_match_only_when_evicting() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1, 9, 9, 9, 9], 0.0));
        assert!(set.take_match(&[1, 2, 3], false).is_none());
        assert_eq!(set.take_match(&[1, 2, 3], true).unwrap().1, 1);
    }

    #[test]
    fn lru_order() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1], 5.0));
        set.insert(entry(1, &[2], 1.0));
        assert_eq!(set.pop_lru().unwrap().seq, 1);
        assert_eq!(set.pop_lru().unwrap().seq, 0);
        assert!(set.pop_lru().is_none());
    }
}
