#!/usr/bin/env bash
# The example service over HTTP, side by side in one run: settings_server
# against one redis-server in each check mode (strict, push,
# interval=100ms), and the same service on the in-memory backend (no
# --redis), all driven with wrk on GET /settings at 1, 64 and 256
# connections. Prints a markdown table: requests per second, the ratio to
# the in-memory service at the same connection count, and Redis commands
# and reads (scripts) per request from INFO commandstats.
#
#   bash scripts/bench-http.sh
#   DURATION=5s CONNECTIONS="64" bash scripts/bench-http.sh
#
# The four services run at once, each cell drives one of them while the
# others idle, and the order of the services rotates from one connection
# count to the next, so a slow spell of a shared machine does not always
# land on the same service. Commands per request count every command the
# server ran during the cell: the idle push service's heartbeats (5 PINGs
# a second) land on every cell, a few hundred-thousandths per request.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 64 256"}
INTERVAL=${INTERVAL:-100ms}

for tool in wrk redis-server redis-cli python3; do
    if ! command -v "$tool" >/dev/null; then
        case $tool in
            wrk) apt-get install -y wrk >&2 ;;
            redis-server | redis-cli) apt-get install -y redis-server >&2 ;;
            *) echo "bench-http: $tool is needed" >&2; exit 1 ;;
        esac
    fi
done

cargo build --release --example settings_server --features metrics,keyed >&2
server=target/release/examples/settings_server

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A free loopback port: bound by the kernel, then let go for redis-server.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --protected-mode no --logfile "$work/redis.log" &
pids+=($!)
cli() { redis-cli -p "$port" "$@"; }
for _ in $(seq 100); do
    [[ $(cli ping 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(cli ping) == PONG ]] || { echo "bench-http: redis-server did not start" >&2; exit 1; }
redis_version=$(cli info server | tr -d '\r' | sed -n 's/^redis_version://p')

# name -> address, once it prints its listening line.
declare -A address
start_service() {
    local name=$1
    shift
    RUST_LOG=warn "$server" --listen 127.0.0.1:0 --settings "$work/$name.json" \
        --key "bench:$name" "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        grep -q 'listening on http://' "$work/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    address[$name]=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/$name.out")
    [[ -n ${address[$name]} ]] || { echo "bench-http: $name did not start:" >&2; cat "$work/$name.err" >&2; exit 1; }
}
start_service memory
start_service strict --redis "redis://127.0.0.1:$port" --mode strict
start_service push --redis "redis://127.0.0.1:$port" --mode push
start_service interval --redis "redis://127.0.0.1:$port" --mode "interval=$INTERVAL"
services=(memory strict push interval)

# Sums of `calls` in INFO commandstats: the commands clients sent, then
# the scripts among them (gensync reads and writes through scripts, and a
# GET /settings only reads). The commands a script runs inside Redis count
# there too, and are left out: they are no round trip.
calls() {
    cli info commandstats | tr -d '\r' | awk -F'calls=' '
        /^cmdstat_(eval|evalsha|ping|client|hello|select|auth|info)[:|]/ { split($2, a, ","); all += a[1] }
        /^cmdstat_eval(sha)?:/ { split($2, a, ","); get += a[1] }
        END { print all + 0, get + 0 }'
}

# Warm each service up: the first requests load the settings and, in push
# mode, arm the tracking connection.
for name in "${services[@]}"; do
    wrk -t1 -c1 -d1s "http://${address[$name]}/settings" >/dev/null
done

declare -A rps p99 cmds gets
rotation=0
for c in $CONNECTIONS; do
    threads=$((c < 2 ? c : 2))
    for i in "${!services[@]}"; do
        name=${services[$(((i + rotation) % ${#services[@]}))]}
        read -r all_before get_before < <(calls)
        wrk -t"$threads" -c"$c" -d"$DURATION" --latency "http://${address[$name]}/settings" >"$work/wrk.out"
        read -r all_after get_after < <(calls)
        requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.out")
        errors=$(grep -E 'Non-2xx|Socket errors' "$work/wrk.out" || true)
        [[ -z $errors ]] || echo "bench-http: $name at $c connections: $errors" >&2
        rps[$name,$c]=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$work/wrk.out")
        p99[$name,$c]=$(awk '$1 == "99%" { print $2 }' "$work/wrk.out")
        # Less the INFO that took the first count: a reply does not count
        # its own command.
        cmds[$name,$c]=$(awk -v a="$all_after" -v b="$all_before" -v n="$requests" 'BEGIN { printf "%.6f", (a - b - 1) / n }')
        gets[$name,$c]=$(awk -v a="$get_after" -v b="$get_before" -v n="$requests" 'BEGIN { printf "%.6f", (a - b) / n }')
    done
    rotation=$((rotation + 1))
done

echo "- $(nproc) cores; redis-server $redis_version on loopback TCP, started by the script; wrk -t2 (-t1 at 1 connection), $DURATION per cell, GET /settings"
echo "- services: settings_server (release, --features metrics,keyed), in-memory backend (strict) and --redis with --mode strict, push, interval=$INTERVAL"
echo
echo "| connections | service | req/s | vs in-memory | p99 latency | Redis cmds/req | reads/req |"
echo "|---:|---|---:|---:|---:|---:|---:|"
for c in $CONNECTIONS; do
    for name in "${services[@]}"; do
        label=$name
        [[ $name == interval ]] && label="interval=$INTERVAL"
        [[ $name == memory ]] && label="in-memory (no Redis)"
        ratio=$(awk -v a="${rps[$name,$c]}" -v m="${rps[memory,$c]}" 'BEGIN { printf "%.2f", a / m }')
        if [[ $name == memory ]]; then
            command_cell="— (${cmds[$name,$c]} by the others)"
            get_cell="—"
        else
            command_cell=${cmds[$name,$c]}
            get_cell=${gets[$name,$c]}
        fi
        printf '| %s | %s | %.0f | %s | %s | %s | %s |\n' "$c" "$label" "${rps[$name,$c]}" "$ratio" \
            "${p99[$name,$c]}" "$command_cell" "$get_cell"
    done
done
