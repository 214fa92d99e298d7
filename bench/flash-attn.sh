#!/usr/bin/env bash
# tandem with llama.cpp flash attention off vs on, same run: single-stream and 16 concurrent
# streams, 128 output tokens after prompts of each of PROMPTS tokens (default "32 1024": the
# attention's share of a decode step grows with the context). Writes bench/results/flash-attn.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
build_tandem
OUT=bench/work/flash-attn; mkdir -p "$OUT" bench/results
{
  echo "# Flash attention off vs on ($(date +%F))"; echo
  echo "Machine: $(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores. Model: SmolLM2-135M-Instruct Q4_1. Command: \`PROMPTS='${PROMPTS:-32 1024}' bench/flash-attn.sh\`."; echo
  echo "| run | requests ok/err | TTFT ms mean/p50/p99 | ITL ms mean/p50/p99 | latency ms mean/p50/p99 | norm. latency ms/token mean/p50/p99 | output tok/s | req/s |"
  echo "|---|---|---|---|---|---|---|---|"
} > bench/results/flash-attn.md
for fa in off on; do
  "$TANDEM" serve --port 18090 --max-seqs 16 --kv-cells 32768 --flash-attn $fa 2>/dev/null &
  PID=$!
  wait_up http://127.0.0.1:18090
  for p in ${PROMPTS:-32 1024}; do
    for c in 1 16; do
      "$TANDEM" bench --url http://127.0.0.1:18090 --prompt-tokens "$p" --output-tokens 128 \
        --concurrency $c --requests $((c * 2)) --seed $((c * 10)) --quiet \
        --label "flash-attn $fa, $p-token prompts, $c streams" --out "$OUT/fa-$fa-$p-$c" >/dev/null
      grep "^| flash-attn" "$OUT/fa-$fa-$p-$c.md" >> bench/results/flash-attn.md
    done
  done
  kill $PID; wait $PID 2>/dev/null || true
done
cat bench/results/flash-attn.md
