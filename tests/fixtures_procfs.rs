//! `netsight collect --once` on captured procfs/sysfs trees (tests/fixtures/): exact
//! values from the fixture files, unknown future fields, missing and malformed files.
//!
//! `host1` is a verbatim capture of a real machine; `future-kernel` adds fields and
//! groups no kernel prints yet; `no-conntrack` lacks /proc/sys/net/netfilter;
//! `malformed/*` each break one file. Unreadable-file cases are built in a tempdir.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mib::{mib_metric, parse_snmp6_file, parse_table};
use common::Snapshot;

const LIMIT: Duration = Duration::from_secs(60);

/// Collectors that only read files, so must be up on a complete fixture tree.
const FILE_COLLECTORS: [&str; 5] = ["netdev", "sockstat", "netstat", "softnet", "sysctl"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn proc_fixture(name: &str) -> PathBuf {
    fixtures().join("proc").join(name)
}

fn sys_host1() -> PathBuf {
    fixtures().join("sys/host1")
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    assert!(v > 0, "sysconf(_SC_PAGESIZE) failed");
    v as f64
}

/// Runs a command to completion, feeding `stdin`, killing it and failing the test if it
/// takes longer than `limit`.
fn run_bounded(cmd: &mut Command, stdin: Option<Vec<u8>>, limit: Duration) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out_pipe.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err_pipe.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out_t.join().expect("stdout"),
        stderr: err_t.join().expect("stderr"),
    }
}

struct Run {
    out: Output,
    stderr: String,
}

fn collect(procfs: &Path, sysfs: &Path, format: &str) -> Run {
    let out = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_netsight"))
            .args(["collect", "--once", "--format", format, "--path.procfs"])
            .arg(procfs)
            .arg("--path.sysfs")
            .arg(sysfs)
            .env("NETSIGHT_LOG", "warn"),
        None,
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "collect on {} failed: {stderr}", procfs.display());
    assert!(
        !stderr.contains("panicked"),
        "a collector panicked on {}: {stderr}",
        procfs.display()
    );
    Run { out, stderr }
}

fn collect_json(procfs: &Path, sysfs: &Path) -> (Snapshot, String) {
    let r = collect(procfs, sysfs, "json");
    let snap = Snapshot(serde_json::from_slice(&r.out.stdout).expect("collect output is JSON"));
    (snap, r.stderr)
}

fn up(s: &Snapshot, collector: &str) -> f64 {
    s.value("netsight_collector_up", &[("collector", collector)])
}

fn assert_up(s: &Snapshot, down: &[&str], ctx: &str) {
    for c in FILE_COLLECTORS {
        let want = if down.contains(&c) { 0.0 } else { 1.0 };
        assert_eq!(up(s, c), want, "{ctx}: netsight_collector_up{{collector={c:?}}}");
    }
}

fn family_type<'a>(s: &'a Snapshot, name: &str) -> &'a str {
    s.family(name).unwrap_or_else(|| panic!("family {name} missing"))["type"]
        .as_str()
        .expect("type")
}

fn families_with_prefix(s: &Snapshot, prefix: &str) -> BTreeSet<String> {
    s.0["families"]
        .as_array()
        .expect("families")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- independent parsers of the fixture files ----

/// `/proc/net/dev`: device → its 16 columns.
fn parse_dev(text: &str) -> BTreeMap<String, Vec<u64>> {
    text.lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("dev line");
            let v: Vec<u64> = rest.split_whitespace().map(|w| w.parse().expect("u64")).collect();
            assert_eq!(v.len(), 16, "{l}");
            (name.trim().to_string(), v)
        })
        .collect()
}

