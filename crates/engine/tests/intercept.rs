//! Interceptions against the fake runner: every placement (preserve, swap, discard,
//! min-waste) and transition (pause during others' chunked prefill, resume while swapped or
//! being swapped in, cancel in every state, a swap pool short of room (partial swap), memory
//! pressure, 30 pauses), with the output compared to an uninterrupted reference and the KV
//! and swap-pool accounting checked every step and empty at the end. The fake runner samples
//! a hash of the whole KV content, so a lost, stale or misplaced cell changes the tokens.

mod common;

use std::collections::HashMap;

use common::{prompt, sharing, Harness};
use proptest::prelude::*;
use tandem_engine::plan::KvOp;
use tandem_engine::{
    CostModel, Event, InterceptConfig, InterceptPolicy, InterceptSpec, PrefixReuse, ResumeOrder,
    Runner, Token,
};

const POLICIES: [InterceptPolicy; 4] = [
    InterceptPolicy::Preserve,
    InterceptPolicy::Swap,
    InterceptPolicy::Discard,
    InterceptPolicy::MinWaste,
];

fn config(policy: InterceptPolicy) -> InterceptConfig {
    InterceptConfig {
        policy,
        ..InterceptConfig::default()
    }
}

/// Pauses after each of `at` generated-token counts, for tool "t".
fn spec(at: &[usize]) -> InterceptSpec {
    InterceptSpec {
        triggers: Vec::new(),
        after_tokens: at.iter().map(|&n| (n, "t".to_string())).collect(),
    }
}

/// The tool output appended at the k-th resume.
fn result(k: usize) -> Vec<Token> {
    (0..3 + k as i32 % 4).map(|i| 700 + i + k as i32).collect()
}

/// Runs requests to completion, resuming each interception `hold` seconds after it
/// happened. Returns each request's generated tokens.
fn drive(h: &mut Harness, ids: &[u64], hold: f64) -> HashMap<u64, Vec<Token>> {
    let mut seen: HashMap<u64, (usize, f64)> = HashMap::new();
    for _ in 0..100_000 {
        let outstanding = ids
            .iter()
            .any(|id| h.interceptions(*id) > seen.get(id).map_or(0, |e| e.0));
        if h.sched.is_idle() && !outstanding {
            break;
        }
        h.step();
        for &id in ids {
            let n = h.interceptions(id);
            let e = seen.entry(id).or_insert((0, 0.0));
            if n > e.0 && e.1 == 0.0 {
                e.1 = h.now;
            }
            if n > e.0 && h.now - e.1 >= hold {
                h.sched.resume(id, result(e.0), h.now);
                *e = (e.0 + 1, 0.0);
            }
        }
    }
    ids.iter().map(|&id| (id, h.tokens(id))).collect()
}

/// Tokens of one request run alone with preserve and immediate resumes.
fn reference(len: usize, salt: i32, max: usize, at: &[usize]) -> Vec<Token> {
    let mut h = Harness::build(
        2,
        512,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::Preserve),
    );
    let id = h.submit_with(prompt(len, salt), max, spec(at));
    drive(&mut h, &[id], 0.0).remove(&id).unwrap()
}

#[test]
fn every_policy_resumes_with_the_uninterrupted_tokens() {
    let want = reference(40, 1, 20, &[5, 12]);
    for policy in POLICIES {
        for reuse in [PrefixReuse::Exact, PrefixReuse::All] {
            let mut h = Harness::build(2, 512, 64, reuse, config(policy));
            let id = h.submit_with(prompt(40, 1), 20, spec(&[5, 12]));
            let got = drive(&mut h, &[id], 1.0).remove(&id).unwrap();
            assert_eq!(got, want, "{policy:?} {reuse:?}");
            assert_eq!(h.interceptions(id), 2);
            h.assert_all_free();
        }
    }
}

