#!/usr/bin/env bash
# Side-by-side benchmark of tandem and llama.cpp's llama-server on the same GGUF, thread count
# and KV size, in one run: single-stream decode, aggregate throughput at 16 streams, TTFT of a
# 512-token prompt, the client-side tool-loop workload at two arrival rates, and the same
# workload as an agent's: every conversation starts with one shared 400-token system prompt.
# Writes bench/results/llama-server-comparison.{json,md}.
# Usage: bench/compare-llama-server.sh [MODEL.gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
SEQS=16; CELLS=32768
RATES="${RATES:-0.3 0.6}"
AGENT_RATE="${AGENT_RATE:-0.3}"
OUT=bench/work/compare; mkdir -p "$OUT" bench/results
LLAMA_SERVER=$(bench/build-llama-server.sh)
cargo build --release --locked --bin tandem >&2
TANDEM=target/release/tandem

run_suite() { # name url
  local name=$1 url=$2 b="$TANDEM bench --url $2 --quiet"
  # Every step uses its own seed, so no step's prompts repeat an earlier step's (a server's
  # prompt cache would otherwise serve them); both servers get identical requests.
  $b --label "$name single-stream" --prompt-tokens 32 --output-tokens 128 --concurrency 1 --requests 4 --seed 100 --out "$OUT/$name-single" >/dev/null
  $b --label "$name 16 streams" --prompt-tokens 32 --output-tokens 128 --concurrency 16 --requests 32 --seed 200 --out "$OUT/$name-c16" >/dev/null
  $b --label "$name ttft-512" --prompt-tokens 512 --output-tokens 1 --concurrency 1 --requests 6 --seed 300 --out "$OUT/$name-ttft" >/dev/null
  local seed=400
  for r in $RATES; do
    $b --label "$name tool-loop rate $r" --workload bench/workloads/tool_loop.jsonl --rate "$r" --requests 24 --seed $seed --out "$OUT/$name-tools-$r" >/dev/null
    seed=$((seed + 100))
  done
  $b --label "$name agent loop rate $AGENT_RATE" --workload bench/workloads/tool_loop.jsonl --system-prompt-tokens 400 --rate "$AGENT_RATE" --requests 24 --seed 900 --out "$OUT/$name-agent" >/dev/null
}

$TANDEM serve --model "$MODEL" --port 18080 --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS 2>"$OUT/tandem.log" &
PID=$!; trap 'kill $PID 2>/dev/null || true' EXIT
wait_up http://127.0.0.1:18080 && run_suite tandem http://127.0.0.1:18080
kill $PID; wait $PID 2>/dev/null || true

"$LLAMA_SERVER" -m "$MODEL" --port 18081 -t "$THREADS" -tb "$THREADS" -np $SEQS -c $CELLS -b 512 -ub 512 2>"$OUT/llama-server.log" &
PID=$!
wait_up http://127.0.0.1:18081 && run_suite llama-server http://127.0.0.1:18081
kill $PID; wait $PID 2>/dev/null || true

# llama.cpp's own --version reports the git commit of the enclosing checkout (tandem's), so the
# label is the PyPI source release it was built from.
LS_LABEL="$(basename "${LLAMA_SERVER%/build/bin/llama-server}") (PyPI sdist)"
python3 bench/compare_table.py "$OUT" "$RATES" "$LS_LABEL" "$AGENT_RATE" > bench/results/llama-server-comparison.md
cat bench/results/llama-server-comparison.md
