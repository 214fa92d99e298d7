"""Turns the reports of bench/compare-llama-server.sh into one JSON and a Markdown table.

Usage: compare_table.py OUT RATES LLAMA_SERVER_LABEL AGENT_RATE RESULT COMMAND MODEL: writes
RESULT.json, prints the table (COMMAND is the command line it names, MODEL the GGUF's file
name)."""
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

out, rates, ls_version, agent_rate = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4]
result, command, model = sys.argv[5], sys.argv[6], sys.argv[7]


def load(name):
    return json.loads((out / f"{name}.json").read_text())["summary"]


def figures(server):
    s, c, t = load(f"{server}-single"), load(f"{server}-c16"), load(f"{server}-ttft")
    f = {
        "single-stream decode tok/s (1 / mean ITL)": 1.0 / s["itl_s"]["mean"],
        "aggregate output tok/s, 16 streams": c["output_tok_per_s"],
        "TTFT p50, 512-token prompt (ms)": t["ttft_s"]["p50"] * 1e3,
    }
    for r in rates:
        f.update(workload(f"tool loop @ {r} req/s", load(f"{server}-tools-{r}")))
    f.update(workload(f"agent loop (400-token system prompt) @ {agent_rate} req/s", load(f"{server}-agent")))
    return f


def workload(name, w):
    return {
        f"{name}: mean latency (s)": w["latency_s"]["mean"],
        f"{name}: norm. latency (ms/token)": w["normalized_latency_s"]["mean"] * 1e3,
        f"{name}: prompt tokens prefilled (not cached)": w["prompt_tokens"] - w["cached_prompt_tokens"],
        f"{name}: errors": w["errors"],
    }


t, l = figures("tandem"), figures("llama-server")
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/Model name: *//p'"], capture_output=True, text=True).stdout.strip()
machine = f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {platform.system()}"
date = time.strftime("%Y-%m-%d")
Path(f"{result}.json").write_text(json.dumps(
    {"date": date, "machine": machine, "llama_server": ls_version, "model": model, "tandem": t,
     "llama-server": l}, indent=2))
print(f"# tandem vs llama-server ({date})\n")
print(f"Machine: {machine}. llama-server: {ls_version}. Model: {model}.")
print(f"Command: `{command}` (both servers: same GGUF, threads, 16 sequences, 32768 KV cells).\n")
print("| figure | tandem | llama-server | tandem / llama-server |")
print("|---|---|---|---|")
for k in t:
    ratio = f"{t[k] / l[k]:.2f}" if l[k] else "–"
    print(f"| {k} | {t[k]:.2f} | {l[k]:.2f} | {ratio} |")
