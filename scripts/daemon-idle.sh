#!/bin/bash
# Whole-daemon CPU per tick on an idle namespace (BENCHMARKS.md, "The whole daemon"):
#   [INTERVAL=SECONDS_PER_TICK] scripts/daemon-idle.sh NETSIGHT_BINARY [SECONDS] [CONFIG]
# Runs `netsight serve --interval ${INTERVAL:-1}s` in a new namespace holding only
# `lo` (the daemon's /metrics listener is its only TCP socket) and measures its
# CPU over SECONDS with no scrapes, then with one scrape every 5 s (from inside
# the namespace: each scrape leaves a TIME_WAIT socket for 60 s, so the sockets
# collector walks the whole TCP hash on those ticks).
# CPU: `perf stat -e task-clock` on the process when perf is installed (ns
# resolution, every thread), else utime+stime from /proc/PID/stat (10 ms ticks:
# use SECONDS >= 60 at INTERVAL=1).
# Needs root; removes the namespace and stops the daemon it started on exit.
set -u
BIN=$1; SECS=${2:-60}; CFG=${3:-}; IVL=${INTERVAL:-1}
NS=nsidle-daemon-$$
OUT=$(mktemp)
ip netns add $NS; ip -n $NS link set lo up
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; ip netns del $NS; rm -f $OUT' EXIT
ip netns exec $NS $BIN serve --interval ${IVL}s --listen 127.0.0.1:19977 ${CFG:+--config $CFG} >/dev/null 2>&1 &
PID=$!
sleep 8
# Prints the daemon's CPU ms per tick over the next SECS seconds.
measure() {
    local t0 t1 c0 c1 hz
    if command -v perf >/dev/null; then
        t0=$(date +%s.%N)
        perf stat -e task-clock -x, -o $OUT -p $PID -- sleep $SECS >/dev/null 2>&1
        t1=$(date +%s.%N)
        awk -F, -v w="$(echo "$t1-$t0" | bc -l)" -v i=$IVL '/task-clock/{printf "%.3f", $1/w*i}' $OUT
    else
        hz=$(getconf CLK_TCK); c0=$(awk '{print $14+$15}' /proc/$PID/stat); t0=$(date +%s.%N)
        sleep $SECS
        c1=$(awk '{print $14+$15}' /proc/$PID/stat); t1=$(date +%s.%N)
        echo "($c1-$c0)*1000/$hz/($t1-$t0)*$IVL" | bc -l | cut -c1-6
    fi
}
scrapes() {
    local end=$(( $(date +%s) + SECS ))
    while [ $(date +%s) -lt $end ]; do ip netns exec $NS curl -s -o /dev/null http://127.0.0.1:19977/metrics; sleep 5; done
}
echo "no scrapes: $(measure) ms CPU per ${IVL} s tick over $SECS s"
scrapes &
SCRAPER=$!
echo "scraped every 5 s: $(measure) ms CPU per ${IVL} s tick over $SECS s"
wait $SCRAPER
echo "TCP sockets in the namespace: $(ip netns exec $NS ss -tan | tail -n +2 | wc -l)"
