#!/usr/bin/env bash
# Jump-forward decoding: constrained requests (a tool call, a JSON-schema answer) against two
# tandem servers, --jump-forward on and off, same run, rounds alternating between them.
# Writes bench/results/jump-forward.{json,md}.
# Usage: bench/jump-forward.sh [MODEL.gguf]   Knobs (environment): ROUNDS (6), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
build_tandem
mkdir -p bench/work
FLAGS=(--model "$MODEL" --max-seqs 8 --kv-cells 16384)
start_tandem bench/work/jump-forward-on.log "${FLAGS[@]}" --jump-forward on
ON_URL=$URL ON_PID=$PID
start_tandem bench/work/jump-forward-off.log "${FLAGS[@]}" --jump-forward off
trap 'kill $ON_PID $PID 2>/dev/null || true' EXIT
$BENCH_PY bench/jump_forward.py "$ON_URL" "$URL" --rounds "${ROUNDS:-6}" --out "${OUT:-bench/results/jump-forward}"
