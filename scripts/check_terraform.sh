#!/usr/bin/env bash
# Checks infra/terraform without AWS or provider downloads: `terraform fmt`,
# the boot scripts rendered by Terraform itself (`terraform console`, which
# needs no providers) and parsed by `bash -n`, and checkov (pinned, offline;
# every skipped check is justified where it is skipped). tests/terraform.rs
# checks the roles' flags and variables against the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_terraform
terraform fmt -check -recursive infra/terraform

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
render() { # render TEMPLATE VARS — the template rendered as Terraform would
  printf 'templatefile("%s", %s)\n' "$PWD/infra/terraform/templates/$1" "$2" \
    | (cd "$work" && terraform console 2>/dev/null) | sed '1{/^<<EOT$/d};${/^EOT$/d}'
}
node_vars='{ role = "ingester", args = "ingester --data-dir /var/lib/canopy/wal", env = { CANOPY_OBJECT_STORE = "s3://b" }, cluster_secret_parameter = "/c/cluster-secret", cluster_secret_file = "/etc/canopy/cluster-secret", auth_tokens = "", auth_tokens_file = "/etc/canopy/auth-tokens", bucket = "b", binary_key = "_deploy/x/canopy", region = "us-east-1", needs_local_disk = true, stop_timeout_seconds = 840, lifecycle_hook = "h", asg_name = "g" }'
tokens="write $(printf %064d 7)"
for variant in 'lifecycle_hook = ""' "auth_tokens = \"$tokens\"" 'role = "ingester"'; do
  key="${variant%% =*}"
  vars="$(sed -E "s#$key = \"[^\"]*\"#$variant#" <<<"$node_vars")"
  render canopy-node.sh.tftpl "$vars" >"$work/node.sh"
  grep -q '^ExecStart=/usr/local/bin/canopy ingester' "$work/node.sh"
  grep -q 'ssm get-parameter .*--name "/c/cluster-secret"' "$work/node.sh"
  if [ "$key" = auth_tokens ]; then
    grep -qx "$tokens" "$work/node.sh"
  elif grep -q TOKENS "$work/node.sh"; then
    echo "a tokens file without liaison_auth_tokens" >&2
    exit 1
  fi
  bash -n "$work/node.sh"
done
render etcd-node.sh.tftpl '{ name = "etcd-0", ip = "10.0.0.20", cluster = "etcd-0=http://10.0.0.20:2380", token = "t", region = "us-east-1" }' >"$work/etcd.sh"
grep -q '^ETCD_NAME="etcd-0"' "$work/etcd.sh"
bash -n "$work/etcd.sh"

CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="$HOME/.cache/canopy-checkov"
if [ "$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "installing checkov $CHECKOV_VERSION into $CHECKOV_VENV" >&2
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"
fi
"$CHECKOV_VENV/bin/checkov" -d infra/terraform --quiet --compact --skip-download
