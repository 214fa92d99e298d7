"""Structured outputs through other servers' request fields: vLLM's `structured_outputs` and
`guided_*`, llama-server's `grammar` (GBNF) and `json_schema`, SGLang's `regex` and `ebnf`; on
chat and text completions, streamed and not, several choices; bad rules are 400s naming their
field."""
import json
import re

import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
ASK = [{"role": "user", "content": "Is the sky blue? Answer."}]

LIST_GBNF = r"""
# a short list of small numbers or words
root ::= "[" item ("," ws item){0,3} "]"
item ::= Num | [a-z]+
Num  ::= "-"? [1-9] [0-9]{0,2}
ws   ::= | " "
"""
LIST_RE = r"\[(-?[1-9][0-9]{0,2}|[a-z]+)(, ?(-?[1-9][0-9]{0,2}|[a-z]+)){0,3}\]"


def chat(client, extra, **kw):
    kw = {"model": MODEL, "messages": ASK, "max_tokens": 40, "temperature": 1.0, **kw}
    return client.chat.completions.create(**kw, extra_body=extra)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_choice_and_regex_hold_on_chat(client, seed):
    r = chat(client, {"structured_outputs": {"choice": ["yes", "no", "not sure"]}}, seed=seed)
    assert r.choices[0].message.content in ["yes", "no", "not sure"]
    assert r.choices[0].finish_reason == "stop"
    r = chat(client, {"guided_regex": r"\d{3}-\d{4}"}, seed=seed)
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.choices[0].message.content)
    r = chat(client, {"regex": r"^(red|green|blue) [a-z]{2,8}$"}, seed=seed)
    assert re.fullmatch(r"(red|green|blue) [a-z]{2,8}", r.choices[0].message.content)


def test_gbnf_grammar_on_text_completions_streamed_and_not(client):
    kw = dict(model=MODEL, prompt="A list:", max_tokens=40, temperature=1.0, seed=5,
              extra_body={"grammar": LIST_GBNF})
    full = client.completions.create(**kw)
    text = full.choices[0].text
    assert re.fullmatch(LIST_RE, text), text
    streamed = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True)
                       if c.choices)
    assert streamed == text


def test_lark_grammar_and_several_choices(client):
    r = chat(client, {"guided_grammar": 'start: "The answer is " ("yes" | "no") "."'}, n=3,
             seed=4)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.message.content in ["The answer is yes.", "The answer is no."], c.message.content
    r = chat(client, {"ebnf": 'root ::= "ok" | "fine"'}, n=2, seed=4)
    assert {c.message.content for c in r.choices} <= {"ok", "fine"}


def test_json_schemas(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = chat(client, {"guided_json": schema}, max_tokens=60, seed=7)
    v = json.loads(r.choices[0].message.content)
    assert set(v) == {"name", "age"} and isinstance(v["age"], int)
    r = client.completions.create(model=MODEL, prompt="Person:", max_tokens=60, seed=7,
                                  extra_body={"json_schema": json.dumps(schema)})
    v = json.loads(r.choices[0].text)
    assert set(v) == {"name", "age"}
    r = client.completions.create(model=MODEL, prompt="Person:", max_tokens=60, seed=7,
                                  extra_body={"response_format": {
                                      "type": "json_schema",
                                      "json_schema": {"name": "p", "schema": schema}}})
    assert set(json.loads(r.choices[0].text)) == {"name", "age"}, "vLLM's response_format"
    r = chat(client, {"structured_outputs": {"json_object": True}}, max_tokens=60, seed=8)
    assert r.choices[0].finish_reason == "length" or isinstance(
        json.loads(r.choices[0].message.content), dict)


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("extra,param,words", [
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice", "both"),
    ({"regex": "(unclosed"}, "regex", "does not compile"),
    ({"guided_choice": []}, "guided_choice", "non-empty list"),
    ({"grammar": 'root ::= "a"\nitem ::= <think>'}, "grammar", "line 2"),
    ({"grammar": 'item ::= "a"'}, "grammar", "root"),
    ({"guided_grammar": "start: undefined_rule"}, "guided_grammar", "does not compile"),
    ({"guided_json": "{not json"}, "guided_json", "not JSON"),
    ({"structured_outputs": {"structural_tag": "x"}}, "structured_outputs.structural_tag",
     "not supported"),
    ({"regex": "a", "tools": TOOLS}, "regex", "tool_choice"),
    ({"regex": "a", "response_format": {"type": "json_object"}}, "regex", "response_format"),
])
def test_bad_rules_are_400s_naming_the_field(server, extra, param, words):
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    r = requests.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err
    body = {"model": MODEL, "prompt": "x", "max_tokens": 4, **extra}
    if "tools" not in extra:
        r = requests.post(server.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_tools_with_tool_choice_none_take_a_rule(client):
    r = chat(client, {"guided_choice": ["yes", "no"]}, tools=TOOLS, tool_choice="none", seed=1)
    assert r.choices[0].message.content in ["yes", "no"]
    assert not r.choices[0].message.tool_calls


def test_a_complete_rule_ends_the_reply_even_with_ignore_eos(client):
    r = chat(client, {"guided_choice": ["yes", "no"], "ignore_eos": True}, max_tokens=30, seed=2)
    c = r.choices[0]
    assert c.message.content in ["yes", "no"] and c.finish_reason == "stop"
    assert r.usage.completion_tokens < 30


def test_active_tools_take_precedence_over_response_format(client):
    # Unlike a structured-output field, `response_format` beside active tools is no error:
    # the tool-call grammar applies. (A closed schema keeps the call short.)
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, temperature=0,
                                       tools=[tool], tool_choice="required", parallel_tool_calls=False,
                                       response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "tool_calls", r
    assert r.choices[0].message.tool_calls[0].function.name == "f"


CONFIG = {"name": "billing", "port": 8080, "database": {"host": "db.internal", "pool": 20},
          "features": ["invoices", "refunds"]}
CONFIG_SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "port": {"type": "integer"},
    "database": {"type": "object", "properties": {"host": {"type": "string"},
                                                  "pool": {"type": "integer"}}},
    "features": {"type": "array", "items": {"type": "string"}}}}


