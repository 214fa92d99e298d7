"""Tables bench/omp-spin.sh's runs: per spin count, decode throughput with the cores to itself
and beside the CPU helper, and the helper's time per piece (alone, and beside each server).
Ratios are against the first spin count in the run's order (libgomp's own default in the
script's default SPINS), over the repetitions' means.
Usage: omp_spin_table.py WORK_DIR OUT_PREFIX HEADER SPINS (the counts, space-separated, in order)"""
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
        m = re.fullmatch(r"spin(\d+)-helper(on|off)-rep(\d+)", report.stem)
        s = json.loads(report.read_text())["summary"]
        pieces = times(report.with_suffix(".helper"))
        out.append({
            "spin": int(m[1]), "helper": m[2] == "on", "rep": int(m[3]),
            "output_tok_per_s": s["output_tok_per_s"], "forward_s": s["server"]["forward_s"],
            "itl_p50_s": s["itl_s"]["p50"], "errors": s["errors"],
            "helper_pieces": len(pieces),
            "helper_piece_mean_s": statistics.mean(pieces) if pieces else None,
        })
    return out


def summary(rows, order):
    def mean(spin, helper, key):
        vals = [r[key] for r in rows if r["spin"] == spin and r["helper"] == helper]
        return statistics.mean(vals) if vals else None
    out = []
    for spin in order:
        out.append({
            "spin": spin,
            "tok_per_s_alone": mean(spin, False, "output_tok_per_s"),
            "tok_per_s_beside_helper": mean(spin, True, "output_tok_per_s"),
            "helper_piece_s": mean(spin, True, "helper_piece_mean_s"),
        })
    base = out[0]
    for s in out:
        for k in ("tok_per_s_alone", "tok_per_s_beside_helper", "helper_piece_s"):
            s[k + "_ratio"] = s[k] / base[k] if s[k] and base[k] else None
    return out


def markdown(header, alone, table, rows):
    lines = [f"# `--omp-spin`: decode beside a CPU-bound helper\n", header + ".\n",
             f"8 concurrent synthetic requests (100-token prompts, 150 output tokens, 32 in all); "
             f"the helper (bench/cpu_helper.py) runs a fixed pure-python piece, then sleeps 0.4 s. "
             f"Its piece took {alone:.3f} s with no server running. Ratios are against spin "
             f"{table[0]['spin']}, over the repetitions' means.\n",
             "| --omp-spin | decode tok/s alone (ratio) | decode tok/s beside the helper (ratio) | helper s a piece (ratio) |",
             "|---|---|---|---|"]
    def f(s, key, digits):
        v, r = s[key], s[key + "_ratio"]
        return f"{v:.{digits}f} ({r:.2f}x)" if v is not None and r is not None else "n/a"
    for s in table:
        lines.append(f"| {s['spin']} | {f(s, 'tok_per_s_alone', 1)} | "
                     f"{f(s, 'tok_per_s_beside_helper', 1)} | {f(s, 'helper_piece_s', 3)} |")
    lines += ["\nEach run:\n", "| --omp-spin | helper | repetition | decode tok/s | forward s | ITL p50 ms | helper pieces | helper s a piece |",
              "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["rep"], [t["spin"] for t in table].index(r["spin"]), r["helper"])):
        piece = f"{r['helper_piece_mean_s']:.3f}" if r["helper_piece_mean_s"] else "-"
        lines.append(f"| {r['spin']} | {'on' if r['helper'] else 'off'} | {r['rep']} | "
                     f"{r['output_tok_per_s']:.1f} | {r['forward_s']:.1f} | {1000 * r['itl_p50_s']:.1f} | "
                     f"{r['helper_pieces']} | {piece} |")
    return "\n".join(lines) + "\n"


def main(work, out, header, spins):
    work = Path(work)
    rows = runs(work)
    order = [int(x) for x in spins.split()]
    alone = times(work / "alone.helper")
    table = summary(rows, order)
    doc = {"header": header, "helper_alone_piece_s": statistics.mean(alone) if alone else None,
           "summary": table, "runs": rows}
    Path(out + ".json").write_text(json.dumps(doc, indent=1))
    Path(out + ".md").write_text(markdown(header, doc["helper_alone_piece_s"] or float("nan"), table, rows))


if __name__ == "__main__":
    main(*sys.argv[1:5])
