//! The fault-injection scenarios. Each builds its own namespaces, starts ordinary
//! traffic and `netsight serve --interval 1s` in the affected namespace, lets the
//! daemon learn for a warm-up, injects one real fault and reads the daemon's event
//! log until the expected rule fires. Everything it creates is owned by a guard
//! declared after the namespaces, so it is torn down (threads joined, processes
//! killed by PID, devices closed) before the namespaces are deleted, on success
//! and on panic alike.

use std::any::Any;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::common::Netns;
use crate::harness::*;
use crate::traffic::*;

/// What a scenario must produce.
pub struct Expect {
    pub rule: &'static str,
    /// Labels the firing group must have.
    pub labels: &'static [(&'static str, &'static str)],
    pub cause: &'static str,
    /// Substrings the cause's explanation + recommendation must contain
    /// (current → suggested values).
    pub text: &'static [&'static str],
    /// Other rules that may legitimately fire as consequences of this fault.
    pub allowed: &'static [&'static str],
}

/// One line of the result table.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub scenario: String,
    pub expected: String,
    pub fired: Option<String>,
    pub cause: Option<String>,
    pub latency: Option<f64>,
    /// Events that are not explained by the fault: anything before it, and rules
    /// outside `expected` + `allowed` after it.
    pub false_alarms: Vec<String>,
    /// Allowed consequences that fired.
    pub also: Vec<String>,
    pub problems: Vec<String>,
    pub recommendation: String,
    pub is_control: bool,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.false_alarms.is_empty() && (self.is_control || self.fired.is_some())
    }
}

/// Seconds the expected rule may take before the scenario gives up.
const GIVE_UP: f64 = 45.0;
/// How long to keep watching after detection for co-firing rules.
const LINGER: f64 = 4.0;

type Guard = Box<dyn Any>;

