//! Prompt scoring (`SamplingParams::prompt_logprobs`): every prompt token after the first is
//! reported once, in order, with the token it scores, across prefill chunks; a request that
//! scores its prompt reuses no retained KV (reused positions have no logits).

mod common;

use common::{prompt, Harness};
use tandem_engine::{Event, InterceptSpec, SamplingParams, Token, TokenLogprobs};

fn scoring(k: u32) -> SamplingParams {
    SamplingParams {
        prompt_logprobs: Some(k),
        ..Default::default()
    }
}

/// The prompt entries a request was sent, in order, and where the first generated token
/// came relative to them.
fn prompt_entries(h: &Harness, id: u64) -> (Vec<(Token, TokenLogprobs)>, bool) {
    let log = &h.log[&id];
    let first_token = log.iter().position(|e| matches!(e, Event::Token(_)));
    let last_score = log
        .iter()
        .rposition(|e| matches!(e, Event::PromptLogprobs(_)));
    let entries = log
        .iter()
        .filter_map(|e| match e {
            Event::PromptLogprobs(v) => Some(v.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    (entries, last_score < first_token)
}

#[test]
fn every_prompt_token_after_the_first_is_scored_once_across_chunks() {
    let mut h = Harness::new(2, 256, 16);
    let p = prompt(40, 3);
    let id = h.submit_sampled(p.clone(), 3, InterceptSpec::default(), None, scoring(2));
    h.run_to_idle();
    let (entries, before_tokens) = prompt_entries(&h, id);
    let scored: Vec<Token> = entries.iter().map(|e| e.0).collect();
    assert_eq!(scored, p[1..], "each token from the second, once, in order");
    assert!(entries
        .iter()
        .all(|(t, lp)| lp.top.len() == 2 && lp.top[0].0 == *t));
    assert!(
        before_tokens,
        "the prompt's figures come before the first generated token"
    );
    assert_eq!(h.tokens(id).len(), 3);
    h.assert_all_free();
}

#[test]
fn a_scoring_request_prefills_its_whole_prompt_even_when_kv_is_retained() {
    let mut h = Harness::new(2, 256, 64);
    let p = prompt(30, 5);
    let a = h.submit(p.clone(), 2);
    h.run_to_idle();
    let b = h.submit_sampled(p.clone(), 2, InterceptSpec::default(), None, scoring(0));
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 0, "no retained KV reused");
    assert_eq!(prompt_entries(&h, b).0.len(), p.len() - 1);
    // A plain request afterwards still finds the retained conversation.
    let c = h.submit(p.clone(), 2);
    h.run_to_idle();
    assert!(h.cached_tokens(c) > 0);
    assert!(prompt_entries(&h, a).0.is_empty() && prompt_entries(&h, c).0.is_empty());
    h.assert_all_free();
}

#[test]
fn a_one_token_prompt_has_nothing_to_score() {
    let mut h = Harness::new(1, 64, 16);
    let id = h.submit_sampled(vec![7], 2, InterceptSpec::default(), None, scoring(1));
    h.run_to_idle();
    assert!(prompt_entries(&h, id).0.is_empty());
    assert_eq!(h.tokens(id).len(), 2);
    h.assert_all_free();
}
