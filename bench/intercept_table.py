"""Table, JSON and SVG plot for bench/intercept-policies.sh.

Usage: intercept_table.py RUN_DIR "RATES" SCALE SATURATED OUT_PREFIX [COMMAND [SETUP]]
Reads RUN_DIR/NAME-RATE.json bench reports (or `tandem simulate` reports, which have the same
shape); writes OUT_PREFIX.{json,md,svg}. COMMAND is the command line the Markdown names
(default: bench/intercept-policies.sh), SETUP the model and server sizes it states.
"""
import glob
import json
import os
import platform
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cost_profile_median import profiles  # noqa: E402  (the parser of the `costs:` line)

NAMES = ["min-waste", "preserve", "swap", "discard", "llama-server"]
COLORS = {"min-waste": "#d62728", "preserve": "#1f77b4", "swap": "#2ca02c",
          "discard": "#7f7f7f", "llama-server": "#9467bd"}


def load(run_dir, rates):
    """Each run's summary; per completed request (by id): latency, tool time, server time
    (latency minus tool time) and normalized latency (server time per output token); and each
    run's first errors (the bench reports keep up to 20), as (name, rate, errors)."""
    runs, latencies, errors = {}, {}, []
    for name in NAMES:
        for r in rates:
            path = os.path.join(run_dir, f"{name}-{r}.json")
            if os.path.exists(path):
                report = json.load(open(path))
                runs.setdefault(name, {})[r] = report["summary"]
                errors.append((name, r, report.get("first_errors", [])))
                done = [q for q in report.get("requests", []) if q["ok"]]
                server = {q["id"]: max(q["latency_s"] - q["tool_time_s"], 0) for q in done}
                latencies.setdefault(name, {})[r] = {
                    "latency": {q["id"]: q["latency_s"] for q in done},
                    "tool": {q["id"]: q["tool_time_s"] for q in done},
                    "server": server,
                    "normalized": {q["id"]: server[q["id"]] / q["output_tokens"]
                                   for q in done if q["output_tokens"] > 0}}
    return runs, latencies, errors


def paired_ratio(num, den, draws=4000, seed=1):
    """Ratio of mean latencies num/den over the requests both runs completed (same workload
    and seed, so the same requests), with a 95% bootstrap interval that resamples requests
    as pairs: (ratio, low, high), or None with fewer than two common requests."""
    ids = sorted(set(num) & set(den))
    if len(ids) < 2:
        return None
    a, b = [num[i] for i in ids], [den[i] for i in ids]
    rng = random.Random(seed)
    ratios = []
    for _ in range(draws):
        pick = [rng.randrange(len(ids)) for _ in ids]
        ratios.append(sum(a[j] for j in pick) / sum(b[j] for j in pick))
    ratios.sort()
    return sum(a) / sum(b), ratios[int(0.025 * draws)], ratios[int(0.975 * draws) - 1]


def first_errors(errors):
    """Markdown lines naming each run's failed requests' first errors (`load`'s third
    value), so a failure is read as the server's or the client's."""
    lines = [f"- {name} @ {r}: {e}" for name, r, es in errors for e in es[:3]]
    return ["Failed requests (first errors):", *lines, ""] if lines else []


def sustained(summary, limit):
    return summary["errors"] == 0 and summary["normalized_latency_s"]["mean"] <= limit


