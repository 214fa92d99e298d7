//! Jump-forward: tokens a request's constraint forces are appended without sampling, run
//! through the model in one chunk, and are output, counted and limited like sampled ones.

mod common;

use std::sync::{Arc, Mutex};

use common::{prompt, Harness};
use tandem_engine::{
    Constraint, Event, FinishReason, InterceptSpec, SamplingParams, Token, TokenConstraint,
    TokenMask,
};

/// Forces `run` once, after the first sampled token; records every commit.
struct ForceOnce {
    run: Vec<Token>,
    done: bool,
    commits: Arc<Mutex<Vec<Token>>>,
}

impl TokenConstraint for ForceOnce {
    fn allowed(&mut self) -> Result<Option<TokenMask>, String> {
        Ok(None)
    }

    fn commit(&mut self, token: Token) -> Result<(), String> {
        self.commits.lock().unwrap().push(token);
        Ok(())
    }

    fn forced(&mut self) -> Vec<Token> {
        if std::mem::replace(&mut self.done, true) {
            Vec::new()
        } else {
            self.run.clone()
        }
    }
}

const RUN: [Token; 3] = [7, 8, 9];

fn submit(
    h: &mut Harness,
    max_tokens: usize,
    spec: InterceptSpec,
) -> (u64, Arc<Mutex<Vec<Token>>>) {
    submit_sampled(h, max_tokens, spec, SamplingParams::default())
}

fn submit_sampled(
    h: &mut Harness,
    max_tokens: usize,
    spec: InterceptSpec,
    sampling: SamplingParams,
) -> (u64, Arc<Mutex<Vec<Token>>>) {
    let commits = Arc::new(Mutex::new(Vec::new()));
    let c = ForceOnce {
        run: RUN.to_vec(),
        done: false,
        commits: Arc::clone(&commits),
    };
    let constraint = Some(Constraint(Box::new(c)));
    let id = h.submit_sampled(prompt(8, 3), max_tokens, spec, constraint, sampling);
    (id, commits)
}

fn nonzero_batches(h: &Harness) -> Vec<usize> {
    h.runner
        .batch_sizes
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .collect()
}

/// What the fake model samples after `context` and then `n - 1` more of its own tokens.
fn sampled(h: &Harness, context: &[Token], n: usize) -> Vec<Token> {
    let mut ctx = context.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = h.runner.next_token(&ctx);
        ctx.push(t);
        out.push(t);
    }
    out
}

/// The request finished at `max_tokens`, forced tokens counted; nothing is left in use.
fn ends_at_max_tokens(h: &mut Harness, id: u64, max_tokens: usize) {
    let Some(Event::Finished { reason, usage }) = h.finish(id) else {
        panic!("not finished")
    };
    assert_eq!(
        (reason, usage.completion_tokens),
        (FinishReason::Length, max_tokens)
    );
    h.assert_all_free();
}

#[test]
fn forced_tokens_follow_the_sampled_one_and_run_as_one_chunk() {
    let mut h = Harness::new(2, 256, 64);
    let (id, commits) = submit(&mut h, 8, InterceptSpec::default());
    assert_eq!(h.step(), 8, "the prompt");
    let s0 = h.tokens(id)[0];
    assert_eq!(
        h.tokens(id),
        [vec![s0], RUN.to_vec()].concat(),
        "appended at once"
    );
    assert_eq!(
        h.step(),
        4,
        "the sampled token and the forced ones in one chunk"
    );
    h.run_to_idle();
    // The fake model's tokens hash the whole context: the forced tokens are in the KV.
    let head = [prompt(8, 3), vec![s0], RUN.to_vec()].concat();
    let want = [vec![s0], RUN.to_vec(), sampled(&h, &head, 4)].concat();
    assert_eq!(h.tokens(id), want);
    assert_eq!(
        *commits.lock().unwrap(),
        want,
        "every token committed, in order"
    );
    assert_eq!(
        nonzero_batches(&h),
        [8, 4, 1, 1, 1],
        "8 tokens out of 5 forward passes"
    );
    ends_at_max_tokens(&mut h, id, 8);
}

#[test]
fn max_tokens_cuts_a_forced_run() {
    let mut h = Harness::new(2, 256, 64);
    let (id, commits) = submit(&mut h, 3, InterceptSpec::default());
    h.run_to_idle();
    let out = h.tokens(id);
    assert_eq!(out[1..], RUN[..2]);
    assert_eq!(*commits.lock().unwrap(), out);
    ends_at_max_tokens(&mut h, id, 3);
}

#[test]
fn a_trigger_inside_a_forced_run_pauses_there() {
    let mut h = Harness::new(2, 256, 64);
    let spec = InterceptSpec {
        triggers: vec![vec![8]],
        after_tokens: Vec::new(),
    };
    let (id, commits) = submit(&mut h, 10, spec);
    h.step_until_paused(id, 1);
    let s0 = h.tokens(id)[0];
    assert_eq!(
        h.tokens(id),
        vec![s0, 7, 8],
        "9 is not appended past the pause"
    );
    assert_eq!(*commits.lock().unwrap(), vec![s0, 7, 8]);
    h.sched.resume(id, vec![500, 501], h.now);
    h.run_to_idle();
    let head = [prompt(8, 3), vec![s0, 7, 8, 500, 501]].concat();
    let want = [vec![s0, 7, 8], sampled(&h, &head, 7)].concat();
    assert_eq!(
        h.tokens(id),
        want,
        "decoding goes on after the appended tokens"
    );
    h.assert_all_free();
}

#[test]
fn a_request_asking_for_logprobs_samples_every_token_and_gets_their_figures() {
    let mut h = Harness::new(2, 256, 64);
    let sampling = SamplingParams {
        logprobs: Some(3),
        ..Default::default()
    };
    let (id, _) = submit_sampled(&mut h, 5, InterceptSpec::default(), sampling);
    h.run_to_idle();
    assert_eq!(nonzero_batches(&h), [8, 1, 1, 1, 1], "nothing forced");
    let log = &h.log[&id];
    let tokens: Vec<usize> = (0..log.len())
        .filter(|&i| matches!(log[i], Event::Token(_)))
        .collect();
    assert_eq!(tokens.len(), 5);
    for i in tokens {
        let (Event::Logprobs(lp), Event::Token(t)) = (&log[i - 1], &log[i]) else {
            panic!("token {i} without its figures just before it: {log:?}")
        };
        assert_eq!((lp.top.len(), lp.top[0].0), (3, *t));
    }
    ends_at_max_tokens(&mut h, id, 5);
}
