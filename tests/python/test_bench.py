"""`tandem bench` end to end against the test server: a workload file with client-side tool
segments, Poisson arrivals, and the JSON/Markdown report; the paired interval that
bench/intercept_table.py puts on a latency ratio."""
import importlib.util
import json
import random
import subprocess

from conftest import BIN, ROOT


def test_bench_runs_tool_loop_workload(server, tmp_path):
    wl = tmp_path / "w.jsonl"
    rows = [
        {"id": "a", "prompt_tokens": 40, "segments": [
            {"decode_tokens": 8, "tool": {"name": "t", "duration_s": 0.2, "result_tokens": 16}},
            {"decode_tokens": 6}]},
        {"id": "b", "messages": [{"role": "user", "content": "hi"}], "segments": [{"decode_tokens": 5}]},
    ]
    wl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "report"  # the bench appends .json and .md
    subprocess.run([str(BIN), "bench", "--url", server.url, "--workload", str(wl), "--rate", "20",
                    "--requests", "4", "--quiet", "--out", str(out)], check=True, timeout=120)
    rep = json.loads((tmp_path / "report.json").read_text())
    s = rep["summary"]
    assert s["completed"] == 4 and s["errors"] == 0, rep["first_errors"]
    assert s["output_tokens"] == 2 * (8 + 6) + 2 * 5  # ignore_eos: exactly the asked tokens
    assert s["latency_s"]["p99"] >= 0.2  # the tool pause is part of completion latency
    assert 0 < s["normalized_latency_s"]["mean"] < s["latency_s"]["mean"]
    assert s["cached_prompt_tokens"] > 0  # the follow-up turn reused the first turn's prompt KV
    assert "| run |" in (tmp_path / "report.md").read_text()
    reqs = rep["requests"]  # per request, for pairing runs of the same workload
    assert sorted(q["id"] for q in reqs) == ["a", "a", "b", "b"]
    assert all(q["ok"] and q["latency_s"] > 0 for q in reqs)
    assert sum(q["output_tokens"] for q in reqs) == s["output_tokens"]


def test_bench_system_prompt_is_shared_by_every_request(fresh_server, tmp_path):
    wl = tmp_path / "w.jsonl"
    wl.write_text(json.dumps({"prompt_tokens": 30, "segments": [{"decode_tokens": 4}]}) + "\n")
    out = tmp_path / "report"
    subprocess.run([str(BIN), "bench", "--url", fresh_server.url, "--workload", str(wl),
                    "--concurrency", "1", "--requests", "3", "--system-prompt-tokens", "150",
                    "--quiet", "--out", str(out)], check=True, timeout=120)
    rep = json.loads((tmp_path / "report.json").read_text())
    s = rep["summary"]
    assert rep["config"]["system_prompt_tokens"] == 150
    assert s["completed"] == 3 and s["prompt_tokens"] > 3 * 150, s
    # Different user turns after one system text: the 2nd and 3rd reuse its KV.
    assert s["cached_prompt_tokens"] >= 2 * 120, s


