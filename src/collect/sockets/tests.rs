use super::*;
use std::net::Ipv4Addr;

fn cfg(max_ports: usize, max_processes: usize) -> SocketsConfig {
    SocketsConfig {
        enabled: true,
        max_ports,
        max_processes,
        process_refresh: std::time::Duration::from_secs(30),
        process_refresh_cpu_factor: 150.0,
        process_refresh_lazy: true,
        processes: false,
        rtt_buckets_seconds: vec![0.001, 0.01, 0.1],
    }
}

fn sock(state: u8, local_port: u16, info: Option<&[u8]>) -> InetSock<'_> {
    InetSock {
        family: AF_INET,
        state,
        local: IpAddr::V4(Ipv4Addr::LOCALHOST),
        local_port,
        remote: IpAddr::V4(Ipv4Addr::LOCALHOST),
        remote_port: 40000,
        inode: 0,
        uid: 0,
        rqueue: 3,
        wqueue: 128,
        tcp_info: info,
        cong: Some(b"cubic\0"),
    }
}

fn info(rtt_us: u32, retrans: u32, sent: u64, received: u64) -> Vec<u8> {
    let mut b = vec![0u8; 232];
    b[0] = state::ESTABLISHED;
    b[68..72].copy_from_slice(&rtt_us.to_ne_bytes());
    b[100..104].copy_from_slice(&retrans.to_ne_bytes());
    b[128..136].copy_from_slice(&received.to_ne_bytes());
    b[200..208].copy_from_slice(&sent.to_ne_bytes());
    b
}

