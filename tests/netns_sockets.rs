//! The `sockets` collector against the real kernel, in a private network namespace:
//! sockets in every interesting state are created and held, then
//! `netsight collect --once --format json` run inside the namespace is compared
//! with `ss -tanp` / `ss -uanp` read around it in the same quiet moment.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{Netns, Snapshot};

/// Re-`listen()`s with a chosen backlog (Linux updates it on a listening socket).
fn listener(addr: &str, backlog: i32) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    // SAFETY: listen on a socket fd we own.
    let rc = unsafe { libc::listen(l.as_raw_fd(), backlog) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    l
}

/// Waits (up to 5 s) until this thread's namespace counts no `proto` socket
/// (`TCP` or `UDP`, both families) in `/proc/net/sockstat{,6}`. Dropping a socket
/// does not always release it at once: a test running in parallel that forks a
/// child holds a copy of every fd until the child execs.
fn wait_released(proto: &str) {
    let inuse = |file: &str, tag: &str| -> i64 {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while inuse("sockstat", &format!("{proto}: ")) + inuse("sockstat6", &format!("{proto}6: ")) > 0 {
        assert!(
            Instant::now() < deadline,
            "{proto} sockets still counted 5 s after their close"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn set_defer_accept(l: &TcpListener, secs: i32) {
    set_tcp_option(l.as_raw_fd(), libc::TCP_DEFER_ACCEPT, secs, "TCP_DEFER_ACCEPT");
}

/// Sets an `IPPROTO_TCP` int option on `fd`, failing the test on an error.
fn set_tcp_option(fd: std::os::fd::RawFd, option: libc::c_int, value: libc::c_int, name: &str) {
    // SAFETY: setsockopt reads an int we own, with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{name}: {}", std::io::Error::last_os_error());
}

fn read_eof(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) => panic!("waiting for EOF: {e}"),
        }
    }
}

/// Creates, inside the namespace, sockets in every state the test checks and
/// returns their fds (dropping them would change the states).
fn build_scenario() -> Vec<OwnedFd> {
    let mut held: Vec<OwnedFd> = Vec::new();

    // 7100/IPv4, backlog 16: one served connection with traffic, two waiting in the
    // accept queue, one TIME_WAIT on each side, one CLOSE_WAIT.
    let l1 = listener("127.0.0.1:7100", 16);
    let mut c1 = TcpStream::connect("127.0.0.1:7100").expect("c1");
    let (mut s1, _) = l1.accept().expect("accept c1");
    c1.write_all(&[1u8; 3000]).expect("c1 write");
    let mut got = [0u8; 3000];
    s1.read_exact(&mut got).expect("s1 read");
    s1.write_all(&[2u8; 700]).expect("s1 write");
    let mut got = [0u8; 700];
    c1.read_exact(&mut got).expect("c1 read");

    // Client closes first: the client side ends in TIME_WAIT (ephemeral port).
    let c3 = TcpStream::connect("127.0.0.1:7100").expect("c3");
    let (mut s3, _) = l1.accept().expect("accept c3");
    drop(c3);
    read_eof(&mut s3);
    drop(s3);
    // Server closes first: the server side ends in TIME_WAIT on port 7100.
    let mut c4 = TcpStream::connect("127.0.0.1:7100").expect("c4");
    let (s4, _) = l1.accept().expect("accept c4");
    drop(s4);
    read_eof(&mut c4);
    drop(c4);
    // The client closes, the server never does: CLOSE_WAIT on 7100 (and an orphaned
    // FIN_WAIT2 on the client's port).
    let c5 = TcpStream::connect("127.0.0.1:7100").expect("c5");
    let (s5, _) = l1.accept().expect("accept c5");
    drop(c5);
    // Connected but never accepted: accept queue of 2.
    let c2 = TcpStream::connect("127.0.0.1:7100").expect("c2");
    let c2b = TcpStream::connect("127.0.0.1:7100").expect("c2b");

    // 7101/IPv4 with TCP_DEFER_ACCEPT: the server drops the bare final ACK, so the
    // connection stays a SYN_RECV request socket while the client is ESTABLISHED.
    let l2 = listener("127.0.0.1:7101", 4);
    set_defer_accept(&l2, 30);
    let c6 = TcpStream::connect("127.0.0.1:7101").expect("c6");

    // 7102/IPv6 (::1), backlog 8: one served connection, one waiting.
    let l3 = listener("[::1]:7102", 8);
    let mut c7 = TcpStream::connect("[::1]:7102").expect("c7");
    let (mut s7, _) = l3.accept().expect("accept c7");
    c7.write_all(b"hello").expect("c7 write");
    let mut got = [0u8; 5];
    s7.read_exact(&mut got).expect("s7 read");
    let c8 = TcpStream::connect("[::1]:7102").expect("c8");

    // UDP: unconnected and connected, both families.
    let u1 = UdpSocket::bind("127.0.0.1:7200").expect("u1");
    let u2 = UdpSocket::bind("[::1]:7201").expect("u2");
    let u3 = UdpSocket::bind("127.0.0.1:0").expect("u3");
    u3.connect("127.0.0.1:7200").expect("u3 connect");
    let u4 = UdpSocket::bind("[::1]:0").expect("u4");
    u4.connect("[::1]:7201").expect("u4 connect");

    for s in [c1, s1, s5, c2, c2b, c6, c7, s7, c8] {
        held.push(s.into());
    }
    for l in [l1, l2, l3] {
        held.push(l.into());
    }
    for u in [u1, u2, u3, u4] {
        held.push(u.into());
    }
    held
}

/// One `ss -tanp`/`ss -uanp` row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    family: &'static str,
    state: String,
    recv_q: u64,
    send_q: u64,
    address: String,
    port: u16,
    /// The row lists this test process among the socket's users.
    ours: bool,
    /// The row lists no process at all.
    unowned: bool,
}

