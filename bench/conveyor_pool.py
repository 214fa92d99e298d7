#!/usr/bin/env python3
"""Pool several `tandem bench --workload conveyor` reports for one workload and load.

One run of 12–24 rounds under load gives gain/bound with an interval of about ±0.25 on this
shared 2-core machine, whose speed drifts by a fifth for minutes at a time
(bench/step_speed.py). This pools the lazy/partial pairs of several runs (their JSON reports'
per-request marks) and computes the figures as the bench does (crates/server/src/bench/
conveyor/summary.rs): gain = 1 - mean partial / mean lazy, with a paired Student-t 95%
interval over the pairs; bound = min(T_decode, T_tool) / (T_decode + T_tool) from the lazy runs.

Each row also gives the time from the results to the end of the request (the result's
prefill and the answer), lazy and partial. It also prints the ceiling the tool's own tail sets: a partial run still waits `partial_wait`
after the call is complete (the last piece's tool time), so even with no extra forward work
partial execution saves at most T_tool - partial_wait, i.e. gain/bound at most
1 - partial_wait / T_tool when the tool is the shorter side. Reports made with partial
results (the server prefills the known start of a tool's result during that wait; their
`staged_kept_per_request`) are told apart: there the wait's time is not all lost, and the
ceiling does not bind.

Usage: python3 bench/conveyor_pool.py WORKLOAD LOAD REPORT.json...   (LOAD: alone or x8)
"""

import json
import math
import statistics as st
import sys

# Two-sided 95% Student t quantiles by degrees of freedom; between entries the smaller df's
# (a slightly wider interval), beyond 120 the normal's.
T975 = dict(enumerate([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042],
                      start=1)) | {40: 2.021, 60: 2.000, 120: 1.980}


def t975(df):
    if df <= 0:
        return math.nan
    keys = [k for k in sorted(T975) if k <= df]
    return T975[keys[-1]] if df <= 120 else 1.960


def pairs_in(report, workload, load):
    """A loaded report's lazy/partial pairs, [(lazy marks, partial marks)] one per repetition
    (alone) or round (under load), in the order they ran; None when it lacks them."""
    for name, m in report["marks"].get(workload, []):
        if name == load and m["lazy"]:
            group = 1 if load == "alone" else int(load.lstrip("x"))
            lazy, part = m["lazy"], m["partial"]
            return [(lazy[i:i + group], part[i:i + group]) for i in range(0, len(lazy), group)]
    return None


def staged_in(report, workload, load):
    """Tool-result tokens a partial request of the report had prefilled ahead of its resume
    (partial results), or 0 for reports made before them."""
    for name, summary in report["results"].get(workload, []):
        if name == load:
            return summary.get("staged_kept_per_request", [0.0, 0.0])[1]
    return 0.0


def figures(pairs):
    """The bench's figures over `pairs`: [(lazy marks, partial marks)], one per pair."""
    lazy = [x for l, _ in pairs for x in l]
    part = [x for _, p in pairs for x in p]
    lazy_mean = st.mean(x["total"] for x in lazy)
    part_mean = st.mean(x["total"] for x in part)
    t_tool = st.mean(x["tool_wait"] for x in lazy)
    t_decode = lazy_mean - t_tool
    bound = min(t_decode, t_tool) / (t_decode + t_tool)
    gain = 1 - part_mean / lazy_mean
    diffs = [st.mean(x["total"] for x in l) - st.mean(x["total"] for x in p) for l, p in pairs]
    half = t975(len(diffs) - 1) * st.stdev(diffs) / math.sqrt(len(diffs)) / lazy_mean
    tail = st.mean(x["tool_wait"] for x in part)
    # From the results to the end: the result's prefill and the answer's decode.
    after = [st.mean(x["total"] - x["results"] for x in xs) for xs in (lazy, part)]
    ceiling = 1 - tail / t_tool if t_tool <= t_decode else math.nan
    return dict(pairs=len(pairs), lazy=lazy_mean, partial=part_mean, bound=bound, gain=gain,
                half=half, ratio=gain / bound, low=(gain - half) / bound,
                high=(gain + half) / bound, tail=tail, t_tool=t_tool, ceiling=ceiling,
                after_lazy=after[0], after_partial=after[1])


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    workload, load, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    pooled, staged = [], []
    print("| report | pairs | gain ± 95% | bound | gain/bound (interval) | results to end, lazy / partial s |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as fh:
            report = json.load(fh)
        pairs = pairs_in(report, workload, load)
        staged.append(staged_in(report, workload, load))
        if pairs is None:
            print(f"| {path} | no {workload} {load} runs | | | | |")
            continue
        pooled += pairs
        f = figures(pairs)
        print(f"| {path} | {f['pairs']} | {100 * f['gain']:.1f}% ± {100 * f['half']:.1f} | "
              f"{100 * f['bound']:.1f}% | {f['ratio']:.2f} ({f['low']:.2f}–{f['high']:.2f}) | "
              f"{f['after_lazy']:.3f} / {f['after_partial']:.3f} |")
    if len(pooled) < 2:
        sys.exit("fewer than two pairs: nothing to pool")
    f = figures(pooled)
    print(f"| **pooled** | {f['pairs']} | {100 * f['gain']:.1f}% ± {100 * f['half']:.1f} | "
          f"{100 * f['bound']:.1f}% | **{f['ratio']:.2f}** ({f['low']:.2f}–{f['high']:.2f}) | "
          f"{f['after_lazy']:.3f} / {f['after_partial']:.3f} |")
    print(f"\nCeiling from the tool's tail: partial runs still wait {f['tail']:.3f} s of "
          f"T_tool {f['t_tool']:.3f} s after the call is complete, so gain/bound ≤ "
          f"{f['ceiling']:.2f} unless partial execution also cuts forward work.")
    if any(staged):
        print(f"With partial results the partial runs staged {max(staged):.0f} tokens of their "
              "result a request: their prefill starts during that wait, so the wait is not all "
              "lost and this ceiling does not bind.")


if __name__ == "__main__":
    main()
