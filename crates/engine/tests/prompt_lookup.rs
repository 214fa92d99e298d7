//! Prompt-lookup drafts (`SchedulerConfig::prompt_lookup`): a request without a prediction
//! drafts from its own context once its last tokens occur earlier in it. With a fake model
//! that copies its prompt, the output is the one decoded without lookup, in fewer steps; the
//! drafts are not counted as a prediction in the usage; a request with a prediction drafts
//! from that instead; a constraint that cannot roll back gets no drafts.

mod common;

use common::{prompt as fake_prompt, Harness};
use tandem_engine::{Constraint, Event, InterceptSpec, Token, TokenConstraint, TokenMask};

const N: usize = 60;

/// Twenty distinct tokens, then a separator and the first one again: a copying model
/// writes the twenty again, in a loop.
fn prompt() -> Vec<Token> {
    let mut p: Vec<Token> = (100..120).collect();
    p.extend([7, 100]);
    p
}

struct Run {
    out: Vec<Token>,
    steps: usize,
    h: Harness,
    id: u64,
}

fn run(lookup: usize, prompt: Vec<Token>, constraint: Option<Constraint>) -> Run {
    let mut h = Harness::with_lookup(2, 512, 64, lookup);
    h.runner.echo = true;
    let id = h.submit_full(prompt, N, InterceptSpec::default(), constraint);
    let mut steps = 0;
    while !h.sched.is_idle() {
        h.step();
        steps += 1;
    }
    h.assert_all_free();
    Run {
        out: h.tokens(id),
        steps,
        h,
        id,
    }
}

#[test]
fn output_that_copies_its_prompt_takes_fewer_steps_and_is_the_same() {
    let plain = run(0, prompt(), None);
    assert_eq!(&plain.out[..19], &prompt()[1..20], "the fake model copies");
    let r = run(3, prompt(), None);
    assert_eq!(r.out, plain.out);
    assert!(
        r.steps * 3 < plain.steps,
        "{} steps against {}",
        r.steps,
        plain.steps
    );
    let u = r.h.usage(r.id);
    assert_eq!(
        (u.accepted_prediction_tokens, u.rejected_prediction_tokens),
        (0, 0),
        "lookup drafts are not the client's prediction"
    );
    let predicted = r.h.log[&r.id]
        .iter()
        .filter(|e| matches!(e, Event::Predicted { .. }));
    assert_eq!(predicted.count(), 0);
}

#[test]
fn output_that_copies_nothing_drafts_nothing() {
    // The hash model: its output repeats nothing of its context, so nothing is drafted.
    let mut h = Harness::with_lookup(2, 512, 64, 3);
    let id = h.submit(fake_prompt(12, 1), N);
    h.run_to_idle();
    h.assert_all_free();
    assert!(h.runner.batch_sizes.iter().skip(1).all(|&b| b <= 1));
    assert_eq!(h.tokens(id).len(), N);
}

#[test]
fn a_prediction_is_drafted_instead_of_the_context() {
    let plain = run(0, prompt(), None);
    let mut h = Harness::with_lookup(2, 512, 64, 3);
    h.runner.echo = true;
    h.prediction = plain.out.clone();
    let id = h.submit(prompt(), N);
    h.run_to_idle();
    assert_eq!(h.tokens(id), plain.out);
    assert!(h.usage(id).accepted_prediction_tokens >= N - 6);
}

#[test]
fn a_constraint_that_cannot_roll_back_gets_no_lookup_drafts() {
    let plain = run(0, prompt(), Some(Constraint(Box::new(AnyToken))));
    let r = run(3, prompt(), Some(Constraint(Box::new(AnyToken))));
    assert_eq!(r.out, plain.out);
    assert_eq!(r.h.runner.batch_sizes, plain.h.runner.batch_sizes);
}

/// A constraint that allows every token and cannot roll back.
struct AnyToken;

impl TokenConstraint for AnyToken {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        Ok(None)
    }

    fn commit(&mut self, _: Token) -> Result<(), String> {
        Ok(())
    }
}
