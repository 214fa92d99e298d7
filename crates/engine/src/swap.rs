//! Host swap-pool accounting: how many bytes of swapped-out KV the host holds, under a fixed
//! capacity (`--swap-space`). The runner holds the bytes; the engine decides and counts.

use std::collections::HashMap;

/// Names one swapped-out sequence's KV in the runner's host pool.
pub type SwapHandle = u64;

#[derive(Debug)]
pub struct SwapPool {
    capacity_bytes: usize,
    bytes_per_token: usize,
    used_bytes: usize,
    entries: HashMap<SwapHandle, usize>,
    next: SwapHandle,
}

impl SwapPool {
    pub fn new(capacity_bytes: usize, bytes_per_token: usize) -> Self {
        Self {
            capacity_bytes,
            bytes_per_token: bytes_per_token.max(1),
            used_bytes: 0,
            entries: HashMap::new(),
            next: 1,
        }
    }

    pub fn bytes(&self, tokens: usize) -> usize {
        tokens * self.bytes_per_token
    }

    pub fn fits(&self, tokens: usize) -> bool {
        self.used_bytes + self.bytes(tokens) <= self.capacity_bytes
    }

    /// Tokens of KV the free part of the pool can take.
    pub fn room_tokens(&self) -> usize {
        (self.capacity_bytes - self.used_bytes) / self.bytes_per_token
    }

    /// Reserves room for `tokens` tokens of KV; `None` when the pool is full.
    pub fn alloc(&mut self, tokens: usize) -> Option<SwapHandle> {
        if !self.fits(tokens) {
            return None;
        }
        let h = self.next;
        self.next += 1;
        let b = self.bytes(tokens);
        self.used_bytes += b;
        self.entries.insert(h, b);
        Some(h)
    }

    pub fn free(&mut self, h: SwapHandle) {
        let b = self
            .entries
            .remove(&h)
            .expect("freeing an unknown swap handle");
        self.used_bytes -= b;
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn set_bytes_per_token(&mut self, b: usize) {
        assert!(self.entries.is_empty(), "pool in use");
        self.bytes_per_token = b.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_enforced_and_freed() {
        let mut p = SwapPool::new(1000, 10);
        let a = p.alloc(60).unwrap();
        assert_eq!(p.room_tokens(), 40);
        assert!(p.alloc(50).is_none());
        let b = p.alloc(40).unwrap();
        assert_eq!(p.used_bytes(), 1000);
        assert_eq!(p.room_tokens(), 0);
        p.free(a);
        p.free(b);
        assert!(p.is_empty() && p.used_bytes() == 0);
    }
}
