"""Bit-exact mode on a model with K-quant weights: the default model requantized to Q4_K_M
(`examples/requantize`, which `cargo test` builds), as Gemma 3's and many other GGUFs are.
Two llama.cpp kernels round differently for different batch sizes there: ggml's tiled K-quant
matmul (only from 8 rows) and the matmul on repacked Q4_K weights (a batch's last rows % 4
rows one by one). A reused prefix leaves a shorter chunk to prefill, so either would change
the logits; `--prefix-reuse exact` turns the first off and loads the weights unrepacked, and a
reused request then gives the tokens and log-probabilities of a cold one."""
import os
import subprocess

import pytest
import requests

from conftest import EXACT, ROOT, Server

REQUANTIZE = ROOT / "target" / "release" / "examples" / "requantize"
CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
DEFAULT = os.path.join(CACHE, "tandem", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
COSTS = ROOT / "target" / f"test-costs-q4km-{os.getpid()}.json"
# Prompts of 6 to 28 tokens, each starting with its own word (the cold run reuses nothing).
# Whether a kernel's rounding shows in the log-probabilities depends on the prompt: with the
# weights repacked (and the tiled kernel off), the fifth differed here, every run.
PROMPTS = [
    "The three longest rivers in the world are",
    "Once upon a time, in a small village at the edge of a great forest,",
    "def fibonacci(n):\n    ",
    "Mountain harbor glacier road river",
    "Island meadow canyon tower market village bridge",
    "Ocean forest desert castle lake garden valley city road harbor meadow",
    "Garden tower river glacier canyon island bridge market ocean desert lake city forest",
    "Valley road meadow harbor castle tower village mountain desert river canyon lake "
    "garden island bridge ocean",
    "Lake city bridge ocean",
    "Canyon village harbor mountain forest island",
    "Desert tower meadow road garden glacier ocean river bridge",
    "Castle lake market canyon valley forest harbor city glacier mountain island tower meadow",
]


@pytest.fixture(scope="module")
def q4km_server(tmp_path_factory):
    assert REQUANTIZE.is_file(), f"{REQUANTIZE} is missing: cargo test --release builds it"
    model = tmp_path_factory.mktemp("q4km") / "smollm2-q4_k_m.gguf"
    subprocess.run([str(REQUANTIZE), DEFAULT, str(model), "q4_k_m"], check=True, capture_output=True)
    costs = ("--costs" if COSTS.exists() else "--save-costs", str(COSTS))
    s = Server("--model", str(model), "--max-seqs", "4", "--kv-cells", "4096", *costs, *EXACT)
    yield s
    s.stop()


def complete(server, prompt):
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "logprobs": 5}
    r = requests.post(server.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_reused_prompt_gives_the_cold_tokens(q4km_server, prompt):
    cold = complete(q4km_server, prompt)  # the prompts share no prefix: nothing to reuse
    assert cold["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    warm = complete(q4km_server, prompt)
    assert warm["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, warm["usage"]
    assert warm["choices"][0]["text"] == cold["choices"][0]["text"]
    # The log-probabilities too, to the bit: greedy text hides small changes in the logits.
    assert warm["choices"][0]["logprobs"] == cold["choices"][0]["logprobs"]