fn find<'a>(fams: &'a [crate::snapshot::Family], name: &str) -> &'a crate::snapshot::Family {
    fams.iter()
        .find(|f| f.desc.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn value(fams: &[crate::snapshot::Family], name: &str, labels: &[&str]) -> Option<f64> {
    find(fams, name)
        .samples
        .iter()
        .find(|s| s.labels.iter().map(|l| &**l).eq(labels.iter().copied()))
        .and_then(|s| s.value.as_f64())
}

/// Feeds synthetic sockets through the same fold and emit as a live tick.
fn run(c: &SocketsConfig, socks: &[InetSock<'_>]) -> Vec<crate::snapshot::Family> {
    run_with(Sockets::new(c), socks)
}

fn run_with(s: Sockets, socks: &[InetSock<'_>]) -> Vec<crate::snapshot::Family> {
    run_in(s, socks, None)
}

/// [`run_with`], with the after-dump attribution under procfs `root` when given.
fn run_in(mut s: Sockets, socks: &[InetSock<'_>], root: Option<&std::path::Path>) -> Vec<crate::snapshot::Family> {
    s.agg.reset();
    let cx = FoldCtx {
        procs: s.procs.as_ref(),
        bounds: &s.bounds,
    };
    // Listeners first, as the collector dumps them.
    for x in socks.iter().filter(|x| x.state == state::LISTEN) {
        fold_tcp(&mut s.agg, &cx, *x);
    }
    for x in socks.iter().filter(|x| x.state != state::LISTEN) {
        fold_tcp(&mut s.agg, &cx, *x);
    }
    if let Some(root) = root {
        s.attribute_unknown(root);
    }
    let mut out = Emitter::new();
    s.emit(&mut out);
    out.into_families()
}

/// The daemon's own connections, opened after the last process scan, are
/// attributed to it on the tick that sees them, and only a socket of another
/// process remains unknown (and makes the map due for a rescan).
#[test]
fn sockets_own_connections_since_the_scan_are_attributed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (pid, comm) in [("100", "nginx"), ("200", "netsight")] {
        std::fs::create_dir_all(dir.path().join(pid).join("fd")).expect("mkdir");
        std::fs::write(dir.path().join(pid).join("comm"), format!("{comm}\n")).expect("comm");
    }
    std::os::unix::fs::symlink("200", dir.path().join("self")).expect("self");
    let fd = |pid: &str, n: &str, inode: u32| {
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.path().join(pid).join("fd").join(n)).expect("link")
    };
    fd("100", "3", 10);
    let mut c = cfg(64, 64);
    c.processes = true;
    let mut s = Sockets::new(&c);
    s.procs.as_mut().expect("procs on").refresh(dir.path());
    // After the scan: netsight's listener and a scrape's connection.
    fd("200", "5", 50);
    fd("200", "6", 51);
    let owned = |state, port, inode| InetSock {
        inode,
        ..sock(state, port, None)
    };
    let socks = [
        owned(state::LISTEN, 9977, 50),
        owned(state::ESTABLISHED, 9977, 51),
        owned(state::ESTABLISHED, 9000, 10),
        owned(state::ESTABLISHED, 9000, 999), // another process's, unseen
    ];
    let f = run_in(s, &socks, Some(dir.path()));
    let v = |p: &str, st: &str| value(&f, "netsight_tcp_process_connections", &[p, st]);
    assert_eq!(v("netsight", "listen"), Some(1.0));
    assert_eq!(v("netsight", "established"), Some(1.0));
    assert_eq!(v("nginx", "established"), Some(1.0));
    assert_eq!(v("unknown", "established"), Some(1.0), "only the unseen one");
    assert_eq!(v("unknown", "listen"), None);
    assert_eq!(
        value(
            &f,
            "netsight_tcp_listen_backlog",
            &["ipv4", "127.0.0.1", "9977", "netsight"]
        ),
        Some(128.0)
    );
}

#[test]
fn sockets_fold_counts_states_ports_and_rtt() {
    let a = info(500, 2, 1000, 10);
    let b = info(20_000, 1, 500, 5);
    let socks = [
        sock(state::LISTEN, 80, None),
        sock(state::ESTABLISHED, 80, Some(&a)),
        sock(state::ESTABLISHED, 80, Some(&b)),
        sock(state::NEW_SYN_RECV, 80, None),
        sock(state::TIME_WAIT, 80, None),
        sock(state::ESTABLISHED, 45000, Some(&a)), // client side: not a listening port
    ];
    let f = run(&cfg(64, 64), &socks);
    assert_eq!(
        value(&f, "netsight_tcp_connections", &["ipv4", "established"]),
        Some(3.0)
    );
    assert_eq!(value(&f, "netsight_tcp_connections", &["ipv4", "syn_recv"]), Some(1.0));
    assert_eq!(value(&f, "netsight_tcp_connections", &["ipv6", "listen"]), Some(0.0));
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["80", "established"]),
        Some(2.0)
    );
    assert_eq!(value(&f, "netsight_tcp_port_connections", &["80", "listen"]), Some(1.0));
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["80", "syn_recv"]),
        Some(1.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["80", "time_wait"]),
        Some(1.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["80", "close_wait"]),
        None,
        "zeros omitted"
    );
    assert!(find(&f, "netsight_tcp_port_connections")
        .samples
        .iter()
        .all(|s| &*s.labels[0] == "80"));
    assert_eq!(
        value(&f, "netsight_tcp_port_retransmitted_segments", &["80"]),
        Some(3.0)
    );
    assert_eq!(value(&f, "netsight_tcp_port_sent_bytes", &["80"]), Some(1500.0));
    assert_eq!(value(&f, "netsight_tcp_port_received_bytes", &["80"]), Some(15.0));
    assert_eq!(
        value(&f, "netsight_tcp_listen_queue_length", &["ipv4", "127.0.0.1", "80", ""]),
        Some(3.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "80", ""]),
        Some(128.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_congestion_control_connections", &["cubic"]),
        Some(3.0)
    );
    let h = &find(&f, "netsight_tcp_rtt_seconds").samples[0];
    let crate::snapshot::Value::Histogram(h) = &h.value else {
        panic!("histogram")
    };
    assert_eq!(&*h.bounds, &[0.001, 0.01, 0.1]);
    assert_eq!(h.cumulative, vec![1, 1, 2], "0.5 ms ≤ 1 ms; 20 ms ≤ 100 ms");
    assert_eq!(h.count, 2);
    assert!((h.sum - 0.0205).abs() < 1e-12);
}

