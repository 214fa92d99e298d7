//! Scheduler and KV accounting against the fake runner: batching under the token budget,
//! admission, cancel and disconnect, prefix reuse and eviction, and the invariant that the
//! engine's cell accounting always matches what the runner actually holds.

mod common;

use common::{prompt, sharing, Harness};
use proptest::prelude::*;
use tandem_engine::{
    CostModel, Event, FinishReason, InterceptConfig, InterceptSpec, NewRequest, PrefixReuse,
    Runner, SamplingParams, Scheduler, SchedulerConfig, SeqId, Token,
};
use tokio::sync::mpsc::unbounded_channel;

#[test]
fn mixes_decode_and_prefill_chunks_under_budget() {
    let mut h = Harness::new(4, 256, 16);
    let a = h.submit(prompt(5, 1), 40);
    h.step();
    let b = h.submit(prompt(50, 2), 5);
    h.step();
    // a decodes one token while b's prompt is prefilled in chunks of the remaining budget.
    let sizes_before = h.runner.batch_sizes.len();
    h.step();
    assert_eq!(h.runner.batch_sizes[sizes_before], 16);
    h.run_to_idle();
    assert_eq!(h.tokens(a).len(), 40);
    assert_eq!(h.tokens(b).len(), 5);
    assert!(h.runner.batch_sizes.iter().all(|&n| n <= 16));
    h.assert_all_free();
}

#[test]
fn outputs_do_not_depend_on_batching() {
    let mut alone = Harness::new(4, 256, 64);
    let solo: Vec<_> = (0..3)
        .map(|i| alone.submit(prompt(20 + i, i as i32), 12))
        .collect();
    // One at a time.
    let mut seq_out = Vec::new();
    for id in &solo {
        alone.run_to_idle();
        seq_out.push(alone.tokens(*id));
    }
    let mut together = Harness::new(4, 256, 7);
    let ids: Vec<_> = (0..3)
        .map(|i| together.submit(prompt(20 + i, i as i32), 12))
        .collect();
    together.run_to_idle();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(together.tokens(*id), seq_out[i]);
    }
}

#[test]
fn admission_waits_for_a_free_slot() {
    let mut h = Harness::new(2, 64, 64);
    let ids: Vec<_> = (0..3).map(|i| h.submit(prompt(8, i), 10)).collect();
    h.step();
    assert_eq!(h.sched.stats().running, 2);
    assert_eq!(h.sched.stats().waiting, 1);
    h.run_to_idle();
    for id in ids {
        assert_eq!(h.tokens(id).len(), 10);
    }
    h.assert_all_free();
}

#[test]
fn cancel_during_prefill_and_decode_frees_within_a_step() {
    let mut h = Harness::new(2, 256, 8);
    let b = h.submit(prompt(4, 2), 50);
    let a = h.submit(prompt(100, 1), 50);
    for _ in 0..3 {
        h.step();
    }
    assert!(h.tokens(a).is_empty(), "a is still prefilling");
    assert!(!h.tokens(b).is_empty(), "b is decoding");
    h.sched.cancel(a, h.now);
    h.sched.cancel(b, h.now);
    assert_eq!(h.sched.stats().running, 0);
    h.step();
    h.assert_all_free();
}

#[test]
fn client_disconnect_cancels_within_one_step() {
    let mut h = Harness::new(2, 256, 8);
    let a = h.submit(prompt(4, 1), 100);
    h.step();
    h.step();
    h.rxs.remove(&a);
    h.step();
    assert_eq!(h.sched.stats().running, 0);
    assert!(h.sched.is_idle());
    h.assert_all_free();
}