fn tcp_state(ss: &str) -> String {
    match ss {
        "ESTAB" => "established",
        "SYN-SENT" => "syn_sent",
        "SYN-RECV" => "syn_recv",
        "FIN-WAIT-1" => "fin_wait1",
        "FIN-WAIT-2" => "fin_wait2",
        "TIME-WAIT" => "time_wait",
        "UNCONN" => "close",
        "CLOSE-WAIT" => "close_wait",
        "LAST-ACK" => "last_ack",
        "LISTEN" => "listen",
        "CLOSING" => "closing",
        other => panic!("unexpected ss state {other}"),
    }
    .to_string()
}

fn udp_state(ss: &str) -> String {
    match ss {
        "UNCONN" => "unconnected",
        "ESTAB" => "established",
        other => panic!("unexpected ss UDP state {other}"),
    }
    .to_string()
}

fn parse_ss(text: &str, state: fn(&str) -> String) -> Vec<Row> {
    let pid = format!("pid={},", std::process::id());
    let mut rows: Vec<Row> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 5, "ss line: {line}");
            let local = f[3];
            let (addr, port) = local.rsplit_once(':').unwrap_or_else(|| panic!("{local}"));
            let family = if addr.starts_with('[') {
                "ipv6"
            } else if addr.contains('.') {
                "ipv4"
            } else {
                panic!("cannot tell the family of {local}")
            };
            let users = f.get(5..).map(|r| r.join(" ")).unwrap_or_default();
            Row {
                family,
                state: state(f[0]),
                recv_q: f[1].parse().expect("Recv-Q"),
                send_q: f[2].parse().expect("Send-Q"),
                address: addr.trim_start_matches('[').trim_end_matches(']').to_string(),
                port: port.parse().expect("port"),
                ours: users.contains(&pid),
                unowned: !users.contains("users:"),
            }
        })
        .collect();
    rows.sort();
    rows
}

const TCP_STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

fn count<'a>(rows: impl IntoIterator<Item = &'a Row>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(r.state.clone()).or_insert(0) += 1;
    }
    m
}

fn comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim_end()
        .to_string()
}