#[test]
fn sockets_fields_an_old_kernel_lacks_are_not_reported_as_zero() {
    let full = info(500, 2, 1000, 10);
    let old = &full[..168]; // Linux 4.9: no tcpi_bytes_sent
    let f = run(
        &cfg(64, 64),
        &[sock(state::LISTEN, 80, None), sock(state::ESTABLISHED, 80, Some(old))],
    );
    assert_eq!(value(&f, "netsight_tcp_port_received_bytes", &["80"]), Some(10.0));
    assert_eq!(
        value(&f, "netsight_tcp_port_retransmitted_segments", &["80"]),
        Some(2.0)
    );
    assert!(f
        .iter()
        .all(|fam| fam.desc.name != "netsight_tcp_port_sent_bytes" || fam.samples.is_empty()));
    // No connections: zeros are true whatever the kernel.
    let f = run(&cfg(64, 64), &[sock(state::LISTEN, 80, None)]);
    assert_eq!(value(&f, "netsight_tcp_port_sent_bytes", &["80"]), Some(0.0));
}

#[test]
fn sockets_ports_beyond_the_cap_are_summed_into_other() {
    let i = info(100, 0, 1, 1);
    let mut socks = Vec::new();
    // Port p gets p-8000 established connections: 8003 has most, 8001 fewest.
    for p in [8001u16, 8002, 8003] {
        socks.push(sock(state::LISTEN, p, None));
        for _ in 0..(p - 8000) {
            socks.push(sock(state::ESTABLISHED, p, Some(&i)));
        }
    }
    let f = run(&cfg(2, 64), &socks);
    let ports: Vec<&str> = find(&f, "netsight_tcp_rtt_seconds")
        .samples
        .iter()
        .map(|s| &*s.labels[0])
        .collect();
    assert_eq!(ports, ["8002", "8003", "other"], "sorted by port, other last");
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["other", "established"]),
        Some(1.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_port_connections", &["8003", "established"]),
        Some(3.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_listen_queue_length", &["", "", "other", ""]),
        Some(3.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "8002", ""]),
        Some(128.0)
    );
    assert_eq!(
        value(&f, "netsight_tcp_listen_backlog", &["ipv4", "127.0.0.1", "8001", ""]),
        None
    );
}

#[test]
fn sockets_processes_are_capped_with_special_rows_kept() {
    // A fake procfs: nginx (2 pids) owns inodes 10, 11; sshd 20; redis 30.
    let dir = tempfile::tempdir().expect("tempdir");
    for (pid, comm, inodes) in [
        ("100", "nginx", &[10u32][..]),
        ("101", "nginx", &[11]),
        ("200", "sshd", &[20]),
        ("300", "redis", &[30]),
    ] {
        let fd = dir.path().join(pid).join("fd");
        std::fs::create_dir_all(&fd).expect("mkdir");
        std::fs::write(dir.path().join(pid).join("comm"), format!("{comm}\n")).expect("comm");
        for (i, ino) in inodes.iter().enumerate() {
            std::os::unix::fs::symlink(format!("socket:[{ino}]"), fd.join(i.to_string())).expect("link");
        }
    }
    let mut c = cfg(64, 2);
    c.processes = true;
    let mut s = Sockets::new(&c);
    s.procs.as_mut().expect("procs on").refresh(dir.path());
    let owned = |state, inode| InetSock {
        inode,
        ..sock(state, 9000, None)
    };
    let socks = [
        owned(state::LISTEN, 10),
        owned(state::ESTABLISHED, 10),
        owned(state::ESTABLISHED, 11),
        owned(state::ESTABLISHED, 20),
        owned(state::CLOSE_WAIT, 20),
        owned(state::ESTABLISHED, 30),
        owned(state::TIME_WAIT, 0),
        owned(state::TIME_WAIT, 0),
        owned(state::ESTABLISHED, 999), // an fd we could not see
    ];
    let f = run_with(s, &socks);
    let v = |p: &str, st: &str| value(&f, "netsight_tcp_process_connections", &[p, st]);
    assert_eq!(v("nginx", "established"), Some(2.0), "summed over both nginx pids");
    assert_eq!(v("nginx", "listen"), Some(1.0));
    assert_eq!(v("sshd", "established"), Some(1.0));
    assert_eq!(v("sshd", "close_wait"), Some(1.0));
    assert_eq!(v("redis", "established"), None, "beyond max_processes = 2");
    assert_eq!(v("other", "established"), Some(1.0));
    assert_eq!(v("", "time_wait"), Some(2.0), "no owner");
    assert_eq!(v("unknown", "established"), Some(1.0));
    let names: Vec<&str> = find(&f, "netsight_tcp_process_connections")
        .samples
        .iter()
        .map(|s| &*s.labels[0])
        .collect();
    assert_eq!(
        names,
        ["", "nginx", "nginx", "other", "sshd", "sshd", "unknown"],
        "sorted"
    );
    assert_eq!(
        value(
            &f,
            "netsight_tcp_listen_backlog",
            &["ipv4", "127.0.0.1", "9000", "nginx"]
        ),
        Some(128.0)
    );
    assert_eq!(value(&f, "netsight_sockets_process_scan_denied", &[]), Some(0.0));
}

