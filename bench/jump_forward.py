#!/usr/bin/env python3
"""Jump-forward decoding: latency of constrained requests with it on and off, same run, two
tandem servers that differ only in --jump-forward. Two workloads, greedy: a tool call
(`tool_choice` naming a tool whose arguments have seven required keys) and a JSON-schema
answer (`response_format`, nested object), their values bounded (lengths, patterns, enums)
so that a small model's output ends within max_tokens. With jump-forward on, the text the grammar fixes
(keys, separators, the call's markup and closing tag) is appended in one chunk instead of one
decode step per token. Rounds alternate on and off so machine noise falls on both; each round
runs STREAMS requests at once.

Usage: bench/jump_forward.py ON_URL OFF_URL [--rounds N] [--out PREFIX]
Writes PREFIX.json and PREFIX.md (default bench/results/jump-forward)."""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics import counters  # noqa: E402

EVENT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 40},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "start_time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"},
        "end_time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"},
        "location": {"type": "string", "maxLength": 30},
        "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
        "reminder_minutes": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["title", "date", "start_time", "end_time", "location", "attendees", "reminder_minutes"],
}
PRODUCT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40}, "price": {"type": "number"},
        "currency": {"enum": ["USD", "EUR", "GBP"]}, "in_stock": {"type": "boolean"},
        "dimensions": {"type": "object", "properties": {
            "width_cm": {"type": "integer"}, "height_cm": {"type": "integer"}, "depth_cm": {"type": "integer"}},
            "required": ["width_cm", "height_cm", "depth_cm"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "price", "currency", "in_stock", "dimensions", "tags"],
}
WORKLOADS = {
    "tool call": {
        "messages": [{"role": "user", "content": "Schedule a team sync with Ana and Bo tomorrow from 10 to 11 in room 4, remind us 15 minutes before."}],
        "tools": [{"type": "function", "function": {"name": "create_event", "description": "Create a calendar event", "parameters": EVENT}}],
        "tool_choice": {"type": "function", "function": {"name": "create_event"}},
        "parallel_tool_calls": False,
    },
    "json schema": {
        "messages": [{"role": "user", "content": "Describe a small oak bookshelf for our shop as a product record."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "product", "schema": PRODUCT}},
    },
}


def one(url, name, max_tokens):
    body = dict(WORKLOADS[name], max_tokens=max_tokens, temperature=0)
    t0 = time.perf_counter()
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    out = r.json()
    msg = out["choices"][0]["message"]
    text = json.dumps(msg.get("tool_calls") and [c["function"] for c in msg["tool_calls"]] or msg["content"])
    return time.perf_counter() - t0, out["usage"]["completion_tokens"], text


def forced_total(url):
    got = counters(url, ["tandem_forced_tokens_total"])
    if got is None:
        raise SystemExit(f"{url} has no /metrics: is it a tandem server?")
    return got["tandem_forced_tokens_total"]


def round_of(url, name, streams, max_tokens):
    with ThreadPoolExecutor(streams) as ex:
        return list(ex.map(lambda _: one(url, name, max_tokens), range(streams)))


def measure(urls, name, streams, rounds, max_tokens):
    runs = {"on": [], "off": []}
    forced0 = forced_total(urls["on"])
    for r in range(rounds):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        for mode in order:
            runs[mode].extend(round_of(urls[mode], name, streams, max_tokens))
    forced = forced_total(urls["on"]) - forced0
    if forced == 0:
        raise SystemExit(f"{urls['on']} forced no token: is it running with --jump-forward on?")
    row = {"workload": name, "streams": streams, "requests": len(runs["on"])}
    for mode, rs in runs.items():
        row[f"latency_s_{mode}"] = statistics.mean(r[0] for r in rs)
        row[f"tokens_{mode}"] = statistics.mean(r[1] for r in rs)
    row["speedup"] = row["latency_s_off"] / row["latency_s_on"]
    row["forced_share"] = forced / sum(r[1] for r in runs["on"])
    row["same_output"] = sum(a[2] == b[2] for a, b in zip(runs["on"], runs["off"])) / len(runs["on"])
    row["example_on"] = runs["on"][0][2]
    row["example_off"] = runs["off"][0][2]
    return row


def write(out, meta, rows):
    with open(out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write(f"# Jump-forward decoding ({meta['date']}, {meta['machine']})\n\n")
        f.write(f"Command: `{meta['command']}`; greedy, max_tokens {meta['max_tokens']}, {meta['rounds']} rounds "
                "alternating on/off; two servers differing only in `--jump-forward`.\n\n")
        f.write("| workload | streams | requests | latency off s | latency on s | speedup | completion tokens off / on "
                "| forced share (on) | same output |\n|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['workload']} | {r['streams']} | {r['requests']} | {r['latency_s_off']:.3f} | "
                    f"{r['latency_s_on']:.3f} | {r['speedup']:.2f}x | {r['tokens_off']:.0f} / {r['tokens_on']:.0f} | "
                    f"{100 * r['forced_share']:.0f}% | {100 * r['same_output']:.0f}% |\n")
        f.write("\nForced share: output tokens appended by jump-forward over all output tokens of the on runs "
                "(`tandem_forced_tokens_total`). Same output: on and off requests of the same index that "
                "returned identical calls or content.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("on_url")
    ap.add_argument("off_url")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--out", default="bench/results/jump-forward")
    a = ap.parse_args()
    urls = {"on": a.on_url, "off": a.off_url}
    for url in urls.values():
        for name in WORKLOADS:
            one(url, name, a.max_tokens)  # warm-up, and a check that both requests are accepted
    rows = []
    for name in WORKLOADS:
        for streams in (1, 8):
            row = measure(urls, name, streams, a.rounds, a.max_tokens)
            rows.append(row)
            print(f"{name:>11}, {streams} streams: off {row['latency_s_off']:.3f} s, on {row['latency_s_on']:.3f} s, "
                  f"speedup {row['speedup']:.2f}x, forced {100 * row['forced_share']:.0f}%, "
                  f"same output {100 * row['same_output']:.0f}%", flush=True)
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "max_tokens": a.max_tokens, "rounds": a.rounds, "command": "bench/jump-forward.sh"}
    write(a.out, meta, rows)


if __name__ == "__main__":
    main()
