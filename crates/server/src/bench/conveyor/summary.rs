//! Conveyor bench figures per workload and load: mean completion latency lazy vs partial, the
//! decode and tool times measured on the lazy runs, the ideal bound
//! `min(T_decode, T_tool) / (T_decode + T_tool)` (mission.md §2) and the gain against it.

use serde::Serialize;

use crate::bench::conveyor::measure::Marks;
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::bench::report::stats;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub lazy_mean_s: f64,
    pub partial_mean_s: f64,
    pub lazy_p50_s: f64,
    pub partial_p50_s: f64,
    /// Lazy runs: completion latency minus `t_tool_s`.
    pub t_decode_s: f64,
    /// Lazy runs: the tool's time after the call's arguments were complete (the results'
    /// `wait_s`, measured by the server).
    pub t_tool_s: f64,
    /// Partial runs: tool time left after the arguments were complete (`wait_s`).
    pub partial_tail_s: f64,
    /// From the call's last argument delta to the results reaching the client, lazy and
    /// partial: the tool's wait plus decoding the rest of the turn (closing the call, the
    /// end-of-turn token), which under load takes several batched steps.
    pub results_gap_lazy_s: f64,
    pub results_gap_partial_s: f64,
    /// When the call was fully decoded (last argument delta), partial over lazy: above 1
    /// when tool work running during the decode slowed it (tools and decode share the CPU).
    pub decode_ratio: f64,
    pub bound: f64,
    /// `1 - partial_mean / lazy_mean`.
    pub gain: f64,
    /// Half-width of the gain's 95% interval, from paired differences (see `paired_ci95`);
    /// `null` with a single pair.
    pub gain_ci95: f64,
    /// Pairs the interval is computed over (repetitions alone, rounds under load).
    pub pairs: usize,
    pub gain_over_bound: f64,
    /// The tool ended the call before it was fully decoded (the bound does not apply).
    pub early_abort: bool,
    /// The server's forward time over wall time, mean over the lazy and the partial
    /// repetitions (alone) or rounds (under load); `None` without tandem's metrics. The idle
    /// rest of the lazy runs bounds what overlapping tools with decoding can gain: under load
    /// on a CPU the other requests' decoding fills most of one request's tool wait.
    pub engine_busy_lazy: Option<f64>,
    pub engine_busy_partial: Option<f64>,
    /// Tool-result tokens per request, lazy and partial, that the server prefilled while the
    /// tool still ran (partial results) and the resume kept, and that it dropped; zero
    /// without tandem's metrics.
    pub staged_kept_per_request: [f64; 2],
    pub staged_dropped_per_request: [f64; 2],
}

