//! Staged tool output against the fake runner: tokens given to a paused request before its
//! tool returns are prefilled while it waits (only with its KV on the device, never sampled),
//! and the resume keeps the ones the final output begins with and drops the rest with their
//! KV. The fake runner samples a hash of the whole KV content, so a staged token left in the
//! KV by mistake, or one missing, changes the tokens that follow.

mod common;

use common::{prompt, Harness};
use tandem_engine::{
    Event, InterceptConfig, InterceptPolicy, InterceptSpec, PrefixReuse, Runner, Token,
};

fn config(policy: InterceptPolicy) -> InterceptConfig {
    InterceptConfig {
        policy,
        ..InterceptConfig::default()
    }
}

/// One pause after the 4th generated token.
fn spec() -> InterceptSpec {
    InterceptSpec {
        triggers: Vec::new(),
        after_tokens: vec![(4, "t".to_string())],
    }
}

/// The tool's output.
fn output() -> Vec<Token> {
    (0..20).map(|i| 700 + i).collect()
}

fn harness(policy: InterceptPolicy, reuse: PrefixReuse) -> (Harness, u64) {
    let mut h = Harness::build(2, 512, 64, reuse, config(policy));
    let id = h.submit_with(prompt(30, 1), 12, spec());
    h.step_until_paused(id, 1);
    (h, id)
}

/// The request's tokens when resumed with the whole output at once.
fn reference() -> Vec<Token> {
    let (mut h, id) = harness(InterceptPolicy::Preserve, PrefixReuse::All);
    h.sched.resume(id, output(), h.now);
    h.run_to_idle();
    h.tokens(id)
}

#[test]
fn staged_tokens_are_prefilled_while_paused_and_the_output_is_unchanged() {
    let want = reference();
    for policy in [
        InterceptPolicy::Preserve,
        InterceptPolicy::MinWaste,
        InterceptPolicy::Swap,
        InterceptPolicy::Discard,
    ] {
        for reuse in [PrefixReuse::All, PrefixReuse::Exact] {
            let (mut h, id) = harness(policy, reuse);
            let before = h.sched.kv().used_cells();
            h.sched.stage(id, output()[..12].to_vec());
            h.run_to_idle();
            let device = matches!(
                policy,
                InterceptPolicy::Preserve | InterceptPolicy::MinWaste
            );
            let cells = h.sched.kv().used_cells();
            if device {
                // The pause's last token and 11 staged ones: the 12th waits for the resume.
                assert_eq!(cells, before + 12, "{policy:?} {reuse:?}");
            } else {
                assert_eq!(cells, 0, "{policy:?}: KV off the device, nothing prefilled");
            }
            assert_eq!(h.tokens(id).len(), 4, "nothing sampled while paused");
            h.sched.resume_staged(id, 12, output(), h.now);
            h.run_to_idle();
            assert_eq!(h.tokens(id), want, "{policy:?} {reuse:?}");
            assert_eq!(h.usage(id).appended_tokens, 20);
            h.assert_all_free();
        }
    }
}

#[test]
fn a_wrong_guess_is_dropped_with_its_kv() {
    let want = reference();
    for keep in [0, 3, 7] {
        for reuse in [PrefixReuse::All, PrefixReuse::Exact] {
            let (mut h, id) = harness(InterceptPolicy::Preserve, reuse);
            // The first `keep` staged tokens are right, the rest are not.
            let mut guess = output()[..keep].to_vec();
            guess.extend([9, 9, 9, 9, 9, 9]);
            h.sched.stage(id, guess);
            h.run_to_idle();
            h.sched.resume_staged(id, keep, output(), h.now);
            h.run_to_idle();
            assert_eq!(h.tokens(id), want, "keep {keep} {reuse:?}");
            assert_eq!(h.usage(id).appended_tokens, 20);
            h.assert_all_free();
        }
    }
}

#[test]
fn an_output_all_staged_still_samples_its_next_token() {
    let want = reference();
    let (mut h, id) = harness(InterceptPolicy::Preserve, PrefixReuse::All);
    h.sched.stage(id, output()[..10].to_vec());
    h.sched.stage(id, output()[10..].to_vec());
    h.run_to_idle();
    h.sched.resume_staged(id, 20, output(), h.now);
    h.run_to_idle();
    assert_eq!(h.tokens(id), want);
    h.assert_all_free();
}

#[test]
fn a_stage_that_does_not_fit_refuses_the_rest_of_the_pause() {
    let want = reference();
    let mut h = Harness::build(
        2,
        64,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::Preserve),
    );
    let id = h.submit_with(prompt(30, 1), 12, spec());
    h.step_until_paused(id, 1);
    h.sched.stage(id, output()[..5].to_vec());
    h.sched.stage(id, vec![1; 40]); // 34 + 5 + 40 tokens: over the slot's 64 cells
    h.sched.stage(id, output()[5..10].to_vec()); // after a refusal: ignored too
    h.run_to_idle();
    // 33 cells at the pause; the pause's last token and 4 of the 5 staged ones.
    assert_eq!(
        h.sched.kv().used_cells(),
        33 + 5,
        "only the first stage ran"
    );
    // The owner staged 10 tokens of the output; the engine has 5 and appends from there.
    h.sched.resume_staged(id, 10, output(), h.now);
    h.run_to_idle();
    assert_eq!(h.tokens(id), want);
    h.assert_all_free();
}

#[test]
fn cancelling_a_paused_request_with_staged_tokens_frees_everything() {
    for policy in [InterceptPolicy::Preserve, InterceptPolicy::Swap] {
        let (mut h, id) = harness(policy, PrefixReuse::All);
        h.sched.stage(id, output()[..8].to_vec());
        h.step();
        h.sched.cancel(id, h.now);
        h.run_to_idle();
        h.assert_all_free();
    }
}

#[test]
fn a_step_failing_on_a_staged_chunk_fails_the_paused_request_and_frees_it() {
    let (mut h, id) = harness(InterceptPolicy::Preserve, PrefixReuse::All);
    h.sched.stage(id, output()[..8].to_vec());
    h.runner.fail_next = true;
    let plan = h.sched.schedule(h.now);
    assert!(plan
        .items
        .iter()
        .all(|i| i.request == id && i.sample.is_none()));
    assert!(h.runner.execute(&plan).is_err());
    h.sched.fail_plan(&plan, "boom");
    h.collect();
    assert!(
        matches!(h.finish(id), Some(Event::Failed(_))),
        "{:?}",
        h.finish(id)
    );
    // A late resume finds nothing to resume.
    h.sched.resume_staged(id, 8, output(), h.now);
    h.run_to_idle();
    h.assert_all_free();
}