/// Reads ss, netsight, ss until both ss reads agree (nothing moved in between).
fn quiet_read(ns: &Netns) -> (Vec<Row>, Vec<Row>, Snapshot) {
    for _ in 0..5 {
        let tcp1 = parse_ss(&ns.exec_ok(&["ss", "-tanp"]), tcp_state);
        let udp1 = parse_ss(&ns.exec_ok(&["ss", "-uanp"]), udp_state);
        let snap = ns.collect_json(&[]);
        let tcp2 = parse_ss(&ns.exec_ok(&["ss", "-tanp"]), tcp_state);
        let udp2 = parse_ss(&ns.exec_ok(&["ss", "-uanp"]), udp_state);
        if tcp1 == tcp2 && udp1 == udp2 {
            return (tcp1, udp1, snap);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the namespace never stayed quiet across one collection");
}

fn value_or_zero(snap: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    snap.try_value(name, labels).unwrap_or(0.0)
}

#[test]
fn sockets_match_ss_in_a_quiet_namespace() {
    let started = Instant::now();
    let ns = Netns::new("nsk");
    let _held = ns.enter(build_scenario);

    // Let the closing handshakes settle (loopback: milliseconds).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = count(&parse_ss(&ns.exec_ok(&["ss", "-tanp"]), tcp_state));
        let settled = c.get("time_wait") == Some(&2)
            && c.get("close_wait") == Some(&1)
            && c.get("syn_recv") == Some(&1)
            && !c.contains_key("fin_wait1")
            && !c.contains_key("last_ack");
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "states never settled: {c:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (tcp, udp, snap) = quiet_read(&ns);
    let me = comm();

    // The scenario really is there (so equality below is not 0 == 0).
    let all = count(&tcp);
    assert_eq!(all.get("listen"), Some(&3), "{tcp:#?}");
    assert_eq!(all.get("time_wait"), Some(&2));
    assert_eq!(all.get("close_wait"), Some(&1));
    assert_eq!(all.get("syn_recv"), Some(&1));
    assert_eq!(all.get("fin_wait2"), Some(&1));
    assert!(all.get("established").is_some_and(|n| *n >= 10), "{all:?}");
    assert!(tcp.iter().any(|r| r.family == "ipv6"));

    // 1. Per family and state: exactly ss's counts.
    for family in ["ipv4", "ipv6"] {
        let c = count(tcp.iter().filter(|r| r.family == family));
        for st in TCP_STATES {
            let want = c.get(st).copied().unwrap_or(0) as f64;
            let got = snap.value("netsight_tcp_connections", &[("family", family), ("state", st)]);
            assert_eq!(got, want, "netsight_tcp_connections{{family={family},state={st}}}");
        }
        let c = count(udp.iter().filter(|r| r.family == family));
        assert_eq!(c.values().sum::<u64>(), 2, "{family} UDP scenario: {udp:#?}");
        for st in ["unconnected", "established"] {
            let want = c.get(st).copied().unwrap_or(0) as f64;
            let got = snap.value("netsight_udp_sockets", &[("family", family), ("state", st)]);
            assert_eq!(got, want, "netsight_udp_sockets{{family={family},state={st}}}");
        }
    }

    // 2. Per listening port and state: exactly ss's counts, and nothing else.
    let listen_ports: BTreeSet<u16> = tcp.iter().filter(|r| r.state == "listen").map(|r| r.port).collect();
    assert_eq!(listen_ports, BTreeSet::from([7100, 7101, 7102]));
    for &port in &listen_ports {
        let p = port.to_string();
        let c = count(tcp.iter().filter(|r| r.port == port));
        for st in TCP_STATES {
            let want = c.get(st).copied().unwrap_or(0) as f64;
            let got = value_or_zero(&snap, "netsight_tcp_port_connections", &[("port", &p), ("state", st)]);
            assert_eq!(got, want, "netsight_tcp_port_connections{{port={p},state={st}}}");
        }
    }
    let ports: BTreeSet<String> = snap
        .samples("netsight_tcp_port_connections", &[])
        .iter()
        .map(|s| s["labels"]["port"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        ports,
        listen_ports.iter().map(u16::to_string).collect(),
        "only listening ports"
    );
    let p7100 = count(tcp.iter().filter(|r| r.port == 7100));
    assert_eq!(p7100.get("time_wait"), Some(&1), "server-side TIME_WAIT on 7100");
    assert_eq!(p7100.get("close_wait"), Some(&1));
    assert_eq!(count(tcp.iter().filter(|r| r.port == 7101)).get("syn_recv"), Some(&1));

    // 3. Listener queues: Recv-Q and Send-Q of every LISTEN row, attributed to us.
    let listeners: Vec<&Row> = tcp.iter().filter(|r| r.state == "listen").collect();
    for r in &listeners {
        let p = r.port.to_string();
        let labels = [
            ("family", r.family),
            ("address", r.address.as_str()),
            ("port", p.as_str()),
            ("process", me.as_str()),
        ];
        assert_eq!(
            snap.value("netsight_tcp_listen_queue_length", &labels),
            r.recv_q as f64,
            "{r:?}"
        );
        assert_eq!(
            snap.value("netsight_tcp_listen_backlog", &labels),
            r.send_q as f64,
            "{r:?}"
        );
    }
    let by_port = |port: u16| listeners.iter().find(|r| r.port == port).map(|r| (r.recv_q, r.send_q));
    assert_eq!(by_port(7100), Some((2, 16)), "two connections wait; backlog 16");
    assert_eq!(by_port(7101), Some((0, 4)));
    assert_eq!(by_port(7102), Some((1, 8)));
    assert_eq!(snap.samples("netsight_tcp_listen_backlog", &[]).len(), 3);

    // 4. Processes: our sockets under our comm, kernel-owned ones under "".
    for st in TCP_STATES {
        let ours = tcp.iter().filter(|r| r.ours && r.state == st).count() as f64;
        let got = value_or_zero(
            &snap,
            "netsight_tcp_process_connections",
            &[("process", &me), ("state", st)],
        );
        assert_eq!(got, ours, "netsight_tcp_process_connections{{process={me},state={st}}}");
        let unowned = tcp.iter().filter(|r| r.unowned && r.state == st).count() as f64;
        let got = value_or_zero(
            &snap,
            "netsight_tcp_process_connections",
            &[("process", ""), ("state", st)],
        );
        assert_eq!(
            got, unowned,
            "netsight_tcp_process_connections{{process=\"\",state={st}}}"
        );
    }
    assert!(
        tcp.iter().all(|r| r.ours || r.unowned),
        "only this process owns sockets here"
    );
    assert_eq!(
        snap.samples("netsight_tcp_process_connections", &[("process", "unknown")])
            .len(),
        0
    );

    // 5. RTT and volume on 7100: every ESTABLISHED socket there is in the histogram.
    let est_7100 = p7100.get("established").copied().unwrap_or(0);
    assert_eq!(est_7100, 3, "s1 plus two waiting in the accept queue");
    let h = &snap.samples("netsight_tcp_rtt_seconds", &[("port", "7100")])[0]["value"];
    assert_eq!(h["count"].as_u64(), Some(est_7100), "{h}");
    assert!(h["sum"].as_f64().is_some_and(|s| s > 0.0 && s < 1.0), "{h}");
    // The per-port mean RTT is the mean of the RTTs `ss -ti` prints (ms, 3 decimals);
    // idle connections keep their smoothed RTT, so the two reads agree.
    let ss_rtts: Vec<f64> = ns
        .exec_ok(&["ss", "-tinH", "state", "established", "( sport = :7100 )"])
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("rtt:"))
        .filter_map(|r| r.split('/').next()?.parse::<f64>().ok())
        .collect();
    assert_eq!(ss_rtts.len() as u64, est_7100, "ss -ti rtt fields");
    let ss_mean = ss_rtts.iter().sum::<f64>() / ss_rtts.len() as f64 / 1e3;
    let mean = snap.value("netsight_tcp_port_rtt_mean_seconds", &[("port", "7100")]);
    assert!((mean - ss_mean).abs() <= 1e-6, "mean RTT {mean} s vs ss {ss_mean} s");
    assert!((mean - h["sum"].as_f64().unwrap_or(0.0) / est_7100 as f64).abs() < 1e-12);
    let buckets = h["buckets"].as_array().expect("buckets");
    assert!(buckets.iter().all(|b| b[1].as_u64() <= Some(est_7100)));
    assert!(snap.value("netsight_tcp_port_received_bytes", &[("port", "7100")]) >= 3000.0);
    assert!(snap.value("netsight_tcp_port_sent_bytes", &[("port", "7100")]) >= 700.0);
    // Every ESTABLISHED socket reports its congestion-control algorithm.
    let cc: f64 = snap
        .samples("netsight_tcp_congestion_control_connections", &[])
        .iter()
        .filter_map(|s| s["value"].as_f64())
        .sum();
    assert_eq!(cc, all.get("established").copied().unwrap_or(0) as f64);
    assert_eq!(snap.value("netsight_collector_up", &[("collector", "sockets")]), 1.0);

    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// Regenerates `tests/fixtures/netlink/*.bin` (run by hand:
/// `cargo test --test netns_sockets -- --ignored capture_netlink_fixtures`).
/// The parser unit tests in `src/netlink/sock_diag.rs` describe what they hold.
#[test]
#[ignore = "rewrites the sock_diag fixtures"]
fn capture_netlink_fixtures() {
    use netsight::netlink::sock_diag::{
        parse_messages, DiagSocket, DumpRequest, AF_INET, AF_INET6, ALL_STATES, IPPROTO_TCP, IPPROTO_UDP,
    };
    let ns = Netns::new("nskfix");
    let dumps = ns.enter(|| {
        let mut held: Vec<OwnedFd> = Vec::new();
        for (tcp, udp) in [("127.0.0.1:7001", "127.0.0.1:7002"), ("[::1]:7003", "[::1]:7004")] {
            let l = listener(tcp, 16);
            let mut c = TcpStream::connect(tcp).expect("connect");
            let (mut s, _) = l.accept().expect("accept");
            c.write_all(&[0x5a; 1000]).expect("write");
            let mut got = [0u8; 1000];
            s.read_exact(&mut got).expect("read");
            held.push(l.into());
            held.push(c.into());
            held.push(s.into());
            held.push(UdpSocket::bind(udp).expect("udp").into());
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut diag = DiagSocket::open().expect("sock_diag");
        let mut out = Vec::new();
        for (name, family, protocol) in [
            ("tcp4_dump", AF_INET, IPPROTO_TCP),
            ("tcp6_dump", AF_INET6, IPPROTO_TCP),
            ("udp4_dump", AF_INET, IPPROTO_UDP),
            ("udp6_dump", AF_INET6, IPPROTO_UDP),
        ] {
            let req = DumpRequest {
                family,
                protocol,
                states: ALL_STATES,
                tcp_info: true,
            };
            let mut bytes = Vec::new();
            diag.dump_raw(&req, |d| {
                bytes.extend_from_slice(d);
                parse_messages(d, &mut |_| {})
            })
            .expect("dump");
            out.push((name, bytes));
        }
        drop(held);
        out
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/netlink");
    for (name, bytes) in &dumps {
        std::fs::write(format!("{dir}/{name}.bin"), bytes).expect("write fixture");
    }
    // A dump cut 40 bytes into its second message.
    let tcp4 = &dumps[0].1;
    let first = u32::from_ne_bytes([tcp4[0], tcp4[1], tcp4[2], tcp4[3]]) as usize;
    std::fs::write(format!("{dir}/truncated.bin"), &tcp4[..first.div_ceil(4) * 4 + 40]).expect("write");
    std::fs::write(
        format!("{dir}/garbage.bin"),
        b"netsight: not a netlink message at all, just text that claims a huge length\n",
    )
    .expect("write");
}

/// (family name, samples) of one collector run, for comparing runs.
type Emitted = Vec<(String, Vec<netsight::snapshot::Sample>)>;

fn run_sockets(s: &mut netsight::collect::sockets::Sockets) -> Emitted {
    use netsight::collect::{CollectContext, Collector};
    let ctx = CollectContext::new("/proc", "/sys");
    let mut out = netsight::snapshot::Emitter::new();
    s.collect(&ctx, &mut out).expect("collect");
    out.into_families()
        .into_iter()
        .map(|f| (f.desc.name.to_string(), f.samples.into_vec()))
        .collect()
}

fn total(e: &Emitted, name: &str, label_value: Option<&str>) -> f64 {
    e.iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, s)| s)
        .filter(|s| label_value.is_none_or(|v| s.labels.iter().any(|l| &**l == v)))
        .filter_map(|s| s.value.as_f64())
        .sum()
}

/// Process attribution off: a collector created later would know processes an
/// older one has not scanned yet, and the comparisons below are of whole outputs.
const NO_PROCESSES: &str = "collectors:\n  sockets:\n    processes: false\n";

/// The sockets collector skips the dumps `/proc/net/sockstat{,6}` and `snmp` prove
/// empty, and dumps only the listeners where they prove nothing else exists; and
/// nothing it reports changes: every socket that appears is seen on the next
/// tick, and a skipped tick emits exactly what an empty walk emits.
#[test]
fn sockets_skip_only_provably_empty_dumps() {
    use netsight::collect::sockets::TcpWalk::{Full, Listeners, Skipped};
    let ns = Netns::new("nskip");
    ns.enter(|| {
        let cfg = netsight::config::Config::from_yaml_over_defaults("<test>", NO_PROCESSES).expect("defaults");
        let mut s = netsight::collect::sockets::Sockets::new(&cfg.collectors.sockets);
        let tcp = "netsight_tcp_connections";
        let udp = "netsight_udp_sockets";

        // First ticks: a walk proves nothing until the TCP counters have held
        // still for a whole tick (a SYN is counted before its request is hashed).
        let walked = run_sockets(&mut s);
        assert_eq!(s.last_dumps(), (Full, [false, false]));
        assert_eq!(total(&walked, tcp, None), 0.0);
        assert_eq!(run_sockets(&mut s), walked);
        assert_eq!(s.last_dumps(), (Full, [false, false]));
        let skipped = run_sockets(&mut s);
        assert_eq!(s.last_dumps(), (Skipped, [false, false]));
        assert_eq!(skipped, walked, "a skipped tick reports what an empty walk reports");

        // UDP of one family.
        let u = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps(), (Skipped, [true, false]));
        assert_eq!(total(&e, udp, None), 1.0);
        drop(u);
        wait_released("UDP");
        run_sockets(&mut s);
        assert_eq!(s.last_dumps(), (Skipped, [false, false]));

        // Listeners alone: only the listening hash is dumped, and the tick reports
        // what a full walk reports. Once they are gone, nothing is dumped: no
        // segment arrived, so no request socket can have been left behind.
        let l6 = listener("[::1]:0", 8);
        let l4 = listener("127.0.0.1:0", 8);
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Listeners);
        assert_eq!(total(&e, tcp, Some("listen")), 2.0);
        assert_eq!(total(&e, tcp, None), 2.0);
        let mut full = netsight::collect::sockets::Sockets::new(&cfg.collectors.sockets);
        assert_eq!(
            run_sockets(&mut full),
            e,
            "a listeners-only tick reports what a full walk reports"
        );
        assert_eq!(full.last_dumps().0, Full);
        drop(l6);
        drop(l4);
        wait_released("TCP");
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Skipped);
        assert_eq!(total(&e, tcp, None), 0.0);

        // A connection, then its TIME_WAIT: walked every tick.
        let l = listener("127.0.0.1:0", 8);
        let addr = l.local_addr().expect("addr");
        run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Listeners);
        let c = TcpStream::connect(addr).expect("connect");
        let (a, _) = l.accept().expect("accept");
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Full);
        assert_eq!(total(&e, tcp, Some("established")), 2.0);
        drop(c);
        drop(a);
        // The closes settle through softirq processing; wait for TIME_WAIT.
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = loop {
            let e = run_sockets(&mut s);
            if total(&e, tcp, Some("time_wait")) == 1.0 || Instant::now() > deadline {
                break e;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(s.last_dumps().0, Full);
        assert_eq!(total(&e, tcp, Some("time_wait")), 1.0);
        assert_eq!(total(&e, tcp, Some("listen")), 1.0);
        drop(l);
        run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Full, "TIME_WAIT is still there");
    });
}

