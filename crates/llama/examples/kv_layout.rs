//! Measures aggregate decode throughput with per-sequence KV streams (`kv_unified = false`)
//! against one shared pool (`kv_unified = true`), at several sequence counts, through the real
//! scheduler and runner. Prints a Markdown table (see docs/kv-layout.md).
//!
//! cargo run --release -p tandem-llama --example kv_layout -- MODEL.gguf [THREADS] [COUNTS]
//! (COUNTS: comma-separated sequence counts, default 1,8,32,64)

use std::time::Instant;

use tandem_engine::{NewRequest, PrefixReuse, Runner, SamplingParams, Scheduler, SchedulerConfig};
use tandem_llama::{LlamaRunner, Model, RunnerConfig};

const PROMPT: usize = 128;
const DECODE_STEPS: usize = 32;
const CELLS_PER_SEQ: usize = 512;

/// Aggregate decode tokens/s with `n` sequences decoding together.
fn measure(model: Model, n: usize, unified: bool, threads: usize) -> f64 {
    let budget = 512.max(n);
    let cfg = SchedulerConfig {
        max_batch_tokens: budget,
        n_slots: n,
        cells_per_seq: CELLS_PER_SEQ,
        prefix_reuse: PrefixReuse::Off,
        intercept: Default::default(),
        prompt_lookup: 0,
        compact_slots: true,
    };
    let rc = RunnerConfig {
        n_slots: n,
        cells_per_seq: CELLS_PER_SEQ,
        max_batch_tokens: budget,
        threads,
        flash_attn: Some(false),
        kv_unified: unified,
    };
    let mut runner = LlamaRunner::new(model, &rc).expect("context");
    let mut sched = Scheduler::new(cfg);
    let mut rxs = Vec::new();
    for i in 0..n {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let prompt = (0..PROMPT)
            .map(|j| 100 + ((i * 31 + j * 7) % 5000) as i32)
            .collect();
        let sampling = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        sched.add(
            i as u64,
            NewRequest {
                prompt,
                max_tokens: 10_000,
                ignore_eos: true,
                sampling,
                events: tx,
                intercept: Default::default(),
                constraint: None,
                prediction: Vec::new(),
            },
            0.0,
        );
        rxs.push(rx);
    }
    let mut step = |sched: &mut Scheduler| {
        let plan = sched.schedule(0.0);
        let res = runner.execute(&plan).expect("decode");
        sched.update(&plan, &res, 0.0);
        plan.batch_tokens()
    };
    while step(&mut sched) != n {} // prefill everything first
    let t0 = Instant::now();
    let tokens: usize = (0..DECODE_STEPS).map(|_| step(&mut sched)).sum();
    tokens as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: kv_layout MODEL.gguf [THREADS]");
    let threads = args.next().map_or(2, |t| t.parse().expect("threads"));
    let counts: Vec<usize> = args
        .next()
        .map_or("1,8,32,64".into(), |c| c)
        .split(',')
        .map(|n| n.parse().expect("sequence count"))
        .collect();
    let model = Model::load(path.as_ref(), 0).expect("model");
    println!("| sequences | per-sequence streams tok/s | shared pool tok/s | ratio |");
    println!("|---|---|---|---|");
    for n in counts {
        let streams = measure(model, n, false, threads);
        let shared = measure(model, n, true, threads);
        println!(
            "| {n} | {streams:.1} | {shared:.1} | {:.2} |",
            streams / shared
        );
    }
}
