"""Anthropic's Messages API through the official `anthropic` client: text, a tool-use round
trip (client tool, forced), streaming events, token counting, KV reuse across turns, and
errors in Anthropic's shape."""
import anthropic
import openai
import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture(scope="module")
def ac(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def test_text_message(ac):
    m = ac.messages.create(model=MODEL, max_tokens=12, extra_body={"temperature": 0},
                           system="You are a helpful assistant.",
                           messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.content[0].type == "text" and "Paris" in m.content[0].text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 10 and 1 <= m.usage.output_tokens <= 12


def test_tool_use_round_trip_reuses_the_conversation(ac):
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    m = ac.messages.create(model=MODEL, max_tokens=60, extra_body={"temperature": 0}, tools=[WEATHER],
                           tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}, messages=ask)
    assert m.stop_reason == "tool_use"
    use = [b for b in m.content if b.type == "tool_use"][0]
    assert use.name == "get_weather" and isinstance(use.input.get("city"), str)
    follow = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
    ]
    n = ac.messages.create(model=MODEL, max_tokens=30, extra_body={"temperature": 0}, tools=[WEATHER], messages=follow)
    assert n.content and n.stop_reason in ("end_turn", "max_tokens", "tool_use")
    assert n.usage.cache_read_input_tokens > m.usage.input_tokens // 2, n.usage


def test_streamed_events_build_the_same_message(ac):
    kw = dict(model=MODEL, max_tokens=60, extra_body={"temperature": 0}, tools=[WEATHER],
              tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
              messages=[{"role": "user", "content": "Weather in Rome?"}])
    full = ac.messages.create(**kw)
    kinds = []
    with ac.messages.stream(**kw) as s:
        for event in s:
            kinds.append(event.type)
        final = s.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    # Each message has its own call ids; the rest of the blocks is the same.
    blocks = lambda m: [b.model_dump(exclude={"id"}) for b in m.content]
    assert blocks(final) == blocks(full)
    assert all(b.id.startswith("call_") for b in final.content if b.type == "tool_use")
    assert final.stop_reason == full.stop_reason == "tool_use"
    assert final.usage.output_tokens == full.usage.output_tokens


def test_count_tokens_matches_usage(ac):
    msgs = [{"role": "user", "content": "Count my tokens, please."}]
    counted = ac.messages.count_tokens(model=MODEL, system="Be brief.", messages=msgs).input_tokens
    m = ac.messages.create(model=MODEL, max_tokens=2, system="Be brief.", messages=msgs)
    assert counted == m.usage.input_tokens + m.usage.cache_read_input_tokens


@pytest.mark.parametrize("body, needle, status", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens is required", 400),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "`image`", 400),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "enabled", "budget_tokens": 512}}, "thinking", 400),
    ({"max_tokens": 5, "model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}, "claude-x", 404),
    ({"max_tokens": 5}, "messages", 422),
])
def test_errors_have_anthropic_shape(server, body, needle, status):
    r = requests.post(server.url + "/v1/messages", json=body, timeout=30)
    assert r.status_code == status, r.text
    e = r.json()
    assert e["type"] == "error" and needle in e["error"]["message"], e
    assert e["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_sdk_raises_typed_errors(ac):
    with pytest.raises(anthropic.BadRequestError) as e:
        ac.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_a_last_assistant_message_is_continued(ac, client):
    ask = [{"role": "user", "content": "What is the capital of France?"},
           {"role": "assistant", "content": "The capital of France is"}]
    m = ac.messages.create(model=MODEL, max_tokens=4, extra_body={"temperature": 0},
                           system="You are a helpful assistant.", messages=ask)
    assert m.content[0].text.startswith(" Paris"), m.content
    # The same on chat completions with vLLM's `continue_final_message`.
    msgs = [{"role": "system", "content": "You are a helpful assistant."}] + ask
    r = client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0, messages=msgs,
                                       extra_body={"continue_final_message": True})
    assert r.choices[0].message.content == m.content[0].text
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, max_tokens=4, messages=ask[:1],
                                       extra_body={"continue_final_message": True})
    assert e.value.body["param"] == "messages"


def test_stop_sequence_is_reported(ac):
    kw = dict(model=MODEL, max_tokens=16, extra_body={"temperature": 0}, stop_sequences=["Paris"],
              system="You are a helpful assistant.",
              messages=[{"role": "user", "content": "What is the capital of France?"}])
    m = ac.messages.create(**kw)
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "Paris"), m
    assert "Paris" not in m.content[0].text
    with ac.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "Paris")
    assert final.content[0].text == m.content[0].text
