//! `tandem bench --workload conveyor[:NAMES]`: partial tool execution (Conveyor, mission.md §2)
//! against a tandem server started with `--allow-replay` and the built-in tools. Each workload
//! is a replayed request (real forward passes, fixed text, real tools), run with
//! `partial_exec` off (lazy) and on: `--reps` pairs alone, then `--rounds` rounds of
//! `--concurrency` (default 8) concurrent requests per mode after a warm-up batch. Which mode
//! goes first alternates, so drift on a shared machine falls on both alike.

pub mod measure;
pub mod summary;
pub mod timeline;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use futures::future::try_join_all;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use crate::bench::client::Client;
use crate::bench::server_metrics::{delta, scrape};
use crate::bench::BenchArgs;
use measure::{run_one, Marks};
use summary::Summary;
use workloads::Workload;

/// Parses `conveyor` (all five) or `conveyor:code,search,...`, their python work scaled by
/// `pace`; `None` if `spec` names another workload.
pub fn parse(spec: &str, pace: f64) -> Option<anyhow::Result<Vec<Workload>>> {
    let rest = spec.strip_prefix("conveyor")?;
    if rest.is_empty() {
        return Some(Ok(workloads::all(pace)));
    }
    let names = rest.strip_prefix(':')?;
    Some(
        names
            .split(',')
            .map(|n| {
                workloads::by_name(n.trim(), pace).with_context(|| {
                    format!(
                        "unknown conveyor workload `{n}`; one of {:?}",
                        workloads::NAMES
                    )
                })
            })
            .collect(),
    )
}

/// Lazy and partial runs of one workload under one load, how busy the engine was during
/// each repetition or round (forward time over wall time), and the tool-result tokens the
/// server staged (kept, dropped; partial results), lazy and partial.
#[derive(Default)]
struct Runs {
    lazy: Vec<Marks>,
    partial: Vec<Marks>,
    busy: [Vec<f64>; 2],
    staged: [(u64, u64); 2],
}

impl Runs {
    fn push(&mut self, partial: bool, m: Marks) {
        if partial {
            &mut self.partial
        } else {
            &mut self.lazy
        }
        .push(m);
    }

    /// Records one repetition's or round's server figures.
    fn probe(&mut self, partial: bool, p: Option<Probe>) {
        let Some(p) = p else { return };
        let i = partial as usize;
        self.busy[i].push(p.busy);
        self.staged[i].0 += p.staged_kept;
        self.staged[i].1 += p.staged_dropped;
    }

    /// Every request's marks, lazy and partial, in the order they ran (for the report's JSON:
    /// a mean's outliers can be looked at).
    fn marks(&self) -> Value {
        json!({"lazy": self.lazy, "partial": self.partial})
    }

    fn summarize(&self, group: usize) -> Summary {
        let mut s = summary::summarize(&self.lazy, &self.partial, group);
        s.set_engine_busy(&self.busy[0], &self.busy[1]);
        let per = |tokens: u64, runs: &[Marks]| tokens as f64 / runs.len().max(1) as f64;
        s.staged_kept_per_request = [
            per(self.staged[0].0, &self.lazy),
            per(self.staged[1].0, &self.partial),
        ];
        s.staged_dropped_per_request = [
            per(self.staged[0].1, &self.lazy),
            per(self.staged[1].1, &self.partial),
        ];
        s
    }
}

/// What the server's metrics say about one repetition or round.
struct Probe {
    /// Forward time over wall time.
    busy: f64,
    staged_kept: u64,
    staged_dropped: u64,
}

/// Runs `work` and reads the server's figures over it (`None` when the server has no
/// tandem metrics).
async fn with_busy<T>(
    c: &Client,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, Option<Probe>)> {
    let before = scrape(&c.http, &c.url).await;
    let t0 = std::time::Instant::now();
    let out = work.await?;
    let wall = t0.elapsed().as_secs_f64();
    let after = scrape(&c.http, &c.url).await;
    let probe = delta(before.as_ref(), after.as_ref()).map(|d| Probe {
        busy: d.forward_s / wall,
        staged_kept: d.staged_kept_tokens,
        staged_dropped: d.staged_dropped_tokens,
    });
    Ok((out, probe))
}

