#!/usr/bin/env bash
# The fast part of the suite, for the edit-compile-test loop: everything
# scripts/test.sh runs but the real Sentinel and Cluster topologies
# (tests/deployments.rs, tests/topology.rs) and the fault matrix
# (tests/fault_matrix/), which start many servers and wait out failovers.
# CI runs the whole suite (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

slow=" deployments topology fault_matrix "
targets=(--lib --bins --examples --benches)
# A suite is a file, tests/NAME.rs, or a folder, tests/NAME/main.rs.
for file in tests/*.rs tests/*/main.rs; do
    name=$(basename "${file%/main.rs}" .rs)
    case "$slow" in *" $name "*) continue ;; esac
    targets+=(--test "$name")
done
cargo test --all-features "${targets[@]}" "$@"
cargo test --all-features --doc "$@"
