//! Bench report: latency and throughput statistics, written as JSON and a Markdown table.

use serde::Serialize;
use serde_json::json;

use crate::bench::client::Outcome;
use crate::bench::server_metrics::ServerFigures;

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Stats {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
}

pub fn stats(mut v: Vec<f64>) -> Stats {
    if v.is_empty() {
        return Stats::default();
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        p50: q(0.5),
        p99: q(0.99),
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    pub wall_s: f64,
    pub ttft_s: Stats,
    pub itl_s: Stats,
    pub latency_s: Stats,
    /// Seconds per output token with tool time excluded (InferCept's normalized latency).
    pub normalized_latency_s: Stats,
    pub output_tokens: usize,
    pub output_tok_per_s: f64,
    pub requests_per_s: f64,
    pub prompt_tokens: usize,
    pub cached_prompt_tokens: usize,
    /// The server's own interception counters over the run (tandem only).
    pub server: Option<ServerFigures>,
}

pub fn summarize(outcomes: &[Outcome], wall_s: f64) -> Summary {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let output_tokens: usize = ok.iter().map(|o| o.output_tokens).sum();
    let norm = ok
        .iter()
        .filter(|o| o.output_tokens > 0)
        .map(|o| (o.latency_s - o.tool_time_s).max(0.0) / o.output_tokens as f64)
        .collect();
    Summary {
        requests: outcomes.len(),
        completed: ok.len(),
        errors: outcomes.len() - ok.len(),
        wall_s,
        ttft_s: stats(ok.iter().filter_map(|o| o.ttft_s).collect()),
        itl_s: stats(ok.iter().flat_map(|o| o.itl_s.iter().copied()).collect()),
        latency_s: stats(ok.iter().map(|o| o.latency_s).collect()),
        normalized_latency_s: stats(norm),
        output_tokens,
        output_tok_per_s: output_tokens as f64 / wall_s.max(1e-9),
        requests_per_s: ok.len() as f64 / wall_s.max(1e-9),
        prompt_tokens: ok.iter().map(|o| o.prompt_tokens).sum(),
        cached_prompt_tokens: ok.iter().map(|o| o.cached_tokens).sum(),
        server: None,
    }
}

fn ms(s: Stats) -> String {
    format!(
        "{:.1} / {:.1} / {:.1}",
        s.mean * 1e3,
        s.p50 * 1e3,
        s.p99 * 1e3
    )
}

pub fn markdown(label: &str, s: &Summary) -> String {
    let mut t = String::new();
    t.push_str("| run | requests ok/err | TTFT ms mean/p50/p99 | ITL ms mean/p50/p99 | latency ms mean/p50/p99 | norm. latency ms/token mean/p50/p99 | output tok/s | req/s |\n");
    t.push_str("|---|---|---|---|---|---|---|---|\n");
    t.push_str(&format!(
        "| {label} | {}/{} | {} | {} | {} | {} | {:.1} | {:.2} |\n",
        s.completed,
        s.errors,
        ms(s.ttft_s),
        ms(s.itl_s),
        ms(s.latency_s),
        ms(s.normalized_latency_s),
        s.output_tok_per_s,
        s.requests_per_s
    ));
    if let Some(f) = &s.server {
        t.push_str(&format!(
            "\nserver: {} interceptions, {:.1} s of forward passes, recompute {:.1}% of it ({} tokens), swapped out {:.1} MB / in {:.1} MB, {:.2} forward passes per step\n",
            f.interceptions,
            f.forward_s,
            f.recompute_share * 100.0,
            f.recomputed_tokens,
            f.swap_out_bytes as f64 / 1e6,
            f.swap_in_bytes as f64 / 1e6,
            f.passes_per_step
        ));
    }
    t
}

/// The failed requests' errors as a Markdown paragraph, identical ones counted together (the
/// most frequent first, at most five kinds), so a reader tells a server's refusal from a
/// client's or network's failure; empty when every request completed.
pub fn failures(outcomes: &[Outcome]) -> String {
    let mut counts: Vec<(usize, &str)> = Vec::new();
    for e in outcomes.iter().filter_map(|o| o.error.as_deref()) {
        match counts.iter_mut().find(|(_, m)| *m == e) {
            Some((n, _)) => *n += 1,
            None => counts.push((1, e)),
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.0));
    let lines: Vec<String> = counts
        .iter()
        .take(5)
        .map(|(n, e)| format!("- {n} × {e}"))
        .collect();
    let more = counts.len().saturating_sub(5);
    let tail = if more > 0 {
        format!("\n- and {more} other errors")
    } else {
        String::new()
    };
    format!("\nfailed requests:\n{}{tail}\n", lines.join("\n"))
}

pub fn json_report(
    config: serde_json::Value,
    s: &Summary,
    outcomes: &[Outcome],
) -> serde_json::Value {
    let errors: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.error.clone())
        .take(20)
        .collect();
    let requests: Vec<_> = outcomes.iter().map(request_json).collect();
    json!({"config": config, "summary": s, "first_errors": errors, "requests": requests})
}

/// One request's figures, so runs over the same workload (same `--seed`) can be compared
/// request by request (`bench/intercept_table.py` pairs them by `id`).
fn request_json(o: &Outcome) -> serde_json::Value {
    json!({"id": o.id, "ok": o.ok, "latency_s": o.latency_s, "tool_time_s": o.tool_time_s,
        "output_tokens": o.output_tokens})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = stats((1..=100).map(f64::from).collect());
        assert_eq!((s.p50, s.p99), (51.0, 99.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
    }

    #[test]
    fn the_json_report_lists_every_request() {
        let outcome = |id: &str, ok: bool| Outcome {
            id: id.into(),
            ok,
            latency_s: 2.5,
            output_tokens: 7,
            error: (!ok).then(|| "HTTP 500".to_string()),
            ..Outcome::default()
        };
        let outcomes = [outcome("qa-0", true), outcome("qa-1", false)];
        let r = json_report(json!({}), &summarize(&outcomes, 1.0), &outcomes);
        let reqs = r["requests"].as_array().unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0]["id"], "qa-0");
        assert_eq!(reqs[0]["latency_s"], 2.5);
        assert_eq!(reqs[0]["output_tokens"], 7);
        assert_eq!(reqs[1]["ok"], false);
        assert_eq!(r["first_errors"][0], "HTTP 500");
    }

    #[test]
    fn failures_count_each_error_once_and_are_empty_without_one() {
        let o = |e: Option<&str>| Outcome {
            ok: e.is_none(),
            error: e.map(str::to_string),
            ..Outcome::default()
        };
        let outcomes = [
            o(Some("HTTP 400: bad")),
            o(None),
            o(Some("closed")),
            o(Some("closed")),
        ];
        assert_eq!(
            failures(&outcomes),
            "\nfailed requests:\n- 2 × closed\n- 1 × HTTP 400: bad\n"
        );
        assert_eq!(failures(&[o(None)]), "");
    }

    #[test]
    fn normalized_latency_excludes_tool_time() {
        let o = Outcome {
            ok: true,
            latency_s: 3.0,
            tool_time_s: 2.0,
            output_tokens: 10,
            ..Default::default()
        };
        let s = summarize(&[o], 3.0);
        assert!((s.normalized_latency_s.mean - 0.1).abs() < 1e-9);
    }
}
