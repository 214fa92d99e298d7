//! `tandem simulate`: the bench's workloads through tandem's own scheduler in virtual time
//! (`tandem_engine::sim`), priced by a cost profile instead of run on a model. The arrivals
//! are the bench's (same `--rate` and `--seed`, same requests), and the report has the bench's
//! JSON and Markdown shape, so `bench/intercept_table.py` reads simulated runs as it reads
//! real ones.

use std::collections::VecDeque;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tandem_engine::sim::{self, SimConfig, SimOutcome, SimRequest, SimTotals, StepCost};
use tandem_engine::{InterceptConfig, SchedulerConfig, Token};

use crate::bench::client::Outcome;
use crate::bench::report;
use crate::bench::server_metrics::ServerFigures;
use crate::bench::workload::WorkItem;
use crate::costs;
use crate::script;
use crate::serve::{OrderArg, PolicyArg, ReuseArg};
use crate::tool_args::OnOff;

#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// Workload: `augment` / `augment:KIND` (InferCept's augmentation workload, as in `tandem
    /// bench`) or a JSON-lines workload file whose requests give `prompt_tokens` (there is no
    /// tokenizer here).
    #[arg(long, default_value = "augment")]
    pub workload: String,
    /// Augmentation workload: multiply context lengths and tool times by this (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Number of requests (a file is cycled). Default: 100 for `augment`, else one pass.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Poisson arrival rate in requests per second (the bench's arrivals for the same seed).
    #[arg(long)]
    pub rate: f64,
    /// Seed for the workload and the arrivals (as `tandem bench --seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A system prompt of N tokens shared by every request, first in each prompt.
    #[arg(long)]
    pub system_prompt_tokens: Option<usize>,
    /// Tokens a chat template adds to each request's prompt (role markers, a default system
    /// prompt), which `tandem serve` prefills and the workload does not count: about 30 for
    /// SmolLM2-135M-Instruct (docs/simulate.md). Not shared between requests.
    #[arg(long, default_value_t = 0)]
    pub prompt_overhead_tokens: usize,
    /// Cost profile: a preset (`smollm2-cpu`: measured on the reference 2-core machine;
    /// `gptj6b-a100`: GPT-J-6B on an A100, derived from datasheet figures) or a JSON file
    /// with fwd_base_s, fwd_per_token_s, swap_out_per_token_s, swap_in_per_token_s,
    /// kv_bytes_per_token and optionally attn_per_pair_s, sample_per_row_s, swap_base_s,
    /// kv_read_per_token_s, overlap_copies
    /// (docs/simulate.md).
    #[arg(long, default_value = "smollm2-cpu", conflicts_with = "costs_from")]
    pub costs: String,
    /// Take the costs a running tandem server measured at startup, from URL/metrics.
    #[arg(long, value_name = "URL")]
    pub costs_from: Option<String>,
    /// As `tandem serve --intercept-policy`.
    #[arg(long, value_enum, default_value_t = PolicyArg::MinWaste)]
    pub intercept_policy: PolicyArg,
    /// As `tandem serve --resume-order` (`tail` with `discard` is vLLM's behavior).
    #[arg(long, value_enum, default_value_t = OrderArg::Arrival)]
    pub resume_order: OrderArg,
    /// As `tandem serve --prefix-reuse`.
    #[arg(long, value_enum, default_value_t = ReuseArg::All)]
    pub prefix_reuse: ReuseArg,
    /// KV cells in all, split evenly over --max-seqs sequences (as `tandem serve`).
    #[arg(long = "kv-cells", default_value_t = 65536)]
    pub kv_cells: usize,
    /// Sequences at once, running and paused (as `tandem serve`).
    #[arg(long, default_value_t = 32)]
    pub max_seqs: usize,
    /// Tokens per step (as `tandem serve`).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// As `tandem serve --slot-compaction`: running requests kept in consecutive slots, which
    /// llama.cpp runs in one pass (the simulator prices each extra pass at the line's base).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub slot_compaction: OnOff,
    /// Host swap space in GiB (as `tandem serve`).
    #[arg(long, default_value_t = 4.0)]
    pub swap_space: f64,
    /// Stop with an error past this many virtual seconds.
    #[arg(long, default_value_t = 86_400.0)]
    pub time_limit: f64,
    /// Write the report to PREFIX.json and PREFIX.md.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of this run in the report.
    #[arg(long, default_value = "sim")]
    pub label: String,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let costs = match &args.costs_from {
        Some(url) => scrape_costs(url).await?,
        None => costs::load(&args.costs)?,
    };
    let cfg = config(&args, costs.into())?;
    let items = items(&args)?;
    let requests = requests(&items, &arrivals(&args, items.len()), &args)?;
    let (outcomes, totals) =
        sim::simulate(&cfg, requests).map_err(|e| anyhow::anyhow!("simulation: {e}"))?;
    let outcomes: Vec<Outcome> = items
        .iter()
        .zip(&outcomes)
        .map(|(i, o)| outcome(i, o))
        .collect();
    let mut summary = report::summarize(&outcomes, totals.end_s);
    summary.server = Some(figures(&totals));
    let md = format!(
        "{}\nsimulated: {} steps, {:.1} s of virtual time\n{}",
        report::markdown(&args.label, &summary),
        totals.steps,
        totals.end_s,
        report::failures(&outcomes)
    );
    println!("{md}");
    let report = report::json_report(config_json(&args, &costs, &cfg), &summary, &outcomes);
    if let Some(prefix) = &args.out {
        crate::bench::write_report(prefix, &report, &md)?;
    }
    Ok(())
}

