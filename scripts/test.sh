#!/usr/bin/env bash
# Runs every test of the workspace. Used by developers and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