#[test]
fn placements_do_what_they_say() {
    for (policy, device, host, discarded) in [
        (InterceptPolicy::Preserve, 1, 0, 0),
        (InterceptPolicy::Swap, 0, 1, 0),
        (InterceptPolicy::Discard, 0, 0, 1),
    ] {
        let mut h = Harness::build(2, 512, 64, PrefixReuse::All, config(policy));
        let id = h.submit_with(prompt(30, 2), 10, spec(&[4]));
        h.step_until_paused(id, 1);
        // A fixed policy moves the KV as soon as the request pauses: the engine may not block
        // waiting for a message first (a short tool would find its KV still in place).
        assert_eq!(h.sched.is_idle(), device == 1, "{policy:?}");
        h.step();
        assert!(h.sched.is_idle(), "{policy:?}: idle once the KV has moved");
        let s = h.sched.stats();
        assert_eq!(
            (s.paused_device, s.paused_host, s.paused_discarded),
            (device, host, discarded),
            "{policy:?}"
        );
        assert_eq!(
            s.kv_used,
            device * 33,
            "{policy:?}: 30 prompt + 3 decoded cells"
        );
        assert_eq!(s.swap_used_bytes, host * 33 * 23_055, "{policy:?}");
        h.sched.resume(id, result(0), h.now);
        h.run_to_idle();
        let c = h.sched.stats().counters;
        assert_eq!(c.recomputed_tokens, discarded as u64 * 33, "{policy:?}");
        assert_eq!(c.swap_in_bytes, host as u64 * 33 * 23_055, "{policy:?}");
        h.assert_all_free();
    }
}

/// Steps until `tokens` tokens have been recomputed; the sizes of request `id`'s items.
fn recompute_items(h: &mut Harness, id: u64, tokens: u64) -> Vec<usize> {
    let mut sizes = Vec::new();
    while h.sched.stats().counters.recomputed_tokens < tokens {
        let plan = h.sched.schedule(h.now);
        let mine = plan.items.iter().filter(|i| i.request == id);
        sizes.extend(mine.map(|i| i.tokens.len()));
        let r = h.runner.execute(&plan).unwrap();
        h.sched.update(&plan, &r, h.now);
    }
    sizes
}

#[test]
fn exact_recompute_repeats_how_each_position_was_written() {
    let mut h = Harness::build(
        2,
        512,
        64,
        PrefixReuse::Exact,
        config(InterceptPolicy::Discard),
    );
    let id = h.submit_with(prompt(20, 3), 12, spec(&[4, 8]));
    h.step_until_paused(id, 1);
    h.sched.resume(id, result(0), h.now);
    h.step_until_paused(id, 2);
    h.step(); // discards
    h.sched.resume(id, result(1), h.now);
    // Written so far: 20 prompt (multi), 3 decodes (single), [4th token + 3 result] (multi),
    // 3 decodes (single): recompute must run 20 | 1 1 1 | 4 | 1 1 1 then the new tokens.
    let sizes = recompute_items(&mut h, id, 30);
    assert_eq!(sizes, vec![20, 1, 1, 1, 4, 1, 1, 1]);
}

#[test]
fn pausing_while_others_prefill_in_chunks() {
    let want_a = reference(30, 4, 12, &[3, 6]);
    let want_b = reference(200, 5, 6, &[]);
    for policy in POLICIES {
        let mut h = Harness::build(3, 512, 24, PrefixReuse::All, config(policy));
        let a = h.submit_with(prompt(30, 4), 12, spec(&[3, 6]));
        h.step_until_paused(a, 1);
        let b = h.submit(prompt(200, 5), 6);
        let got = drive(&mut h, &[a, b], 0.2);
        assert_eq!((&got[&a], &got[&b]), (&want_a, &want_b), "{policy:?}");
        h.assert_all_free();
    }
}