#[test]
fn eog_stops_unless_ignored() {
    let mut h = Harness::new(1, 4096, 512);
    h.runner.vocab = 3; // tokens 0..3: eog (2) comes up quickly
    let (tx, rx) = unbounded_channel();
    let req = NewRequest {
        prompt: prompt(3, 1),
        max_tokens: 1000,
        ignore_eos: false,
        sampling: SamplingParams::default(),
        events: tx,
        intercept: InterceptSpec::default(),
        constraint: None,
        prediction: Vec::new(),
    };
    h.prompt_len.insert(99, 3);
    h.sched.add(99, req, 0.0);
    h.rxs.insert(99, rx);
    h.run_to_idle();
    match h.finish(99) {
        Some(Event::Finished {
            reason: FinishReason::Stop,
            usage,
        }) => {
            assert_eq!(usage.completion_tokens, h.tokens(99).len() + 1)
        }
        other => panic!("expected stop, got {other:?}"),
    }
}

#[test]
fn max_tokens_is_clipped_to_the_slot() {
    let mut h = Harness::new(1, 32, 64);
    let a = h.submit(prompt(20, 1), 1000);
    h.run_to_idle();
    assert_eq!(h.tokens(a).len(), 12);
    assert!(matches!(
        h.finish(a),
        Some(Event::Finished {
            reason: FinishReason::Length,
            ..
        })
    ));
}

#[test]
fn prompt_too_long_fails_at_once() {
    let mut h = Harness::new(1, 32, 64);
    let a = h.submit(prompt(32, 1), 10);
    h.collect();
    assert!(matches!(h.finish(a), Some(Event::Failed(_))));
    assert!(h.sched.is_idle());
}

#[test]
fn runner_failure_fails_requests_and_clears_kv() {
    let mut h = Harness::new(2, 64, 64);
    let a = h.submit(prompt(10, 1), 10);
    h.step();
    h.runner.fail_next = true;
    let plan = h.sched.schedule(1.0);
    assert!(h.runner.execute(&plan).is_err());
    h.sched.fail_plan(&plan, "boom");
    h.collect();
    assert!(matches!(h.finish(a), Some(Event::Failed(_))));
    h.step();
    h.assert_all_free();
}

#[test]
fn prefix_reuse_continues_a_conversation_with_identical_tokens() {
    let mut h = Harness::new(4, 512, 32);
    let p1 = prompt(40, 3);
    let a = h.submit(p1.clone(), 10);
    h.run_to_idle();
    // The next turn: the whole first turn (prompt + reply) plus new user text.
    let mut p2 = p1.clone();
    p2.extend(h.tokens(a));
    p2.extend(prompt(15, 9));
    let b = h.submit(p2.clone(), 10);
    h.run_to_idle();
    assert_eq!(
        h.cached_tokens(b),
        49,
        "all of turn one's KV is reused (its last token never ran)"
    );
    let mut cold = Harness::new(4, 512, 32);
    let c = cold.submit(p2, 10);
    cold.run_to_idle();
    assert_eq!(h.tokens(b), cold.tokens(c));
    h.assert_all_free();
}

#[test]
fn exact_reuse_keeps_only_prefill_kv() {
    let mut h = Harness::with_reuse(4, 512, 32, PrefixReuse::Exact);
    let p1 = prompt(40, 3);
    let a = h.submit(p1.clone(), 10);
    h.run_to_idle();
    assert_eq!(
        h.sched.kv().used_cells(),
        40,
        "decoded tokens' KV is dropped at retirement"
    );
    let mut p2 = p1.clone();
    p2.extend(h.tokens(a));
    p2.extend(prompt(15, 9));
    let b = h.submit(p2, 10);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 40);
    h.assert_all_free();
}

#[test]
fn a_new_request_copies_the_prefix_it_shares_with_a_retained_conversation() {
    // The shared 12 tokens are under half of either prompt, so B does not take over A's
    // slot; a slot is free, so B gets a copy of A's first 12 cells in it.
    let (pa, pb) = sharing(12);
    let mut h = Harness::new(4, 512, 32);
    let a = h.submit(pa.clone(), 6);
    h.run_to_idle();
    let b = h.submit(pb.clone(), 6);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 12);
    let c = h.sched.stats().counters;
    assert_eq!((c.prefix_copies, c.prefix_copied_tokens), (1, 12));
    let mut cold = Harness::new(4, 512, 32);
    let cb = cold.submit(pb, 6);
    cold.run_to_idle();
    assert_eq!(
        h.tokens(b),
        cold.tokens(cb),
        "the copied prefix holds the right KV"
    );
    h.follow_up_finds_its_whole_turn(&pa, a);
}

