"""Tables bench/omp-spin.sh's runs: per spin count, decode throughput with the cores to itself
and beside each CPU helper, and each helper's time per piece (alone, and beside each server).
Ratios are against the first spin count in the run's order (libgomp's own default in the
script's default SPINS), over the repetitions' means.
Usage: omp_spin_table.py WORK_DIR OUT_PREFIX HEADER SPINS HELPERS (space-separated, in order)"""
import json
import re
import statistics
import sys
from pathlib import Path


def times(path):
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def runs(work):
    out = []
    for report in sorted(work.glob("spin*-helper*-rep*.json")):
        m = re.fullmatch(r"spin(\d+)-helper(\w+)-rep(\d+)", report.stem)
        s = json.loads(report.read_text())["summary"]
        pieces = times(report.with_suffix(".helper"))
        out.append({
            "spin": int(m[1]), "helper": m[2], "rep": int(m[3]),
            "output_tok_per_s": s["output_tok_per_s"], "forward_s": s["server"]["forward_s"],
            "itl_p50_s": s["itl_s"]["p50"], "errors": s["errors"],
            "helper_pieces": len(pieces),
            "helper_piece_mean_s": statistics.mean(pieces) if pieces else None,
        })
    return out


def mean_of(rows, key, **match):
    vals = [r[key] for r in rows if all(r[k] == v for k, v in match.items()) and r[key] is not None]
    return statistics.mean(vals) if vals else None


def summary(rows, spins, helpers):
    """One entry per (spin, helper): decode tok/s and helper piece time, with ratios against
    the first spin count's under the same helper."""
    out = []
    for helper in helpers:
        base = None
        for spin in spins:
            e = {"spin": spin, "helper": helper,
                 "tok_per_s": mean_of(rows, "output_tok_per_s", spin=spin, helper=helper),
                 "helper_piece_s": mean_of(rows, "helper_piece_mean_s", spin=spin, helper=helper)}
            base = base or e
            for k in ("tok_per_s", "helper_piece_s"):
                e[k + "_ratio"] = e[k] / base[k] if e[k] and base[k] else None
            out.append(e)
    return out


def cell(e, key, digits):
    v, r = e[key], e[key + "_ratio"]
    return f"{v:.{digits}f} ({r:.2f}x)" if v is not None and r is not None else "-"


def markdown(doc, spins):
    alone = ", ".join(f"{h} {s:.3f} s" for h, s in doc["helper_alone_piece_s"].items() if s)
    lines = ["# `--omp-spin`: decode beside a CPU-bound helper\n", doc["header"] + ".\n",
             "8 concurrent synthetic requests (100-token prompts, 150 output tokens, 32 in all), "
             "with the cores to themselves (helper off) or beside bench/cpu_helper.py, which runs "
             "a fixed pure-python piece, then sleeps 0.4 s: `inproc` in its own process, `spawn` "
             f"a new interpreter and ten times the work each piece. A piece with no server running: {alone}. "
             f"Ratios are against spin {spins[0]} with the same helper, over the repetitions' means.\n",
             "| --omp-spin | helper | decode tok/s (ratio) | helper s a piece (ratio) |",
             "|---|---|---|---|"]
    for e in doc["summary"]:
        lines.append(f"| {e['spin']} | {e['helper']} | {cell(e, 'tok_per_s', 1)} | {cell(e, 'helper_piece_s', 3)} |")
    lines += ["\nEach run, in the order they ran:\n",
              "| repetition | --omp-spin | helper | decode tok/s | forward s | ITL p50 ms | helper pieces | helper s a piece |",
              "|---|---|---|---|---|---|---|---|"]
    for r in doc["runs"]:
        piece = f"{r['helper_piece_mean_s']:.3f}" if r["helper_piece_mean_s"] else "-"
        lines.append(f"| {r['rep']} | {r['spin']} | {r['helper']} | {r['output_tok_per_s']:.1f} | "
                     f"{r['forward_s']:.1f} | {1000 * r['itl_p50_s']:.1f} | {r['helper_pieces']} | {piece} |")
    return "\n".join(lines) + "\n"


def main(work, out, header, spins, helpers):
    work, spins, helpers = Path(work), [int(x) for x in spins.split()], helpers.split()
    rows = runs(work)
    rows.sort(key=lambda r: (r["rep"], spins.index(r["spin"]), helpers.index(r["helper"])))
    alone = {h: times(work / f"alone-{h}.helper") for h in helpers if h != "off"}
    doc = {"header": header,
           "helper_alone_piece_s": {h: statistics.mean(t) if t else None for h, t in alone.items()},
           "summary": summary(rows, spins, helpers), "runs": rows}
    Path(out + ".json").write_text(json.dumps(doc, indent=1))
    Path(out + ".md").write_text(markdown(doc, spins))


if __name__ == "__main__":
    main(*sys.argv[1:6])
