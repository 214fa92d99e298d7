"""Server-side tools end to end (real model, `openai` client): replayed requests with three
calls (two of them parallel) give the tools' real results and the same final text with
partial execution on and off; a plan's first step's result is prefilled while its last step
runs (partial results) and the answer's log-probabilities are those of a run without it; a
validator's early abort cuts its turn short; a turn mixing a
server-side and a client-side call ends with `tool_calls` and carries the server result; a
cancelled request's running tool process is gone; bad `server_tools` and `replay` give 400s."""
import json
import os
import tempfile
import time

import pytest
import requests
from openai import BadRequestError, OpenAI

from conftest import Server

TOOLS = "python,calc,search,validate,plan"


@pytest.fixture(scope="module")
def tool_server():
    # Jump-forward on: replayed calls then also take the grammar's forced tokens. Prompt
    # lookup on: real-model requests draft under the server-side turn tracker.
    s = Server("--max-seqs", "4", "--kv-cells", "8192", "--allow-replay", "--tools", TOOLS,
               "--jump-forward", "on", "--prompt-lookup", "3")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tc(tool_server):
    return OpenAI(base_url=tool_server.url + "/v1", api_key="unused", max_retries=0)


def call(name, args):
    # json.dumps's default separators are the call grammar's (", " and ": ").
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"


CODE = "import time\ntime.sleep(0.3)\nx = 6 * 7\nprint('x is', x)"
TURNS = [
    call("python", {"code": CODE}) + "\n" + call("calc", {"expression": "(2 + 3) * 4"}),
    call("search", {"queries": ["lighthouse lens"]}),
    "The answer is 42, the sum is 20 and lighthouses use lenses.",
]
USER = [{"role": "user", "content": "Use the tools."}]


def streamed(tc, partial):
    stream = tc.chat.completions.create(
        model="", messages=USER, stream=True, max_tokens=600, stream_options={"include_usage": True},
        extra_body={"server_tools": ["python", "calc", "search"], "replay": TURNS, "partial_exec": partial})
    calls, results, text, finish, usage = {}, [], "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        d = choice.delta
        for tcall in d.tool_calls or []:
            c = calls.setdefault(tcall.index, {"id": None, "name": None, "args": ""})
            c["id"] = c["id"] or tcall.id
            c["name"] = c["name"] or (tcall.function.name if tcall.function else None)
            c["args"] += (tcall.function.arguments or "") if tcall.function else ""
        results.extend((d.model_extra or {}).get("tool_results") or [])
        if results and d.content:
            text += d.content
        finish = choice.finish_reason or finish
    return calls, results, text, finish, usage


def test_three_calls_two_parallel_same_results_with_partial_on_and_off(tc, tool_server):
    forced0 = tool_server.metric("tandem_forced_tokens_total") or 0
    outs = {p: streamed(tc, p) for p in (True, False)}
    # The call grammar forced each call's markup and keys (jump-forward through the replay).
    assert tool_server.metric("tandem_forced_tokens_total") - forced0 >= 2 * 3 * 8
    for partial, (calls, results, text, finish, _) in outs.items():
        assert [calls[i]["name"] for i in sorted(calls)] == ["python", "calc", "search"], partial
        assert json.loads(calls[0]["args"]) == {"code": CODE}
        by_id = {r["tool_call_id"]: r for r in results}
        assert set(by_id) == {c["id"] for c in calls.values()}, "every call has its result, by id"
        r = [by_id[calls[i]["id"]] for i in range(3)]
        assert r[0]["content"] == "x is 42\n" and not r[0]["is_error"]
        assert r[1]["content"] == "20"
        assert all(isinstance(x["wait_s"], float) and x["wait_s"] >= 0 for x in r), r
        hits = json.loads(r[2]["content"])
        assert hits[0]["hits"][0]["title"] == "lighthouses"
        assert text == TURNS[-1] and finish == "stop", (partial, text)
    strip = lambda o: ([r["content"] for r in o[1]], o[2])
    assert strip(outs[True]) == strip(outs[False])
    # The stream's usage counts the same appended results in both modes.
    appended = {p: o[4].prompt_tokens_details.model_extra["appended_tokens"] for p, o in outs.items()}
    assert appended[True] == appended[False] > 30, appended


