#!/usr/bin/env bash
# Canopy vs VictoriaMetrics on TSBS devops cpu-only data, side by side in
# one run. Builds release binaries, installs VictoriaMetrics if missing, and
# prints the table (also written to results/<time>/results.{md,json}).
#   scripts/bench.sh                      # 100 hosts x 24 h
#   scripts/bench.sh --scale 1000 --hours 3
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/canopy-target}"
if ! command -v victoria-metrics >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends victoria-metrics >/dev/null
fi
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends fonts-dejavu-core >/dev/null || true
fi
cargo build --release -p canopy -p canopy-bench
exec "$CARGO_TARGET_DIR/release/canopy-bench" --canopy-bin "$CARGO_TARGET_DIR/release/canopy" "$@"
