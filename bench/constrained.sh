#!/usr/bin/env bash
# Constrained decoding cost: tok/s with and without a JSON schema at 1 and 16 streams, same
# run, one tandem server (16 sequences). Writes bench/results/constrained-decoding.{json,md}.
# Usage: bench/constrained.sh [MODEL.gguf]   Knobs (environment): ROUNDS, MAX_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
cargo build --release --locked --bin tandem >&2
mkdir -p bench/work
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/tandem serve --model "$MODEL" --port "$PORT" --max-seqs 16 --kv-cells 16384 \
  > bench/work/constrained-server.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
$PY bench/constrained.py "http://127.0.0.1:$PORT" --rounds "${ROUNDS:-3}" --max-tokens "${MAX_TOKENS:-128}"
