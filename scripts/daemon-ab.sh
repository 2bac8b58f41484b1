#!/bin/bash
# Whole-daemon CPU per idle tick of several builds at once (BENCHMARKS.md):
#   [INTERVAL=S] [PERCOLL=1] scripts/daemon-ab.sh SECONDS NETSIGHT_BINARY...
# Runs `netsight serve --interval ${INTERVAL:-1}s` of every binary at the same
# time, each in a namespace of its own holding only `lo`, and measures each
# process with `perf stat -e task-clock` over the same SECONDS. Running them
# side by side rather than one after the other matters on a shared host: the
# load moves absolute figures by ±30 % within minutes, the ratio much less.
# PERCOLL=1 adds a veth pair to each namespace and scrapes /metrics over it
# from the host at the start and the end (the client closes, so no TIME_WAIT is
# left in the namespace), then prints each collector's CPU per tick from
# netsight_collector_cpu_seconds_total. The veth makes netdev report two
# interfaces instead of one. Each line also gives the daemon's peak and current
# RSS (VmHWM, VmRSS) at the end. The daemons start a fraction of the interval apart
# so that their ticks do not coincide.
# Needs root and perf; removes what it made and stops what it started on exit.
set -u
SECS=$1; shift
IVL=${INTERVAL:-1}
PERCOLL=${PERCOLL:-0}
TMP=$(mktemp -d)
PIDS=(); NSS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
i=0
for BIN in "$@"; do
    NS=nsab-$$-$i; NSS+=("$NS")
    ip netns add "$NS"; ip -n "$NS" link set lo up
    if [ "$PERCOLL" = 1 ]; then
        ip link add "vab$$h$i" type veth peer name "vab$$n$i" netns "$NS"
        ip addr add "10.250.$i.1/30" dev "vab$$h$i"; ip link set "vab$$h$i" up
        ip -n "$NS" addr add "10.250.$i.2/30" dev "vab$$n$i"; ip -n "$NS" link set "vab$$n$i" up
        LISTEN=10.250.$i.2:19977
    else
        LISTEN=127.0.0.1:19977
    fi
    ip netns exec "$NS" "$BIN" serve --interval "${IVL}s" --listen "$LISTEN" >/dev/null 2>&1 &
    PIDS+=($!)
    i=$((i + 1))
    # Spread the daemons' ticks over the interval: ticks that coincide compete
    # for the two cores and the caches, and whichever runs second pays for it.
    sleep "$(echo "$IVL / $#" | bc -l)"
done
sleep 8
scrape() { # index output
    curl -s --max-time 5 "http://10.250.$1.2:19977/metrics" \
        | awk '/^netsight_collector_cpu_seconds_total\{/{match($0, /collector="[^"]*"/); print substr($0, RSTART+11, RLENGTH-12), $2}' > "$2"
}
if [ "$PERCOLL" = 1 ]; then
    for j in "${!PIDS[@]}"; do scrape "$j" "$TMP/c0.$j"; done
    tc0=$(date +%s.%N)
    # A scrape's packets move the namespace's TCP counters, so the tick after it
    # cannot prove the namespace idle and walks the whole TCP hash: let those
    # ticks pass before the whole-process measurement. The per-collector figures
    # span scrape to scrape (tc0 to tc1), so they include those ticks.
    sleep "$(echo "2 * $IVL + 1" | bc -l)"
fi
t0=$(date +%s.%N)
for j in "${!PIDS[@]}"; do
    perf stat -e task-clock -x, -o "$TMP/perf.$j" -p "${PIDS[$j]}" -- sleep "$SECS" >/dev/null 2>&1 &
done
wait $(jobs -p | grep -v -x -F "$(printf '%s\n' "${PIDS[@]}")") 2>/dev/null
t1=$(date +%s.%N)
if [ "$PERCOLL" = 1 ]; then
    for j in "${!PIDS[@]}"; do scrape "$j" "$TMP/c1.$j"; done
    tc1=$(date +%s.%N)
    cwall=$(echo "$tc1 - $tc0" | bc -l)
fi
wall=$(echo "$t1 - $t0" | bc -l)
echo "load $(cut -d' ' -f1-3 /proc/loadavg); ${SECS} s of ${IVL} s ticks"
for j in "${!PIDS[@]}"; do
    ms=$(awk -F, -v w="$wall" -v i="$IVL" '/task-clock/{printf "%.3f", $1/w*i}' "$TMP/perf.$j")
    mem=$(awk '/^VmHWM|^VmRSS/{printf "%s %.1f MiB  ", $1, $2/1024}' "/proc/${PIDS[$j]}/status" 2>/dev/null)
    echo "$ms ms CPU per tick  ${mem}${*:j+1:1}"
    if [ "$PERCOLL" = 1 ]; then
        join "$TMP/c0.$j" "$TMP/c1.$j" | awk -v w="$cwall" -v i="$IVL" \
            '{d=($3-$2)*1000/w*i; s+=d; printf "    %-12s %.3f ms\n", $1, d} END{printf "    %-12s %.3f ms\n", "collectors", s}'
    fi
done
