"""Bit-exact mode on a model with K-quant weights llama.cpp does not repack: the default model
requantized to Q6_K (`examples/requantize`, which `cargo test` builds). ggml's tiled K-quant
matmul runs only for batches of 8 rows or more, so a reused prefix, which leaves a short chunk
to prefill, would change the rounding; `--prefix-reuse exact` turns that kernel off, and a
reused request then gives the tokens and log-probabilities of a cold one."""
import os
import subprocess

import pytest
import requests

from conftest import EXACT, ROOT, Server

REQUANTIZE = ROOT / "target" / "release" / "examples" / "requantize"
CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
DEFAULT = os.path.join(CACHE, "tandem", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
COSTS = ROOT / "target" / f"test-costs-q6k-{os.getpid()}.json"
PROMPTS = [
    "The three longest rivers in the world are",
    "Once upon a time, in a small village at the edge of a great forest,",
    "def fibonacci(n):\n    ",
]


@pytest.fixture(scope="module")
def q6k_server(tmp_path_factory):
    assert REQUANTIZE.is_file(), f"{REQUANTIZE} is missing: cargo test --release builds it"
    model = tmp_path_factory.mktemp("q6k") / "smollm2-q6_k.gguf"
    subprocess.run([str(REQUANTIZE), DEFAULT, str(model), "q6_k"], check=True, capture_output=True)
    costs = ("--costs" if COSTS.exists() else "--save-costs", str(COSTS))
    s = Server("--model", str(model), "--max-seqs", "4", "--kv-cells", "4096", *costs, *EXACT)
    yield s
    s.stop()


def complete(server, prompt):
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "logprobs": 1}
    r = requests.post(server.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_reused_prompt_gives_the_cold_tokens(q6k_server, prompt):
    cold = complete(q6k_server, prompt)  # the prompts share no prefix: nothing to reuse
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    warm = complete(q6k_server, prompt)
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, warm["usage"]
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]
    # The log-probabilities too, to the bit: greedy text hides small changes in the logits.
    assert warm["choices"][0]["logprobs"] == cold["choices"][0]["logprobs"]
