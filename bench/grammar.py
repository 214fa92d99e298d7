#!/usr/bin/env python3
"""Cost of grammar-constrained decoding, tandem against llama-server on the same GGUF: decode
throughput (generated tokens per second over all streams) of text completions with no
constraint, with a GBNF grammar in the `grammar` field (llama-server's own field; tandem
rewrites GBNF for llguidance), and with a JSON schema in `json_schema` (llama-server's field, which tandem takes too), at 1 and 8
concurrent streams. Every request generates exactly MAX_TOKENS tokens: plain requests ignore
end-of-generation, and the grammar and the schema ask for a JSON array of at least 300 values,
which cannot be finished in MAX_TOKENS tokens. Greedy sampling; rounds alternate servers and
modes to spread machine noise. The figure to compare is each server's constrained throughput
as a share of its own plain throughput, measured in the same run.

Usage: bench/grammar.py NAME=URL [NAME=URL ...] [--rounds N] [--max-tokens N] [--out PREFIX]
Writes PREFIX.json and PREFIX.md (default bench/results/grammar)."""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics import counters  # noqa: E402

# JSON (objects, arrays, strings with escapes, numbers, literals, free whitespace) in GBNF;
# the root is an array of at least 300 values.
GBNF = r"""
root   ::= "[" ws value ("," ws value){299,} "]"
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= "-"? ([0-9] | [1-9] [0-9]{1,15}) ("." [0-9]+)? ([eE] [-+]? [0-9]+)? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"""
SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "minItems": 300, "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["name", "score"]}}},
    "required": ["items"],
}
PROMPT = "Here is a long list of records about cities, as JSON:\n"
MODES = ("plain", "gbnf", "schema")


def one(url, mode, max_tokens):
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    if mode == "plain":
        body["ignore_eos"] = True
    elif mode == "gbnf":
        body["grammar"] = GBNF
    else:
        body["json_schema"] = SCHEMA
    r = requests.post(url + "/v1/completions", json=body, timeout=900)
    r.raise_for_status()
    out = r.json()
    text = out["choices"][0]["text"]
    if mode == "gbnf":
        assert text.startswith("["), text[:80]
    if mode == "schema":
        assert text.lstrip().startswith("{"), text[:80]
    return out["usage"]["completion_tokens"], text


MASKS = ("tandem_constraint_masks_total", "tandem_constraint_mask_microseconds_total")


def mask_counters(url):
    """tandem's (masks computed, microseconds spent) from /metrics; None for other servers."""
    got = counters(url, MASKS)
    return (got[MASKS[0]], got[MASKS[1]]) if got else None


def run(url, mode, streams, max_tokens):
    """Aggregate tok/s, one output, and microseconds per mask (tandem only, else None)."""
    before = mask_counters(url)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(streams) as ex:
        results = list(ex.map(lambda _: one(url, mode, max_tokens), range(streams)))
    rate = sum(n for n, _ in results) / (time.perf_counter() - t0)
    after = mask_counters(url)
    per_mask = None
    if before and after and after[0] > before[0]:
        per_mask = (after[1] - before[1]) / (after[0] - before[0])
    return rate, results[0][1], per_mask


def table(rows, names):
    out = ["| streams | server | plain tok/s | GBNF tok/s | GBNF share of plain | "
           "JSON schema tok/s | schema share of plain |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        for n in names:
            m = r["servers"][n]
            out.append(f"| {r['streams']} | {n} | {m['plain']:.1f} | {m['gbnf']:.1f} | "
                       f"{m['gbnf'] / m['plain']:.2f} | {m['schema']:.1f} | "
                       f"{m['schema'] / m['plain']:.2f} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("servers", nargs="+", help="NAME=URL")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--command", default="bench/grammar.sh")
    ap.add_argument("--out", default="bench/results/grammar")
    a = ap.parse_args()
    servers = dict(s.split("=", 1) for s in a.servers)
    for url in servers.values():  # warm-up, and a check that each mode is accepted
        for mode in MODES:
            one(url, mode, 8)
    rows, samples = [], {}
    for streams in map(int, a.streams.split(",")):
        rates = {n: {m: [] for m in MODES} for n in servers}
        masks = {n: {m: [] for m in MODES} for n in servers}
        for _ in range(a.rounds):
            for n, url in servers.items():
                for mode in MODES:
                    rate, text, per_mask = run(url, mode, streams, a.max_tokens)
                    rates[n][mode].append(rate)
                    if per_mask is not None:
                        masks[n][mode].append(per_mask)
                    samples[f"{n} {mode}"] = text[:200]
        med = {n: {m: statistics.median(v) for m, v in ms.items()} for n, ms in rates.items()}
        mask_us = {n: {m: statistics.median(v) for m, v in ms.items() if v}
                   for n, ms in masks.items() if any(ms.values())}
        rows.append({"streams": streams, "servers": med, "rounds": rates, "mask_us": mask_us})
        for n, m in med.items():
            print(f"{streams} streams {n:>14}: plain {m['plain']:6.1f}, gbnf {m['gbnf']:6.1f} "
                  f"({m['gbnf'] / m['plain']:.2f}), schema {m['schema']:6.1f} "
                  f"({m['schema'] / m['plain']:.2f}) tok/s", flush=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": when, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "max_tokens": a.max_tokens, "rounds": a.rounds, "command": a.command,
            "servers": list(servers), "gbnf": GBNF, "schema": SCHEMA, "prompt": PROMPT}
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "sample_outputs": samples}, f, indent=2)
    with open(a.out + ".md", "w") as f:
        f.write(f"# Grammar-constrained decoding, tandem and llama-server ({when}, "
                f"{meta['machine']})\n\n")
        f.write(f"Command: `{a.command}`. Text completions of {a.max_tokens} tokens, greedy, "
                f"median tok/s over {a.rounds} rounds (servers and modes alternating); "
                "`plain` ignores end-of-generation, `GBNF` sends the JSON grammar in "
                "bench/grammar.py as `grammar`, `JSON schema` a schema as `json_schema`; "
                "both ask for at least 300 values, more than the tokens allow. Compare the "
                "shares (each server against its own plain run), not raw tok/s across "
                "servers.\n\n")
        f.write(table(rows, list(servers)) + "\n")
        f.write("\nMicroseconds per mask (tandem's `/metrics`, median over rounds): " + "; ".join(
            f"{r['streams']} streams {n} {m} {us:.0f}" for r in rows
            for n, ms in r["mask_us"].items() for m, us in ms.items()) + ".\n")
    print(table(rows, list(servers)))


if __name__ == "__main__":
    main()
