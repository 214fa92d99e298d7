#!/usr/bin/env bash
# Builds tandem for an NVIDIA GPU: the `cuda` feature, with llama.cpp as shared libraries, into
# target-cuda/release (the binary and its lib*.so.* side by side; the CPU build in target/ is
# left alone). The CUDA 13.0 compiler, headers and libraries come from NVIDIA's PyPI wheels,
# unpacked into CUDA_HOME (default ~/.cache/tandem/cuda-13.0), so no system CUDA toolkit and
# no GPU are needed to build. At run time the machine needs an NVIDIA driver for CUDA 13
# (>= 580) and libcudart.so.13 and libcublas.so.13 on LD_LIBRARY_PATH (the CUDA 13 toolkit's
# lib64, or this script's CUDA_HOME/lib); then `tandem serve --gpu-layers 99` offloads the model.
# Usage: scripts/build-cuda.sh   Knobs: CUDA_HOME, CUDA_ARCHS (CMake's list; default 90, Hopper),
# GGML_CUDA_FA (ON compiles the bodies of llama.cpp's CUDA flash-attention kernels too; default
# OFF, a shorter compile, whose time saving was not measured; attention then runs as matrix
# products).
# Why shared libraries: linking CUDA statically needs cublas_static, which the wheels lack.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_HOME="${CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/cuda-13.0}"
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python

if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "unpacking the CUDA 13.0 toolkit wheels into $CUDA_HOME"
  wheels=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.0.2.14
  unpacked=$(mktemp -d)
  for w in "$wheels"/*.whl; do "$PY" -m zipfile -e "$w" "$unpacked"; done
  rm -rf "$CUDA_HOME"; mkdir -p "$(dirname "$CUDA_HOME")"
  mv "$unpacked/nvidia/cu13" "$CUDA_HOME"
  rm -rf "$wheels" "$unpacked"
  chmod +x "$CUDA_HOME"/bin/* "$CUDA_HOME"/nvvm/bin/*
  # The layout CMake's FindCUDAToolkit expects: unversioned libraries to link, lib64.
  (cd "$CUDA_HOME/lib" && for l in cudart cublas cublasLt; do ln -sf "lib$l.so.13" "lib$l.so"; done)
  ln -sfn lib "$CUDA_HOME/lib64"
fi

export CUDA_PATH="$CUDA_HOME" CUDAToolkit_ROOT="$CUDA_HOME" CUDACXX="$CUDA_HOME/bin/nvcc"
export PATH="$CUDA_HOME/bin:$PATH"
export CMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" LLAMA_BUILD_SHARED_LIBS=1
# No CUDA virtual memory: it would link libcuda.so, which only a driver installs.
export GGML_CUDA_NO_VMM=ON GGML_CUDA_FA="${GGML_CUDA_FA:-OFF}"
cargo build --release --locked --features tandem-server/cuda --bin tandem --target-dir target-cuda
# llama-cpp-sys-2 links only the unversioned names (lib*.so -> lib*.so.0) into target-cuda/release;
# the binary needs the versioned files they point to, so copy those beside it.
out=$(ls -dt target-cuda/release/build/llama-cpp-sys-2-*/out/lib | head -1)
cp -a "$out"/lib*.so.* target-cuda/release/
echo "built target-cuda/release/tandem; run it with"
echo "  LD_LIBRARY_PATH=$PWD/target-cuda/release:$CUDA_HOME/lib target-cuda/release/tandem serve --gpu-layers 99"