/// Every field of snmp, netstat and snmp6 under `procfs` appears with its exact value,
/// and no other netstat family does.
fn assert_every_mib_field(s: &Snapshot, procfs: &Path) -> usize {
    let mut fields = parse_table(&read(&procfs.join("net/snmp")));
    fields.extend(parse_table(&read(&procfs.join("net/netstat"))));
    fields.extend(parse_snmp6_file(&read(&procfs.join("net/snmp6"))));
    let mut expected = BTreeSet::new();
    for (g, f, v) in &fields {
        let (name, ty, want) = mib_metric(g, f, *v);
        assert_eq!(s.value(&name, &[]), want, "{g} {f} → {name}");
        assert_eq!(family_type(s, &name), ty, "{name}");
        assert!(expected.insert(name.clone()), "two fields map to {name}");
    }
    assert_eq!(families_with_prefix(s, "netsight_netstat_"), expected);
    fields.len()
}

fn assert_every_dev_field(s: &Snapshot, procfs: &Path) {
    let devs = parse_dev(&read(&procfs.join("net/dev")));
    const NAMES: [&str; 16] = [
        "netsight_network_receive_bytes_total",
        "netsight_network_receive_packets_total",
        "netsight_network_receive_errors_total",
        "netsight_network_receive_drop_total",
        "netsight_network_receive_fifo_total",
        "netsight_network_receive_frame_total",
        "netsight_network_receive_compressed_total",
        "netsight_network_receive_multicast_total",
        "netsight_network_transmit_bytes_total",
        "netsight_network_transmit_packets_total",
        "netsight_network_transmit_errors_total",
        "netsight_network_transmit_drop_total",
        "netsight_network_transmit_fifo_total",
        "netsight_network_transmit_colls_total",
        "netsight_network_transmit_carrier_total",
        "netsight_network_transmit_compressed_total",
    ];
    for (dev, cols) in &devs {
        for (name, v) in NAMES.iter().zip(cols) {
            assert_eq!(s.value(name, &[("device", dev)]), *v as f64, "{name}{{device={dev}}}");
        }
    }
    for name in NAMES {
        assert_eq!(s.samples(name, &[]).len(), devs.len(), "{name}: one sample per device");
    }
}

// ---- host1 ----

#[test]
fn host1_netdev_exact_values() {
    let (s, _) = collect_json(&proc_fixture("host1"), &sys_host1());
    assert_up(&s, &[], "host1");
    assert_every_dev_field(&s, &proc_fixture("host1"));
    let v = |n: &str, d: &str| s.value(n, &[("device", d)]);
    assert_eq!(v("netsight_network_receive_bytes_total", "eth0"), 72053555.0);
    assert_eq!(v("netsight_network_receive_packets_total", "eth0"), 2502.0);
    assert_eq!(v("netsight_network_transmit_bytes_total", "eth0"), 165922.0);
    assert_eq!(v("netsight_network_transmit_packets_total", "lo"), 29.0);
    assert_eq!(family_type(&s, "netsight_network_receive_bytes_total"), "counter");

    // eth0: up, carrier, speed -1 → no speed series.
    assert_eq!(v("netsight_network_up", "eth0"), 1.0);
    assert_eq!(v("netsight_network_carrier", "eth0"), 1.0);
    assert_eq!(v("netsight_network_carrier_changes_total", "eth0"), 2.0);
    assert_eq!(v("netsight_network_mtu_bytes", "eth0"), 1400.0);
    assert_eq!(v("netsight_network_transmit_queue_length", "eth0"), 1000.0);
    assert_eq!(v("netsight_network_receive_missed_errors_total", "eth0"), 0.0);
    assert_eq!(
        s.value(
            "netsight_network_info",
            &[("device", "eth0"), ("type", "1"), ("operstate", "up")]
        ),
        1.0
    );
    assert!(
        s.samples("netsight_network_speed_bytes_per_second", &[]).is_empty(),
        "speed -1 or unreadable must be absent"
    );
    let states = s.samples("netsight_network_operstate", &[("device", "eth0")]);
    assert_eq!(states.len(), 7);
    for st in states {
        let want = if st["labels"]["operstate"] == "up" { 1.0 } else { 0.0 };
        assert_eq!(st["value"].as_f64(), Some(want), "{st}");
    }

    // ifb0: down, no carrier file.
    assert_eq!(v("netsight_network_up", "ifb0"), 0.0);
    assert_eq!(
        s.value(
            "netsight_network_operstate",
            &[("device", "ifb0"), ("operstate", "down")]
        ),
        1.0
    );
    assert_eq!(s.try_value("netsight_network_carrier", &[("device", "ifb0")]), None);
    assert_eq!(v("netsight_network_transmit_queue_length", "ifb0"), 32.0);
    assert_eq!(v("netsight_network_mtu_bytes", "ifb0"), 1500.0);

    // lo: operstate unknown is not up; ARPHRD_LOOPBACK.
    assert_eq!(v("netsight_network_up", "lo"), 0.0);
    assert_eq!(v("netsight_network_mtu_bytes", "lo"), 65536.0);
    assert_eq!(
        s.value(
            "netsight_network_info",
            &[("device", "lo"), ("type", "772"), ("operstate", "unknown")]
        ),
        1.0
    );

    // ifb1 is in /proc/net/dev but has no sysfs directory (vanished between reads):
    // counters are kept, attributes are absent, operstate is unknown.
    assert_eq!(v("netsight_network_receive_bytes_total", "ifb1"), 0.0);
    assert_eq!(
        s.value(
            "netsight_network_operstate",
            &[("device", "ifb1"), ("operstate", "unknown")]
        ),
        1.0
    );
    assert_eq!(s.try_value("netsight_network_mtu_bytes", &[("device", "ifb1")]), None);
    assert_eq!(
        s.try_value("netsight_network_carrier_changes_total", &[("device", "ifb1")]),
        None
    );
}