/// A handshake from another namespace leaves a SYN_RECV request socket here and no
/// full socket (TCP_DEFER_ACCEPT holds it): `inuse` still equals the listeners,
/// but `InSegs` moved, so the tick walks everything and reports the request.
#[test]
fn a_request_socket_from_outside_makes_the_listener_tick_walk() {
    let server = Netns::new("nskip-srv");
    let client = Netns::new("nskip-cli");
    server.veth_to(&client, "vs0", "10.77.0.1/24", "vc0", "10.77.0.2/24");
    let held = server.enter(|| {
        let l = listener("10.77.0.1:7300", 8);
        set_defer_accept(&l, 30);
        l
    });
    let cfg = netsight::config::Config::from_yaml_over_defaults("<test>", "").expect("defaults");
    let s = server.enter(move || {
        let mut s = netsight::collect::sockets::Sockets::new(&cfg.collectors.sockets);
        run_sockets(&mut s);
        run_sockets(&mut s);
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, netsight::collect::sockets::TcpWalk::Listeners);
        assert_eq!(total(&e, "netsight_tcp_connections", Some("listen")), 1.0);
        s
    });
    let c = client.enter(|| TcpStream::connect("10.77.0.1:7300").expect("connect through the veth"));
    let (s, e) = server.enter(move || {
        let mut s = s;
        let e = run_sockets(&mut s);
        (s, e)
    });
    assert_eq!(s.last_dumps().0, netsight::collect::sockets::TcpWalk::Full);
    assert_eq!(total(&e, "netsight_tcp_connections", Some("syn_recv")), 1.0, "{e:?}");
    assert_eq!(total(&e, "netsight_tcp_connections", None), 2.0, "{e:?}");
    drop((c, held));
}