#[test]
fn a_new_request_sharing_most_of_its_prompt_copies_it_rather_than_taking_the_conversation_over() {
    // The shared 40 tokens are over half of B's prompt (an agent's long system prompt): B
    // still leaves A's slot alone and copies the prefix, so A's follow-up finds its whole turn.
    let (pa, pb) = sharing(40);
    let mut h = Harness::new(4, 512, 32);
    let a = h.submit(pa.clone(), 6);
    h.run_to_idle();
    let b = h.submit(pb, 6);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 40);
    assert_eq!(h.sched.stats().counters.prefix_copies, 1);
    h.follow_up_finds_its_whole_turn(&pa, a);
}

/// B's prompt shares `shared` tokens with A's finished one, with a step budget of `budget`;
/// copies cost `copy_s` a token each way, attention `batch` a pair in rows of 64 tokens and
/// more and `row` below. Returns B's cached tokens and the prefix copies made.
fn shared_with_slow_copies(
    shared: usize,
    budget: usize,
    copy_s: f64,
    batch: f64,
    row: f64,
) -> (usize, u64) {
    let (pa, pb) = sharing(shared);
    let mut h = Harness::new(4, 512, budget);
    h.sched.set_costs(CostModel {
        swap_out_per_token_s: copy_s,
        swap_in_per_token_s: copy_s,
        attn_per_pair_s: batch,
        attn_row_per_pair_s: row,
        ..CostModel::default()
    });
    h.submit(pa, 6);
    h.run_to_idle();
    let b = h.submit(pb, 6);
    h.run_to_idle();
    h.assert_all_free();
    (h.cached_tokens(b), h.sched.stats().counters.prefix_copies)
}

#[test]
fn a_copy_that_costs_more_than_prefilling_its_tokens_is_not_made() {
    // Copying A's sequence out and in costs more than prefilling 12 tokens (48 ms).
    assert_eq!(shared_with_slow_copies(12, 32, 1e-3, 0.0, 0.0), (0, 0));
}

#[test]
fn a_copy_pays_when_the_prefill_it_saves_includes_attention() {
    // Attention priced at 2 ms a pair: prefilling the 12 shared tokens (78 pairs) costs
    // 48 + 156 ms, more than copying A's sequence out and in (under 100 ms).
    assert_eq!(shared_with_slow_copies(12, 32, 1e-3, 2e-3, 2e-3), (12, 1));
}

#[test]
fn a_copy_prices_the_prefill_it_saves_in_chunks_of_the_step_budget() {
    // 70 shared tokens, budget 64: the prefill would run a 64-token chunk (free attention in
    // the tiled kernel here) and a 6-token one at 2 ms a pair (over 400 pairs), so copying
    // A's 106 tokens out and in at 3 ms a token each way (636 ms) pays; priced as one
    // 70-token row, the prefill would cost only its 280 ms of forward time. Without the
    // short chunk's price B takes A's slot over instead (its 70 tokens, no copy).
    assert_eq!(shared_with_slow_copies(70, 64, 3e-3, 0.0, 2e-3), (70, 1));
    assert_eq!(shared_with_slow_copies(70, 64, 3e-3, 0.0, 0.0), (70, 0));
}

/// Four prompts sharing a 40-token head, each with its own 10-token tail.
fn burst_prompts() -> Vec<Vec<Token>> {
    let head = prompt(40, 5);
    (1..=4)
        .map(|i| [head.clone(), prompt(10, i)].concat())
        .collect()
}

