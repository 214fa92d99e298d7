#!/usr/bin/env bash
# Partial tool execution (Conveyor): completion latency with partial execution off (lazy) vs on,
# per workload, alone and 8 at a time, same run and server (replayed requests, real tools).
# Writes bench/results/conveyor.{json,md} and conveyor-timeline.svg.
# Usage: bench/conveyor.sh [MODEL.gguf]   Knobs (environment): REPS (default 5), REPS_LOADED (3), SEARCH_MS (600).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
cargo build --release --locked --bin tandem >&2
mkdir -p bench/work
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/tandem serve --model "$MODEL" --port "$PORT" --max-seqs 8 --kv-cells 16384 \
  --allow-replay --tools python,search,plan,validate,calc --search-latency-ms "${SEARCH_MS:-600}" \
  > bench/work/conveyor-server.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
$PY bench/conveyor.py "http://127.0.0.1:$PORT" --reps "${REPS:-5}" --reps-loaded "${REPS_LOADED:-3}" \
  --search-ms "${SEARCH_MS:-600}"
