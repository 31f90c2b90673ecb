#!/usr/bin/env bash
# The whole test suite: installs redis-server, redis-cli (which makes the
# test clusters) and openssl (which makes the TLS tests' certificates) when
# missing, then runs every test (unit,
# integration against real redis-server processes, doctests), then the
# build with no default features.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian package $2 when command $1 is missing.
install_missing() {
    if command -v "$1" >/dev/null 2>&1; then return; fi
    echo "$1 not found; installing it from Debian's packages" >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$2" >/dev/null
    if [ "$2" = redis-server ]; then
        # The package starts a system service we do not use; tests run their own.
        $sudo_cmd systemctl stop redis-server >/dev/null 2>&1 || true
    fi
}

install_missing redis-server redis-server
install_missing redis-cli redis-tools
install_missing openssl openssl

cargo test --all-features --all-targets "$@"
cargo test --all-features --doc "$@"
# The in-memory build, with none of the default features (no redis, no
# tower): its library, doctests and the tests that need neither.
cargo test --no-default-features --features testing "$@"
# The chaos soak, 60 s on each topology, from fixed seeds (each replays its
# fault schedule): random overlapping faults under load, every answer and
# write checked against its mode's promise; exits non-zero on a violation.
for topology_seed in single:1 sentinel:2 cluster:3; do
    cargo run --all-features --example chaos -- --duration 60s \
        --topology "${topology_seed%%:*}" --seed "${topology_seed##*:}"
done
