#!/usr/bin/env bash
# Canopy vs VictoriaMetrics on TSBS devops cpu-only data, side by side in
# one run. Builds release binaries, installs VictoriaMetrics if missing, and
# prints the table (also written to results/<time>/results.{md,json}).
#   scripts/bench.sh                      # 100 hosts x 24 h
#   scripts/bench.sh --scale 1000 --hours 3
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_build_deps
prune_target_dir
if ! command -v victoria-metrics >/dev/null 2>&1; then
  apt_install victoria-metrics
fi
# The real-agent data set runs Debian's Prometheus and node exporter.
if [[ " $* " == *" --real-agents-minutes "* ]]; then
  command -v prometheus >/dev/null 2>&1 || apt_install prometheus
  command -v prometheus-node-exporter >/dev/null 2>&1 || apt_install prometheus-node-exporter
fi
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  apt_install fonts-dejavu-core || true
fi
cargo build --release -p canopy -p canopy-bench
exec "$CARGO_TARGET_DIR/release/canopy-bench" --canopy-bin "$CARGO_TARGET_DIR/release/canopy" "$@"