async fn scrape_costs(url: &str) -> anyhow::Result<costs::CostFile> {
    let url = url.trim_end_matches('/');
    let page = reqwest::get(format!("{url}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}/metrics"))?
        .text()
        .await?;
    costs::from_metrics(&crate::bench::server_metrics::parse(&page))
}

fn config(args: &SimArgs, cost: StepCost) -> anyhow::Result<SimConfig> {
    if args.max_seqs == 0 || args.kv_cells / args.max_seqs.max(1) < 2 {
        bail!("--kv-cells / --max-seqs must leave at least 2 cells a sequence");
    }
    let min = tandem_engine::Scheduler::min_batch_tokens(args.max_seqs);
    if args.max_batch_tokens < min {
        bail!(
            "--max-batch-tokens must be at least {min} for {} sequences",
            args.max_seqs
        );
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.swap_space.is_nan() || args.swap_space < 0.0 {
        bail!("--swap-space must be >= 0 GiB");
    }
    Ok(SimConfig {
        scheduler: SchedulerConfig {
            max_batch_tokens: args.max_batch_tokens,
            n_slots: args.max_seqs,
            cells_per_seq: args.kv_cells / args.max_seqs,
            prefix_reuse: args.prefix_reuse.into(),
            intercept: InterceptConfig {
                policy: args.intercept_policy.into(),
                resume_order: args.resume_order.into(),
                swap_bytes: (args.swap_space * (1u64 << 30) as f64) as usize,
            },
            prompt_lookup: 0,
            compact_slots: args.slot_compaction == OnOff::On,
        },
        cost,
        idle_tick_s: 0.01,
        time_limit_s: args.time_limit,
    })
}

fn items(args: &SimArgs) -> anyhow::Result<Vec<WorkItem>> {
    crate::bench::workload_items(&args.workload, args.requests, args.scale, args.seed)
}

fn arrivals(args: &SimArgs, n: usize) -> Vec<f64> {
    crate::bench::poisson_arrivals(n, args.rate, args.seed)
}

/// Token ids the simulation gives a request: distinct between requests (`salt`), so
/// nothing is shared that a real workload would not share.
fn tokens(n: usize, salt: u64) -> Vec<Token> {
    let base = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n as u64)
        .map(|i| 3 + ((base ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9)) % 30_000) as Token)
        .collect()
}

