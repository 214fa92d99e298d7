#!/usr/bin/env python3
"""How much of a loaded conveyor run's round-to-round spread is the host's speed.

Input: one `tandem bench --workload conveyor:NAME --rounds R` report (JSON) and the step log of
the server it ran against, started with `RUST_LOG=info,tandem_engine=trace` (gzip'd or not;
bench/step_speed.py reads the same log). The bench runs each round as two back-to-back halves,
lazy and partial (which goes first alternates); the engine goes idle between halves, which the
log shows as an empty step after a one-row step. This script cuts the log there, and for each
half measures the host's speed as the prefill cost per token of its large steps (≥ 256
tokens: the tool results appended on resume, prefilled after the tools are done, so no tool
shares the cores then, lazy or partial).

It prints, per round: both halves' mean latency, the gain, the idle gap before the results,
the median 8-row decode step, the prefill ms/token of each half and their ratio, and each
half's forward time. Then the least-squares line of the round's gain against that ratio: its
value at a ratio of 1 is the gain with both halves on an equally fast host. This is an
analysis of the spread, not the bench's figure: the bench's gain (and its interval) stays the
plain mean over pairs.

Usage: python3 bench/conveyor_host.py WORKLOAD REPORT.json STEPS.log[.gz] [--load x8]
"""

import argparse
import json
import os
import statistics as st
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The same step-log parser and step figures, and the same report reader.
from conveyor_pool import pairs_in  # noqa: E402
from step_speed import steps, summary  # noqa: E402

BIG = 256  # tokens: a results prefill step, not a decode step


def halves(rows, count):
    """The last `count` idle-to-idle stretches of the step log, in order."""
    ends = [i for i in range(1, len(rows)) if rows[i][1] == 0 and rows[i - 1][1] == 1]
    if len(ends) < count + 1:
        sys.exit(f"the log has {len(ends)} idle points, fewer than the {count + 1} needed")
    ends = ends[-(count + 1):]
    return [rows[a + 1 : b + 1] for a, b in zip(ends, ends[1:])]


def measure(seg):
    decode, _, per_token = summary(seg, 8, BIG)
    gaps = [b[0] - b[4] / 1e3 - a[0] for a, b in zip(seg, seg[1:])]
    return dict(
        decode=st.median(decode) if decode else float("nan"),
        prefill=per_token if per_token is not None else float("nan"),
        forward=sum(r[4] for r in seg) / 1e3,
        gap=max(gaps, default=0.0),
    )


def fit(xs, ys):
    """Least squares y = a + b x, and the correlation."""
    mx, my = st.mean(xs), st.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b, st.correlation(xs, ys)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workload")
    p.add_argument("report")
    p.add_argument("steps")
    p.add_argument("--load", default="x8")
    a = p.parse_args()
    with open(a.report) as f:
        report = json.load(f)
    pairs = pairs_in(report, a.workload, a.load)
    if pairs is None:
        sys.exit(f"{a.report}: no {a.workload} {a.load} runs")
    rounds = len(pairs)
    bound = dict(report["results"][a.workload])[a.load]["bound"]
    segs = [measure(s) for s in halves(steps(a.steps), 2 * rounds)]
    print("| round | lazy s | partial s | gain | idle before results, lazy / partial s | "
          "8-row decode ms, lazy / partial | prefill ms/token, lazy / partial | ratio | "
          "forward s, lazy / partial |")
    print("|---|---|---|---|---|---|---|---|---|")
    xs, ys, matched = [], [], []
    for r in range(rounds):
        first_partial = r % 2 == 1  # the bench's order: lazy first in even rounds
        h = {first_partial: segs[2 * r], not first_partial: segs[2 * r + 1]}
        lm, pm = (st.mean(x["total"] for x in half) for half in pairs[r])
        gain, ratio = 1 - pm / lm, h[True]["prefill"] / h[False]["prefill"]
        xs.append(ratio - 1)
        ys.append(gain)
        decode_ratio = h[True]["decode"] / h[False]["decode"]
        if abs(ratio - 1) <= 0.02 and abs(decode_ratio - 1) <= 0.02:
            matched.append((gain, h[True]["forward"] - h[False]["forward"]))
        print(f"| {r} | {lm:.1f} | {pm:.1f} | {100 * gain:+.1f}% | {h[False]['gap']:.2f} / "
              f"{h[True]['gap']:.2f} | {h[False]['decode']:.1f} / {h[True]['decode']:.1f} | "
              f"{h[False]['prefill']:.2f} / {h[True]['prefill']:.2f} | {ratio:.3f} | "
              f"{h[False]['forward']:.1f} / {h[True]['forward']:.1f} |")
    a0, b, r = fit(xs, ys)
    print(f"\nMean of the rounds' gains {100 * st.mean(ys):.1f}% (bound {100 * bound:.1f}%, "
          f"gain/bound {st.mean(ys) / bound:.2f}).")
    print(f"Gain against the host-speed ratio (partial half's prefill ms/token over the lazy "
          f"half's): gain = {100 * a0:.1f}% {'-' if b < 0 else '+'} {abs(b):.2f} x (ratio - 1), "
          f"correlation {r:.2f} ({100 * r * r:.0f}% of the variance).")
    print(f"At a ratio of 1 (both halves on an equally fast host): {100 * a0:.1f}%, "
          f"{a0 / bound:.2f} of the bound.")
    if matched:
        gains, extra = [g for g, _ in matched], [f for _, f in matched]
        print(f"The {len(matched)} rounds whose halves ran within 2% of each other's speed in "
              f"both the decode and the prefill: mean gain {100 * st.mean(gains):.1f}%, "
              f"{st.mean(gains) / bound:.2f} of the bound; the partial half's forward time "
              f"minus the lazy half's {min(extra):+.1f} to {max(extra):+.1f} s "
              f"(mean {st.mean(extra):+.2f}).")


if __name__ == "__main__":
    main()