#[test]
fn a_burst_sharing_a_prefix_prefills_it_once() {
    // Budget 64: A's 50 tokens leave 14 this step, so B, C and D each finish their prompt no
    // later by waiting one step and copying A's 40 computed head than by prefilling it.
    let mut h = Harness::new(4, 512, 64);
    let ids: Vec<_> = burst_prompts()
        .into_iter()
        .map(|p| h.submit(p, 6))
        .collect();
    assert_eq!(h.step(), 50, "only A runs in the first step");
    assert_eq!(
        h.step(),
        1 + 3 * 10,
        "A decodes, the others prefill only their tails"
    );
    h.run_to_idle();
    let c = h.sched.stats().counters;
    assert_eq!((c.inflight_prefix_copies, c.prefix_copied_tokens), (3, 120));
    assert!(c.shared_prefill_waits >= 1);
    let mut cold = Harness::with_reuse(4, 512, 64, PrefixReuse::Off);
    let cold_ids: Vec<_> = burst_prompts()
        .into_iter()
        .map(|p| cold.submit(p, 6))
        .collect();
    cold.run_to_idle();
    for (i, (&id, &cid)) in ids.iter().zip(&cold_ids).enumerate() {
        assert_eq!(
            h.tokens(id),
            cold.tokens(cid),
            "request {i}: the copied head is right"
        );
        assert_eq!(h.cached_tokens(id), if i == 0 { 0 } else { 40 });
    }
    assert_eq!(cold.sched.stats().counters.shared_prefill_waits, 0);
    h.assert_all_free();
}

#[test]
fn a_request_that_fits_this_step_does_not_wait_for_a_short_shared_prefix() {
    // Budget 256: B's whole prompt fits beside A's, so waiting a step to save 40 tokens would
    // only delay it; both prefill in the first step.
    let mut h = Harness::new(4, 512, 256);
    for p in burst_prompts().into_iter().take(2) {
        h.submit(p, 6);
    }
    assert_eq!(h.step(), 100);
    h.run_to_idle();
    let c = h.sched.stats().counters;
    assert_eq!((c.shared_prefill_waits, c.prefix_copies), (0, 0));
    h.assert_all_free();
}

#[test]
fn a_request_copies_the_computed_part_of_a_running_prompt() {
    // A's 200-token prompt takes several 64-token steps; B arrives after two of them and
    // shares A's first 100 tokens: it waits until A has computed them, then copies them.
    let head = prompt(100, 5);
    let pa = [head.clone(), prompt(100, 1)].concat();
    let pb = [head, prompt(20, 2)].concat();
    let mut h = Harness::new(4, 512, 64);
    let a = h.submit(pa, 4);
    h.step();
    h.step();
    let b = h.submit(pb.clone(), 4);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 100);
    assert_eq!(
        h.log[&b][0],
        Event::Admitted { cached_tokens: 100 },
        "the owner hears the reused count at admission"
    );
    assert_eq!(h.sched.stats().counters.inflight_prefix_copies, 1);
    let mut cold = Harness::new(4, 512, 64);
    let cb = cold.submit(pb, 4);
    cold.run_to_idle();
    assert_eq!(h.tokens(b), cold.tokens(cb));
    assert_eq!(h.tokens(a).len(), 4);
    h.assert_all_free();
}

#[test]
fn a_waiting_request_goes_on_when_its_source_is_cancelled() {
    let mut h = Harness::new(4, 512, 64);
    let ps = burst_prompts();
    let a = h.submit(ps[0].clone(), 6);
    let b = h.submit(ps[1].clone(), 6);
    h.step();
    assert_eq!(h.sched.stats().waiting, 1, "B waits for A's head");
    h.sched.cancel(a, h.now);
    h.run_to_idle();
    assert_eq!(h.tokens(b).len(), 6);
    h.assert_all_free();
}

#[test]
fn reuse_off_retains_nothing() {
    let mut h = Harness::with_reuse(2, 128, 32, PrefixReuse::Off);
    h.submit(prompt(20, 1), 3);
    h.run_to_idle();
    assert_eq!(h.sched.kv().used_cells(), 0);
    assert_eq!(h.runner.used_cells(), 0);
}