#[test]
fn host1_every_mib_field_and_gauges() {
    let (s, _) = collect_json(&proc_fixture("host1"), &sys_host1());
    let n = assert_every_mib_field(&s, &proc_fixture("host1"));
    assert!(n > 300, "only {n} MIB fields in the fixture");
    // Spot checks with literal names and values from the fixture files.
    assert_eq!(s.value("netsight_netstat_tcp_curr_estab", &[]), 0.0);
    assert_eq!(family_type(&s, "netsight_netstat_tcp_curr_estab"), "gauge");
    assert!(s.family("netsight_netstat_tcp_curr_estab_total").is_none());
    assert_eq!(s.value("netsight_netstat_tcp_rto_min_seconds", &[]), 0.2);
    assert_eq!(s.value("netsight_netstat_tcp_rto_max_seconds", &[]), 120.0);
    assert!(s.family("netsight_netstat_tcp_rto_min_total").is_none());
    assert_eq!(s.value("netsight_netstat_tcp_max_conn", &[]), -1.0);
    assert_eq!(s.value("netsight_netstat_tcp_active_opens_total", &[]), 28.0);
    assert_eq!(s.value("netsight_netstat_tcp_in_segs_total", &[]), 2472.0);
    assert_eq!(s.value("netsight_netstat_tcp_out_rsts_total", &[]), 18.0);
    assert_eq!(s.value("netsight_netstat_ip_forwarding", &[]), 2.0);
    assert_eq!(s.value("netsight_netstat_ip_default_ttl", &[]), 64.0);
    assert_eq!(s.value("netsight_netstat_udp_in_datagrams_total", &[]), 55.0);
    assert_eq!(s.value("netsight_netstat_icmpmsg_in_type3_total", &[]), 1.0);
    assert_eq!(s.value("netsight_netstat_tcpext_tw_total", &[]), 10.0);
    assert_eq!(s.value("netsight_netstat_tcpext_listen_overflows_total", &[]), 0.0);
    assert_eq!(s.value("netsight_netstat_tcpext_tcp_pure_acks_total", &[]), 54.0);
    assert_eq!(s.value("netsight_netstat_ipext_in_octets_total", &[]), 72021536.0);
    assert_eq!(s.value("netsight_netstat_ip6_in_receives_total", &[]), 1.0);
    assert_eq!(
        s.family("netsight_netstat_ipext_in_octets_total").expect("family")["unit"],
        "bytes"
    );
}

