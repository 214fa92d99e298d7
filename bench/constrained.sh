#!/usr/bin/env bash
# Constrained decoding cost: tok/s with and without a JSON schema at 1 and 16 streams, same
# run, one tandem server (16 sequences). Writes bench/results/constrained-decoding.{json,md}.
# Usage: bench/constrained.sh [MODEL.gguf]   Knobs (environment): ROUNDS, MAX_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
build_tandem
mkdir -p bench/work
start_tandem bench/work/constrained-server.log --model "$MODEL" --max-seqs 16 --kv-cells 16384
$BENCH_PY bench/constrained.py "$URL" --rounds "${ROUNDS:-3}" --max-tokens "${MAX_TOKENS:-128}"