fn requests(items: &[WorkItem], at: &[f64], args: &SimArgs) -> anyhow::Result<Vec<SimRequest>> {
    let system = args.system_prompt_tokens.map(|n| tokens(n, u64::MAX));
    items
        .iter()
        .zip(at)
        .enumerate()
        .map(|(i, (item, &t))| {
            let mut r = request(item, t, i as u64, system.as_deref())?;
            let overhead = tokens(args.prompt_overhead_tokens, ((i as u64 + 1) << 8) + 255);
            let at = system.as_ref().map_or(0, Vec::len); // after the shared head
            r.prompt.splice(at..at, overhead);
            Ok(r)
        })
        .collect()
}

fn request(
    item: &WorkItem,
    arrival_s: f64,
    i: u64,
    system: Option<&[Token]>,
) -> anyhow::Result<SimRequest> {
    let Some(own) = item.prompt_tokens else {
        bail!(
            "request {}: the simulation needs `prompt_tokens` (it has no tokenizer)",
            i + 1
        );
    };
    let salt = (i + 1) << 8;
    let prompt = [system.unwrap_or(&[]), &tokens(own, salt)].concat();
    let tools = script::tools(&item.segments)
        .into_iter()
        .enumerate()
        .map(|(k, t)| (t.duration_s, tokens(t.result_tokens, salt + 1 + k as u64)))
        .collect::<VecDeque<_>>();
    Ok(SimRequest {
        arrival_s,
        prompt,
        max_tokens: script::total_decode(&item.segments),
        intercept: script::intercept_spec(&item.segments),
        tools,
    })
}

fn outcome(item: &WorkItem, o: &SimOutcome) -> Outcome {
    Outcome {
        id: item.id.clone().unwrap_or_default(),
        ok: o.ok,
        error: o.error.clone(),
        ttft_s: o.first_token_s.map(|t| t - o.arrival_s),
        itl_s: o.itl_s.clone(),
        latency_s: o.latency_s(),
        tool_time_s: o.tool_time_s,
        output_tokens: o.output_tokens,
        prompt_tokens: o.prompt_tokens,
        cached_tokens: o.cached_tokens,
    }
}

fn figures(t: &SimTotals) -> ServerFigures {
    let c = &t.counters;
    ServerFigures {
        interceptions: c.interceptions,
        recomputed_tokens: c.recomputed_tokens,
        recompute_share: t.recompute_s / t.forward_s.max(1e-12),
        forward_s: t.forward_s,
        swap_out_bytes: c.swap_out_bytes,
        swap_in_bytes: c.swap_in_bytes,
        passes_per_step: t.passes as f64 / t.forward_steps.max(1) as f64,
        // Simulated requests have no tools that publish partial results.
        staged_kept_tokens: 0,
        staged_dropped_tokens: 0,
    }
}

