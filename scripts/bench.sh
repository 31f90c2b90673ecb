#!/usr/bin/env bash
# Regenerates the tables of BENCHMARKS.md's "The check modes under load",
# "Keyed reloads" and the middleware's criterion table, one measurement
# after the other (the machine has few cores; nothing else should run):
#
#   1. examples/loadgen.rs: in-process load through the middleware, a
#      million requests per cell (REQUESTS to change it), and propagation;
#      then the keyed variants over 100,000 tenants;
#   2. scripts/bench-http.sh: the example service over HTTP with wrk;
#   3. benches/middleware.rs: criterion, the middleware's cost per request.
#
#   bash scripts/bench.sh              # about 15 minutes on 2 cores
#   REQUESTS=100000 DURATION=3s bash scripts/bench.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-1000000}

echo "## machine"
echo
dirty=$(git status --porcelain -- src Cargo.toml | grep -q . && echo ", src/ or Cargo.toml modified" || true)
echo "- commit $(git rev-parse --short HEAD)$dirty; $(date -u '+%Y-%m-%d %H:%M UTC'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $(nproc) cores ($(sed -n 's/^model name\t: //p' /proc/cpuinfo | head -1)), $(rustc --version), $(redis-server --version | cut -d' ' -f1-3)"
echo

echo "## loadgen (examples/loadgen.rs, --requests $REQUESTS)"
echo
cargo build --release --example loadgen --features keyed >&2
target/release/examples/loadgen --requests "$REQUESTS"
echo

echo "## loadgen, keyed (--keys 100000, Zipf-like; --capacity 10000, then 100000)"
echo
for capacity in 10000 100000; do
    target/release/examples/loadgen --requests "$REQUESTS" --inflight 64,1024 \
        --variants keyed-strict,keyed-push,keyed-interval --keys 100000 \
        --capacity "$capacity" --bumps 0
    echo
done

echo "## HTTP (scripts/bench-http.sh)"
echo
bash scripts/bench-http.sh
echo

echo "## criterion (benches/middleware.rs)"
echo
cargo bench --bench middleware >&2
python3 - <<'EOF'
import json, pathlib
root = pathlib.Path("target/criterion/middleware")
def median(name):
    estimates = json.loads((root / name / "new" / "estimates.json").read_text())
    return estimates["median"]["point_estimate"]
rows = [
    ("bare", None),
    ("memory_current", "bare"),
    ("bare_multi_thread", None),
    ("extension_multi_thread", "bare_multi_thread"),
    ("push_armed", "bare_multi_thread"),
    ("push_armed", "extension_multi_thread"),
    ("strict_redis", "bare_multi_thread"),
]
print("| benchmark | median | cost over bare |")
print("|---|---:|---:|")
for name, base in rows:
    m = median(name)
    cost = "—" if base is None else f"{m - median(base):,.1f} ns (over `{base}`)"
    print(f"| `{name}` | {m:,.1f} ns | {cost} |")
EOF
