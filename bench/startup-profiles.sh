#!/usr/bin/env bash
# Startup cost profiles of `tandem serve`, one per start: starts the server N times one after
# another (nothing else should run), keeps each start's `costs:` line, and writes them to LOG
# under a header naming the flags, machine and time; `bench/cost_profile_median.py LOG` then
# gives the median profile as a `--costs` JSON file (how the smollm2-cpu presets were made).
# Usage: bench/startup-profiles.sh N LOG [serve flags...]   (default model, 2 threads,
# 16 sequences, 32768 KV cells, as the presets; flags given are added)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=$1 LOG=$2; shift 2
FLAGS=(--model "$DEFAULT_MODEL" --threads 2 --max-seqs 16 --kv-cells 32768 "$@")
build_tandem
TMP=$(mktemp -d)
start=$(date -u +%H:%M)
for i in $(seq 1 "$N"); do
  start_tandem "$TMP/$i.log" "${FLAGS[@]}"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  grep -o 'costs: forward.*' "$TMP/$i.log" | sed 's/\x1b\[[0-9;]*m//g'
done > "$TMP/lines"
{
  echo "# startup profiles of tandem serve ${FLAGS[*]}, $N starts one after another on $($BENCH_PY -c 'import sys; sys.path.insert(0, "bench"); from intercept_table import machine; print(machine())'), $(date -u +%F) $start-$(date -u +%H:%M) UTC, commit $(git rev-parse --short HEAD)"
  cat "$TMP/lines"
} > "$LOG"
rm -rf "$TMP"
cat "$LOG"
