//! Firewall and conntrack collection cost against the tools an operator would run
//! instead, in one run on one host: `cargo bench --bench firewall`.
//!
//! * nftables: a fresh namespace with one `inet` base chain of N rules
//!   (`ip saddr … tcp dport … counter accept comment "rule i"`), N = 100, 1k, 10k;
//!   one netsight collection (netlink read + emission with the default 500-series
//!   cap) against `nft -j list ruleset`.
//! * conntrack: ~256k entries made by real UDP flows on loopback; one streamed
//!   ctnetlink breakdown against `conntrack -L | wc -l`.
//!
//! CPU is user + system of the measuring thread (`getrusage(RUSAGE_THREAD)`, so the
//! kernel's share of the dumps counts) and of the tool (`bash` `time`).
//! `NETSIGHT_BENCH_ENTRIES` overrides the conntrack entry count;
//! `NETSIGHT_BENCH_RULES` (comma-separated) the rule counts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::UdpSocket;

use common::{run, Netns};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("firewall bench: run with `cargo bench --bench firewall`");
        return;
    }
    ensure_tools();
    println!("netsight firewall bench — CPU per collection, ms (user + system)");
    println!("host: load average {}", load_average());
    println!();
    nftables_table();
    println!();
    conntrack_table();
}

fn ensure_tools() {
    let count = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_count");
    if !count.exists() {
        let _ = run(&["modprobe", "nf_conntrack"]);
    }
    assert!(
        count.exists(),
        "nf_conntrack is not available (modprobe nf_conntrack failed)"
    );
    for tool in [["nft", "--version"], ["conntrack", "--version"]] {
        assert!(
            run(&tool).status.success(),
            "{} is needed: apt-get install -y nftables conntrack",
            tool[0]
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn rule_counts() -> Vec<usize> {
    std::env::var("NETSIGHT_BENCH_RULES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![100, 1_000, 10_000])
}

fn ruleset(n: usize) -> String {
    let mut text =
        String::from("table inet bench {\n  chain input {\n    type filter hook input priority 0; policy accept;\n");
    for i in 0..n {
        text.push_str(&format!(
            "    ip saddr 10.{}.{}.{} tcp dport {} counter accept comment \"rule {i}\"\n",
            i / 65536 % 256,
            i / 256 % 256,
            i % 256,
            1024 + i % 60000
        ));
    }
    text.push_str("  }\n}\n");
    text
}

fn nftables_table() {
    const RUNS: usize = 10;
    println!(
        "{:>7}  {:>12}  {:>10}  {:>16}  {:>14}  {:>7}",
        "rules", "netsight ms", "system ms", "netlink read ms", "nft -j ms", "ratio"
    );
    for n in rule_counts() {
        let ns = Netns::new("nsbfw");
        load_ruleset(&ns, &n.to_string(), &ruleset(n));
        let (ours, sys, read_only) = ns.enter(move || {
            netsight::collect::nftables::bench_collect(500).expect("warm-up");
            let (u0, s0) = thread_cpu();
            for _ in 0..RUNS {
                netsight::collect::nftables::bench_collect(500).expect("collect");
            }
            let (u1, s1) = thread_cpu();
            for _ in 0..RUNS {
                netsight::collect::nftables::read_ruleset().expect("read");
            }
            let (u2, s2) = thread_cpu();
            let per = |x: f64| x / RUNS as f64;
            (per(u1 - u0 + s1 - s0), per(s1 - s0), per(u2 - u1 + s2 - s1))
        });
        let nft = timed_loop(&ns, "nft -j list ruleset >/dev/null", RUNS);
        println!(
            "{n:>7}  {:>12.2}  {:>10.2}  {:>16.2}  {:>14.2}  {:>7}",
            ours * 1e3,
            sys * 1e3,
            read_only * 1e3,
            nft * 1e3,
            format!("1/{:.1}", nft / ours)
        );
    }
    println!("target: netsight <= 1/5 of nft's CPU at 10k rules");
}

fn conntrack_table() {
    const RUNS: usize = 3;
    let target: usize = std::env::var("NETSIGHT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256_000);
    let ns = Netns::new("nsbct");
    // Any rule that uses conntrack makes the kernel track this namespace's flows.
    load_ruleset(
        &ns,
        "ct",
        "table inet ctbench {\n  chain output {\n    type filter hook output priority 0;\n    ct state new counter\n  }\n}\n",
    );
    ns.exec_ok(&["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_udp_timeout=600"]);
    ns.enter(move || fill_udp_flows(target));
    let (ours, entries) = ns.enter(move || {
        let mut entries = 0;
        let (u0, s0) = thread_cpu();
        for _ in 0..RUNS {
            entries = netsight::collect::conntrack::bench_breakdown(10).expect("breakdown");
        }
        let (u1, s1) = thread_cpu();
        ((u1 - u0 + s1 - s0) / RUNS as f64, entries)
    });
    let tool = timed_loop(&ns, "conntrack -L 2>/dev/null | wc -l >/dev/null", RUNS);
    println!(
        "{:>9}  {:>20}  {:>24}  {:>7}",
        "entries", "netsight breakdown ms", "conntrack -L | wc -l ms", "ratio"
    );
    println!(
        "{entries:>9}  {:>20.1}  {:>24.1}  {:>7}",
        ours * 1e3,
        tool * 1e3,
        format!("1/{:.1}", tool / ours)
    );
}

fn load_ruleset(ns: &Netns, tag: &str, text: &str) {
    let file = std::env::temp_dir().join(format!("netsight-bench-{}-{tag}.nft", std::process::id()));
    std::fs::write(&file, text).expect("write ruleset");
    ns.exec_ok(&["nft", "-f", file.to_str().expect("utf8 temp path")]);
    let _ = std::fs::remove_file(&file);
}

/// One new conntrack entry per datagram: a fresh (address, port) destination each.
/// nf_conntrack_max is global (262,144 here): stay below it.
fn fill_udp_flows(n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    for i in 0..n {
        let addr = format!(
            "127.0.{}.{}:{}",
            1 + i / 60_000 / 250,
            1 + (i / 60_000) % 250,
            1024 + i % 60_000
        );
        let _ = s.send_to(b"x", addr.as_str());
    }
}

/// Mean user + system CPU seconds of `script` run `runs` times inside `ns`.
fn timed_loop(ns: &Netns, script: &str, runs: usize) -> f64 {
    let out = ns.exec(&[
        "bash",
        "-c",
        &format!("TIMEFORMAT='%3U %3S'; time (for i in $(seq {runs}); do {script}; done)"),
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    let v: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert!(v.len() >= 2, "cannot read bash time output: {text}");
    (v[v.len() - 2] + v[v.len() - 1]) / runs as f64
}

/// (user, system) CPU seconds of the calling thread.
fn thread_cpu() -> (f64, f64) {
    // SAFETY: all-zero is a valid rusage; getrusage fills it through a valid pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}