#[test]
fn resume_in_the_step_that_swaps_the_request_back_in() {
    let mut h = Harness::build(
        1,
        512,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::MinWaste),
    );
    // History: tool "t" takes 60 s.
    for k in 0..4 {
        let id = h.submit_with(prompt(10, 10 + k), 3, spec(&[1]));
        h.step_until_paused(id, 1);
        h.now += 60.0;
        h.sched.resume(id, result(0), h.now);
        h.run_to_idle();
    }
    let want = reference(30, 6, 8, &[2]);
    let a = h.submit_with(prompt(30, 6), 8, spec(&[2]));
    h.step_until_paused(a, 1);
    let paused_at = h.now;
    // Someone needs the only slot: a has ~60 s to go, so it is swapped out.
    let b = h.submit(prompt(10, 7), 2);
    h.step();
    assert_eq!(h.sched.stats().paused_host, 1);
    h.run_to_idle();
    assert_eq!(h.tokens(b).len(), 2);
    // Near the end of the usual 60 s the slot is free: a is swapped back in ahead of time,
    // and the resume lands in that very step.
    h.now = paused_at + 59.995;
    let plan = h.sched.schedule(h.now);
    assert!(
        plan.kv_ops
            .iter()
            .any(|op| matches!(op, KvOp::SwapIn { .. })),
        "prefetch: {plan:?}"
    );
    h.sched.resume(a, result(0), h.now);
    let r = h.runner.execute(&plan).unwrap();
    h.sched.update(&plan, &r, h.now);
    h.run_to_idle();
    assert_eq!(h.tokens(a), want);
    assert_eq!(h.sched.stats().counters.recomputed_tokens, 0);
    h.assert_all_free();
}

#[test]
fn cancel_in_every_state_frees_everything() {
    for policy in [
        InterceptPolicy::Preserve,
        InterceptPolicy::Swap,
        InterceptPolicy::Discard,
    ] {
        // While paused (wherever the KV is).
        let mut h = Harness::build(2, 512, 64, PrefixReuse::All, config(policy));
        let id = h.submit_with(prompt(30, 8), 10, spec(&[4]));
        h.step_until_paused(id, 1);
        h.step();
        h.sched.cancel(id, h.now);
        h.run_to_idle();
        h.assert_all_free();
        // While resumed but not yet admitted (queued behind a full slot set).
        let mut h = Harness::build(1, 512, 64, PrefixReuse::All, config(policy));
        let a = h.submit_with(prompt(30, 8), 10, spec(&[4]));
        h.step_until_paused(a, 1);
        h.step();
        let b = h.submit(prompt(10, 9), 50);
        h.step();
        h.sched.resume(a, result(0), h.now);
        h.step();
        h.sched.cancel(a, h.now);
        h.run_to_idle();
        assert_eq!(h.tokens(b).len(), 50, "{policy:?}");
        h.assert_all_free();
    }
}

#[test]
fn a_disconnected_paused_request_is_reaped() {
    let mut h = Harness::build(2, 512, 64, PrefixReuse::All, config(InterceptPolicy::Swap));
    let id = h.submit_with(prompt(30, 8), 10, spec(&[4]));
    h.step_until_paused(id, 1);
    h.step();
    assert_eq!(h.sched.stats().paused_host, 1);
    h.rxs.remove(&id);
    h.step();
    assert_eq!(h.sched.stats().paused_host, 0);
    h.assert_all_free();
}

/// The swap policy with a host pool of `tokens` tokens.
fn small_pool(tokens: usize) -> InterceptConfig {
    InterceptConfig {
        policy: InterceptPolicy::Swap,
        swap_bytes: tokens * 23_055,
        ..InterceptConfig::default()
    }
}

#[test]
fn a_swap_pool_short_of_room_swaps_the_head_and_discards_the_rest() {
    // Room for 40 tokens; three requests pause holding 33 cells each (30 prompt + 3 decoded):
    // one goes whole, the next gets the 7 cells left and loses its tail, the last is
    // discarded.
    let wants: Vec<_> = (0..3).map(|i| reference(30, 11 + i, 10, &[4])).collect();
    let mut h = Harness::build(3, 512, 64, PrefixReuse::All, small_pool(40));
    let ids: Vec<_> = (0..3)
        .map(|i| h.submit_with(prompt(30, 11 + i), 10, spec(&[4])))
        .collect();
    for &id in &ids {
        h.step_until_paused(id, 1);
    }
    h.step();
    let s = h.sched.stats();
    assert_eq!((s.paused_host, s.paused_discarded), (2, 1), "{s:?}");
    assert_eq!(s.counters.partial_swaps, 1);
    assert_eq!(s.swap_used_bytes, 40 * 23_055);
    let mut held: Vec<_> = h.runner.host().values().cloned().collect();
    held.sort_by_key(Vec::len);
    assert_eq!((held[0].len(), held[1].len()), (7, 33));
    let heads: Vec<_> = (0..3).map(|i| prompt(30, 11 + i)[..7].to_vec()).collect();
    assert!(
        heads.contains(&held[0]),
        "the head of a prompt, not its tail"
    );
    let got = drive(&mut h, &ids, 0.0);
    for (id, want) in ids.iter().zip(&wants) {
        assert_eq!(&got[id], want, "request {id}");
    }
    let c = h.sched.stats().counters;
    assert_eq!(
        c.recomputed_tokens,
        26 + 33,
        "the tail of one, all of another"
    );
    h.assert_all_free();
}

