"""bench/json-layout.sh's client: JSON output laid out compact (`--json-layout compact`, the
default) against indented (`--json-layout indented`), under a JSON schema.

Tasks: copying an indented JSON config (bench/workloads/edits/service.json) under its schema,
once with the file as the `prediction` (tandem servers only) and once without (drafts then
come from prompt lookup, or llama-server's n-gram drafts); and three chat questions answered
under a schema (bench/workloads/json/), where nothing is copied and an indented layout only
adds tokens. Each request goes to every server in turn, greedy and streamed, ROUNDS times.
Prints and writes bench/results/json-layout.{json,md}: per task and server, median latency,
output tokens and decode tokens/s, how many outputs parse as JSON, and for the copy how many
are the file itself; and on tandem, the engine steps, forward time and grammar-mask time
each request took (from /metrics).
"""
import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intercept_table import machine  # noqa: E402
from metrics import counters  # noqa: E402
from prediction import EDITS, ask, decode_rate, utc_minute  # noqa: E402

COPY = ("service.json", "json", "The same file, unchanged:")
FREE = [
    ("person.schema.json", "free-json", "Describe a fictional person: name, age, city, hobbies."),
    ("recipe.schema.json", "free-json", "Give me a simple pancake recipe."),
    ("city.schema.json", "free-json", "Tell me about Paris: its country, population and landmarks."),
]


def parses(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


# tandem's counters read around each request: engine steps, forward time, grammar-mask time.
COUNTERS = ["tandem_step_duration_seconds_count", "tandem_forward_microseconds_total",
            "tandem_constraint_mask_microseconds_total"]


def ask_counted(url, tandem, task, predict, max_tokens):
    """`ask`, with the counters' growth over the request on a tandem server (it runs alone)."""
    before = counters(url, COUNTERS) if tandem else None
    r = ask(url, task, predict, max_tokens)
    if tandem:
        after = counters(url, COUNTERS)
        r["counters"] = {k: after[k] - before[k] for k in COUNTERS}
    return r


def run(servers, predicting, task, predict, rounds, max_tokens):
    names = [n for n in servers if n in predicting] if predict else list(servers)
    runs = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            runs[n].append(ask_counted(servers[n], n in predicting, task, predict, max_tokens))
    what = task[2][:40] if task[1] == "free-json" else "copy service.json"
    return {"task": what + (", with the prediction" if predict else ""), "runs": runs}


def summarize(t):
    file = (EDITS / COPY[0]).read_text().strip()
    out = {}
    for n, runs in t["runs"].items():
        med = lambda f: statistics.median(f(r) for r in runs)
        out[n] = {"s": med(lambda r: r["s"]), "tokens": med(lambda r: r["tokens"]),
                  "decode_tokens_per_s": med(decode_rate),
                  "accepted": med(lambda r: r["accepted"]),
                  "valid": sum(parses(r["text"]) for r in runs),
                  "exact": sum(r["text"].strip() == file for r in runs), "runs": len(runs)}
        if "counters" in runs[0]:
            out[n].update({k: med(lambda r: r["counters"][k]) for k in COUNTERS})
    return {"task": t["task"], "servers": out}


def table(rows, names, key, fmt):
    md = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        base = next(iter(r["servers"].values()))[key]
        cells = []
        for n in names:
            s = r["servers"].get(n)
            cells.append("–" if s is None else fmt(s) + f" ({s[key] / base:.2f}x)")
        md.append(f"| {r['task']} | " + " | ".join(cells) + " |")
    return md


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", action="append", required=True, metavar="NAME=URL",
                    help="a server to send every request to; the first is the baseline")
    ap.add_argument("--predicting", action="append", default=[], metavar="NAME",
                    help="a server that reads `prediction` (also sent the copy with it)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--command", default="bench/json-layout.sh")
    a = ap.parse_args()
    servers = dict(s.split("=", 1) for s in a.server)
    tasks = [run(servers, a.predicting, COPY, True, a.rounds, a.max_tokens),
             run(servers, a.predicting, COPY, False, a.rounds, a.max_tokens)]
    tasks += [run(servers, a.predicting, t, False, a.rounds, a.max_tokens) for t in FREE]
    rows = [summarize(t) for t in tasks]
    result = {"date": utc_minute(), "machine": machine(), "command": a.command,
              "rounds": a.rounds, "max_tokens": a.max_tokens, "summary": rows, "tasks": tasks}
    out = Path("bench/results")
    (out / "json-layout.json").write_text(json.dumps(result, indent=1))
    names = list(servers)
    md = [f"# JSON layout under a schema ({result['date']})", "",
          f"Machine: {result['machine']}. Command: `{a.command}`. SmolLM2-135M, greedy, up to "
          f"{a.max_tokens} tokens, streamed; each request went to every server in turn, "
          f"{a.rounds} rounds (medians). The first two rows copy an indented 20-line JSON "
          "config under its schema (tandem alone reads `prediction`); the others answer chat "
          "questions under a schema. In brackets: the ratio to the first column.", "",
          "Latency, s (output tokens; outputs that parse as JSON / that are the file):", ""]
    md += table(rows, names, "s", lambda s: f"{s['s']:.2f} s ({s['tokens']:.0f} tokens; "
                f"{s['valid']}/{s['runs']} JSON" + (f", {s['exact']} the file"
                if s["exact"] else "") + ")")
    md += ["", "Decode tokens/s (tokens after the first over the time from the first to the "
           "last; accepted predicted tokens where a prediction was sent):", ""]
    md += table(rows, names, "decode_tokens_per_s", lambda s: f"{s['decode_tokens_per_s']:.1f}"
                + (f", {s['accepted']:.0f} accepted" if s["accepted"] else ""))
    md += ["", "tandem's engine over one request (medians; prefill included): steps, forward "
           "time, and the time spent computing grammar masks:", "",
           "| task | " + " | ".join(a.predicting) + " |", "|---|" + "---|" * len(a.predicting)]
    for r in rows:
        cells = [(lambda c: f"{c[COUNTERS[0]]:.0f} steps, {c[COUNTERS[1]] / 1e6:.2f} s, "
                  f"{c[COUNTERS[2]] / 1e3:.1f} ms")(r["servers"][n]) for n in a.predicting]
        md.append(f"| {r['task']} | " + " | ".join(cells) + " |")
    (out / "json-layout.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