/// Which mode goes first alternates between repetitions.
fn order(rep: usize) -> [bool; 2] {
    if rep.is_multiple_of(2) {
        [false, true]
    } else {
        [true, false]
    }
}

async fn alone(c: &Client, w: &Workload, reps: usize, bar: &ProgressBar) -> anyhow::Result<Runs> {
    let mut runs = Runs::default();
    for rep in 0..reps {
        for partial in order(rep) {
            let (m, probe) = with_busy(c, run_one(c, w, partial)).await?;
            runs.push(partial, m);
            runs.probe(partial, probe);
            bar.inc(1);
        }
    }
    Ok(runs)
}

async fn batch(c: &Client, w: &Workload, n: usize, partial: bool) -> anyhow::Result<Vec<Marks>> {
    try_join_all((0..n).map(|_| run_one(c, w, partial))).await
}

async fn loaded(
    c: &Client,
    w: &Workload,
    rounds: usize,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Runs> {
    // Warm-up batch: every later batch then finds the shared prompt prefix cached.
    batch(c, w, n, true).await?;
    let mut runs = Runs::default();
    for round in 0..rounds {
        for partial in order(round) {
            let (ms, probe) = with_busy(c, batch(c, w, n, partial)).await?;
            for m in ms {
                runs.push(partial, m);
            }
            runs.probe(partial, probe);
            bar.inc(n as u64);
        }
    }
    Ok(runs)
}

pub async fn run(args: &BenchArgs, client: &Client, ws: Vec<Workload>) -> anyhow::Result<()> {
    let n = args.concurrency.unwrap_or(8);
    let per = 2 * args.reps + 2 * args.rounds * n;
    let bar = crate::bench::progress(per * ws.len(), args.quiet);
    for w in &ws {
        // Warm-up: the python interpreter, the search index, the prompt prefix.
        run_one(client, w, true).await.with_context(|| {
            format!(
                "{}: is the server running with --allow-replay and --tools {}?",
                w.name, w.tool
            )
        })?;
    }
    let (mut results, mut examples, mut marks) = (BTreeMap::new(), Vec::new(), BTreeMap::new());
    for w in &ws {
        let one = alone(client, w, args.reps, &bar).await?;
        let mut pair = vec![("alone".to_string(), one.summarize(1))];
        let mut raw = vec![("alone".to_string(), one.marks())];
        if args.rounds > 0 {
            let many = loaded(client, w, args.rounds, n, &bar).await?;
            pair.push((format!("x{n}"), many.summarize(n)));
            raw.push((format!("x{n}"), many.marks()));
        }
        marks.insert(w.name, raw);
        let line = format!("{}: {}", w.name, serde_json::to_string(&pair)?);
        if bar.is_hidden() {
            eprintln!("{line}"); // progress to a log (no terminal)
        } else {
            bar.println(line);
        }
        for (mode, runs) in [("lazy", &one.lazy), ("partial", &one.partial)] {
            let last = *runs.last().context("no repetitions (--reps 0)")?;
            examples.push((format!("{} {mode}", w.name), mode == "partial", last));
        }
        results.insert(w.name, pair);
    }
    bar.finish_and_clear();
    report(args, &ws, &results, &examples, &marks)
}

fn report(
    args: &BenchArgs,
    ws: &[Workload],
    results: &BTreeMap<&str, Vec<(String, Summary)>>,
    examples: &[(String, bool, Marks)],
    marks: &BTreeMap<&str, Vec<(String, Value)>>,
) -> anyhow::Result<()> {
    let meta = meta(args);
    let mut md = vec![
        "# Partial tool execution (Conveyor): lazy vs partial".to_string(),
        String::new(),
        format!(
            "{}, {}; `{}`; {}.",
            meta["date"].as_str().unwrap_or_default(),
            meta["machine"].as_str().unwrap_or_default(),
            meta["command"].as_str().unwrap_or_default(),
            args.label
        ),
        "Mean completion latency of replayed requests (same tokens both ways, real tools); gain = \
         1 - partial/lazy with its 95% interval over lazy/partial pairs run back to back \
         (repetitions alone, rounds under load); T_tool and partial wait: the results' `wait_s` \
         (tool time after the arguments were complete), lazy and partial; results gap: last \
         argument delta to results at the client (the wait plus the rest of the turn); engine \
         busy: forward time over wall time of the lazy / partial runs (what is idle in the \
         lazy runs is all that overlapping tool work with decoding can reclaim); staged: \
         tool-result tokens per partial request prefilled while the tool still ran (partial \
         results) that the resume kept / dropped, from `/metrics`; bound = min(T_decode, \
         T_tool) / (T_decode + T_tool) from the lazy runs."
            .to_string(),
        String::new(),
        summary::HEADER.to_string(),
    ];
    for w in ws {
        for (load, s) in &results[w.name] {
            md.push(summary::row(w.name, load, s));
        }
    }
    let md = md.join("\n") + "\n";
    println!("{md}");
    let ex: Vec<Value> = examples
        .iter()
        .map(|(l, _, m)| json!({"label": l, "marks": m}))
        .collect();
    let report = json!({"meta": meta, "results": results, "timeline_examples": ex, "marks": marks});
    if let Some(prefix) = &args.out {
        let path = |ext: &str| PathBuf::from(format!("{}{ext}", prefix.display()));
        std::fs::write(path(".json"), serde_json::to_string_pretty(&report)?)?;
        std::fs::write(path(".md"), md)?;
        std::fs::write(path("-timeline.svg"), timeline::svg(examples))?;
    }
    Ok(())
}

fn meta(args: &BenchArgs) -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pace = if args.tool_pace == 1.0 {
        String::new()
    } else {
        format!(" --tool-pace {}", args.tool_pace)
    };
    let command = format!(
        "tandem bench --workload {} --reps {} --rounds {} --concurrency {}{pace}",
        args.workload.as_deref().unwrap_or("conveyor"),
        args.reps,
        args.rounds,
        args.concurrency.unwrap_or(8)
    );
    json!({
        "date": time::OffsetDateTime::now_utc().date().to_string(),
        "machine": format!("{}, {cores} cores", std::env::consts::ARCH),
        "command": command, "label": args.label, "url": args.url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_or_a_subset() {
        assert_eq!(parse("conveyor", 1.0).unwrap().unwrap().len(), 6);
        let two = parse("conveyor:code, calc", 1.0).unwrap().unwrap();
        assert_eq!(
            two.iter().map(|w| w.name).collect::<Vec<_>>(),
            ["code", "calc"]
        );
        assert!(parse("conveyor:nope", 1.0).unwrap().is_err());
        assert!(parse("augment", 1.0).is_none() && parse("conveyorx", 1.0).is_none());
    }

    #[test]
    fn modes_alternate_which_goes_first() {
        assert_eq!(order(0), [false, true]);
        assert_eq!(order(1), [true, false]);
    }

    #[test]
    fn the_report_keeps_every_request_in_the_order_it_ran() {
        let mut runs = Runs::default();
        for (partial, total) in [(false, 3.0), (true, 2.0), (false, 4.0)] {
            let m = Marks {
                total,
                ..Marks::default()
            };
            runs.push(partial, m);
        }
        let v = runs.marks();
        let totals = |mode: &str| -> Vec<f64> {
            let rows = v[mode].as_array().unwrap();
            rows.iter().map(|m| m["total"].as_f64().unwrap()).collect()
        };
        assert_eq!(totals("lazy"), [3.0, 4.0]);
        assert_eq!(totals("partial"), [2.0]);
    }

    #[test]
    fn staged_tokens_are_counted_per_request_of_each_mode() {
        let mut runs = Runs::default();
        let probe = |kept, dropped| Probe {
            busy: 0.9,
            staged_kept: kept,
            staged_dropped: dropped,
        };
        for partial in [false, true, true] {
            runs.push(partial, Marks::default());
        }
        runs.probe(false, Some(probe(0, 0)));
        runs.probe(true, Some(probe(300, 0)));
        runs.probe(true, Some(probe(100, 20)));
        runs.probe(true, None); // a server without tandem's metrics: nothing counted
        let s = runs.summarize(1);
        assert_eq!(s.staged_kept_per_request, [0.0, 200.0]);
        assert_eq!(s.staged_dropped_per_request, [0.0, 10.0]);
        assert_eq!(runs.busy[1].len(), 2);
    }
}
