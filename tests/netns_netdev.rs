//! The netdev collector against the live kernel: in fresh namespaces joined by a veth
//! pair, after known UDP traffic, every per-interface value netsight reports equals
//! what `ip -s -s -j link` reports right after, with nothing moving in between.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::time::Duration;

use common::{Netns, Snapshot};
use netsight::collect::netdev::Netdev;
use netsight::collect::{CollectContext, Collector};
use netsight::snapshot::Emitter;
use serde_json::Value;

const A_ADDR: &str = "10.201.1.1";
const B_ADDR: &str = "10.201.1.2";

/// A namespace that stays silent unless the test sends: no IPv6 (no DAD, MLD or
/// router solicitations on new links).
fn quiet_ns() -> Netns {
    let ns = Netns::new("nnd");
    ns.exec_ok(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    ns
}

fn mac(ns: &Netns, dev: &str) -> String {
    let links: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", dev])).expect("ip -j");
    links[0]["address"].as_str().expect("address").to_string()
}

/// Two quiet namespaces, `veth0a` in `a` ↔ `veth0b` in `b`, with permanent neighbour
/// entries so no ARP happens behind the test's back.
fn pair() -> (Netns, Netns) {
    let a = quiet_ns();
    let b = quiet_ns();
    a.veth_to(&b, "veth0a", &format!("{A_ADDR}/24"), "veth0b", &format!("{B_ADDR}/24"));
    let (ma, mb) = (mac(&a, "veth0a"), mac(&b, "veth0b"));
    a.ip(&[
        "neigh",
        "replace",
        B_ADDR,
        "lladdr",
        &mb,
        "dev",
        "veth0a",
        "nud",
        "permanent",
    ]);
    b.ip(&[
        "neigh",
        "replace",
        A_ADDR,
        "lladdr",
        &ma,
        "dev",
        "veth0b",
        "nud",
        "permanent",
    ]);
    (a, b)
}

/// `netsight collect --once --format json` in the namespace, killed after 60 s.
fn collect(ns: &Netns, extra: &[&str]) -> Snapshot {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let mut cmd = vec!["timeout", "-k", "5", "60", bin, "collect", "--once", "--format", "json"];
    cmd.extend_from_slice(extra);
    let out = ns.exec(&cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "collect in {} failed ({}): {stderr}",
        ns.name,
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let s = Snapshot(serde_json::from_slice(&out.stdout).expect("collect output is JSON"));
    assert_eq!(
        s.value("netsight_collector_up", &[("collector", "netdev")]),
        1.0,
        "netdev down: {stderr}"
    );
    s
}

/// A config file choosing the netdev source, removed when dropped.
struct SourceConfig(tempfile::NamedTempFile);

impl SourceConfig {
    fn path_str(&self) -> &str {
        self.0.path().to_str().expect("utf-8 temp path")
    }
}

fn source_config(source: &str) -> SourceConfig {
    use std::io::Write;
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().expect("tempfile");
    writeln!(f, "collectors: {{netdev: {{source: {source}}}}}").expect("write config");
    SourceConfig(f)
}

fn ip_links(ns: &Netns) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ns.ip(&["-s", "-s", "-j", "link", "show"])).expect("ip -j");
    v.as_array().expect("array").clone()
}

/// What may change with traffic or link events: compared before and after netsight.
fn volatile(links: &[Value]) -> Vec<(Value, Value, Value)> {
    links
        .iter()
        .map(|l| (l["ifname"].clone(), l["stats64"].clone(), l["operstate"].clone()))
        .collect()
}