SLOW_LAST = call("plan", {"steps": [
    {"tool": "search", "arguments": {"queries": ["lighthouse lens"]}},
    {"tool": "python", "arguments": {"code": "import time\ntime.sleep(1.5)\nprint('slept')"}}]})
PLAN_TURNS = [SLOW_LAST, "The lighthouse result came first and the nap after it."]
# A program that prints its findings, then runs a slow last statement.
PRINT_THEN_SLEEP = call("python", {"code": "for city in ['Lisbon', 'Oslo', 'Quito', 'Hanoi', 'Perth']:\n"
                                           "    print(city, 'has', len(city) * 7, 'lighthouses in the national registry')\n"
                                           "import time\ntime.sleep(1.5)\nprint('slept')"})
PYTHON_TURNS = [PRINT_THEN_SLEEP, "Five cities were counted before the nap."]


def staged_run(tc, tools, turns, partial):
    r = tc.chat.completions.create(
        model="", messages=USER, max_tokens=400, logprobs=True,
        extra_body={"server_tools": tools, "replay": turns, "partial_exec": partial})
    c = r.choices[0]
    lps = [(t.token, t.logprob) for t in c.logprobs.content]
    return c.model_extra["messages"], lps, r.usage


def check_staged_like_lazy(tc, tool_server, tools, turns):
    """Runs the turns lazily and with partial execution: the partial run stages more than 40
    result tokens and drops none, and gives the same turns, appended tokens and answer (tokens,
    and log-probabilities within 1e-2). Returns the partial run's messages."""
    kept = lambda: tool_server.metric("tandem_staged_tokens_kept_total") or 0
    dropped = lambda: tool_server.metric("tandem_staged_tokens_dropped_total") or 0
    k0, d0 = kept(), dropped()
    lazy = staged_run(tc, tools, turns, False)
    assert kept() == k0, "nothing is staged without partial execution"
    partial = staged_run(tc, tools, turns, True)
    # The result's start was staged while the slow part ran, and the real result began with
    # all of it.
    assert kept() - k0 > 40 and dropped() == d0, (kept() - k0, dropped() - d0)
    turns_of = lambda run: [(m["role"], m.get("content"), m.get("tool_calls") and
                             m["tool_calls"][0]["function"]) for m in run[0]]
    assert turns_of(partial) == turns_of(lazy), "same turns and tool results"
    assert partial[2].prompt_tokens_details.model_extra["appended_tokens"] == \
        lazy[2].prompt_tokens_details.model_extra["appended_tokens"]
    # The answer was read over the same context: a staged token left in the KV, or one
    # missing, would move these log-probabilities far more than chunking does.
    assert [t for t, _ in partial[1]] == [t for t, _ in lazy[1]]
    worst = max(abs(a - b) for (_, a), (_, b) in zip(partial[1], lazy[1]))
    assert worst < 1e-2, worst
    return partial[0]


def test_a_plans_first_results_are_prefilled_while_its_last_step_runs(tc, tool_server):
    messages = check_staged_like_lazy(tc, tool_server, ["plan"], PLAN_TURNS)
    assert json.loads(messages[1]["content"])[1]["content"] == "slept\n"


def test_a_programs_printed_output_is_prefilled_while_it_still_runs(tc, tool_server):
    messages = check_staged_like_lazy(tc, tool_server, ["python"], PYTHON_TURNS)
    assert messages[1]["content"].startswith("Lisbon has 42 lighthouses in the national registry\n")
    assert messages[1]["content"].endswith("Perth has 35 lighthouses in the national registry\nslept\n")


