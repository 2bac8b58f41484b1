#!/bin/bash
# netdev collector CPU per tick with many interfaces, several builds at once (BENCHMARKS.md):
#   scripts/netdev-ab.sh PAIRS SECONDS NETSIGHT_BINARY...
# Creates one namespace holding lo and PAIRS veth pairs (down), runs
# `netsight serve --interval 1s` of every binary in it side by side, and prints
# each one's netsight_collector_cpu_seconds_total{collector="netdev"} increase
# over SECONDS, per tick. Needs root and curl; removes what it made on exit.
set -u
N=$1; SECS=$2; shift 2
NS=nsifab-$$
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    ip netns del "$NS" 2>/dev/null
}
trap cleanup EXIT
ip netns add "$NS"; ip -n "$NS" link set lo up
for i in $(seq 1 "$N"); do ip -n "$NS" link add "vx$i" type veth peer name "vy$i"; done
j=0
for BIN in "$@"; do
    ip netns exec "$NS" "$BIN" serve --interval 1s --listen "127.0.0.1:$((19980 + j))" >/dev/null 2>&1 &
    PIDS+=($!); j=$((j + 1)); sleep 0.5
done
sleep 6
cpu() {
    ip netns exec "$NS" curl -s "127.0.0.1:$((19980 + $1))/metrics" \
        | awk '/^netsight_collector_cpu_seconds_total\{collector="netdev"\}/{print $2}'
}
declare -a start
for j in "${!PIDS[@]}"; do start[$j]=$(cpu "$j"); done
sleep "$SECS"
for j in "${!PIDS[@]}"; do
    end=$(cpu "$j")
    printf '%.3f ms netdev CPU per tick  %d devices  %s\n' \
        "$(echo "($end - ${start[$j]}) * 1000 / $SECS" | bc -l)" $((2 * N + 1)) "${*:j+1:1}"
done
