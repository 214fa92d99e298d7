//! Predicted outputs under a constraint that can roll back (a `response_format` grammar): each
//! drafted row is sampled under the mask the constraint gives after the drafted tokens before
//! it, the draft is cut at a token the constraint refuses, tokens the constraint forces are
//! drafted under a one-token mask, and the constraint ends up having committed exactly the
//! output. The output is that of the same constrained request without a prediction.

mod common;

use std::sync::{Arc, Mutex};

use common::{prompt, Harness};
use tandem_engine::{Constraint, InterceptSpec, Token, TokenConstraint, TokenMask};

const N: usize = 40;
const VOCAB: usize = 1000;
/// Forced after a token ending in 3 (odd), in the alternation: an even token, then an odd one.
const FORCED: [Token; 2] = [100, 201];

/// Tokens alternate in parity, starting even; after a token ending in 3 the constraint forces
/// `FORCED`. Its committed tokens are shared, for the test to read.
struct Alternate {
    history: Arc<Mutex<Vec<Token>>>,
    rollback: bool,
}

impl Alternate {
    fn last(&self) -> Option<Token> {
        self.history.lock().unwrap().last().copied()
    }
}

impl TokenConstraint for Alternate {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        let parity = self.last().map_or(0, |t| 1 - t % 2);
        let mut words = vec![0u32; VOCAB.div_ceil(32)];
        for t in (parity as usize..VOCAB).step_by(2) {
            words[t / 32] |= 1 << (t % 32);
        }
        Ok(Some(words.into()))
    }

    fn commit(&mut self, token: Token) -> Result<(), String> {
        self.history.lock().unwrap().push(token);
        Ok(())
    }

    /// A query of the history: after a token ending in 3 both forced tokens, after the first
    /// of them the second.
    fn forced(&mut self) -> Vec<Token> {
        match self.last() {
            Some(t) if t % 10 == 3 => FORCED.to_vec(),
            Some(t) if t == FORCED[0] => {
                let h = self.history.lock().unwrap();
                let before = h.len().checked_sub(2).map(|i| h[i]);
                match before {
                    Some(b) if b % 10 == 3 => vec![FORCED[1]],
                    _ => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn can_rollback(&self) -> bool {
        self.rollback
    }

    fn rollback(&mut self, n: usize) -> Result<(), String> {
        let mut h = self.history.lock().unwrap();
        let keep = h.len().checked_sub(n).ok_or("rollback past the start")?;
        h.truncate(keep);
        Ok(())
    }
}

struct Run {
    out: Vec<Token>,
    steps: usize,
    committed: Vec<Token>,
    h: Harness,
}

fn run(prediction: Vec<Token>, rollback: bool) -> Run {
    let mut h = Harness::new(2, 512, 64);
    h.prediction = prediction;
    let history = Arc::new(Mutex::new(Vec::new()));
    let c = Alternate {
        history: Arc::clone(&history),
        rollback,
    };
    let id = h.submit_full(
        prompt(6, 1),
        N,
        InterceptSpec::default(),
        Some(Constraint(Box::new(c))),
    );
    let mut steps = 0;
    while !h.sched.is_idle() {
        h.step();
        steps += 1;
    }
    h.assert_all_free();
    let committed = history.lock().unwrap().clone();
    Run {
        out: h.tokens(id),
        steps,
        committed,
        h,
    }
}

fn plain() -> Run {
    run(Vec::new(), true)
}

fn alternates(out: &[Token]) -> bool {
    out.iter()
        .enumerate()
        .all(|(i, t)| t % 2 == (i % 2) as Token)
}

#[test]
fn a_right_prediction_under_a_grammar_gives_the_same_output_in_fewer_steps() {
    let base = plain();
    assert!(alternates(&base.out), "{:?}", base.out);
    let forced_at = base
        .out
        .windows(3)
        .filter(|w| w[0] % 10 == 3 && w[1..] == FORCED)
        .count();
    assert!(
        forced_at > 0,
        "the output has forced tokens: {:?}",
        base.out
    );
    let r = run(base.out.clone(), true);
    assert_eq!(r.out, base.out);
    assert_eq!(
        r.committed, r.out,
        "the constraint committed the output, once each"
    );
    assert!(
        r.steps * 2 < base.steps,
        "{} steps against {}",
        r.steps,
        base.steps
    );
    let u = r.h.usage(1);
    assert_eq!(u.rejected_prediction_tokens, 0, "{u:?}");
    assert!(u.accepted_prediction_tokens >= N - 8, "{u:?}");
}

#[test]
fn a_draft_stops_before_a_token_the_grammar_refuses() {
    let base = plain();
    // Every token from the 10th on has the wrong parity: the grammar refuses the first, so
    // the draft never reaches the runner past it, and nothing is rejected there.
    let mut edited = base.out.clone();
    edited[10..].iter_mut().for_each(|t| *t += 1);
    let r = run(edited, true);
    assert_eq!(r.out, base.out);
    assert_eq!(r.committed, r.out);
    let u = r.h.usage(1);
    assert_eq!(u.rejected_prediction_tokens, 0, "{u:?}");
    assert!((5..=10).contains(&u.accepted_prediction_tokens), "{u:?}");
}

#[test]
fn an_edited_prediction_under_a_grammar_gives_the_same_output() {
    let base = plain();
    // A grammatical edit (same parity), which the model does not make.
    let mut edited = base.out.clone();
    edited[12] += 2;
    let r = run(edited, true);
    assert_eq!(r.out, base.out);
    assert_eq!(r.committed, r.out);
    assert!(r.h.usage(1).rejected_prediction_tokens > 0);
}

#[test]
fn a_constraint_that_cannot_roll_back_gets_no_drafts() {
    let base = plain();
    let r = run(base.out.clone(), false);
    assert_eq!(r.out, base.out);
    let u = r.h.usage(1);
    assert_eq!(
        u.accepted_prediction_tokens + u.rejected_prediction_tokens,
        0
    );
    // The steps of the run without a prediction: nothing was drafted.
    assert_eq!(r.h.runner.batch_sizes, base.h.runner.batch_sizes);
}
