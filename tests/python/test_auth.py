"""--api-key / --api-key-file: protected endpoints need a key, probes do not."""
import openai
import pytest
import requests

from conftest import ROOT, Server


@pytest.fixture(scope="module")
def keyed_server():
    key_file = ROOT / "target" / "test-api-keys.txt"
    key_file.write_text("# keys for test_auth\nfile-key\n")
    s = Server("--max-seqs", "2", "--kv-cells", "4096", "--api-key", "k1,k2",
               "--api-key-file", str(key_file))
    yield s
    s.stop()


def client(s, key):
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0)


def test_each_key_is_accepted(keyed_server):
    for key in ("k1", "k2", "file-key"):
        c = client(keyed_server, key)
        model = c.models.list().data[0].id
        r = c.chat.completions.create(model=model, max_tokens=3,
                                      messages=[{"role": "user", "content": "Hi"}])
        assert r.usage.completion_tokens >= 1
    r = requests.post(keyed_server.url + "/tokenize", json={"content": "hi"},
                      headers={"x-api-key": "k2"}, timeout=10)
    assert r.status_code == 200 and r.json()["count"] >= 1


def test_wrong_or_missing_key_is_401(keyed_server):
    with pytest.raises(openai.AuthenticationError) as e:
        client(keyed_server, "k3").models.list()
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"
    for path, body in (("/v1/chat/completions", {"messages": []}), ("/tokenize", {}),
                       ("/v1/responses/resp_x", None)):
        call = requests.post if body is not None else requests.get
        r = call(keyed_server.url + path, json=body, timeout=10)
        assert r.status_code == 401, path
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert "Missing API key" in r.json()["error"]["message"]
    r = requests.get(keyed_server.url + "/v1/models", headers={"Authorization": "Basic k1"},
                     timeout=10)
    assert r.status_code == 401


def test_probes_are_public_and_refusals_counted(keyed_server):
    assert requests.get(keyed_server.url + "/health", timeout=10).ok
    assert requests.get(keyed_server.url + "/v1/models", timeout=10).status_code == 401
    text = requests.get(keyed_server.url + "/metrics", timeout=10).text
    assert 'path="/v1/models",status="401"' in text


def test_streaming_with_key(keyed_server):
    c = client(keyed_server, "k1")
    model = c.models.list().data[0].id
    chunks = list(c.chat.completions.create(model=model, max_tokens=4, stream=True,
                                            messages=[{"role": "user", "content": "Hi"}]))
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_empty_key_file_refused_at_start(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("# nothing\n\n")
    with pytest.raises(AssertionError, match="server exited"):
        Server("--max-seqs", "2", "--kv-cells", "4096", "--api-key-file", str(key_file))