/// Waits for the warm-up, checks nothing fired, runs `inject`, and waits for the
/// expected rule. Guards returned by `inject` live until the observation ends.
pub fn observe(name: &str, d: &mut Daemon, warmup: f64, exp: &Expect, inject: impl FnOnce() -> Vec<Guard>) -> Row {
    let mut row = Row {
        scenario: name.to_string(),
        expected: format!("{} / {}", exp.rule, exp.cause),
        ..Row::default()
    };
    sleep_until(d.started + warmup);
    if !d.alive() {
        row.problems
            .push(format!("netsight died during warm-up: {}", d.log_text()));
        return row;
    }
    let t0 = now();
    let guards = inject();
    let mut hit: Option<Event> = None;
    let mut exported = false;
    while now() < t0 + GIVE_UP {
        let evs = d.events();
        if let Some(e) = evs.iter().find(|e| {
            e.rule == exp.rule
                && e.time >= t0
                && exp
                    .labels
                    .iter()
                    .all(|(k, v)| e.labels.get(*k).map(String::as_str) == Some(*v))
        }) {
            let m = d.metrics();
            exported = root_cause_exported(&m, exp.rule, e.cause.as_deref().unwrap_or("-"));
            hit = Some(e.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    sleep_until(now() + LINGER);
    let all = d.events();
    drop(guards);
    for e in &all {
        if Some(e.id) == hit.as_ref().map(|h| h.id) {
            continue;
        }
        if e.time < t0 {
            row.false_alarms.push(format!("{} (before the fault)", e.describe()));
        } else if e.rule == exp.rule || exp.allowed.contains(&e.rule.as_str()) {
            let s = match &e.cause {
                Some(c) => format!("{} [{c}]", e.describe()),
                None => e.describe(),
            };
            if !row.also.contains(&s) {
                row.also.push(s);
            }
        } else {
            row.false_alarms.push(e.describe());
        }
    }
    match hit {
        None => row.problems.push(format!(
            "{} did not fire within {GIVE_UP} s; events: {:?}",
            exp.rule,
            all.iter().map(Event::describe).collect::<Vec<_>>()
        )),
        Some(e) => {
            let latency = e.time - t0;
            row.fired = Some(e.describe());
            row.cause = e.cause.clone();
            row.latency = Some(latency);
            row.recommendation = e.recommendation.clone();
            if e.cause.as_deref() != Some(exp.cause) {
                row.problems
                    .push(format!("cause {:?}, expected {}: {}", e.cause, exp.cause, e.text));
            }
            if !exported {
                let m = d.metrics();
                let lines: Vec<&str> = m.lines().filter(|l| l.starts_with("netsight_root_cause{")).collect();
                if !root_cause_exported(&m, exp.rule, e.cause.as_deref().unwrap_or("-")) {
                    row.problems.push(format!(
                        "netsight_root_cause not exported for the firing rule: {lines:?}"
                    ));
                }
            }
            let text = format!("{} {}", e.explanation, e.recommendation);
            for t in exp.text {
                if !text.contains(t) {
                    row.problems.push(format!("cause text lacks {t:?}: {text}"));
                }
            }
            if latency > 30.0 {
                row.problems
                    .push(format!("detected after {latency:.1} s (budget 30 s)"));
            }
        }
    }
    row
}

fn guard<T: 'static>(t: T) -> Guard {
    Box::new(t)
}

/// Starts the scenario helper process (`helper_process` test) inside `ns`.
fn helper(ns: &Netns, spec: &str) -> Proc {
    let exe = std::env::current_exe().expect("current_exe");
    let exe = exe.to_string_lossy().into_owned();
    Proc::spawn_in(
        &ns.name,
        &[&exe, "--exact", "helper_process", "--nocapture", "--test-threads", "1"],
        &[("NETSIGHT_SCENARIO_HELPER", spec)],
        None,
    )
}

/// Waits until something listens on `port` inside `ns`.
fn wait_listening(ns: &Netns, port: u16) {
    for _ in 0..100 {
        let out = ns.exec(&["ss", "-Hltn", &format!("sport = :{port}")]);
        if String::from_utf8_lossy(&out.stdout).contains("LISTEN") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} in {}", ns.name);
}

const STATEFUL_FIREWALL: &str = r#"
table inet fw {
  set blocklist { type ipv4_addr; }
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr @blocklist counter drop comment "blocklist"
    ct state established,related counter accept comment "established"
    ct state invalid counter drop comment "invalid"
    tcp dport { 8080, 5001 } counter accept comment "services"
    udp dport 5353 counter accept comment "dns"
  }
}
"#;

/// 5 % of the sender's packets are dropped by a router-like hop it cannot see
/// (prerouting of the receiver): loss on the path.
pub fn path_loss() -> Row {
    let (s, r) = pair("nl");
    let mut w = Workers::new();
    bulk_sink(&mut w, &r.name, "10.77.0.2:5001");
    serve_reqresp(&mut w, &r.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    bulk_sender(&mut w, &s.name, "10.77.0.2:5001", Some(200e6));
    reqresp_clients(&mut w, &s.name, "10.77.0.2:8080", 4, 25.0, 100, 20_000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "tcp_retransmit_spike",
        labels: &[],
        cause: "path_loss",
        text: &["path"],
        allowed: &["tcp_timeouts_spike"],
    };
    observe("5 % loss on a bulk TCP flow", &mut d, 16.0, &exp, || {
        nft(
            &r,
            "table inet loss {\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  \
             ip saddr 10.77.0.1 numgen random mod 100 < 5 counter drop comment \"injected loss\"\n }\n}\n",
        );
        vec![]
    })
}

/// A 100 Mbit/s link (two taps joined by a userspace wire, each reporting
/// 100 Mb/s through ethtool and shaped to that rate by tbf, as a real NIC
/// serialises) filled by one bulk TCP flow.
pub fn saturation() -> Row {
    require_tool("ethtool", "ethtool");
    let a = Netns::new("nsa");
    let b = Netns::new("nsb");
    let ta = open_tap(&a.name, "tap0");
    let tb = open_tap(&b.name, "tap0");
    let mut w = Workers::new();
    let (ra, wb) = (ta.file.try_clone().expect("dup"), tb.file.try_clone().expect("dup"));
    let (rb, wa) = (tb.file.try_clone().expect("dup"), ta.file.try_clone().expect("dup"));
    w.spawn(move |stop| wire(&ra, &wb, &stop));
    w.spawn(move |stop| wire(&rb, &wa, &stop));
    for (ns, ip) in [(&a, "10.77.0.1/24"), (&b, "10.77.0.2/24")] {
        ns.ip(&["addr", "add", ip, "dev", "tap0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        ns.exec_ok(&[
            "ethtool", "-s", "tap0", "speed", "100", "duplex", "full", "autoneg", "off",
        ]);
        ns.exec_ok(&[
            "tc", "qdisc", "replace", "dev", "tap0", "root", "tbf", "rate", "100mbit", "burst", "64kb", "latency",
            "20ms",
        ]);
    }
    serve_reqresp(&mut w, &b.name, "10.77.0.2:8080");
    bulk_sink(&mut w, &b.name, "10.77.0.2:5001");
    std::thread::sleep(Duration::from_millis(300));
    reqresp_clients(&mut w, &a.name, "10.77.0.2:8080", 2, 20.0, 100, 5000);
    let mut d = Daemon::start(&a);
    let exp = Expect {
        rule: "interface_saturation",
        labels: &[("device", "tap0")],
        cause: "link_full",
        text: &["12500000"],
        allowed: &[
            "interface_bandwidth_spike",
            "tcp_retransmit_spike",
            "tcp_timeouts_spike",
            "interface_tx_drops",
        ],
    };
    let an = a.name.clone();
    observe(
        "bandwidth saturation (100 Mbit/s link)",
        &mut d,
        16.0,
        &exp,
        move || {
            let mut fw = Workers::new();
            bulk_sender(&mut fw, &an, "10.77.0.2:5001", None);
            vec![guard(fw)]
        },
    )
}

/// Real flows fill the server's conntrack table: UDP datagrams to ever new
/// (source port, destination port) pairs, each a new entry.
pub fn conntrack_full() -> Row {
    let (c, s) = pair("nc");
    nft(&s, STATEFUL_FIREWALL);
    sysctl(&s, "net.netfilter.nf_conntrack_udp_timeout=120");
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 4, 20.0, 100, 5000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "conntrack_table_full",
        labels: &[],
        cause: "table_too_small",
        text: &["nf_conntrack_max"],
        allowed: &[
            "conntrack_insert_failed",
            "connection_flood",
            "interface_bandwidth_spike",
            "interface_rx_drops",
            "softnet_backlog_drops",
            "tcp_retransmit_spike",
            "tcp_timeouts_spike",
        ],
    };
    let cn = c.name.clone();
    observe("conntrack table full", &mut d, 12.0, &exp, move || {
        let mut fw = Workers::new();
        udp_flow_flood(&mut fw, &cn, "10.77.0.2", 8, 40_000, 2, Arc::new(AtomicU64::new(0)));
        vec![guard(fw)]
    })
}

/// A listener (process `slowaccept`, listen(1024) capped to net.core.somaxconn=32)
/// that never accepts, and clients that keep connecting.
pub fn accept_overflow() -> Row {
    let (c, s) = pair("na");
    sysctl(&s, "net.core.somaxconn=32");
    let slow = helper(&s, "slowaccept 10.77.0.2:8090 1024");
    wait_listening(&s, 8090);
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 2, 20.0, 100, 5000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "tcp_listen_overflow",
        labels: &[("port", "8090"), ("process", "slowaccept")],
        cause: "backlog_capped_by_somaxconn",
        text: &["net.core.somaxconn: 32 → 4096"],
        allowed: &["tcp_port_connections_spike"],
    };
    let cn = c.name.clone();
    let row = observe("accept-queue overflow", &mut d, 12.0, &exp, move || {
        let mut fw = Workers::new();
        connect_storm(
            &mut fw,
            &cn,
            "10.77.0.2:8090",
            200.0,
            Duration::from_secs(2),
            Arc::new(AtomicU64::new(0)),
        );
        vec![guard(fw)]
    });
    drop(slow);
    row
}

