#!/usr/bin/env bash
# Prompt-lookup drafts (`tandem serve --prompt-lookup N`) on bench/prompt_lookup.py's tasks:
# tandem without lookup, with N = 3 and with N = 8, each its own server with prefix reuse off
# (every request prefills alike); then llama.cpp's llama-server with its n-gram drafts from
# the context (`--spec-type ngram-simple`); SKIP_LLAMA=1 leaves it out.
# Writes bench/results/prompt-lookup.{json,md}.
# Usage: bench/prompt-lookup.sh [MODEL.gguf]   Knobs (environment): ROUNDS (3), MAX_TOKENS (256).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
OUT=bench/work/prompt-lookup; mkdir -p "$OUT" bench/results
build_tandem
SERVERS=()
for N in 0 3 8; do
  start_tandem "$OUT/tandem-$N.log" --model "$MODEL" --prefix-reuse off --prompt-lookup "$N"
  NAME="tandem, lookup $N"; [ "$N" = 0 ] && NAME="tandem"
  SERVERS+=(--server "$NAME=$URL")
done
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  start_llama "$OUT/llama-server-ngram.log" 18113 -np 1 -c 8192 --spec-type ngram-simple
  SERVERS+=(--server "llama-server ngram-simple=http://127.0.0.1:18113")
fi
CMD="ROUNDS=${ROUNDS:-3} MAX_TOKENS=${MAX_TOKENS:-256} bench/prompt-lookup.sh"
"$BENCH_PY" bench/prompt_lookup.py "${SERVERS[@]}" --rounds "${ROUNDS:-3}" \
  --max-tokens "${MAX_TOKENS:-256}" --command "$CMD"
