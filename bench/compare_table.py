"""Turns the reports of a side-by-side comparison (bench/compare-llama-server.sh,
bench/ab-tandem.sh: the steps of `compare_steps` in bench/lib.sh, each run against two servers
A and B) into one JSON and a Markdown table of A's figures, B's and their ratio.

Usage: compare_table.py --out DIR --rates RATES --agent-rate R --result PATH --command CMD
--model GGUF --a NAME --b NAME --title TITLE --setup TEXT [--about KEY=VALUE ...]: writes
PATH.json (each server's figures under its name, and each --about pair), prints the table.
Steps that did not run (`STEPS`) have no rows; repeated tool-loop runs (`REPEATS`) have a row
each."""
import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

from intercept_table import machine


def args():
    p = argparse.ArgumentParser()
    for name in ("out", "rates", "agent-rate", "result", "command", "model", "a", "b", "title", "setup"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--about", action="append", default=[], help="KEY=VALUE kept in the JSON and the header")
    return p.parse_args()


def figures(out, server, rates, agent_rate):
    def load(step):
        path = out / f"{server}-{step}.json"
        return json.loads(path.read_text())["summary"] if path.exists() else None

    def in_turns(step):
        """The summaries of the one-request steps STEP-1, STEP-2, ... (`in_turns` in lib.sh)."""
        return list(itertools.takewhile(bool, (load(f"{step}-{k}") for k in itertools.count(1))))

    f = {}
    itls = [s["itl_s"]["mean"] for s in in_turns("single")]
    if itls:
        f["single-stream decode tok/s (1 / mean ITL), servers in turns"] = 1.0 / statistics.mean(itls)
    if c := load("c16"):
        f["aggregate output tok/s, 16 streams"] = c["output_tok_per_s"]
    ttfts = [t["ttft_s"]["mean"] for t in in_turns("ttft")]
    if ttfts:
        f[f"TTFT median of {len(ttfts)}, 512-token prompt, servers in turns (ms)"] = statistics.median(ttfts) * 1e3
    for r in rates:
        f.update(workload(f"tool loop @ {r} req/s", load(f"tools-{r}")))
        for k in itertools.count(2):
            if not (w := load(f"tools-{r}-run{k}")):
                break
            f.update(workload(f"tool loop @ {r} req/s, run {k}", w))
    f.update(workload(f"agent loop (400-token system prompt) @ {agent_rate} req/s", load("agent")))
    return f


def workload(name, w):
    if w is None:
        return {}
    f = {
        f"{name}: mean latency (s)": w["latency_s"]["mean"],
        f"{name}: norm. latency (ms/token)": w["normalized_latency_s"]["mean"] * 1e3,
        f"{name}: prompt tokens prefilled (not cached)": w["prompt_tokens"] - w["cached_prompt_tokens"],
        f"{name}: errors": w["errors"],
    }
    # tandem's own counters (none from llama-server): time in steps, llama.cpp ubatches per step.
    if (server := w.get("server")) and "passes_per_step" in server:
        f[f"{name}: engine forward time (s)"] = server["forward_s"]
        f[f"{name}: forward passes per step"] = server["passes_per_step"]
    return f


def main():
    a = args()
    rates = a.rates.split()
    fa, fb = (figures(Path(a.out), name, rates, a.agent_rate) for name in (a.a, a.b))
    about = dict(pair.split("=", 1) for pair in a.about)
    date = time.strftime("%Y-%m-%d")
    Path(f"{a.result}.json").write_text(json.dumps(
        {"date": date, "machine": machine(), **about, "model": a.model, a.a: fa, a.b: fb}, indent=2))
    print(f"# {a.title} ({date})\n")
    print(f"Machine: {machine()}. " + "".join(f"{k}: {v}. " for k, v in about.items()) + f"Model: {a.model}.")
    print(f"Command: `{a.command}` ({a.setup}).\n")
    print(f"| figure | {a.a} | {a.b} | {a.a} / {a.b} |")
    print("|---|---|---|---|")
    for k in fa | fb:
        va, vb = fa.get(k), fb.get(k)
        ratio = f"{va / vb:.2f}" if va is not None and vb else "–"
        cell = lambda v: "–" if v is None else f"{v:.2f}"
        print(f"| {k} | {cell(va)} | {cell(vb)} | {ratio} |")


if __name__ == "__main__":
    main()