/// hping3 SYN flood from a third namespace that (like a spoofing attacker) never
/// answers the SYN-ACKs: its RSTs are dropped by its own firewall.
pub fn syn_flood() -> Row {
    require_tool("hping3", "hping3");
    let (c, s) = pair("ns");
    let atk = Netns::new("nsx");
    atk.veth_to(&s, "vx", "10.77.1.1/24", "vy", "10.77.1.2/24");
    nft(
        &atk,
        "table inet atk {\n chain out {\n  type filter hook output priority 0;\n  tcp flags rst drop\n }\n}\n",
    );
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "0.0.0.0:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 4, 20.0, 100, 5000);
    churn_client(&mut w, &c.name, "10.77.0.2:8080", 10.0, 1, Arc::new(AtomicU64::new(0)));
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "tcp_syn_flood",
        labels: &[("port", "8080")],
        cause: "syn_flood",
        text: &["net.ipv4.tcp_max_syn_backlog"],
        allowed: &[
            "tcp_syn_queue_drops",
            "interface_bandwidth_spike",
            "softnet_time_squeeze",
        ],
    };
    let atk_name = atk.name.clone();
    observe("SYN flood (hping3)", &mut d, 12.0, &exp, move || {
        let p = Proc::spawn_in(
            &atk_name,
            &["hping3", "-S", "-p", "8080", "-i", "u200", "-q", "10.77.1.2"],
            &[],
            None,
        );
        vec![guard(p)]
    })
}

