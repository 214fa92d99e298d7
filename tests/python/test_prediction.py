"""OpenAI's predicted outputs (`prediction`) through the `openai` client: the predicted text is
verified as a speculative draft, and usage says how many of its tokens were accepted and
rejected (`completion_tokens_details`), streamed or not, on chat and text completions, also
under a grammar (`response_format`, structured outputs); a bad prediction, or one combined
with tools, is a 400. Prompt lookup (`--prompt-lookup`) drafts from the context without a
prediction, also under tool grammars."""
import json
import re

import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "Write a Python function that returns the square of a number."}]


def chat(client, **kw):
    return client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=48,
                                          temperature=0, **kw)


def test_a_right_prediction_is_accepted(client, server):
    plain = chat(client)
    text = plain.choices[0].message.content
    assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0
    metric = lambda name: server.metric(f"tandem_prediction_{name}_tokens_total") or 0
    before = metric("accepted"), metric("rejected")
    r = chat(client, prediction={"type": "content", "content": text})
    details = r.usage.completion_tokens_details
    assert (metric("accepted") - before[0], metric("rejected") - before[1]) == (
        details.accepted_prediction_tokens, details.rejected_prediction_tokens)
    # Drafted rows round differently from one-row decoding, so a near-tie may part the two
    # outputs; up to there the prediction is the output.
    assert details.accepted_prediction_tokens >= 8, r.usage
    assert r.usage.completion_tokens == plain.usage.completion_tokens
    assert r.choices[0].message.content[:20] == text[:20]


def test_an_unrelated_prediction_changes_nothing(client):
    plain = chat(client)
    r = chat(client, prediction={"type": "content", "content": [
        {"type": "text", "text": "Prices rose by four percent "}, {"type": "text", "text": "in May."}]})
    assert r.choices[0].message.content == plain.choices[0].message.content
    assert r.usage.completion_tokens_details.accepted_prediction_tokens == 0


def test_a_stream_reports_the_counts(client):
    text = chat(client).choices[0].message.content
    stream = chat(client, prediction={"type": "content", "content": text}, stream=True,
                  stream_options={"include_usage": True})
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage.completion_tokens_details.accepted_prediction_tokens >= 8, usage
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed[:20] == text[:20]


def test_text_completions_take_a_prediction(client):
    prompt = "def square(x):\n    "
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0,
                                  extra_body={"prediction": {"type": "content",
                                                             "content": plain.choices[0].text}})
    assert r.usage.completion_tokens_details.accepted_prediction_tokens >= 8, r.usage


PERSON = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
    "type": "object", "required": ["name", "city", "hobbies"], "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                   "hobbies": {"type": "array", "items": {"type": "string"}}}}}}
DESCRIBE = [{"role": "user", "content": "Describe a person who lives in Paris and likes "
                                        "painting, cycling and old films, as JSON."}]


def test_a_prediction_is_drafted_under_a_json_schema(client):
    """Each drafted row is sampled under the grammar's mask after the drafted tokens before
    it; forced text (the schema's keys) is drafted too. The output still follows the schema."""
    ask = dict(model=MODEL, messages=DESCRIBE, max_tokens=80, temperature=0,
               response_format=PERSON)
    plain = client.chat.completions.create(**ask)
    text = plain.choices[0].message.content
    json.loads(text)
    assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0
    r = client.chat.completions.create(**ask, prediction={"type": "content", "content": text})
    out = json.loads(r.choices[0].message.content)
    assert set(out) == {"name", "city", "hobbies"}, out
    assert r.usage.completion_tokens_details.accepted_prediction_tokens >= 8, r.usage
    assert r.choices[0].message.content[:20] == text[:20]
    # A prediction the grammar refuses from its first token (not JSON) drafts nothing: the
    # scheduler cuts the draft before the runner sees it.
    r = client.chat.completions.create(**ask, prediction={"type": "content", "content": "Paris"})
    details = r.usage.completion_tokens_details
    assert details.accepted_prediction_tokens + details.rejected_prediction_tokens == 0, details
    assert r.choices[0].message.content == text


