#!/usr/bin/env bash
# How `tandem serve --omp-spin` shares a CPU server's cores: decode throughput of 8 concurrent
# synthetic requests (100-token prompts, 150 output tokens, 32 requests), with the cores to
# itself and beside a CPU-bound helper process standing in for a tool (bench/cpu_helper.py: a
# fixed piece of pure-python work, then 0.4 s of sleep, over and over; `inproc` a light piece
# in one process, `spawn` a new interpreter and ten times the work per piece), for each spin
# count. The helper's time per piece shows how much CPU the decode's waiting threads leave it.
# Each repetition runs every count in turn, so the machine's slow spells fall on all of them.
# Writes OUT.json and OUT.md. Nothing else should run on the machine.
# Usage: bench/omp-spin.sh [MODEL.gguf]
# Knobs (environment): SPINS (default "300000 10000"; 300000 is libgomp's own default, 0
# sleeps at once), HELPERS (default "off inproc spawn"), REPEATS (2), OUT
# (bench/results/omp-spin), and bench/lib.sh's TANDEM_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
SPINS="${SPINS:-300000 10000}"
HELPERS="${HELPERS:-off inproc spawn}"
OUT="${OUT:-bench/results/omp-spin}"
# The flag is what is measured; an OpenMP setting in the environment would win over it.
unset GOMP_SPINCOUNT OMP_WAIT_POLICY
build_tandem
WORK=$(mktemp -d)
start=$(date -u +%H:%M)
# The helpers' piece times with no server running, for reference.
for helper in $HELPERS; do
  [ "$helper" = off ] || timeout 6 $BENCH_PY bench/cpu_helper.py "$helper" "$WORK/alone-$helper.helper" || true
done
for rep in $(seq 1 "${REPEATS:-2}"); do
  for spin in $SPINS; do
    for helper in $HELPERS; do
      run="$WORK/spin$spin-helper$helper-rep$rep"
      start_tandem "$run.log" --model "$MODEL" --max-seqs 8 --omp-spin "$spin"
      if [ "$helper" != off ]; then
        $BENCH_PY bench/cpu_helper.py "$helper" "$run.helper" & HPID=$!
        kill_on_exit "$HPID"
      fi
      "$TANDEM" bench --url "$URL" --quiet --prompt-tokens 100 --output-tokens 150 \
        --concurrency 8 --requests 32 --seed "$rep" --out "$run" > /dev/null
      [ "$helper" = off ] || { pkill -P "$HPID" || true; kill "$HPID"; }
      kill "$PID"; wait "$PID" 2>/dev/null || true
      echo "spin $spin, helper $helper, repetition $rep: done" >&2
    done
  done
done
$BENCH_PY bench/omp_spin_table.py "$WORK" "$OUT" \
  "bench/omp-spin.sh on $(basename "$MODEL"), SPINS='$SPINS' HELPERS='$HELPERS' REPEATS=${REPEATS:-2}, $(date -u +%F) $start-$(date -u +%H:%M) UTC, commit $(git rev-parse --short HEAD)" "$SPINS" "$HELPERS"
rm -rf "$WORK"
cat "$OUT.md"