#[test]
fn min_waste_prices_each_move_against_the_room_the_ones_before_it_left() {
    // Room for 40 tokens, three paused requests of 33 cells, three waiting for their slots.
    // Each is first priced against the empty pool: a whole copy (two 0.02 s fixed costs)
    // beats recomputing 33 tokens. Once the first is swapped, 7 cells of room are left, and
    // copying a 7-token head still pays both fixed costs while sparing only 7 tokens of
    // recompute: the other two are discarded, not cut.
    let wants: Vec<_> = (0..3).map(|i| reference(30, 41 + i, 10, &[4])).collect();
    let cfg = InterceptConfig {
        swap_bytes: 40 * 23_055,
        ..config(InterceptPolicy::MinWaste)
    };
    let mut h = Harness::build(3, 512, 64, PrefixReuse::All, cfg);
    h.sched.set_costs(CostModel {
        swap_base_s: 0.02,
        ..CostModel::default()
    });
    let ids: Vec<_> = (0..3)
        .map(|i| h.submit_with(prompt(30, 41 + i), 10, spec(&[4])))
        .collect();
    for &id in &ids {
        h.step_until_paused(id, 1);
    }
    h.now += 100.0;
    let queued: Vec<_> = (0..3).map(|i| h.submit(prompt(8, 44 + i), 2)).collect();
    h.step();
    let s = h.sched.stats();
    assert_eq!((s.paused_host, s.paused_discarded), (1, 2), "{s:?}");
    assert_eq!(s.counters.partial_swaps, 0);
    let got = drive(&mut h, &ids, 0.0);
    for (id, want) in ids.iter().zip(&wants) {
        assert_eq!(&got[id], want, "request {id}");
    }
    for id in queued {
        assert_eq!(h.tokens(id).len(), 2);
    }
    h.assert_all_free();
}

#[test]
fn a_partial_swap_cuts_where_an_exact_recompute_can_resume() {
    // 30 prompt cells by one chunk, then 3 by decodes. Room for 29 would leave prompt
    // position 29 alone, to be recomputed as a one-token item: the cut moves to 28.
    let mut h = Harness::build(2, 512, 64, PrefixReuse::Exact, small_pool(29));
    let id = h.submit_with(prompt(30, 3), 12, spec(&[4]));
    h.step_until_paused(id, 1);
    h.step();
    let held: Vec<_> = h.runner.host().values().map(Vec::len).collect();
    assert_eq!(held, vec![28]);
    h.sched.resume(id, result(0), h.now);
    let sizes = recompute_items(&mut h, id, 5);
    assert_eq!(sizes, vec![2, 1, 1, 1]);
    h.run_to_idle();
    assert_eq!(h.tokens(id), reference(30, 3, 12, &[4]));
    h.assert_all_free();
}

#[test]
fn many_paused_requests_under_memory_pressure() {
    let wants: Vec<_> = (0..12)
        .map(|i| reference(20 + i * 3, 20 + i as i32, 15, &[3, 9]))
        .collect();
    for policy in POLICIES {
        let mut h = Harness::build(4, 256, 48, PrefixReuse::All, config(policy));
        let ids: Vec<_> = (0..12)
            .map(|i| h.submit_with(prompt(20 + i * 3, 20 + i as i32), 15, spec(&[3, 9])))
            .collect();
        let got = drive(&mut h, &ids, 0.5);
        for (id, want) in ids.iter().zip(&wants) {
            assert_eq!(&got[id], want, "{policy:?} request {id}");
        }
        h.assert_all_free();
    }
}

