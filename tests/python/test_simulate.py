"""`tandem simulate` end to end: a workload file and the augmentation workload through the
scheduler in virtual time, its report read by bench/intercept_table.py as the real runs are,
costs taken from a running server's /metrics, and bad input refused with a clear message."""
import json
import subprocess

from conftest import BIN, ROOT


def simulate(*args, check=True):
    return subprocess.run([str(BIN), "simulate", *args], capture_output=True, text=True,
                          timeout=120, check=check)


def test_a_workload_file_runs_in_virtual_time(tmp_path):
    wl = tmp_path / "w.jsonl"
    rows = [{"id": "a", "prompt_tokens": 40, "segments": [
        {"decode_tokens": 8, "tool": {"name": "t", "duration_s": 2.5, "result_tokens": 16}},
        {"decode_tokens": 6}]}]
    wl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "sim"
    simulate("--workload", str(wl), "--rate", "1", "--requests", "3", "--out", str(out))
    rep = json.loads((tmp_path / "sim.json").read_text())
    s = rep["summary"]
    assert s["completed"] == 3 and s["output_tokens"] == 3 * 14
    assert all(q["tool_time_s"] == 2.5 and q["latency_s"] > 2.5 for q in rep["requests"])
    assert s["server"]["interceptions"] == 3
    assert rep["config"]["simulated"] is True and rep["config"]["cost_profile"]["kv_bytes_per_token"] > 0
    assert "simulated:" in (tmp_path / "sim.md").read_text()


def test_policies_compare_through_the_table_script(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for policy, extra in [("min-waste", []), ("discard", ["--resume-order", "tail"])]:
        simulate("--workload", "augment", "--scale", "0.1", "--rate", "0.2", "--requests", "12",
                 "--seed", "7", "--max-seqs", "4", "--kv-cells", "8192", "--intercept-policy", policy,
                 *extra, "--out", str(runs / f"{policy}-0.2"))
    prefix = tmp_path / "table"
    subprocess.run(["python3", str(ROOT / "bench" / "intercept_table.py"), str(runs), "0.2", "0.1", "100",
                    str(prefix), "bench/simulate-policies.sh", "simulated"], check=True, timeout=60)
    t = json.loads((tmp_path / "table.json").read_text())
    d, m = t["runs"]["discard"]["0.2"], t["runs"]["min-waste"]["0.2"]
    assert d["server"]["recomputed_tokens"] > 0 and m["server"]["recompute_share"] < d["server"]["recompute_share"]
    assert "0.2" in t["targets"]["norm_latency_ratio_discard_over_min_waste_by_rate_paired_ci95"]
    assert "simulated" in (tmp_path / "table.md").read_text()


def test_costs_from_a_running_server(server, tmp_path):
    out = tmp_path / "sim"
    simulate("--costs-from", server.url, "--rate", "0.5", "--requests", "4", "--scale", "0.1",
             "--out", str(out))
    rep = json.loads((tmp_path / "sim.json").read_text())
    assert rep["config"]["costs"] == server.url
    assert rep["config"]["cost_profile"]["fwd_per_token_s"] > 0
    assert rep["summary"]["completed"] == 4


def test_bad_input_is_refused_with_a_message(tmp_path):
    r = simulate("--costs", "nope", "--rate", "1", check=False)
    assert r.returncode != 0 and "neither a preset" in r.stderr
    bad = tmp_path / "c.json"
    bad.write_text('{"fwd_base_s": 0.01}')
    r = simulate("--costs", str(bad), "--rate", "1", check=False)
    assert r.returncode != 0 and "missing field" in r.stderr
    wl = tmp_path / "w.jsonl"
    wl.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}],
                              "segments": [{"decode_tokens": 3}]}) + "\n")
    r = simulate("--workload", str(wl), "--rate", "1", check=False)
    assert r.returncode != 0 and "prompt_tokens" in r.stderr
    r = simulate("--rate", "0", check=False)
    assert r.returncode != 0 and "--rate" in r.stderr
