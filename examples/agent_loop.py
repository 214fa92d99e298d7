#!/usr/bin/env python3
"""A client-side agent loop against tandem with the official `openai` client.

The model gets two local tools. The first turn forces a call (`tool_choice: "required"`), the
client runs it locally, sends the result back as a `tool` message, and the conversation goes
on (`tool_choice: "auto"`) until the model answers in text or MAX_TURNS is reached.

Usage: examples/agent_loop.py [BASE_URL]    (default http://127.0.0.1:8080/v1)
Prints each step; exits non-zero if the first turn made no valid call, or max_tokens cut a
call off (`finish_reason` is then `length`, and the call's arguments are incomplete)."""
import json
import sys
from datetime import datetime, timezone

from openai import OpenAI

MAX_TURNS = 4

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]}}},
    {"type": "function", "function": {
        "name": "utc_time",
        "description": "The current UTC time.",
        "parameters": {"type": "object", "properties": {}}}},
]


def get_weather(city, unit):
    temp = 21 if unit == "celsius" else 70
    return {"city": city, "temperature": temp, "unit": unit, "sky": "clear"}


def utc_time():
    return {"utc": datetime.now(timezone.utc).strftime("%H:%M")}


LOCAL = {"get_weather": get_weather, "utc_time": utc_time}


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
    client = OpenAI(base_url=base, api_key="unused")
    messages = [{"role": "user", "content": "What's the weather in Lisbon right now?"}]
    for turn in range(MAX_TURNS):
        r = client.chat.completions.create(
            model="", messages=messages, tools=TOOLS, max_tokens=120, temperature=0,
            tool_choice="required" if turn == 0 else "auto", parallel_tool_calls=False)
        msg = r.choices[0].message
        messages.append(msg.model_dump(exclude_none=True))
        if not msg.tool_calls:
            print(f"assistant: {msg.content}")
            return 1 if turn == 0 else 0
        if r.choices[0].finish_reason != "tool_calls":
            # max_tokens cut the last call: its arguments are incomplete, so nothing is run.
            print(f"cut off ({r.choices[0].finish_reason}) inside {msg.tool_calls[-1].function}")
            return 1
        for call in msg.tool_calls:
            args = json.loads(call.function.arguments)
            result = LOCAL[call.function.name](**args)
            print(f"call {call.function.name}({args}) -> {result}")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        if turn == 0:
            print("first turn made a call, as tool_choice=required demands")
    print(f"(stopped after {MAX_TURNS} turns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
