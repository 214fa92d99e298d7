#!/usr/bin/env python3
"""/v1/embeddings against tandem and llama-server on the same GGUF: throughput (inputs and
tokens per second, requests of BATCH inputs sent one after another, and the same with 4 at a
time; the median of ROUNDS rounds, servers taking turns within a round so drift in the
machine's speed reaches all alike), each server's throughput as a ratio to the first one's, and
agreement (the cosine between the first server's vectors and each other's for the same input;
all mean pooling, L2-normalized). Inputs are generated sentences of 10 to 60 words.

Usage: bench/embeddings.py NAME=URL [NAME=URL ...] [--inputs N] [--batch N] [--rounds N]
       [--out PREFIX]
Writes PREFIX.json and PREFIX.md (default bench/results/embeddings)."""
import argparse
import json
import math
import os
import platform
import random
import statistics
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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--command", default="bench/embeddings.sh")
    ap.add_argument("--out", default="bench/results/embeddings")
    a = ap.parse_args()
    servers = dict(s.split("=", 1) for s in a.servers)
    texts = sentences(a.inputs)
    for url in servers.values():
        embed(url, texts[:2])  # warm-up
    rows, vectors = measure(servers, texts, a.batch, a.rounds)
    names = list(servers)
    agree = {n: agreement(vectors[names[0]], vectors[n]) for n in names[1:]}
    for n, c in agree.items():
        print(f"cosine {names[0]} vs {n}: min {c['min']:.6f}, mean {c['mean']:.6f}")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": when, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "inputs": a.inputs, "batch": a.batch, "rounds": a.rounds, "command": a.command,
            "servers": names}
    with open(a.out + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "agreement": agree}, f, indent=2)
    with open(a.out + ".md", "w") as f:
        f.write(report(meta, rows, agree))


def measure(servers, texts, batch, rounds):
    """The median of `rounds` rounds per server and concurrency, with each server's tokens/s
    over the first server's in the same rounds."""
    runs, vectors = {}, {}
    for _ in range(rounds):
        for conc in (1, 4):
            for n, url in servers.items():
                m, vectors[n] = throughput(url, texts, batch, conc)
                runs.setdefault((n, conc), []).append(m)
    first = next(iter(servers))
    rows = []
    for (n, conc), ms in runs.items():
        row = {"server": n, "concurrency": conc,
               "inputs_s": statistics.median(m["inputs_s"] for m in ms),
               "tokens_s": statistics.median(m["tokens_s"] for m in ms),
               "tokens": ms[0]["tokens"], "rounds_tokens_s": [m["tokens_s"] for m in ms]}
        rows.append(row)
    for row in rows:
        base = next(r for r in rows if r["server"] == first and r["concurrency"] == row["concurrency"])
        row["first_over_this"] = base["tokens_s"] / row["tokens_s"]
        print(f"{row['server']:>14} x{row['concurrency']}: {row['inputs_s']:6.1f} inputs/s, "
              f"{row['tokens_s']:7.1f} tokens/s; {first} ÷ this {row['first_over_this']:.2f}",
              flush=True)
    return sorted(rows, key=lambda r: r["concurrency"]), vectors


def agreement(xs, ys):
    cs = [cosine(x, y) for x, y in zip(xs, ys)]
    return {"min": min(cs), "mean": sum(cs) / len(cs)}


def report(meta, rows, agree):
    first = meta["servers"][0]
    out = [f"# Embeddings, tandem and llama-server ({meta['date']}, {meta['machine']})\n",
           f"Command: `{meta['command']}`. {meta['inputs']} generated sentences of 10-60 words, "
           f"{meta['batch']} per request, requests one at a time (x1) or 4 at a time (x4); mean "
           f"pooling, unit-length vectors. Each figure is the median of {meta['rounds']} rounds, "
           "the servers taking turns.\n",
           f"| server | requests at once | inputs/s | tokens/s | {first} ÷ this |",
           "|---|---|---|---|---|"]
    out += [f"| {r['server']} | {r['concurrency']} | {r['inputs_s']:.1f} | {r['tokens_s']:.0f} | "
            f"{r['first_over_this']:.2f} |" for r in rows]
    if agree:
        out.append("\nCosine between the vectors of the same input:\n")
        out += [f"- {first} and {n}: min {c['min']:.6f}, mean {c['mean']:.6f}"
                for n, c in agree.items()]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
