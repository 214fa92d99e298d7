"""Bad input: each answered with an OpenAI error object and the right status, while the
server keeps serving (checked after every case), and disconnects free their KV."""
import json
import socket
import time

import pytest
import requests

CHAT = "/v1/chat/completions"
OK_MSG = [{"role": "user", "content": "hi"}]

CASES = [
    ("invalid json", b'{"messages": [', 400),
    ("not an object", b"[1, 2]", 400),
    ("missing messages", json.dumps({"model": "x"}).encode(), 422),
    ("messages wrong type", json.dumps({"messages": "hi"}).encode(), 422),
    ("empty messages", json.dumps({"messages": []}).encode(), 400),
    ("unknown role", json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400),
    ("unknown model", json.dumps({"model": "gpt-9", "messages": OK_MSG}).encode(), 404),
    ("max_tokens 0", json.dumps({"messages": OK_MSG, "max_tokens": 0}).encode(), 400),
    ("max_tokens negative", json.dumps({"messages": OK_MSG, "max_tokens": -5}).encode(), 400),
    ("n = 0", json.dumps({"messages": OK_MSG, "n": 0}).encode(), 400),
    ("n not an integer", json.dumps({"messages": OK_MSG, "n": "two"}).encode(), 422),
    ("temperature 5", json.dumps({"messages": OK_MSG, "temperature": 5}).encode(), 400),
    ("prompt longer than context",
     json.dumps({"messages": [{"role": "user", "content": "word " * 5000}]}).encode(), 400),
    ("2 MB body", json.dumps({"messages": [{"role": "user", "content": "a" * (2 << 20)}]}).encode(), 413),
    ("invalid utf-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
]


def still_serving(server):
    r = requests.post(server.url + CHAT, json={"messages": OK_MSG, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("name,body,status", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_openai_error(server, name, body, status):
    r = requests.post(server.url + CHAT, data=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    still_serving(server)


@pytest.mark.parametrize("path,body,param", [
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {"messages": OK_MSG, "logprobs": "yes"}, "logprobs"),
    (CHAT, {"messages": OK_MSG, "server_tools": ["python", 3]}, "server_tools[1]"),
    # Fields of the parts every request flattens in (serde reads those from a buffered map,
    # where the path is lost): the common ones, sampling, structured outputs.
    (CHAT, {"messages": OK_MSG, "n": "two"}, "n"),
    (CHAT, {"messages": OK_MSG, "temperature": "hot"}, "temperature"),
    (CHAT, {"messages": OK_MSG, "logit_bias": {"5": "x"}}, "logit_bias.5"),
    (CHAT, {"messages": OK_MSG, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ("/v1/completions", {"prompt": "a", "top_k": "x"}, "top_k"),
    # Built from another API's body: Responses' sampling fields.
    ("/v1/responses", {"input": "a", "temperature": "x"}, "temperature"),
])
def test_a_field_of_the_wrong_type_is_named(server, path, body, param):
    r = requests.post(server.url + path, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"].startswith(f"invalid request: {param}: "), err


@pytest.mark.parametrize("part,words", [
    ({"type": "image_url", "image_url": {"url": "http://x/y.png"}}, "type 'image_url' are not supported"),
    ({"type": "text"}, "needs a string `text`"),
    ({"text": "hi"}, "needs a string `type`"),
])
def test_content_parts_other_than_text_are_refused_by_name(server, part, words):
    r = requests.post(server.url + CHAT, json={"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, part]}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["param"] == "messages[0]", err
    ok = requests.post(server.url + CHAT, json={"max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "text", "text": "!"}]}]})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path,extra,param,words", [
    (CHAT, {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
     "audio", "audio output"),
    (CHAT, {"modalities": ["text", "audio"]}, "modalities", "'audio'"),
    (CHAT, {"web_search_options": {}}, "web_search_options", "web search"),
    ("/v1/completions", {"suffix": "\n}"}, "suffix", "suffix"),
    ("/v1/completions", {"best_of": 3}, "best_of", "best_of 3"),
    ("/v1/completions", {"best_of": 3, "n": 2}, "best_of", "equal to n (2)"),
])
def test_fields_asking_for_what_is_not_served_are_refused_by_name(server, path, extra, param,
                                                                   words):
    """OpenAI fields that would change the output if ignored (audio, web search, insertion,
    best-of ranking) are 400s naming them; their harmless values pass."""
    base = {"messages": OK_MSG} if path == CHAT else {"prompt": "hi"}
    r = requests.post(server.url + path, json={**base, **extra, "max_tokens": 2})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err
    harmless = {"modalities": ["text"]} if path == CHAT else {"suffix": "", "best_of": 2, "n": 2}
    ok = requests.post(server.url + path, json={**base, **harmless, "max_tokens": 2})
    assert ok.status_code == 200, ok.text


LONG = "word " * 5000


@pytest.mark.parametrize("path,body,param", [
    (CHAT, {"messages": [{"role": "user", "content": LONG}], "max_tokens": 2}, "messages"),
    ("/v1/completions", {"prompt": LONG, "max_tokens": 2}, "prompt"),
    ("/v1/completions", {"prompt": ["hi", LONG], "max_tokens": 2}, "prompt[1]"),
    ("/v1/responses", {"input": LONG, "max_output_tokens": 2}, "input"),
])
def test_context_error_names_the_prompt_field(server, path, body, param):
    r = requests.post(server.url + path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == param, err


def test_unknown_route_is_404_json(server):
    r = requests.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_client_disconnect_mid_stream_frees_the_request(server):
    body = {"messages": OK_MSG, "max_tokens": 1000, "stream": True, "ignore_eos": True}
    with requests.post(server.url + CHAT, json=body, stream=True) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(l.startswith(b"data: ") for l in got)
        assert server.metric("tandem_running_requests") == 1
    assert server.wait_idle(), "request kept running after the client left"
    still_serving(server)


def test_client_disconnect_before_response(server):
    payload = json.dumps({"messages": OK_MSG, "max_tokens": 1000, "ignore_eos": True}).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + payload)
        time.sleep(0.3)
    assert server.wait_idle(), "non-streamed request kept running after the client left"
    still_serving(server)


def test_overload_gets_503():
    from conftest import Server

    s = Server("--max-seqs", "1", "--kv-cells", "2048", "--max-queue", "1")
    try:
        body = {"messages": OK_MSG, "max_tokens": 400, "ignore_eos": True, "stream": True}
        first = requests.post(s.url + CHAT, json=body, stream=True)
        next(first.iter_lines())
        second = requests.post(s.url + CHAT, json=body, stream=True)
        third = requests.post(s.url + CHAT, json=body)
        assert third.status_code == 503, third.text
        assert third.json()["error"]["code"] == "overloaded"
        first.close()
        second.close()
    finally:
        s.stop()
