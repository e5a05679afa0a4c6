#!/usr/bin/env bash
# Builds and runs Canopy on a fresh machine: installs what the build needs
# beyond cargo (protoc) when it is missing, then runs `canopy <args>`.
#   scripts/run.sh                        # canopy standalone, data in ./canopy-data
#   scripts/run.sh ingester --etcd-endpoints http://127.0.0.1:2379 ...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_build_deps
prune_target_dir
cargo build --release -p canopy
if [ "$#" -eq 0 ]; then
  set -- standalone
fi
exec "$CARGO_TARGET_DIR/release/canopy" "$@"