def test_a_prediction_never_breaks_the_rule(client):
    """The prompt pulls toward digits, which the rule forbids. Whether the prediction is the
    output, leaves the rule partway (digits: the draft is cut there) or is text the model
    does not write, the output keeps the rule and is the output without a prediction."""
    ask = dict(model=MODEL, prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=24, temperature=0)
    rule = {"guided_regex": "[a-z ,]{1,60}"}
    plain = client.completions.create(**ask, extra_body=rule).choices[0].text
    assert re.fullmatch(rule["guided_regex"], plain), plain
    for prediction in [plain, plain[: len(plain) // 2] + " 9, 10, 11, 12", "a b c d e f g h i j"]:
        r = client.completions.create(**ask, extra_body={
            **rule, "prediction": {"type": "content", "content": prediction}})
        assert re.fullmatch(rule["guided_regex"], r.choices[0].text), (prediction, r.choices[0].text)
        assert r.choices[0].text == plain


def test_a_prediction_is_drafted_under_a_structured_output_rule(client):
    ask = dict(model=MODEL, prompt="Three colours: ", max_tokens=24, temperature=0)
    rule = {"guided_regex": "(red|green|blue|yellow)(, (red|green|blue|yellow)){2}"}
    plain = client.completions.create(**ask, extra_body=rule)
    text = plain.choices[0].text
    r = client.completions.create(**ask, extra_body={
        **rule, "prediction": {"type": "content", "content": text}})
    assert r.choices[0].text == text
    assert r.usage.completion_tokens_details.accepted_prediction_tokens >= 3, r.usage


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("extra, says", [
    ({"prediction": {"type": "content"}}, "prediction must be"),
    ({"prediction": {"type": "text", "content": "x"}}, "prediction must be"),
    ({"prediction": {"type": "content", "content": [{"type": "image_url"}]}}, "prediction must be"),
    ({"prediction": {"type": "content", "content": "x"}, "tools": TOOLS}, "tools"),
    ({"prediction": {"type": "content", "content": "x"}, "tools": TOOLS, "tool_choice": "none",
      "response_format": {"type": "json_object"}}, "tools"),
])
def test_bad_predictions_are_400(server, extra, says):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "prediction" and says in err["message"], err


@pytest.fixture(scope="module")
def lookup_server():
    from conftest import Server
    s = Server("--max-seqs", "4", "--kv-cells", "8192", "--prompt-lookup", "3")
    yield s
    s.stop()


def test_prompt_lookup_drafts_a_copy_of_the_prompt(lookup_server):
    """`--prompt-lookup 3`: output that copies its prompt is drafted from it, with no
    prediction sent; the drafts show in /metrics, not in the usage (they are not the client's
    prediction)."""
    from openai import OpenAI
    client = OpenAI(base_url=lookup_server.url + "/v1", api_key="unused", max_retries=0)
    code = "def load_users(path):\n    with open(path) as f:\n        return [line.strip() for line in f]\n"
    prompt = f"Original file:\n```python\n{code}```\n\nThe same file, unchanged:\n```python\n"
    metric = lambda name: lookup_server.metric(f"tandem_lookup_{name}_tokens_total") or 0
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, temperature=0,
                                  stop=["```"])
    assert r.choices[0].text.startswith("def load_users(path):"), r.choices[0].text
    assert metric("accepted") >= 10, (metric("accepted"), metric("rejected"))
    details = r.usage.completion_tokens_details
    assert details is None or details.accepted_prediction_tokens == 0, r.usage


NOTE = "The quarterly review moved to Thursday at 3pm in room B, bring the sales figures."
# The string is bounded: copying the note, SmolLM2 (flash attention off, the default on a CPU)
# goes on repeating it inside the string until max_tokens, and the call is then cut off
# (`finish_reason: "length"`), where these tests need a complete one.
SAVE = [{"type": "function", "function": {"name": "save_note", "description": "Save a note.",
         "parameters": {"type": "object", "required": ["text"],
                        "properties": {"text": {"type": "string", "maxLength": 120}}}}}]


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_prompt_lookup_drafts_a_tool_calls_arguments(lookup_server, choice):
    """Output that copies the prompt is drafted under a tool grammar: with `required`, the
    call's argument under the call grammar (the call still parses); with `auto`, where this
    model answers in text, the free text a lazy grammar watches for a call's opening tag."""
    from openai import OpenAI
    client = OpenAI(base_url=lookup_server.url + "/v1", api_key="unused", max_retries=0)
    before = lookup_server.metric("tandem_lookup_accepted_tokens_total") or 0
    r = client.chat.completions.create(
        model=MODEL, temperature=0, max_tokens=80, tools=SAVE, tool_choice=choice,
        messages=[{"role": "user", "content": f"Save this note exactly as written: {NOTE}"}])
    calls = r.choices[0].message.tool_calls
    if choice == "required":
        assert calls and calls[0].function.name == "save_note", r.choices[0].message
        text = json.loads(calls[0].function.arguments)["text"]
    else:
        text = r.choices[0].message.content
    accepted = (lookup_server.metric("tandem_lookup_accepted_tokens_total") or 0) - before
    assert accepted >= 5 and NOTE[:20] in text, (accepted, text)


def test_drafting_requests_together_and_a_client_leaving_mid_draft(lookup_server):
    """Requests that draft at once (a prediction under a JSON schema, lookup copies, a tool
    call) batch together; one whose client leaves mid-stream is dropped; the server ends idle
    and still answers."""
    import concurrent.futures as cf
    url = lookup_server.url
    code = "def load_users(path):\n    with open(path) as f:\n        return [line.strip() for line in f]\n"
    copy = {"model": MODEL, "max_tokens": 40, "temperature": 0, "stop": ["```"],
            "prompt": f"Original file:\n```python\n{code}```\n\nThe same file, unchanged:\n```python\n"}
    person = {"model": MODEL, "max_tokens": 60, "temperature": 0, "messages": DESCRIBE,
              "response_format": PERSON,
              "prediction": {"type": "content", "content": '{"name": "Marie", "city": "Paris"'}}
    saved = {"model": MODEL, "max_tokens": 60, "temperature": 0, "tools": SAVE,
             "tool_choice": "required",
             "messages": [{"role": "user", "content": f"Save this note exactly as written: {NOTE}"}]}
    jobs = [("/v1/completions", copy), ("/v1/chat/completions", person),
            ("/v1/chat/completions", saved), ("/v1/completions", copy)]
    with cf.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(requests.post, url + path, json=body, timeout=120) for path, body in jobs]
        with requests.post(url + "/v1/completions", json={**copy, "stream": True, "max_tokens": 200,
                                                          "stop": []}, stream=True) as r:
            lines = r.iter_lines()
            [next(lines) for _ in range(4)]  # leave after a few chunks
        for f in futures:
            assert f.result().status_code == 200, f.result().text
    assert lookup_server.wait_idle(20)
    r = requests.post(url + "/v1/completions", json=copy, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith("def load_users")