@pytest.fixture(scope="module")
def indented():
    from conftest import Server
    s = Server("--max-seqs", "2", "--kv-cells", "4096", "--json-layout", "indented")
    yield s
    s.stop()


def copy_config(url, **extra):
    """Asks for an indented JSON file again under its schema, the file as the prediction."""
    text = json.dumps(CONFIG, indent=2)
    body = {"model": MODEL, "prompt": f"Original file:\n```json\n{text}\n```\n\nThe same file, "
            "unchanged:\n```json\n", "max_tokens": 90, "temperature": 0, "stop": ["```"],
            "prediction": {"type": "content", "content": text}, **extra}
    r = requests.post(url + "/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return text, r.json()


def test_an_indented_json_layout_lets_the_output_copy_an_indented_file(server, indented):
    """`--json-layout indented`: the schema-constrained output may keep the file's indentation,
    so it copies the file and the prediction's drafts are accepted through its line breaks; the
    default compact layout writes one line and refuses the file's line breaks (SmolLM2, whose
    next token after `{` would be one, closes the object at once here: no key is required)."""
    text, r = copy_config(indented.url, json_schema=CONFIG_SCHEMA)
    out = r["choices"][0]["text"]
    assert json.loads(out) == CONFIG
    assert out.strip() == text, out
    assert r["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] >= 40, r["usage"]
    _, c = copy_config(server.url, json_schema=CONFIG_SCHEMA)
    assert "\n" not in c["choices"][0]["text"] and json.loads(c["choices"][0]["text"]) != CONFIG
    details = c["usage"]["completion_tokens_details"]
    assert details["accepted_prediction_tokens"] < r["usage"]["completion_tokens_details"][
        "accepted_prediction_tokens"], (details, r["usage"])


@pytest.mark.parametrize("rule", [
    {"structured_outputs": {"json": CONFIG_SCHEMA, "disable_any_whitespace": True}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "config", "schema": CONFIG_SCHEMA}},
     "structured_outputs": {"disable_any_whitespace": True}},
], ids=["structured_outputs.json", "response_format"])
def test_disable_any_whitespace_keeps_json_compact_on_an_indented_server(indented, rule):
    """vLLM's option holds whichever field carries the schema (here the file copied would
    otherwise be indented)."""
    _, r = copy_config(indented.url, **rule)
    out = r["choices"][0]["text"]
    assert isinstance(json.loads(out), dict) and "\n" not in out, out


def test_the_openai_clients_pydantic_helpers(client):
    """`chat.completions.parse` / `responses.parse` with a pydantic model (a strict schema with
    `$defs`, an enum, a Literal, a nullable field) and `pydantic_function_tool` (a strict tool)
    give parsed objects, streamed too. (Strings are bounded: SmolLM2 can loop inside one.)"""
    from enum import Enum
    from typing import Annotated, List, Literal, Optional

    import openai
    from pydantic import BaseModel, Field

    class Color(str, Enum):
        red = "red"
        blue = "blue"

    class Address(BaseModel):
        city: str
        zip: Optional[str]

    class Person(BaseModel):
        name: str = Field(max_length=20)
        age: int
        color: Color
        tags: List[Annotated[str, Field(max_length=20)]] = Field(max_length=2)
        address: Address
        kind: Literal["human", "robot"]

    ask = [{"role": "user", "content": "Describe a person."}]
    kw = {"model": MODEL, "temperature": 0}
    r = client.chat.completions.parse(messages=ask, response_format=Person, max_tokens=150, **kw)
    person = r.choices[0].message.parsed
    assert isinstance(person, Person) and isinstance(person.address, Address), r
    r = client.responses.parse(input="Describe a person.", text_format=Person,
                               max_output_tokens=150, **kw)
    assert r.output_parsed == person
    with client.chat.completions.stream(messages=ask, response_format=Person, max_tokens=150,
                                        **kw) as s:
        for _ in s:
            pass
        assert s.get_final_completion().choices[0].message.parsed == person

    class GetWeather(BaseModel):
        city: str
        unit: Literal["c", "f"]

    r = client.chat.completions.parse(
        messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=60,
        tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required",
        parallel_tool_calls=False, **kw)
    (call,) = r.choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, GetWeather), r