/// A socket no counter announces (connected in TCP_REPAIR mode, as CRIU restores
/// connections: no SYN, no `ActiveOpens`) still raises sockstat's `inuse` above
/// the listeners found, so a tick planned as listeners-only walks the rest too.
#[test]
fn a_socket_the_counters_miss_still_makes_the_listener_tick_walk() {
    use netsight::collect::sockets::TcpWalk::{Full, Listeners};
    let ns = Netns::new("nskip-rep");
    ns.enter(|| {
        let cfg = netsight::config::Config::from_yaml_over_defaults("<test>", NO_PROCESSES).expect("defaults");
        let mut s = netsight::collect::sockets::Sockets::new(&cfg.collectors.sockets);
        let l = listener("127.0.0.1:0", 8);
        for _ in 0..3 {
            run_sockets(&mut s);
        }
        assert_eq!(s.last_dumps().0, Listeners);
        let repaired = repair_mode_connection(l.local_addr().expect("addr").port());
        let e = run_sockets(&mut s);
        assert_eq!(s.last_dumps().0, Full);
        assert_eq!(total(&e, "netsight_tcp_connections", Some("established")), 1.0, "{e:?}");
        assert_eq!(total(&e, "netsight_tcp_connections", Some("listen")), 1.0, "{e:?}");
        drop((repaired, l));
    });
}

/// A TCP socket put in ESTABLISHED by connect() in repair mode: nothing is sent.
fn repair_mode_connection(port: u16) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; every struct passed is
    // ours and sized as the kernel expects.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = OwnedFd::from_raw_fd(fd);
        set_tcp_option(fd, libc::TCP_REPAIR, 1, "TCP_REPAIR");
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect in repair mode: {}", std::io::Error::last_os_error());
        owned
    }
}
