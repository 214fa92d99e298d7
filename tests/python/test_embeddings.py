"""`/v1/embeddings` (`--embeddings`): the `openai` client's default (base64) and float
encodings give the same unit-length vectors of the model's hidden size; text and its token ids
embed alike; a list embeds like its items one by one; usage counts the tokens; bad input is a
400 naming `input`; a server started without `--embeddings` answers 501."""
import math

import pytest
import requests

MODEL = "SmolLM2-135M-Instruct.Q4_1"
TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today."]


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_vectors_from_the_openai_client(client, server):
    inputs_before = server.metric("tandem_embedding_inputs_total") or 0
    tokens_before = server.metric("tandem_embedding_tokens_total") or 0
    r = client.embeddings.create(model=MODEL, input=TEXTS)  # base64 on the wire
    assert server.metric("tandem_embedding_inputs_total") == inputs_before + 2
    assert server.metric("tandem_embedding_tokens_total") == tokens_before + r.usage.prompt_tokens
    assert [d.index for d in r.data] == [0, 1]
    vs = [d.embedding for d in r.data]
    assert len(vs[0]) == 576 and all(abs(norm(v) - 1) < 1e-4 for v in vs)
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert all(cos(a.embedding, b) > 0.99999 for a, b in zip(floats.data, vs))
    one = client.embeddings.create(model=MODEL, input=TEXTS[1]).data[0].embedding
    assert cos(one, vs[1]) > 0.9995  # packed with another input: other kernels, close rounding
    assert cos(vs[0], vs[1]) < 0.999
    ids = requests.post(server.url + "/tokenize", json={"content": TEXTS[0], "add_special": True}).json()["tokens"]
    by_ids = client.embeddings.create(model=MODEL, input=[ids]).data[0].embedding
    assert cos(by_ids, vs[0]) > 0.9995
    assert r.usage.prompt_tokens == r.usage.total_tokens >= len(ids) + 2


@pytest.mark.parametrize("body,param", [
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": ["a", ""]}, "input"),
    ({"input": [1, "a"]}, "input"),
    ({"input": [[1], []]}, "input"),
    ({"input": [10 ** 9]}, "input"),
    ({"input": 3}, "input"),
    ({"input": "word " * 3000}, "input"),
    ({"input": "a", "dimensions": 64}, "dimensions"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_input_is_a_400(server, body, param):
    r = requests.post(server.url + "/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    ok = requests.post(server.url + "/v1/embeddings", json={"input": "still fine"}, timeout=60)
    assert ok.status_code == 200


def test_without_the_flag_it_is_501(default_server):
    r = requests.post(default_server.url + "/v1/embeddings", json={"input": "a"}, timeout=30)
    assert r.status_code == 501
    assert "--embeddings" in r.json()["error"]["message"]