#[test]
fn a_request_intercepted_thirty_times() {
    let at: Vec<usize> = (1..=30).map(|k| k * 2).collect();
    let want = reference(16, 30, 64, &at);
    assert_eq!(want.len(), 64);
    for policy in POLICIES {
        for reuse in [PrefixReuse::Exact, PrefixReuse::All] {
            let mut h = Harness::build(2, 512, 32, reuse, config(policy));
            let id = h.submit_with(prompt(16, 30), 64, spec(&at));
            let got = drive(&mut h, &[id], 0.05).remove(&id).unwrap();
            assert_eq!(got, want, "{policy:?} {reuse:?}");
            assert_eq!(h.interceptions(id), 30);
            let u = h.usage(id);
            let appended: usize = (0..30).map(|k| result(k).len()).sum();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.appended_tokens),
                (16, 64, appended),
                "every resume's tokens are counted once, whatever the placement"
            );
            assert_eq!(u.input_tokens(), 16 + appended);
            h.assert_all_free();
        }
    }
}

#[test]
fn token_triggers_pause_only_on_generated_tokens() {
    let mut h = Harness::build(
        2,
        512,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::Preserve),
    );
    // Learn what the request generates, then use its 3rd and 4th tokens as the trigger.
    let free = h.submit(prompt(12, 40), 8);
    h.run_to_idle();
    let out = h.tokens(free);
    let trigger = out[2..4].to_vec();
    let mut p = prompt(12, 40);
    // The prompt itself ends with the trigger: that must not pause the request.
    p.truncate(10);
    p.extend(&trigger);
    let spec = InterceptSpec {
        triggers: vec![trigger],
        after_tokens: Vec::new(),
    };
    let id = h.submit_with(prompt(12, 40), 8, spec.clone());
    h.step_until_paused(id, 1);
    assert_eq!(h.tokens(id), out[..4].to_vec());
    let Some(Event::Intercepted {
        tool, generated, ..
    }) = h.log[&id].last().cloned()
    else {
        panic!()
    };
    assert_eq!((tool.as_str(), generated), ("trigger", 4));
    h.sched.cancel(id, h.now);
    let other = h.submit_with(p, 3, spec);
    h.run_to_idle();
    assert_eq!(h.interceptions(other), 0);
    h.assert_all_free();
}

#[test]
fn resumed_requests_go_ahead_of_new_ones_unless_tail_order() {
    for (order, a_first) in [(ResumeOrder::Arrival, true), (ResumeOrder::Tail, false)] {
        let cfg = InterceptConfig {
            policy: InterceptPolicy::Discard,
            resume_order: order,
            ..InterceptConfig::default()
        };
        let mut h = Harness::build(1, 512, 64, PrefixReuse::All, cfg);
        let a = h.submit_with(prompt(20, 50), 6, spec(&[2]));
        h.step_until_paused(a, 1);
        let b = h.submit(prompt(10, 51), 3);
        h.step(); // a discarded, b admitted
        let c = h.submit(prompt(10, 52), 3);
        h.sched.resume(a, result(0), h.now);
        h.run_to_idle();
        let a_done = h.tokens(a).len() == 6;
        assert!(a_done && h.tokens(b).len() == 3 && h.tokens(c).len() == 3);
        // Which of a and c was admitted first decides who finished first: compare the
        // order of their Finished events in the global step count via recorded arrivals.
        let order_seen = h.finish_order();
        let pa = order_seen.iter().position(|&x| x == a).unwrap();
        let pc = order_seen.iter().position(|&x| x == c).unwrap();
        assert_eq!(pa < pc, a_first, "{order:?}: {order_seen:?}");
        h.assert_all_free();
    }
}

