"""bench/prompt-lookup.sh's client: prompt-lookup drafts (`--prompt-lookup N`) against plain
decoding, on the edit tasks of bench/prediction.py (output that copies a file from its
prompt, no prediction sent) and on chat questions about no file (output that copies nothing,
where lookup can only cost).

Each request goes to every server in turn (tandem without lookup, tandem with each N, and
any --other server), greedy and streamed, ROUNDS times. Prints and writes
bench/results/prompt-lookup.{json,md}: per task and server, the median decode tokens/s and
the ratio to tandem without lookup.
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intercept_table import machine  # noqa: E402
from prediction import TASKS, ask, decode_rate, utc_minute  # noqa: E402

FREE = [
    ("-", "free", "Explain how a hash map works, in a few paragraphs."),
    ("-", "free", "Write a short story about a lighthouse keeper."),
    ("-", "free", "List ten tips for writing clear Python code, with a sentence on each."),
]


def label(task):
    return task[2][:40] if task[1] == "free" else f"{task[0]}: {task[1]}"


def run_task(servers, task, rounds, max_tokens):
    runs = {name: [] for name in servers}
    for _ in range(rounds):
        for name, url in servers.items():
            runs[name].append(ask(url, task, False, max_tokens))
    return {"task": label(task), "runs": runs}


def summarize(t, base):
    rates = {n: statistics.median(decode_rate(r) for r in runs) for n, runs in t["runs"].items()}
    tokens = {n: statistics.median(r["tokens"] for r in runs) for n, runs in t["runs"].items()}
    return {"task": t["task"], "rates": rates, "tokens": tokens,
            "ratios": {n: rates[n] / rates[base] for n in rates}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, metavar="NAME=URL",
                    help="a server to send every request to; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--command", default="bench/prompt-lookup.sh")
    a = ap.parse_args()
    servers = dict(s.split("=", 1) for s in a.server)
    base = next(iter(servers))
    tasks = [run_task(servers, t, a.rounds, a.max_tokens) for t in TASKS + FREE]
    rows = [summarize(t, base) for t in tasks]
    result = {"date": utc_minute(), "machine": machine(), "command": a.command,
              "rounds": a.rounds, "max_tokens": a.max_tokens, "baseline": base,
              "summary": rows, "tasks": tasks}
    out = Path("bench/results")
    (out / "prompt-lookup.json").write_text(json.dumps(result, indent=1))
    names = list(servers)
    md = [f"# Prompt-lookup drafts ({result['date']})", "",
          f"Machine: {result['machine']}. Command: `{a.command}`. SmolLM2-135M, greedy, up to "
          f"{a.max_tokens} tokens, streamed, no `prediction` sent; each request went to every "
          f"server in turn, {a.rounds} rounds. Decode tokens/s (median; tokens after the first "
          "over the time from the first to the last), and in brackets the ratio to "
          f"`{base}`. The edit tasks are bench/prediction.py's (the output copies a file in the "
          "prompt); the last three are questions about no file.", "",
          "| task | tokens | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = [f"{r['rates'][n]:.1f} ({r['ratios'][n]:.2f}x)" for n in names]
        md.append(f"| {r['task']} | {r['tokens'][base]:.0f} | " + " | ".join(cells) + " |")
    (out / "prompt-lookup.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
