#!/usr/bin/env bash
# The one command that runs every netsight test on a fresh Debian machine (as root):
# installs what the tests need, then builds, lints and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(prometheus prometheus-node-exporter nftables conntrack iproute2 iputils-ping procps iperf3)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's packages start their own daemons where systemd runs; the tests start
# their own instances on other ports and never touch these.

# Conntrack tests need the module in the host kernel (namespaces then get their own table).
modprobe nf_conntrack 2>/dev/null || true

echo "== format and lint"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
cargo test --locked --all-targets -- --test-threads 2
