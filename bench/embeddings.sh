#!/usr/bin/env bash
# /v1/embeddings, tandem (--embeddings) against llama.cpp's llama-server (--embeddings
# --pooling mean) on the same GGUF and threads (SKIP_LLAMA=1: tandem alone): throughput and
# the cosine between their vectors (bench/embeddings.py). tandem runs twice: with its default
# packing of inputs into shared decodes, and with --embeddings-pack 1 (one input per decode)
# as the baseline. Writes bench/results/embeddings.{json,md}.
# Usage: bench/embeddings.sh [MODEL.gguf]   Knobs (environment): INPUTS (128), BATCH (16), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
OUT=bench/work/embeddings; mkdir -p "$OUT" bench/results
build_tandem
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
"$TANDEM" serve --model "$MODEL" --port 18097 --threads "$THREADS" --embeddings 2>"$OUT/tandem.log" &
PIDS+=($!); wait_up http://127.0.0.1:18097
"$TANDEM" serve --model "$MODEL" --port 18099 --threads "$THREADS" --embeddings --embeddings-pack 1 2>"$OUT/tandem-pack1.log" &
PIDS+=($!); wait_up http://127.0.0.1:18099
SERVERS=(tandem=http://127.0.0.1:18097 tandem-pack1=http://127.0.0.1:18099)
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  LLAMA_SERVER=$(bench/build-llama-server.sh)
  "$LLAMA_SERVER" -m "$MODEL" --port 18098 -t "$THREADS" -tb "$THREADS" -c 8192 -b 2048 -ub 2048 --embeddings --pooling mean 2>"$OUT/llama-server.log" &
  PIDS+=($!); wait_up http://127.0.0.1:18098
  SERVERS+=(llama-server=http://127.0.0.1:18098)
fi
CMD="INPUTS=${INPUTS:-128} BATCH=${BATCH:-16} ROUNDS=${ROUNDS:-3} bench/embeddings.sh"
$BENCH_PY bench/embeddings.py "${SERVERS[@]}" --inputs "${INPUTS:-128}" --batch "${BATCH:-16}" \
  --rounds "${ROUNDS:-3}" --command "$CMD"