fn config_json(args: &SimArgs, costs: &costs::CostFile, cfg: &SimConfig) -> serde_json::Value {
    let s = &cfg.scheduler;
    json!({"label": args.label, "simulated": true, "costs": args.costs_from.as_deref().unwrap_or(&args.costs),
        "cost_profile": costs, "rate": args.rate, "requests": args.requests, "workload": args.workload,
        "scale": args.scale, "seed": args.seed, "system_prompt_tokens": args.system_prompt_tokens,
        "prompt_overhead_tokens": args.prompt_overhead_tokens,
        "intercept_policy": format!("{:?}", s.intercept.policy), "resume_order": format!("{:?}", s.intercept.resume_order),
        "max_seqs": s.n_slots, "cells_per_seq": s.cells_per_seq, "max_batch_tokens": s.max_batch_tokens,
        "swap_space_gib": args.swap_space, "slot_compaction": s.compact_slots})
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    fn args(extra: &[&str]) -> SimArgs {
        let base = ["sim", "--rate", "0.5", "--requests", "12", "--scale", "0.1"];
        Cli::parse_from(base.iter().chain(extra)).args
    }

    fn simulate(a: &SimArgs) -> (Vec<SimOutcome>, SimTotals) {
        let cfg = config(a, costs::load(&a.costs).unwrap().into()).unwrap();
        let items = items(a).unwrap();
        let reqs = requests(&items, &arrivals(a, items.len()), a).unwrap();
        sim::simulate(&cfg, reqs).unwrap()
    }

    #[test]
    fn the_augment_workload_runs_to_the_end_for_every_policy() {
        for p in ["min-waste", "preserve", "swap", "discard"] {
            let a = args(&[
                "--intercept-policy",
                p,
                "--max-seqs",
                "4",
                "--kv-cells",
                "4096",
            ]);
            let (out, totals) = simulate(&a);
            assert_eq!(out.len(), 12);
            assert!(out.iter().all(|o| o.ok), "{p}: {out:?}");
            let tool: f64 = items(&a).unwrap().iter().map(WorkItem::tool_time).sum();
            assert!((out.iter().map(|o| o.tool_time_s).sum::<f64>() - tool).abs() < 1e-9);
            assert!(totals.counters.interceptions > 0);
        }
    }

    #[test]
    fn slot_compaction_runs_fewer_passes_a_step() {
        let load = ["--max-seqs", "8", "--kv-cells", "8192"];
        let per_step = |flag: &str| {
            let a = args(&[&load[..], &["--slot-compaction", flag]].concat());
            let (out, totals) = simulate(&a);
            assert!(out.iter().all(|o| o.ok), "{flag}: {out:?}");
            totals.passes as f64 / totals.forward_steps as f64
        };
        let (on, off) = (per_step("on"), per_step("off"));
        assert!(on < off, "passes a step: on {on}, off {off}");
    }

    #[test]
    fn the_same_seed_gives_the_bench_arrivals_and_requests() {
        let a = args(&[]);
        assert_eq!(arrivals(&a, 5), crate::bench::poisson_arrivals(5, 0.5, 0));
        let items = items(&a).unwrap();
        let reqs = requests(&items, &arrivals(&a, 12), &a).unwrap();
        for (i, r) in items.iter().zip(&reqs) {
            assert_eq!(r.prompt.len(), i.prompt_tokens.unwrap());
            assert_eq!(r.tools.len(), i.segments.len() - 1);
        }
        assert_ne!(
            reqs[0].prompt[..8],
            reqs[1].prompt[..8],
            "prompts must not share a head"
        );
    }

    #[test]
    fn the_template_overhead_comes_after_the_shared_system_prompt() {
        let plain = args(&[]);
        let a = args(&[
            "--prompt-overhead-tokens",
            "30",
            "--system-prompt-tokens",
            "50",
        ]);
        let items = items(&a).unwrap();
        let reqs = requests(&items, &arrivals(&a, 12), &a).unwrap();
        let base = requests(&items, &arrivals(&plain, 12), &plain).unwrap();
        for (r, b) in reqs.iter().zip(&base) {
            assert_eq!(r.prompt.len(), b.prompt.len() + 50 + 30);
            assert_eq!(
                r.prompt[80..],
                b.prompt[..],
                "the request's own tokens come last"
            );
        }
        assert_eq!(
            reqs[0].prompt[..50],
            reqs[1].prompt[..50],
            "one system head"
        );
        assert_ne!(
            reqs[0].prompt[50..80],
            reqs[1].prompt[50..80],
            "overhead not shared"
        );
    }

    #[test]
    fn a_shared_system_prompt_is_reused() {
        let a = args(&[
            "--system-prompt-tokens",
            "200",
            "--max-seqs",
            "4",
            "--kv-cells",
            "4096",
        ]);
        let (out, _) = simulate(&a);
        let cached: usize = out.iter().map(|o| o.cached_tokens).sum();
        assert!(cached >= 200 * 8, "{cached}");
        let (cold, _) = simulate(&args(&["--max-seqs", "4", "--kv-cells", "4096"]));
        assert_eq!(cold.iter().map(|o| o.cached_tokens).sum::<usize>(), 0);
    }

    #[test]
    fn bad_settings_are_refused() {
        let cost = || costs::load("gptj6b-a100").unwrap().into();
        let e = config(
            &args(&["--max-seqs", "8", "--max-batch-tokens", "4"]),
            cost(),
        );
        assert!(e.unwrap_err().to_string().contains("at least 11"));
        let mut a = args(&[]);
        a.rate = 0.0;
        assert!(config(&a, cost())
            .unwrap_err()
            .to_string()
            .contains("--rate"));
        a.workload = "augment:nope".into();
        assert!(items(&a).is_err());
    }
}
