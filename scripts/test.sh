#!/usr/bin/env bash
# Runs Canopy's whole test suite on a fresh machine: installs what the tests
# need when it is missing (cargo-nextest, the s3s-fs S3 server), then runs
# unit and integration tests against local disk and a real S3 server.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/canopy-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "installing s3s-fs (S3 server for the integration tests)" >&2
  CARGO_TARGET_DIR="$HOME/.cache/s3s-target" cargo install s3s-fs@0.14.1 --features binary --locked
fi

cargo nextest run --workspace --no-fail-fast "$@"