#[test]
fn min_waste_moves_kv_only_when_slots_are_in_demand() {
    let mut h = Harness::build(
        1,
        512,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::MinWaste),
    );
    let a = h.submit_with(prompt(40, 60), 6, spec(&[2]));
    h.step_until_paused(a, 1);
    h.now += 100.0;
    h.step();
    assert_eq!(h.sched.stats().paused_device, 1, "no demand: stays");
    let waste = h.sched.stats().counters.waste.unwrap();
    assert!(
        waste.preserve > waste.swap,
        "a long pause prices preserve highest"
    );
    let b = h.submit(prompt(10, 61), 2);
    h.step();
    assert_eq!(h.sched.stats().paused_host, 1, "demand: swapped (cheapest)");
    h.sched.resume(a, result(0), h.now);
    h.run_to_idle();
    assert_eq!(h.tokens(b).len(), 2);
    assert_eq!(h.tokens(a), reference(40, 60, 6, &[2]));
    h.assert_all_free();
}

#[test]
fn expensive_copies_preserve_short_pauses_and_discard_long_ones() {
    let mut h = Harness::build(
        1,
        512,
        64,
        PrefixReuse::All,
        config(InterceptPolicy::MinWaste),
    );
    h.sched.set_costs(CostModel {
        swap_base_s: 1.0,
        ..CostModel::default()
    });
    let a = h.submit_with(prompt(40, 62), 6, spec(&[2]));
    h.step_until_paused(a, 1);
    h.submit(prompt(10, 63), 2);
    h.step();
    assert_eq!(
        h.sched.stats().paused_device,
        1,
        "just paused: expected to end soon"
    );
    h.now += 100.0;
    h.step();
    assert_eq!(
        h.sched.stats().paused_discarded,
        1,
        "long pause: recompute is cheapest"
    );
}

#[test]
fn retained_conversations_are_swapped_out_and_back_by_min_waste() {
    for (policy, swapped) in [
        (InterceptPolicy::MinWaste, true),
        (InterceptPolicy::Preserve, false),
    ] {
        let mut h = Harness::build(1, 512, 64, PrefixReuse::All, config(policy));
        let first = h.submit(prompt(60, 70), 4);
        h.run_to_idle();
        let mut follow = prompt(60, 70);
        follow.extend(h.tokens(first));
        follow.extend([5, 6, 7]);
        h.now += 30.0;
        let other = h.submit(prompt(30, 71), 2);
        h.run_to_idle();
        assert_eq!(h.tokens(other).len(), 2);
        assert_eq!(h.sched.stats().swap_entries, swapped as usize, "{policy:?}");
        let id = h.submit(follow, 3);
        h.run_to_idle();
        assert_eq!(h.cached_tokens(id) > 0, swapped, "{policy:?}");
        h.assert_all_free();
    }
}

#[test]
fn a_retained_conversation_keeps_the_head_the_swap_pool_has_room_for() {
    // One slot, room for 40 tokens: the first conversation (60 prompt + 4 reply cells) must
    // leave the slot for another request; its first 40 cells go to the host pool and the
    // rest is dropped. Its follow-up reuses those 40 and prefills the remainder.
    let mut h = Harness::build(1, 512, 64, PrefixReuse::All, small_pool(40));
    let first = h.submit(prompt(60, 72), 4);
    h.run_to_idle();
    let other = h.submit(prompt(30, 73), 2);
    h.run_to_idle();
    assert_eq!(h.tokens(other).len(), 2);
    let s = h.sched.stats();
    assert_eq!(s.swap_entries, 1, "{s:?}");
    assert_eq!(s.swap_used_bytes, 40 * 23_055);
    assert_eq!(s.counters.retained_partial_swaps, 1);
    let held: Vec<_> = h.runner.host().values().cloned().collect();
    assert_eq!(
        held,
        vec![prompt(60, 72)[..40].to_vec()],
        "the head, not the tail"
    );
    let mut follow = prompt(60, 72);
    follow.extend(h.tokens(first));
    follow.extend([5, 6, 7]);
    let id = h.submit(follow, 3);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(id), 40);
    assert_eq!(h.tokens(id).len(), 3);
    h.assert_all_free();
}

