#!/usr/bin/env bash
# Follow-ups to conversations kept in scattered KV slots (bench/scattered_slots.py): tandem with
# slot compaction on and off, and llama-server, on the same GGUF, threads, 16 sequences and
# 32768 KV cells, taking turns each round. Writes $RESULT.{json,md}
# (default bench/results/scattered-slots).
# Usage: bench/scattered-slots.sh [MODEL.gguf]; LLAMA_ARGS adds llama-server flags (default
# '-fa off', as tandem's default on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
RESULT="${RESULT:-bench/results/scattered-slots}"
SERVE=(--model "$MODEL" --threads "$THREADS" --max-seqs 16 --kv-cells 32768)
build_tandem
start_tandem /tmp/scattered-on.log "${SERVE[@]}" --slot-compaction on; ON=$URL
start_tandem /tmp/scattered-off.log "${SERVE[@]}" --slot-compaction off; OFF=$URL
read -ra L_ARGS <<< "${LLAMA_ARGS:--fa off}"
LPORT=$(free_port)
start_llama /tmp/scattered-llama.log "$LPORT" -np 16 -c 32768 -b 512 -ub 512 "${L_ARGS[@]}"
{
  echo "# Follow-ups to conversations in scattered KV slots ($(date -u +%Y-%m-%d))"
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores. Model: $(basename "$MODEL")."
  echo "Command: \`bench/scattered-slots.sh\` ($(date -u +%H:%M) UTC, commit $(git rev-parse --short HEAD))."
  echo "Each trial: 8 new conversations kept one per slot, then follow-ups (128 tokens each) to"
  echo "conversations 0, 2, 4 and 6 at once; 5 trials, the servers taking turns each trial."
  echo
  (cd bench && "../$BENCH_PY" scattered_slots.py "../$RESULT.json" \
    "tandem, compaction on=$ON" "tandem, compaction off=$OFF" "llama-server=http://127.0.0.1:$LPORT")
} > "$RESULT.md"
cat "$RESULT.md"
