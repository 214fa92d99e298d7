"""The second architecture, Gemma 3 270M (the base model, Q4_K_M GGUF: sliding-window
attention, a 262k-token vocabulary), fetched by `scripts/fetch-model.sh gemma3-270m` (`.ci/run`
does). Its GGUF has no chat template, so chat is rendered in Gemma's turns; a stream gives the
text a whole response gives; a follow-up turn reuses the conversation's KV and gives the tokens
of a cold request; embeddings are unit vectors of its hidden size (640) from packed
decodes; and a request paused twice by scripted tool calls gives the same tokens
whether its KV stayed, went to the host pool or was dropped and recomputed."""
import json
import os
from pathlib import Path

import pytest
import requests

from conftest import EXACT, ROOT, Server

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tandem" / "models"
GEMMA = CACHE / "gemma-3-270m-q4_k_m.gguf"
# Its own cost profile: the default model's would be refused (another KV size per token).
COSTS = ROOT / "target" / f"test-costs-gemma-{os.getpid()}.json"
SEGMENTS = [
    {"decode_tokens": 6, "tool": {"name": "search", "duration_s": 0.3, "result_tokens": 20}},
    {"decode_tokens": 5, "tool": {"name": "calc", "duration_s": 0.1, "result_tokens": 3}},
    {"decode_tokens": 4},
]
POLICIES = ("preserve", "swap", "discard")
# Every server runs bit-exact mode: on this model's Q4_K_M weights its kernels (tiled K-quant
# matmul off, weights unrepacked) make a reused prefix give the logits of a cold prompt, and
# text compared across servers must come from the same kernels (docs/architecture.md).
# `cold` serves the requests that the others' are compared with, and none of their history.


@pytest.fixture(scope="module")
def gemma():
    assert GEMMA.is_file(), f"{GEMMA} is missing: run scripts/fetch-model.sh gemma3-270m"
    servers = {}
    try:
        for policy in POLICIES:
            costs = ("--costs" if COSTS.exists() else "--save-costs", str(COSTS))
            servers[policy] = Server("--model", str(GEMMA), "--max-seqs", "4", "--kv-cells", "8192",
                                     "--allow-scripted", "--intercept-policy", policy, *costs,
                                     *EXACT)
        servers["cold"] = Server("--model", str(GEMMA), "--max-seqs", "4", "--kv-cells", "8192",
                                 "--costs", str(COSTS), "--embeddings", *EXACT)
        yield servers
    finally:
        for s in servers.values():
            s.stop()
        COSTS.unlink(missing_ok=True)


def post(server, path, **body):
    r = requests.post(server.url + path, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_paused_request_gives_the_same_tokens_under_every_placement(gemma):
    """First in this file: the three servers have served nothing before it."""
    texts = {}
    for policy in POLICIES:
        s = gemma[policy]
        before = {m: s.metric(m) or 0 for m in ("tandem_swap_out_bytes_total",
                                                "tandem_recomputed_tokens_total")}
        body = post(s, "/v1/chat/completions", segments=SEGMENTS, temperature=0,
                    messages=[{"role": "user", "content": "Tell me about the moon."}])
        assert body["usage"]["completion_tokens"] == 15
        assert body["usage"]["prompt_tokens_details"]["appended_tokens"] == 23
        texts[policy] = body["choices"][0]["message"]["content"]
        swapped = s.metric("tandem_swap_out_bytes_total") - before["tandem_swap_out_bytes_total"]
        recomputed = (s.metric("tandem_recomputed_tokens_total")
                      - before["tandem_recomputed_tokens_total"])
        assert (swapped > 0, recomputed > 0) == (policy == "swap", policy == "discard"), policy
    assert texts["swap"] == texts["preserve"] and texts["discard"] == texts["preserve"], texts


def test_chat_is_rendered_in_gemma_turns(gemma):
    s = gemma["preserve"]
    models = requests.get(s.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["gemma-3-270m-q4_k_m"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = post(s, "/v1/chat/completions", messages=messages, max_tokens=1)
    text = "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    tokens = post(s, "/tokenize", content=text, add_special=True)["tokens"]
    assert r["usage"]["prompt_tokens"] == len(tokens)
    assert len(post(s, "/tokenize", content="<start_of_turn>")["tokens"]) == 1


def test_a_stream_gives_the_whole_text(gemma):
    s = gemma["cold"]
    body = {"prompt": "The three longest rivers in the world are", "max_tokens": 24,
            "temperature": 0}
    whole = post(s, "/v1/completions", **body)["choices"][0]["text"]
    with requests.post(s.url + "/v1/completions", json={**body, "stream": True}, stream=True,
                       timeout=120) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines(decode_unicode=True)
                  if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert streamed == whole and len(whole) > 0


def test_a_follow_up_reuses_the_conversation_and_matches_a_cold_request(gemma):
    warm_server, cold_server = gemma["preserve"], gemma["cold"]
    first = [{"role": "user", "content": "Tell me a fact about owls."}]
    r1 = post(warm_server, "/v1/chat/completions", messages=first, temperature=0, max_tokens=20)
    second = first + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                      {"role": "user", "content": "And one about cats?"}]
    warm = post(warm_server, "/v1/chat/completions", messages=second, temperature=0, max_tokens=20)
    cold = post(cold_server, "/v1/chat/completions", messages=second, temperature=0, max_tokens=20)
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] == r1["usage"]["prompt_tokens"]
    # Of the conversation, nothing: at most the BOS token an earlier request there began with.
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] <= 1
    assert warm["choices"][0]["message"]["content"] == cold["choices"][0]["message"]["content"]


def test_embeddings_on_its_architecture(gemma):
    s = gemma["cold"]
    texts = ["a cat", "stock market news", "a kitten"]
    data = post(s, "/v1/embeddings", input=texts, encoding_format="float")["data"]
    vs = [d["embedding"] for d in data]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert all(len(v) == 640 and abs(dot(v, v) - 1) < 1e-4 for v in vs)
    assert dot(vs[0], vs[2]) > dot(vs[0], vs[1]) + 0.2  # 0.96 against 0.43 on 2026-12-03
    alone = post(s, "/v1/embeddings", input=texts[1], encoding_format="float")["data"][0]
    assert dot(alone["embedding"], vs[1]) > 0.9995
