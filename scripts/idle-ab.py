#!/usr/bin/env python3
"""Idle-tick A/B of two builds of the collect bench, interleaved on one host.

    scripts/idle-ab.py BASE_BENCH_BINARY NEW_BENCH_BINARY [ROUNDS] [TICKS]

Each binary is a `target/release/deps/collect-*` built by
`cargo bench --locked --bench collect --no-run` (copy it away before building the
other tree). Runs its `measure` role (the default collector config, as in the
bench's idle scale) in a fresh network namespace holding only `lo`, alternating
the two binaries ROUNDS times (default 6) for TICKS ticks each (default 200), and
prints the mean CPU per tick (whole process, ticks after the first) and per
collector. Needs root. Interleaving matters on a shared host: the load moves
the absolute figures by ±30 % within minutes.
"""
import json
import os
import statistics as st
import subprocess
import sys

NS = "nsidle-ab"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = {"base": sys.argv[1], "new": sys.argv[2]}
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    ticks = sys.argv[4] if len(sys.argv) > 4 else "200"
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        res = {k: {"tick": [], "c": {}} for k in bins}
        load0 = open("/proc/loadavg").read().split()[:3]
        for r in range(rounds):
            order = list(bins.items()) if r % 2 == 0 else list(reversed(bins.items()))
            for k, b in order:
                env = dict(os.environ, NETSIGHT_BENCH_ROLE="measure", NETSIGHT_BENCH_PASS="default",
                           NETSIGHT_BENCH_TICKS=ticks)
                out = subprocess.run(["ip", "netns", "exec", NS, b], env=env, capture_output=True,
                                     text=True, check=True).stdout
                for line in out.splitlines():
                    d = json.loads(line)
                    if d.get("k") != "tick" or d["i"] < 1:
                        continue
                    res[k]["tick"].append(d["cpu"] * 1e3)
                    for n, v in d["c"].items():
                        res[k]["c"].setdefault(n, []).append(v["cpu"] * 1e3)
        load1 = open("/proc/loadavg").read().split()[:3]
    finally:
        subprocess.run(["ip", "netns", "del", NS])
    print(f"load average before {' '.join(load0)}, after {' '.join(load1)}")
    for k, r in res.items():
        t = r["tick"]
        coll = sum(st.mean(v) for v in r["c"].values())
        print(f"{k}: {len(t)} ticks, CPU ms/tick mean {st.mean(t):.3f} median {st.median(t):.3f}; "
              f"collectors {coll:.3f}, scheduler and assembly {st.mean(t) - coll:.3f}")
        print("   " + "  ".join(f"{n} {st.mean(v):.3f}" for n, v in sorted(r["c"].items())))


if __name__ == "__main__":
    main()