#[test]
fn a_reused_prompt_still_prefills_at_least_two_tokens() {
    let mut h = Harness::with_reuse(2, 128, 32, PrefixReuse::All);
    let p = prompt(20, 1);
    h.submit(p.clone(), 3);
    h.run_to_idle();
    let b = h.submit(p, 3);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 18);
}

/// `kv_retained` (the `tandem_kv_cells_retained` gauge) counts the cells retained sequences
/// hold: all of an idle engine's, none of a running request's.
#[test]
fn retained_cells_are_counted_apart_from_running_ones() {
    let mut h = Harness::new(2, 256, 64);
    h.submit(prompt(30, 1), 3);
    h.run_to_idle();
    let s = h.sched.stats();
    assert_eq!((s.retained, s.kv_retained), (1, s.kv_used), "{s:?}");
    assert!(s.kv_used >= 30, "{s:?}");
    h.submit(prompt(20, 2), 40);
    h.step();
    h.step();
    let t = h.sched.stats();
    assert_eq!(t.kv_retained, s.kv_retained, "{t:?}");
    assert!(t.kv_used >= t.kv_retained + 20, "{t:?}");
}

#[test]
fn retained_sequences_are_evicted_lru_when_slots_run_out() {
    let mut h = Harness::new(2, 256, 64);
    let p: Vec<_> = (0..3).map(|i| prompt(30, 100 + i)).collect();
    for (i, pi) in p.iter().enumerate() {
        h.now = i as f64;
        h.submit(pi.clone(), 2);
        h.run_to_idle();
    }
    // Slots: 2. Conversation 0 was least recently used and was evicted for conversation 2.
    let mut again0 = p[0].clone();
    again0.push(5);
    let id = h.submit(again0, 1);
    h.run_to_idle();
    assert!(h.cached_tokens(id) < 30, "conversation 0 was evicted");
    let mut again2 = p[2].clone();
    again2.push(5);
    let id = h.submit(again2, 1);
    h.run_to_idle();
    assert_eq!(
        h.cached_tokens(id),
        29,
        "conversation 2 was still retained (2 tokens are always prefilled)"
    );
    h.assert_all_free();
}

#[derive(Debug, Clone)]
enum Op {
    Submit { len: usize, max: usize, salt: i32 },
    Cancel(u64),
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..90, 1usize..20, 0i32..4).prop_map(|(len, max, salt)| Op::Submit {
            len,
            max,
            salt
        }),
        (1u64..30).prop_map(Op::Cancel),
        Just(Op::Step),
        Just(Op::Step),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Any interleaving of submits, cancels and steps keeps the accounting equal to the runner's
    /// real KV at every step, finishes every request, and leaves every cell free at the end.
    #[test]
    fn kv_accounting_invariant(
        ops in proptest::collection::vec(op(), 1..60),
        reuse in prop_oneof![Just(PrefixReuse::Exact), Just(PrefixReuse::All), Just(PrefixReuse::Off)],
    ) {
        let mut h = Harness::with_reuse(3, 64, 24, reuse);
        for op in ops {
            match op {
                Op::Submit { len, max, salt } => { h.submit(prompt(len, salt), max); }
                Op::Cancel(id) => h.sched.cancel(id, h.now),
                Op::Step => { h.step(); }
            }
        }
        h.run_to_idle();
        h.assert_all_free();
    }
}

#[test]
fn rows_stay_in_slot_order_when_eviction_reorders_slots() {
    let mut h = Harness::with_reuse(3, 128, 64, PrefixReuse::All);
    // Finish three conversations so that slot 2 is least recently used, then 0, then 1.
    for (i, t) in [(0, 2.0), (1, 3.0), (2, 1.0)] {
        h.now = t;
        h.submit(prompt(10, 50 + i), 2);
        h.run_to_idle();
    }
    // New, unrelated requests take the slots in LRU order 2, 0, 1 (not arrival order); the
    // harness asserts every plan's rows are sorted by sequence id.
    let ids: Vec<_> = (0..3).map(|i| h.submit(prompt(12, 300 + i), 4)).collect();
    h.step();
    let used: Vec<usize> = (0..3).map(|s| h.sched.kv().used(s)).collect();
    assert!(
        used.iter().all(|&n| n == 12),
        "all three admitted in one step: {used:?}"
    );
    h.run_to_idle();
    for id in ids {
        assert_eq!(h.tokens(id).len(), 4);
    }
}

