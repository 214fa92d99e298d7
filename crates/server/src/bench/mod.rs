//! `tandem bench`: an open-loop load generator for OpenAI-compatible servers. Requests come
//! from a workload file (or a synthetic prompt/output size) and are sent at Poisson arrivals
//! (`--rate`), with a fixed number in flight (`--concurrency`), or at their own `arrival_s`.

pub mod augment;
pub mod client;
pub mod conveyor;
pub mod report;
pub mod server_metrics;
pub mod simulate;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;

use client::{Client, Outcome};
use workload::WorkItem;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Base URL of the server (without /v1).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Model name to send (default: the first model the server lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Workload: a JSON-lines file, one request each (see docs/bench.md); `augment` /
    /// `augment:KIND` (KIND: math, qa, ve, chatbot, image, tts) for InferCept's generated
    /// augmentation workload (100 requests unless --requests); or `conveyor` /
    /// `conveyor:NAME,...` (code, report, search, plan, validate, calc) for partial tool execution,
    /// lazy vs partial, against a tandem server run with --allow-replay and those tools.
    #[arg(long, conflicts_with = "prompt_tokens")]
    pub workload: Option<String>,
    /// Augmentation workload: multiply context lengths and tool times by this (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Send each request's tool segments to the server (`segments` extension; the server must
    /// run with --allow-scripted), which pauses and resumes it itself, instead of playing the
    /// tool loop on the client side.
    #[arg(long)]
    pub server_side_tools: bool,
    /// Synthetic workload instead of a file: prompt length in tokens (approximate).
    #[arg(long, requires = "output_tokens")]
    pub prompt_tokens: Option<usize>,
    /// Put a system message of about N tokens first in every request, the same text for all
    /// (an agent's instructions and tool definitions, shared by its conversations); another
    /// --seed gives another text. Not for the conveyor workload.
    #[arg(long)]
    pub system_prompt_tokens: Option<usize>,
    /// Synthetic workload: output tokens per request (EOS ignored).
    #[arg(long)]
    pub output_tokens: Option<usize>,
    /// Poisson arrival rate in requests per second (open loop).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Keep this many requests in flight (closed loop). Conveyor: requests per loaded round
    /// (default 8).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Conveyor: scales the workloads' python work (the code workload's 0.1 s per table, the
    /// plan's 0.5 s step), paced for a 2-core CPU's decode, to a faster decoder's (e.g. 0.25).
    /// Search is paced by the server's --search-latency-ms.
    #[arg(long, default_value_t = 1.0, value_parser = positive_pace)]
    pub tool_pace: f64,
    /// Conveyor: lazy/partial pairs per workload run alone.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Conveyor: rounds of --concurrency requests per mode and workload under load (0: the
    /// workloads alone only).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Number of requests to send (the workload is cycled). Default: one pass over the file.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Stop sending new requests after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write the report to PREFIX.json and PREFIX.md (conveyor: also PREFIX-timeline.svg).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Seed for arrivals and synthetic text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

async fn model_name(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = http
        .get(format!("{url}/v1/models"))
        .send()
        .await?
        .json()
        .await?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .context("server lists no model")
}

/// The requests to send, each with the shared system message when one is asked for.
fn load_items(args: &BenchArgs) -> anyhow::Result<Vec<WorkItem>> {
    let mut items = base_items(args)?;
    if let Some(n) = args.system_prompt_tokens {
        for i in &mut items {
            i.system_tokens = Some(n);
            i.system_seed = args.seed;
        }
    }
    Ok(items)
}

fn base_items(args: &BenchArgs) -> anyhow::Result<Vec<WorkItem>> {
    if let Some(spec) = &args.workload {
        return workload_items(spec, args.requests, args.scale, args.seed);
    }
    let base = match (args.prompt_tokens, args.output_tokens) {
        (Some(p), Some(o)) => workload::synthetic(1, p, o),
        _ => bail!("give --workload FILE or --prompt-tokens N --output-tokens M"),
    };
    Ok(cycle(base, args.requests))
}

/// The requests of a `--workload` (for `tandem bench` and `tandem simulate`): `augment` /
/// `augment:KIND`, generated (100 requests unless `requests`), or a workload file cycled to
/// `requests` (one pass by default).
pub fn workload_items(
    spec: &str,
    requests: Option<usize>,
    scale: f64,
    seed: u64,
) -> anyhow::Result<Vec<WorkItem>> {
    if let Some(kinds) = augment::parse(spec) {
        return augment::generate(&kinds?, requests.unwrap_or(100), scale, seed);
    }
    Ok(cycle(workload::load(std::path::Path::new(spec))?, requests))
}

fn cycle(base: Vec<WorkItem>, n: Option<usize>) -> Vec<WorkItem> {
    let n = n.unwrap_or(base.len());
    (0..n).map(|i| base[i % base.len()].clone()).collect()
}

/// Writes a report to PREFIX.json and PREFIX.md.
pub fn write_report(prefix: &Path, report: &serde_json::Value, md: &str) -> anyhow::Result<()> {
    // Append (not replace) extensions: a prefix like `run-0.5` must keep its `.5`.
    let path = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
    std::fs::write(path("json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(path("md"), md)?;
    Ok(())
}

/// Start offsets (seconds) of each request, or `None` for closed-loop concurrency.
fn arrivals(args: &BenchArgs, items: &[WorkItem]) -> Option<Vec<f64>> {
    if args.concurrency.is_some() {
        return None;
    }
    if let Some(rate) = args.rate {
        return Some(poisson_arrivals(items.len(), rate, args.seed));
    }
    Some(items.iter().map(|i| i.arrival_s.unwrap_or(0.0)).collect())
}

/// Start offsets of `n` requests arriving as a Poisson process of `rate` per second (the
/// first at 0), deterministic for a seed; `tandem simulate` uses the same arrivals.
pub fn poisson_arrivals(n: usize, rate: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            let at = t;
            t += -(1.0 - rng.random::<f64>()).ln() / rate;
            at
        })
        .collect()
}

/// A client for the server at `--url`, with `--model` or the first model it lists.
async fn connect(args: &BenchArgs) -> anyhow::Result<Client> {
    let (http, fresh) = client::http_clients()?;
    let url = args.url.trim_end_matches('/').to_string();
    let model = match &args.model {
        Some(m) => m.clone(),
        None => model_name(&http, &url)
            .await
            .with_context(|| format!("GET {url}/v1/models"))?,
    };
    Ok(Client {
        http,
        fresh,
        url,
        model,
        server_side_tools: args.server_side_tools,
    })
}

/// `--tool-pace`: a finite number above 0.
fn positive_pace(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("`{s}` is not a number above 0")),
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let conveyor_workloads = args
        .workload
        .as_deref()
        .and_then(|spec| conveyor::parse(spec, args.tool_pace));
    if let Some(ws) = conveyor_workloads {
        let ws = ws?; // a bad workload name is reported before any connection is tried
        if args.system_prompt_tokens.is_some() {
            bail!("--system-prompt-tokens does not apply to the conveyor workload");
        }
        return conveyor::run(&args, &connect(&args).await?, ws).await;
    }
    let items = load_items(&args)?;
    let client = Arc::new(connect(&args).await?);
    let model = client.model.clone();
    let before = server_metrics::scrape(&client.http, &client.url).await;
    let bar = progress(items.len(), args.quiet);
    let start = Instant::now();
    let outcomes = match arrivals(&args, &items) {
        Some(at) => open_loop(client.clone(), items, at, &args, &bar).await,
        None => {
            let n = args.concurrency.unwrap_or(1);
            closed_loop(client.clone(), items, n, &args, &bar).await
        }
    };
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let after = server_metrics::scrape(&client.http, &client.url).await;
    let mut summary = report::summarize(&outcomes, wall);
    summary.server = server_metrics::delta(before.as_ref(), after.as_ref());
    let md = report::markdown(&args.label, &summary) + &report::failures(&outcomes);
    println!("{md}");
    let config = json!({"label": args.label, "url": args.url, "model": model, "rate": args.rate,
        "concurrency": args.concurrency, "requests": outcomes.len(), "duration": args.duration,
        "workload": args.workload, "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens, "system_prompt_tokens": args.system_prompt_tokens,
        "seed": args.seed, "scale": args.scale,
        "server_side_tools": args.server_side_tools});
    let report = report::json_report(config, &summary, &outcomes);
    if let Some(prefix) = &args.out {
        write_report(prefix, &report, &md)?;
    } else {
        println!("{}", serde_json::to_string_pretty(&report["summary"])?);
    }
    Ok(())
}

