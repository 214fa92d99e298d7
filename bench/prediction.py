"""bench/prediction.sh's client: predicted outputs (OpenAI's `prediction`) on edit tasks.

Each task asks for a file from bench/workloads/edits again (copied, or with a small edit) and
sends, in alternation, the request without a prediction and with the file as the prediction,
one at a time, greedy, streamed, ROUNDS times; then CONCURRENCY copies at once of each.
Prints and writes bench/results/prediction.{json,md}: per task, median latency, decode tokens
per second, accepted and rejected predicted tokens, and the speedups.
"""
import argparse
import concurrent.futures as cf
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intercept_table import machine  # noqa: E402

EDITS = Path(__file__).parent / "workloads" / "edits"
# (file, what, how the request asks for it): "copy" and "rename" are text completions that
# open a second copy of the file (what a 135M model does reliably); "chat" asks in a chat
# message, which this small model mostly does not follow (the prediction then helps little);
# "json" is a copy under the file's JSON schema (`json_schema`, a grammar every server here
# reads), where drafted rows are sampled under the grammar's masks.
TASKS = [
    ("users.py", "copy", "The same file, unchanged:"),
    ("users.py", "rename", "The same file, with load_users renamed to read_users:"),
    ("inventory.js", "copy", "The same file, unchanged:"),
    ("notes.md", "copy", "The same file, unchanged:"),
    ("service.json", "json", "The same file, unchanged:"),
    ("users.py", "chat", "Rename the function load_users to read_users in this code and output "
                         "the whole code."),
]
LANG = {".py": "python", ".js": "javascript", ".md": "markdown", ".json": "json"}


def request(name, kind, ask, max_tokens):
    """`kind` "free" is a chat question about no file (bench/prompt_lookup.py's control);
    "free-json" one answered under `response_format` with the schema in
    bench/workloads/json/`name` (bench/json_layout.py's)."""
    if kind in ("free", "free-json"):
        body = {"messages": [{"role": "user", "content": ask}], "max_tokens": max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        if kind == "free-json":
            schema = json.loads((EDITS.parent / "json" / name).read_text())
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": schema}}
        return "/v1/chat/completions", body, ""
    text = (EDITS / name).read_text()
    lang = LANG[Path(name).suffix]
    if kind == "chat":
        body = {"messages": [{"role": "user", "content": f"{ask}\n\n```{lang}\n{text}```"}]}
        path = "/v1/chat/completions"
    else:
        body = {"prompt": f"Original file:\n```{lang}\n{text}```\n\n{ask}\n```{lang}\n",
                "stop": ["```"]}
        path = "/v1/completions"
    if kind == "json":
        schema = EDITS / name.replace(".json", ".schema.json")
        body["json_schema"] = json.loads(schema.read_text())
    body.update(max_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True})
    return path, body, text


