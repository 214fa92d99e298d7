#!/usr/bin/env bash
# Side-by-side benchmark of tandem and llama.cpp's llama-server on the same GGUF, thread count
# and KV size, in one run with the two servers' steps alternating: single-stream decode,
# aggregate throughput at 16 streams, TTFT of a 512-token prompt, the client-side tool-loop
# workload at two arrival rates, and the same workload as an agent's: every conversation starts
# with one shared 400-token system prompt.
# Writes $RESULT.{json,md} (default bench/results/llama-server-comparison).
# Usage: bench/compare-llama-server.sh [MODEL.gguf]
# Knobs (environment): RATES (tool-loop arrival rates), AGENT_RATE, RESULT, TEMPLATE (a Jinja
# chat template file both servers use instead of the model's: for a GGUF without one, where
# llama-server would fall back to ChatML, e.g. crates/server/templates/gemma-turns.jinja).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
SEQS=16; CELLS=32768
RATES="${RATES:-0.3 0.6}"
AGENT_RATE="${AGENT_RATE:-0.3}"
RESULT="${RESULT:-bench/results/llama-server-comparison}"
OUT=bench/work/compare; mkdir -p "$OUT" bench/results
LLAMA_SERVER=$(bench/build-llama-server.sh)
cargo build --release --locked --bin tandem >&2
TANDEM=target/release/tandem
T_TEMPLATE=(); L_TEMPLATE=()
if [ -n "${TEMPLATE:-}" ]; then
  T_TEMPLATE=(--chat-template-file "$TEMPLATE"); L_TEMPLATE=(--jinja --chat-template-file "$TEMPLATE")
fi

# step NAME BENCH-ARGS...: the same step against tandem, then against llama-server. Both servers
# stay up and the steps alternate, so load from other tenants of this shared machine falls on
# both columns alike rather than on whichever server ran second.
step() {
  local name=$1; shift
  for s in tandem llama-server; do
    $TANDEM bench --url "${URLS[$s]}" --quiet --label "$s $name" "$@" --out "$OUT/$s-$name" >/dev/null
  done
}

declare -A URLS=([tandem]=http://127.0.0.1:18080 [llama-server]=http://127.0.0.1:18081)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
# One server at a time while starting: tandem measures its cost profile at startup.
$TANDEM serve --model "$MODEL" --port 18080 --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS "${T_TEMPLATE[@]}" 2>"$OUT/tandem.log" &
PIDS+=($!); wait_up "${URLS[tandem]}"
"$LLAMA_SERVER" -m "$MODEL" --port 18081 -t "$THREADS" -tb "$THREADS" -np $SEQS -c $CELLS -b 512 -ub 512 "${L_TEMPLATE[@]}" 2>"$OUT/llama-server.log" &
PIDS+=($!); wait_up "${URLS[llama-server]}"

# Every step uses its own seed, so no step's prompts repeat an earlier step's (a server's prompt
# cache would otherwise serve them); both servers get identical requests.
step single --prompt-tokens 32 --output-tokens 128 --concurrency 1 --requests 4 --seed 100
step c16 --prompt-tokens 32 --output-tokens 128 --concurrency 16 --requests 32 --seed 200
step ttft --prompt-tokens 512 --output-tokens 1 --concurrency 1 --requests 6 --seed 300
seed=400
for r in $RATES; do
  step "tools-$r" --workload bench/workloads/tool_loop.jsonl --rate "$r" --requests 24 --seed $seed
  seed=$((seed + 100))
done
step agent --workload bench/workloads/tool_loop.jsonl --system-prompt-tokens 400 --rate "$AGENT_RATE" --requests 24 --seed 900
kill "${PIDS[@]}"; wait 2>/dev/null || true

# llama.cpp's own --version reports the git commit of the enclosing checkout (tandem's), so the
# label is the PyPI source release it was built from.
LS_LABEL="$(basename "${LLAMA_SERVER%/build/bin/llama-server}") (PyPI sdist)"
COMMAND="RATES='$RATES' AGENT_RATE=$AGENT_RATE RESULT=$RESULT${TEMPLATE:+ TEMPLATE=$TEMPLATE} bench/compare-llama-server.sh${1:+ $1}"
python3 bench/compare_table.py "$OUT" "$RATES" "$LS_LABEL" "$AGENT_RATE" "$RESULT" "$COMMAND" \
  "$(basename "$MODEL")" > "$RESULT.md"
cat "$RESULT.md"
