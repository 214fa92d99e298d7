#!/usr/bin/env bash
# Two tandem servers side by side, differing only in the serve flags A and B, through the steps
# of bench/compare-llama-server.sh (single-stream decode, 16 streams, TTFT of a 512-token
# prompt, the client-side tool loop at each of RATES, the agent loop at AGENT_RATE), the two
# servers' steps alternating in one run. For settling a default on this machine's workload,
# e.g. A='--flash-attn off' B='--flash-attn on'.
# Writes $RESULT.{json,md} (default bench/results/ab-tandem).
# Usage: A='FLAGS' B='FLAGS' bench/ab-tandem.sh [MODEL.gguf]
# Knobs (environment): A and B (required; either may be empty), RATES (default "0.3 0.6"),
# AGENT_RATE (0.3), RESULT, STEPS and REPEATS (see compare_steps in bench/lib.sh), TANDEM_BIN
# (see bench/lib.sh; e.g. a `cuda` build with A='--gpu-layers 0' B='--gpu-layers 99').
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
: "${A?set A to the first server's extra serve flags (may be empty)}" "${B?set B to the second's}"
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
SEQS=16; CELLS=32768
RATES="${RATES:-0.3 0.6}"
AGENT_RATE="${AGENT_RATE:-0.3}"
RESULT="${RESULT:-bench/results/ab-tandem}"
OUT=bench/work/ab-tandem; rm -rf "$OUT"; mkdir -p "$OUT" bench/results
build_tandem

# One server at a time while starting: each measures its cost profile at startup.
read -ra A_FLAGS <<< "$A"; read -ra B_FLAGS <<< "$B"
start_tandem "$OUT/a.log" --model "$MODEL" --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS "${A_FLAGS[@]}"
A_URL=$URL A_PID=$PID
start_tandem "$OUT/b.log" --model "$MODEL" --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS "${B_FLAGS[@]}"
B_URL=$URL B_PID=$PID

compare_steps "$OUT" A "$A_URL" B "$B_URL"
kill $A_PID $B_PID; wait 2>/dev/null || true

COMMAND="${TANDEM_BIN:+TANDEM_BIN=$TANDEM_BIN }A='$A' B='$B' RATES='$RATES' AGENT_RATE=$AGENT_RATE RESULT=$RESULT${STEPS:+ STEPS='$STEPS'}${REPEATS:+ REPEATS=$REPEATS} bench/ab-tandem.sh${1:+ $1}"
$BENCH_PY bench/compare_table.py --out "$OUT" --rates "$RATES" --agent-rate "$AGENT_RATE" \
  --result "$RESULT" --command "$COMMAND" --model "$(basename "$MODEL")" --a A --b B \
  --title "tandem, A: \`tandem serve ${A:-(defaults)}\` vs B: \`tandem serve ${B:-(defaults)}\`" \
  --about "A=$A" --about "B=$B" \
  --setup "both: same GGUF, threads, $SEQS sequences, $CELLS KV cells" > "$RESULT.md"
cat "$RESULT.md"
