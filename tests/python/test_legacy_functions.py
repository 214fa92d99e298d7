"""OpenAI's deprecated function calling (`functions`, `function_call`, `role: "function"`)
through the `openai` client: translated to tools, so the call is constrained like a tool call
and shown as `message.function_call` / `delta.function_call` with
`finish_reason: "function_call"`; a follow-up in that form is the same prompt as in the tools
form; mixing the two forms is a 400."""
import json

import jsonschema
import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
FUNCTIONS = [{"name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCED = dict(model=MODEL, messages=ASK, functions=FUNCTIONS, function_call={"name": "get_weather"},
              max_tokens=60, temperature=0)


def test_a_forced_function_call(client):
    r = client.chat.completions.create(**FORCED)
    choice = r.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    call = choice.message.function_call
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), SCHEMA)


def test_a_streamed_function_call_reassembles_to_the_whole(client):
    whole = client.chat.completions.create(**FORCED).choices[0].message.function_call
    name, arguments, finish = None, "", None
    for chunk in client.chat.completions.create(**FORCED, stream=True):
        for c in chunk.choices:
            assert c.delta.tool_calls is None
            if c.delta.function_call:
                name = c.delta.function_call.name or name
                arguments += c.delta.function_call.arguments or ""
            finish = c.finish_reason or finish
    assert (name, arguments, finish) == (whole.name, whole.arguments, "function_call")


def test_none_makes_no_call(client):
    r = client.chat.completions.create(**{**FORCED, "function_call": "none", "max_tokens": 8})
    assert r.choices[0].message.function_call is None and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")


def test_a_follow_up_is_the_tools_form_conversation(client):
    call = client.chat.completions.create(**FORCED).choices[0].message.function_call
    result = "Sunny, 21 C"
    legacy = ASK + [
        {"role": "assistant", "content": None,
         "function_call": {"name": call.name, "arguments": call.arguments}},
        {"role": "function", "name": "get_weather", "content": result},
    ]
    tools_form = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_fn_1", "type": "function",
         "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": "call_fn_1", "content": result},
    ]
    kw = dict(model=MODEL, max_tokens=12, temperature=0, function_call="none")
    a = client.chat.completions.create(messages=legacy, functions=FUNCTIONS, **kw)
    kw["tool_choice"] = kw.pop("function_call")
    b = client.chat.completions.create(messages=tools_form, tools=[{"type": "function", "function": FUNCTIONS[0]}],
                                       **kw)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens
    assert a.choices[0].message.content == b.choices[0].message.content


@pytest.mark.parametrize("extra,param", [
    ({"functions": FUNCTIONS, "tools": [{"type": "function", "function": FUNCTIONS[0]}]}, "functions"),
    ({"function_call": "auto", "tool_choice": "auto"}, "function_call"),
    ({"functions": FUNCTIONS, "function_call": "required"}, "function_call"),
    ({"functions": [{"parameters": SCHEMA}]}, "functions[0]"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
])
def test_mixed_or_malformed_fields_are_400(server, extra, param):
    r = requests.post(server.url + "/v1/chat/completions", json={"messages": ASK, "max_tokens": 2, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
