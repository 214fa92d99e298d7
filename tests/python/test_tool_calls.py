"""Function calling through the `openai` client against the real model: forced and named
calls validate against 20 varied schemas, `none` makes no call, `parallel_tool_calls: false`
never yields two, streamed deltas reassemble to the non-streamed calls, a call cut by
`max_tokens` is a call with `finish_reason: "length"`, response_format, and bad tool
definitions get a 400 naming the problem."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import requests

SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
    {"type": "object", "properties": {"flag": {"type": "boolean"}}, "required": ["flag"]},
    {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["unit"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}, "required": ["tags"]},
    {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3}}, "required": ["ids"]},
    {"type": "object", "properties": {"user": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}}, "required": ["user"]},
    {"type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["q"]},
    {"type": "object", "properties": {}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["n"]},
    {"type": "object", "properties": {"code": {"type": "string", "maxLength": 12}}, "required": ["code"]},
    {"type": "object", "properties": {"points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}}, "required": ["x", "y"]}, "maxItems": 2}}, "required": ["points"]},
    {"type": "object", "properties": {"mode": {"const": "fast"}}, "required": ["mode"]},
    {"type": "object", "properties": {"value": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 8}]}}, "required": ["value"]},
    {"type": "object", "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}, "required": ["date"]},
    {"type": "object", "properties": {"opt": {"type": ["string", "null"]}}, "required": ["opt"]},
    {"type": "object", "properties": {"matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}, "maxItems": 2}}, "required": ["matrix"]},
    {"type": "object", "properties": {"level": {"enum": [1, 2, 3]}, "note": {"type": "string", "maxLength": 20}}, "required": ["level"]},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object", "properties": {"c": {"type": "boolean"}}, "required": ["c"]}}, "required": ["b"]}}, "required": ["a"]},
]


def tool(name, schema, description="A function."):
    return {"type": "function", "function": {"name": name, "description": description, "parameters": schema}}


def ask(client, tools, **kw):
    kw.setdefault("max_tokens", 120)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Use the tool to help me plan my day."}], tools=tools, **kw
    )


def test_twenty_schemas_required_and_named(client):
    """40 requests (each schema forced by `required` and by name), 8 at a time: the server
    batches them, which also checks that concurrent requests keep their own grammars."""
    def check(job):
        i, choice = job
        tools = [tool(f"f{i}", SCHEMAS[i]), tool("other", {"type": "object", "properties": {"z": {"type": "integer"}}, "required": ["z"]})]
        r = ask(client, tools, tool_choice=choice, parallel_tool_calls=False)
        ch = r.choices[0]
        assert ch.finish_reason == "tool_calls", (i, ch)
        calls = ch.message.tool_calls
        assert len(calls) == 1
        call = calls[0]
        assert call.id.startswith("call_") and call.type == "function"
        args = json.loads(call.function.arguments)
        by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
        jsonschema.validate(args, by_name[call.function.name])
        if choice != "required":
            assert call.function.name == f"f{i}"
        return call.function.name

    jobs = [(i, c) for i in range(len(SCHEMAS))
            for c in ["required", {"type": "function", "function": {"name": f"f{i}"}}]]
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(check, jobs))
    assert names[1::2] == [f"f{i}" for i in range(len(SCHEMAS))]


def test_none_produces_no_call(client):
    tools = [tool("get_weather", SCHEMAS[0])]
    for prompt in ["What is the weather in Paris?", "Call get_weather for Rome."]:
        r = client.chat.completions.create(
            model="", messages=[{"role": "user", "content": prompt}], tools=tools,
            tool_choice="none", max_tokens=40, temperature=0,
        )
        assert r.choices[0].message.tool_calls is None
        assert r.choices[0].finish_reason in ("stop", "length")


def test_parallel_false_never_two_calls(client):
    tools = [tool("a", SCHEMAS[0]), tool("b", SCHEMAS[1])]
    for seed in range(4):
        for choice in ["required", "auto"]:
            r = ask(client, tools, tool_choice=choice, parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=150)
            assert len(r.choices[0].message.tool_calls or []) <= 1


def test_parallel_true_may_give_several_valid_calls(client):
    tools = [tool("a", SCHEMAS[0]), tool("b", SCHEMAS[1])]
    r = ask(client, tools, tool_choice="required", max_tokens=160)
    calls = r.choices[0].message.tool_calls
    assert calls and len({c.id for c in calls}) == len(calls)
    if r.choices[0].finish_reason == "length":
        calls = calls[:-1]  # the last one may be cut off
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), {"a": SCHEMAS[0], "b": SCHEMAS[1]}[c.function.name])


def test_streamed_deltas_match_the_whole_response(client):
    tools = [tool("get_weather", SCHEMAS[4] | {"properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]})]
    kw = dict(tool_choice="required", parallel_tool_calls=False, max_tokens=80, temperature=0)
    whole = ask(client, tools, **kw).choices[0].message.tool_calls
    stream = ask(client, tools, stream=True, **kw)
    calls, finish = {}, None
    for chunk in stream:
        ch = chunk.choices[0]
        finish = ch.finish_reason or finish
        for d in ch.delta.tool_calls or []:
            if d.id is not None:
                assert d.index not in calls and d.type == "function" and d.function.name
                calls[d.index] = {"name": d.function.name, "arguments": d.function.arguments or ""}
            else:
                calls[d.index]["arguments"] += d.function.arguments
    assert finish == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole
    ]


def streamed(stream):
    """A chat stream read to its end: its content, its calls' names and arguments, its
    finish reason."""
    content, calls, finish = "", {}, None
    for chunk in stream:
        ch = chunk.choices[0]
        finish = ch.finish_reason or finish
        content += ch.delta.content or ""
        for d in ch.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"name": d.function.name, "arguments": ""})
            call["arguments"] += d.function.arguments or ""
    return content, [(c["name"], c["arguments"]) for c in calls.values()], finish


NOTE = tool("save_note", {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}, "Save a note.")


WEATHER = tool("get_weather", {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city", "unit"]},
    "Weather for a city")


def test_a_tool_result_without_tools_is_the_templates_own_tool_turn(server):
    """SmolLM2's ChatML template writes a `tool` message as a turn of its own: with no tools
    shown the result is left to it (as llama-server and vLLM render it); with tools shown it
    is the `<tool_response>` user turn the tools section announces. The generation's prompt
    is the one `/apply-template` shows."""
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny, 24 C"}]
    apply = lambda **kw: requests.post(server.url + "/apply-template", json={"messages": msgs, **kw},
                                       timeout=30).json()["prompt"]
    plain = apply()
    assert plain.endswith("<|im_start|>assistant\nLet me check.<|im_end|>\n<|im_start|>tool\n"
                          "sunny, 24 C<|im_end|>\n<|im_start|>assistant\n"), plain
    shown = apply(tools=[WEATHER])
    assert "<|im_start|>user\n<tool_response>\nsunny, 24 C\n</tool_response><|im_end|>" in shown
    assert "<|im_start|>tool" not in shown
    n = requests.post(server.url + "/tokenize", json={"content": plain}, timeout=30).json()["count"]
    r = requests.post(server.url + "/v1/chat/completions", timeout=60,
                      json={"messages": msgs, "max_tokens": 1}).json()
    assert r["usage"]["prompt_tokens"] == n
    bad = requests.post(server.url + "/apply-template", json={"messages": "hi"}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "messages", bad.text


def test_a_follow_up_after_a_call_reuses_the_kv_through_the_call(default_server):
    """The history writes a call's arguments as the client sent them back (the model's own
    text), so the follow-up's prompt matches the kept KV through the arguments; written again
    with other spacing it diverged at their first separator."""
    url = default_server.url
    first = [{"role": "user", "content": "What is the weather in Lyon, in celsius?"}]
    body = {"tools": [WEATHER], "temperature": 0, "parallel_tool_calls": False}
    r1 = requests.post(url + "/v1/chat/completions", timeout=60, json={
        **body, "messages": first, "tool_choice": "required", "max_tokens": 60}).json()
    message = r1["choices"][0]["message"]
    args = message["tool_calls"][0]["function"]["arguments"]
    city = json.loads(args)["city"]
    follow = first + [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"],
                                "content": "sunny, 21 C"}]
    prompt = requests.post(url + "/apply-template", json={**body, "messages": follow},
                           timeout=30).json()["prompt"]
    assert args in prompt
    r2 = requests.post(url + "/v1/chat/completions", timeout=60,
                       json={**body, "messages": follow, "max_tokens": 4}).json()
    head = '<tool_call>\n{"name": "get_weather", "arguments": ' + args[:args.index(city) + len(city)]
    n = requests.post(url + "/tokenize", json={"content": head}, timeout=30).json()["count"]
    # At least up to the token before the city's closing quote (which the model may have merged
    # with what follows).
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= r1["usage"]["prompt_tokens"] + n - 1, (cached, r1["usage"], n)


@pytest.mark.parametrize("max_tokens", [10, 24])
def test_a_call_cut_by_max_tokens_is_a_call_with_finish_length(client, max_tokens):
    """`max_tokens` ending a call: at 24 tokens inside its arguments, at 10 before its name.
    As OpenAI does, the call is listed with its arguments so far and `finish_reason` is
    `length`; its text is not returned as content, and a stream sends it once."""
    kw = dict(model="", tools=[NOTE], tool_choice="required", max_tokens=max_tokens, temperature=0,
              messages=[{"role": "user", "content": "Save a note with a long description of the history of Paris."}])
    whole = client.chat.completions.create(**kw).choices[0]
    content, calls, finish = streamed(client.chat.completions.create(stream=True, **kw))
    assert whole.finish_reason == finish == "length"
    assert not whole.message.content and not content, (whole.message.content, content)
    listed = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or []]
    assert listed == calls
    if max_tokens == 10:
        assert calls == [], "no name yet: no call"
    else:
        [(name, args)] = calls
        assert name == "save_note" and args.startswith('{"text": "') and len(args) > 12
        with pytest.raises(json.JSONDecodeError):
            json.loads(args)


def test_a_responses_call_cut_by_max_output_tokens_is_incomplete(server):
    body = {"model": "", "input": "Save a note with a long description of the history of Paris.",
            "tools": [{"type": "function", **NOTE["function"]}], "tool_choice": "required",
            "max_output_tokens": 24, "temperature": 0}
    r = requests.post(server.url + "/v1/responses", json=body, timeout=120).json()
    assert r["status"] == "incomplete", r
    [item] = r["output"]
    assert item["type"] == "function_call" and item["status"] == "incomplete", item


def test_agent_loop_follow_up(client):
    tools = [tool("get_weather", SCHEMAS[0])]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="", messages=messages, tools=tools, tool_choice="required", max_tokens=60, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21, "sky": "clear"})})
    r2 = client.chat.completions.create(model="", messages=messages, tools=tools, tool_choice="none", max_tokens=40, temperature=0)
    assert r2.choices[0].message.content
    assert r2.choices[0].message.tool_calls is None


def test_response_format(client, server):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}}, "required": ["name", "age"]}
    r = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    assert server.metric("tandem_constraint_masks_total") > 0
    assert server.metric("tandem_constraint_mask_microseconds_total") > 0
    r = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Reply with a JSON object whose key \"ok\" is true."}], max_tokens=100, temperature=0,
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


BAD = [
    ({"tools": "x"}, "tools", "list"),
    ({"tools": [7]}, "tools[0]", "must be an object"),
    ({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "objekt"}}}]}, "tools[0].function.parameters", "JSON Schema"),
    ({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": 3}}}]}, "tools[0].function.parameters", "JSON Schema"),
    ({"tools": [tool("a", SCHEMAS[0]), tool("a", SCHEMAS[1])]}, "tools[1].function.name", "duplicate tool name 'a'"),
    ({"tools": [tool("a", SCHEMAS[0])], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", "'nope'"),
    ({"tools": [tool("bad name!", SCHEMAS[0])]}, "tools[0].function.name", "letters"),
    ({"tool_choice": "required"}, "tool_choice", "needs `tools`"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema", "schema"),
]


@pytest.mark.parametrize("extra,param,needle", BAD)
def test_bad_tool_definitions_are_400(server, extra, param, needle):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and needle in err["message"], err
    assert requests.get(server.url + "/health", timeout=5).ok


def test_example_agent_loop_runs(server):
    example = Path(__file__).resolve().parents[2] / "examples" / "agent_loop.py"
    out = subprocess.run([sys.executable, str(example), server.url + "/v1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "call get_weather(" in out.stdout, out.stdout



def named_call(url, i, **extra):
    """The call (None unless it was complete) and its completion tokens (and the response's
    logprobs with `logprobs=True`)."""
    # The tools of test_twenty_schemas_required_and_named, the named one first.
    tools = [tool(f"f{i}", SCHEMAS[i]), tool("other", {"type": "object", "properties": {"z": {"type": "integer"}}, "required": ["z"]})]
    body = {"messages": [{"role": "user", "content": "Use the tool to help me plan my day."}], "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": f"f{i}"}}, "parallel_tool_calls": False,
            "max_tokens": 120, "temperature": 0, **extra}
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    calls = out["choices"][0]["message"].get("tool_calls") or []
    if out["choices"][0]["finish_reason"] != "tool_calls":
        calls = [{"function": None}]  # none, or cut off by max_tokens
    if extra.get("logprobs"):
        return calls[0]["function"], out["usage"]["completion_tokens"], out["choices"][0]["logprobs"]
    return calls[0]["function"], out["usage"]["completion_tokens"]


def test_jump_forward_appends_the_fixed_text_of_calls(server):
    """The session server samples every token (the default); one with --jump-forward on appends
    the text the grammar fixes (keys, separators, call markup). Its calls are valid, most are
    the same as the sampled ones, and a good share of their tokens was forced, not decoded.
    (The tokenizer's split of forced text can differ from the one the model picks, so a
    small model's greedy output can differ: 3 of these 20 did on 2026-11-23.)"""
    from conftest import EXACT, Server

    on = Server("--max-seqs", "4", "--kv-cells", "4096", "--jump-forward", "on", *EXACT)
    try:
        assert server.metric("tandem_forced_tokens_total") in (None, 0.0)
        masks0 = on.metric("tandem_constraint_masks_total") or 0
        # Both servers batch their requests (greedy output does not depend on the batch).
        with ThreadPoolExecutor(4) as pool:
            ons = list(pool.map(lambda i: named_call(on.url, i), range(len(SCHEMAS))))
            offs = list(pool.map(lambda i: named_call(server.url, i)[0], range(len(SCHEMAS))))
        same, done, tokens = 0, 0, 0
        for i, ((on_call, n), off_call) in enumerate(zip(ons, offs)):
            tokens += n
            if on_call is not None:
                jsonschema.validate(json.loads(on_call["arguments"]), SCHEMAS[i])
                done += 1
            same += on_call == off_call
        forced = on.metric("tandem_forced_tokens_total")
        masks = on.metric("tandem_constraint_masks_total") - masks0
        # Shown with `pytest -s` (docs/tool-calling.md quotes its counts).
        print(f"jump-forward: {done} of {len(SCHEMAS)} calls complete, {same} the same as sampled, "
              f"{forced:.0f} of {tokens} tokens forced")
        assert forced > 0.3 * tokens, (forced, tokens)
        assert masks <= tokens - forced + len(SCHEMAS), (masks, tokens, forced)
        assert done >= len(SCHEMAS) - 2 and same >= len(SCHEMAS) - 5, (done, same)
        # A request asking for logprobs samples every token, so each has its figures (the
        # end-of-turn token after the call counts in usage but is not output).
        call, n, lps = named_call(on.url, 0, logprobs=True)
        assert on.metric("tandem_forced_tokens_total") == forced
        assert call is not None and len(lps["content"]) == n - 1
    finally:
        on.stop()
