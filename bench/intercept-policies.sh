#!/usr/bin/env bash
# Interception policies on InferCept's mixed augmentation workload, one run per policy and
# arrival rate on the same machine, then llama-server on the same workload with the client-side
# tool loop (its prompt cache on). A policy stops at the first rate it does not sustain (mean
# normalized latency above SATURATED seconds/token), as the queue then only grows.
# Writes bench/results/intercept-policies.{json,md,svg}.
# Usage: bench/intercept-policies.sh [MODEL.gguf]
# Knobs (environment): RATES, SCALE, WINDOW (seconds of arrivals per run), SATURATED, SKIP_LLAMA.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
RATES="${RATES:-0.1 0.2 0.4}"
SCALE="${SCALE:-0.1}"
WINDOW="${WINDOW:-30}"
SATURATED="${SATURATED:-0.25}"
SEQS=16; CELLS=32768
OUT=bench/work/intercept; rm -rf "$OUT"; mkdir -p "$OUT" bench/results
cargo build --release --locked --bin tandem >&2
TANDEM=target/release/tandem

# sweep NAME URL [bench flags...]: one bench run per rate until saturation.
sweep() {
  local name=$1 url=$2; shift 2
  for r in $RATES; do
    local n; n=$(python3 -c "print(max(6, round($r * $WINDOW)))")
    echo "== $name rate $r ($n requests)" >&2
    $TANDEM bench --url "$url" --quiet --workload augment --scale "$SCALE" --rate "$r" \
      --requests "$n" --seed 7 --label "$name @ $r" --out "$OUT/$name-$r" "$@" >/dev/null
    python3 - "$OUT/$name-$r.json" "$SATURATED" <<'PY' || break
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
sys.exit(1 if s["errors"] or s["normalized_latency_s"]["mean"] > float(sys.argv[2]) else 0)
PY
  done
}

for policy in min-waste preserve swap discard; do
  extra=()
  [ "$policy" = discard ] && extra=(--resume-order tail)  # vLLM's behavior
  $TANDEM serve --model "$MODEL" --port 18090 --threads "$THREADS" --max-seqs $SEQS \
    --kv-cells $CELLS --allow-scripted --intercept-policy "$policy" "${extra[@]}" \
    2>"$OUT/tandem-$policy.log" &
  PID=$!; trap 'kill $PID 2>/dev/null || true' EXIT
  wait_up http://127.0.0.1:18090
  sweep "$policy" http://127.0.0.1:18090 --server-side-tools
  kill $PID; wait $PID 2>/dev/null || true
done

if [ -z "${SKIP_LLAMA:-}" ]; then
  LLAMA_SERVER=$(bench/build-llama-server.sh)
  "$LLAMA_SERVER" -m "$MODEL" --port 18091 -t "$THREADS" -tb "$THREADS" -np $SEQS -c $CELLS \
    -b 512 -ub 512 2>"$OUT/llama-server.log" &
  PID=$!
  wait_up http://127.0.0.1:18091
  sweep llama-server http://127.0.0.1:18091
  kill $PID; wait $PID 2>/dev/null || true
fi

python3 bench/intercept_table.py "$OUT" "$RATES" "$SCALE" "$SATURATED" bench/results/intercept-policies
cat bench/results/intercept-policies.md