#[test]
fn host1_sockstat_softnet_sysctl() {
    let (s, _) = collect_json(&proc_fixture("host1"), &sys_host1());
    let page = page_size();
    let g = |n: &str| s.value(n, &[]);
    let p = |n: &str, proto: &str| s.value(n, &[("protocol", proto)]);
    // sockstat: "sockets: used 16", "TCP: inuse 1 orphan 0 tw 0 alloc 1 mem 246".
    assert_eq!(g("netsight_sockstat_sockets_used"), 16.0);
    assert_eq!(p("netsight_sockstat_inuse", "tcp"), 1.0);
    assert_eq!(g("netsight_sockstat_tcp_orphans"), 0.0);
    assert_eq!(g("netsight_sockstat_tcp_time_wait"), 0.0);
    assert_eq!(g("netsight_sockstat_tcp_allocated"), 1.0);
    assert_eq!(p("netsight_sockstat_memory_bytes", "tcp"), 246.0 * page);
    assert_eq!(p("netsight_sockstat_memory_bytes", "udp"), 0.0);
    assert_eq!(p("netsight_sockstat_memory_bytes", "frag"), 0.0);
    for proto in [
        "udp", "udplite", "raw", "frag", "tcp6", "udp6", "udplite6", "raw6", "frag6",
    ] {
        assert_eq!(p("netsight_sockstat_inuse", proto), 0.0, "{proto}");
    }
    assert_eq!(s.samples("netsight_sockstat_inuse", &[]).len(), 10);
    // tcp_mem / udp_mem in pages → bytes.
    for (level, pages) in [("min", 287901.0), ("pressure", 383869.0), ("max", 575802.0)] {
        assert_eq!(
            s.value("netsight_sockstat_tcp_mem_limit_bytes", &[("level", level)]),
            pages * page
        );
    }
    for (level, pages) in [("min", 575802.0), ("pressure", 767738.0), ("max", 1151604.0)] {
        assert_eq!(
            s.value("netsight_sockstat_udp_mem_limit_bytes", &[("level", level)]),
            pages * page
        );
    }
    assert_eq!(g("netsight_sockstat_tcp_max_orphans"), 131072.0);
    assert_eq!(g("netsight_sockstat_tcp_max_tw_buckets"), 131072.0);

    // softnet: 000005e4 and 00000eb0 processed, CPU index from column 13.
    let c = |n: &str, cpu: &str| s.value(n, &[("cpu", cpu)]);
    assert_eq!(c("netsight_softnet_processed_total", "0"), 1508.0);
    assert_eq!(c("netsight_softnet_processed_total", "1"), 3760.0);
    for cpu in ["0", "1"] {
        for n in [
            "netsight_softnet_dropped_total",
            "netsight_softnet_times_squeezed_total",
            "netsight_softnet_received_rps_total",
            "netsight_softnet_flow_limit_count_total",
            "netsight_softnet_backlog_length",
        ] {
            assert_eq!(c(n, cpu), 0.0, "{n}{{cpu={cpu}}}");
        }
    }
    assert_eq!(s.samples("netsight_softnet_processed_total", &[]).len(), 2);
    assert_eq!(family_type(&s, "netsight_softnet_backlog_length"), "gauge");

    // sysctl: every parameter equals its fixture file.
    let root = proc_fixture("host1").join("sys");
    for param in netsight::collect::sysctl::PARAMS {
        let text = read(&root.join(param.path));
        let vals: Vec<f64> = text
            .split_whitespace()
            .map(|w| w.parse::<i64>().expect("int") as f64)
            .collect();
        let name: &str = &param.desc.name;
        if param.values.is_empty() {
            assert_eq!(g(name), vals[0], "{name}");
        } else {
            assert_eq!(param.values.len(), vals.len(), "{name}");
            for (label, v) in param.values.iter().zip(&vals) {
                assert_eq!(s.value(name, &[("value", label)]), *v, "{name}{{value={label}}}");
            }
        }
    }
    assert_eq!(g("netsight_sysctl_net_core_somaxconn"), 4096.0);
    assert_eq!(g("netsight_sysctl_net_ipv4_tcp_tw_reuse"), 2.0);
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_ip_local_port_range", &[("value", "low")]),
        32768.0
    );
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_ip_local_port_range", &[("value", "high")]),
        60999.0
    );
    assert_eq!(
        s.value("netsight_sysctl_net_ipv4_tcp_rmem", &[("value", "max")]),
        33554432.0
    );
    assert_eq!(g("netsight_sysctl_net_netfilter_nf_conntrack_max"), 262144.0);
}

