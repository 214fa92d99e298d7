//! Where a request with server-side tools pauses: at the end of an assistant turn whose calls
//! all name tools the server runs itself. The turn's calls have been running since their
//! arguments began (partial execution); the pause is where their results must be appended
//! before decoding goes on. Pausing at the end of the turn rather than at the end of each
//! call is what lets a turn hold several calls that run in parallel. A turn that also calls
//! a client-side tool ends the generation as usual (the client owes results too).
//!
//! This wraps the request's grammar constraint (if any) and watches the decoded text with a
//! tool-call parser of the model's format, so it works whether or not a call was constrained.
//!
//! A call whose tool already failed on a partial argument (a validator aborting early) makes
//! decoding the rest of it pointless: the owner raises the shared `abort` flag, and the turn
//! is ended at once (only the end-of-turn token is allowed) and paused for the results.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tandem_engine::{Token, TokenConstraint, TokenMask};
use toktrie::TokTrie;

use crate::journal::Journal;
use crate::parser::{ParseEvent, ParserKind, ToolCallParser};

/// The calls of the turn being decoded.
#[derive(Clone, Default)]
struct Turn {
    /// Calls started, by parser index: their names.
    open: HashMap<usize, String>,
    server: Vec<String>,
    client: usize,
}

pub struct ServerTurns {
    inner: Option<Box<dyn TokenConstraint>>,
    trie: Arc<TokTrie>,
    kind: ParserKind,
    names: HashSet<String>,
    parser: ToolCallParser,
    /// Bytes of a UTF-8 character split across tokens.
    partial: Vec<u8>,
    turn: Turn,
    pause: Option<String>,
    /// Raised by the owner: end the turn now (a tool aborted early).
    abort: Arc<AtomicBool>,
    /// The tracker as it was before each of the latest commits (`rollback`). The text
    /// parser has no undo, so each entry is a copy of it.
    journal: Journal<Snapshot>,
}

struct Snapshot {
    parser: ToolCallParser,
    partial: Vec<u8>,
    turn: Turn,
    pause: Option<String>,
    /// Whether the commit reached the inner grammar (which then rolls back one commit).
    inner: bool,
    /// Whether the commit took the owner's abort (raised again on rollback).
    aborted: bool,
}

impl ServerTurns {
    /// `names`: the server-side tools of this request; `inner`: its grammar, if any.
    pub fn new(
        inner: Option<Box<dyn TokenConstraint>>,
        trie: Arc<TokTrie>,
        kind: ParserKind,
        names: HashSet<String>,
        abort: Arc<AtomicBool>,
    ) -> Self {
        Self {
            abort,
            inner,
            trie,
            kind,
            names,
            parser: kind.parser(),
            partial: Vec::new(),
            turn: Turn::default(),
            pause: None,
            journal: Journal::default(),
        }
    }

    fn snapshot(&self, inner: bool, aborted: bool) -> Snapshot {
        Snapshot {
            parser: self.parser.clone(),
            partial: self.partial.clone(),
            turn: self.turn.clone(),
            pause: self.pause.clone(),
            inner,
            aborted,
        }
    }

    fn on_events(&mut self, events: Vec<ParseEvent>) {
        for e in events {
            match e {
                ParseEvent::CallStart { index, name } => {
                    self.turn.open.insert(index, name);
                }
                ParseEvent::CallEnd { index, .. } => match self.turn.open.remove(&index) {
                    Some(n) if self.names.contains(&n) => self.turn.server.push(n),
                    Some(_) => self.turn.client += 1,
                    None => {}
                },
                ParseEvent::CallInvalid { index, .. } | ParseEvent::CallCut { index, .. } => {
                    self.turn.open.remove(&index);
                }
                _ => {}
            }
        }
    }

    /// Text of a token: control tokens (0xFF-prefixed in the vocabulary) as their name.
    fn push_token_text(&mut self, token: Token) {
        let bytes = self.trie.token(token as u32);
        let bytes = bytes.strip_prefix(&[0xFF]).unwrap_or(bytes);
        self.partial.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.partial.len(), // not UTF-8: passed on lossily
        };
        let text = String::from_utf8_lossy(&self.partial[..valid]).into_owned();
        self.partial.drain(..valid);
        let events = self.parser.push(&text);
        self.on_events(events);
    }

    /// The turn ended: pause when it made server-side calls and no client-side ones.
    fn end_turn(&mut self) {
        let events = self.parser.finish();
        self.on_events(events);
        let turn = self.reset_turn();
        if !turn.server.is_empty() && turn.client == 0 {
            self.pause = Some(turn.server.join(","));
        }
    }

    /// A new turn starts: fresh parser; the ended turn's calls are returned.
    fn reset_turn(&mut self) -> Turn {
        self.parser = self.kind.parser();
        self.partial.clear();
        std::mem::take(&mut self.turn)
    }
}

impl TokenConstraint for ServerTurns {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        if self.abort.load(Ordering::Acquire) {
            let mut only_end = self.trie.alloc_token_set();
            only_end.allow_token(self.trie.eos_token());
            return Ok(Some(Arc::from(only_end.as_slice())));
        }
        self.inner.as_mut().map_or(Ok(None), |c| c.allowed())
    }

    fn commit(&mut self, token: Token) -> Result<(), String> {
        let is_end = self.trie.eos_tokens().contains(&(token as u32));
        let aborted = is_end && self.abort.swap(false, Ordering::AcqRel);
        self.journal
            .push(self.snapshot(!aborted && self.inner.is_some(), aborted));
        if aborted {
            // The turn was cut short: the inner grammar did not allow this end.
            self.reset_turn();
            self.pause = Some("aborted".into());
            return Ok(());
        }
        if let Some(c) = self.inner.as_mut() {
            c.commit(token)?;
        }
        if is_end {
            self.end_turn();
        } else {
            self.push_token_text(token);
        }
        Ok(())
    }

    fn pause_requested(&mut self) -> Option<String> {
        self.pause.take()
    }

    /// The grammar's forced tokens, unless the turn is being cut short.
    fn forced(&mut self) -> Vec<Token> {
        if self.abort.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.inner.as_mut().map_or_else(Vec::new, |c| c.forced())
    }

    fn resumed(&mut self) {
        self.journal.clear(); // appended results are not commits: nothing before is undone
        if let Some(c) = self.inner.as_mut() {
            c.resumed();
        }
    }

    fn complete(&self) -> bool {
        self.inner.as_ref().is_some_and(|c| c.complete())
    }

    /// Without a grammar, or with one that rolls back.
    fn can_rollback(&self) -> bool {
        self.inner.as_ref().is_none_or(|c| c.can_rollback())
    }

    fn rollback(&mut self, n: usize) -> Result<(), String> {
        for s in self.journal.take_last(n)? {
            if let (true, Some(c)) = (s.inner, self.inner.as_mut()) {
                c.rollback(1)?;
            }
            if s.aborted {
                self.abort.store(true, Ordering::Release);
            }
            (self.parser, self.partial, self.turn, self.pause) =
                (s.parser, s.partial, s.turn, s.pause);
        }
        Ok(())
    }
}
