#!/usr/bin/env bash
# Predicted outputs (OpenAI's `prediction`) on edit tasks (bench/prediction.py): the same
# requests without and with the edited file as the prediction, on one tandem server with
# prefix reuse off (so the two see the same prefill). Writes bench/results/prediction.{json,md}.
# Usage: bench/prediction.sh [MODEL.gguf]   Knobs (environment): ROUNDS (3), CONCURRENCY (4),
# MAX_TOKENS (256).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
OUT=bench/work/prediction; mkdir -p "$OUT" bench/results
cargo build --release --locked --bin tandem >&2
start_tandem "$OUT/tandem.log" --model "$MODEL" --prefix-reuse off
CMD="ROUNDS=${ROUNDS:-3} CONCURRENCY=${CONCURRENCY:-4} MAX_TOKENS=${MAX_TOKENS:-256} bench/prediction.sh"
"$BENCH_PY" bench/prediction.py "$URL" --rounds "${ROUNDS:-3}" --concurrency "${CONCURRENCY:-4}" \
  --max-tokens "${MAX_TOKENS:-256}" --command "$CMD"
