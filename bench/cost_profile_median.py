#!/usr/bin/env python3
"""The median of each figure over the startup cost profiles `tandem serve` logged
("costs: forward ... ms + ... ms/token + attention ... us per ... pair (... us in rows under
N tokens) + ... ms per sampled row; swap out ... us/token, in ... us/token; ... KV
bytes/token"; older lines without the attention or sampled-row figures count them as 0),
printed as a `tandem simulate --costs` JSON file.
Usage: bench/cost_profile_median.py LOG... (server logs, e.g. bench/work/intercept/*.log, or
the file bench/startup-profiles.sh writes).
The preset `smollm2-cpu` (crates/server/src/costs.rs) was made this way."""
import json
import re
import statistics
import sys

LINE = re.compile(
    r"costs: forward ([\d.]+) ms \+ ([\d.]+) ms/token"
    r"(?: \+ attention ([\d.]+) us per \(token, earlier token\) pair"
    r"(?: \(([\d.]+) us in rows under \d+ tokens\))?)?"
    r"(?: \+ ([\d.]+) ms per sampled row)?; "
    r"swap out ([\d.]+) us/token, in ([\d.]+) us/token; (\d+) KV bytes/token"
)


def profiles(paths):
    """The figures of each `costs:` line in the logs. A log of a server started with `--costs`
    (it says the costs were "not profiled") is skipped: its line repeats a preset or a file,
    not this machine's speed."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        if any("not profiled" in line for line in lines):
            continue
        for line in lines:
            m = LINE.search(line)
            if m:
                yield m.groups()


def main():
    found = list(profiles(sys.argv[1:]))
    if not found:
        sys.exit("no 'costs:' lines in " + " ".join(sys.argv[1:]))
    def col(i, scale):
        return float("%.4g" % (statistics.median(float(p[i] or 0) for p in found) * scale))

    out = {
        "fwd_base_s": col(0, 1e-3),
        "fwd_per_token_s": col(1, 1e-3),
        "attn_per_pair_s": col(2, 1e-6),
        "attn_row_per_pair_s": col(3, 1e-6),
        "sample_per_row_s": col(4, 1e-3),
        "swap_out_per_token_s": col(5, 1e-6),
        "swap_in_per_token_s": col(6, 1e-6),
        "kv_bytes_per_token": int(statistics.median(int(p[7]) for p in found)),
    }
    spread = {k: [min(float(p[i] or 0) for p in found), max(float(p[i] or 0) for p in found)]
              for i, k in enumerate(["fwd_base_ms", "fwd_per_token_ms", "attn_us", "attn_row_us",
                                     "sample_ms"])}
    print(json.dumps(out, indent=1))
    print(f"{len(found)} profiles; ranges {spread}", file=sys.stderr)


if __name__ == "__main__":
    main()
