#!/usr/bin/env bash
# The whole test suite: installs redis-server (and redis-cli, which makes
# the test clusters) when missing, then runs every test (unit, integration
# against real redis-server processes, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server or redis-cli not found; installing them from Debian's packages" >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server redis-tools >/dev/null
    # The package starts a system service we do not use; tests run their own.
    $sudo_cmd systemctl stop redis-server >/dev/null 2>&1 || true
fi

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
