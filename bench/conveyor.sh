#!/usr/bin/env bash
# Partial tool execution (Conveyor): completion latency with partial execution off (lazy) vs on,
# per workload, alone and 8 at a time, same run and server (replayed requests, real tools).
# Writes bench/results/conveyor.{json,md} and conveyor-timeline.svg.
# Usage: bench/conveyor.sh [MODEL.gguf]   Knobs (environment): REPS (default 5), REPS_LOADED (3), SEARCH_MS (600).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
cargo build --release --locked --bin tandem >&2
mkdir -p bench/work
start_tandem bench/work/conveyor-server.log --model "$MODEL" --max-seqs 8 --kv-cells 16384 \
  --allow-replay --tools python,search,plan,validate,calc --search-latency-ms "${SEARCH_MS:-600}"
$BENCH_PY bench/conveyor.py "$URL" --reps "${REPS:-5}" --reps-loaded "${REPS_LOADED:-3}" \
  --search-ms "${SEARCH_MS:-600}"
