#!/usr/bin/env bash
# What bit-exact mode costs in speed. Bit-exact mode (`--prefix-reuse exact`) turns ggml's tiled
# K-quant matmul off and loads weights unrepacked, so its kernels do not depend on a batch's
# rows; `--prefix-reuse off` keeps llama.cpp's defaults. Flash attention is off on both.
# Models: SmolLM2 requantized (examples/requantize) to Q6_K (tiled kernel only: llama.cpp
# does not repack Q6_K) and to Q4_K_M (both), and Gemma 3 270M Q4_K_M when fetched
# (scripts/fetch-model.sh gemma3-270m). Per model the two servers take turns, ROUNDS times;
# each times REQUESTS prefill requests (TOKENS random prompt tokens, 1 output token) and
# REQUESTS decode requests (8 prompt tokens, DECODE output tokens, ignore_eos), one at a time.
# Writes bench/results/exact-kernels.{md,json}.
#   TOKENS=512 DECODE=64 REQUESTS=4 ROUNDS=3 bench/exact-kernels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
TOKENS=${TOKENS:-512} DECODE=${DECODE:-64} REQUESTS=${REQUESTS:-4} ROUNDS=${ROUNDS:-3}
cargo build --release --locked --bin tandem --example requantize -p tandem-server -p tandem-llama >&2
OUT=bench/work/exact-kernels; mkdir -p "$OUT" bench/results
MODELS=()
for q in q6_k q4_k_m; do
  m="$OUT/smollm2-$q.gguf"
  [ -f "$m" ] || target/release/examples/requantize "$DEFAULT_MODEL" "$m" "$q" >&2
  MODELS+=("$m")
done
GEMMA="$(dirname "$DEFAULT_MODEL")/gemma-3-270m-q4_k_m.gguf"
[ -f "$GEMMA" ] && MODELS+=("$GEMMA")
declare -A FLAGS=([exact]="--prefix-reuse exact" [default]="--prefix-reuse off")
for model in "${MODELS[@]}"; do
  name=$(basename "$model" .gguf)
  for round in $(seq 1 "$ROUNDS"); do
    for mode in exact default; do
      costs="$OUT/$name-$mode-costs.json"  # profiled once per model and mode, then reused
      flag=--save-costs; [ -f "$costs" ] && flag=--costs
      # shellcheck disable=SC2086
      start_tandem "$OUT/$name-$mode.log" --model "$model" --flash-attn off --max-seqs 2 \
        --kv-cells 4096 $flag "$costs" ${FLAGS[$mode]}
      "$BENCH_PY" bench/exact_kernels.py time "$URL" "$TOKENS" "$DECODE" "$REQUESTS" "$round" \
        > "$OUT/$name-$mode-$round.json"
      kill "$PID"; wait "$PID" 2>/dev/null || true
    done
  done
done
"$BENCH_PY" bench/exact_kernels.py report "$OUT" "$ROUNDS" "$TOKENS" "$DECODE" "$REQUESTS" "${MODELS[@]}"
