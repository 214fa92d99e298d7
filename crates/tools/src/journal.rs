//! A bounded undo journal for the constraints that roll back speculative commits (`Guided`,
//! `ServerTurns`): the engine commits a draft's tokens to learn each drafted row's mask, then
//! rolls them back. Each commit pushes how to undo it; only the latest `CAPACITY` are kept,
//! more than any draft (16 tokens, `tandem_engine`'s predict).

use std::collections::VecDeque;

const CAPACITY: usize = 64;

pub(crate) struct Journal<T>(VecDeque<T>);

impl<T> Default for Journal<T> {
    fn default() -> Self {
        Self(VecDeque::new())
    }
}

impl<T> Journal<T> {
    /// Records how to undo one commit, dropping the oldest entry when full.
    pub(crate) fn push(&mut self, undo: T) {
        if self.0.len() == CAPACITY {
            self.0.pop_front();
        }
        self.0.push_back(undo);
    }

    /// Nothing before this point can be undone (text appended on a resume is no commit).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The undo entries of the last `n` commits, newest first, taken out of the journal; an
    /// error when fewer are kept.
    pub(crate) fn take_last(&mut self, n: usize) -> Result<Vec<T>, String> {
        let kept = self.0.len();
        if n > kept {
            return Err(format!("rollback of {n} commits; {kept} kept"));
        }
        Ok(self.0.drain(kept - n..).rev().collect())
    }
}
