"""Interceptions over HTTP: scripted tool segments (`--allow-scripted`) pause a request inside
the server and resume it with the tool's tokens, under each policy; bad scripts get 400s; a
client that leaves during a pause frees everything; the bench's server-side mode and its
augmentation workload run end to end and report the server's interception counters."""
import json
import os
import subprocess
import time

import pytest
import requests

from conftest import BIN, COSTS, EXACT, Server

SEGMENTS = [
    {"decode_tokens": 6, "tool": {"name": "search", "duration_s": 0.4, "result_tokens": 20}},
    {"decode_tokens": 5, "tool": {"name": "calc", "duration_s": 0.0, "result_tokens": 3}},
    {"decode_tokens": 4},
]


def chat(url, **extra):
    body = {"messages": [{"role": "user", "content": "Tell me about the moon."}],
            "temperature": 0, **extra}
    return requests.post(url + "/v1/chat/completions", json=body, timeout=120)


# Server flags per policy. `swap-short`: a host pool with room for 18 tokens of KV (23,056
# bytes each), less than a paused request holds, so each pause swaps a head and discards the
# tail.
POLICIES = {
    "min-waste": ["--intercept-policy", "min-waste"],
    "preserve": ["--intercept-policy", "preserve"],
    "swap": ["--intercept-policy", "swap"],
    "discard": ["--intercept-policy", "discard"],
    "swap-short": ["--intercept-policy", "swap", "--swap-space", "0.0004"],
}


@pytest.fixture(scope="module", params=list(POLICIES))
def scripted(request):
    s = Server("--max-seqs", "4", "--kv-cells", "8192", "--allow-scripted",
               *POLICIES[request.param], *EXACT)
    s.policy = request.param
    yield s
    s.stop()


def test_segments_need_the_flag(server):
    r = chat(server.url, segments=SEGMENTS)
    assert r.status_code == 400
    assert "--allow-scripted" in r.json()["error"]["message"]


@pytest.mark.parametrize("segments, words", [
    ([], "empty"),
    ([{"decode_tokens": 3, "tool": {"name": "t", "duration_s": 0, "result_tokens": 1}}], "last segment"),
    ([{"decode_tokens": 0}], "at least 1"),
    ([{"decode_tokens": 2, "tool": {"name": "t", "duration_s": -1, "result_tokens": 1}},
      {"decode_tokens": 1}], "duration_s"),
    ([{"decode_tokens": 2, "tool": {"name": "t", "duration_s": 0, "result_tokens": 5000}},
      {"decode_tokens": 1}], "sequence holds"),
])
def test_bad_scripts_are_rejected(scripted, segments, words):
    r = chat(scripted.url, segments=segments)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]
    assert chat(scripted.url, max_tokens=2).status_code == 200  # still serving


def test_segments_of_the_wrong_shape_are_422(scripted):
    r = chat(scripted.url, segments="nope")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_scripted_request_pauses_and_resumes(scripted):
    before = scripted.metric("tandem_interceptions_total") or 0
    partial = scripted.metric("tandem_partial_swaps_total") or 0
    t0 = time.time()
    r = chat(scripted.url, segments=SEGMENTS, max_tokens=1)
    took = time.time() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 15  # the script decides, not max_tokens
    # The tools' 20 + 3 tokens are input: counted in prompt_tokens and named apart.
    prompt = chat(scripted.url, max_tokens=1).json()["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens_details"]["appended_tokens"] == 23
    assert body["usage"]["prompt_tokens"] == prompt + 23
    assert body["usage"]["total_tokens"] == prompt + 23 + 15
    assert body["choices"][0]["finish_reason"] == "length"
    assert took >= 0.4  # the tool time passed inside the request
    assert scripted.metric("tandem_interceptions_total") == before + 2
    heads = (scripted.metric("tandem_partial_swaps_total") or 0) - partial
    if scripted.policy == "swap-short":
        # The 0.4 s pause is placed; the 0 s one may resume before its first step.
        assert heads in (1, 2)
    else:
        assert heads == 0


