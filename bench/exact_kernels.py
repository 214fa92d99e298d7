"""bench/exact-kernels.sh's client and report.

time URL TOKENS DECODE N SEED: N prefill requests (TOKENS random prompt ids, 1 output token)
and N decode requests (8 prompt ids, DECODE output tokens), one at a time; prints their
seconds as JSON. Prompts are random ids, so nothing is reused.
report OUT ROUNDS TOKENS DECODE N MODEL...: medians per model and mode, written to
bench/results/exact-kernels.{md,json}.
"""
import datetime
import json
import os
import random
import statistics
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from intercept_table import machine  # noqa: E402


def timed(url, prompt, max_tokens):
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    t = time.perf_counter()
    r = requests.post(url + "/v1/completions", json=body, timeout=300)
    r.raise_for_status()
    usage = r.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0, usage
    assert usage["completion_tokens"] == max_tokens, usage
    return time.perf_counter() - t


def time_requests(url, tokens, decode, n, seed):
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(100, 40000) for _ in range(k)]
    prefill = [timed(url, ids(tokens), 1) for _ in range(n)]
    decoding = [timed(url, ids(8), decode) for _ in range(n)]
    json.dump({"prefill_s": prefill, "decode_s": decoding}, sys.stdout)


def summary(out, name, rounds, tokens, decode):
    runs = {m: [json.load(open(f"{out}/{name}-{m}-{r}.json")) for r in range(1, rounds + 1)]
            for m in ("exact", "default")}
    row = {"model": name}
    for m, rs in runs.items():
        pre = statistics.median(t for r in rs for t in r["prefill_s"])
        dec = statistics.median(t for r in rs for t in r["decode_s"])
        row[m] = {"prefill_tokens_per_s": tokens / pre, "decode_tokens_per_s": decode / dec,
                  "prefill_s": [t for r in rs for t in r["prefill_s"]],
                  "decode_s": [t for r in rs for t in r["decode_s"]]}
    for k in ("prefill", "decode"):
        row[f"{k}_time_exact_over_default"] = (row["default"][f"{k}_tokens_per_s"]
                                               / row["exact"][f"{k}_tokens_per_s"])
    return row


def report(out, rounds, tokens, decode, n, models):
    rows = [summary(out, os.path.basename(m)[:-5], rounds, tokens, decode) for m in models]
    result = {"date": str(datetime.date.today()), "machine": machine(), "prompt_tokens": tokens,
              "decode_tokens": decode, "requests_per_round": n, "rounds": rounds, "models": rows}
    json.dump(result, open("bench/results/exact-kernels.json", "w"), indent=1)
    md = [f"# What bit-exact mode costs in speed ({result['date']})", "",
          f"Machine: {result['machine']}. Command: `TOKENS={tokens} DECODE={decode} REQUESTS={n} "
          f"ROUNDS={rounds} bench/exact-kernels.sh`. Per model, a server with `--prefix-reuse exact` "
          "(tiled K-quant matmul off, weights unrepacked) and one with `--prefix-reuse off` "
          "(llama.cpp's defaults) took turns, flash attention off on both. Prefill: requests of "
          f"{tokens} random prompt tokens and 1 output token; decode: 8 prompt tokens and {decode} "
          f"output tokens; {n} of each per round, one at a time; medians over {rounds} rounds.", "",
          "| model | prefill tokens/s, exact | default | exact's prefill time | "
          "decode tokens/s, exact | default | exact's decode time |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        e, d = r["exact"], r["default"]
        md.append(f"| {r['model']} | {e['prefill_tokens_per_s']:.0f} | {d['prefill_tokens_per_s']:.0f} | "
                  f"{r['prefill_time_exact_over_default']:.2f}x | {e['decode_tokens_per_s']:.1f} | "
                  f"{d['decode_tokens_per_s']:.1f} | {r['decode_time_exact_over_default']:.2f}x |")
    open("bench/results/exact-kernels.md", "w").write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "time":
        time_requests(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]))
    else:
        report(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]), args[5:])
