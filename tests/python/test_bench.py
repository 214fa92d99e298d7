"""`tandem bench` end to end against the test server: a workload file with client-side tool
segments, Poisson arrivals, and the JSON/Markdown report."""
import json
import subprocess

from conftest import BIN


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


def test_bench_rejects_bad_workload(tmp_path):
    wl = tmp_path / "bad.jsonl"
    wl.write_text(json.dumps({"segments": [{"decode_tokens": 3, "tool": {"name": "t", "duration_s": 0, "result_tokens": 1}}], "prompt_tokens": 4}) + "\n")
    r = subprocess.run([str(BIN), "bench", "--workload", str(wl)], capture_output=True, text=True)
    assert r.returncode != 0 and "last segment" in r.stderr
