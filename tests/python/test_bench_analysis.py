"""The analysis scripts for the conveyor bench's run-to-run spread (no server needed):
bench/step_speed.py (the host's speed from a server's step log, joined with
bench/proc_sampler.py's samples), bench/conveyor_pool.py (pooling runs' pairs) and
bench/conveyor_host.py (a round's gain against its halves' host speed)."""
import datetime as dt
import gzip
import json
import subprocess
import sys

from conftest import ROOT
from test_bench import bench_module

T0 = 1_796_000_000.0  # 2026-11-30 06:13:20 UTC


def step_line(t, rows, tokens, ms, passes=1):
    """A server's step line as tracing writes it, colours included."""
    stamp = f"{dt.datetime.fromtimestamp(t, dt.timezone.utc):%Y-%m-%dT%H:%M:%S.%f}Z"
    return (f"\x1b[2m{stamp}\x1b[0m \x1b[35mTRACE\x1b[0m tandem_engine::engine: step rows={rows} "
            f"tokens={tokens} kv_ops=0 passes={passes} ms={ms}\n")


def write_log(path, lines):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.writelines(lines)


def test_step_speed_reads_gzip_logs_and_finds_the_slow_window(tmp_path):
    mod = bench_module("step_speed")
    lines, t = [], T0
    for i in range(60):  # 8-row decode steps: 44 ms for 30 s, then 53 ms
        ms = 44.0 if i < 30 else 53.0
        t += 1.0
        lines.append(step_line(t, 8, 8, ms))
    lines.append("\x1b[32m INFO\x1b[0m something else\n")
    log = tmp_path / "server.log.gz"
    write_log(log, lines)
    rows = mod.steps(str(log))
    assert len(rows) == 60 and rows[0][1:4] == (8, 8, 1) and rows[0][4] == 44.0
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "step_speed.py"), str(log),
                          "--window", "30"], capture_output=True, text=True, check=True).stdout
    assert "44.0–53.0 ms (slowest / fastest 1.20)" in out, out


def test_step_speed_joins_the_samplers_seconds_to_its_windows(tmp_path):
    mod = bench_module("step_speed")
    samples = tmp_path / "samples.txt"
    base = dt.datetime.fromtimestamp(T0, dt.timezone.utc)
    text = ""
    for s in range(4):
        clock = (base + dt.timedelta(seconds=s * 20)).strftime("%H:%M:%S")
        text += (f"{clock} busy  99.0% steal 1 | serve cpu 1.90 s, run-queue wait 0.05 s | "
                 f"others (ticks): tandem bench:2 kworker/0:1:1\n")
    samples.write_text(text + "\nover 80 s: a summary line the join skips\n")
    got = mod.samples(str(samples), T0, 30.0)
    assert sorted(got) == [0, 1, 2]  # seconds 0 and 20 | 40 | 60
    cpu, wait, steal, others = got[0]
    assert abs(cpu - 3.8) < 1e-9 and abs(wait - 0.1) < 1e-9 and steal == 2 and others == 6


def marks(total, wait):
    return {"total": total, "tool_wait": wait, "call_start": 0.1, "args_end": 1.0,
            "results": 1.0 + wait, "tool_error": False, "args_chars": 100}


def test_pool_computes_the_benchs_figures_and_the_tails_ceiling():
    mod = bench_module("conveyor_pool")
    # Lazy 10 s (2 s of it the tool), partial 9 s with 0.5 s of tool left: gain 10%, bound 20%.
    pairs = [([marks(10.0 + d, 2.0)] * 2, [marks(9.0 + d, 0.5)] * 2) for d in (0.0, 1.0, -1.0)]
    f = mod.figures(pairs)
    assert abs(f["bound"] - 0.2) < 1e-12 and abs(f["gain"] - 0.1) < 1e-12
    assert abs(f["ratio"] - 0.5) < 1e-12 and f["half"] < 1e-12  # every pair the same 1 s
    assert abs(f["ceiling"] - 0.75) < 1e-12  # 1 - 0.5 / 2
    # results at 1 + wait: lazy 10 - 3 = 7 s after them, partial 9 - 1.5 = 7.5 s.
    assert abs(f["after_lazy"] - 7.0) < 1e-12 and abs(f["after_partial"] - 7.5) < 1e-12
    assert mod.t975(23) == 2.069 and mod.t975(35) == 2.042 and mod.t975(500) == 1.960
    # Partial results: a report's staged tokens per partial request, 0 before them.
    report = {"results": {"plan": [["alone", {"staged_kept_per_request": [0.0, 337.0]}],
                                   ["x8", {"bound": 0.1}]]}}
    assert mod.staged_in(report, "plan", "alone") == 337.0
    assert mod.staged_in(report, "plan", "x8") == 0.0
    assert mod.staged_in(report, "search", "alone") == 0.0


