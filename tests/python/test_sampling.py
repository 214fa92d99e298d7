"""Sampling fields and log-probabilities against the real model, through the official `openai`
client: `logprobs` / `top_logprobs` (chat) and `logprobs` (completions), streamed and not;
prompt scores (`echo` with `logprobs`), checked against teacher-forced one-token completions;
`logit_bias`, `frequency_penalty` / `presence_penalty`, and the vLLM / llama-server
extensions `top_k`, `min_p`, `repetition_penalty`; `/tokenize` and `/detokenize`, which give
`logit_bias` its ids. Each test fails if its field is ignored."""
import math

import openai
import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
PROMPT = "The capital of France is"


def tokenize(server, text, **kw):
    r = requests.post(server.url + "/tokenize", json={"content": text, **kw}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def complete(client, **kw):
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    kw.setdefault("prompt", PROMPT)
    return client.completions.create(model=MODEL, **kw)


def chat(client, content, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kw)


def test_chat_logprobs_describe_every_greedy_token(client):
    r = chat(client, "Name a fruit.", logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    # The end-of-turn token counts in usage but is not output, so it has no entry.
    assert r.choices[0].finish_reason == "stop" and len(content) == r.usage.completion_tokens - 1
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token
        tops = [a.logprob for a in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        # Greedy takes the most likely token of the raw distribution.
        assert t.top_logprobs[0].token == t.token and math.isclose(tops[0], t.logprob)
        assert sum(math.exp(x) for x in tops) <= 1.0001


def test_streamed_logprobs_match_the_response(client):
    full = chat(client, "Write one sentence about the sea.", max_tokens=24, logprobs=True, top_logprobs=1)
    chunks = list(chat(client, "Write one sentence about the sea.", max_tokens=24, logprobs=True,
                       top_logprobs=1, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in full.choices[0].logprobs.content]
    # Each chunk carries the figures of the tokens whose text it carries.
    for c in chunks:
        if c.choices and c.choices[0].logprobs:
            assert "".join(t.token for t in c.choices[0].logprobs.content) == c.choices[0].delta.content


def test_no_logprobs_unless_asked(client):
    assert chat(client, "Hi.").choices[0].logprobs is None
    assert complete(client).choices[0].logprobs is None


def test_completion_logprobs_legacy_shape(client):
    r = complete(client, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and lp.tokens[0] == " Paris"
    assert len(lp.token_logprobs) == len(lp.tokens) == r.usage.completion_tokens
    offsets = [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.text_offset == offsets
    for tok, l, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert top[tok] == l and len(top) <= 3
    streamed = complete(client, logprobs=2, stream=True)
    tokens = [t for c in streamed if c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == lp.tokens


def test_logprob_requests_out_of_range_are_rejected(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", logprobs=True, top_logprobs=21)
    assert e.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", top_logprobs=2)
    assert e.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, logprobs=1, echo=True, stream=True)
    assert e.value.body["param"] == "stream"


def teacher_forced(client, ids, token):
    """`token`'s log-probability after the prompt `ids`, read off a one-token completion's
    20 alternatives (None when it is not among them)."""
    r = complete(client, prompt=ids, max_tokens=1, logprobs=20)
    return r.choices[0].logprobs.top_logprobs[0].get(token)


def test_echo_with_logprobs_scores_every_prompt_token(server, client):
    text = "The capital of France is Paris"
    ids = tokenize(server, text)["tokens"]
    r = complete(client, prompt=text, echo=True, logprobs=3, max_tokens=2)
    lp = r.choices[0].logprobs
    n = len(ids)
    assert len(lp.tokens) == n + r.usage.completion_tokens
    assert "".join(lp.tokens[:n]) == text and r.choices[0].text.startswith(text)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    compared = 0
    for i in range(1, n):
        top = lp.top_logprobs[i]
        assert top[lp.tokens[i]] == lp.token_logprobs[i] and len(top) <= 4
        expected = teacher_forced(client, ids[:i], lp.tokens[i])
        if expected is not None:
            assert lp.token_logprobs[i] == pytest.approx(expected, abs=1e-4)
            compared += 1
    assert compared >= 3
    # The same prompt again: scored in full (no reused KV, which has no logits), same figures.
    again = complete(client, prompt=text, echo=True, logprobs=3, max_tokens=2)
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    assert again.choices[0].logprobs.token_logprobs == lp.token_logprobs
    # As lm-evaluation-harness sends it: a batch of one token-id prompt.
    batched = complete(client, prompt=[ids], echo=True, logprobs=3, max_tokens=2)
    assert batched.choices[0].logprobs.token_logprobs == lp.token_logprobs
    # A batch of two: each scored as alone (batched rows may round differently in the last bits).
    pair = complete(client, prompt=[ids, ids], echo=True, logprobs=3, max_tokens=2)
    assert len(pair.choices) == 2
    for c in pair.choices:
        assert c.logprobs.token_logprobs[0] is None
        assert c.logprobs.token_logprobs[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-4)


def test_prompt_scores_span_prefill_chunks(server, client):
    """A prompt longer than a step's batch is scored chunk by chunk, with no gap or repeat."""
    text = " ".join(f"item {i} is {i * 7 % 13}." for i in range(120))
    ids = tokenize(server, text)["tokens"]
    assert len(ids) > 600  # more than one 512-token step
    r = complete(client, prompt=ids, echo=True, logprobs=0, max_tokens=1)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    assert all(isinstance(x, float) and x <= 0 for x in lp.token_logprobs[1:])
    checked = 0
    for i in range(505, len(ids)):  # rows of the second chunk, and around the boundary
        expected = teacher_forced(client, ids[:i], lp.tokens[i])
        if expected is not None:
            assert lp.token_logprobs[i] == pytest.approx(expected, abs=1e-3)
            checked += 1
        if checked == 4:
            break
    assert checked == 4


def test_tokenize_and_detokenize_round_trip(server):
    out = tokenize(server, " Paris is big<|im_end|>", with_pieces=True)
    assert out["count"] == len(out["tokens"]) and out["max_model_len"] > 0
    assert "".join(t["piece"] for t in out["tokens"]) == " Paris is big<|im_end|>"
    assert out["tokens"][-1]["piece"] == "<|im_end|>", "special tokens are parsed"
    ids = [t["id"] for t in out["tokens"]]
    assert tokenize(server, " Paris is big<|im_end|>")["tokens"] == ids
    assert tokenize(server, "x", add_special=True)["count"] >= tokenize(server, "x")["count"]
    back = requests.post(server.url + "/detokenize", json={"tokens": ids}, timeout=10).json()
    assert back["content"] == back["prompt"] == " Paris is big<|im_end|>"
    vllm = requests.post(server.url + "/tokenize", json={"prompt": "hi", "model": MODEL}, timeout=10)
    assert vllm.json()["tokens"] == tokenize(server, "hi")["tokens"]
    bad = requests.post(server.url + "/detokenize", json={"tokens": [-1]}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    assert requests.post(server.url + "/tokenize", json={}, timeout=10).status_code == 422


def test_logit_bias_forces_and_bans_a_token(client, server):
    (paris,) = tokenize(server, " Paris")["tokens"]
    forced = complete(client, prompt="Once upon a time", max_tokens=3, logit_bias={str(paris): 100})
    assert forced.choices[0].text == " Paris" * 3
    base = complete(client, max_tokens=1).choices[0].text
    banned = complete(client, max_tokens=1, logit_bias={str(paris): -100}).choices[0].text
    assert base == " Paris" and banned != " Paris"
    with pytest.raises(openai.BadRequestError) as e:
        complete(client, logit_bias={"99999999": 1})
    assert e.value.body["param"] == "logit_bias"


def repeats(client, **kw):
    """How many of 40 greedy tokens repeat an earlier one."""
    extra = {"ignore_eos": True, **kw.pop("extra_body", {})}
    r = complete(client, prompt="My favourite colours are", max_tokens=40, logprobs=0, extra_body=extra, **kw)
    tokens = r.choices[0].logprobs.tokens
    return len(tokens) - len(set(tokens))


def test_penalties_change_how_often_greedy_output_repeats(client):
    plain = repeats(client)  # 27 on 2026-11-23
    for kw in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0},
               {"extra_body": {"repetition_penalty": 1.3}}):
        assert repeats(client, **kw) < plain, kw
    assert repeats(client, frequency_penalty=-1.0) > plain


def test_top_k_1_and_min_p_1_sample_the_greedy_token(client):
    greedy = complete(client, max_tokens=12).choices[0].text
    for seed in (1, 2, 3):
        for extra in ({"top_k": 1}, {"min_p": 1.0}):
            r = complete(client, max_tokens=12, temperature=1.5, seed=seed, extra_body=extra)
            assert r.choices[0].text == greedy, (seed, extra)
    # Without them, temperature 1.5 leaves the greedy path for some seed.
    wild = {complete(client, max_tokens=12, temperature=1.5, seed=s).choices[0].text for s in (1, 2, 3)}
    assert wild != {greedy}


@pytest.mark.parametrize("field,value", [
    ("frequency_penalty", 2.5), ("presence_penalty", -2.5), ("top_k", -2), ("min_p", 1.5),
    ("repetition_penalty", 0),
])
def test_sampling_values_out_of_range_name_their_field(client, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", extra_body={field: value})
    assert e.value.body["param"] == field


def test_prompt_scores_are_the_same_beside_other_requests(client):
    """Scored rows are found by their place in a batch shared with other requests."""
    from concurrent.futures import ThreadPoolExecutor

    text = "Water boils at one hundred degrees Celsius at sea level."
    alone = complete(client, prompt=text, echo=True, logprobs=1, max_tokens=1)
    busy = lambda i: complete(client, prompt=f"Story {i}: once upon a time", max_tokens=40)
    with ThreadPoolExecutor(4) as ex:
        others = [ex.submit(busy, i) for i in range(3)]
        together = ex.submit(complete, client, prompt=text, echo=True, logprobs=1, max_tokens=1)
        [f.result() for f in others]
        got = together.result().choices[0].logprobs.token_logprobs
    want = alone.choices[0].logprobs.token_logprobs
    assert got[0] is None and len(got) == len(want)
    assert got[1:] == pytest.approx(want[1:], abs=1e-3)
