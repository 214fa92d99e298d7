//! The server's interception counters over a bench run: `/metrics` scraped before and after,
//! differenced. Servers without tandem's counters (llama-server, vLLM) give `None`.

use std::collections::HashMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ServerFigures {
    pub interceptions: u64,
    pub recomputed_tokens: u64,
    /// Share of forward time spent recomputing discarded KV.
    pub recompute_share: f64,
    pub forward_s: f64,
    pub swap_out_bytes: u64,
    pub swap_in_bytes: u64,
    /// Forward passes (llama.cpp ubatches) per step with rows: 1 when every step ran as one.
    pub passes_per_step: f64,
    /// Tool-result tokens prefilled ahead of their resume (partial results) that the resumes
    /// kept, and that they dropped (the real result did not begin with them).
    pub staged_kept_tokens: u64,
    pub staged_dropped_tokens: u64,
}

/// Unlabelled `tandem_*` samples of a Prometheus text page.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("tandem_") && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub async fn scrape(http: &reqwest::Client, url: &str) -> Option<HashMap<String, f64>> {
    let resp = http.get(format!("{url}/metrics")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let m = parse(&resp.text().await.ok()?);
    // A fresh tandem server has only its startup gauges yet (counters appear with use).
    m.contains_key("tandem_swap_budget_tokens").then_some(m)
}

pub fn delta(
    before: Option<&HashMap<String, f64>>,
    after: Option<&HashMap<String, f64>>,
) -> Option<ServerFigures> {
    let (b, a) = (before?, after?);
    let d = |k: &str| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
    let forward_us = d("tandem_forward_microseconds_total");
    Some(ServerFigures {
        interceptions: d("tandem_interceptions_total") as u64,
        recomputed_tokens: d("tandem_recomputed_tokens_total") as u64,
        recompute_share: d("tandem_recompute_microseconds_total") / forward_us.max(1.0),
        forward_s: forward_us / 1e6,
        swap_out_bytes: d("tandem_swap_out_bytes_total") as u64,
        swap_in_bytes: d("tandem_swap_in_bytes_total") as u64,
        passes_per_step: d("tandem_forward_passes_total")
            / d("tandem_step_duration_seconds_count").max(1.0),
        staged_kept_tokens: d("tandem_staged_tokens_kept_total") as u64,
        staged_dropped_tokens: d("tandem_staged_tokens_dropped_total") as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_counters() {
        let b = parse(
            "tandem_forward_microseconds_total 1000000\ntandem_recompute_microseconds_total 0\ntandem_forward_passes_total 10\ntandem_step_duration_seconds_count 10\n",
        );
        let a = parse(
            "# HELP x\ntandem_forward_microseconds_total 3000000\ntandem_recompute_microseconds_total 500000\ntandem_paused_requests{placement=\"host\"} 2\ntandem_swap_out_bytes_total 46110\ntandem_forward_passes_total 40\ntandem_step_duration_seconds_count 30\ntandem_staged_tokens_kept_total 337\n",
        );
        let f = delta(Some(&b), Some(&a)).unwrap();
        assert!((f.recompute_share - 0.25).abs() < 1e-9);
        assert_eq!((f.forward_s, f.swap_out_bytes), (2.0, 46110));
        assert_eq!((f.staged_kept_tokens, f.staged_dropped_tokens), (337, 0));
        assert!(
            (f.passes_per_step - 1.5).abs() < 1e-9,
            "30 passes in 20 steps"
        );
        assert!(delta(None, Some(&a)).is_none());
    }
}
