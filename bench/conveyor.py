#!/usr/bin/env python3
"""Partial tool execution (Conveyor) against one tandem server started with --allow-replay and
the built-in tools (bench/conveyor.sh). Each workload is a replayed chat request: the model's
forward passes are real, but its text is fixed (a tool call, then a short answer after the
result), so lazy and partial runs decode the same tokens; the tools run for real.

Workloads: code (a Python script whose statements wait on I/O, 0.25 s each), search (four
queries, run one at a time, each answered after --search-ms by the search tool's stand-in for
a remote, rate-limited service),
plan (search and python steps, one using $0), validate (eight records, the second invalid: the
tool aborts and the turn ends early), calc (negligible tool time: the control).

Per workload, REPS repetitions alternate lazy (partial_exec false) and partial requests (which
goes first alternates too); then, after a warm-up batch, REPS_LOADED rounds of 8 concurrent
requests of each mode. Times come from the stream: T_tool (lazy) =
results arrival - last argument delta; T_decode = completion latency - T_tool (lazy);
bound = min(T_decode, T_tool) / (T_decode + T_tool); gain = 1 - partial / lazy (mean latency).

Usage: bench/conveyor.py URL [--reps N] [--search-ms MS] [--out PREFIX]"""
import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import requests


def call(name, args):
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


