#!/usr/bin/env bash
# Fuzzes the tool-call parsers and the JSON scanner (crates/calls/fuzz) for SECONDS (default
# 30) with cargo-fuzz. Needs a nightly toolchain; installs cargo-fuzz from crates.io if missing.
# Without nightly, or if cargo-fuzz cannot be installed, it says so and exits 0 (the stable
# property tests in crates/calls/tests/parsers.rs cover the same invariants); a crash fails.
set -euo pipefail
cd "$(dirname "$0")/../crates/calls"
SECONDS_TO_RUN="${1:-30}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain; skipped" >&2; exit 0
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --quiet || { echo "fuzz: cargo-fuzz not installable; skipped" >&2; exit 0; }
fi
cargo +nightly fuzz run parsers -- -max_total_time="$SECONDS_TO_RUN" 2>&1 | tail -3
