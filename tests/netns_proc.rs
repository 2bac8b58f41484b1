//! netstat, sockstat and sysctl collectors against the live kernel: in a fresh
//! namespace, after TCP/UDP/ICMP traffic on loopback, every field of
//! /proc/net/{snmp,netstat,snmp6,sockstat,sockstat6} read right after netsight (with
//! nothing moving in between) equals what netsight reports, and every sysctl equals
//! `sysctl -n` in the namespace.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::mib::{mib_metric, parse_snmp6_file, parse_table};
use common::{Netns, Snapshot};
use netsight::parse::snake_case;

/// Only the file collectors: the sockets/conntrack collectors open netlink sockets
/// while sockstat reads `sockets: used`.
/// Collectors that open netlink sockets (sockets, conntrack, nftables) are off: the
/// kernel counts netsight's own sockets in sockstat's `sockets: used`, and theirs
/// are open or not at the instant sockstat is read depending on how the scheduler
/// interleaves collectors, which made the expected count race.
/// A collection that opens no netlink socket: those are freed after an RCU grace
/// period, so `sockets: used` read right after the run would still count them.
/// netdev reads /proc/net/dev and sysfs instead of its rtnetlink dump.
const CONFIG: &str = "collectors: {sockets: {enabled: false}, conntrack: {enabled: false}, \
     nftables: {enabled: false}, netdev: {source: procfs}}\n";

const FILES: [&str; 5] = ["snmp", "netstat", "snmp6", "sockstat", "sockstat6"];

fn page_size() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(v > 0, "sysconf(_SC_PAGESIZE) failed");
    v as f64
}

