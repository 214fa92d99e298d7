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
# llama-server would fall back to ChatML, e.g. crates/server/templates/gemma-turns.jinja),
# TANDEM_ARGS and LLAMA_ARGS (extra flags for either server, e.g. LLAMA_ARGS='-fa off'),
# STEPS (which steps run; default "single c16 ttft tools agent") and REPEATS (tool-loop runs per
# rate, each with its own prompts; default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
SEQS=16; CELLS=32768
RATES="${RATES:-0.3 0.6}"
AGENT_RATE="${AGENT_RATE:-0.3}"
RESULT="${RESULT:-bench/results/llama-server-comparison}"
OUT=bench/work/compare; rm -rf "$OUT"; mkdir -p "$OUT" bench/results
LLAMA_SERVER=$(bench/build-llama-server.sh)
build_tandem
T_TEMPLATE=(); L_TEMPLATE=()
if [ -n "${TEMPLATE:-}" ]; then
  T_TEMPLATE=(--chat-template-file "$TEMPLATE"); L_TEMPLATE=(--jinja --chat-template-file "$TEMPLATE")
fi

# One server at a time while starting: tandem measures its cost profile at startup.
read -ra T_ARGS <<< "${TANDEM_ARGS:-}"; read -ra L_ARGS <<< "${LLAMA_ARGS:-}"
start_tandem "$OUT/tandem.log" --model "$MODEL" --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS \
  "${T_TEMPLATE[@]}" "${T_ARGS[@]}"
start_llama "$OUT/llama-server.log" 18081 -np $SEQS -c $CELLS -b 512 -ub 512 "${L_TEMPLATE[@]}" "${L_ARGS[@]}"
compare_steps "$OUT" tandem "$URL" llama-server http://127.0.0.1:18081
kill $PID $LPID; wait 2>/dev/null || true

# llama.cpp's own --version reports the git commit of the enclosing checkout (tandem's), so the
# label is the PyPI source release it was built from.
LS_LABEL="$(basename "${LLAMA_SERVER%/build/bin/llama-server}") (PyPI sdist)"
COMMAND="RATES='$RATES' AGENT_RATE=$AGENT_RATE RESULT=$RESULT${TEMPLATE:+ TEMPLATE=$TEMPLATE}${TANDEM_ARGS:+ TANDEM_ARGS='$TANDEM_ARGS'}${LLAMA_ARGS:+ LLAMA_ARGS='$LLAMA_ARGS'}${STEPS:+ STEPS='$STEPS'}${REPEATS:+ REPEATS=$REPEATS} bench/compare-llama-server.sh${1:+ $1}"
python3 bench/compare_table.py --out "$OUT" --rates "$RATES" --agent-rate "$AGENT_RATE" \
  --result "$RESULT" --command "$COMMAND" --model "$(basename "$MODEL")" --a tandem --b llama-server \
  --title "tandem vs llama-server" --about "llama_server=$LS_LABEL" \
  --setup "both servers: same GGUF, threads, $SEQS sequences, $CELLS KV cells" > "$RESULT.md"
cat "$RESULT.md"
