//! Replay for benchmarks (`--allow-replay`): a chat request may carry the assistant text to
//! produce, one string per assistant turn. The engine runs its real forward passes, but the
//! next token is taken from that text (a one-token mask) instead of being sampled, so tool
//! calls sit at fixed positions while the tools' work and results stay real. Each turn ends
//! with the model's end-of-turn token; a turn of server-side calls then pauses as usual and
//! the next turn is replayed after the results.

use std::collections::VecDeque;
use std::sync::Arc;

use tandem_engine::{Token, TokenConstraint, TokenMask};

use crate::error::ApiError;
use crate::state::AppState;

pub struct Replay {
    turns: VecDeque<Vec<Token>>,
    /// Position in the current turn.
    at: usize,
    eot: Token,
    words: usize,
}

impl Replay {
    /// The request's `replay` field, checked and tokenized.
    pub fn new(st: &AppState, turns: &[String]) -> Result<Self, ApiError> {
        if !st.allow_replay {
            return Err(ApiError::invalid(
                "`replay` (forced assistant text, for benchmarks) needs a server started with --allow-replay",
                "replay",
            ));
        }
        if turns.is_empty() || turns.iter().any(String::is_empty) {
            return Err(ApiError::invalid(
                "`replay` must be a list of non-empty assistant turns",
                "replay",
            ));
        }
        let turns = turns.iter().map(|t| st.model.tokenize(t, false, true));
        Ok(Self {
            turns: turns.collect(),
            at: 0,
            eot: st.model.eos(),
            words: st.model.n_vocab().div_ceil(32),
        })
    }

    fn next_token(&self) -> Token {
        match self.turns.front() {
            Some(t) if self.at < t.len() => t[self.at],
            _ => self.eot,
        }
    }
}

impl TokenConstraint for Replay {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        let t = self.next_token() as usize;
        let mut mask = vec![0u32; self.words];
        mask[t / 32] |= 1 << (t % 32);
        Ok(Some(Arc::from(mask)))
    }

    fn commit(&mut self, token: Token) -> Result<(), String> {
        if token != self.next_token() {
            return Err(format!("replay: token {token} sampled against the mask"));
        }
        self.at += 1;
        Ok(())
    }

    fn resumed(&mut self) {
        self.turns.pop_front();
        self.at = 0;
    }
}