def ask(url, task, predict, max_tokens):
    """One streamed request: total seconds, seconds from first to last token, usage, text."""
    path, body, text = request(*task, max_tokens)
    if predict:
        body["prediction"] = {"type": "content", "content": text}
    t0 = time.perf_counter()
    first = last = None
    usage = None
    pieces = []
    with requests.post(url + path, json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            got = [c.get("text") or (c.get("delta") or {}).get("content") or ""
                   for c in chunk.get("choices", [])]
            if any(got):
                last = time.perf_counter()  # a chunk with text (chat's first is the role alone)
                first = first or last
                pieces += got
    d = usage.get("completion_tokens_details") or {}  # llama-server has none
    n = usage["completion_tokens"]
    return {"s": time.perf_counter() - t0, "decode_s": (last - first) if first else 0.0,
            "tokens": n, "accepted": d.get("accepted_prediction_tokens", 0),
            "rejected": d.get("rejected_prediction_tokens", 0), "text": "".join(pieces)}


def run_task(url, task, rounds, concurrency, max_tokens, others):
    runs = {"plain": [], "predicted": [], "plain_x": [], "predicted_x": []}
    runs.update({name: [] for name in others})
    for _ in range(rounds):
        for predict in (False, True):
            runs["predicted" if predict else "plain"].append(ask(url, task, predict, max_tokens))
        for name, other in others.items():  # other servers, without a prediction
            runs[name].append(ask(other, task, False, max_tokens))
    with cf.ThreadPoolExecutor(concurrency) as pool:
        for predict in (False, True):
            t = time.perf_counter()
            done = list(pool.map(lambda _: ask(url, task, predict, max_tokens), range(concurrency)))
            runs["predicted_x" if predict else "plain_x"] = [{
                "wall_s": time.perf_counter() - t, "tokens": sum(d["tokens"] for d in done),
                "accepted": sum(d["accepted"] for d in done),
                "rejected": sum(d["rejected"] for d in done)}]
    return {"task": f"{task[0]}: {task[1]}", "runs": runs}


def summarize(t, concurrency, others):
    r, c = t["runs"], concurrency
    med = lambda k, f: statistics.median(x[f] for x in r[k])
    rate = lambda k: statistics.median(map(decode_rate, r[k]))
    x_rate = lambda k: r[k][0]["tokens"] / r[k][0]["wall_s"]
    other = {f"{n}_decode_tokens_per_s": rate(n) for n in others}
    other.update({f"{n}_tokens": med(n, "tokens") for n in others})
    return {**other, "task": t["task"], "plain_s": med("plain", "s"), "predicted_s": med("predicted", "s"),
            "latency_ratio": med("predicted", "s") / med("plain", "s"),
            "plain_tokens": med("plain", "tokens"), "predicted_tokens": med("predicted", "tokens"),
            "plain_decode_tokens_per_s": rate("plain"),
            "predicted_decode_tokens_per_s": rate("predicted"),
            "decode_speedup": rate("predicted") / rate("plain"),
            "accepted": med("predicted", "accepted"), "rejected": med("predicted", "rejected"),
            f"x{c}_plain_tokens_per_s": x_rate("plain_x"),
            f"x{c}_predicted_tokens_per_s": x_rate("predicted_x"),
            f"x{c}_speedup": x_rate("predicted_x") / x_rate("plain_x")}


def utc_minute():
    """A result's date: now, to the minute, in UTC."""
    return str(datetime.datetime.now(datetime.timezone.utc))[:16] + " UTC"


def decode_rate(run):
    """An `ask` run's decode tokens/s: the tokens after the first over their time."""
    return (run["tokens"] - 1) / run["decode_s"] if run["decode_s"] else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--command", default="bench/prediction.sh")
    ap.add_argument("--other", action="append", default=[], metavar="NAME=URL",
                    help="another server, sent each request without a prediction")
    a = ap.parse_args()
    others = dict(o.split("=", 1) for o in a.other)
    tasks = [run_task(a.url, t, a.rounds, a.concurrency, a.max_tokens, others) for t in TASKS]
    rows = [summarize(t, a.concurrency, others) for t in tasks]
    c = a.concurrency
    result = {"date": utc_minute(),
              "machine": machine(), "command": a.command, "rounds": a.rounds,
              "concurrency": c, "max_tokens": a.max_tokens, "summary": rows, "tasks": tasks}
    out = Path("bench/results")
    (out / "prediction.json").write_text(json.dumps(result, indent=1))
    md = [f"# Predicted outputs on edit tasks ({result['date']})", "",
          f"Machine: {result['machine']}. Command: `{a.command}`. SmolLM2-135M, greedy, up to "
          f"{a.max_tokens} tokens, streamed; each task alternates a request without and with the "
          f"file as `prediction`, one at a time, {a.rounds} rounds (medians), then {c} copies at "
          "once of each. Decode tokens/s: tokens after the first over the time from the first "
          f"to the last; x{c}: all copies' tokens over the wall time.", "",
          f"| task | tokens | latency s, plain | with prediction | decode tokens/s, plain | "
          f"with prediction | decode speedup | accepted | rejected | x{c} tokens/s, plain | "
          f"with prediction | x{c} speedup |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['task']} | {r['predicted_tokens']:.0f} | {r['plain_s']:.2f} | "
                  f"{r['predicted_s']:.2f} | {r['plain_decode_tokens_per_s']:.1f} | "
                  f"{r['predicted_decode_tokens_per_s']:.1f} | {r['decode_speedup']:.2f}x | "
                  f"{r['accepted']:.0f} | {r['rejected']:.0f} | {r[f'x{c}_plain_tokens_per_s']:.1f} | "
                  f"{r[f'x{c}_predicted_tokens_per_s']:.1f} | {r[f'x{c}_speedup']:.2f}x |")
    if others:
        md += ["", "The same requests, without a prediction, one at a time, on the other servers "
               "(decode tokens/s, median; tandem's columns repeated):", "",
               "| task | tandem | tandem with prediction | " + " | ".join(others) + " |",
               "|---|---|---|" + "---|" * len(others)]
        for r in rows:
            cells = [f"{r[f'{n}_decode_tokens_per_s']:.1f} ({r[f'{n}_tokens']:.0f} tokens)" for n in others]
            md.append(f"| {r['task']} | {r['plain_decode_tokens_per_s']:.1f} | "
                      f"{r['predicted_decode_tokens_per_s']:.1f} | " + " | ".join(cells) + " |")
    (out / "prediction.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
