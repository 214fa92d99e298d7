"""`--omp-spin`: libgomp reads its spin count from the environment when it is loaded, so the
server runs itself again with GOMP_SPINCOUNT set; a setting the user made in the environment
wins over the flag."""
import os
from pathlib import Path

from conftest import Server

SMALL = ("--max-seqs", "2", "--kv-cells", "2048")


def environ(pid):
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    return {**env, **extra}


def log_of(server):
    return Path(server.log.name).read_text()


def test_the_flag_is_put_in_the_servers_environment():
    s = Server(*SMALL, "--omp-spin", "1234", env=clean_env())
    try:
        assert environ(s.proc.pid).get("GOMP_SPINCOUNT") == "1234"
        assert "spin 1234 times at a barrier" in log_of(s)
    finally:
        s.stop()


def test_the_default_is_ten_thousand():
    s = Server(*SMALL, env=clean_env())
    try:
        assert environ(s.proc.pid).get("GOMP_SPINCOUNT") == "10000"
    finally:
        s.stop()


def test_a_setting_in_the_environment_wins_over_the_flag():
    s = Server(*SMALL, "--omp-spin", "1234", env=clean_env(OMP_WAIT_POLICY="passive"))
    try:
        env = environ(s.proc.pid)
        assert "GOMP_SPINCOUNT" not in env and env["OMP_WAIT_POLICY"] == "passive"
        assert "OMP_WAIT_POLICY=passive from the environment is in force, not --omp-spin 1234" in log_of(s)
    finally:
        s.stop()