def workloads():
    code = "\n".join(
        ["import time", "results = []"]
        + [f"time.sleep(0.25)\nresults.append({i} * {i})" for i in range(8)]
        + ["print(sum(results))"]
    )
    queries = ["lighthouse lens beam", "volcano eruption forecast", "suspension bridge cables", "honeybee waggle dance"]
    plan = {"steps": [
        {"tool": "search", "arguments": {"queries": ["glacier moraine valley"]}},
        {"tool": "python", "arguments": {"code": "import time\ntime.sleep(0.6)\nprint('tides', 2 * 2)"}},
        {"tool": "search", "arguments": {"queries": ["sourdough starter fermentation"]}},
        {"tool": "python", "arguments": {"code": "text = '''$0'''\nprint(len(text))"}},
    ]}
    people = [{"name": n, "email": f"{n.lower()}@example.org", "age": 20 + i} for i, n in enumerate(
        ["Ann", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal"])]
    people[1]["email"] = "bob-at-example"
    return {
        "code": ("python", call("python", {"code": code})),
        "search": ("search", call("search", {"queries": queries})),
        "plan": ("plan", call("plan", plan)),
        "validate": ("validate", call("validate", {"records": people})),
        "calc": ("calc", call("calc", {"expression": "(1234 + 5678) * 3 - 42 / 7 + 11 * 13 - 8 * 9 + 100 / 4"})),
    }


def run_one(url, tool, text, partial):
    body = {
        "messages": [{"role": "user", "content": "Use the tool, then answer briefly."}],
        "stream": True,
        "max_tokens": 1024,
        "server_tools": [tool],
        "replay": [text, "Done: the tool returned its result."],
        "partial_exec": partial,
    }
    t0 = time.perf_counter()
    marks = {"call_start": None, "args_end": None, "results": None}
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            now = time.perf_counter() - t0
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if not chunk.get("choices"):
                continue
            delta = chunk["choices"][0]["delta"]
            if delta.get("tool_calls") and marks["results"] is None:
                marks["call_start"] = marks["call_start"] or now
                marks["args_end"] = now
            if delta.get("tool_results"):
                marks["results"] = now
                errors = [x for x in delta["tool_results"] if x["is_error"]]
                marks["tool_error"] = bool(errors)
    marks["total"] = time.perf_counter() - t0
    return marks


def order(rep):
    """Which mode goes first alternates between repetitions."""
    return ("lazy", "partial") if rep % 2 == 0 else ("partial", "lazy")


def alone(url, tool, text, reps):
    out = {"lazy": [], "partial": []}
    for rep in range(reps):
        for mode in order(rep):
            out[mode].append(run_one(url, tool, text, mode == "partial"))
    return out


def loaded(url, tool, text, reps, n=8):
    out = {"lazy": [], "partial": []}
    with ThreadPoolExecutor(n) as pool:
        # Warm-up batch: every later batch then finds the shared prompt prefix cached.
        list(pool.map(lambda _: run_one(url, tool, text, True), range(n)))
        for rep in range(reps):
            for mode in order(rep):
                futs = [pool.submit(run_one, url, tool, text, mode == "partial") for _ in range(n)]
                out[mode].extend(f.result() for f in futs)
    return out


def summarize(runs):
    lazy = [m["total"] for m in runs["lazy"]]
    part = [m["total"] for m in runs["partial"]]
    t_tool = statistics.mean(m["results"] - m["args_end"] for m in runs["lazy"])
    t_decode = statistics.mean(lazy) - t_tool
    bound = min(t_decode, t_tool) / (t_decode + t_tool)
    gain = 1 - statistics.mean(part) / statistics.mean(lazy)
    return {
        "lazy_mean_s": round(statistics.mean(lazy), 3), "partial_mean_s": round(statistics.mean(part), 3),
        "lazy_p50_s": round(statistics.median(lazy), 3), "partial_p50_s": round(statistics.median(part), 3),
        "t_decode_s": round(t_decode, 3), "t_tool_s": round(t_tool, 3),
        "bound": round(bound, 3), "gain": round(gain, 3),
        "gain_over_bound": round(gain / bound, 2) if bound > 0.01 else None,
        "n": len(lazy),
    }


def svg_timeline(examples, path):
    """One row per workload and mode: decode (blue) and tool (orange) activity of one request."""
    rows = [(w, mode, m) for w, modes in examples.items() for mode, m in modes.items()]
    span = max(m["total"] for _, _, m in rows)
    W, H, left, row_h = 900, 40 + 26 * len(rows), 150, 26
    sx = lambda t: left + (W - left - 20) * t / span
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="16">decode (blue) and tool (orange) per request; seconds 0..{span:.1f}</text>']
    for i, (w, mode, m) in enumerate(rows):
        y = 28 + i * row_h
        parts.append(f'<text x="4" y="{y + 14}">{w} {mode}</text>')
        tool_start = m["call_start"] if mode == "partial" else m["args_end"]
        segs = [(0, m["args_end"], "#4477cc", 0), (tool_start, m["results"], "#ee8833", 10),
                (m["results"], m["total"], "#4477cc", 0)]
        for a, b, color, dy in segs:
            parts.append(f'<rect x="{sx(a):.1f}" y="{y + dy}" width="{max(sx(b) - sx(a), 1):.1f}" height="9" fill="{color}"/>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--reps-loaded", type=int, default=3)
    ap.add_argument("--search-ms", type=int, default=600)
    ap.add_argument("--out", default="bench/results/conveyor")
    a = ap.parse_args()
    for tool, text in workloads().values():  # warm-up: python start, caches
        run_one(a.url, tool, text, True)
    results, examples = {}, {}
    for w, (tool, text) in workloads().items():
        one = alone(a.url, tool, text, a.reps)
        eight = loaded(a.url, tool, text, a.reps_loaded)
        results[w] = {"alone": summarize(one), "x8": summarize(eight)}
        examples[w] = {"lazy": one["lazy"][-1], "partial": one["partial"][-1]}
        print(w, json.dumps(results[w]), flush=True)
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": f"bench/conveyor.sh (REPS={a.reps}, REPS_LOADED={a.reps_loaded}, SEARCH_MS={a.search_ms})",
            "model": "SmolLM2-135M-Instruct Q4_1"}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": results, "timeline_examples": examples}, f, indent=1)
    svg_timeline(examples, a.out + "-timeline.svg")
    lines = [f"# Partial tool execution (Conveyor): lazy vs partial",
             "", f"{meta['date']}, {meta['machine']}, {meta['model']}; `{meta['command']}`.",
             "Mean completion latency of replayed requests (same tokens both ways, real tools); "
             "gain = 1 - partial/lazy; bound = min(T_decode, T_tool)/(T_decode + T_tool) from the lazy runs.", "",
             "| workload | load | lazy s | partial s | T_decode s | T_tool s | bound | gain | gain/bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for w, r in results.items():
        for load, s in r.items():
            lines.append(f"| {w} | {load} | {s['lazy_mean_s']} | {s['partial_mean_s']} | {s['t_decode_s']} | "
                         f"{s['t_tool_s']} | {s['bound']} | {s['gain']:.1%} | {s['gain_over_bound']} |")
    lines += ["", "Timeline of one request per workload: `conveyor-timeline.svg`."]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
