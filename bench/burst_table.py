"""Turns the reports of bench/shared-prefix-burst.sh into one JSON and a Markdown table.

Per server and burst size, over the rounds: mean and p50 time to first token, mean completion
latency, prompt tokens prefilled (not cached) per burst; and each figure of tandem against
tandem without sharing (same run) and against llama-server."""
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

out, servers, bursts, rounds, ls_label, cmd, dest = sys.argv[1:8]
out, servers, bursts, rounds = Path(out), servers.split(), [int(b) for b in bursts.split()], int(rounds)


def summaries(server, n):
    return [json.loads((out / f"{server}-{n}-{r}.json").read_text())["summary"] for r in range(1, rounds + 1)]


def figures(server, n):
    s = summaries(server, n)
    mean = lambda f: statistics.mean(f(x) for x in s)
    return {
        "ttft_mean_s": mean(lambda x: x["ttft_s"]["mean"]),
        "ttft_p50_s": mean(lambda x: x["ttft_s"]["p50"]),
        "latency_mean_s": mean(lambda x: x["latency_s"]["mean"]),
        "prefilled_tokens": mean(lambda x: x["prompt_tokens"] - x["cached_prompt_tokens"]),
        "prompt_tokens": mean(lambda x: x["prompt_tokens"]),
        "errors": sum(x["errors"] for x in s),
    }


res = {n: {s: figures(s, n) for s in servers} for n in bursts}
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/Model name: *//p'"], capture_output=True, text=True).stdout.strip()
machine = f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {platform.system()}"
date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
Path(dest + ".json").write_text(json.dumps(
    {"date": date, "machine": machine, "command": cmd, "llama_server": ls_label, "rounds": rounds,
     "results": {str(n): v for n, v in res.items()}}, indent=1))

lines = [f"# Bursts sharing one system prompt ({date})", "",
         f"Machine: {machine}. Model: SmolLM2-135M-Instruct Q4_1. llama-server: {ls_label}.",
         f"Command: `{cmd}`. Each figure is the mean over {rounds} bursts (each burst: all requests "
         "sent at once, a system prompt no server had seen).", "",
         "| burst | server | TTFT mean s | TTFT p50 s | latency mean s | prompt tokens prefilled / sent | errors |",
         "|---|---|---|---|---|---|---|"]
for n in bursts:
    for s in servers:
        f = res[n][s]
        lines.append(f"| {n} | {s} | {f['ttft_mean_s']:.2f} | {f['ttft_p50_s']:.2f} | {f['latency_mean_s']:.2f} | "
                     f"{f['prefilled_tokens']:.0f} / {f['prompt_tokens']:.0f} | {f['errors']} |")
lines += ["", "Ratios (other server's figure / tandem's; above 1: tandem faster):", "",
          "| burst | vs | TTFT mean | latency mean |", "|---|---|---|---|"]
for n in bursts:
    t = res[n]["tandem"]
    for s in servers[1:]:
        o = res[n][s]
        lines.append(f"| {n} | {s} | {o['ttft_mean_s'] / t['ttft_mean_s']:.2f}x | {o['latency_mean_s'] / t['latency_mean_s']:.2f}x |")
Path(dest + ".md").write_text("\n".join(lines) + "\n")
