#!/usr/bin/env bash
# Runs every test of the workspace: the Rust tests (cargo nextest) and the
# driver tests (the official Python and JavaScript drivers against a real
# server).
# Used by developers and by .ci/run; installs what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
if ! python3 -c 'import rethinkdb, looseversion, pytest, websockets' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check -r server/tests/drivers/requirements.txt
fi

# promtool (Debian package prometheus) checks the metrics exposition.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "could not install promtool (package prometheus); its test will fail"
fi

# PostgreSQL (Debian package postgresql) is the YCSB benchmark's peer; its
# end-to-end run at a toy size is a test.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1; } \
    || echo "could not install postgresql; the YCSB test will fail"
fi

if [ ! -d server/tests/drivers/javascript/node_modules/rethinkdb ]; then
  (cd server/tests/drivers/javascript && npm install --silent --no-audit --no-fund --no-package-lock)
fi

cargo build --workspace --all-targets
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
export PHOTONDB_BIN="$PWD/target/debug/photondb"
# RethinkDB's own suite through the Python driver; fails below the floor.
suite="${PHOTONDB_REQL_SUITE:-../shared/reql-suite}"
if [ -d "$suite" ]; then
  python3 scripts/conformance/run.py "$suite" --floor-file scripts/conformance/floor.txt --show 3 || status=$?
else
  echo "conformance: skipped, no ReQL suite at $suite (set PHOTONDB_REQL_SUITE)"
fi
python3 -m pytest -q server/tests/drivers || status=$?
node --test server/tests/drivers/javascript/ || status=$?
exit $status