def test_non_streamed_response_lists_the_turns_and_results(tc, tool_server):
    appended0 = tool_server.metric("tandem_appended_tokens_total") or 0
    r = tc.chat.completions.create(
        model="", messages=USER, max_tokens=600,
        extra_body={"server_tools": ["python", "calc", "search"], "replay": TURNS})
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == TURNS[-1]
    msgs = choice.model_extra["messages"]
    assert [m["role"] for m in msgs] == ["assistant", "tool", "tool", "assistant", "tool", "assistant"]
    assert [c["function"]["name"] for c in msgs[0]["tool_calls"]] == ["python", "calc"]
    assert msgs[1]["tool_call_id"] == msgs[0]["tool_calls"][0]["id"] and msgs[1]["content"] == "x is 42\n"
    assert msgs[4]["tool_call_id"] == msgs[3]["tool_calls"][0]["id"]
    # The returned messages continue the conversation as a client would send it back.
    follow = tc.chat.completions.create(model="", messages=USER + msgs + [{"role": "user", "content": "Thanks."}],
                                        max_tokens=8)
    assert follow.choices[0].finish_reason in ("stop", "length")
    # usage counts the results and template text appended on the two resumes as prompt tokens.
    appended = r.usage.prompt_tokens_details.model_extra["appended_tokens"]
    assert appended == tool_server.metric("tandem_appended_tokens_total") - appended0 > 30
    first = tc.chat.completions.create(model="", messages=USER, max_tokens=1, extra_body={
        "server_tools": ["python", "calc", "search"], "replay": TURNS})
    assert first.usage.prompt_tokens_details.model_extra["appended_tokens"] == 0
    assert r.usage.prompt_tokens == first.usage.prompt_tokens + appended
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_a_stop_string_after_a_resume_keeps_the_appended_tokens_in_usage(tc):
    body = {"server_tools": ["python", "calc", "search"], "replay": TURNS}
    whole = tc.chat.completions.create(model="", messages=USER, max_tokens=600, extra_body=body)
    cut = tc.chat.completions.create(model="", messages=USER, max_tokens=600, stop=["lighthouses"],
                                     extra_body=body)
    assert cut.choices[0].message.content == "The answer is 42, the sum is 20 and "
    appended = whole.usage.prompt_tokens_details.model_extra["appended_tokens"]
    assert cut.usage.prompt_tokens_details.model_extra["appended_tokens"] == appended > 0
    assert cut.usage.prompt_tokens == whole.usage.prompt_tokens
    assert cut.usage.completion_tokens < whole.usage.completion_tokens