/// Short-lived outgoing connections overflow net.ipv4.tcp_max_tw_buckets (1000).
pub fn time_wait_flood() -> Row {
    let (c, s) = pair("nt");
    sysctl(&c, "net.ipv4.tcp_max_tw_buckets=1000");
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 2, 10.0, 100, 5000);
    churn_client(&mut w, &c.name, "10.77.0.2:8080", 5.0, 1, Arc::new(AtomicU64::new(0)));
    let mut d = Daemon::start(&c);
    let exp = Expect {
        rule: "tcp_time_wait_pressure",
        labels: &[],
        cause: "tw_buckets_full",
        text: &["net.ipv4.tcp_max_tw_buckets: 1000 →"],
        allowed: &[],
    };
    let cn = c.name.clone();
    observe("TIME_WAIT flood", &mut d, 10.0, &exp, move || {
        let mut fw = Workers::new();
        churn_client(&mut fw, &cn, "10.77.0.2:8080", 400.0, 4, Arc::new(AtomicU64::new(0)));
        vec![guard(fw)]
    })
}

/// A 200-port ephemeral range used up by short-lived connections to one server.
pub fn ephemeral_exhaustion() -> Row {
    let (c, s) = pair("ne");
    sysctl(&c, "net.ipv4.ip_local_port_range=40000 40199");
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 2, 10.0, 100, 5000);
    churn_client(&mut w, &c.name, "10.77.0.2:8080", 1.0, 1, Arc::new(AtomicU64::new(0)));
    let mut d = Daemon::start(&c);
    let exp = Expect {
        rule: "tcp_ephemeral_ports_exhausted",
        labels: &[],
        cause: "time_wait_holds_ports",
        text: &["net.ipv4.ip_local_port_range: 200 ports → `1024 65535`"],
        allowed: &[],
    };
    let cn = c.name.clone();
    let errors = Arc::new(AtomicU64::new(0));
    let e2 = errors.clone();
    let row = observe("ephemeral port exhaustion", &mut d, 10.0, &exp, move || {
        let mut fw = Workers::new();
        churn_client(&mut fw, &cn, "10.77.0.2:8080", 300.0, 3, e2);
        vec![guard(fw)]
    });
    let mut row = row;
    if errors.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        row.problems
            .push("no connect() failed: the port range was not exhausted".into());
    }
    row
}

