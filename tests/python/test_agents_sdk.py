"""An agent framework against tandem: the OpenAI Agents SDK (`openai-agents`) runs an agent
with a Python function tool on the Responses API, non-streamed and streamed, then continues
the conversation with `previous_response_id`, whose prompt must come from the KV the server
kept (cached tokens); and the same agent on Chat Completions (`OpenAIChatCompletionsModel`). Fails if the SDK cannot parse tandem's responses or events, or if the
tool is not called with the model's arguments."""
import asyncio

import agents  # openai-agents, pinned in tests/requirements.txt
from openai import AsyncOpenAI

MODEL = "SmolLM2-135M-Instruct.Q4_1"


def make_agent(url, calls, model_class=None):
    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"sunny, 24 C in {city}"

    client = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    settings = agents.ModelSettings(temperature=0, max_tokens=80, tool_choice="required",
                                    parallel_tool_calls=False)
    model_class = model_class or agents.OpenAIResponsesModel
    model = model_class(model=MODEL, openai_client=client)
    return agents.Agent(name="assistant", instructions="You are a helpful assistant.",
                        model=model, tools=[get_weather], model_settings=settings)


def item_kinds(result):
    return [type(i).__name__ for i in result.new_items]


def test_an_agent_calls_its_tool_and_continues_from_the_stored_response(server):
    agents.set_tracing_disabled(True)
    calls = []

    async def main():
        agent = make_agent(server.url, calls)
        first = await agents.Runner.run(agent, "What's the weather in Paris?", max_turns=3)
        second = await agents.Runner.run(agent, "And in Rome?", max_turns=3,
                                         previous_response_id=first.last_response_id)
        return first, second

    first, second = asyncio.run(main())
    assert item_kinds(first)[:2] == ["ToolCallItem", "ToolCallOutputItem"]
    assert item_kinds(second)[:2] == ["ToolCallItem", "ToolCallOutputItem"]
    assert calls == ["Paris", "Rome"]
    assert isinstance(first.final_output, str) and first.final_output
    # The follow-up's first request continues the stored conversation: its prompt extends the
    # previous one, whose KV the server kept.
    u = second.raw_responses[0].usage
    prev = first.raw_responses[-1].usage
    assert u.input_tokens_details.cached_tokens >= prev.input_tokens


def test_a_streamed_agent_run_sees_the_call_and_its_output(server):
    agents.set_tracing_disabled(True)
    calls = []

    async def main():
        agent = make_agent(server.url, calls)
        run = agents.Runner.run_streamed(agent, "What's the weather in Oslo?", max_turns=3)
        names = [e.name async for e in run.stream_events() if e.type == "run_item_stream_event"]
        return run, names

    run, names = asyncio.run(main())
    assert names[:2] == ["tool_called", "tool_output"]
    assert calls == ["Oslo"] and run.final_output


def test_the_same_agent_runs_on_chat_completions(server):
    agents.set_tracing_disabled(True)
    calls = []

    async def main():
        agent = make_agent(server.url, calls, agents.OpenAIChatCompletionsModel)
        plain = await agents.Runner.run(agent, "What's the weather in Paris?", max_turns=3)
        run = agents.Runner.run_streamed(agent, "What's the weather in Oslo?", max_turns=3)
        names = [e.name async for e in run.stream_events() if e.type == "run_item_stream_event"]
        return plain, run, names

    plain, run, names = asyncio.run(main())
    assert item_kinds(plain)[:2] == ["ToolCallItem", "ToolCallOutputItem"]
    assert names[:2] == ["tool_called", "tool_output"]
    assert calls == ["Paris", "Oslo"] and plain.final_output and run.final_output
