//! Replay for benchmarks (`--allow-replay`): a chat request may carry the assistant text to
//! produce, one string per assistant turn. The engine runs its real forward passes, but the
//! next token is taken from that text (a one-token mask) instead of being sampled, so tool
//! calls sit at fixed positions while the tools' work and results stay real. Each turn ends
//! with the model's end-of-turn token; a turn of server-side calls then pauses as usual and
//! the next turn is replayed after the results.
//!
//! The request's grammar (the one it would be decoded under without replay) follows along:
//! where it forces the next tokens and they are the replayed ones, they are forced here too,
//! so a replayed call jumps forward over its fixed text exactly as a sampled one does.

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
    /// The request's grammar, fed every token; dropped if the replayed text leaves it.
    grammar: Option<Box<dyn TokenConstraint>>,
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
            grammar: None,
        })
    }

    /// Follows `grammar` (the request's own constraint) for its forced tokens.
    pub fn with_grammar(mut self, grammar: Option<Box<dyn TokenConstraint>>) -> Self {
        self.grammar = grammar;
        self
    }

    /// The rest of the current turn's text.
    fn rest(&self) -> &[Token] {
        self.turns
            .front()
            .map_or(&[], |t| &t[self.at.min(t.len())..])
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
        if let Some(g) = self.grammar.as_mut() {
            if let Err(e) = g.commit(token) {
                tracing::debug!("replay: the replayed text leaves the request's grammar: {e}");
                self.grammar = None;
            }
        }
        Ok(())
    }

    fn resumed(&mut self) {
        self.turns.pop_front();
        self.at = 0;
        if let Some(g) = self.grammar.as_mut() {
            g.resumed();
        }
    }

    fn complete(&self) -> bool {
        self.grammar.as_ref().is_some_and(|g| g.complete())
    }

    /// The grammar's forced tokens, as far as they are the replayed ones.
    fn forced(&mut self) -> Vec<Token> {
        let Some(g) = self.grammar.as_mut() else {
            return Vec::new();
        };
        let forced = g.forced();
        let rest = self.rest();
        let same = forced.iter().zip(rest).take_while(|(f, r)| f == r).count();
        forced[..same].to_vec()
    }
}
