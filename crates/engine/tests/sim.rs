//! The virtual-time simulation: a request's times are exactly the sum of its steps' priced
//! costs and its tool time, each policy's KV moves show up where they should, and a loaded
//! run of every policy ends with every request done and no KV left anywhere.

use std::collections::VecDeque;

use tandem_engine::sim::{simulate, SimConfig, SimOutcome, SimRequest, SimTotals, StepCost};
use tandem_engine::{
    CostModel, InterceptConfig, InterceptPolicy, InterceptSpec, PrefixReuse, ResumeOrder,
    SchedulerConfig, Token,
};

fn config(policy: InterceptPolicy, n_slots: usize) -> SimConfig {
    SimConfig {
        scheduler: SchedulerConfig {
            max_batch_tokens: 64,
            n_slots,
            cells_per_seq: 512,
            prefix_reuse: PrefixReuse::All,
            intercept: InterceptConfig {
                policy,
                resume_order: ResumeOrder::Arrival,
                swap_bytes: 1 << 30,
            },
            prompt_lookup: 0,
            compact_slots: true,
        },
        cost: StepCost {
            model: CostModel {
                fwd_base_s: 0.01,
                fwd_per_token_s: 0.001,
                ..CostModel::default()
            },
            kv_read_per_token_s: 0.0,
            overlap_copies: false,
        },
        idle_tick_s: 0.01,
        time_limit_s: 1e6,
    }
}

fn prompt(n: usize, salt: usize) -> Vec<Token> {
    (0..n)
        .map(|i| (100 + (i * 31 + salt * 977) % 30_000) as Token)
        .collect()
}

/// A request that decodes `segments[k]` tokens, then calls a tool (`tools[k]`: seconds,
/// result tokens), and so on; the last segment ends it.
fn request(arrival_s: f64, p: usize, segments: &[usize], tools: &[(f64, usize)]) -> SimRequest {
    let mut at = 0;
    let after_tokens = segments[..tools.len()]
        .iter()
        .map(|d| {
            at += d;
            (at, "tool".to_string())
        })
        .collect();
    SimRequest {
        arrival_s,
        prompt: prompt(p, (arrival_s * 1000.0) as usize),
        max_tokens: segments.iter().sum(),
        intercept: InterceptSpec {
            triggers: Vec::new(),
            after_tokens,
        },
        tools: tools
            .iter()
            .enumerate()
            .map(|(k, &(d, n))| (d, prompt(n, 7 + k)))
            .collect::<VecDeque<_>>(),
    }
}