pub(crate) fn progress(n: usize, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    let style =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} requests {msg}");
    bar.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

fn past_deadline(args: &BenchArgs, start: Instant) -> bool {
    args.duration
        .is_some_and(|d| start.elapsed().as_secs_f64() >= d)
}

async fn open_loop(
    client: Arc<Client>,
    items: Vec<WorkItem>,
    at: Vec<f64>,
    args: &BenchArgs,
    bar: &ProgressBar,
) -> Vec<Outcome> {
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, (item, t)) in items.into_iter().zip(at).enumerate() {
        let wait = t - start.elapsed().as_secs_f64();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        if past_deadline(args, start) {
            break;
        }
        let (c, seed) = (client.clone(), args.seed.wrapping_add(i as u64));
        set.spawn(async move { c.run(&item, seed).await });
    }
    collect(set, bar).await
}

async fn closed_loop(
    client: Arc<Client>,
    items: Vec<WorkItem>,
    n: usize,
    args: &BenchArgs,
    bar: &ProgressBar,
) -> Vec<Outcome> {
    let start = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(items.into_iter().enumerate()));
    let mut set = JoinSet::new();
    for _ in 0..n.max(1) {
        let (c, q, bar, args) = (client.clone(), queue.clone(), bar.clone(), args.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = q.lock().expect("queue lock").next();
                let Some((i, item)) = next else { break };
                if past_deadline(&args, start) {
                    break;
                }
                out.push(c.run(&item, args.seed.wrapping_add(i as u64)).await);
                bar.inc(1);
            }
            out
        });
    }
    set.join_all().await.into_iter().flatten().collect()
}

async fn collect(mut set: JoinSet<Outcome>, bar: &ProgressBar) -> Vec<Outcome> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(o) = r {
            out.push(o);
        }
        bar.inc(1);
    }
    out
}
