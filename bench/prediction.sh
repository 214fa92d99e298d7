#!/usr/bin/env bash
# Predicted outputs (OpenAI's `prediction`) on edit tasks (bench/prediction.py): the same
# requests without and with the edited file as the prediction, on one tandem server with
# prefix reuse off (so the two see the same prefill). Then the same requests, without a
# prediction (llama-server does not read the field), on llama.cpp's llama-server as it is and
# with its n-gram speculative decoding (`--spec-type ngram-simple`, drafts found in the
# context, which holds the file); SKIP_LLAMA=1 leaves llama-server out.
# Writes bench/results/prediction.{json,md}.
# Usage: bench/prediction.sh [MODEL.gguf]   Knobs (environment): ROUNDS (3), CONCURRENCY (4),
# MAX_TOKENS (256).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
MODEL="${1:-$DEFAULT_MODEL}"
THREADS="${THREADS:-$(nproc)}"
OUT=bench/work/prediction; mkdir -p "$OUT" bench/results
build_tandem
start_tandem "$OUT/tandem.log" --model "$MODEL" --prefix-reuse off
TANDEM_URL=$URL
OTHERS=()
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  # llama-server keeps its default prompt cache (a repeated request prefills little); the
  # comparison is of decode rates, which that does not change.
  start_llama "$OUT/llama-server.log" 18111 -np 1 -c 8192
  start_llama "$OUT/llama-server-ngram.log" 18112 -np 1 -c 8192 --spec-type ngram-simple
  OTHERS=(--other llama-server=http://127.0.0.1:18111
          --other "llama-server ngram-simple=http://127.0.0.1:18112")
fi
CMD="ROUNDS=${ROUNDS:-3} CONCURRENCY=${CONCURRENCY:-4} MAX_TOKENS=${MAX_TOKENS:-256} bench/prediction.sh"
"$BENCH_PY" bench/prediction.py "$TANDEM_URL" --rounds "${ROUNDS:-3}" --concurrency "${CONCURRENCY:-4}" \
  --max-tokens "${MAX_TOKENS:-256}" --command "$CMD" "${OTHERS[@]}"
