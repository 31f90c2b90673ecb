#!/usr/bin/env bash
# The fleet of issue 24 (examples/fleet): 1,000 push-mode instances, each
# with its own RedisBackend, over 4 worker processes, against one
# redis-server and against a 3-shard Cluster. Builds once in release, then
# runs, one after the other (the machine has few cores; nothing else should
# run):
#
#   1. idle commands/s and bump → all serving, heartbeat 200ms then 1s,
#      with a restart of Redis (kill -9, same port) under the fleet;
#   2. the source's herd: loads that take LOAD_LATENCY (a database query),
#      without spread, then with --spread SPREAD.
#
#   bash scripts/bench-fleet.sh                       # about 10 minutes on 2 cores
#   RUNS=1 BUMPS=10 IDLE=5s bash scripts/bench-fleet.sh   # a quick look
#   TOPOLOGIES=single bash scripts/bench-fleet.sh     # without the Cluster
set -euo pipefail
cd "$(dirname "$0")/.."

INSTANCES=${INSTANCES:-1000}
PROCESSES=${PROCESSES:-4}
BUMPS=${BUMPS:-50}
RUNS=${RUNS:-3}
IDLE=${IDLE:-10s}
LOAD_LATENCY=${LOAD_LATENCY:-20ms}
SPREAD=${SPREAD:-1s}
TOPOLOGIES=${TOPOLOGIES:-single cluster}

echo "## machine"
echo
dirty=$(git status --porcelain -- src examples Cargo.toml | grep -q . && echo ", src/, examples/ or Cargo.toml modified" || true)
echo "- commit $(git rev-parse --short HEAD)$dirty; $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $(nproc) cores ($(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -1)), $(rustc --version), $(redis-server --version | cut -d' ' -f1-3)"
echo "- open files: soft $(ulimit -Sn), hard $(ulimit -Hn) (each worker raises its soft limit to the hard one)"
echo

cargo build --release --all-features --example fleet >&2
fleet=target/release/examples/fleet
common=(--instances "$INSTANCES" --processes "$PROCESSES" --bumps "$BUMPS" --runs "$RUNS" --idle "$IDLE")

for topology in $TOPOLOGIES; do
    for heartbeat in 200ms 1s; do
        echo "## $topology, heartbeat $heartbeat, with a restart"
        echo
        echo '```'
        echo "$fleet --topology $topology ${common[*]} --heartbeat $heartbeat --restart"
        echo '```'
        echo
        "$fleet" --topology "$topology" "${common[@]}" --heartbeat "$heartbeat" --restart
        echo
    done
    for spread in 0 "$SPREAD"; do
        echo "## $topology, loads of $LOAD_LATENCY, spread $spread"
        echo
        echo '```'
        echo "$fleet --topology $topology ${common[*]} --load-latency $LOAD_LATENCY --spread $spread"
        echo '```'
        echo
        "$fleet" --topology "$topology" "${common[@]}" --load-latency "$LOAD_LATENCY" --spread "$spread"
        echo
    done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
