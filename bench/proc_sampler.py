#!/usr/bin/env python3
"""What else used this machine's CPUs while a benchmark ran, second by second.

Reads /proc once a second for SECONDS and prints one line per second: the machine's busy share
of all CPUs, the steal ticks the kernel reports (time a hypervisor gave the vCPUs to someone
else, where it tells), the `tandem serve` process's CPU time and run-queue wait (schedstat:
time its threads were runnable but not running, i.e. waiting for a core held by something in
this machine), and the four busiest other processes in that second. At the end it sums the
run. If the server's step times slow down (bench/step_speed.py) while nothing here competes
and no steal shows, the slowdown came from outside this machine (a shared host).

Usage: python3 bench/proc_sampler.py SECONDS > samples.txt &   (stdlib only)
"""

import glob
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
SERVE = "tandem serve"  # how cpu_ticks names the server


def cpu_ticks():
    """{pid: (name, user+system ticks)} of every process (a kernel worker's name changes with
    its work, so the pid is the key)."""
    out = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(path).read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        if name == "tandem":
            name = "tandem " + subcommand(os.path.dirname(path))
        fields = s[s.rindex(")") + 2 :].split()
        out[path.split("/")[2]] = (name, int(fields[11]) + int(fields[12]))
    return out


def subcommand(proc_dir):
    """`serve`, `bench`, ... of a tandem process ('' when it has gone)."""
    try:
        argv = open(f"{proc_dir}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return ""
    return argv[1].decode(errors="replace") if len(argv) > 1 else ""


def serve_sched(ticks):
    """(run ns, wait ns) summed over the threads of every `tandem serve` process in `ticks`."""
    run = wait = 0
    for pid, (name, _) in ticks.items():
        if name != SERVE:
            continue
        for task in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            try:
                a = open(task).read().split()
            except OSError:
                continue
            run, wait = run + int(a[0]), wait + int(a[1])
    return run, wait


def machine():
    """The first line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    return [int(x) for x in open("/proc/stat").readline().split()[1:9]]


def sample():
    ticks = cpu_ticks()
    return time.time(), machine(), serve_sched(ticks), ticks


def line(prev, cur, totals):
    (t0, m0, s0, p0), (t1, m1, s1, p1) = prev, cur
    d = [b - a for a, b in zip(m0, m1)]
    all_ticks = sum(d) or 1
    busy = 100.0 * (all_ticks - d[3] - d[4]) / all_ticks
    run, wait = (s1[0] - s0[0]) / 1e9, (s1[1] - s0[1]) / 1e9
    others = {}
    for pid, (name, ticks) in p1.items():
        used = ticks - p0.get(pid, (name, 0))[1]
        if used > 0 and name != SERVE:
            name = name.split("-")[0] if name.startswith("kworker") else name
            others[name] = others.get(name, 0) + used
    for name, used in others.items():
        totals["others"][name] = totals["others"].get(name, 0) + used
    totals["steal"] += d[7]
    totals["run"] += run
    totals["wait"] += wait
    totals["max_wait"] = max(totals["max_wait"], wait)
    top = " ".join(f"{n}:{v}" for n, v in sorted(others.items(), key=lambda x: -x[1])[:4])
    return (f"{time.strftime('%H:%M:%S', time.gmtime(t1))} busy {busy:5.1f}% steal {d[7]} | "
            f"serve cpu {run:.2f} s, run-queue wait {wait:.2f} s | others (ticks): {top}")


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    totals = {"steal": 0, "run": 0.0, "wait": 0.0, "max_wait": 0.0, "others": {}}
    prev, end = sample(), time.time() + seconds
    while time.time() < end:
        time.sleep(1.0)
        cur = sample()
        print(line(prev, cur, totals), flush=True)
        prev = cur
    top = sorted(totals["others"].items(), key=lambda x: -x[1])[:8]
    print(f"\nover {seconds:.0f} s: steal {totals['steal']} ticks; tandem serve cpu "
          f"{totals['run']:.1f} s, run-queue wait {totals['wait']:.1f} s (at most "
          f"{totals['max_wait']:.2f} s in a second); others' cpu: "
          + ", ".join(f"{n} {t / HZ:.1f} s" for n, t in top))


if __name__ == "__main__":
    main()
