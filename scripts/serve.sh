#!/usr/bin/env bash
# One command from a fresh machine to a running server: installs dependencies and the default
# model, builds tandem (release) and starts `tandem serve` on 127.0.0.1:8080.
# Extra arguments go to `tandem serve` (see `target/release/tandem serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked --bin tandem
exec target/release/tandem serve "$@"
