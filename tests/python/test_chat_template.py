"""`--chat-template-file`: the server renders chat with the given Jinja template instead of the
model's own; a missing file or a template that does not compile stops the start with a message
naming the problem."""
import subprocess

import requests

from conftest import BIN, COSTS, Server

TEMPLATE = ("{% for m in messages %}[{{ m.role | upper }}] {{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}[ASSISTANT] {% endif %}")


def test_the_given_template_renders_the_chat(tmp_path):
    path = tmp_path / "chat.jinja"
    path.write_text(TEMPLATE)
    s = Server("--max-seqs", "2", "--kv-cells", "4096", "--chat-template-file", str(path))
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        r = requests.post(s.url + "/v1/chat/completions", timeout=60,
                          json={"messages": messages, "max_tokens": 1}).json()
        text = "[SYSTEM] Be brief.\n[USER] Hi\n[ASSISTANT] "
        tokens = requests.post(s.url + "/tokenize", timeout=10,
                               json={"content": text, "add_special": True}).json()["tokens"]
        assert r["usage"]["prompt_tokens"] == len(tokens)
    finally:
        s.stop()
    assert "chat template from" in open(s.log.name).read()


def start_fails(*args):
    cmd = [str(BIN), "serve", "--port", "1", "--costs", str(COSTS), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    return p.stderr


def test_a_missing_or_broken_template_stops_the_start(tmp_path, server):
    # `server` first: it saves the cost profile these starts read.
    missing = tmp_path / "nope.jinja"
    assert f"--chat-template-file {missing}" in start_fails("--chat-template-file", str(missing))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m.content }}")
    assert "chat template" in start_fails("--chat-template-file", str(broken))
