"""`n` > 1: several choices for one prompt, non-streamed and streamed, chat and text
completions; seeded choices are reproducible, the prompt is counted once and prefilled once.
A text completion's list of prompts (OpenAI's batch form): `n` choices for each, in prompt
order, each as that prompt alone would get it."""
import openai
import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "Name a fruit and say why you like it."}]


def texts(r):
    return [c.message.content for c in sorted(r.choices, key=lambda c: c.index)]


def test_seeded_choices_differ_and_repeat(client):
    kw = dict(model=MODEL, messages=ASK, max_tokens=10, temperature=1.0, seed=11, n=3)
    r = client.chat.completions.create(**kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len(set(texts(r))) > 1, texts(r)
    assert texts(client.chat.completions.create(**kw)) == texts(r)
    assert r.usage.completion_tokens == 30 and r.usage.total_tokens == r.usage.prompt_tokens + 30
    one = client.chat.completions.create(**{**kw, "n": 1})
    assert r.usage.prompt_tokens == one.usage.prompt_tokens, "the prompt is counted once"
    assert texts(one) == texts(r)[:1], "choice 0 samples with the request's seed"


def test_greedy_choices_are_the_same(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=0, n=2,
                                       logprobs=True)
    assert texts(r)[0] == texts(r)[1]
    assert all(len(c.logprobs.content) == 8 for c in r.choices)


def test_streamed_choices_match_the_non_streamed_ones(client):
    kw = dict(model=MODEL, messages=ASK, max_tokens=10, temperature=1.0, seed=12, n=2)
    full = client.chat.completions.create(**kw)
    parts, finishes, usage = {0: "", 1: ""}, {}, []
    for chunk in client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage.append(chunk.usage)
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert [parts[0], parts[1]] == texts(full)
    assert finishes == {0: "length", 1: "length"}
    assert len(usage) == 1 and usage[0].completion_tokens == full.usage.completion_tokens == 20


def test_text_completion_choices_with_echo(client):
    kw = dict(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0.8, seed=3,
              n=2, echo=True, extra_body={"ignore_eos": True})
    r = client.completions.create(**kw)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.text.startswith("The capital of France is") for c in r.choices)
    assert r.usage.completion_tokens == 8 and r.usage.prompt_tokens == 5
    streamed = {0: "", 1: ""}
    for chunk in client.completions.create(**kw, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert [streamed[0], streamed[1]] == [c.text for c in r.choices]


def test_choices_prefill_a_long_prompt_once(server, client):
    before = server.metric("tandem_prefix_copies_inflight_total") or 0
    facts = " ".join(f"Fact {i}: the number {i} comes after {i - 1}." for i in range(1, 40))
    msgs = [{"role": "system", "content": facts}, {"role": "user", "content": "Which fact is first?"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, temperature=1.0,
                                       seed=5, n=4)
    assert r.usage.prompt_tokens > 300
    assert server.metric("tandem_prefix_copies_inflight_total") - before == 3


@pytest.mark.parametrize("n", [0, -1, 129])
def test_bad_n_is_400(client, n):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, n=n)
    assert e.value.body["param"] == "n"
    assert "between 1 and 128" in e.value.body["message"]


PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Roses are red,"]


def alone(client, prompt, **kw):
    return client.completions.create(model=MODEL, prompt=prompt, **kw)


def test_a_list_of_prompts_gives_each_its_choices_in_order(client):
    kw = dict(max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    r = client.completions.create(model=MODEL, prompt=PROMPTS, n=2, **kw)
    assert [c.index for c in r.choices] == list(range(6))
    singles = [alone(client, p, **kw) for p in PROMPTS]
    assert [c.text for c in r.choices] == [s.choices[0].text for s in singles for _ in range(2)]
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert r.usage.completion_tokens == 36


def test_token_id_prompts_and_a_streamed_list(server, client):
    ids = [requests.post(server.url + "/tokenize", json={"content": p}).json()["tokens"]
           for p in PROMPTS[:2]]
    kw = dict(max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    by_ids = client.completions.create(model=MODEL, prompt=ids, **kw)
    by_text = client.completions.create(model=MODEL, prompt=PROMPTS[:2], **kw)
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]
    streamed, usage = {0: "", 1: ""}, []
    for chunk in client.completions.create(model=MODEL, prompt=PROMPTS[:2], stream=True,
                                           stream_options={"include_usage": True}, **kw):
        if chunk.usage:
            usage.append(chunk.usage)
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert [streamed[0], streamed[1]] == [c.text for c in by_text.choices]
    assert len(usage) == 1 and usage[0].prompt_tokens == by_text.usage.prompt_tokens


def test_each_prompt_echoes_and_scores_itself(client):
    r = client.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=2, temperature=0,
                                  echo=True, logprobs=1)
    for prompt, c in zip(PROMPTS[:2], r.choices):
        assert c.text.startswith(prompt)
        assert "".join(c.logprobs.tokens).startswith(prompt)
        assert c.logprobs.token_logprobs[0] is None


def test_many_prompts_in_one_request(client):
    prompts = [f"{i} + {i} =" for i in range(40)]
    r = client.completions.create(model=MODEL, prompt=prompts, max_tokens=2, temperature=0)
    assert [c.index for c in r.choices] == list(range(40))
    for i in (0, 17, 39):
        assert r.choices[i].text == alone(client, prompts[i], max_tokens=2, temperature=0).choices[0].text


@pytest.mark.parametrize("prompt,n,param,says", [
    ([], 1, "prompt", "empty list"),
    (["a", ""], 1, "prompt[1]", "must not be empty"),
    ([[1, 2], [3, 10**7]], 1, "prompt[1]", "token ids must be in"),
    (["a"] * 129, 2, "prompt", "at most 256 completions (prompts times n) fit the server's queue"),
])
def test_bad_prompt_lists_are_400(client, prompt, n, param, says):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=prompt, n=n, max_tokens=2)
    assert e.value.body["param"] == param
    assert says in e.value.body["message"]
