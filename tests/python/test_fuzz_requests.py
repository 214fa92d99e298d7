"""Property-based fuzzing of request bodies (hypothesis): valid requests to every endpoint with
one to three fields set to odd values (other fields' values, wrong types, out-of-range numbers,
unknown keys), fields removed, or the JSON cut short. Whatever comes in, the server answers
with 200 or a 4xx carrying the endpoint's error object (OpenAI's, or Anthropic's on
/v1/messages), never a 5xx or a dropped connection; streams run to their end; and afterwards
the server is idle, holds KV only for retained conversations, and still answers. The examples
are derandomized, so a CI run tries the same ones every time; a failure prints the body that
caused it."""
import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "SmolLM2-135M-Instruct.Q4_1"
HI = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

# Fields of messages, tools and input items.
INNER = ["role", "content", "type", "text", "name", "tool_calls", "tool_call_id", "function",
         "arguments", "parameters", "input_schema", "id", "call_id", "output", "tool_use_id"]

# Fields never removed: without them a request may generate up to the whole context.
LENGTH = {"max_tokens", "max_completion_tokens", "max_output_tokens"}

# Small counts (a long generation would make each example slow), invalid numbers and odd
# types for any field.
NUMBERS = st.one_of(st.integers(-3, 6), st.sampled_from([2**64, -2**63, 1.5, -0.0, 1e300]))
LEAF = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=12))
ANY = st.recursive(LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=6)