/// Reads `ip -s -s -j link`, netsight, `ip -s -s -j link`; retries until nothing
/// moved between the two ip reads (bounded), and returns the quiet pair.
fn quiet_read(ns: &Netns, extra: &[&str]) -> (Snapshot, Vec<Value>) {
    for _ in 0..10 {
        let before = ip_links(ns);
        let snap = collect(ns, extra);
        let after = ip_links(ns);
        if volatile(&before) == volatile(&after) {
            return (snap, after);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("interfaces in {} never stayed quiet during a collection", ns.name);
}

fn stat(v: &Value, dir: &str, key: &str) -> f64 {
    // iproute2 omits `compressed` (and some others) when the driver reports none.
    v["stats64"][dir][key].as_u64().unwrap_or(0) as f64
}

fn arphrd(link_type: &str) -> &'static str {
    match link_type {
        "ether" => "1",
        "loopback" => "772",
        other => panic!("no ARPHRD number known for link_type {other:?}"),
    }
}

/// Every value netsight reports for every interface equals `ip`'s, field by field,
/// and the device sets are the same.
fn assert_matches_ip(ns: &Netns, s: &Snapshot, links: &[Value]) {
    assert_matches_ip_but(ns, s, links, Check::All);
}

#[derive(PartialEq)]
enum Check {
    All,
    /// Not `speed`: a collector run from a thread that joined the namespace
    /// reads the host's `/sys` (sysfs shows the namespace it was mounted in).
    NotSpeed,
}

fn assert_matches_ip_but(ns: &Netns, s: &Snapshot, links: &[Value], check: Check) {
    let ip_devs: BTreeSet<String> = links
        .iter()
        .map(|l| l["ifname"].as_str().expect("ifname").to_string())
        .collect();
    let ns_devs: BTreeSet<String> = s
        .samples("netsight_network_receive_bytes_total", &[])
        .iter()
        .map(|x| x["labels"]["device"].as_str().expect("device").to_string())
        .collect();
    assert_eq!(ns_devs, ip_devs, "devices in {}", ns.name);

    for l in links {
        let dev = l["ifname"].as_str().expect("ifname");
        let st = |d: &str, k: &str| stat(l, d, k);
        let expected = [
            ("netsight_network_receive_bytes_total", st("rx", "bytes")),
            ("netsight_network_receive_packets_total", st("rx", "packets")),
            ("netsight_network_receive_errors_total", st("rx", "errors")),
            // /proc/net/dev's drop column is rx_dropped + rx_missed_errors.
            (
                "netsight_network_receive_drop_total",
                st("rx", "dropped") + st("rx", "missed_errors"),
            ),
            ("netsight_network_receive_fifo_total", st("rx", "fifo_errors")),
            (
                "netsight_network_receive_frame_total",
                st("rx", "length_errors") + st("rx", "over_errors") + st("rx", "crc_errors") + st("rx", "frame_errors"),
            ),
            ("netsight_network_receive_compressed_total", st("rx", "compressed")),
            ("netsight_network_receive_multicast_total", st("rx", "multicast")),
            (
                "netsight_network_receive_missed_errors_total",
                st("rx", "missed_errors"),
            ),
            ("netsight_network_transmit_bytes_total", st("tx", "bytes")),
            ("netsight_network_transmit_packets_total", st("tx", "packets")),
            ("netsight_network_transmit_errors_total", st("tx", "errors")),
            ("netsight_network_transmit_drop_total", st("tx", "dropped")),
            ("netsight_network_transmit_fifo_total", st("tx", "fifo_errors")),
            ("netsight_network_transmit_colls_total", st("tx", "collisions")),
            (
                "netsight_network_transmit_carrier_total",
                st("tx", "carrier_errors")
                    + st("tx", "aborted_errors")
                    + st("tx", "window_errors")
                    + st("tx", "heartbeat_errors"),
            ),
            ("netsight_network_transmit_compressed_total", st("tx", "compressed")),
            ("netsight_network_carrier_changes_total", st("tx", "carrier_changes")),
            ("netsight_network_mtu_bytes", l["mtu"].as_u64().expect("mtu") as f64),
            (
                "netsight_network_transmit_queue_length",
                l["txqlen"].as_u64().expect("txqlen") as f64,
            ),
        ];
        for (name, want) in expected {
            assert_eq!(
                s.value(name, &[("device", dev)]),
                want,
                "{}: {name}{{device={dev}}}",
                ns.name
            );
        }

        let operstate = l["operstate"].as_str().expect("operstate").to_ascii_lowercase();
        let is_up = operstate == "up";
        assert_eq!(
            s.value("netsight_network_up", &[("device", dev)]),
            is_up as u8 as f64,
            "{dev} up"
        );
        let states = s.samples("netsight_network_operstate", &[("device", dev)]);
        assert_eq!(states.len(), 7, "{dev}: one series per RFC 2863 state");
        for x in states {
            let want = (x["labels"]["operstate"] == operstate.as_str()) as u8 as f64;
            assert_eq!(x["value"].as_f64(), Some(want), "{dev}: {x}");
        }
        let ty = arphrd(l["link_type"].as_str().expect("link_type"));
        assert_eq!(
            s.value(
                "netsight_network_info",
                &[("device", dev), ("type", ty), ("operstate", &operstate)]
            ),
            1.0,
            "{dev} info"
        );

        let flags: Vec<&str> = l["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let carrier = s.try_value("netsight_network_carrier", &[("device", dev)]);
        if flags.contains(&"UP") {
            // Administratively up: sysfs carrier is readable and LOWER_UP mirrors it.
            let want = flags.contains(&"LOWER_UP") as u8 as f64;
            assert_eq!(carrier, Some(want), "{dev} carrier, flags {flags:?}");
        } else {
            assert!(
                carrier.is_none() || carrier == Some(0.0),
                "{dev} is down but carrier={carrier:?}"
            );
        }

        if check == Check::NotSpeed {
            continue;
        }
        // Speed: sysfs in the namespace (-1 / EINVAL → absent).
        let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/speed")]);
        let sysfs_speed = out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse::<i64>().ok())
            .flatten()
            .filter(|v| *v > 0)
            .map(|v| v as f64 * 125_000.0);
        assert_eq!(
            s.try_value("netsight_network_speed_bytes_per_second", &[("device", dev)]),
            sysfs_speed,
            "{dev} speed"
        );
    }
}

fn link<'a>(links: &'a [Value], dev: &str) -> &'a Value {
    links
        .iter()
        .find(|l| l["ifname"] == dev)
        .unwrap_or_else(|| panic!("{dev} not in ip output"))
}