#[test]
fn a_new_request_copies_a_shared_prefix_out_of_the_host_pool() {
    // One slot: A's conversation goes to the host pool to make room for B, and B's first 12
    // tokens (shared with A) are copied from there; A's buffer stays for A's follow-up.
    let (pa, pb) = sharing(12);
    let mut h = Harness::build(1, 512, 64, PrefixReuse::All, small_pool(400));
    let a = h.submit(pa.clone(), 4);
    h.run_to_idle();
    let b = h.submit(pb.clone(), 4);
    h.run_to_idle();
    assert_eq!(h.cached_tokens(b), 12);
    assert_eq!(h.sched.stats().counters.prefix_copies, 1);
    let mut cold = Harness::build(1, 512, 64, PrefixReuse::All, small_pool(400));
    let cb = cold.submit(pb, 4);
    cold.run_to_idle();
    assert_eq!(h.tokens(b), cold.tokens(cb));
    h.follow_up_finds_its_whole_turn(&pa, a); // A came back whole from the pool
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        len: usize,
        max: usize,
        salt: i32,
        pause_at: Vec<usize>,
    },
    Cancel(u64),
    Resume(u64),
    /// Stages this many tokens of a made-up output start.
    Stage(u64, usize),
    /// Resumes with a whole output that begins with this many of the staged tokens.
    ResumeStaged(u64, usize),
    Wait(f64),
    Step,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            1usize..60,
            1usize..20,
            0i32..4,
            proptest::collection::vec(1usize..20, 0..4)
        )
            .prop_map(|(len, max, salt, mut pause_at)| {
                pause_at.sort_unstable();
                pause_at.dedup();
                Op::Submit {
                    len,
                    max,
                    salt,
                    pause_at,
                }
            }),
        (1u64..20).prop_map(Op::Cancel),
        (1u64..20).prop_map(Op::Resume),
        (1u64..20, 0usize..12).prop_map(|(id, n)| Op::Stage(id, n)),
        (1u64..20, 0usize..12).prop_map(|(id, k)| Op::ResumeStaged(id, k)),
        (0.0f64..30.0).prop_map(Op::Wait),
        Just(Op::Step),
        Just(Op::Step),
        Just(Op::Step),
    ]
}

/// A made-up start of a tool output (the same for every stage: a later stage of the same
/// pause makes the staged tokens a wrong guess past the first `n`).
fn staged(n: usize) -> Vec<Token> {
    (0..n as i32).map(|i| 800 + i).collect()
}

fn policy() -> impl Strategy<Value = InterceptPolicy> {
    prop_oneof![
        Just(InterceptPolicy::Preserve),
        Just(InterceptPolicy::Swap),
        Just(InterceptPolicy::Discard),
        Just(InterceptPolicy::MinWaste),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any interleaving of submits (with pauses), stages, resumes, cancels, waits and steps under any
    /// policy, with a swap pool too small for everyone, keeps the accounting equal to the
    /// runner's KV and host buffers at every step and leaves everything free at the end.
    #[test]
    fn accounting_invariant_with_interceptions(
        ops in proptest::collection::vec(op(), 1..80),
        policy in policy(),
        tail in any::<bool>(),
        reuse in prop_oneof![Just(PrefixReuse::Exact), Just(PrefixReuse::All), Just(PrefixReuse::Off)],
    ) {
        let cfg = InterceptConfig {
            policy,
            resume_order: if tail { ResumeOrder::Tail } else { ResumeOrder::Arrival },
            swap_bytes: 100 * 23_055,
        };
        let mut h = Harness::build(3, 96, 24, reuse, cfg);
        let mut k = 0;
        for op in ops {
            match op {
                Op::Submit { len, max, salt, pause_at } => {
                    h.submit_with(prompt(len, salt), max, spec(&pause_at));
                }
                Op::Cancel(id) => h.sched.cancel(id, h.now),
                Op::Resume(id) => {
                    k += 1;
                    h.sched.resume(id, result(k), h.now);
                }
                Op::Stage(id, n) => h.sched.stage(id, staged(n)),
                Op::ResumeStaged(id, keep) => {
                    k += 1;
                    let output = [staged(keep), result(k)].concat();
                    h.sched.resume_staged(id, keep, output, h.now);
                }
                Op::Wait(s) => h.now += s,
                Op::Step => { h.step(); }
            }
        }
        // Resume whatever is still paused until everything ends.
        let ids: Vec<u64> = (1..h.next).collect();
        drive(&mut h, &ids, 0.0);
        h.run_to_idle();
        h.assert_all_free();
    }
}