#[test]
fn sockets_state_names_follow_ss() {
    assert_eq!(tcp_state_name(normalise_state(state::NEW_SYN_RECV)), "syn_recv");
    assert_eq!(tcp_state_name(state::CLOSE_WAIT), "close_wait");
    assert_eq!(tcp_state_name(normalise_state(200)), "unknown");
    assert_eq!(udp_state_name(state::CLOSE), "unconnected");
    assert_eq!(udp_state_name(state::ESTABLISHED), "established");
}

#[test]
fn sockets_bounds_are_sanitized() {
    assert_eq!(
        sanitize_bounds(&[0.1, f64::NAN, 0.01, -1.0, 0.1, f64::INFINITY]),
        vec![0.01, 0.1]
    );
}

#[test]
fn sockets_not_live_is_unavailable() {
    let mut s = Sockets::new(&cfg(64, 64));
    let ctx = CollectContext::new("/tmp/fixture-proc", "/sys");
    let mut out = Emitter::new();
    assert!(matches!(s.collect(&ctx, &mut out), Err(CollectError::Unavailable(_))));
}

/// A live tick in the test's own namespace: a listener with one connection is
/// seen, attributed to this process, with its backlog.
#[test]
fn sockets_live_tick_sees_our_listener() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut c = cfg(100_000, 100_000);
    c.processes = true;
    let mut s = Sockets::new(&c);
    let ctx = CollectContext::new("/proc", "/sys");
    let mut out = Emitter::new();
    s.collect(&ctx, &mut out).expect("collect");
    let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
    let labels = ["ipv4", "127.0.0.1", &port.to_string(), comm.trim_end()].map(str::to_string);
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    // The handshake completes in softirq context: allow it a moment.
    let mut f = out.into_families();
    for _ in 0..50 {
        if value(&f, "netsight_tcp_listen_queue_length", &labels) == Some(1.0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut out = Emitter::new();
        s.collect(&ctx, &mut out).expect("collect");
        f = out.into_families();
    }
    assert_eq!(
        value(&f, "netsight_tcp_listen_queue_length", &labels),
        Some(1.0),
        "one connection to accept"
    );
    assert!(value(&f, "netsight_tcp_listen_backlog", &labels).is_some_and(|v| v > 0.0));
    assert!(value(&f, "netsight_tcp_port_connections", &[labels[2], "established"]).is_some_and(|v| v >= 1.0));
    // A second tick reuses the socket and buffers.
    let mut out = Emitter::new();
    s.collect(&ctx, &mut out).expect("second collect");
    assert!(!out.is_empty());
}

/// In the process's namespace the collector takes the copies of sockstat and
/// sockstat6 the sockstat collector kept this tick instead of reading them.
#[test]
fn sockets_take_this_ticks_sockstat_copies() {
    let ctx = CollectContext::new("/proc", "/sys");
    let mut sockstat = crate::collect::sockstat::Sockstat::default();
    let mut s = Sockets::new(&cfg(64, 64));
    ctx.tick_files.next_tick();
    sockstat.collect(&ctx, &mut Emitter::new()).expect("sockstat");
    s.collect(&ctx, &mut Emitter::new()).expect("sockets");
    let kept = if std::path::Path::new("/proc/net/sockstat6").exists() {
        2
    } else {
        1
    };
    assert!(
        ctx.tick_files.copies_served() >= kept,
        "{} copies taken",
        ctx.tick_files.copies_served()
    );
}
