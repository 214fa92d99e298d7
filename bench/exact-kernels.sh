#!/usr/bin/env bash
# What bit-exact mode's kernels cost: prefill time of prompts on SmolLM2 requantized to Q6_K
# (examples/requantize), on a server in bit-exact mode (`--prefix-reuse exact`, which turns
# ggml's tiled K-quant matmul off) and on one that keeps it (`--prefix-reuse off`); flash
# attention off on both. Prompts are random token ids, so nothing is reused; the two servers
# take turns, ROUNDS times, each timing REQUESTS requests of TOKENS prompt tokens and 1 output
# token, one at a time. Writes bench/results/exact-kernels.{md,json}.
#   TOKENS=512 REQUESTS=6 ROUNDS=3 bench/exact-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
TOKENS=${TOKENS:-512} REQUESTS=${REQUESTS:-6} ROUNDS=${ROUNDS:-3}
cargo build --release --locked --bin tandem --example requantize -p tandem-server -p tandem-llama >&2
OUT=bench/work/exact-kernels; mkdir -p "$OUT" bench/results
MODEL="$OUT/smollm2-q6_k.gguf"
[ -f "$MODEL" ] || target/release/examples/requantize "$DEFAULT_MODEL" "$MODEL" q6_k >&2
declare -A FLAGS=([exact]="--prefix-reuse exact" [tiled]="--prefix-reuse off")
for round in $(seq 1 "$ROUNDS"); do
  for mode in exact tiled; do
    # shellcheck disable=SC2086
    start_tandem "$OUT/$mode.log" --model "$MODEL" --flash-attn off --max-seqs 2 --kv-cells 4096 ${FLAGS[$mode]}
    "$BENCH_PY" - "$URL" "$TOKENS" "$REQUESTS" "$round" > "$OUT/$mode-$round.json" <<'PY'
import json, random, sys, time
import requests
url, tokens, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
times = []
for _ in range(n):
    ids = [rng.randrange(100, 40000) for _ in range(tokens)]
    t = time.perf_counter()
    r = requests.post(url + "/v1/completions", json={"prompt": ids, "max_tokens": 1}, timeout=120)
    r.raise_for_status()
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    times.append(time.perf_counter() - t)
json.dump({"seconds": times}, sys.stdout)
PY
    kill "$PID"; wait "$PID" 2>/dev/null || true
  done
done
"$BENCH_PY" - "$OUT" "$ROUNDS" "$TOKENS" "$REQUESTS" <<'PY'
import json, statistics, subprocess, sys, datetime
out, rounds, tokens, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(mode):
    return [t for r in range(1, rounds + 1) for t in json.load(open(f"{out}/{mode}-{r}.json"))["seconds"]]
exact, tiled = load("exact"), load("tiled")
med = {"exact": statistics.median(exact), "tiled": statistics.median(tiled)}
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
cpu = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("Model name")), "?")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
result = {"date": str(datetime.date.today()), "machine": f"{cpu}, {cores} cores",
          "model": "SmolLM2-135M-Instruct requantized to Q6_K", "prompt_tokens": tokens,
          "requests_per_mode": len(exact), "median_s": med, "exact_over_tiled": med["exact"] / med["tiled"],
          "seconds": {"exact": exact, "tiled": tiled}}
json.dump(result, open("bench/results/exact-kernels.json", "w"), indent=1)
md = [f"# Bit-exact mode's kernels: prefill cost ({result['date']})", "",
      f"Machine: {result['machine']}. Model: {result['model']} (`examples/requantize`). "
      f"Command: `TOKENS={tokens} REQUESTS={n} ROUNDS={rounds} bench/exact-kernels.sh`. "
      f"Requests of {tokens} random prompt tokens and 1 output token, one at a time; the servers "
      f"took turns, {rounds} rounds.", "",
      "| server | tiled K-quant matmul | requests | median s | tokens/s |", "|---|---|---|---|---|",
      f"| `--prefix-reuse exact --flash-attn off` | off | {len(exact)} | {med['exact']:.3f} | {tokens / med['exact']:.0f} |",
      f"| `--prefix-reuse off --flash-attn off` | on | {len(tiled)} | {med['tiled']:.3f} | {tokens / med['tiled']:.0f} |",
      "", f"Bit-exact mode takes {result['exact_over_tiled']:.2f}x the prefill time of the tiled kernel."]
open("bench/results/exact-kernels.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