/// A server process (`leakysrv`) that never closes connections its clients closed.
pub fn close_wait_leak() -> Row {
    let (c, s) = pair("nw");
    let leaky = helper(&s, "leakysrv 10.77.0.2:8081");
    wait_listening(&s, 8081);
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 2, 20.0, 100, 5000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "tcp_close_wait_leak",
        labels: &[("process", "leakysrv")],
        cause: "connection_leak",
        text: &["leakysrv"],
        allowed: &[],
    };
    let cn = c.name.clone();
    let row = observe("CLOSE_WAIT leak", &mut d, 10.0, &exp, move || {
        let mut fw = Workers::new();
        connect_storm(
            &mut fw,
            &cn,
            "10.77.0.2:8081",
            10.0,
            Duration::from_millis(200),
            Arc::new(AtomicU64::new(0)),
        );
        vec![guard(fw)]
    });
    drop(leaky);
    row
}

/// A connect() scan of 30 000 ports at 1000 probes a second.
pub fn port_scan() -> Row {
    let (c, s) = pair("np");
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 4, 25.0, 100, 5000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "port_scan",
        labels: &[],
        cause: "closed_port_probes",
        text: &["resets"],
        allowed: &["tcp_resets_spike"],
    };
    let cn = c.name.clone();
    observe("port scan", &mut d, 12.0, &exp, move || {
        let mut fw = Workers::new();
        connect_scan(
            &mut fw,
            &cn,
            "10.77.0.2",
            1..30_000,
            1000.0,
            Arc::new(AtomicU64::new(0)),
        );
        vec![guard(fw)]
    })
}

/// The peer end of the link goes down and up four times (ip link set down/up).
pub fn flapping() -> Row {
    let (c, s) = pair("nf");
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 2, 20.0, 100, 5000);
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "interface_carrier_flapping",
        labels: &[("device", "vb")],
        cause: "physical_link",
        text: &["ethtool vb"],
        allowed: &["interface_down", "tcp_retransmit_spike", "tcp_timeouts_spike"],
    };
    let cn = c.name.clone();
    observe("interface flapping", &mut d, 8.0, &exp, move || {
        let mut fw = Workers::new();
        fw.spawn(move |stop| {
            for _ in 0..4 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let _ = crate::common::run(&["ip", "-n", &cn, "link", "set", "va", "down"]);
                std::thread::sleep(Duration::from_millis(1000));
                let _ = crate::common::run(&["ip", "-n", &cn, "link", "set", "va", "up"]);
                std::thread::sleep(Duration::from_millis(1500));
            }
        });
        vec![guard(fw)]
    })
}

/// An existing drop rule (`ip saddr @blocklist drop`) starts matching a service's
/// clients when their address is added to the set.
pub fn firewall_drop() -> Row {
    let (c, s) = pair("nd");
    nft(&s, STATEFUL_FIREWALL);
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    std::thread::sleep(Duration::from_millis(200));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 4, 20.0, 100, 5000);
    churn_client(&mut w, &c.name, "10.77.0.2:8080", 20.0, 4, Arc::new(AtomicU64::new(0)));
    let mut d = Daemon::start(&s);
    let exp = Expect {
        rule: "firewall_drop_rule_spike",
        labels: &[("comment", "blocklist")],
        cause: "drop_rule_matching",
        text: &["nft -a list chain inet fw input"],
        allowed: &["tcp_timeouts_spike", "tcp_retransmit_spike"],
    };
    observe("firewall drop rule starts matching", &mut d, 15.0, &exp, || {
        s.exec_ok(&["nft", "add", "element", "inet", "fw", "blocklist", "{ 10.77.0.1 }"]);
        vec![]
    })
}