def test_bench_system_prompt_is_refused_for_the_conveyor_workload():
    r = subprocess.run([str(BIN), "bench", "--workload", "conveyor", "--system-prompt-tokens", "50"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--system-prompt-tokens does not apply" in r.stderr, r.stderr


def bench_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def intercept_table():
    return bench_module("intercept_table")


def test_paired_ratio_interval():
    paired_ratio = intercept_table().paired_ratio
    rng = random.Random(3)
    base = {f"r{i}": rng.uniform(2, 30) for i in range(50)}
    # Every request exactly twice as slow: the ratio is 2 whatever the resample.
    r, lo, hi = paired_ratio({k: 2 * v for k, v in base.items()}, base)
    assert abs(r - 2) < 1e-9 and abs(lo - 2) < 1e-9 and abs(hi - 2) < 1e-9
    # Noisy pairs: the interval holds the point estimate and has some width.
    noisy = {k: v * rng.uniform(1.5, 2.5) for k, v in base.items()}
    r, lo, hi = paired_ratio(noisy, base)
    assert lo < r < hi and hi - lo > 0.05
    # Only requests both runs completed count; fewer than two gives no interval.
    r, _, _ = paired_ratio({**noisy, "extra": 1000.0}, base)
    assert abs(r - paired_ratio(noisy, base)[0]) < 1e-12
    assert paired_ratio({"a": 1.0}, {"a": 2.0, "b": 1.0}) is None


def test_sustained_rate_ratio_says_when_the_grid_ends_first():
    mod = intercept_table()
    run = lambda norm: {"errors": 0, "normalized_latency_s": {"mean": norm}}
    lat = {"latency": {}, "normalized": {}}
    rates = ["0.1", "0.2", "0.4"]
    runs = {"discard": {"0.1": run(0.1), "0.2": run(0.9)},
            "min-waste": {r: run(0.03) for r in rates}}
    lats = {n: {r: lat for r in rs} for n, rs in runs.items()}
    t = mod.targets(runs, lats, rates, 0.25)
    assert t["sustained_rate_ratio_min_waste_over_discard"] == 4.0
    assert t["sustained_rate_ratio_is_a_lower_bound"] is True
    runs["min-waste"]["0.4"] = run(0.5)  # saturates inside the grid: the ratio is measured
    t = mod.targets(runs, lats, rates, 0.25)
    assert t["sustained_rate_ratio_min_waste_over_discard"] == 2.0
    assert t["sustained_rate_ratio_is_a_lower_bound"] is False
    assert abs(t["norm_latency_ratio_discard_over_min_waste"] - 0.1 / 0.03) < 1e-12


def test_server_part_takes_the_tools_time_out():
    mod = intercept_table()
    ids = [f"r{i}" for i in range(5)]
    lat = lambda total, tool: {"latency": {i: total for i in ids}, "tool": {i: tool for i in ids},
                               "server": {i: total - tool for i in ids}}
    out = mod.server_part({"min-waste": {"0.8": lat(10.0, 8.0)},
                           "llama-server": {"0.8": lat(12.0, 8.0)}}, ["0.8"])
    assert abs(out["tool_share_of_min_waste_latency"]["0.8"] - 0.8) < 1e-12
    ci = out["server_time_ratio_llama_server_over_min_waste_paired_ci95"]["0.8"]
    assert abs(ci["ratio"] - 2.0) < 1e-12  # 4 s against 2 s, not 12 against 10


def test_bench_rejects_bad_workload(tmp_path):
    wl = tmp_path / "bad.jsonl"
    wl.write_text(json.dumps({"segments": [{"decode_tokens": 3, "tool": {"name": "t", "duration_s": 0, "result_tokens": 1}}], "prompt_tokens": 4}) + "\n")
    r = subprocess.run([str(BIN), "bench", "--workload", str(wl)], capture_output=True, text=True)
    assert r.returncode != 0 and "last segment" in r.stderr


def test_machine_speed_reads_the_servers_cost_lines(tmp_path):
    machine_speed = intercept_table().machine_speed
    assert machine_speed(tmp_path) is None  # no server logs (a simulated sweep): nothing said
    line = ("\x1b[2m2026-12-02T16:06:31Z\x1b[0m INFO costs: forward {} ms + {} ms/token + attention"
            " 1.966 us per (token, earlier token) pair (19.931 us in rows under 64 tokens) + 1.408 ms"
            " per sampled row; swap out 4.14 us/token, in 2.43 us/token; 23054 KV bytes/token;"
            " swap budget 512 tokens/step\n")
    (tmp_path / "tandem-min-waste.log").write_text(line.format("0.00", "5.467") + "other line\n"
                                                     + line.format("20.15", "4.282"))
    (tmp_path / "tandem-discard.log").write_text(line.format("1.00", "6.408"))
    (tmp_path / "llama-server.log").write_text(line.format("0", "99.0"))  # not tandem's
    # A server given --costs logs those costs too, but they are not this machine's speed.
    (tmp_path / "tandem-preset.log").write_text("INFO costs from --costs smollm2-cpu, not profiled\n"
                                                + line.format("3.59", "2.782"))
    assert machine_speed(tmp_path) == "tandem's startup profiles: 4.28–6.41 ms a batch token over 3 servers"


def test_cost_profile_parser_reads_the_short_row_price_whatever_the_tile(tmp_path):
    profiles = bench_module("cost_profile_median").profiles
    line = ("costs: forward 3.00 ms + 2.500 ms/token + attention 1.500 us per (token, earlier token)"
            " pair (12.000 us in rows under {} tokens) + 1.000 ms per sampled row; swap out 2.50"
            " us/token, in 1.80 us/token; 23054 KV bytes/token; swap budget 512 tokens/step\n")
    for tile in (64, 32):
        path = tmp_path / f"tandem-{tile}.log"
        path.write_text(line.format(tile))
        (found,) = list(profiles([str(path)]))
        assert found[3] == "12.000" and found[4] == "1.000", (tile, found)


def test_metrics_reader_reads_a_servers_counters(server):
    """bench/metrics.py, the /metrics reader of grammar.py, json_layout.py and jump_forward.py:
    a counter's value, 0.0 for one not recorded, None for a server without /metrics."""
    import requests

    counters = bench_module("metrics").counters
    steps = "tandem_step_duration_seconds_count"
    before = counters(server.url, [steps, "tandem_no_such_counter_total"])
    body = {"prompt": "Hello", "max_tokens": 3, "temperature": 0}
    requests.post(server.url + "/v1/completions", json=body, timeout=60).raise_for_status()
    after = counters(server.url, [steps, "tandem_no_such_counter_total"])
    assert after[steps] > before[steps] and after["tandem_no_such_counter_total"] == 0.0
    assert counters("http://127.0.0.1:9", [steps]) is None
