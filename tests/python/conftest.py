"""Starts `tandem serve` on a free port for the HTTP tests (release build, default model)."""
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "tandem"
# The first server of a test session profiles the model and saves its costs here; the others
# start from them (`--costs`), which spares each the profile's forward passes (about 1,900
# tokens run through the model).
COSTS = ROOT / "target" / f"test-costs-{os.getpid()}.json"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, env=None):
        """`tandem serve` with these flags, in `env` (default: this process's environment)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if "--costs" not in args and "--save-costs" not in args:
            args = (*args, "--costs" if COSTS.exists() else "--save-costs", str(COSTS))
        cmd = [str(BIN), "serve", "--port", str(self.port), *args]
        self.log = open(ROOT / "target" / f"test-server-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, f"server exited; see {self.log.name}"
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def metric(self, name):
        text = requests.get(self.url + "/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_idle(self, timeout=10):
        """Whether the engine runs and queues nothing within `timeout` seconds (a request that
        answered, or whose client left, may still be leaving the engine)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.metric("tandem_running_requests") == 0 == self.metric("tandem_queue_length"):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# Bit-exact mode: prefix reuse must reproduce a cold request token for token.
EXACT = ("--flash-attn", "off", "--prefix-reuse", "exact")


@pytest.fixture(scope="session")
def server():
    s = Server("--max-seqs", "8", "--kv-cells", "16384", "--embeddings", *EXACT)
    yield s
    s.stop()


@pytest.fixture
def fresh_server():
    s = Server("--max-seqs", "4", "--kv-cells", "8192", *EXACT)
    yield s
    s.stop()


@pytest.fixture
def default_server():
    """A server with the default flags (`--flash-attn auto`, off on a CPU; whole-turn prefix
    reuse)."""
    s = Server("--max-seqs", "4", "--kv-cells", "8192")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def pytest_sessionfinish(session, exitstatus):
    COSTS.unlink(missing_ok=True)