def test_a_short_pool_keeps_the_head_of_a_conversation_leaving_its_slot(scripted):
    if scripted.policy != "swap-short":
        pytest.skip("needs a host pool smaller than a conversation")
    before = scripted.metric("tandem_retained_partial_swaps_total") or 0
    topics = ["rivers", "comets", "bridges", "violins", "glaciers", "bees"]
    # 6 conversations, 4 slots: the oldest leave for the host pool. Each starts differently
    # (its own system prompt), so none takes over another's slot by a prefix match.
    for topic in topics:
        messages = [{"role": "system", "content": f"{topic.capitalize()} are your only subject."},
                    {"role": "user", "content": f"Tell me three facts about {topic}, briefly."}]
        body = {"messages": messages, "temperature": 0, "max_tokens": 2}
        r = requests.post(scripted.url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
    assert (scripted.metric("tandem_retained_partial_swaps_total") or 0) >= before + 1
    assert scripted.metric("tandem_swap_used_bytes") <= 18 * 23_056


def test_streamed_output_matches_across_policies(scripted, tmp_path_factory):
    """Greedy output through two pauses is the same under every policy (bit-exact mode),
    a partial swap included."""
    r = chat(scripted.url, segments=SEGMENTS)
    text = r.json()["choices"][0]["message"]["content"]
    store = tmp_path_factory.getbasetemp() / "scripted-text.json"
    if store.exists():
        assert json.loads(store.read_text()) == text
    else:
        store.write_text(json.dumps(text))


def test_client_leaving_during_a_pause_frees_everything(scripted):
    long = [{"decode_tokens": 4, "tool": {"name": "slow", "duration_s": 30, "result_tokens": 4}},
            {"decode_tokens": 4}]
    body = {"messages": [{"role": "user", "content": "hi"}], "segments": long, "stream": True}
    with requests.post(scripted.url + "/v1/chat/completions", json=body, stream=True,
                       timeout=30) as r:
        chunks = r.iter_lines()
        for _ in range(4):
            next(chunks)
    deadline = time.time() + 10
    while time.time() < deadline:
        paused = sum(scripted.metric(f'tandem_paused_requests{{placement="{p}"}}') or 0
                     for p in ("device", "host", "discarded"))
        if paused == 0 and scripted.metric("tandem_running_requests") == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the paused request was not released")
    assert chat(scripted.url, max_tokens=2).status_code == 200


def test_costs_are_measured_and_exported(scripted):
    assert scripted.metric("tandem_cost_forward_per_token_seconds") > 0
    assert scripted.metric("tandem_cost_attention_per_pair_seconds") >= 0
    assert scripted.metric("tandem_cost_attention_row_per_pair_seconds") >= 0
    assert scripted.metric("tandem_cost_sample_per_row_seconds") >= 0
    assert 20000 < scripted.metric("tandem_cost_kv_bytes_per_token") < 26000
    assert scripted.metric("tandem_swap_budget_tokens") >= 1


GAUGES = {"fwd_base_s": "forward_base_seconds", "fwd_per_token_s": "forward_per_token_seconds",
          "attn_per_pair_s": "attention_per_pair_seconds",
          "attn_row_per_pair_s": "attention_row_per_pair_seconds",
          "sample_per_row_s": "sample_per_row_seconds", "swap_out_per_token_s": "swap_out_per_token_seconds",
          "swap_in_per_token_s": "swap_in_per_token_seconds", "kv_bytes_per_token": "kv_bytes_per_token"}


def test_saved_costs_are_taken_at_the_next_start(server, tmp_path):
    """The session's first server profiled the model and saved its costs (--save-costs); a
    server started with them (--costs) serves with those figures, and saves them back."""
    saved = json.loads(COSTS.read_text())
    again = tmp_path / "again.json"
    s = Server("--max-seqs", "2", "--kv-cells", "2048", "--costs", str(COSTS), "--save-costs", str(again))
    try:
        for field, gauge in GAUGES.items():
            assert s.metric("tandem_cost_" + gauge) == pytest.approx(saved[field], rel=1e-9), field
        r = chat(s.url, max_tokens=4)
        assert r.status_code == 200, r.text
    finally:
        s.stop()
    # Equal to the last bit (serde_json parses with `float_roundtrip`).
    assert json.loads(again.read_text()) == saved
    assert "costs from --costs" in open(s.log.name).read()


@pytest.mark.parametrize("change, words", [
    ({"kv_bytes_per_token": 40000}, "another model"),
    ({"fwd_per_token_s": -1}, "finite number of seconds"),
    ({"swap_budget": 3}, "unknown field"),
])
def test_costs_of_another_model_or_malformed_stop_the_start(server, tmp_path, change, words):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(COSTS.read_text()), **change}))
    p = subprocess.run([str(BIN), "serve", "--port", "0", "--costs", str(bad)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "RUST_BACKTRACE": "0"})
    assert p.returncode != 0 and words in p.stderr, p.stderr


def test_bench_server_side_augment(scripted, tmp_path):
    out = tmp_path / "aug"
    subprocess.run([str(BIN), "bench", "--url", scripted.url, "--workload", "augment:qa",
                    "--scale", "0.05", "--requests", "3", "--rate", "10", "--server-side-tools",
                    "--quiet", "--out", str(out)], check=True, timeout=300)
    rep = json.loads((tmp_path / "aug.json").read_text())
    s = rep["summary"]
    assert s["completed"] == 3 and s["errors"] == 0, rep["first_errors"]
    assert s["server"]["interceptions"] >= 3
    assert s["server"]["forward_s"] > 0
    assert "interceptions" in (tmp_path / "aug.md").read_text()


def test_bench_rejects_unknown_augmentation():
    r = subprocess.run([str(BIN), "bench", "--workload", "augment:nope"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "unknown augmentation" in r.stderr