def test_validate_aborts_early_and_ends_the_turn(tc):
    people = [{"name": n, "email": f"{n.lower()}@example.org", "age": 30} for n in
              ["Ann", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal"]]
    people[1]["email"] = "bob-at-example"
    turns = [call("validate", {"records": people}), "Bob's email is wrong."]
    runs = {}
    for partial in (True, False):
        r = tc.chat.completions.create(model="", messages=USER, max_tokens=600, extra_body={
            "server_tools": ["validate"], "replay": turns, "partial_exec": partial})
        msgs = r.choices[0].model_extra["messages"]
        assert msgs[1]["content"].startswith("Error: record 1 is invalid"), msgs
        assert r.choices[0].message.content == turns[1]
        runs[partial] = r.usage.completion_tokens
    # With partial execution the call was cut off after the bad record (2 of 8 records).
    assert runs[True] < runs[False] * 0.6, runs


def test_mixed_turn_ends_with_tool_calls_and_the_server_result(tc):
    client_tool = {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    turns = [call("calc", {"expression": "1 + 1"}) + "\n" + call("weather", {"city": "Oslo"})]
    r = tc.chat.completions.create(model="", messages=USER, max_tokens=300, tools=[client_tool],
                                   extra_body={"server_tools": ["calc"], "replay": turns})
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["calc", "weather"]
    msgs = choice.model_extra["messages"]
    assert msgs[-1] == {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id,
                        "name": "calc", "content": "2"}


def test_calls_cut_by_max_tokens_end_with_length(tc):
    """A turn cut inside its second call reports `length` (not `tool_calls`), streamed or
    not, and lists the call completed before the cut, then the cut one (once its name is out)
    with its arguments so far."""
    weather = {"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    turns = [call("weather", {"city": "Oslo"}) + "\n" + call("weather", {"city": "Rome"})]
    ask = lambda **kw: tc.chat.completions.create(model="", messages=USER, tools=[weather],
                                                  extra_body={"replay": turns}, **kw)
    whole = ask(max_tokens=300)
    assert whole.choices[0].finish_reason == "tool_calls" and len(whole.choices[0].message.tool_calls) == 2
    cut = whole.usage.completion_tokens // 2 + 4  # past the first call, inside the second
    r = ask(max_tokens=cut)
    assert r.choices[0].finish_reason == "length"
    first, *rest = r.choices[0].message.tool_calls
    assert json.loads(first.function.arguments) == {"city": "Oslo"}
    assert len(rest) <= 1 and all(c.function.name == "weather" for c in rest)
    assert all('{"city": "Rome"}'.startswith(c.function.arguments) for c in rest), rest
    finals = [c.choices[0].finish_reason for c in ask(max_tokens=cut, stream=True) if c.choices[0].finish_reason]
    assert finals == ["length"]


def test_real_model_calls_a_server_tool_and_continues(tc, tool_server):
    before = tool_server.metric("tandem_server_tool_calls_total") or 0
    r = tc.chat.completions.create(model="", messages=[{"role": "user", "content": "What is 12*12? Use calc."}],
                                   tool_choice="required", parallel_tool_calls=False, max_tokens=80,
                                   temperature=0, extra_body={"server_tools": ["calc"]})
    msgs = r.choices[0].model_extra["messages"]
    assert msgs[0]["tool_calls"][0]["function"]["name"] == "calc"
    assert msgs[1]["role"] == "tool" and msgs[2]["role"] == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert tool_server.metric("tandem_server_tool_calls_total") >= before + 1


def test_a_server_side_call_copying_the_prompt_is_drafted(tc, tool_server):
    """Prompt lookup under the tracker of server-side turns: the call's argument copies (and,
    this small model being what it is, repeats) an expression from the prompt, and is
    drafted; the request completes as usual (most often cut by max_tokens inside the call,
    which is then listed with its arguments so far)."""
    expr = "12*12*12*12*12*12"
    before = tool_server.metric("tandem_lookup_accepted_tokens_total") or 0
    r = tc.chat.completions.create(model="", messages=[{"role": "user", "content": f"What is {expr}? Use calc."}],
                                   tool_choice="required", parallel_tool_calls=False, max_tokens=60,
                                   temperature=0, extra_body={"server_tools": ["calc"]})
    first = r.choices[0].model_extra["messages"][0]
    text = (first.get("content") or "") + "".join(c["function"]["arguments"] for c in first.get("tool_calls", []))
    accepted = (tool_server.metric("tandem_lookup_accepted_tokens_total") or 0) - before
    assert accepted >= 10 and expr in text, (accepted, text)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def args_complete(args):
    try:
        json.loads(args)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("when", ["while the call is decoded", "while the turn's calls are awaited"])
def test_cancelled_request_kills_its_running_tool(tool_server, when):
    pid_file = os.path.join(tempfile.mkdtemp(), "pid")
    code = f"import os, time\nopen({pid_file!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\nprint('late')"
    body = {"messages": USER, "stream": True, "max_tokens": 300, "server_tools": ["python"],
            "replay": [call("python", {"code": code}), "done"]}
    args = ""
    with requests.post(tool_server.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                for c in json.loads(line[6:])["choices"][0]["delta"].get("tool_calls") or []:
                    args += c["function"].get("arguments") or ""
            started = os.path.exists(pid_file) and open(pid_file).read()
            if started and when.startswith("while the call") and not args_complete(args):
                break
            if started and args_complete(args):
                time.sleep(0.5)  # the turn ends and the request pauses for the call
                break
    pid = int(open(pid_file).read())
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"tool process {pid} still alive after the client went away ({when})")
    # The server is fine afterwards.
    ok = requests.post(tool_server.url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200


@pytest.mark.parametrize("extra, needle", [
    ({"server_tools": ["nope"]}, "no server-side tool named 'nope'"),
    ({"server_tools": ["calc", "calc"]}, "named twice"),
    ({"server_tools": ["calc"], "tools": [{"type": "function", "function": {"name": "calc"}}]}, "also defined"),
    ({"replay": []}, "non-empty"),
    ({"server_tools": ["calc"], "n": 2}, "n > 1 cannot be combined"),
])
def test_bad_server_tool_requests_are_400(tc, extra, needle):
    with pytest.raises(BadRequestError) as e:
        tc.chat.completions.create(model="", messages=USER, max_tokens=5, **(
            {"tools": extra.pop("tools")} if "tools" in extra else {}), extra_body=extra)
    assert needle in e.value.body["message"], e.value.body
    assert e.value.body["param"] in ("server_tools", "replay", "n")


def test_replay_needs_the_flag(client):
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="", messages=USER, max_tokens=5, extra_body={"replay": ["x"]})
    assert "--allow-replay" in e.value.body["message"]
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="", messages=USER, max_tokens=5, extra_body={"server_tools": ["calc"]})
    assert "--tools" in e.value.body["message"]
