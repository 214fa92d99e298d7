#!/usr/bin/env python3
"""What one `python` tool call costs beyond its program: starting an interpreter with the driver
per call (what the tool did before its fork server: here, the fork server started, one call,
stopped) against a call forked from the tool's warm fork server
(crates/tools/src/builtin/python_driver.py), in wall time and CPU time (this process's
children, reaped). Each call runs the one-line program `1` to its end.

Usage: python3 bench/python_call_cost.py [CALLS [OUT]]
Prints the figures; with OUT, also writes OUT.json and OUT.md (date, machine, command).
"""
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time

DRIVER = os.path.join(os.path.dirname(__file__), "../crates/tools/src/builtin/python_driver.py")
PROGRAM = b'{"line": "1"}\n{"end": true}\n'


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def interpreter_per_call(calls):
    for _ in range(calls):
        fork_server(1)


def fork_server(calls):
    """Starts the fork server, makes `calls` calls, stops it (so its CPU and its children's
    is counted)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fork.sock")
        srv = subprocess.Popen([sys.executable, "-I", "-S", "-u", DRIVER, path, "10", str(512 << 20), "0"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert srv.stdout.readline() == b"ready\n"
        for _ in range(calls):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                s.sendall(PROGRAM)
                out = b""
                while chunk := s.recv(4096):
                    out += chunk
                assert out.endswith(b"\n1\n"), out
        srv.stdin.close()
        srv.wait()


def measure(f, calls):
    cpu, t = children_cpu(), time.perf_counter()
    f(calls)
    return time.perf_counter() - t, children_cpu() - cpu


def main():
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    fresh_wall, fresh_cpu = measure(interpreter_per_call, calls)
    start_wall, start_cpu = measure(fork_server, 0)
    fork_wall, fork_cpu = measure(fork_server, calls)
    per = {
        "interpreter_per_call": {"wall_ms": 1e3 * fresh_wall / calls, "cpu_ms": 1e3 * fresh_cpu / calls},
        "forked_call": {"wall_ms": 1e3 * (fork_wall - start_wall) / calls,
                        "cpu_ms": 1e3 * (fork_cpu - start_cpu) / calls},
    }
    report = {"calls": calls, "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "per_call": per}
    table = "\n".join([f"# python tool: cost of a call beyond its program\n\n{report['date']}, "
                        f"{report['machine']}, Python {report['python']}; "
                        f"`python3 bench/python_call_cost.py {' '.join(sys.argv[1:])}` (mean of {calls} calls)\n",
                        "| per call | wall ms | CPU ms |", "|---|---|---|"]
                       + [f"| {k} | {v['wall_ms']:.1f} | {v['cpu_ms']:.1f} |" for k, v in per.items()])
    print(json.dumps(report, indent=1))
    print(table)
    if len(sys.argv) > 2:
        with open(sys.argv[2] + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(sys.argv[2] + ".md", "w") as f:
            f.write(table + "\n")

if __name__ == "__main__":
    main()