fn one(cfg: &SimConfig, r: SimRequest) -> (SimOutcome, SimTotals) {
    let (mut out, totals) = simulate(cfg, vec![r]).expect("simulation");
    (out.remove(0), totals)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_lone_request_takes_the_sum_of_its_step_costs() {
    let cfg = config(InterceptPolicy::MinWaste, 4);
    let (o, totals) = one(&cfg, request(1.0, 10, &[5], &[]));
    assert!(o.ok, "{o:?}");
    // Prefill of 10 tokens (0.01 + 10 * 0.001), then four one-token decode steps.
    assert!(close(o.first_token_s.unwrap(), 1.02), "{o:?}");
    assert!(close(o.finish_s, 1.02 + 4.0 * 0.011), "{o:?}");
    assert_eq!(o.itl_s.len(), 4);
    assert!(o.itl_s.iter().all(|&g| close(g, 0.011)), "{:?}", o.itl_s);
    assert_eq!((o.output_tokens, o.prompt_tokens), (5, 10));
    assert_eq!(totals.steps, 5);
    assert!(close(totals.forward_s, 0.02 + 0.044));
    assert_eq!(totals.recompute_s, 0.0);
}

/// Prompt 10, three tokens, a 2 s tool returning 6 tokens, two more tokens.
fn with_tool() -> SimRequest {
    request(0.0, 10, &[3, 2], &[(2.0, 6)])
}

#[test]
fn a_tool_call_adds_its_time_and_the_prefill_of_its_result() {
    let cfg = config(InterceptPolicy::Preserve, 4);
    let (o, totals) = one(&cfg, with_tool());
    // Paused at 0.02 + 2 * 0.011; resumed 2 s later with the last token (never run) and the
    // 6 result tokens as one 7-token chunk, then one decode step.
    let paused = 0.02 + 0.022;
    assert!(close(o.finish_s, paused + 2.0 + 0.017 + 0.011), "{o:?}");
    assert!(close(o.tool_time_s, 2.0));
    assert_eq!(o.output_tokens, 5);
    assert_eq!(
        o.prompt_tokens,
        10 + 6,
        "the result is input, as a server's usage counts it"
    );
    assert_eq!(
        o.itl_s.len(),
        3,
        "no gap across the tool call: {:?}",
        o.itl_s
    );
    assert_eq!(totals.counters.interceptions, 1);
    assert_eq!(totals.counters.recomputed_tokens, 0);
}

#[test]
fn discard_recomputes_what_it_freed_and_takes_that_much_longer() {
    let keep = one(&config(InterceptPolicy::Preserve, 4), with_tool()).0;
    let (o, totals) = one(&config(InterceptPolicy::Discard, 4), with_tool());
    // KV of the prompt and the first two generated tokens (the third was never run).
    assert_eq!(totals.counters.recomputed_tokens, 12);
    assert!(
        close(o.finish_s - keep.finish_s, 12.0 * 0.001),
        "{o:?} {keep:?}"
    );
    assert!(close(totals.recompute_s, 0.029 * 12.0 / 19.0), "{totals:?}");
}

#[test]
fn swapping_pays_the_copy_back_in_on_resume_serially_on_a_cpu_and_beside_compute_on_a_gpu() {
    let mut cfg = config(InterceptPolicy::Swap, 4);
    cfg.cost.model.swap_out_per_token_s = 0.01;
    cfg.cost.model.swap_in_per_token_s = 0.005;
    cfg.cost.model.swap_base_s = 0.0;
    let keep = one(&config(InterceptPolicy::Preserve, 4), with_tool()).0;
    let (o, totals) = one(&cfg, with_tool());
    assert_eq!(
        totals.counters.swap_out_bytes,
        totals.counters.swap_in_bytes
    );
    let tokens = totals.counters.swap_out_bytes as f64 / cfg.cost.model.kv_bytes_per_token as f64;
    assert_eq!(tokens, 12.0);
    assert_eq!(totals.counters.recomputed_tokens, 0);
    // The copy out (0.12 s) runs while the tool does. With no history the estimator never
    // predicts the end, so the copy in (12 * 0.005 s) runs on resume, in the step that
    // prefills the result (0.017 s): after it on a CPU, beside it on a GPU.
    assert!(close(o.finish_s, keep.finish_s + 0.06), "{o:?} {keep:?}");
    cfg.cost.overlap_copies = true;
    let (o, _) = one(&cfg, with_tool());
    assert!(
        close(o.finish_s, keep.finish_s + 0.06 - 0.017),
        "{o:?} {keep:?}"
    );
}

/// 40 requests arriving 0.05 s apart on 4 slots, each with 1-3 tool calls of 0-3 s.
fn burst() -> Vec<SimRequest> {
    (0..40)
        .map(|i| {
            let calls = 1 + i % 3;
            let tools: Vec<_> = (0..calls)
                .map(|k| (((i * 7 + k * 3) % 30) as f64 / 10.0, 5 + (i + k) % 20))
                .collect();
            let segments: Vec<usize> = (0..=calls).map(|k| 3 + (i + k) % 9).collect();
            request(0.05 * i as f64, 20 + (i * 13) % 60, &segments, &tools)
        })
        .collect()
}

#[test]
fn every_policy_ends_a_loaded_run_with_every_request_done_and_no_kv_left() {
    for policy in [
        InterceptPolicy::MinWaste,
        InterceptPolicy::Preserve,
        InterceptPolicy::Swap,
        InterceptPolicy::Discard,
    ] {
        let mut cfg = config(policy, 4);
        cfg.scheduler.intercept.swap_bytes = 40 * cfg.cost.model.kv_bytes_per_token;
        // `simulate` fails with SimError::Leak if any device cell or host buffer is left.
        let (out, totals) = simulate(&cfg, burst()).unwrap_or_else(|e| panic!("{policy:?}: {e}"));
        assert_eq!(out.len(), 40);
        let want: usize = burst().iter().map(|r| r.max_tokens).sum();
        assert!(out.iter().all(|o| o.ok), "{policy:?}");
        assert_eq!(out.iter().map(|o| o.output_tokens).sum::<usize>(), want);
        let c = totals.counters;
        match policy {
            InterceptPolicy::Preserve => {
                assert_eq!((c.recomputed_tokens, c.swap_out_bytes), (0, 0))
            }
            InterceptPolicy::Discard => assert!(c.recomputed_tokens > 0 && c.swap_out_bytes == 0),
            InterceptPolicy::Swap => assert!(c.swap_out_bytes > 0 && c.partial_swaps > 0, "{c:?}"),
            InterceptPolicy::MinWaste => {}
        }
        let again = simulate(&cfg, burst()).unwrap().0;
        assert_eq!(out, again, "{policy:?}: the same run twice differs");
    }
}

#[test]
fn a_prompt_too_long_fails_alone() {
    let cfg = config(InterceptPolicy::MinWaste, 2);
    let reqs = vec![request(0.0, 600, &[3], &[]), request(0.0, 10, &[3], &[])];
    let (out, _) = simulate(&cfg, reqs).unwrap();
    assert!(!out[0].ok && out[0].error.as_deref().unwrap().contains("600 tokens"));
    assert!(out[1].ok);
}
