"""The Responses API (`/v1/responses`) against the real model through the official `openai`
client: plain and streamed text, `max_output_tokens`, function calls and their outputs,
`previous_response_id` (which must give the same tokens as the whole conversation sent again,
and reuse its KV), stored responses, and 400s for what is not supported. Greedy outputs are
compared with chat completions over the same conversation (same prompt, same tokens)."""
import json

import openai
import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
FORCE = {"type": "function", "name": "get_weather"}


def respond(client, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_output_tokens", 24)
    return client.responses.create(model=MODEL, **kw)


def chat_text(client, messages, **kw):
    r = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)
    return r.choices[0].message


def test_text_matches_chat_completions_on_the_same_conversation(client):
    r = respond(client, instructions="Answer in one short sentence.", input="What is the capital of France?",
                max_output_tokens=60)
    assert r.status == "completed" and r.object == "response" and r.id.startswith("resp_")
    assert [o.type for o in r.output] == ["message"]
    messages = [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert r.output_text == chat_text(client, messages, max_tokens=60).content
    assert r.output_text.strip()
    u = r.usage
    assert u.total_tokens == u.input_tokens + u.output_tokens and u.output_tokens > 0
    assert r.instructions == "Answer in one short sentence." and r.max_output_tokens == 60


def test_max_output_tokens_leaves_the_response_incomplete(client):
    r = respond(client, input="Tell me a long story about a dragon.", max_output_tokens=5)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5


def test_streamed_events_build_the_same_response(client):
    kw = dict(input="Name three colors.", max_output_tokens=20)
    plain = respond(client, **kw)
    events = list(respond(client, stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        plain.status == "completed" and "response.completed" or "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == plain.output_text
    final = events[-1].response
    assert final.output_text == plain.output_text and final.usage.output_tokens == plain.usage.output_tokens
    # The SDK's own accumulator agrees.
    with client.responses.stream(model=MODEL, temperature=0, **kw) as s:
        assert s.get_final_response().output_text == plain.output_text


def test_a_function_call_then_its_output_continues_like_chat(client):
    first = respond(client, input="What's the weather in Paris?", tools=[WEATHER],
                    tool_choice=FORCE, parallel_tool_calls=False, max_output_tokens=64)
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    args = json.loads(calls[0].arguments)
    assert isinstance(args["city"], str)
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24 C"}
    follow = respond(client, previous_response_id=first.id, input=[result], tools=[WEATHER])
    assert follow.output_text.strip()
    # The stored conversation is exactly what the prompt continues from (this server reuses
    # only prefilled KV, so the first prompt is cached; the call's tokens are prefilled) ...
    assert follow.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    # ... and it is the conversation a client would send whole, statelessly ...
    items = [{"role": "user", "content": "What's the weather in Paris?"},
             {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
              "arguments": calls[0].arguments}, result]
    whole = respond(client, input=items, tools=[WEATHER], store=False)
    assert whole.output_text == follow.output_text
    # ... or through chat completions.
    tools = [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    messages = [items[0],
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": calls[0].call_id, "type": "function",
                     "function": {"name": "get_weather", "arguments": calls[0].arguments}}]},
                {"role": "tool", "tool_call_id": calls[0].call_id, "content": "sunny, 24 C"}]
    assert chat_text(client, messages, tools=tools, max_tokens=24).content == follow.output_text


def test_streamed_function_call_arguments_join_to_the_call(client):
    events = list(respond(client, input="Weather in Rome?", tools=[WEATHER], tool_choice=FORCE,
                          parallel_tool_calls=False, stream=True, max_output_tokens=64))
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert [i.type for i in added] == ["function_call"] and added[0].arguments == ""
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"][0]
    assert deltas == done.arguments and json.loads(deltas)["city"]
    final = events[-1].response
    assert final.output[0].arguments == deltas and final.output[0].call_id == added[0].call_id


def test_stored_responses_are_retrieved_deleted_and_not_kept_when_store_is_false(client):
    r = respond(client, input="Say hi.", max_output_tokens=4)
    assert client.responses.retrieve(r.id).output_text == r.output_text
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    unstored = respond(client, input="Say hi.", max_output_tokens=4, store=False)
    with pytest.raises(openai.BadRequestError) as e:
        respond(client, input="again", previous_response_id=unstored.id)
    assert e.value.body["code"] == "previous_response_not_found"
    assert e.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize("body,param", [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0]"),
    ({"input": "x", "messages": []}, "messages"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ({"input": "x", "temperature": 5}, "temperature"),
    ({"input": []}, "input"),
])
def test_unsupported_input_is_a_400_naming_the_field(server, body, param):
    r = requests.post(server.url + "/v1/responses", json=body, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert requests.get(server.url + "/health", timeout=5).ok