def conveyor_log_and_report(tmp_path, rounds, speed):
    """A step log of `rounds` lazy/partial rounds (the bench's order) whose halves prefill at
    `speed(round, partial)` ms a token, and the report whose latencies follow from it."""
    lines, t = [], T0
    lazy, part = [], []

    def step(rows, tokens, ms):
        nonlocal t
        t += ms / 1e3 + 0.001
        lines.append(step_line(t, rows, tokens, ms))

    step(1, 1, 10.0)
    step(0, 0, 0.01)  # the idle point before the first half
    for r in range(rounds):
        for partial in ([False, True] if r % 2 == 0 else [True, False]):
            s = speed(r, partial)
            for _ in range(20):
                step(8, 8, 45.0)
            t += 0.1 if partial else 2.0  # the tool's wait
            for _ in range(4):
                step(8, 512, 512 * s)
            step(1, 1, 10.0)
            step(0, 0, 0.01)
            total = 20 * 0.045 + 4 * 0.512 * s + (0.1 if partial else 2.0)
            (part if partial else lazy).extend(marks(total, 0.1 if partial else 2.0)
                                               for _ in range(8))
    log = tmp_path / "steps.log"
    write_log(log, lines)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({
        "marks": {"plan": [["x8", {"lazy": lazy, "partial": part}]]},
        "results": {"plan": [["x8", {"bound": 0.5}]]},
    }))
    return log, report


def test_host_cuts_halves_at_idle_points_and_measures_prefill_only(tmp_path):
    mod = bench_module("conveyor_host")
    log, _ = conveyor_log_and_report(tmp_path, 2, lambda r, p: 4.0 if p else 3.5)
    rows = bench_module("step_speed").steps(str(log))
    halves = mod.halves(rows, 4)
    assert len(halves) == 4 and all(len(h) == 26 for h in halves)
    m = mod.measure(halves[0])  # round 0 goes lazy first
    assert abs(m["prefill"] - 3.5) < 1e-9 and m["decode"] == 45.0 and m["gap"] > 1.9


def test_host_recovers_the_gain_at_equal_speed(tmp_path):
    mod = bench_module("conveyor_host")
    a, b, r = mod.fit([-0.1, 0.0, 0.1, 0.2], [0.12, 0.10, 0.08, 0.06])
    assert abs(a - 0.10) < 1e-12 and abs(b + 0.2) < 1e-12 and abs(r + 1) < 1e-12
    # The partial halves on a host 0–15% slower than their lazy halves, round by round.
    slow = [1.0, 1.05, 1.1, 1.15, 1.0, 1.1]
    log, report = conveyor_log_and_report(tmp_path, 6, lambda r, p: 4.0 * (slow[r] if p else 1))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "conveyor_host.py"), "plan",
                          str(report), str(log)], capture_output=True, text=True,
                         check=True).stdout
    assert out.count("\n| ") == 6, out  # a row a round (the header opens the output)
    assert "| 1.100 |" in out and "correlation -1.00" in out
    # At equal speed a round saves the 1.9 s of tool wait, of a lazy round's 11.09 s.
    assert "At a ratio of 1 (both halves on an equally fast host): 17.1%" in out, out
    assert "The 2 rounds whose halves ran within 2% of each other's speed" in out  # rounds 0, 4
    assert "mean gain 17.1%, 0.34 of the bound" in out


def test_sampler_line_leaves_the_server_out_and_step_speed_reads_it_back():
    sampler = bench_module("proc_sampler")
    # /proc/stat: user nice system idle iowait irq softirq steal; 2 CPUs, 100 ticks each a second
    m0, m1 = [0] * 8, [150, 0, 10, 30, 10, 0, 0, 3]
    p0 = {"10": ("tandem serve", 100), "11": ("kworker/0:1-events", 5), "12": ("python3", 7)}
    p1 = {"10": ("tandem serve", 280), "11": ("kworker/0:1-mm_percpu_wq", 9),
          "12": ("python3", 9), "13": ("tandem bench", 1)}
    totals = {"steal": 0, "run": 0.0, "wait": 0.0, "max_wait": 0.0, "others": {}}
    prev = (T0, m0, (0, 0), p0)
    cur = (T0 + 1, m1, (1_800_000_000, 40_000_000), p1)
    text = sampler.line(prev, cur, totals)
    assert "busy  80.3%" in text and "steal 3" in text, text  # (203 - 30 - 10) / 203 ticks
    assert "serve cpu 1.80 s, run-queue wait 0.04 s" in text
    assert "kworker/0:1:4 python3:2 tandem bench:1" in text and "serve:" not in text, text
    assert totals["others"] == {"kworker/0:1": 4, "python3": 2, "tandem bench": 1}
    assert totals["steal"] == 3 and abs(totals["max_wait"] - 0.04) < 1e-12
    # The line is what bench/step_speed.py's --samples join parses.
    m = bench_module("step_speed").SAMPLE.match(text)
    assert m and m.group(2) == "3" and m.group(3) == "1.80" and m.group(4) == "0.04", text
