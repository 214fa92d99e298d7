"""A stand-in for a CPU-bound tool beside the decode (bench/omp-spin.sh): runs a fixed piece of
pure-python work, then sleeps 0.4 s, until killed, and appends each piece's wall time in
seconds to the file named by its argument (one line each), so the bench can tell how much CPU
the server left it.
Usage: python3 bench/cpu_helper.py TIMES_FILE"""
import sys
import time


def piece():
    s = 0
    for i in range(300_000):
        s += i * i % 7
    return s


def main(path):
    with open(path, "a", buffering=1) as out:
        while True:
            t0 = time.perf_counter()
            piece()
            out.write(f"{time.perf_counter() - t0:.6f}\n")
            time.sleep(0.4)


if __name__ == "__main__":
    main(sys.argv[1])
