#!/usr/bin/env bash
# Partial tool execution (Conveyor): completion latency with partial execution off (lazy) vs on,
# per workload, alone and 8 at a time, same run and server (replayed requests, real tools):
# `tandem bench --workload conveyor` against a server with --allow-replay and the tools.
# Writes bench/results/conveyor.{json,md} and conveyor-timeline.svg.
# Usage: bench/conveyor.sh [MODEL.gguf]
# Knobs (environment): REPS (default 8), ROUNDS (6), SEARCH_MS (80), WORKLOADS (all),
# TOOL_NICE (the server's --tool-nice, default its own), JUMP_FORWARD (the server's
# --jump-forward, default on: a call's fixed text then takes one step, not one per token),
# TOOL_PACE (the bench's --tool-pace, default 1: python work paced for this 2-core CPU's decode),
# OUT (bench/results/conveyor), and bench/lib.sh's TANDEM_BIN and SERVE_FLAGS (a GPU build and
# --gpu-layers, say), which LABEL (appended to the report's label) should then name.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
SEARCH_MS="${SEARCH_MS:-80}"
build_tandem
mkdir -p bench/work
start_tandem bench/work/conveyor-server.log --model "$MODEL" --max-seqs 8 --kv-cells 32768 \
  --allow-replay --jump-forward "${JUMP_FORWARD:-on}" --tools python,search,plan,validate,calc --search-latency-ms "$SEARCH_MS" --search-top-k 1 ${TOOL_NICE:+--tool-nice "$TOOL_NICE"}
"$TANDEM" bench --url "$URL" --workload "conveyor${WORKLOADS:+:$WORKLOADS}" \
  --reps "${REPS:-8}" --tool-pace "${TOOL_PACE:-1}" --rounds "${ROUNDS:-6}" --concurrency 8 --out "${OUT:-bench/results/conveyor}" \
  --label "bench/conveyor.sh: $(basename "$MODEL"), --max-seqs 8, search latency $SEARCH_MS ms, top 1, --jump-forward ${JUMP_FORWARD:-on}${TOOL_NICE:+, --tool-nice $TOOL_NICE}${SERVE_FLAGS:+, $SERVE_FLAGS}${LABEL:+, $LABEL}"
