#!/usr/bin/env bash
# JSON output compact (`tandem serve --json-layout compact`, the default) against indented
# (`--json-layout indented`) on bench/json_layout.py's tasks: copying an indented JSON file
# under its schema (with the file as the prediction, and without it) and answering questions
# under a schema. Both tandem servers draft from the prompt (`--prompt-lookup 3`) and have
# prefix reuse off (every request prefills alike); then llama.cpp's llama-server, whose JSON
# grammars allow indentation, with its n-gram drafts (`--spec-type ngram-simple`);
# SKIP_LLAMA=1 leaves it out. Writes bench/results/json-layout.{json,md}.
# Usage: bench/json-layout.sh [MODEL.gguf]   Knobs (environment): ROUNDS (3), MAX_TOKENS (256).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
OUT=bench/work/json-layout; mkdir -p "$OUT" bench/results
build_tandem
SERVERS=()
for LAYOUT in compact indented; do
  start_tandem "$OUT/tandem-$LAYOUT.log" --model "$MODEL" --prefix-reuse off \
    --prompt-lookup 3 --json-layout "$LAYOUT"
  SERVERS+=(--server "tandem $LAYOUT=$URL" --predicting "tandem $LAYOUT")
done
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  start_llama "$OUT/llama-server-ngram.log" 18114 -np 1 -c 8192 --spec-type ngram-simple
  SERVERS+=(--server "llama-server ngram-simple=http://127.0.0.1:18114")
fi
CMD="ROUNDS=${ROUNDS:-3} MAX_TOKENS=${MAX_TOKENS:-256} bench/json-layout.sh"
"$BENCH_PY" bench/json_layout.py "${SERVERS[@]}" --rounds "${ROUNDS:-3}" \
  --max-tokens "${MAX_TOKENS:-256}" --command "$CMD"
