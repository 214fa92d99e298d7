#!/usr/bin/env python3
"""How fast the host ran, window by window, from a tandem server's own step log.

A server started with `RUST_LOG=info,tandem_engine=trace` logs every engine step (rows, batch
tokens, passes, milliseconds). Steps that do the same work should take the same time; when a
shared machine slows down (a neighbour on the same physical cores, a lower clock), identical
steps take longer for a while. This prints, per window of wall time, the median time of the
pure decode steps with ROWS rows (one token each) and the prefill cost per token of the large
steps, so a benchmark's run-to-run spread can be checked against the host's own speed.

With `--samples FILE` (bench/proc_sampler.py's output over the same run) each window also
shows the server's CPU seconds, its threads' run-queue wait, the steal ticks and the CPU ticks
of the other processes each second's line lists (its four busiest) in that window: if identical steps slow down while those stay the same,
the machine itself ran slower (a shared host), not something competing inside it.

Usage: python3 bench/step_speed.py SERVER.log [--rows 8] [--window 30] [--min-tokens 64]
       [--samples SAMPLES.txt]
"""

import argparse
import datetime as dt
import gzip
import re
import statistics as st
import sys

STEP = re.compile(
    r"(\S+?)Z\s+TRACE tandem_engine::engine: step rows=(\d+) tokens=(\d+) "
    r"kv_ops=\d+ passes=(\d+) ms=([\d.]+)"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def text(path):
    """A log or sample file, gzip'd or not (committed inputs are gzip'd)."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def steps(path):
    """(end time s, rows, tokens, passes, ms) of every step line in the log."""
    out = []
    with text(path) as f:
        for line in f:
            m = STEP.search(ANSI.sub("", line))
            if m:
                t = dt.datetime.fromisoformat(m.group(1)).timestamp()
                out.append((t, *(int(m.group(i)) for i in (2, 3, 4)), float(m.group(5))))
    return out


def windows(rows, width):
    """The steps grouped into consecutive windows of `width` seconds (empty ones skipped)."""
    t0, groups = rows[0][0], {}
    for r in rows:
        groups.setdefault(int((r[0] - t0) // width), []).append(r)
    return t0, sorted(groups.items())


SAMPLE = re.compile(
    r"(\d\d:\d\d:\d\d) busy\s+[\d.]+% steal (\d+) \| serve cpu ([\d.]+) s, "
    r"run-queue wait ([-\d.]+) s \| others \(ticks\): ?(.*)"
)


def samples(path, t0, width):
    """{window: [serve cpu s, run-queue wait s, steal ticks, others' ticks]} from the
    sampler's lines (their clock is UTC of the step log's first day)."""
    day = dt.datetime.fromtimestamp(t0, dt.timezone.utc).date()
    out = {}
    with text(path) as f:
        for line in f:
            m = SAMPLE.match(line)
            if not m:
                continue
            clock = dt.time.fromisoformat(m.group(1))
            t = dt.datetime.combine(day, clock, dt.timezone.utc).timestamp()
            w = out.setdefault(int((t - t0) // width), [0.0, 0.0, 0, 0])
            others = re.findall(r"(\S.*?):(\d+)(?= |$)", m.group(5))
            w[0] += float(m.group(3))
            w[1] += float(m.group(4))
            w[2] += int(m.group(2))
            w[3] += sum(int(v) for _, v in others)
    return out


def summary(group, n_rows, min_tokens):
    decode = [r[4] for r in group if r[1] == n_rows and r[2] == n_rows]
    big = [r for r in group if r[2] >= min_tokens]
    per_token = sum(r[4] for r in big) / sum(r[2] for r in big) if big else None
    return decode, big, per_token


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log")
    p.add_argument("--rows", type=int, default=8, help="decode steps with this many rows")
    p.add_argument("--window", type=float, default=30.0, help="seconds per window")
    p.add_argument("--min-tokens", type=int, default=64, help="a 'large' (prefill) step")
    p.add_argument("--samples", help="bench/proc_sampler.py's output over the same run")
    a = p.parse_args()
    rows = steps(a.log)
    if not rows:
        sys.exit(f"{a.log}: no step lines (start the server with RUST_LOG=info,tandem_engine=trace)")
    t0, groups = windows(rows, a.window)
    print(f"{a.log}: {len(rows)} steps from {dt.datetime.fromtimestamp(t0, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
    host = samples(a.samples, t0, a.window) if a.samples else None
    extra = " server cpu s | run-queue wait s | steal ticks | others' ticks |" if host else ""
    print(f"| window s | steps | {a.rows}-row decode steps | median ms | "
          f"large steps (≥ {a.min_tokens} tokens) | ms/token |{extra}")
    print("|---|---|---|---|---|---|" + "---|" * (4 if host else 0))
    medians = []
    for k, group in groups:
        decode, big, per_token = summary(group, a.rows, a.min_tokens)
        med = st.median(decode) if len(decode) >= 5 else None
        if med is not None:
            medians.append(med)
        cell = lambda v, f: "" if v is None else f.format(v)
        row = (f"| {k * a.window:.0f}–{(k + 1) * a.window:.0f} | {len(group)} | {len(decode)} | "
               f"{cell(med, '{:.1f}')} | {len(big)} | {cell(per_token, '{:.2f}')} |")
        if host:
            c, w, st_, o = host.get(k, [0.0, 0.0, 0, 0])
            row += f" {c:.1f} | {w:.2f} | {st_} | {o} |"
        print(row)
    if medians:
        lo, hi = min(medians), max(medians)
        print(f"\n{a.rows}-row decode step, window medians: {lo:.1f}–{hi:.1f} ms "
              f"(slowest / fastest {hi / lo:.2f}) over {len(medians)} windows with ≥ 5 such steps")


if __name__ == "__main__":
    main()
