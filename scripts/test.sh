#!/usr/bin/env bash
# Runs Canopy's whole test suite on a fresh machine: installs what the build
# and the tests need when it is missing (protoc, cargo-nextest, etcd,
# Prometheus, the OpenTelemetry SDK, cargo-lambda, docker-compose, Terraform,
# checkov), checks the compose file and the Terraform, then runs unit and
# integration tests against local disk, a real S3 server (s3s-fs, a dev-dependency the tests run
# in-process) and a real etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_build_deps
prune_target_dir

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# Real agents the ingest tests run against (Debian packages).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v prometheus-node-exporter >/dev/null 2>&1; then
  apt_install prometheus prometheus-node-exporter
fi
# etcd for the cluster tests, and etcdctl to read its layout as operators do.
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  apt_install etcd-server etcd-client
fi

# docker-compose (Debian's, no daemon needed) checks the compose file; the
# compose test then runs its topology with real processes.
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose
fi
docker-compose -f infra/compose/docker-compose.yml config -q

# The OpenTelemetry Python SDK for the OTLP tests, in a venv of its own.
VENV="$HOME/.cache/canopy-venv"
if ! "$VENV/bin/python" -c "import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http" >/dev/null 2>&1; then
  echo "installing the OpenTelemetry Python SDK into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http
fi
export CANOPY_PYTHON="$VENV/bin/python"

# The Terraform for AWS: formatted, its boot scripts parse, checkov is clean.
scripts/check_terraform.sh

# cargo-lambda (PyPI) for the query-function tests: it emulates Lambda's
# invoke and runtime APIs on a loopback port.
if command -v cargo-lambda >/dev/null 2>&1; then
  CANOPY_CARGO_LAMBDA="$(command -v cargo-lambda)"
else
  if [ ! -x "$VENV/bin/cargo-lambda" ]; then
    echo "installing cargo-lambda into $VENV" >&2
    "$VENV/bin/pip" install -q cargo-lambda
  fi
  CANOPY_CARGO_LAMBDA="$VENV/bin/cargo-lambda"
fi
export CANOPY_CARGO_LAMBDA

cargo nextest run --workspace --no-fail-fast "$@"