/// Sends `n` datagrams of `len` bytes from `from` (in `src`) to `to`, where a socket
/// bound in the destination namespace receives them all.
fn udp_burst(src: &Netns, dst: &Netns, from: &'static str, to: &'static str, n: usize, len: usize) {
    let rx = dst.enter(move || UdpSocket::bind((to, 5555)).expect("bind receiver"));
    rx.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    src.enter(move || {
        let s = UdpSocket::bind((from, 0)).expect("bind sender");
        for i in 0..n {
            s.send_to(&vec![i as u8; len], (to, 5555)).expect("send");
            if i % 50 == 49 {
                // Let the receiver's buffer drain: every datagram must arrive.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let mut buf = [0u8; 2048];
    for i in 0..n {
        let (got, _) = rx
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i}/{n} to {to}: {e}"));
        assert_eq!(got, len);
    }
}

#[test]
fn netdev_equals_ip_link_after_known_traffic() {
    let (a, b) = pair();
    let (_, before_b) = quiet_read(&b, &[]);
    let rx0 = stat(link(&before_b, "veth0b"), "rx", "packets");

    udp_burst(&a, &b, A_ADDR, B_ADDR, 200, 100);
    udp_burst(&b, &a, B_ADDR, A_ADDR, 50, 1000);
    // Loopback traffic in `a` too, so lo has counters to compare.
    udp_burst(&a, &a, "127.0.0.1", "127.0.0.1", 30, 10);
    std::thread::sleep(Duration::from_millis(200));

    // Both sources report the same, exactly: rtnetlink (the default on a live
    // kernel) and /proc/net/dev plus sysfs.
    for source in ["procfs", "netlink"] {
        let cfg = source_config(source);
        let (s, l) = quiet_read(&a, &["--config", cfg.path_str()]);
        assert_matches_ip(&a, &s, &l);
        let (s, l) = quiet_read(&b, &["--config", cfg.path_str()]);
        assert_matches_ip(&b, &s, &l);
    }
    let (sa, la) = quiet_read(&a, &[]);
    assert_matches_ip(&a, &sa, &la);
    let (sb, lb) = quiet_read(&b, &[]);
    assert_matches_ip(&b, &sb, &lb);

    // The known traffic is there: exactly the 200 datagrams arrived on veth0b (no ARP,
    // no IPv6), each 100 bytes of payload + 8 UDP + 20 IP + 14 Ethernet.
    let vb = link(&lb, "veth0b");
    assert_eq!(stat(vb, "rx", "packets") - rx0, 200.0);
    assert!(stat(vb, "rx", "bytes") >= 200.0 * 142.0);
    assert_eq!(
        sb.value("netsight_network_transmit_packets_total", &[("device", "veth0b")]),
        stat(vb, "tx", "packets")
    );
    assert!(sb.value("netsight_network_transmit_bytes_total", &[("device", "veth0b")]) >= 50.0 * 1042.0);
    assert!(sa.value("netsight_network_receive_packets_total", &[("device", "lo")]) >= 30.0);
    assert_eq!(sa.value("netsight_network_up", &[("device", "veth0a")]), 1.0);
    assert_eq!(sa.value("netsight_network_carrier", &[("device", "veth0a")]), 1.0);
}

/// One tick of a netdev collector kept across ticks, run on a thread in `ns`
/// (its netlink sockets live there from the first tick on).
fn tick(ns: &Netns, mut netdev: Netdev) -> (Netdev, Snapshot) {
    ns.enter(move || {
        let ctx = CollectContext::new("/proc", "/sys");
        let mut out = Emitter::new();
        netdev.collect(&ctx, &mut out).expect("netdev collects");
        let snap = netsight::snapshot::Snapshot::new(std::time::SystemTime::now(), out.into_families());
        (netdev, Snapshot(netsight::export::json::render(&snap)))
    })
}

/// [`quiet_read`] for a collector kept across ticks.
fn quiet_tick(ns: &Netns, mut netdev: Netdev) -> (Netdev, Snapshot, Vec<Value>) {
    for _ in 0..10 {
        let before = ip_links(ns);
        let (n, snap) = tick(ns, netdev);
        netdev = n;
        let after = ip_links(ns);
        if volatile(&before) == volatile(&after) {
            return (netdev, snap, after);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("interfaces in {} never stayed quiet during a collection", ns.name);
}

/// Waits (up to 5 s) until `ip` shows `dev`'s operational state as `want` (or,
/// with `!`, as anything else): the kernel sets it, and announces the change,
/// when its link watch runs, which batches events for about a second.
fn wait_operstate(ns: &Netns, dev: &str, want: &str) {
    let (negate, want) = match want.strip_prefix('!') {
        Some(w) => (true, w),
        None => (false, want),
    };
    for _ in 0..100 {
        let v: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", dev])).expect("ip -j");
        let state = v[0]["operstate"].as_str().unwrap_or_default().to_string();
        if (state == want) != negate {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{dev} in {} never reached operstate {want}", ns.name);
}

/// Between link events the collector asks the kernel only for the counters
/// (`RTM_GETSTATS`): on those ticks every value still equals `ip`'s, and a link
/// event (the peer going down, a new device) brings a whole link dump on the
/// next tick.
#[test]
fn counters_only_ticks_equal_ip_link_and_link_events_bring_a_link_dump() {
    let (a, b) = pair();
    // A second link whose name sorts before `lo` while its ifindex comes after
    // veth0a's: counters are matched to links by ifindex, not by position.
    a.veth_to(&b, "a0", "10.201.2.1/24", "b0", "10.201.2.2/24");
    for (ns, dev) in [(&a, "veth0a"), (&a, "a0"), (&b, "b0")] {
        wait_operstate(ns, dev, "UP");
    }
    let cfg = netsight::config::Config::embedded().expect("embedded config");
    let netdev = Netdev::new(&cfg.collectors.netdev).expect("netdev");
    let (netdev, s, l) = quiet_tick(&a, netdev);
    assert_matches_ip_but(&a, &s, &l, Check::NotSpeed);
    let dumps = netdev.link_dumps();
    assert!(dumps >= 1, "the first tick dumps the links");

    udp_burst(&a, &b, A_ADDR, B_ADDR, 200, 100);
    udp_burst(&b, &a, B_ADDR, A_ADDR, 50, 1000);
    udp_burst(&a, &b, "10.201.2.1", "10.201.2.2", 30, 300);
    std::thread::sleep(Duration::from_millis(200));
    let (netdev, s, l) = quiet_tick(&a, netdev);
    assert_matches_ip_but(&a, &s, &l, Check::NotSpeed);
    let (netdev, s, l) = quiet_tick(&a, netdev);
    assert_matches_ip_but(&a, &s, &l, Check::NotSpeed);
    assert_eq!(netdev.link_dumps(), dumps, "no link event: counters only");
    let d = [("device", "veth0a")];
    assert!(s.value("netsight_network_transmit_packets_total", &d) >= 200.0);
    assert!(s.value("netsight_network_receive_bytes_total", &d) >= 50.0 * 1042.0);
    assert!(s.value("netsight_network_transmit_packets_total", &[("device", "a0")]) >= 30.0);

    // The peer goes down: veth0a loses its carrier, announced to `a`.
    b.ip(&["link", "set", "veth0b", "down"]);
    wait_operstate(&a, "veth0a", "!UP");
    let (netdev, s, l) = quiet_tick(&a, netdev);
    assert!(netdev.link_dumps() > dumps, "a carrier change brings a link dump");
    assert_matches_ip_but(&a, &s, &l, Check::NotSpeed);
    assert_eq!(s.value("netsight_network_carrier", &d), 0.0);
    let dumps = netdev.link_dumps();

    // A new device appears on the next tick.
    a.ip(&["link", "add", "vnew0", "type", "veth", "peer", "name", "vnew1"]);
    let (netdev, s, l) = quiet_tick(&a, netdev);
    assert!(netdev.link_dumps() > dumps, "a new device brings a link dump");
    assert_matches_ip_but(&a, &s, &l, Check::NotSpeed);
    assert_eq!(s.value("netsight_network_up", &[("device", "vnew1")]), 0.0);
}

#[test]
fn interface_set_down_and_drops() {
    let (a, b) = pair();
    b.ip(&["link", "set", "veth0b", "down"]);
    // With its peer down, veth0a drops what it is asked to send (tx_dropped).
    a.enter(|| {
        let s = UdpSocket::bind((A_ADDR, 0)).expect("bind");
        for _ in 0..25 {
            s.send_to(&[0u8; 64], (B_ADDR, 5555)).expect("send");
        }
    });
    std::thread::sleep(Duration::from_millis(100));

    for source in ["procfs", "netlink"] {
        let cfg = source_config(source);
        let (s, l) = quiet_read(&b, &["--config", cfg.path_str()]);
        assert_matches_ip(&b, &s, &l);
        let (s, l) = quiet_read(&a, &["--config", cfg.path_str()]);
        assert_matches_ip(&a, &s, &l);
    }
    let (sb, lb) = quiet_read(&b, &[]);
    assert_matches_ip(&b, &sb, &lb);
    let d = [("device", "veth0b")];
    assert_eq!(sb.value("netsight_network_up", &d), 0.0);
    assert_eq!(
        sb.value(
            "netsight_network_operstate",
            &[("device", "veth0b"), ("operstate", "down")]
        ),
        1.0
    );
    let carrier = sb.try_value("netsight_network_carrier", &d);
    assert!(
        carrier.is_none() || carrier == Some(0.0),
        "carrier of a down interface: {carrier:?}"
    );

    let (sa, la) = quiet_read(&a, &[]);
    assert_matches_ip(&a, &sa, &la);
    let d = [("device", "veth0a")];
    assert_eq!(sa.value("netsight_network_up", &d), 0.0);
    assert_eq!(
        sa.value("netsight_network_carrier", &d),
        0.0,
        "veth0a is admin up without a peer"
    );
    assert!(sa.value("netsight_network_transmit_drop_total", &d) >= 25.0);
    assert_eq!(
        sa.value("netsight_network_transmit_drop_total", &d),
        stat(link(&la, "veth0a"), "tx", "dropped")
    );
    // Up → down → (peer) down: carrier went on then off at least once each.
    assert!(sa.value("netsight_network_carrier_changes_total", &d) >= 2.0);
}

fn devices_in(s: &Snapshot) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for f in s.0["families"].as_array().expect("families") {
        if !f["name"].as_str().expect("name").starts_with("netsight_network_") {
            continue;
        }
        for x in f["samples"].as_array().expect("samples") {
            all.insert(x["labels"]["device"].as_str().expect("device label").to_string());
        }
    }
    all
}

#[test]
fn include_exclude_regexes_from_config_file() {
    let ns = quiet_ns();
    ns.ip(&["link", "add", "veth0a", "type", "veth", "peer", "name", "veth0b"]);
    ns.ip(&["link", "set", "veth0a", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |name: &str, yaml: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, yaml).expect("write config");
        p.to_str().expect("utf-8 path").to_string()
    };
    let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();

    let all = collect(&ns, &[]);
    assert_eq!(devices_in(&all), set(&["lo", "veth0a", "veth0b"]));

    let excl = config("exclude.yaml", "collectors: {netdev: {exclude: \"^veth\"}}\n");
    assert_eq!(devices_in(&collect(&ns, &["--config", &excl])), set(&["lo"]));

    let incl = config("include.yaml", "collectors:\n  netdev:\n    include: \"^veth\"\n");
    assert_eq!(
        devices_in(&collect(&ns, &["--config", &incl])),
        set(&["veth0a", "veth0b"])
    );

    let both = config(
        "both.yaml",
        "collectors: {netdev: {include: \"^veth\", exclude: \"b$\"}}\n",
    );
    let s = collect(&ns, &["--config", &both]);
    assert_eq!(devices_in(&s), set(&["veth0a"]));
    // What remains is complete: every per-device family has veth0a.
    assert_eq!(s.value("netsight_network_up", &[("device", "veth0a")]), 0.0);
    assert!(s
        .try_value("netsight_network_mtu_bytes", &[("device", "veth0a")])
        .is_some());

    // An invalid regex is a configuration error, not a silent no-filter.
    let bad = config("bad.yaml", "collectors: {netdev: {exclude: \"(\"}}\n");
    let bin = env!("CARGO_BIN_EXE_netsight");
    let out = ns.exec(&[
        "timeout", "-k", "5", "60", bin, "collect", "--once", "--format", "json", "--config", &bad,
    ]);
    assert!(
        !out.status.success(),
        "invalid regex accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The exposition of a namespace whose interfaces report a link speed (a veth
/// says 10,000 Mb/s) passes `promtool check metrics` without a word: a host
/// with a NIC exports the speed series, which a `bits` name once failed.
#[test]
fn exposition_with_a_link_speed_passes_promtool() {
    let (a, _b) = pair();
    let bin = env!("CARGO_BIN_EXE_netsight");
    let out = a.exec(&[
        "timeout",
        "-k",
        "5",
        "60",
        bin,
        "collect",
        "--once",
        "--format",
        "prometheus",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8 exposition");
    assert!(
        text.contains("netsight_network_speed_bytes_per_second{device=\"veth0a\"} 1250000000"),
        "no speed series for the veth"
    );
    common::assert_promtool_accepts(text.as_bytes());
}
