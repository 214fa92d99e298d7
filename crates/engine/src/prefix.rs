//! Retained sequences: KV of finished or cancelled requests, kept while slots allow so a later
//! request whose prompt extends it (the next turn of a conversation) continues from it instead
//! of prefilling again. An entry's KV is on the device (in a slot) or swapped out to the host
//! pool; when slots run short the scheduler swaps or drops entries, least-recently-used first.

use crate::swap::SwapHandle;
use crate::types::{SeqId, Token};

/// Where a retained entry's KV is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    Device(SeqId),
    Host(SwapHandle),
}

#[derive(Debug, Clone)]
pub struct Retained {
    pub loc: Loc,
    /// The tokens whose KV occupies positions `0..tokens.len()` of `seq`.
    pub tokens: Vec<Token>,
    /// How many of `tokens` were the last turn's prompt (the rest is its reply).
    pub prompt_len: usize,
    pub last_used: f64,
}

impl Retained {
    /// Whether a prompt sharing `matched` tokens with this conversation continues it: it holds
    /// the conversation's whole last prompt (a follow-up, or the same turn sent again).
    pub fn continued_by(&self, matched: usize) -> bool {
        matched >= self.prompt_len
    }
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

    /// The device KV cells the entries in slots hold (`kv` says how many each slot uses).
    pub fn device_cells(&self, kv: &crate::kv::KvPool) -> usize {
        self.device_seqs().map(|seq| kv.used(seq)).sum()
    }

    /// The slots that entries on the device are in.
    pub fn device_seqs(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.entries.iter().filter_map(|e| match e.loc {
            Loc::Device(seq) => Some(seq),
            Loc::Host(_) => None,
        })
    }

    /// The entry in slot `from` is now in slot `to` (its KV was moved).
    pub fn relocate(&mut self, from: SeqId, to: SeqId) {
        for e in &mut self.entries {
            if e.loc == Loc::Device(from) {
                e.loc = Loc::Device(to);
            }
        }
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

    /// The best-matching entry and the length of the prefix it shares with `prompt`, leaving
    /// the entry in place (a new request may copy the shared prefix).
    pub fn shared(&self, prompt: &[Token]) -> Option<(&Retained, usize)> {
        let (idx, n) = self.best(prompt).filter(|&(_, n)| n > 0)?;
        Some((&self.entries[idx], n))
    }

    /// Removes the least recently used entry whose KV is on the device (`host == false`) or
    /// in the host pool (`host == true`).
    pub fn pop_lru(&mut self, host: bool) -> Option<Retained> {
        let idx = (0..self.entries.len())
            .filter(|&i| matches!(self.entries[i].loc, Loc::Host(_)) == host)
            .min_by(|&a, &b| {
                self.entries[a]
                    .last_used
                    .total_cmp(&self.entries[b].last_used)
            })?;
        Some(self.entries.swap_remove(idx))
    }

    /// Takes out the entry in slot `seq`.
    pub fn take_at(&mut self, seq: SeqId) -> Option<Retained> {
        let idx = self
            .entries
            .iter()
            .position(|e| e.loc == Loc::Device(seq))?;
        Some(self.entries.swap_remove(idx))
    }

    /// Entries whose KV is on the device.
    pub fn on_device(&self) -> usize {
        self.device_seqs().count()
    }

    /// Tokens of KV the entries in the host pool hold there.
    pub fn host_tokens(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.loc, Loc::Host(_)))
            .map(|e| e.tokens.len())
            .sum()
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
            loc: Loc::Device(seq),
            tokens: tokens.to_vec(),
            prompt_len: tokens.len(),
            last_used: t,
        }
    }

    #[test]
    fn prefers_longest_extension() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1, 2], 0.0));
        set.insert(entry(1, &[1, 2, 3, 4], 1.0));
        let (e, n) = set.take_match(&[1, 2, 3, 4, 5], false).unwrap();
        assert_eq!((e.loc, n), (Loc::Device(1), 4));
    }

    #[test]
    fn weak_match_only_when_evicting() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1, 9, 9, 9, 9], 0.0));
        assert!(set.take_match(&[1, 2, 3], false).is_none());
        assert_eq!(set.take_match(&[1, 2, 3], true).unwrap().1, 1);
    }

    #[test]
    fn shared_leaves_the_entry_in_place() {
        let mut set = RetainedSet::default();
        set.insert(entry(3, &[1, 2, 9, 9], 0.0));
        let (e, n) = set.shared(&[1, 2, 3]).unwrap();
        assert_eq!((e.loc, n, e.tokens.len()), (Loc::Device(3), 2, 4));
        assert!(!e.continued_by(n) && e.continued_by(4));
        assert!(set.shared(&[7]).is_none());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn lru_order() {
        let mut set = RetainedSet::default();
        set.insert(entry(0, &[1], 5.0));
        set.insert(entry(1, &[2], 1.0));
        set.insert(Retained {
            loc: Loc::Host(7),
            tokens: vec![3],
            prompt_len: 1,
            last_used: 0.0,
        });
        assert_eq!(set.pop_lru(false).unwrap().loc, Loc::Device(1));
        assert_eq!(set.on_device(), 1);
        assert_eq!(set.pop_lru(false).unwrap().loc, Loc::Device(0));
        assert!(set.pop_lru(false).is_none());
        assert_eq!(set.pop_lru(true).unwrap().loc, Loc::Host(7));
    }
}