#[test]
fn admission_waits_when_no_chunk_fits_this_step() {
    let mut h = Harness::new(3, 128, 6);
    let a = h.submit(prompt(4, 1), 3);
    let b = h.submit(prompt(3, 2), 3);
    h.step();
    // a's 4 tokens leave a budget of 2; b's 3-token prompt cannot be split into chunks of
    // at least 2, so b must not take a slot yet.
    assert_eq!((h.sched.stats().running, h.sched.stats().waiting), (1, 1));
    h.run_to_idle();
    assert_eq!((h.tokens(a).len(), h.tokens(b).len()), (3, 3));
    h.assert_all_free();
}

#[test]
#[should_panic(expected = "step budget too small")]
fn budget_must_fit_decodes_and_a_chunk() {
    let cfg = SchedulerConfig {
        max_batch_tokens: 5,
        n_slots: 3,
        cells_per_seq: 64,
        prefix_reuse: PrefixReuse::All,
        intercept: InterceptConfig::default(),
        prompt_lookup: 0,
        compact_slots: true,
    };
    Scheduler::new(cfg);
}

/// Allows only even tokens below 64; records what it is told; fails at the `fail_at`-th mask;
/// asks for a pause after every `pause_every` commits; counts the resumes it is told of.
struct EvenTokens {
    committed: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
    resumes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    masks: usize,
    fail_at: Option<usize>,
    pause_every: Option<usize>,
}

impl tandem_engine::TokenConstraint for EvenTokens {
    fn allowed(&mut self) -> Result<Option<tandem_engine::TokenMask>, String> {
        self.masks += 1;
        if self.fail_at == Some(self.masks) {
            return Err("dead end".into());
        }
        let mut m = vec![0u32; 2];
        for t in (0..64).step_by(2) {
            m[t / 32] |= 1 << (t % 32);
        }
        Ok(Some(m.into()))
    }

    fn commit(&mut self, token: i32) -> Result<(), String> {
        self.committed.lock().unwrap().push(token);
        Ok(())
    }

    fn pause_requested(&mut self) -> Option<String> {
        let n = self.committed.lock().unwrap().len();
        self.pause_every
            .filter(|&k| n.is_multiple_of(k))
            .map(|_| "calc".to_string())
    }

