# Shared set-up for Canopy's scripts: sourced, not run.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/canopy-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

# prune_target_dir — the shared target directory only grows (every build of
# another checkout or flag set adds artifacts; incremental state most of
# all): when the disk holding it has less than 10 GiB free, drop the
# incremental state, which cargo rebuilds on demand, before a build fills it.
prune_target_dir() {
  local free_kb
  mkdir -p "$CARGO_TARGET_DIR"
  free_kb="$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    echo "less than 10 GiB free under $CARGO_TARGET_DIR: removing incremental build state" >&2
    rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
  fi
}

# apt_install PKG... — installs Debian packages (with sudo when not root).
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# protoc_ready — true when protoc can compile what the build compiles: the etcd
# client's build script runs protoc on files that import protobuf's well-known
# types, so a protoc binary without its include files (Debian splits them into
# libprotobuf-dev) is not enough.
protoc_ready() {
  local protoc="${PROTOC:-protoc}" dir ok=1
  command -v "$protoc" >/dev/null 2>&1 || return 1
  dir="$(mktemp -d)"
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\nmessage Check { google.protobuf.FileDescriptorProto f = 1; }\n' >"$dir/check.proto"
  if "$protoc" -I "$dir" ${PROTOC_INCLUDE:+-I "$PROTOC_INCLUDE"} --descriptor_set_out="$dir/out" "$dir/check.proto" >/dev/null 2>&1; then
    ok=0
  fi
  rm -rf "$dir"
  return "$ok"
}

# ensure_build_deps — installs protoc and protobuf's include files when the
# build could not compile the etcd client's protobufs with what is here.
ensure_build_deps() {
  if ! protoc_ready; then
    apt_install protobuf-compiler libprotobuf-dev
  fi
  if ! protoc_ready; then
    echo "protoc cannot compile a file importing google/protobuf/descriptor.proto;" \
         "install protobuf-compiler and libprotobuf-dev (or set PROTOC / PROTOC_INCLUDE)" >&2
    exit 1
  fi
}

# ensure_terraform — Terraform for `terraform fmt` (no providers needed):
# HashiCorp's release zip for linux/amd64, checked against its SHA256SUMS,
# into /usr/local/bin (or ~/.local/bin when that is not writable).
ensure_terraform() {
  command -v terraform >/dev/null 2>&1 && return 0
  local version="1.11.4" dir bin="/usr/local/bin"
  dir="$(mktemp -d)"
  echo "installing Terraform $version" >&2
  curl -fsSL -o "$dir/terraform_${version}_linux_amd64.zip" \
    "https://releases.hashicorp.com/terraform/${version}/terraform_${version}_linux_amd64.zip"
  curl -fsSL -o "$dir/SHA256SUMS" "https://releases.hashicorp.com/terraform/${version}/terraform_${version}_SHA256SUMS"
  (cd "$dir" && grep "terraform_${version}_linux_amd64.zip" SHA256SUMS | sha256sum -c -)
  python3 -m zipfile -e "$dir/terraform_${version}_linux_amd64.zip" "$dir/out"
  if [ ! -w "$bin" ]; then
    bin="$HOME/.local/bin"
    mkdir -p "$bin"
    export PATH="$bin:$PATH"
  fi
  install -m 0755 "$dir/out/terraform" "$bin/terraform"
  rm -rf "$dir"
}