fn collect(ns: &Netns, config: &str) -> Snapshot {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let out = ns.exec(&[
        "timeout", "-k", "5", "60", bin, "collect", "--once", "--format", "json", "--config", config,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "collect in {} failed ({}): {stderr}",
        ns.name,
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let s = Snapshot(serde_json::from_slice(&out.stdout).expect("collect output is JSON"));
    for c in ["netdev", "sockstat", "netstat", "softnet", "sysctl"] {
        assert_eq!(
            s.value("netsight_collector_up", &[("collector", c)]),
            1.0,
            "{c} down: {stderr}"
        );
    }
    s
}

/// The namespace's /proc/net files, read from a thread inside it
/// (`/proc/thread-self/net` follows the thread's namespace; `/proc/self` the process's).
fn read_proc_net(ns: &Netns) -> BTreeMap<&'static str, String> {
    ns.enter(|| {
        FILES
            .iter()
            .map(|f| {
                let p = format!("/proc/thread-self/net/{f}");
                (*f, std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
            })
            .collect()
    })
}

/// Loopback traffic that moves Ip, Tcp, TcpExt, Udp, Icmp, IcmpMsg, IpExt and the
/// IPv6 counters.
fn traffic(ns: &Netns) {
    ns.enter(|| {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            let l = TcpListener::bind(addr).expect("listen");
            let target = l.local_addr().expect("addr");
            for i in 0..5u8 {
                let mut c = TcpStream::connect(target).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                let (mut srv, _) = l.accept().expect("accept");
                srv.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
                let msg = vec![i; 3000];
                c.write_all(&msg).expect("write");
                let mut got = vec![0u8; msg.len()];
                srv.read_exact(&mut got).expect("server read");
                srv.write_all(&got).expect("echo");
                let mut back = vec![0u8; msg.len()];
                c.read_exact(&mut back).expect("client read");
                assert_eq!(back, msg);
                c.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                srv.read_to_end(&mut rest).expect("eof");
                drop(srv);
                c.read_to_end(&mut rest).expect("eof");
            }
            // UDP: delivered datagrams, and some to a closed port (ICMP unreachable).
            let rx = UdpSocket::bind(addr).expect("bind");
            rx.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let tx = UdpSocket::bind(addr).expect("bind");
            let closed = UdpSocket::bind(addr).expect("bind").local_addr().expect("addr");
            for _ in 0..20 {
                tx.send_to(b"hello", rx.local_addr().expect("addr")).expect("send");
                let mut b = [0u8; 16];
                rx.recv_from(&mut b).expect("recv");
            }
            for _ in 0..3 {
                let _ = tx.send_to(b"nobody", closed);
            }
        }
    });
}

// ---- independent parsing, and the collector's documented naming ----

/// `(metric, labels, value)`.
type Expected = (String, Vec<(&'static str, String)>, f64);

/// sockstat lines → expected samples, as the collector maps them.
fn sockstat_metrics(text: &str, page: f64) -> Vec<Expected> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (proto, rest) = line.split_once(':').expect("PROTO:");
        let proto = proto.trim().to_ascii_lowercase();
        let words: Vec<&str> = rest.split_whitespace().collect();
        assert_eq!(words.len() % 2, 0, "{line}");
        for kv in words.chunks(2) {
            let v: f64 = kv[1].parse::<i64>().expect("integer") as f64;
            let p = || vec![("protocol", proto.clone())];
            let m = match (proto.as_str(), kv[0]) {
                ("sockets", "used") => ("netsight_sockstat_sockets_used".to_string(), vec![], v),
                (_, "inuse") => ("netsight_sockstat_inuse".to_string(), p(), v),
                ("tcp", "orphan") => ("netsight_sockstat_tcp_orphans".to_string(), vec![], v),
                ("tcp", "tw") => ("netsight_sockstat_tcp_time_wait".to_string(), vec![], v),
                ("tcp", "alloc") => ("netsight_sockstat_tcp_allocated".to_string(), vec![], v),
                (_, "mem") => ("netsight_sockstat_memory_bytes".to_string(), p(), v * page),
                (_, "memory") => ("netsight_sockstat_memory_bytes".to_string(), p(), v),
                (_, f) => (
                    format!("netsight_sockstat_{}_{}", snake_case(&proto), snake_case(f)),
                    vec![],
                    v,
                ),
            };
            out.push(m);
        }
    }
    out
}

fn family_names(s: &Snapshot, prefix: &str) -> BTreeSet<String> {
    s.0["families"]
        .as_array()
        .expect("families")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Every field of every file equals netsight's value; no netstat family is extra.
/// `own_sockets`: sockets the netsight process itself holds while it reads sockstat
/// (the kernel counts them in `sockets: used`; the file is read after it exited).
fn assert_proc_matches(s: &Snapshot, files: &BTreeMap<&'static str, String>, own_sockets: f64) {
    let mut mib = parse_table(&files["snmp"]);
    mib.extend(parse_table(&files["netstat"]));
    mib.extend(parse_snmp6_file(&files["snmp6"]));
    assert!(mib.len() > 300, "only {} MIB fields", mib.len());
    let mut expected = BTreeSet::new();
    for (g, f, v) in &mib {
        let (name, ty, want) = mib_metric(g, f, *v);
        assert_eq!(s.value(&name, &[]), want, "{g} {f} → {name}");
        assert_eq!(s.family(&name).expect("family")["type"], ty, "{name}");
        assert!(expected.insert(name.clone()), "two fields map to {name}");
    }
    assert_eq!(family_names(s, "netsight_netstat_"), expected);

    let page = page_size();
    let mut sock = sockstat_metrics(&files["sockstat"], page);
    sock.extend(sockstat_metrics(&files["sockstat6"], page));
    let mut per_family: BTreeMap<String, usize> = BTreeMap::new();
    for (name, labels, want) in &sock {
        let m: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let want = if name == "netsight_sockstat_sockets_used" {
            want + own_sockets
        } else {
            *want
        };
        assert_eq!(s.value(name, &m), want, "{name}{m:?}");
        *per_family.entry(name.clone()).or_default() += 1;
    }
    for (name, n) in per_family {
        assert_eq!(s.samples(&name, &[]).len(), n, "{name}: samples beyond the files");
    }
}

#[test]
fn netstat_and_sockstat_equal_proc_files_in_namespace() {
    let ns = Netns::new("nnp");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();

    // Calibration: in an untouched namespace `sockets: used` drops to 0 (once the
    // netlink sockets of `ip -n` are freed, which RCU defers), so what netsight reports
    // there is its own sockets (the async runtime's signal socketpair).
    let empty = Netns::new("nnp");
    let mut calm = String::new();
    for _ in 0..50 {
        calm = read_proc_net(&empty)["sockstat"].clone();
        if calm.starts_with("sockets: used 0\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        calm.starts_with("sockets: used 0\n"),
        "empty namespace never settled: {calm}"
    );
    let own_sockets = collect(&empty, &config).value("netsight_sockstat_sockets_used", &[]);
    assert!(
        (0.0..=4.0).contains(&own_sockets),
        "netsight holds {own_sockets} sockets itself"
    );
    drop(empty);

    traffic(&ns);
    std::thread::sleep(Duration::from_millis(300));

    let mut last = None;
    for _ in 0..20 {
        let before = read_proc_net(&ns);
        let s = collect(&ns, &config);
        let after = read_proc_net(&ns);
        if before == after {
            assert_proc_matches(&s, &after, own_sockets);
            // The namespace's own counters, not the host's: exactly our traffic.
            let tcp = parse_table(&after["snmp"]);
            let active = tcp
                .iter()
                .find(|(g, f, _)| g == "Tcp" && f == "ActiveOpens")
                .expect("ActiveOpens")
                .2;
            assert_eq!(
                active, 10,
                "connections opened in the namespace (Tcp counts IPv4 and IPv6)"
            );
            assert_eq!(s.value("netsight_netstat_tcp_active_opens_total", &[]), 10.0);
            assert_eq!(s.value("netsight_netstat_tcp_passive_opens_total", &[]), 10.0);
            assert!(s.value("netsight_netstat_udp_in_datagrams_total", &[]) >= 20.0);
            assert!(s.value("netsight_netstat_udp_no_ports_total", &[]) >= 3.0);
            assert!(s.value("netsight_netstat_icmp_out_dest_unreachs_total", &[]) >= 3.0);
            assert!(s.value("netsight_netstat_udp6_in_datagrams_total", &[]) >= 20.0);
            assert!(s.value("netsight_netstat_tcp_curr_estab", &[]) == 0.0);
            assert!(s.value("netsight_sockstat_tcp_time_wait", &[]) >= 1.0);
            return;
        }
        // Something moved (host-wide TCP/UDP memory is global): try again.
        let changed: Vec<&str> = FILES.iter().copied().filter(|f| before[f] != after[f]).collect();
        last = Some(changed);
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("/proc/net files never stayed still across a collection; last changed: {last:?}");
}

#[test]
fn sysctl_values_equal_sysctl_n_in_namespace() {
    let ns = Netns::new("nnp");
    // Per-namespace values different from the host's, so reading the host would show.
    ns.exec_ok(&["sysctl", "-qw", "net.core.somaxconn=1234"]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=20001 30002"]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_fin_timeout=33"]);
    ns.exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 87380 7777777"]);
    let host_somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").expect("host somaxconn");
    assert_ne!(host_somaxconn.trim(), "1234", "host already has the test value");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let s = collect(&ns, config.to_str().expect("utf-8 path"));

    let mut compared = 0;
    for p in netsight::collect::sysctl::PARAMS {
        let key = p.path.replace('/', ".");
        let name: &str = &p.desc.name;
        let out = ns.exec(&["sysctl", "-n", &key]);
        if !out.status.success() {
            // Not present in this namespace (e.g. init_net-only or module not loaded).
            assert!(s.family(name).is_none(), "{name} exported but `sysctl -n {key}` fails");
            continue;
        }
        let vals: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|w| w.parse::<i64>().unwrap_or_else(|_| panic!("{key}: {w:?}")) as f64)
            .collect();
        if p.values.is_empty() {
            assert_eq!(vals.len(), 1, "{key}");
            assert_eq!(s.value(name, &[]), vals[0], "{name} vs sysctl -n {key}");
        } else {
            assert_eq!(p.values.len(), vals.len(), "{key}");
            for (label, v) in p.values.iter().zip(&vals) {
                assert_eq!(s.value(name, &[("value", label)]), *v, "{name}{{value={label}}}");
            }
            assert_eq!(s.samples(name, &[]).len(), vals.len(), "{name}");
        }
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} parameters visible in the namespace");
    assert_eq!(s.value("netsight_sysctl_net_core_somaxconn", &[]), 1234.0);
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_ip_local_port_range", &[("value", "low")]),
        20001.0
    );
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_ip_local_port_range", &[("value", "high")]),
        30002.0
    );
    assert_eq!(s.value("netsight_sysctl_net_ipv4_tcp_fin_timeout", &[]), 33.0);
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_tcp_rmem", &[("value", "max")]),
        7777777.0
    );

    // sockstat's limits come from the same tree; tcp_mem/udp_mem exist only in the
    // initial namespace, and are then absent rather than the host's.
    let page = page_size();
    for (key, metric) in [
        ("net.ipv4.tcp_mem", "netsight_sockstat_tcp_mem_limit_bytes"),
        ("net.ipv4.udp_mem", "netsight_sockstat_udp_mem_limit_bytes"),
        ("net.ipv4.tcp_max_orphans", "netsight_sockstat_tcp_max_orphans"),
        ("net.ipv4.tcp_max_tw_buckets", "netsight_sockstat_tcp_max_tw_buckets"),
    ] {
        let out = ns.exec(&["sysctl", "-n", key]);
        if !out.status.success() {
            assert!(
                s.family(metric).is_none(),
                "{metric} exported but `sysctl -n {key}` fails in the namespace"
            );
            continue;
        }
        let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|w| w.parse::<i64>().expect("int") as f64)
            .collect();
        if v.len() == 1 {
            assert_eq!(s.value(metric, &[]), v[0], "{metric}");
            continue;
        }
        for (level, pages) in ["min", "pressure", "max"].iter().zip(v) {
            assert_eq!(
                s.value(metric, &[("level", level)]),
                pages * page,
                "{metric}{{level={level}}}"
            );
        }
    }
}