def targets(runs, latencies, rates, limit):
    ok = lambda n: [r for r in rates if r in runs.get(n, {}) and sustained(runs[n][r], limit)]
    out = {}
    d_ok, m_ok = ok("discard"), ok("min-waste")
    if d_ok and m_ok:
        top = d_ok[-1]
        d, m = runs["discard"][top], runs["min-waste"][top]
        out["discard_highest_sustained_rate"] = float(top)
        out["norm_latency_ratio_discard_over_min_waste"] = (
            d["normalized_latency_s"]["mean"] / m["normalized_latency_s"]["mean"])
        out["sustained_rate_ratio_min_waste_over_discard"] = float(m_ok[-1]) / float(top)
        # min-waste sustained every rate it ran: its highest sustained rate lies beyond the
        # grid, so the ratio only bounds the true one from below.
        out["sustained_rate_ratio_is_a_lower_bound"] = len(m_ok) == len(runs["min-waste"])
        p = paired_ratio(latencies["discard"][top]["normalized"],
                         latencies["min-waste"][top]["normalized"])
        if p:
            out["norm_latency_ratio_discard_over_min_waste_paired_ci95"] = {
                "ratio": p[0], "low": p[1], "high": p[2]}
    both = [r for r in rates if r in runs.get("discard", {}) and r in runs.get("min-waste", {})]
    by_rate = {r: paired_ratio(latencies["discard"][r]["normalized"], latencies["min-waste"][r]["normalized"])
               for r in both}
    if by_rate:
        out["norm_latency_ratio_discard_over_min_waste_by_rate_paired_ci95"] = {
            r: {"ratio": p[0], "low": p[1], "high": p[2]} for r, p in by_rate.items() if p}
    common = [r for r in rates if r in runs.get("llama-server", {}) and r in runs.get("min-waste", {})]
    if common:
        out["mean_latency_ratio_llama_server_over_min_waste"] = {
            r: runs["llama-server"][r]["latency_s"]["mean"] / runs["min-waste"][r]["latency_s"]["mean"]
            for r in common}
        pairs = {r: paired_ratio(latencies["llama-server"][r]["latency"],
                                 latencies["min-waste"][r]["latency"]) for r in common}
        out["mean_latency_ratio_llama_server_over_min_waste_paired_ci95"] = {
            r: {"ratio": p[0], "low": p[1], "high": p[2]} for r, p in pairs.items() if p}
        out.update(server_part(latencies, common))
    return out


def server_part(latencies, rates):
    """The tools' share of min-waste's mean latency, and llama-server over min-waste on the
    rest (latency minus tool time: the part a server can shorten), paired per request."""
    out = {"tool_share_of_min_waste_latency": {}, "server_time_ratio_llama_server_over_min_waste_paired_ci95": {}}
    for r in rates:
        m = latencies["min-waste"][r]
        if m["latency"]:
            out["tool_share_of_min_waste_latency"][r] = sum(m["tool"].values()) / sum(m["latency"].values())
        p = paired_ratio(latencies["llama-server"][r]["server"], m["server"])
        if p:
            out["server_time_ratio_llama_server_over_min_waste_paired_ci95"][r] = {
                "ratio": p[0], "low": p[1], "high": p[2]}
    return out


def table(runs, rates, limit):
    rows = ["| server / policy | rate req/s | ok/err | norm. latency s/token mean | latency s mean / p99 | completed req/s | recompute share of forward time | swapped out MB |",
            "|---|---|---|---|---|---|---|---|"]
    for name in NAMES:
        for r in rates:
            s = runs.get(name, {}).get(r)
            if s is None:
                continue
            srv = s.get("server") or {}
            share = f"{srv['recompute_share'] * 100:.1f}%" if srv else "n/a"
            swap = f"{srv['swap_out_bytes'] / 1e6:.0f}" if srv else "n/a"
            mark = "" if sustained(s, limit) else " (saturated)"
            rows.append(
                f"| {name} | {r}{mark} | {s['completed']}/{s['errors']} | "
                f"{s['normalized_latency_s']['mean']:.3f} | {s['latency_s']['mean']:.1f} / "
                f"{s['latency_s']['p99']:.1f} | {s['requests_per_s']:.2f} | {share} | {swap} |")
    return "\n".join(rows)


