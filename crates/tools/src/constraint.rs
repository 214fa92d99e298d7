//! Constrained decoding as an engine [`TokenConstraint`]: an llguidance `Matcher` over the
//! model's vocabulary computes the allowed tokens before each sample, and the tokens the
//! grammar forces next (jump-forward: llguidance's fast-forward tokens, which need the
//! model's own tokenizer; without one, nothing is forced and every token is sampled).
//!
//! Laziness (a grammar that starts at a call's opening tag under `tool_choice: auto`) is
//! tandem's own part: while free, the constraint only watches the decoded bytes for the
//! trigger and costs no mask; once the trigger appears, a matcher for the rest of the call
//! starts. The trigger may end inside a token: the bytes of that token after the trigger are
//! fed to the new matcher first (re-tokenized; the grammar works on bytes).

use std::collections::HashSet;
use std::sync::Arc;

use llguidance::{Matcher, ParserFactory};
use tandem_engine::{Token, TokenConstraint, TokenMask};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::grammar::{compile, GrammarPlan};
use crate::journal::Journal;
use crate::parser::ParserKind;
use crate::turn_end::ServerTurns;

/// A vocabulary-bound grammar compiler, built once per model.
pub struct Guidance {
    factory: Arc<ParserFactory>,
    trie: Arc<TokTrie>,
    /// Built with the model's tokenizer: grammars force tokens (jump-forward).
    jump_forward: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("constrained decoding: {0}")]
pub struct GuidanceError(pub String);

/// The model's tokenizer over raw bytes (no BOS, control-token text not parsed).
pub type Tokenize = Arc<dyn Fn(&[u8]) -> Vec<u32> + Send + Sync>;

/// A canonical tokenizer environment for llguidance: forced text is tokenized as the model's
/// tokenizer splits it (the split its training text had; a model sampling token by token
/// may pick another one, so outputs can differ, docs/tool-calling.md), falling back to
/// the trie's greedy split when the tokenizer does not give back exactly these bytes (a
/// tokenizer that inserts a leading space, say): forced tokens must spell the forced bytes.
struct ModelTokEnv {
    trie: TokTrie,
    tokenize: Tokenize,
}

impl TokenizerEnv for ModelTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let tokens = (self.tokenize)(s);
        if self.trie.decode_raw(&tokens) == s {
            tokens
        } else {
            self.trie.greedy_tokenize(s)
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

impl Guidance {
    /// `words`: each token's bytes, indexed by token id (control tokens such as end-of-turn
    /// prefixed with 0xFF so grammars never match them as text); `eos`: the end-of-generation
    /// tokens a finished grammar allows; `tokenize`: the model's tokenizer, which enables
    /// jump-forward over forced text (`None`: every token is sampled).
    pub fn new(
        words: &[Vec<u8>],
        eos: &[u32],
        tokenize: Option<Tokenize>,
    ) -> Result<Self, GuidanceError> {
        let first_eos = *eos
            .first()
            .ok_or_else(|| GuidanceError("no EOS token".into()))?;
        let info = TokRxInfo::new(words.len() as u32, first_eos);
        let trie = TokTrie::from(&info, words).with_eos_tokens(eos);
        let jump_forward = tokenize.is_some();
        let env: TokEnv = match tokenize {
            Some(tokenize) => Arc::new(ModelTokEnv {
                trie: trie.clone(),
                tokenize,
            }),
            None => Arc::new(ApproximateTokEnv::new(trie.clone())),
        };
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GuidanceError(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            trie: Arc::new(trie),
            jump_forward,
        })
    }

    /// A constraint following `plan` (the grammar is compiled now: errors surface here).
    pub fn constraint(&self, plan: &GrammarPlan) -> Result<Guided, GuidanceError> {
        let (mode, trigger, body, parallel) = match plan {
            GrammarPlan::Forced(lark) => {
                let m = self.matcher(lark)?;
                (Mode::Active(Box::new(m)), Vec::new(), None, false)
            }
            GrammarPlan::Lazy {
                trigger,
                body,
                parallel,
            } => {
                let body = Some(self.matcher(body)?);
                (Mode::Free, trigger.as_bytes().to_vec(), body, *parallel)
            }
        };
        Ok(Guided {
            trie: Arc::clone(&self.trie),
            jump_forward: self.jump_forward,
            mode,
            trigger,
            body,
            parallel,
            window: Vec::new(),
            journal: Journal::default(),
        })
    }

    /// A constraint that pauses at the end of each turn of calls to the server-side tools
    /// `names`, around the request's grammar (if any).
    pub fn server_turns(
        &self,
        inner: Option<Box<dyn TokenConstraint>>,
        kind: ParserKind,
        names: HashSet<String>,
        abort: Arc<std::sync::atomic::AtomicBool>,
    ) -> ServerTurns {
        ServerTurns::new(inner, Arc::clone(&self.trie), kind, names, abort)
    }

    fn matcher(&self, lark: &str) -> Result<Matcher, GuidanceError> {
        let parser = compile(&self.factory, lark).map_err(GuidanceError)?;
        Ok(Matcher::new(Ok(parser)))
    }
}

