//! KV-cell accounting. llama.cpp cannot report free cells, so the engine tracks them itself.
//!
//! Layout: one KV stream per sequence slot (`kv_unified = false`), each with a fixed capacity
//! of `cells_per_seq` cells (see docs/kv-layout.md for the measurement behind this choice).
//! A slot is either free or owned by one sequence — a running request or a retained one —
//! which uses `used` cells, always positions `0..used`.

use crate::types::SeqId;

#[derive(Debug)]
pub struct KvPool {
    cells_per_seq: usize,
    slots: Vec<Option<usize>>,
}

impl KvPool {
    pub fn new(n_slots: usize, cells_per_seq: usize) -> Self {
        Self {
            cells_per_seq,
            slots: vec![None; n_slots],
        }
    }

    /// Takes a free slot, with zero cells used: the one beside the most of `busy` (one that
    /// joins two runs of them first: compact.rs), else the lowest free one.
    pub fn alloc_near(&mut self, busy: &[SeqId]) -> Option<SeqId> {
        let beside =
            |s: SeqId| usize::from(busy.contains(&(s - 1))) + usize::from(busy.contains(&(s + 1)));
        let seq = (0..self.n_slots() as SeqId)
            .filter(|&s| self.is_free(s))
            .max_by_key(|&s| (beside(s), std::cmp::Reverse(s)))?;
        self.take(seq);
        Some(seq)
    }

    /// Whether slot `seq` is free.
    pub fn is_free(&self, seq: SeqId) -> bool {
        self.slots[seq as usize].is_none()
    }

    /// Takes the free slot `seq`, with zero cells used.
    pub fn take(&mut self, seq: SeqId) {
        let slot = &mut self.slots[seq as usize];
        assert!(slot.is_none(), "taking KV slot {seq}, which is not free");
        *slot = Some(0);
    }

    /// Returns the slot and all its cells to the pool.
    pub fn free(&mut self, seq: SeqId) {
        let slot = &mut self.slots[seq as usize];
        assert!(slot.is_some(), "freeing free KV slot {seq}");
        *slot = None;
    }

    /// Records that the sequence now occupies positions `0..used`.
    pub fn set_used(&mut self, seq: SeqId, used: usize) {
        assert!(
            used <= self.cells_per_seq,
            "seq {seq} over capacity: {used}"
        );
        let slot = &mut self.slots[seq as usize];
        assert!(slot.is_some(), "writing to free KV slot {seq}");
        *slot = Some(used);
    }

    pub fn used(&self, seq: SeqId) -> usize {
        self.slots[seq as usize].unwrap_or(0)
    }

    pub fn n_slots(&self) -> usize {
        self.slots.len()
    }

    pub fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }

    pub fn used_cells(&self) -> usize {
        self.slots.iter().flatten().sum()
    }

    pub fn total_cells(&self) -> usize {
        self.cells_per_seq * self.slots.len()
    }

    pub fn free_cells(&self) -> usize {
        self.total_cells() - self.used_cells()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_and_counts() {
        let mut kv = KvPool::new(2, 10);
        let a = kv.alloc_near(&[]).unwrap();
        let b = kv.alloc_near(&[]).unwrap();
        assert_eq!(kv.alloc_near(&[]), None);
        kv.set_used(a, 4);
        kv.set_used(b, 10);
        assert_eq!((kv.used_cells(), kv.free_cells()), (14, 6));
        kv.free(a);
        assert_eq!((kv.free_slots(), kv.used_cells()), (1, 10));
        assert_eq!(kv.alloc_near(&[]), Some(a));
    }

    #[test]
    #[should_panic(expected = "over capacity")]
    fn over_capacity_panics() {
        let mut kv = KvPool::new(1, 10);
        let a = kv.alloc_near(&[]).unwrap();
        kv.set_used(a, 11);
    }

    #[test]
    fn a_new_slot_goes_beside_running_ones() {
        let mut kv = KvPool::new(8, 16);
        for s in [0, 1, 2, 3, 4] {
            kv.take(s);
        }
        kv.free(1);
        kv.free(3);
        // Slots 1 and 3 each join two runs: the lower wins; then 3.
        assert_eq!(kv.alloc_near(&[0, 2, 4]), Some(1));
        assert_eq!(kv.alloc_near(&[2, 4]), Some(3));
        let lowest = kv.alloc_near(&[]);
        assert_eq!(lowest, Some(5), "nothing running: the lowest free");
        // Beside a running slot rather than the lowest free one.
        kv.free(1);
        assert_eq!(kv.alloc_near(&[5]), Some(6));
    }
}
