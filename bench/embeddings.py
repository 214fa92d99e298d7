#!/usr/bin/env python3
"""/v1/embeddings against tandem and llama-server on the same GGUF: throughput (inputs and
tokens per second, requests of BATCH inputs sent one after another, and the same with 4 at a
time) and agreement (the cosine between the two servers' vectors for the same input; both mean
pooling, both L2-normalized). Inputs are generated sentences of 10 to 60 words.

Usage: bench/embeddings.py NAME=URL [NAME=URL ...] [--inputs N] [--batch N] [--out PREFIX]
Writes PREFIX.json and PREFIX.md (default bench/results/embeddings)."""
import argparse
import json
import math
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import requests

WORDS = ("agent tool call server model token cache prefix batch request stream search python "
         "plan result memory decode prefill schema grammar latency queue thread kernel vector "
         "city river mountain coffee music garden winter market library window").split()


def sentences(n, seed=7):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 60))) + "." for _ in range(n)]


def embed(url, texts):
    r = requests.post(url + "/v1/embeddings", json={"input": texts, "encoding_format": "float"},
                      timeout=600)
    r.raise_for_status()
    d = r.json()
    return [x["embedding"] for x in sorted(d["data"], key=lambda x: x["index"])], \
        d["usage"]["prompt_tokens"]


def throughput(url, texts, batch, concurrency):
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(lambda c: embed(url, c), chunks))
    dt = time.perf_counter() - t0
    tokens = sum(t for _, t in results)
    vectors = [v for vs, _ in results for v in vs]
    return {"inputs_s": len(texts) / dt, "tokens_s": tokens / dt, "tokens": tokens}, vectors


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("servers", nargs="+", help="NAME=URL")
    ap.add_argument("--inputs", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--command", default="bench/embeddings.sh")
    ap.add_argument("--out", default="bench/results/embeddings")
    a = ap.parse_args()
    servers = dict(s.split("=", 1) for s in a.servers)
    texts = sentences(a.inputs)
    for url in servers.values():
        embed(url, texts[:2])  # warm-up
    rows, vectors = [], {}
    for conc in (1, 4):
        for n, url in servers.items():
            m, vs = throughput(url, texts, a.batch, conc)
            vectors[n] = vs
            rows.append({"server": n, "concurrency": conc, **m})
            print(f"{n:>14} x{conc}: {m['inputs_s']:6.1f} inputs/s, {m['tokens_s']:7.1f} tokens/s",
                  flush=True)
    names = list(servers)
    agree = None
    if len(names) == 2:
        cs = [cosine(x, y) for x, y in zip(vectors[names[0]], vectors[names[1]])]
        agree = {"min": min(cs), "mean": sum(cs) / len(cs)}
        print(f"cosine {names[0]} vs {names[1]}: min {agree['min']:.6f}, mean {agree['mean']:.6f}")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": when, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "inputs": a.inputs, "batch": a.batch, "command": a.command, "servers": names}
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "agreement": agree}, f, indent=2)
    with open(a.out + ".md", "w") as f:
        f.write(f"# Embeddings, tandem and llama-server ({when}, {meta['machine']})\n\n")
        f.write(f"Command: `{a.command}`. {a.inputs} generated sentences of 10-60 words, "
                f"{a.batch} per request, requests one at a time (x1) or 4 at a time (x4); mean "
                "pooling, unit-length vectors.\n\n")
        f.write("| server | requests at once | inputs/s | tokens/s |\n|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['server']} | {r['concurrency']} | {r['inputs_s']:.1f} | "
                    f"{r['tokens_s']:.0f} |\n")
        if agree:
            f.write(f"\nCosine between the two servers' vectors for the same input: min "
                    f"{agree['min']:.6f}, mean {agree['mean']:.6f}.\n")


if __name__ == "__main__":
    main()