SAMPLING = {
    "temperature": [0, 0.7, 2.5, -1], "top_p": [0.5, 0, 1.5], "top_k": [0, 5, -2],
    "min_p": [0.1, 2], "seed": [7, -1], "frequency_penalty": [0.5, 3], "presence_penalty": [-2.5],
    "repetition_penalty": [1.1, 0], "logit_bias": [{"42": 5}, {"x": 1}, {"99999999": 1}],
    "stop": ["\n", ["a", "b"], [""], [1]], "ignore_eos": [True], "min_tokens": [2, 50],
    "stream": [True, False], "stream_options": [{"include_usage": True}, {"x": 1}],
    "n": [2, 0, 200], "model": [MODEL, "gpt-4o", ""],
    "structured_outputs": [{"choice": ["a", "b"]}, {"json": SCHEMA, "disable_any_whitespace": True},
                           {"regex": "("}, {"grammar": 'root ::= "x"'}, {"nope": 1}],
    "guided_json": [SCHEMA, "{bad"], "guided_regex": ["[a-z]{2}"], "guided_choice": [[], ["x"]],
    "grammar": ['root ::= "a" | "b"', "start: x"], "json_schema": [SCHEMA, {"type": "objekt"}],
    "prediction": [{"type": "content", "content": "hi there"}, {"type": "text"}, "hi"],
}
CHAT = {
    **SAMPLING,
    "messages": [[], [{"role": "wizard", "content": "x"}], [{"role": "user"}],
                 [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                               {"type": "image_url", "image_url": {"url": "x"}}]}],
                 [{"role": "tool", "content": "3"}],
                 [{"role": "assistant", "content": None,
                   "tool_calls": [{"id": "c", "type": "function",
                                   "function": {"name": "f", "arguments": "{bad"}}]}],
                 [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]],
    "max_tokens": [4, 0, -1], "max_completion_tokens": [3, 0],
    "tools": [[TOOL], [{"type": "function"}], [TOOL, TOOL], {}],
    "tool_choice": ["auto", "required", "none", {"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "g"}}, "sometimes"],
    "parallel_tool_calls": [False, "no"],
    "response_format": [{"type": "json_object"}, {"type": "text"}, {"type": "xml"},
                        {"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}},
                        {"type": "json_schema"}],
    "logprobs": [True], "top_logprobs": [2, 50],
    "server_tools": [["calc"], ["nope"]], "replay": [["hi"]], "segments": [[{"tokens": 1}]],
    "functions": [[{"name": "f", "parameters": SCHEMA}]], "function_call": ["auto", {"name": "g"}],
    "continue_final_message": [True],
}
COMPLETIONS = {
    **SAMPLING,
    "prompt": ["hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]], [], [-1], [10**9], ""],
    "max_tokens": [4, 0], "echo": [True], "logprobs": [2, 30, True], "suffix": ["x"],
    "best_of": [2], "response_format": [{"type": "json_object"}],
}
RESPONSES = {
    "input": ["", [], [{"role": "user", "content": "hi"}], [{"type": "function_call_output"}],
              [{"type": "message", "role": "wizard", "content": "x"}], 5],
    "instructions": ["be brief", 3], "max_output_tokens": [3, 0, -4],
    "tools": [[{"type": "function", "name": "f", "parameters": SCHEMA}], [{"type": "web_search"}]],
    "tool_choice": ["required", "none", {"type": "function", "name": "f"}],
    "text": [{"format": {"type": "json_object"}}, {"format": {"type": "json_schema"}}, "x"],
    "previous_response_id": ["resp_unknown", 3], "store": [False], "stream": [True],
    "temperature": [0, 9], "background": [True], "truncation": ["auto", "disabled"],
    "include": [["message.output_text.logprobs"]], "metadata": [{"a": "b"}, {"a": 1}],
    "messages": [HI], "model": [MODEL, "x"],
}
MESSAGES = {
    "model": [MODEL, "claude-x", None], "max_tokens": [3, 0, -1],
    "messages": [[], [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                 [{"role": "user", "content": [{"type": "image", "source": {}}]}],
                 [{"role": "assistant", "content": "hi"}],
                 [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]],
    "system": ["be brief", [{"type": "text", "text": "x"}], 4],
    "tools": [[{"name": "f", "input_schema": SCHEMA}], [{"name": "f"}]],
    "tool_choice": [{"type": "any"}, {"type": "tool", "name": "g"}, {"type": "maybe"}],
    "stop_sequences": [["\n"], "x"], "stream": [True], "temperature": [0, 3], "top_k": [2, -1],
    "thinking": [{"type": "enabled", "budget_tokens": 10}],
}
EMBEDDINGS = {"input": ["hi", ["a", "b"], [1, 2], [[1], [2]], [], [""], 5],
              "encoding_format": ["float", "base64", "hex"], "dimensions": [8, 0],
              "model": [MODEL, "x"]}
TOKENIZE = {"content": ["hi <|im_end|>", 5, ""], "add_special": [True, "yes"],
            "with_pieces": [True]}
DETOKENIZE = {"tokens": [[1, 2], [-1], [10**9], "1", []]}

ENDPOINTS = {
    "/v1/chat/completions": ({"messages": HI, "max_tokens": 4}, CHAT),
    "/v1/completions": ({"prompt": "Once upon a time", "max_tokens": 4}, COMPLETIONS),
    "/v1/responses": ({"input": "hi", "max_output_tokens": 4}, RESPONSES),
    "/v1/messages": ({"model": MODEL, "max_tokens": 4, "messages": HI}, MESSAGES),
    "/v1/embeddings": ({"input": "hi"}, EMBEDDINGS),
    "/v1/messages/count_tokens": ({"model": MODEL, "messages": HI}, MESSAGES),
    "/tokenize": ({"content": "hi"}, TOKENIZE),
    "/detokenize": ({"tokens": [1, 2]}, DETOKENIZE),
}


@st.composite
def mutated(draw, path):
    """A valid body for `path` with one to three changes, as JSON text: a field set to one of
    its typical values (valid or not) or to any JSON, a field removed, or a field of its first
    message (tool, input item) set to any JSON."""
    base, fields = ENDPOINTS[path]
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(fields)) | st.text(min_size=1, max_size=10))
        action = draw(st.sampled_from(["typical", "typical", "any", "remove", "inner"]))
        inner = body.get(key)
        if action == "remove" and key not in LENGTH:
            body.pop(key, None)
        elif action == "inner" and isinstance(inner, list) and inner and isinstance(inner[0], dict):
            # a field of a message, tool or input item
            inner[0][draw(st.sampled_from(INNER) | st.text(max_size=6))] = draw(ANY)
        elif action == "typical" and key in fields:
            body[key] = draw(st.sampled_from(fields[key]))
        else:
            body[key] = draw(ANY)
    text = json.dumps(body)
    if draw(st.integers(0, 19)) == 7:  # now and then (not a bound, which hypothesis favours), JSON cut short
        text = text[:draw(st.integers(0, len(text) - 1))]
    return text


def check_answer(path, r):
    assert r.status_code in (200, 400, 404, 413, 422), (r.status_code, r.text[:500])
    if r.status_code != 200:
        err = r.json()
        if path.startswith("/v1/messages"):
            assert err["type"] == "error" and err["error"]["message"], err
        else:
            assert isinstance(err["error"]["message"], str) and err["error"]["message"], err
        return
    if "text/event-stream" not in r.headers.get("content-type", ""):
        r.json()
        return
    for line in r.iter_lines(decode_unicode=True):  # a stream must run to its end
        if line.startswith("data: ") and line != "data: [DONE]":
            json.loads(line[6:])


@pytest.fixture(scope="module")
def fuzzed():
    from conftest import Server
    s = Server("--max-seqs", "4", "--kv-cells", "8192", "--embeddings", "--tools", "calc",
               "--prompt-lookup", "3")
    yield s
    s.stop()


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_odd_request_bodies_get_an_answer_or_a_clear_error(fuzzed, path):
    base, _ = ENDPOINTS[path]
    check_answer(path, requests.post(fuzzed.url + path, json=base, timeout=60))

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated(path))
    def odd(text):
        with requests.post(fuzzed.url + path, data=text.encode(), stream=True, timeout=120,
                           headers={"content-type": "application/json"}) as r:
            check_answer(path, r)

    odd()
    assert fuzzed.wait_idle(), "requests still running after every answer came"
    used, retained = (fuzzed.metric(f"tandem_kv_cells_{k}") for k in ("used", "retained"))
    assert used == retained, f"{used - retained} KV cells held by no request nor retained turn"
    check_answer(path, requests.post(fuzzed.url + path, json=base, timeout=60))