#[test]
fn host1_prometheus_output_passes_promtool() {
    let r = collect(&proc_fixture("host1"), &sys_host1(), "prometheus");
    let text = String::from_utf8(r.out.stdout).expect("UTF-8");
    assert!(
        text.contains("netsight_network_receive_bytes_total{device=\"eth0\"} 72053555\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE netsight_netstat_tcp_curr_estab gauge\n"));
    let promtool = Command::new("promtool").arg("--version").output();
    if let Err(e) = promtool {
        panic!("promtool is required for this test (Debian package `prometheus`) and cannot be run: {e}");
    }
    for (what, body) in [
        ("host1", text),
        ("future-kernel", {
            let r = collect(&proc_fixture("future-kernel"), &sys_host1(), "prometheus");
            String::from_utf8(r.out.stdout).expect("UTF-8")
        }),
    ] {
        let out = run_bounded(
            Command::new("promtool").args(["check", "metrics"]),
            Some(body.into_bytes()),
            LIMIT,
        );
        assert!(
            out.status.success(),
            "promtool check metrics failed on the {what} exposition:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---- variants ----

#[test]
fn future_kernel_unknown_fields_are_exported() {
    let root = proc_fixture("future-kernel");
    let (s, _) = collect_json(&root, &sys_host1());
    assert_up(&s, &[], "future-kernel");
    // /proc/net/dev: eth0 has a distinct value in every column (and a byte count
    // beyond 32 bits), so a column mix-up cannot hide behind zeros.
    assert_every_dev_field(&s, &root);
    for (name, want) in [
        ("netsight_network_receive_bytes_total", 12345678901234.0),
        ("netsight_network_receive_packets_total", 2502.0),
        ("netsight_network_receive_errors_total", 11.0),
        ("netsight_network_receive_drop_total", 12.0),
        ("netsight_network_receive_fifo_total", 13.0),
        ("netsight_network_receive_frame_total", 14.0),
        ("netsight_network_receive_compressed_total", 15.0),
        ("netsight_network_receive_multicast_total", 16.0),
        ("netsight_network_transmit_bytes_total", 165922.0),
        ("netsight_network_transmit_packets_total", 1590.0),
        ("netsight_network_transmit_errors_total", 21.0),
        ("netsight_network_transmit_drop_total", 22.0),
        ("netsight_network_transmit_fifo_total", 23.0),
        ("netsight_network_transmit_colls_total", 24.0),
        ("netsight_network_transmit_carrier_total", 25.0),
        ("netsight_network_transmit_compressed_total", 26.0),
    ] {
        assert_eq!(s.value(name, &[("device", "eth0")]), want, "{name}");
    }
    // Every field, known or not, with its value; nothing else.
    assert_every_mib_field(&s, &root);
    let g = |n: &str| s.value(n, &[]);
    assert_eq!(g("netsight_netstat_tcpext_tcp_future_thing_total"), 4242.0);
    assert_eq!(
        family_type(&s, "netsight_netstat_tcpext_tcp_future_thing_total"),
        "counter"
    );
    assert_eq!(g("netsight_netstat_fooext_bar_baz_total"), 17.0);
    assert_eq!(g("netsight_netstat_fooext_qux_count_total"), 3.0);
    assert_eq!(g("netsight_netstat_udp_future_udp_drops_total"), 99.0);
    assert_eq!(g("netsight_netstat_sctp_in_ctrl_chunks_total"), 5.0);
    assert_eq!(g("netsight_netstat_sctp_out_ctrl_chunks_total"), 123.0);
    assert_eq!(g("netsight_netstat_ip6_future_drops_total"), 31.0);
    assert_eq!(g("netsight_netstat_foo6_bar_events_total"), 8.0);
    // Known fields next to them are unaffected.
    assert_eq!(g("netsight_netstat_tcpext_tw_total"), 10.0);
    assert_eq!(g("netsight_netstat_udp_in_datagrams_total"), 55.0);

    // sockstat: unknown field and protocol as dynamic gauges; UDP mem in pages, FRAG
    // memory already in bytes.
    assert_eq!(g("netsight_sockstat_tcp_future"), 3.0);
    assert_eq!(family_type(&s, "netsight_sockstat_tcp_future"), "gauge");
    assert_eq!(g("netsight_sockstat_sctp_assocs"), 4.0);
    assert_eq!(s.value("netsight_sockstat_inuse", &[("protocol", "sctp")]), 2.0);
    assert_eq!(s.value("netsight_sockstat_inuse", &[("protocol", "udp")]), 3.0);
    assert_eq!(
        s.value("netsight_sockstat_memory_bytes", &[("protocol", "udp")]),
        5.0 * page_size()
    );
    assert_eq!(
        s.value("netsight_sockstat_memory_bytes", &[("protocol", "frag")]),
        1234.0
    );
    assert_eq!(s.value("netsight_sockstat_inuse", &[("protocol", "frag")]), 1.0);

    // softnet: a 16th column is tolerated; CPU labels come from column 13 (CPU 2 is
    // offline, so the third line is CPU 3), not from the line number.
    let c = |n: &str, cpu: &str| s.value(n, &[("cpu", cpu)]);
    assert_eq!(c("netsight_softnet_processed_total", "0"), 0xa000 as f64);
    assert_eq!(c("netsight_softnet_dropped_total", "0"), 2.0);
    assert_eq!(c("netsight_softnet_times_squeezed_total", "0"), 3.0);
    assert_eq!(c("netsight_softnet_received_rps_total", "0"), 4.0);
    assert_eq!(c("netsight_softnet_flow_limit_count_total", "0"), 5.0);
    assert_eq!(c("netsight_softnet_backlog_length", "0"), 6.0);
    assert_eq!(c("netsight_softnet_processed_total", "1"), 0xb000 as f64);
    assert_eq!(c("netsight_softnet_times_squeezed_total", "1"), 1.0);
    assert_eq!(c("netsight_softnet_processed_total", "3"), 0xc000 as f64);
    assert_eq!(c("netsight_softnet_dropped_total", "3"), 7.0);
    assert_eq!(c("netsight_softnet_received_rps_total", "3"), 16.0);
    assert_eq!(c("netsight_softnet_backlog_length", "3"), 2.0);
    assert!(s
        .samples("netsight_softnet_processed_total", &[("cpu", "2")])
        .is_empty());
    assert_eq!(s.samples("netsight_softnet_processed_total", &[]).len(), 3);
}

#[test]
fn no_conntrack_host() {
    let root = proc_fixture("no-conntrack");
    assert!(!root.join("sys/net/netfilter").exists());
    let (s, _) = collect_json(&root, &sys_host1());
    assert_up(&s, &[], "no-conntrack");
    assert_eq!(up(&s, "conntrack"), 0.0);
    assert!(s.value("netsight_collector_errors_total", &[("collector", "conntrack")]) >= 1.0);
    // sysctl skips the absent netfilter parameters and keeps the others.
    for name in families_with_prefix(&s, "netsight_sysctl_") {
        assert!(
            !name.contains("netfilter"),
            "{name} exported without /proc/sys/net/netfilter"
        );
    }
    assert_eq!(s.value("netsight_sysctl_net_core_somaxconn", &[]), 4096.0);
    assert_eq!(
        s.value("netsight_network_receive_bytes_total", &[("device", "eth0")]),
        72053555.0
    );
}

/// The broken collector is down with a parse error naming the file, exports nothing,
/// and the others keep reporting.
fn assert_broken(root: &Path, collector: &str, prefix: &str, file: &str, reason: &str) {
    let (s, stderr) = collect_json(root, &sys_host1());
    let ctx = root.display().to_string();
    assert_up(&s, &[collector], &ctx);
    assert!(s.value("netsight_collector_errors_total", &[("collector", collector)]) >= 1.0);
    assert!(
        families_with_prefix(&s, prefix).is_empty(),
        "{ctx}: {collector} leaked {:?}",
        families_with_prefix(&s, prefix)
    );
    let line = stderr
        .lines()
        .find(|l| l.contains(&format!("collector=\"{collector}\"")))
        .unwrap_or_else(|| panic!("{ctx}: no error logged for {collector}: {stderr}"));
    assert!(line.contains(file), "{ctx}: error does not name {file}: {line}");
    assert!(line.contains(reason), "{ctx}: expected {reason:?} in: {line}");
    // The others still export data.
    for (c, fam) in [
        ("netdev", "netsight_network_receive_bytes_total"),
        ("sockstat", "netsight_sockstat_sockets_used"),
        ("netstat", "netsight_netstat_tcp_curr_estab"),
        ("softnet", "netsight_softnet_processed_total"),
        ("sysctl", "netsight_sysctl_net_core_somaxconn"),
    ] {
        if c != collector {
            assert!(s.family(fam).is_some(), "{ctx}: {c} stopped reporting ({fam} missing)");
        }
    }
}

#[test]
fn malformed_fixtures_fail_only_their_collector() {
    let m = |n: &str| proc_fixture(&format!("malformed/{n}"));
    assert_broken(
        &m("truncated-snmp"),
        "netstat",
        "netsight_netstat_",
        "net/snmp",
        "header without a value line",
    );
    assert_broken(
        &m("garbage-softnet"),
        "softnet",
        "netsight_softnet_",
        "net/softnet_stat",
        "not hexadecimal",
    );
    assert_broken(
        &m("empty-sockstat"),
        "sockstat",
        "netsight_sockstat_",
        "net/sockstat",
        "empty",
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

enum Break {
    /// Replaced by a directory: read() fails with EISDIR, even for root.
    Dir,
    /// Replaced by a symlink to nothing: ENOENT on read, but the name is there.
    Dangling,
    Contents(&'static [u8]),
}

fn broken_copy(rel: &str, how: Break) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(&proc_fixture("host1"), tmp.path());
    let p = tmp.path().join(rel);
    assert!(p.exists(), "{rel} not in host1");
    match how {
        Break::Dir => {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("rm");
            } else {
                std::fs::remove_file(&p).expect("rm");
            }
            std::fs::create_dir(&p).expect("mkdir");
            assert!(std::fs::read(&p).is_err(), "{rel}: a directory must be unreadable");
        }
        Break::Dangling => {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).expect("rm");
            } else {
                std::fs::remove_file(&p).expect("rm");
            }
            std::os::unix::fs::symlink(tmp.path().join("does-not-exist"), &p).expect("symlink");
            assert!(
                std::fs::read(&p).is_err(),
                "{rel}: a dangling symlink must be unreadable"
            );
        }
        Break::Contents(b) => std::fs::write(&p, b).expect("write"),
    }
    tmp
}

#[test]
fn unreadable_proc_files_fail_only_their_collector() {
    let cases: [(&str, Break, &str, &str, &str); 9] = [
        (
            "net/softnet_stat",
            Break::Dir,
            "softnet",
            "netsight_softnet_",
            "Is a directory",
        ),
        (
            "net/snmp",
            Break::Dangling,
            "netstat",
            "netsight_netstat_",
            "No such file",
        ),
        // snmp was read fine: its samples must not leak when netstat then fails.
        (
            "net/netstat",
            Break::Dir,
            "netstat",
            "netsight_netstat_",
            "Is a directory",
        ),
        (
            "net/snmp6",
            Break::Dir,
            "netstat",
            "netsight_netstat_",
            "Is a directory",
        ),
        (
            "net/sockstat",
            Break::Dangling,
            "sockstat",
            "netsight_sockstat_",
            "No such file",
        ),
        ("net/dev", Break::Dir, "netdev", "netsight_network_", "Is a directory"),
        (
            "net/snmp",
            Break::Contents(b""),
            "netstat",
            "netsight_netstat_",
            "empty",
        ),
        (
            "net/softnet_stat",
            Break::Contents(b""),
            "softnet",
            "netsight_softnet_",
            "empty",
        ),
        (
            "net/softnet_stat",
            Break::Contents(b"0000\xff\xfe 00 00\n"),
            "softnet",
            "netsight_softnet_",
            "UTF-8",
        ),
    ];
    for (rel, how, collector, prefix, reason) in cases {
        let tmp = broken_copy(rel, how);
        assert_broken(tmp.path(), collector, prefix, rel, reason);
    }
}

#[test]
fn unreadable_sysctl_tree_fails_sysctl_only() {
    let tmp = broken_copy("sys/net", Break::Dangling);
    let (s, stderr) = collect_json(tmp.path(), &sys_host1());
    assert_up(&s, &["sysctl"], "sys/net dangling");
    assert!(families_with_prefix(&s, "netsight_sysctl_").is_empty());
    assert!(stderr.contains("collector=\"sysctl\""), "{stderr}");
    // sockstat's limits are best effort: the collector stays up without them.
    assert_eq!(s.value("netsight_sockstat_sockets_used", &[]), 16.0);
    assert!(s.family("netsight_sockstat_tcp_mem_limit_bytes").is_none());
    assert!(s.family("netsight_sockstat_tcp_max_orphans").is_none());

    // A single unreadable parameter is skipped, not fatal.
    let tmp = broken_copy("sys/net/core/somaxconn", Break::Dir);
    let (s, _) = collect_json(tmp.path(), &sys_host1());
    assert_up(&s, &[], "somaxconn unreadable");
    assert!(s.family("netsight_sysctl_net_core_somaxconn").is_none());
    assert_eq!(s.value("netsight_sysctl_net_core_netdev_budget", &[]), 300.0);
}

#[test]
fn sysfs_attributes_are_best_effort_and_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(&sys_host1(), tmp.path());
    let eth0 = tmp.path().join("class/net/eth0");
    std::fs::write(eth0.join("speed"), "10000\n").expect("write");
    std::fs::write(eth0.join("statistics/rx_missed_errors"), "7\n").expect("write");
    std::fs::remove_file(eth0.join("mtu")).expect("rm");
    std::fs::create_dir(eth0.join("mtu")).expect("mkdir");
    std::fs::write(eth0.join("carrier"), "garbage\n").expect("write");
    let (s, _) = collect_json(&proc_fixture("host1"), tmp.path());
    assert_up(&s, &[], "edited sysfs");
    let v = |n: &str| s.try_value(n, &[("device", "eth0")]);
    assert_eq!(v("netsight_network_speed_bytes_per_second"), Some(1.25e9));
    assert_eq!(v("netsight_network_receive_missed_errors_total"), Some(7.0));
    assert_eq!(v("netsight_network_mtu_bytes"), None);
    assert_eq!(v("netsight_network_carrier"), None);
    assert_eq!(v("netsight_network_transmit_queue_length"), Some(1000.0));
    assert_eq!(v("netsight_network_receive_bytes_total"), Some(72053555.0));

    // No sysfs at all: counters still exported, every device unknown.
    let empty = tempfile::tempdir().expect("tempdir");
    let (s, _) = collect_json(&proc_fixture("host1"), empty.path());
    assert_up(&s, &[], "empty sysfs");
    assert_eq!(
        s.value("netsight_network_receive_bytes_total", &[("device", "eth0")]),
        72053555.0
    );
    assert_eq!(
        s.samples("netsight_network_operstate", &[("operstate", "unknown")])
            .len(),
        4
    );
    for st in s.samples("netsight_network_operstate", &[("operstate", "unknown")]) {
        assert_eq!(st["value"].as_f64(), Some(1.0), "{st}");
    }
    assert!(s.family("netsight_network_mtu_bytes").is_none());
}