def svg(runs, rates):
    w, h, pad = 640, 400, 60
    xs = [float(r) for r in rates]
    ys = [s["normalized_latency_s"]["mean"] for n in runs.values() for s in n.values()]
    ymax = max(ys) * 1.1 if ys else 1
    X = lambda v: pad + (v - min(xs)) / ((max(xs) - min(xs)) or 1) * (w - 2 * pad)
    Y = lambda v: h - pad - v / ymax * (h - 2 * pad)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<line x1="{pad}" y1="{h-pad}" x2="{w-pad}" y2="{h-pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h-pad}" stroke="black"/>',
           f'<text x="{w/2}" y="{h-15}" text-anchor="middle">arrival rate (requests/s)</text>',
           f'<text x="15" y="{h/2}" transform="rotate(-90 15 {h/2})" text-anchor="middle">normalized latency (s/token)</text>']
    for r in rates:
        out.append(f'<text x="{X(float(r))}" y="{h-pad+15}" text-anchor="middle">{r}</text>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{pad-5}" y="{Y(v)+4}" text-anchor="end">{v:.2f}</text>')
    for k, name in enumerate(NAMES):
        pts = [(float(r), s["normalized_latency_s"]["mean"]) for r, s in runs.get(name, {}).items()]
        if not pts:
            continue
        pts.sort()
        path = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        c = COLORS[name]
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        out += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{c}"/>' for x, y in pts]
        out.append(f'<text x="{w-pad-100}" y="{pad+15*k}" fill="{c}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


def cpu_name():
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often just the arch)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """The machine line of a result: CPU model and core count, and the GPUs nvidia-smi lists."""
    return f"{cpu_name()}, {os.cpu_count()} cores{gpu_names()}"


def gpu_names():
    """", GPU: NAME" for each GPU nvidia-smi lists; empty where there is none or no nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return "".join(f", GPU: {name.strip()}" for name in out.splitlines() if name.strip())


def machine_speed(run_dir):
    """The range of tandem's startup-profiled forward time per batch token over the runs'
    servers (their `costs:` log lines), or None without logs: this shared machine's speed
    drifts, so a table says how fast it was while it ran."""
    logs = sorted(glob.glob(os.path.join(run_dir, "tandem-*.log")))
    per_token = [float(p[1]) for p in profiles(logs)]
    if not per_token:
        return None
    return f"tandem's startup profiles: {min(per_token):.2f}–{max(per_token):.2f} ms a batch token over {len(per_token)} servers"


def main():
    run_dir, rates, scale, limit, prefix = sys.argv[1], sys.argv[2].split(), sys.argv[3], float(sys.argv[4]), sys.argv[5]
    command = sys.argv[6] if len(sys.argv) > 6 else "bench/intercept-policies.sh"
    setup = sys.argv[7] if len(sys.argv) > 7 else "model SmolLM2-135M-Instruct Q4_1 · 16 sequences × 2048 cells"
    simulated = "simulate" in command
    runs, latencies, errors = load(run_dir, rates)
    t = targets(runs, latencies, rates, limit)
    machine = f"{cpu_name()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    speed = None if simulated else machine_speed(run_dir)
    if speed:
        machine += f" ({speed})"
    json.dump({"machine": machine, "scale": scale, "saturated_above_s_per_token": limit,
               "targets": t, "runs": runs}, open(prefix + ".json", "w"), indent=1)
    open(prefix + ".svg", "w").write(svg(runs, rates))
    title = "Interception policies, mixed augmentation workload" + (", simulated" if simulated else "")
    md = [f"# {title} (scale {scale})", "",
          f"Command: `{command}` · machine: {machine} · {setup} ·",
          f"a run is 'saturated' when a request failed or mean normalized latency exceeds {limit} s/token "
          + ("(every rate was run: SWEEP_ALL)." if "SWEEP_ALL=1" in command
           else "(the sweep of that server stops there)."), "",
          table(runs, rates, limit), "", *first_errors(errors), "Targets:", "```", json.dumps(t, indent=1), "```", "",
          f"![normalized latency against rate]({os.path.basename(prefix)}.svg)"]
    open(prefix + ".md", "w").write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
