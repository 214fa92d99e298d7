#!/usr/bin/env bash
# Grammar-constrained decoding cost, tandem against llama.cpp's llama-server on the same GGUF,
# threads and sequences (SKIP_LLAMA=1: tandem alone): plain, GBNF `grammar` and JSON-schema
# text completions at 1 and 8 streams (bench/grammar.py). Writes bench/results/grammar.{json,md}.
# Usage: bench/grammar.sh [MODEL.gguf]   Knobs (environment): ROUNDS (3), MAX_TOKENS (128).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
SEQS=8; CELLS=16384
OUT=bench/work/grammar; mkdir -p "$OUT" bench/results
build_tandem
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$TANDEM" serve --model "$MODEL" --port 18095 --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS 2>"$OUT/tandem.log" &
PIDS+=($!); wait_up http://127.0.0.1:18095
SERVERS=(tandem=http://127.0.0.1:18095)
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  LLAMA_SERVER=$(bench/build-llama-server.sh)
  "$LLAMA_SERVER" -m "$MODEL" --port 18096 -t "$THREADS" -tb "$THREADS" -np $SEQS -c $CELLS -b 512 -ub 512 2>"$OUT/llama-server.log" &
  PIDS+=($!); wait_up http://127.0.0.1:18096
  SERVERS+=(llama-server=http://127.0.0.1:18096)
fi
CMD="ROUNDS=${ROUNDS:-3} MAX_TOKENS=${MAX_TOKENS:-128} bench/grammar.sh"
$BENCH_PY bench/grammar.py "${SERVERS[@]}" --rounds "${ROUNDS:-3}" --max-tokens "${MAX_TOKENS:-128}" --command "$CMD"
