#!/bin/bash
# Whole-daemon CPU per tick on an idle namespace (BENCHMARKS.md, "The whole daemon"):
#   [INTERVAL=5] scripts/daemon-idle.sh NETSIGHT_BINARY [SECONDS] [CONFIG]
# Runs `netsight serve --interval ${INTERVAL:-1}s` in a new namespace holding only
# `lo` (the daemon's /metrics listener is its only TCP socket), reads utime+stime
# from /proc/PID/stat over SECONDS with no scrapes, then with one scrape every 5 s
# (from inside the namespace: each scrape leaves a TIME_WAIT socket for 60 s, so
# the sockets collector walks the whole TCP hash on those ticks).
# Needs root; removes the namespace and stops the daemon it started on exit.
set -u
BIN=$1; SECS=${2:-60}; CFG=${3:-}; IVL=${INTERVAL:-1}
NS=nsidle-daemon-$$
ip netns add $NS; ip -n $NS link set lo up
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; ip netns del $NS' EXIT
ip netns exec $NS $BIN serve --interval ${IVL}s --listen 127.0.0.1:19977 ${CFG:+--config $CFG} >/dev/null 2>&1 &
PID=$!
sleep 8
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
hz=$(getconf CLK_TCK)
c0=$(cpu); t0=$(date +%s.%N)
sleep $SECS
c1=$(cpu); t1=$(date +%s.%N)
echo "no scrapes: $(echo "($c1-$c0)*1000/$hz/($t1-$t0)*$IVL" | bc -l | cut -c1-6) ms CPU per ${IVL} s tick over $SECS s"
c0=$(cpu); t0=$(date +%s.%N)
end=$(( $(date +%s) + SECS ))
while [ $(date +%s) -lt $end ]; do ip netns exec $NS curl -s -o /dev/null http://127.0.0.1:19977/metrics; sleep 5; done
c1=$(cpu); t1=$(date +%s.%N)
echo "scraped every 5 s: $(echo "($c1-$c0)*1000/$hz/($t1-$t0)*$IVL" | bc -l | cut -c1-6) ms CPU per ${IVL} s tick over $SECS s"
echo "TCP sockets in the namespace: $(ip netns exec $NS ss -tan | tail -n +2 | wc -l)"
