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

# Real agents the ingest tests run against (Debian packages).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  echo "installing prometheus and prometheus-node-exporter" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-node-exporter >/dev/null
fi

# The OpenTelemetry Python SDK for the OTLP tests, in a venv of its own.
VENV="$HOME/.cache/canopy-venv"
if ! "$VENV/bin/python" -c "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http" >/dev/null 2>&1; then
  echo "installing the OpenTelemetry Python SDK into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http
fi
export CANOPY_PYTHON="$VENV/bin/python"

cargo nextest run --workspace --no-fail-fast "$@"
