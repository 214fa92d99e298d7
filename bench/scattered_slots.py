"""Decode speed of conversations that come back to scattered KV slots. Each of ROUNDS trials
starts KEEP new conversations one at a time (each server keeps them, one per slot), then
sends a follow-up to every other one, all at once. With one KV stream per sequence llama.cpp runs one
forward pass per run of consecutive slots, so four follow-ups in slots 0, 2, 4 and 6 cost
four passes a step unless the server moves them together (tandem's slot compaction).

Usage: scattered_slots.py OUT.json NAME=URL [NAME=URL ...]   (the servers take turns each
round, so load from other tenants falls on all of them alike). Prints a Markdown table."""
import json
import sys
import threading
import time

import requests

from metrics import counters

KEEP, ROUNDS, TOKENS = 8, 5, 128


def chat(url, messages, max_tokens):
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    return r.json()


def opening(k, i):
    text = f"Trial {k}, conversation {i}: tell me about topic number {i} in detail."
    return [{"role": "user", "content": text}]


def start(url, k):
    """Trial `k`'s KEEP conversations' first turns, one after another."""
    convos = []
    for i in range(KEEP):
        reply = chat(url, opening(k, i), 8)["choices"][0]["message"]["content"]
        convos.append(opening(k, i) + [{"role": "assistant", "content": reply}])
    return convos


def round_of(url, k):
    """Trial `k`: its conversations, then follow-ups to every other one at once: (tokens,
    seconds of the follow-ups)."""
    convos = start(url, k)
    done = []

    def follow(i):
        r = chat(url, convos[i] + [{"role": "user", "content": "Go on."}], TOKENS)
        done.append(r["usage"]["completion_tokens"])

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(0, KEEP, 2)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), time.time() - t0


def main():
    out, servers = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    rows = {name: [] for name in servers}
    for k in range(ROUNDS):
        for name, url in servers.items():
            rows[name].append(round_of(url, k))
    names = ["tandem_slot_moves_total", "tandem_slot_moved_tokens_total"]
    report = {name: {"rounds": [{"tokens": n, "seconds": s, "tok_per_s": n / s} for n, s in r],
                     "metrics": counters(servers[name], names)} for name, r in rows.items()}
    json.dump(report, open(out, "w"), indent=1)
    print("| server | " + " | ".join(f"trial {k + 1} tok/s" for k in range(ROUNDS)) + " | slot moves (tokens) |")
    print("|---|" + "---|" * (ROUNDS + 1))
    for name, r in report.items():
        m = r["metrics"]
        moves = f"{m[names[0]]:.0f} ({m[names[1]]:.0f})" if m else "–"
        speeds = " | ".join(f"{x['tok_per_s']:.1f}" for x in r["rounds"])
        print(f"| {name} | {speeds} | {moves} |")


if __name__ == "__main__":
    main()