enum Mode {
    /// No mask: watching for the trigger.
    Free,
    Active(Box<Matcher>),
    /// A lazy call without parallel calls ended: only end-of-generation is left.
    EndOnly,
}

/// One request's constraint.
pub struct Guided {
    trie: Arc<TokTrie>,
    /// Whether to ask the matcher for forced tokens at all (without the model's tokenizer it
    /// never has any, and asking after every token is wasted work).
    jump_forward: bool,
    mode: Mode,
    trigger: Vec<u8>,
    /// Lazy plans: the call grammar, compiled once at request start; each call clones it
    /// fresh (no grammar compilation on the engine thread).
    body: Option<Matcher>,
    parallel: bool,
    /// Free text decoded since the last call (searched for the trigger).
    window: Vec<u8>,
    /// How to undo the latest commits (`rollback`).
    journal: Journal<Undo>,
}

/// How to undo one commit. llguidance rolls a matcher back by tokens; the lazy modes around
/// it (watching free text for the trigger, a call that ended) are tandem's, so each commit
/// records what it changed.
enum Undo {
    /// Free text: back to watching, with the trigger window as it was (undoes the start of a
    /// call too).
    Window(Vec<u8>),
    /// The matcher consumed the token.
    Consumed,
    /// The matcher consumed the token that ended the call (a lazy plan): its matcher.
    Closed(Box<Matcher>),
    /// Nothing changed (only the end left, or a stopped matcher given an end token).
    Nothing,
}

impl Guided {
    fn to_mask(v: &toktrie::SimpleVob) -> TokenMask {
        Arc::from(v.as_slice())
    }

    /// Starts the call body after the trigger; `extra` are bytes already decoded past it.
    fn activate(&mut self, extra: &[u8]) -> Result<(), String> {
        let Some(mut m) = self.body.clone() else {
            return Ok(()); // a forced plan has no trigger, so this is never reached
        };
        if !extra.is_empty() {
            let tokens = self.trie.greedy_tokenize(extra);
            m.consume_tokens(&tokens).map_err(|e| e.to_string())?;
        }
        self.mode = Mode::Active(Box::new(m));
        Ok(())
    }

