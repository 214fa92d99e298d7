#!/usr/bin/env bash
# Interception policies on InferCept's mixed augmentation workload in virtual time: tandem's
# scheduler run by `tandem simulate` against a cost profile (no model, no server), one run per
# policy and arrival rate, the same requests and arrivals as bench/intercept-policies.sh for
# the same seed. A policy stops at the first rate it does not sustain (mean normalized latency
# above SATURATED seconds/token). Discard runs with --resume-order tail (vLLM's behavior).
# Writes $RESULT.{json,md,svg} (default bench/results/sim-policies) through the same table
# script as the real runs.
# Knobs (environment): COSTS (a preset or a JSON file; default smollm2-cpu), RATES, POLICIES,
# SCALE, WINDOW (seconds of arrivals per run), SATURATED, SIM_ARGS (extra `tandem simulate`
# flags: --max-seqs, --kv-cells, --swap-space, ...), RESULT, SWEEP_ALL=1 (run every rate, past
# saturation too).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
COSTS="${COSTS:-smollm2-cpu}"
RATES="${RATES:-0.1 0.2 0.4 0.8 1.2 1.6 2.0}"
POLICIES="${POLICIES:-min-waste preserve swap discard}"
SCALE="${SCALE:-0.1}"
WINDOW="${WINDOW:-90}"
SATURATED="${SATURATED:-0.25}"
SIM_ARGS="${SIM_ARGS:---max-seqs 16 --kv-cells 32768}"
RESULT="${RESULT:-bench/results/sim-policies}"
OUT=bench/work/simulate; rm -rf "$OUT"; mkdir -p "$OUT" bench/results
build_tandem

for policy in $POLICIES; do
  extra=()
  [ "$policy" = discard ] && extra=(--resume-order tail)
  for r in $RATES; do
    n=$(python3 -c "print(max(6, round($r * $WINDOW)))")
    echo "== $policy rate $r ($n requests)" >&2
    # shellcheck disable=SC2086  # SIM_ARGS is a list of flags
    "$TANDEM" simulate --costs "$COSTS" --workload augment --scale "$SCALE" --rate "$r" \
      --requests "$n" --seed 7 --intercept-policy "$policy" "${extra[@]}" $SIM_ARGS \
      --label "$policy @ $r" --out "$OUT/$policy-$r" >/dev/null
    if saturated "$OUT/$policy-$r.json" "$SATURATED"; then sat=1; else sat=0; fi
    [ -n "${SWEEP_ALL:-}" ] || [ "$sat" = 0 ] || break
  done
done

COMMAND="COSTS=$COSTS RATES='$RATES' POLICIES='$POLICIES' SCALE=$SCALE WINDOW=$WINDOW"
COMMAND+=" SATURATED=$SATURATED SIM_ARGS='$SIM_ARGS'"
[ -n "${SWEEP_ALL:-}" ] && COMMAND+=" SWEEP_ALL=1"
COMMAND+=" RESULT=$RESULT bench/simulate-policies.sh"
SETUP="simulated with cost profile $COSTS · tandem simulate $SIM_ARGS"
python3 bench/intercept_table.py "$OUT" "$RATES" "$SCALE" "$SATURATED" "$RESULT" "$COMMAND" "$SETUP"
cat "$RESULT.md"