impl Summary {
    pub fn set_engine_busy(&mut self, lazy: &[f64], partial: &[f64]) {
        let m = |v: &[f64]| (!v.is_empty()).then(|| mean(v));
        self.engine_busy_lazy = m(lazy);
        self.engine_busy_partial = m(partial);
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn variance(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64
}

/// Half-width of the 95% interval of the mean lazy-minus-partial latency, in seconds.
/// Lazy and partial runs come in pairs run back to back (one repetition alone, one round of
/// concurrent requests under load, whose latencies are averaged first); pairing cancels the
/// drift of a shared machine between pairs, which an unpaired interval counts as noise. With
/// few pairs the Student t quantile, not the normal one, sets the width.
fn paired_ci95(lazy: &[f64], partial: &[f64], group: usize) -> (f64, usize) {
    let group = group.max(1);
    let diffs: Vec<f64> = lazy
        .chunks(group)
        .zip(partial.chunks(group))
        .map(|(l, p)| mean(l) - mean(p))
        .collect();
    let k = diffs.len();
    if k < 2 {
        return (f64::NAN, k);
    }
    let t = StudentsT::new(0.0, 1.0, (k - 1) as f64)
        .expect("degrees of freedom > 0")
        .inverse_cdf(0.975);
    (t * (variance(&diffs) / k as f64).sqrt(), k)
}

/// Mean of `f` over the runs.
fn mean_of(m: &[Marks], f: impl Fn(&Marks) -> f64) -> f64 {
    mean(&m.iter().map(f).collect::<Vec<_>>())
}

/// `group`: runs per pair in each mode (1 alone, the concurrency under load); runs are in the
/// order they were made, pair by pair.
pub fn summarize(lazy: &[Marks], partial: &[Marks], group: usize) -> Summary {
    let totals = |m: &[Marks]| m.iter().map(|x| x.total).collect::<Vec<_>>();
    let (lt, pt) = (totals(lazy), totals(partial));
    let (lazy_mean, partial_mean) = (mean(&lt), mean(&pt));
    let wait = |x: &Marks| x.tool_wait;
    let gap = |x: &Marks| x.results - x.args_end;
    let t_tool = mean_of(lazy, wait);
    let t_decode = lazy_mean - t_tool;
    let bound = t_decode.min(t_tool) / (t_decode + t_tool);
    let gain = 1.0 - partial_mean / lazy_mean;
    let (ci, pairs) = paired_ci95(&lt, &pt, group);
    let args_end = |m: &[Marks]| mean_of(m, |x| x.args_end);
    let chars = |m: &[Marks]| mean_of(m, |x| x.args_chars as f64);
    Summary {
        n: lt.len(),
        lazy_mean_s: lazy_mean,
        partial_mean_s: partial_mean,
        lazy_p50_s: stats(lt).p50,
        partial_p50_s: stats(pt).p50,
        t_decode_s: t_decode,
        t_tool_s: t_tool,
        partial_tail_s: mean_of(partial, wait),
        results_gap_lazy_s: mean_of(lazy, gap),
        results_gap_partial_s: mean_of(partial, gap),
        decode_ratio: args_end(partial) / args_end(lazy),
        bound,
        gain,
        gain_ci95: ci / lazy_mean,
        pairs,
        gain_over_bound: gain / bound,
        early_abort: chars(partial) < chars(lazy),
        engine_busy_lazy: None,
        engine_busy_partial: None,
        staged_kept_per_request: [0.0; 2],
        staged_dropped_per_request: [0.0; 2],
    }
}

/// Below this bound the tool time is within the noise of the latency: no ratio is shown.
const NEGLIGIBLE_BOUND: f64 = 0.01;

/// One table row: `| workload | load | ... |`.
pub fn row(workload: &str, load: &str, s: &Summary) -> String {
    let ratio = if s.early_abort {
        "(early abort)".to_string()
    } else if s.bound < NEGLIGIBLE_BOUND {
        "(negligible tool)".to_string()
    } else {
        format!("{:.2}", s.gain_over_bound)
    };
    let pct = |b: Option<f64>| b.map_or("n/a".to_string(), |b| format!("{:.0}%", 100.0 * b));
    // One pair has no interval.
    let ci = if s.gain_ci95.is_finite() {
        format!("{:.1}", 100.0 * s.gain_ci95)
    } else {
        "n/a".to_string()
    };
    let busy = format!(
        "{} / {}",
        pct(s.engine_busy_lazy),
        pct(s.engine_busy_partial)
    );
    let staged = format!(
        "{:.0} / {:.0}",
        s.staged_kept_per_request[1], s.staged_dropped_per_request[1]
    );
    format!(
        "| {workload} | {load} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} / {:.2} | {busy} | {staged} | {:.3} | {:.1}% ± {ci} | {ratio} |",
        s.n,
        s.lazy_mean_s,
        s.partial_mean_s,
        s.t_decode_s,
        s.t_tool_s,
        s.partial_tail_s,
        s.results_gap_lazy_s,
        s.results_gap_partial_s,
        s.bound,
        100.0 * s.gain,
    )
}

pub const HEADER: &str = "| workload | load | n | lazy s | partial s | T_decode s | T_tool s | partial wait s | results gap lazy / partial s | engine busy lazy / partial | staged kept / dropped | bound | gain (95% CI) | gain/bound |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[cfg(test)]
mod tests {
    use super::*;

    /// The tool's wait is the gap from the last argument delta to the results here.
    fn marks(args_end: f64, results: f64, total: f64) -> Marks {
        Marks {
            call_start: 0.1,
            args_end,
            results,
            total,
            tool_wait: results - args_end,
            tool_error: false,
            args_chars: 100,
        }
    }

    #[test]
    fn bound_and_gain_from_the_lazy_runs() {
        // Lazy: decode 1 s before the call's end + 0.5 s after, tool 1 s -> T_decode 1.5,
        // T_tool 1.0, bound 0.4. Partial hides 0.5 s of tool: gain 0.2 = 0.5 of the bound.
        let lazy = [marks(1.0, 2.0, 2.5), marks(1.0, 2.0, 2.5)];
        let partial = [marks(1.0, 1.5, 2.0), marks(1.0, 1.5, 2.0)];
        let s = summarize(&lazy, &partial, 1);
        assert!((s.t_tool_s - 1.0).abs() < 1e-9 && (s.t_decode_s - 1.5).abs() < 1e-9);
        assert!((s.bound - 0.4).abs() < 1e-9);
        assert!((s.gain - 0.2).abs() < 1e-9 && (s.gain_over_bound - 0.5).abs() < 1e-9);
        assert!(s.gain_ci95.abs() < 1e-9 && !s.early_abort);
        // The server's wait, not the stream's gap, is the tool time.
        let slow_turn_end = |m: Marks| Marks {
            results: m.results + 0.3,
            total: m.total + 0.3,
            ..m
        };
        let s = summarize(&lazy.map(slow_turn_end), &partial, 1);
        assert!((s.t_tool_s - 1.0).abs() < 1e-9 && (s.t_decode_s - 1.8).abs() < 1e-9);
        assert!((s.results_gap_lazy_s - 1.3).abs() < 1e-9);
        assert!(
            (s.results_gap_partial_s - 0.5).abs() < 1e-9 && (s.partial_tail_s - 0.5).abs() < 1e-9
        );
    }

    #[test]
    fn early_abort_when_partial_calls_end_sooner() {
        let lazy = [marks(2.0, 2.1, 2.5)];
        let partial = [Marks {
            args_chars: 30,
            ..marks(0.5, 0.6, 1.0)
        }];
        assert!(summarize(&lazy, &partial, 1).early_abort);
        // A slow lazy run alone (the machine's noise) is no early abort.
        assert!(!summarize(&lazy, &[marks(0.5, 0.6, 1.0)], 1).early_abort);
        assert!(row("v", "alone", &summarize(&lazy, &partial, 1)).contains("early abort"));
        let mut s = summarize(&lazy, &partial, 1);
        assert!(row("v", "alone", &s).contains("| n/a / n/a |"));
        assert!(
            row("v", "alone", &s).contains("± n/a |"),
            "one pair has no interval"
        );
        s.set_engine_busy(&[0.5, 0.7], &[0.9]);
        assert!((s.engine_busy_lazy.unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(s.engine_busy_partial, Some(0.9));
        assert!(row("v", "alone", &s).contains("| 60% / 90% | 0 / 0 |"));
        s.staged_kept_per_request = [0.0, 337.4];
        assert!(row("v", "alone", &s).contains("| 337 / 0 |"));
        let instant = [marks(1.0, 1.0, 1.5)];
        assert!(row("c", "alone", &summarize(&instant, &instant, 1)).contains("negligible tool"));
    }

    /// A drift that moves both runs of a pair alike leaves the paired interval narrow; an
    /// unpaired one would be as wide as the drift.
    #[test]
    fn pairs_cancel_drift() {
        let lazy = [10.0, 20.0, 30.0, 40.0];
        let partial = [9.0, 19.1, 28.9, 39.0];
        let (ci, k) = paired_ci95(&lazy, &partial, 1);
        // diffs 1.0, 0.9, 1.1, 1.0: sd 0.0816, t(3) 3.182 -> 0.130
        assert_eq!(k, 4);
        assert!((ci - 0.1299).abs() < 1e-3, "{ci}");
        // Groups of two: diffs of the group means 0.95, 1.05; t(1) 12.71, sd 0.0707.
        let (ci, k) = paired_ci95(&lazy, &partial, 2);
        assert_eq!(k, 2);
        assert!((ci - 12.706 * 0.0707 / 2f64.sqrt()).abs() < 1e-2, "{ci}");
        assert!(paired_ci95(&lazy[..1], &partial[..1], 1).0.is_nan());
    }
}
