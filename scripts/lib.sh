# Shared set-up for Canopy's scripts: sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/canopy-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

# apt_install PKG... — installs Debian packages (with sudo when not root).
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The etcd client crate compiles etcd's protobufs at build time with protoc.
ensure_build_deps() {
  if ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
    apt_install protobuf-compiler
  fi
}
