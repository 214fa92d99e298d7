//! Predicted outputs: drafted tokens are verified in one step each, the output is exactly
//! that of decoding without a prediction, rejected rows' KV is cut (the fake runner checks
//! every position it is given follows the sequence's KV), and usage counts what was accepted
//! and rejected.

mod common;

use common::{prompt, Harness};
use tandem_engine::{Event, InterceptSpec, Token};

/// Pauses after `at` generated tokens for tool "t".
fn pause_at(at: usize) -> InterceptSpec {
    InterceptSpec {
        triggers: Vec::new(),
        after_tokens: vec![(at, "t".to_string())],
    }
}

/// A request pausing after `at` tokens, resumed at once with 3 tool tokens: its output, and
/// the harness.
fn paused_run(prediction: Vec<Token>, at: usize) -> (Vec<Token>, Harness) {
    let mut h = Harness::new(2, 512, 64);
    h.prediction = prediction;
    let id = h.submit_with(prompt(6, 1), N, pause_at(at));
    h.step_until_paused(id, 1);
    h.sched.resume(id, vec![700, 701, 702], h.now);
    h.run_to_idle();
    h.assert_all_free();
    (h.tokens(id), h)
}

const N: usize = 40;

/// The output of a request with `prediction`, the steps it took, and the harness.
fn run(prediction: Vec<Token>, budget: usize) -> (Vec<Token>, usize, Harness) {
    let mut h = Harness::new(2, 512, budget);
    h.prediction = prediction;
    let id = h.submit(prompt(6, 1), N);
    let mut steps = 0;
    while !h.sched.is_idle() {
        h.step();
        steps += 1;
    }
    h.assert_all_free();
    (h.tokens(id), steps, h)
}

fn plain() -> Vec<Token> {
    run(Vec::new(), 64).0
}

#[test]
fn a_right_prediction_gives_the_same_output_in_fewer_steps() {
    let (base, base_steps, _) = run(Vec::new(), 64);
    let (out, steps, h) = run(base.clone(), 64);
    assert_eq!(out, base);
    // One prefill step, then drafts of 4, 8 and 16 tokens: no more steps than 1 + 8 tokens
    // a step would take.
    assert!(
        steps <= 1 + N.div_ceil(9) + 1,
        "{steps} steps against {base_steps}"
    );
    let u = h.usage(1);
    assert_eq!(u.completion_tokens, N);
    assert_eq!(u.rejected_prediction_tokens, 0);
    assert!(u.accepted_prediction_tokens >= N - 6, "{u:?}");
}

#[test]
fn an_edited_prediction_gives_the_same_output_and_rejects_the_edit() {
    let base = plain();
    // The client's text differs from the output in two places: a token replaced and two
    // inserted; the draft stops at each and picks up again after it.
    let mut edited = base.clone();
    edited[10] += 1;
    edited.splice(25..25, [7, 7]);
    let (out, _, h) = run(edited, 64);
    assert_eq!(out, base);
    let u = h.usage(1);
    assert!(u.rejected_prediction_tokens > 0, "{u:?}");
    assert!(
        u.accepted_prediction_tokens >= N - 12,
        "re-aligned after each edit: {u:?}"
    );
}

#[test]
fn a_wrong_prediction_changes_nothing_but_the_counts() {
    let base = plain();
    let wrong: Vec<Token> = base.iter().map(|t| t + 1).collect();
    let (out, _, h) = run(wrong, 64);
    assert_eq!(out, base);
    assert_eq!(h.usage(1).accepted_prediction_tokens, 0);
}

#[test]
fn drafts_use_only_the_budget_left_and_stop_at_max_tokens() {
    let base = plain();
    // Budget 5 (the least for 2 slots): the prompt takes two steps, then a step drafts at most 4.
    let (out, _, h) = run(base.clone(), 5);
    assert_eq!(out, base);
    assert!(h.runner.batch_sizes.iter().all(|&b| b <= 5));
    // A prediction longer than max_tokens: the output still stops at N.
    let mut longer = base.clone();
    longer.extend(prompt(20, 9));
    let (out, _, _) = run(longer, 64);
    assert_eq!(out, base);
}

/// The prediction is the output without the pause, so the pause comes at a drafted token
/// with accepted drafted tokens after it: their KV goes, and the resumed request continues
/// from the paused token as without a prediction.
#[test]
fn a_pause_inside_an_accepted_draft_keeps_only_the_tokens_taken() {
    let base = plain();
    for at in [5, 7, 9] {
        let (plain, _) = paused_run(Vec::new(), at);
        let (out, h) = paused_run(base.clone(), at);
        assert_eq!(out, plain, "pause after {at}");
        assert!(h.usage(1).accepted_prediction_tokens > 0);
    }
}

#[test]
fn a_stream_of_predicted_events_sums_to_the_usage() {
    let mut edited = plain();
    edited[20] += 1;
    let (_, _, h) = run(edited, 64);
    let (mut a, mut r) = (0, 0);
    for e in &h.log[&1] {
        if let Event::Predicted { accepted, rejected } = e {
            a += accepted;
            r += rejected;
        }
    }
    let u = h.usage(1);
    assert_eq!(
        (a, r),
        (u.accepted_prediction_tokens, u.rejected_prediction_tokens)
    );
}
