"""A stand-in for a CPU-bound tool beside the decode (bench/omp-spin.sh): runs a fixed piece of
pure-python work, then sleeps 0.4 s, until killed, and appends each piece's wall time in
seconds to TIMES_FILE (one line each), so the bench can tell how much CPU the server left it.
MODE `inproc` runs the piece in this process (about 20 ms of CPU on the 2-core EPYC); `spawn`
starts a new interpreter for each piece, which then runs a piece of ten times that work, as a
tool that starts a process per call does (about 0.2 s).
Usage: python3 bench/cpu_helper.py inproc|spawn TIMES_FILE"""
import subprocess
import sys
import time

WORK = "s = 0\nfor i in range({n}):\n    s += i * i % 7\n"


def piece(mode):
    if mode == "inproc":
        exec(WORK.format(n=300_000), {})
    else:
        subprocess.run([sys.executable, "-c", WORK.format(n=3_000_000)], check=True)


def main(mode, path):
    assert mode in ("inproc", "spawn"), mode
    with open(path, "a", buffering=1) as out:
        while True:
            t0 = time.perf_counter()
            piece(mode)
            out.write(f"{time.perf_counter() - t0:.6f}\n")
            time.sleep(0.4)


if __name__ == "__main__":
    main(*sys.argv[1:3])
