"""The OpenAI API against the real model: the official client, streaming, greedy
determinism under concurrency, prefix reuse, stop strings and metrics."""
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests
from conftest import Server

MODEL = "SmolLM2-135M-Instruct.Q4_1"


def chat(client, content, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kw
    )


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_known_prompt_greedy_completion(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text.startswith(" Paris")
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


def test_chat_with_openai_client(client):
    r = chat(client, "Name a color.")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_concatenates_to_non_streamed_text(client):
    full = chat(client, "Write one sentence about the sea.", max_tokens=40)
    chunks = list(chat(client, "Write one sentence about the sea.", max_tokens=40, stream=True,
                       stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_concurrent_requests_give_sequential_greedy_tokens(fresh_server):
    # Its own server: KV that other tests leave behind changes which prefixes are reused, and
    # a batch mixing sequences whose prompt chunks differ in length can round differently
    # (docs/architecture.md, "Prefix reuse").
    client = openai.OpenAI(base_url=fresh_server.url + "/v1", api_key="unused", max_retries=0)
    prompts = [f"Count from {i} to {i + 5}." for i in range(6)]
    sequential = [chat(client, p).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda p: chat(client, p).choices[0].message.content, prompts))
    assert concurrent == sequential


def test_prefix_reuse_matches_cold_request(client, fresh_server):
    first = [{"role": "user", "content": "Tell me a fact about owls."}]
    r1 = client.chat.completions.create(model=MODEL, messages=first, temperature=0, max_tokens=30)
    second = first + [
        {"role": "assistant", "content": r1.choices[0].message.content},
        {"role": "user", "content": "And one about cats?"},
    ]
    warm = client.chat.completions.create(model=MODEL, messages=second, temperature=0, max_tokens=30)
    assert warm.usage.prompt_tokens_details.cached_tokens == r1.usage.prompt_tokens
    cold = requests.post(fresh_server.url + "/v1/chat/completions",
                         json={"messages": second, "temperature": 0, "max_tokens": 30}).json()
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert warm.choices[0].message.content == cold["choices"][0]["message"]["content"]


def test_a_new_conversation_reuses_the_system_prompt_it_shares_with_another(fresh_server):
    url = fresh_server.url + "/v1/chat/completions"
    system = {"role": "system", "content": "You are a careful research assistant. Answer in one "
              "short paragraph and say so plainly when you do not know the answer."}
    users = ["Describe how rivers carve canyons over millions of years, why some canyons are "
             "deeper than others, and what role floods and rock hardness play in it.",
             "Explain why the sky looks blue during the day and red around sunset, in simple "
             "words a child could follow, and what changes on a cloudy or a dusty day."]
    post = lambda msgs: requests.post(url, json={"messages": msgs, "temperature": 0, "max_tokens": 8}).json()
    first = [system, {"role": "user", "content": users[0]}]
    r1 = post(first)
    r2 = post([system, {"role": "user", "content": users[1]}])
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    # The system prompt (and the template's text around it), not the other conversation.
    assert 25 < cached < r2["usage"]["prompt_tokens"] // 2, r2["usage"]
    assert fresh_server.metric("tandem_prefix_copies_total") == 1
    assert fresh_server.metric("tandem_prefix_copied_tokens_total") == cached
    # The first conversation kept its own KV: its follow-up reuses all of its prompt.
    follow = first + [{"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
                      {"role": "user", "content": "Shorter, please."}]
    r3 = post(follow)
    assert r3["usage"]["prompt_tokens_details"]["cached_tokens"] == r1["usage"]["prompt_tokens"]


def test_a_burst_sharing_a_system_prompt_prefills_it_once(fresh_server):
    # Requests that arrive together copy the long system prompt from the first one while it is
    # still running (in-flight prefix sharing); in exact mode their greedy outputs are those of
    # the same requests sent one at a time afterwards (which reuse retained KV instead).
    client = openai.OpenAI(base_url=fresh_server.url + "/v1", api_key="unused", max_retries=0)
    rules = " ".join(f"Rule {i}: answer briefly, cite no sources, and stay on topic {i}." for i in range(20))
    system = {"role": "system", "content": "You are a terse assistant. " + rules}
    questions = ["What is rain?", "Why is grass green?", "What is a volcano?", "Who builds bridges?"]
    ask = lambda q: client.chat.completions.create(
        model=MODEL, messages=[system, {"role": "user", "content": q}], temperature=0, max_tokens=4,
        logprobs=True)
    with ThreadPoolExecutor(len(questions)) as pool:
        burst = list(pool.map(ask, questions))
    copies = fresh_server.metric("tandem_prefix_copies_inflight_total")
    assert copies >= len(questions) - 2, copies
    assert sum(r.usage.prompt_tokens_details.cached_tokens > 200 for r in burst) >= copies
    # Batches that mix prompt chunks of different lengths round differently in the last bits
    # (see test_concurrent_requests_give_sequential_greedy_tokens; with sharing off, a burst's
    # log-probabilities differ from one-by-one runs by up to ~0.02 too), so the check is on
    # the first tokens and their log-probabilities: a copy of the wrong or unfinished KV would
    # change them wholesale.
    for b, o in zip(burst, [ask(q) for q in questions]):
        bl, ol = b.choices[0].logprobs.content[:2], o.choices[0].logprobs.content[:2]
        assert [t.token for t in bl] == [t.token for t in ol]
        assert max(abs(x.logprob - y.logprob) for x, y in zip(bl, ol)) < 0.25


@pytest.mark.parametrize("flash", ["auto", "on"])
def test_default_reuse_takes_the_whole_previous_turn(default_server, flash):
    """With the default flags (flash attention off on a CPU, `--flash-attn auto`), and with it
    on, which no other test serves with; the startup log names the setting."""
    s = default_server if flash == "auto" else Server("--max-seqs", "2", "--kv-cells", "4096",
                                                      "--flash-attn", "on")
    try:
        named = {"auto": "flash attention off (--flash-attn Auto)",
                 "on": "flash attention on (--flash-attn On)"}[flash]
        assert named in open(s.log.name).read()
        whole_turn_reused(s.url + "/v1/chat/completions")
    finally:
        if s is not default_server:
            s.stop()


def whole_turn_reused(url):
    first = [{"role": "user", "content": "Tell me a fact about owls."}]
    r1 = requests.post(url, json={"messages": first, "temperature": 0, "max_tokens": 30}).json()
    second = first + [
        {"role": "assistant", "content": r1["choices"][0]["message"]["content"]},
        {"role": "user", "content": "And one about cats?"},
    ]
    r2 = requests.post(url, json={"messages": second, "temperature": 0, "max_tokens": 30}).json()
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    # The prompt and (nearly all of) the reply were reused, not just the prompt.
    assert cached > r1["usage"]["prompt_tokens"] + r1["usage"]["completion_tokens"] // 2
    assert r2["choices"][0]["message"]["content"]


def test_a_stop_string_end_reports_the_reused_prompt(fresh_server):
    # The server ends such a request itself; its usage still says how much of the prompt the
    # engine reused (it used to say 0).
    url = fresh_server.url + "/v1/chat/completions"
    msgs = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
    first = requests.post(url, json={"messages": msgs, "temperature": 0, "max_tokens": 40}).json()
    text = first["choices"][0]["message"]["content"]
    stop = text[len(text) // 2:][:4]  # greedy: the same text comes again and stops there
    again = requests.post(url, json={"messages": msgs, "temperature": 0, "max_tokens": 40,
                                     "stop": [stop]}).json()
    assert again["choices"][0]["finish_reason"] == "stop"
    assert again["usage"]["completion_tokens"] < first["usage"]["completion_tokens"]
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, again["usage"]


def test_stop_strings(client):
    base = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    text = base.choices[0].text
    assert "7" in text, text
    cut = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["7", "zzz"])
    assert cut.choices[0].text == text[: text.index("7")]
    assert cut.choices[0].finish_reason == "stop"
    # vLLM's stop_reason: the stop string that ended the choice, null otherwise.
    assert cut.choices[0].model_extra["stop_reason"] == "7"
    assert base.choices[0].model_extra["stop_reason"] is None
    streamed = list(client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12,
                                              temperature=0, stop="7", stream=True))
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text
    assert streamed[-1].choices[0].model_extra["stop_reason"] == "7"
    msgs = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    chat_cut = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0,
                                              max_tokens=40, stop=["5", "zzz"])
    assert chat_cut.choices[0].model_extra["stop_reason"] == "5", chat_cut
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, temperature=0,
                                                 max_tokens=40, stop=["5"], stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].model_extra["stop_reason"] == "5"


def test_seeded_sampling_is_reproducible(client):
    a = chat(client, "Invent a name.", temperature=1.0, seed=7).choices[0].message.content
    b = chat(client, "Invent a name.", temperature=1.0, seed=7).choices[0].message.content
    assert a == b


def test_ignore_eos_generates_exactly_max_tokens(client):
    r = chat(client, "Say OK.", max_tokens=50, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 50 and r.choices[0].finish_reason == "length"


def test_max_completion_tokens(client):
    r = chat(client, "Describe the weather.", max_tokens=None, max_completion_tokens=5)
    assert r.usage.completion_tokens == 5


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", max_tokens=0)
    assert e.value.body["param"] == "max_tokens"


def test_metrics_exposes_engine_state(server, client):
    chat(client, "Hi")
    text = requests.get(server.url + "/metrics").text
    for name in ["tandem_requests_total", "tandem_queue_length", "tandem_running_requests",
                 "tandem_kv_cells_used", "tandem_kv_cells_free", "tandem_prompt_tokens_total",
                 "tandem_generation_tokens_total", "tandem_time_to_first_token_seconds_bucket",
                 "tandem_inter_token_latency_seconds_bucket", "tandem_step_duration_seconds_bucket"]:
        assert name in text, name
