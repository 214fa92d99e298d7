#!/usr/bin/env python3
"""A real policy sweep (bench/intercept-policies.sh's JSON) against simulations of the same
workload (bench/simulate-policies.sh's JSON), as a Markdown table: normalized latency, forward
time and recomputed tokens per policy and rate, and the discard ÷ min-waste ratio.
Usage: bench/sim_vs_real.py REAL.json SIM.json [SIM_BASELINE.json]
With a baseline simulation (e.g. without the attention price), its figures come second."""
import json
import sys


def runs(path):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    return d["runs"], d["targets"].get("norm_latency_ratio_discard_over_min_waste_by_rate_paired_ci95", {})


def cell(values, fmt):
    return " / ".join(fmt.format(v) for v in values)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    loaded = [runs(p) for p in sys.argv[1:]]
    names = "real / sim" + (" / baseline sim" if len(loaded) == 3 else "")
    print(f"| policy @ rate | norm. latency s/token {names} | forward s {names} "
          f"| sim ÷ real forward | recomputed tokens real / sim | discard ÷ min-waste {names} |")
    print("|---|---|---|---|---|---|")
    real = loaded[0][0]
    for policy, by_rate in real.items():
        for rate in by_rate:
            rows = [l[0].get(policy, {}).get(rate) for l in loaded]
            if any(x is None for x in rows):
                continue
            lat = [x["normalized_latency_s"]["mean"] for x in rows]
            fwd = [x["server"]["forward_s"] for x in rows]
            ratio_of = [f"{fwd[i] / fwd[0]:.2f}" for i in range(1, len(fwd))]
            rec = [rows[0]["server"]["recomputed_tokens"], rows[1]["server"]["recomputed_tokens"]]
            ratios = ""
            if policy == "discard":
                rs = [l[1].get(rate, {}).get("ratio") for l in loaded]
                if all(v is not None for v in rs):
                    ratios = cell(rs, "{:.1f}")
            print(f"| {policy} @ {rate} | {cell(lat, '{:.3f}')} | {cell(fwd, '{:.1f}')} "
                  f"| {' / '.join(ratio_of)} | {rec[0]:,} / {rec[1]:,} | {ratios} |")


if __name__ == "__main__":
    main()
