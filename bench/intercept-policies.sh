#!/usr/bin/env bash
# Interception policies on InferCept's mixed augmentation workload, one run per policy and
# arrival rate on the same machine, and llama-server on the same workload with the client-side
# tool loop (its prompt cache on); at each rate every server runs in turn. A server stops at the
# first rate it does not sustain (mean normalized latency above SATURATED seconds/token), as the
# queue then only grows.
# Writes $RESULT.{json,md,svg} (default bench/results/intercept-policies).
# Usage: bench/intercept-policies.sh [MODEL.gguf]
# Knobs (environment): RATES, POLICIES, SCALE, WINDOW (seconds of arrivals per run), SATURATED,
# SKIP_LLAMA, RESULT, SERVE_ARGS (extra `tandem serve` flags for every tandem run), LLAMA_ARGS
# (extra llama-server flags, e.g. '-fa off'), SWEEP_ALL=1 (run every rate, past saturation too).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
RATES="${RATES:-0.1 0.2 0.4 0.8 1.2 1.6 2.0}"
POLICIES="${POLICIES:-min-waste preserve swap discard}"
SCALE="${SCALE:-0.1}"
WINDOW="${WINDOW:-30}"
SATURATED="${SATURATED:-0.25}"
RESULT="${RESULT:-bench/results/intercept-policies}"
SEQS=16; CELLS=32768
OUT=bench/work/intercept; rm -rf "$OUT"; mkdir -p "$OUT" bench/results
build_tandem
read -ra S_ARGS <<< "${SERVE_ARGS:-}"; read -ra L_ARGS <<< "${LLAMA_ARGS:-}"

# Every run gets a fresh server: one left running between rates keeps the previous run's
# sequences, and the same seed gives the same prompts, so later rates would find their prompts
# already cached (measured 2026-11-22: min-waste at 1.8 req/s after a 2.4 run had 4169 of 4724
# prompt tokens cached and 0.044 s/token, on a fresh server 48 cached and 0.22 s/token).
# start_server NAME RATE: NAME (a policy, or llama-server) on a free port, logging to
# $OUT/NAME-RATE.log (bench/lib.sh's start_tandem / start_llama); sets URL and SPID.
start_server() {
  if [ "$1" = llama-server ]; then
    local port; port=$(free_port)
    start_llama "$OUT/llama-server-$2.log" "$port" -np $SEQS -c $CELLS -b 512 -ub 512 "${L_ARGS[@]}"
    URL="http://127.0.0.1:$port" SPID=$LPID
  else
    local extra=()
    [ "$1" = discard ] && extra=(--resume-order tail)  # vLLM's behavior
    start_tandem "$OUT/tandem-$1-$2.log" --model "$MODEL" --threads "$THREADS" --max-seqs $SEQS \
      --kv-cells $CELLS --allow-scripted --intercept-policy "$1" "${extra[@]}" "${S_ARGS[@]}"
    SPID=$PID
  fi
}

# run_one NAME RATE: one run of NAME (a policy, or llama-server) at RATE on a fresh server;
# policies get the scripted (server-side) interceptions, llama-server the client-side loop.
run_one() {
  local name=$1 r=$2 n extra=()
  n=$(python3 -c "print(max(6, round($r * $WINDOW)))")
  [ "$name" = llama-server ] || extra=(--server-side-tools)
  echo "== $name rate $r ($n requests)" >&2
  start_server "$name" "$r"
  "$TANDEM" bench --url "$URL" --quiet --workload augment --scale "$SCALE" \
    --rate "$r" --requests "$n" --seed 7 --label "$name @ $r" --out "$OUT/$name-$r" "${extra[@]}" \
    >/dev/null
  kill "$SPID"; wait "$SPID" 2>/dev/null || true
}

# Rates go up in turn and, at each rate, every server runs before the next rate, so load from
# other tenants of this shared machine falls on all columns alike (a sweep of one server after
# another put a slow spell on one of them). A server stops at its first saturated rate, as its
# queue then only grows (unless SWEEP_ALL).
NAMES="$POLICIES"; [ -n "${SKIP_LLAMA:-}" ] || NAMES+=" llama-server"
declare -A DONE=()
for r in $RATES; do
  for name in $NAMES; do
    [ -z "${DONE[$name]:-}" ] || continue
    run_one "$name" "$r"
    if [ -z "${SWEEP_ALL:-}" ] && saturated "$OUT/$name-$r.json" "$SATURATED"; then DONE[$name]=1; fi
  done
done

COMMAND="RATES='$RATES' POLICIES='$POLICIES' SCALE=$SCALE WINDOW=$WINDOW SATURATED=$SATURATED"
[ -n "${SKIP_LLAMA:-}" ] && COMMAND+=" SKIP_LLAMA=1"
[ -n "${SWEEP_ALL:-}" ] && COMMAND+=" SWEEP_ALL=1"
[ -n "${SERVE_ARGS:-}" ] && COMMAND+=" SERVE_ARGS='$SERVE_ARGS'"
[ -n "${LLAMA_ARGS:-}" ] && COMMAND+=" LLAMA_ARGS='$LLAMA_ARGS'"
COMMAND+=" RESULT=$RESULT bench/intercept-policies.sh"
python3 bench/intercept_table.py "$OUT" "$RATES" "$SCALE" "$SATURATED" "$RESULT" "$COMMAND"
cat "$RESULT.md"