    /// Takes one token; returns how to undo it.
    fn commit_token(&mut self, token: Token) -> Result<Undo, String> {
        let lazy = !self.trigger.is_empty();
        match &mut self.mode {
            Mode::Free if !lazy => Ok(Undo::Nothing),
            Mode::Free => {
                let before = self.window.clone();
                self.watch(token)?;
                Ok(Undo::Window(before))
            }
            Mode::EndOnly => Ok(Undo::Nothing),
            Mode::Active(m) => {
                if m.is_stopped() && self.trie.eos_tokens().contains(&(token as u32)) {
                    return Ok(Undo::Nothing);
                }
                m.consume_token(token as u32).map_err(|e| e.to_string())?;
                if !(lazy && m.is_accepting().unwrap_or(false)) {
                    return Ok(Undo::Consumed);
                }
                let after = if self.parallel {
                    Mode::Free
                } else {
                    Mode::EndOnly
                };
                match std::mem::replace(&mut self.mode, after) {
                    Mode::Active(m) => Ok(Undo::Closed(m)),
                    _ => unreachable!("the mode was Active"),
                }
            }
        }
    }

    fn undo(&mut self, undo: Undo) -> Result<(), String> {
        let rollback = |m: &mut Matcher| m.rollback(1).map_err(|e| e.to_string());
        match undo {
            Undo::Window(w) => {
                self.mode = Mode::Free;
                self.window = w;
            }
            Undo::Consumed => match &mut self.mode {
                Mode::Active(m) => rollback(m)?,
                _ => return Err("rollback: no call grammar to roll back".into()),
            },
            Undo::Closed(mut m) => {
                rollback(&mut m)?;
                self.mode = Mode::Active(m);
            }
            Undo::Nothing => {}
        }
        Ok(())
    }

    fn watch(&mut self, token: Token) -> Result<(), String> {
        if self.trigger.is_empty() {
            return Ok(()); // free for good (a forced plan after a turn of server-side calls)
        }
        self.window.extend_from_slice(self.trie.token(token as u32));
        let t = &self.trigger;
        let Some(at) = self.window.windows(t.len()).position(|w| w == t.as_slice()) else {
            // Keep only what could still be the start of the trigger.
            let keep = self.window.len().min(t.len());
            self.window.drain(..self.window.len() - keep);
            return Ok(());
        };
        let extra = self.window[at + t.len()..].to_vec();
        self.window.clear();
        self.activate(&extra)
    }
}

impl TokenConstraint for Guided {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        match &mut self.mode {
            Mode::Free => Ok(None),
            Mode::EndOnly => Ok(Some(Self::to_mask(&self.trie.eos_token_set()))),
            Mode::Active(m) => m
                .compute_mask_or_eos()
                .map(|v| Some(Self::to_mask(&v)))
                .map_err(|e| e.to_string()),
        }
    }

    fn commit(&mut self, token: Token) -> Result<(), String> {
        let undo = self.commit_token(token)?;
        self.journal.push(undo);
        Ok(())
    }

    /// After server-side tool results: the next turn is free text (lazy plans watch for
    /// the next call's trigger again; a forced plan's calls were made).
    fn resumed(&mut self) {
        self.mode = Mode::Free;
        self.window.clear();
        self.journal.clear(); // appended text is not a commit: nothing before it is undone
    }

    /// A forced grammar took its end, or a lazy one without parallel calls made its call.
    fn complete(&self) -> bool {
        match &self.mode {
            Mode::Free => false,
            Mode::EndOnly => true,
            Mode::Active(m) => m.is_stopped(),
        }
    }

    /// Every commit is journaled (`Undo`), lazy modes included.
    fn can_rollback(&self) -> bool {
        true
    }

    fn rollback(&mut self, n: usize) -> Result<(), String> {
        for undo in self.journal.take_last(n)? {
            self.undo(undo)?;
        }
        Ok(())
    }

    /// The grammar's fast-forward tokens inside a call (none while free text is decoded).
    fn forced(&mut self) -> Vec<Token> {
        let Mode::Active(m) = &mut self.mode else {
            return Vec::new();
        };
        if !self.jump_forward || m.is_stopped() {
            return Vec::new();
        }
        let eos = self.trie.eos_tokens();
        let ff = m.compute_ff_tokens();
        let end = ff.iter().position(|t| eos.contains(t)).unwrap_or(ff.len());
        ff[..end].iter().map(|&t| t as Token).collect()
    }
}