/// Several minutes of ordinary mixed traffic through a stateful firewall, watched
/// by a daemon on each side: every event is a false alarm.
pub fn control(secs: u64) -> Row {
    let (c, s) = pair("nk");
    nft(&s, STATEFUL_FIREWALL);
    let mut w = Workers::new();
    serve_reqresp(&mut w, &s.name, "10.77.0.2:8080");
    bulk_sink(&mut w, &s.name, "10.77.0.2:5001");
    udp_echo(&mut w, &s.name, "10.77.0.2:5353");
    std::thread::sleep(Duration::from_millis(300));
    bulk_sender(&mut w, &c.name, "10.77.0.2:5001", Some(100e6));
    reqresp_clients(&mut w, &c.name, "10.77.0.2:8080", 4, 25.0, 100, 65_536);
    let churn_errors = Arc::new(AtomicU64::new(0));
    churn_client(&mut w, &c.name, "10.77.0.2:8080", 20.0, 2, churn_errors.clone());
    udp_client(&mut w, &c.name, "10.77.0.2:5353", 50.0);
    std::thread::sleep(Duration::from_secs(2));
    let mut dc = Daemon::start(&c);
    let mut ds = Daemon::start(&s);
    let mut row = Row {
        scenario: format!("control: {secs} s of mixed traffic, no fault"),
        expected: "nothing".into(),
        is_control: true,
        ..Row::default()
    };
    let end = now() + secs as f64;
    while now() < end {
        std::thread::sleep(Duration::from_secs(5));
        if !dc.alive() || !ds.alive() {
            row.problems.push("a netsight daemon died".into());
            break;
        }
    }
    for (side, d) in [("client", &dc), ("server", &ds)] {
        for e in d.events() {
            row.false_alarms.push(format!(
                "{side}: {} [{}] {}",
                e.describe(),
                e.cause.unwrap_or_default(),
                e.text
            ));
        }
    }
    // Silence must come from rules that decided, not from rules that could not
    // evaluate: every rule whose inputs exist in this setup has a value.
    let mut evaluated = std::collections::BTreeSet::new();
    for d in [&dc, &ds] {
        for l in d.metrics().lines().filter(|l| l.starts_with("netsight_rule_value{")) {
            if let Some(r) = l.split("rule=\"").nth(1).and_then(|x| x.split('"').next()) {
                evaluated.insert(r.to_string());
            }
        }
    }
    let missing: Vec<&str> = CONTROL_EVALUATED
        .iter()
        .copied()
        .filter(|r| !evaluated.contains(*r))
        .collect();
    if !missing.is_empty() {
        row.problems
            .push(format!("rules that never evaluated in the control run: {missing:?}"));
    }
    eprintln!("control: rules evaluated: {evaluated:?}");
    // The traffic really flowed: ≥ 60 % of the paced bulk volume left the client.
    let m = dc.metrics();
    let sent = m
        .lines()
        .find(|l| l.starts_with("netsight_network_transmit_bytes_total{device=\"va\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    if sent < 0.6 * 100e6 / 8.0 * secs as f64 {
        row.problems.push(format!(
            "only {sent} bytes sent by the client: the traffic did not flow"
        ));
    }
    let errs = churn_errors.load(std::sync::atomic::Ordering::Relaxed);
    if errs > 0 {
        row.problems
            .push(format!("{errs} short-lived connections failed in the control run"));
    }
    row
}

/// Rules that must have evaluated (have a netsight_rule_value) during the control
/// run. The others need inputs this setup does not have: tcp_orphans reads
/// net.ipv4.tcp_max_orphans, which exists only in the initial network namespace;
/// tcp_close_wait_leak and tcp_syn_flood have groups only while CLOSE_WAIT or
/// half-open sockets exist.
const CONTROL_EVALUATED: &[&str] = &[
    "interface_down",
    "interface_carrier_flapping",
    "interface_errors",
    "interface_rx_drops",
    "interface_tx_drops",
    "softnet_backlog_drops",
    "softnet_time_squeeze",
    "interface_saturation",
    "interface_bandwidth_spike",
    "ip_reassembly_failures",
    "ip_fragmentation_failures",
    "ip_no_route",
    "ip_in_discards",
    "icmp_unreachable_spike",
    "icmp_redirect_spike",
    "tcp_retransmit_spike",
    "tcp_timeouts_spike",
    "tcp_resets_spike",
    "tcp_resets_received_spike",
    "tcp_listen_overflow",
    "tcp_syn_queue_drops",
    "tcp_time_wait_pressure",
    "tcp_ephemeral_ports_exhausted",
    "tcp_memory_pressure",
    "udp_receive_buffer_errors",
    "udp_send_buffer_errors",
    "tcp_port_connections_spike",
    "conntrack_table_full",
    "conntrack_insert_failed",
    "firewall_drop_rule_spike",
    "firewall_new_rule_hot",
    "port_scan",
    "connection_flood",
];
