#!/usr/bin/env bash
# The one command that runs every netsight test on a fresh Debian machine (as root):
# installs what the tests need, then builds, lints and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-venv: the OTLP receiver below; socat: TLS terminator in front of it; curl,
# openssl, ssl-cert: the HTTPS tests (ssl-cert provides the snakeoil pair
# deploy/web-config.example.yml uses).
apt_packages=(prometheus prometheus-node-exporter nftables conntrack iproute2 iputils-ping procps iperf3
  python3-venv socat curl openssl ssl-cert
  prometheus-alertmanager systemd util-linux
  hping3 ethtool dnsmasq-base tmux iptables python3)
# prometheus-alertmanager: amtool and the Alertmanager of tests/e2e_prometheus.rs;
# systemd: systemd-analyze for tests/deploy.rs (the unit is only verified, never started);
# util-linux: setpriv, to run netsight with exactly the unit's capabilities.
# hping3, ethtool: the SYN flood and the 100 Mbit/s link of tests/scenarios.rs;
# dnsmasq-base: the DNS server of tests/diagnose_connectivity.rs; tmux: tests/monitor_tmux.rs;
# iptables: iptables-nft rules in tests/netns_nftables.rs; python3: socket owners in tests.
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

# OTLP receiver for tests/otlp_e2e.rs: rotel (PyPI) ships the rotel-agent binary inside
# the package, found at .venv-test/lib/python3*/site-packages/rotel/rotel-agent.
if ! ls .venv-test/lib/python3*/site-packages/rotel/rotel-agent >/dev/null 2>&1; then
  echo "== installing rotel (OTLP receiver) into .venv-test/"
  python3 -m venv .venv-test
  .venv-test/bin/pip install -q --disable-pip-version-check rotel==0.0.1a15
fi

# Grafana dashboard schema and Kubernetes manifest checks (tests/dashboards.rs,
# tests/deploy.rs): node, plus the npm packages pinned in
# scripts/validate-dashboards/package-lock.json, installed once into its node_modules
# (gitignored). `npm ls` is offline, so later runs reuse them without the registry.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing: nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! (cd scripts/validate-dashboards && npm ls --silent >/dev/null 2>&1); then
  echo "== installing npm packages into scripts/validate-dashboards/node_modules"
  (cd scripts/validate-dashboards && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
fi

# Conntrack tests need the module in the host kernel (namespaces then get their own table).
modprobe nf_conntrack 2>/dev/null || true

# Every package of the lock file, for every target platform: tests/licenses.rs
# reads `cargo metadata --offline`, which needs them all (a build fetches only
# this platform's).
echo "== fetching crates"
cargo fetch --locked

echo "== format and lint"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
cargo test --locked --all-targets --no-fail-fast -- --test-threads 2