    fn resumed(&mut self) {
        self.resumes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

type Committed = std::sync::Arc<std::sync::Mutex<Vec<i32>>>;
type Resumes = std::sync::Arc<std::sync::atomic::AtomicUsize>;

fn constrained(h: &mut Harness, id: u64, fail_at: Option<usize>) -> Committed {
    constrained_with(h, id, fail_at, None).0
}

fn constrained_with(
    h: &mut Harness,
    id: u64,
    fail_at: Option<usize>,
    pause_every: Option<usize>,
) -> (Committed, Resumes) {
    let committed = std::sync::Arc::default();
    let resumes = std::sync::Arc::default();
    let c = EvenTokens {
        committed: std::sync::Arc::clone(&committed),
        resumes: std::sync::Arc::clone(&resumes),
        masks: 0,
        fail_at,
        pause_every,
    };
    add_constrained(h, id, 20, true, Box::new(c));
    (committed, resumes)
}

/// Adds request `id` (a 6-token prompt) under constraint `c`.
fn add_constrained(
    h: &mut Harness,
    id: u64,
    max_tokens: usize,
    ignore_eos: bool,
    c: Box<dyn tandem_engine::TokenConstraint>,
) {
    let (tx, rx) = unbounded_channel();
    let req = NewRequest {
        prompt: prompt(6, id as i32),
        max_tokens,
        ignore_eos,
        sampling: SamplingParams::default(),
        events: tx,
        intercept: InterceptSpec::default(),
        constraint: Some(tandem_engine::Constraint(c)),
        prediction: Vec::new(),
    };
    h.prompt_len.insert(id, 6);
    h.sched.add(id, req, 0.0);
    h.rxs.insert(id, rx);
}

#[test]
fn constrained_requests_sample_only_allowed_tokens() {
    let mut h = Harness::new(3, 256, 64);
    let free = h.submit(prompt(6, 1), 20);
    let seen = constrained(&mut h, 100, None);
    let dead = constrained(&mut h, 101, Some(4));
    h.run_to_idle();
    let tokens = h.tokens(100);
    assert_eq!(tokens.len(), 20);
    assert!(tokens.iter().all(|t| t % 2 == 0 && *t < 64), "{tokens:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        tokens,
        "every sampled token is committed"
    );
    assert!(
        h.tokens(free).iter().any(|t| *t >= 64),
        "others stay unconstrained: {:?}",
        h.tokens(free)
    );
    assert!(matches!(h.finish(101), Some(Event::Failed(m)) if m.contains("dead end")));
    assert_eq!(h.tokens(101).len(), 3);
    drop(dead);
    h.assert_all_free();
}

#[test]
fn a_constraint_can_pause_its_request_in_the_step_it_completes_something() {
    let mut h = Harness::new(2, 256, 64);
    let (seen, resumes) = constrained_with(&mut h, 100, None, Some(5));
    for round in 1..=3 {
        h.step_until_paused(100, round);
        assert_eq!(h.interceptions(100), round);
        // Paused right after the 5th, 10th, 15th token: nothing more was generated.
        assert_eq!(seen.lock().unwrap().len(), 5 * round);
        h.sched.resume(100, vec![7, 7], h.now);
        // The constraint hears of the resume (the appended tokens were not sampled).
        assert_eq!(resumes.load(std::sync::atomic::Ordering::Relaxed), round);
        assert_eq!(seen.lock().unwrap().len(), 5 * round);
    }
    h.run_to_idle();
    assert_eq!(h.tokens(100).len(), 20);
    h.assert_all_free();
}

/// Ends a turn (forces the fake runner's end-of-generation token 2) after every 4 other
/// tokens (token 4) and asks for a pause at each of the first `pausing_turns` turn ends.
struct TurnEnds {
    since_end: usize,
    turns: usize,
    pausing_turns: usize,
    pause: bool,
}

impl tandem_engine::TokenConstraint for TurnEnds {
    fn allowed(&mut self) -> Result<Option<tandem_engine::TokenMask>, String> {
        let t = if self.since_end == 4 { 2 } else { 4 };
        Ok(Some(vec![1u32 << t].into()))
    }

    fn commit(&mut self, token: i32) -> Result<(), String> {
        if token == 2 {
            self.since_end = 0;
            self.turns += 1;
            self.pause = self.turns <= self.pausing_turns;
        } else {
            self.since_end += 1;
        }
        Ok(())
    }

    fn pause_requested(&mut self) -> Option<String> {
        std::mem::take(&mut self.pause).then(|| "calc".to_string())
    }
}

#[test]
fn an_end_of_turn_token_with_a_pause_request_pauses_instead_of_finishing() {
    let mut h = Harness::new(2, 256, 64);
    let c = TurnEnds {
        since_end: 0,
        turns: 0,
        pausing_turns: 2,
        pause: false,
    };
    add_constrained(&mut h, 100, 40, false, Box::new(c));
    for round in 1..=2 {
        h.step_until_paused(100, round);
        assert_eq!(h.interceptions(100), round);
        assert!(h.finish(100).is_none(), "paused, not finished");
        h.sched.resume(100, vec![9, 9, 9], h.now);
    }
    h.run_to_idle();
    assert!(matches!(
        h.finish(100),
        Some(Event::Finished {
            reason: tandem_engine::FinishReason::Stop,
            ..
        })
    ));
    // Three turns of four tokens; the end-of-turn tokens are not output.
    assert_eq!(h.tokens(100), vec![4; 12]);
    h.assert_all_free();
}

/// Allows tokens 0 and 1 for `len` tokens, then only end-of-generation (2); complete once
/// that end is committed, when `completes`.
struct EndsAfter {
    len: usize,
    seen: usize,
    ended: bool,
    completes: bool,
}

impl tandem_engine::TokenConstraint for EndsAfter {
    fn allowed(&mut self) -> Result<Option<tandem_engine::TokenMask>, String> {
        let bits = if self.seen < self.len { 0b011 } else { 0b100 };
        Ok(Some(vec![bits].into()))
    }

    fn commit(&mut self, token: i32) -> Result<(), String> {
        self.seen += 1;
        self.ended = token == 2;
        Ok(())
    }

    fn complete(&self) -> bool {
        self.completes && self.ended
    }
}

#[test]
fn a_complete_constraint_ends_its_request_even_with_ignore_eos() {
    let mut h = Harness::new(2, 256, 64);
    h.runner.vocab = 3;
    for (id, completes) in [(1, true), (2, false)] {
        let c = EndsAfter {
            len: 4,
            seen: 0,
            ended: false,
            completes,
        };
        add_constrained(&mut h, id, 12, true, Box::new(c));
    }
    h.run_to_idle();
    let done = |e| match e {
        Some(Event::Finished { reason, usage }) => (reason, usage.completion_tokens),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        done(h.finish(1)),
        (FinishReason::Stop, 5),
        "4 tokens and the end"
    );
    assert_eq!(h.tokens(1).len(), 4);
    // Without `complete`, ignore_eos goes on through end tokens to max_tokens.
    assert_eq!(done(h.finish(2)), (FinishReason::Length, 12));
    h.assert_all_free();
}

/// Four requests take slots 0 to 3; the middle two end early (their conversations are kept in
/// slots 1 and 2), which leaves the other two in two runs of slots: llama.cpp would run two
/// forward passes per step. Compaction moves one of them beside the other (a copy of its KV),
/// so the following steps' rows are in consecutive slots, and every output is what the same
/// requests give with each request left in its slot.
#[test]
fn running_requests_are_moved_into_consecutive_slots() {
    let run = |mut h: Harness| {
        let ids: Vec<u64> = [(30, 40), (31, 3), (32, 3), (33, 40)]
            .iter()
            .enumerate()
            .map(|(i, &(len, max))| h.submit(prompt(len, i as i32), max))
            .collect();
        h.run_to_idle();
        let outputs: Vec<Vec<Token>> = ids.iter().map(|&id| h.tokens(id)).collect();
        // The last steps in which both long requests ran.
        let both = h.slots.iter().filter(|s| s.len() == 2);
        let tail: Vec<Vec<SeqId>> = both.rev().take(10).cloned().collect();
        let moves = h.sched.stats().counters.slot_moves;
        // Forward passes of those steps, as the runner reports them.
        let both = h
            .slots
            .iter()
            .zip(&h.runner.passes)
            .filter(|s| s.0.len() == 2);
        let passes: Vec<usize> = both.rev().take(10).map(|s| *s.1).collect();
        (outputs, (tail, passes), moves)
    };
    let (compacted, (tail, passes), moves) = run(Harness::new(6, 256, 64));
    let (fixed, (fixed_tail, fixed_passes), no_moves) =
        run(Harness::without_compaction(6, 256, 64));
    assert_eq!(passes, [1; 10], "slots side by side run in one pass");
    assert_eq!(fixed_passes, [2; 10], "slots 0 and 3 take a pass each");
    assert_eq!(compacted, fixed, "moving KV changes no output");
    assert_eq!(no_moves, 0);
    assert!(fixed_tail.iter().all(|s| s == &[0, 3]), "{fixed_tail:?}");
    assert_eq!(tail.len(), 10);
    assert!(moves >= 1);
    for slots in &tail {
        assert_eq!(tandem_engine::compact::runs(slots), 1, "{tail:?}");
    }
}
