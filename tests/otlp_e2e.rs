//! OTLP push end to end against a real OpenTelemetry receiver: rotel-agent (PyPI
//! `rotel`, installed into `.venv-test/` by scripts/test.sh), which prints every metric
//! it receives (name, unit, type, monotonicity, temporality, attributes, values).
//!
//! Layout: netsight runs in namespace N, rotel in namespace R, joined by a veth pair.
//! All OTLP traffic and every scrape cross the veth, so N's loopback stays quiet and
//! its counters can be compared exactly with `netsight collect --once`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Netns;

const N_ADDR: &str = "10.213.0.1";
const R_ADDR: &str = "10.213.0.2";

fn rotel_agent() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/lib");
    let found = std::fs::read_dir(&venv).ok().and_then(|rd| {
        rd.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "rotel-agent not found under {}/python3*/site-packages/rotel/: run ./scripts/test.sh \
             (it creates .venv-test/ and pip-installs rotel)",
            venv.display()
        )
    })
}

fn sigterm_and_wait(child: &mut Child, what: &str, within: Duration) -> bool {
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what} ignored SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// A rotel-agent in namespace R, its debug log (stdout) in `out`.
struct Rotel {
    child: Child,
    out: PathBuf,
}

impl Rotel {
    fn start(ns: &Netns, dir: &Path, tag: &str) -> Rotel {
        let out = dir.join(format!("rotel-{tag}.out"));
        let log = std::fs::File::create(&out).expect("rotel output file");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(rotel_agent())
            .args(["start", "--otlp-grpc-endpoint", &format!("{R_ADDR}:4317")])
            .args(["--otlp-http-endpoint", &format!("{R_ADDR}:4318")])
            .args(["--exporter", "blackhole", "--debug-log", "metrics"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.join(format!("rotel-{tag}.pid")))
            .arg("--log-file")
            .arg(dir.join(format!("rotel-{tag}.log")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start rotel-agent");
        let r = Rotel { child, out };
        // Ready when both receivers accept connections.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = ns.enter(|| {
                [4317u16, 4318].iter().all(|p| {
                    TcpStream::connect_timeout(&format!("{R_ADDR}:{p}").parse().expect("addr"), Duration::from_secs(1))
                        .is_ok()
                })
            });
            if up {
                return r;
            }
            assert!(Instant::now() < deadline, "rotel-agent did not start: {}", r.text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&std::fs::read(&self.out).unwrap_or_default()))
    }

    /// Complete batches received so far (the last one may still be being written).
    fn batches(&self) -> Vec<Batch> {
        let mut b = parse(&self.text());
        b.pop();
        b
    }

    fn stop(mut self) {
        assert!(
            sigterm_and_wait(&mut self.child, "rotel-agent", Duration::from_secs(10)),
            "rotel-agent did not stop"
        );
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, Default, Clone)]
struct Point {
    attrs: BTreeMap<String, String>,
    start: u64,
    time: u64,
    value: f64,
}

#[derive(Debug, Default, Clone)]
struct Metric {
    name: String,
    unit: String,
    data_type: String,
    monotonic: Option<bool>,
    temporality: Option<String>,
    points: Vec<Point>,
}

#[derive(Debug, Default, Clone)]
struct Batch {
    resource: BTreeMap<String, String>,
    metrics: Vec<Metric>,
}

impl Batch {
    fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The single point of `name` whose attributes include every matcher.
    fn point(&self, name: &str, matchers: &[(&str, &str)]) -> Option<&Point> {
        let m = self.metric(name)?;
        let mut found = m.points.iter().filter(|p| {
            matchers
                .iter()
                .all(|(k, v)| p.attrs.get(*k).map(String::as_str) == Some(*v))
        });
        let p = found.next()?;
        assert!(found.next().is_none(), "{name}{matchers:?} matches several points");
        Some(p)
    }

    fn time(&self) -> u64 {
        self.metrics
            .iter()
            .flat_map(|m| m.points.iter().map(|p| p.time))
            .max()
            .unwrap_or(0)
    }
}

/// `Str(eth0)` → `eth0`.
fn attr_value(v: &str) -> String {
    match (v.find('('), v.ends_with(')')) {
        (Some(i), true) => v[i + 1..v.len() - 1].to_string(),
        _ => v.to_string(),
    }
}

/// Parses rotel's detailed debug log (the collector "debug exporter" layout).
fn parse(text: &str) -> Vec<Batch> {
    #[derive(PartialEq)]
    enum At {
        Resource,
        Descriptor,
        Point,
        Other,
    }
    let mut out: Vec<Batch> = Vec::new();
    let mut at = At::Other;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("ResourceMetrics #") {
            out.push(Batch::default());
            at = At::Other;
            continue;
        }
        let Some(b) = out.last_mut() else { continue };
        if t == "Resource attributes:" {
            at = At::Resource;
        } else if t.starts_with("ScopeMetrics") || t.starts_with("InstrumentationScope") {
            at = At::Other;
        } else if t.starts_with("Metric #") {
            b.metrics.push(Metric::default());
            at = At::Other;
        } else if t == "Descriptor:" {
            at = At::Descriptor;
        } else if t.starts_with("NumberDataPoints #") {
            if let Some(m) = b.metrics.last_mut() {
                m.points.push(Point::default());
            }
            at = At::Point;
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else { continue };
            match at {
                At::Resource => {
                    b.resource.insert(k.to_string(), attr_value(v));
                }
                At::Descriptor => {
                    let Some(m) = b.metrics.last_mut() else { continue };
                    match k {
                        "Name" => m.name = v.to_string(),
                        "Unit" => m.unit = v.to_string(),
                        "DataType" => m.data_type = v.to_string(),
                        "IsMonotonic" => m.monotonic = Some(v == "true"),
                        "AggregationTemporality" => m.temporality = Some(v.to_string()),
                        _ => {}
                    }
                }
                At::Point => {
                    if let Some(p) = b.metrics.last_mut().and_then(|m| m.points.last_mut()) {
                        p.attrs.insert(k.to_string(), attr_value(v));
                    }
                }
                At::Other => {}
            }
        } else if at == At::Point {
            let Some(p) = b.metrics.last_mut().and_then(|m| m.points.last_mut()) else {
                continue;
            };
            if let Some(v) = t.strip_prefix("StartTimestamp: ") {
                p.start = v.parse().unwrap_or(0);
            } else if let Some(v) = t.strip_prefix("Timestamp: ") {
                p.time = v.parse().unwrap_or(0);
            } else if let Some(v) = t.strip_prefix("Value: ") {
                p.value = v.parse().unwrap_or(f64::NAN);
            }
        }
    }
    out
}

/// Shared by the daemon and `collect --once`. Debug builds on a busy test machine
/// would otherwise trip the default CPU budget and 1 s collector timeout.
const BASE_CONFIG: &str = "interval: 1s\nbudget: {cpu_percent: 100.0, collector_timeout: 5s}\n\
collectors: {sockets: {processes: false}}\n";

fn collect(s: &Setup) -> common::Snapshot {
    let cfg = s.dir.path().join("collect.yaml");
    std::fs::write(&cfg, BASE_CONFIG).expect("write config");
    s.n.collect_json(&["--config", &cfg.to_string_lossy()])
}

/// `netsight serve` in namespace N with OTLP on; stderr goes to a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &Netns, dir: &Path, otlp_yaml: &str) -> Daemon {
        let cfg = dir.join("netsight.yaml");
        std::fs::write(&cfg, format!("{BASE_CONFIG}otlp:\n{otlp_yaml}")).expect("write config");
        let log = dir.join("netsight.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_netsight"), "serve"])
            .args(["--listen", &format!("{N_ADDR}:9977"), "--config"])
            .arg(&cfg)
            .env("NETSIGHT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start netsight serve");
        Daemon { child, log }
    }

    fn pid(&self) -> u32 {
        // `ip netns exec` execs netsight: the child PID is the daemon's.
        self.child.id()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET from namespace R over the veth: (status, body).
fn get(r: &Netns, path: &str) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n");
    r.enter(move || {
        let addr = format!("{N_ADDR}:9977").parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.split_whitespace().nth(1)?.parse().ok()?, body.to_string()))
    })
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Setup {
    n: Netns,
    r: Netns,
    dir: tempfile::TempDir,
}

/// Two namespaces joined by a veth; a few datagrams on N's loopback so that its counters
/// are non-zero (and then constant: nothing else uses it).
fn setup() -> Setup {
    let n = Netns::new("notlp");
    let r = Netns::new("notlr");
    n.veth_to(&r, "ns0", &format!("{N_ADDR}/24"), "nr0", &format!("{R_ADDR}/24"));
    n.enter(|| {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind on lo");
        let to = sock.local_addr().expect("addr");
        for _ in 0..5 {
            sock.send_to(b"netsight otlp e2e", to).expect("send on lo");
        }
    });
    Setup {
        n,
        r,
        dir: tempfile::tempdir().expect("tempdir"),
    }
}

fn wait_for_batches(rotel: &Rotel, daemon: &Daemon, n: usize, within: Duration) -> Vec<Batch> {
    let deadline = Instant::now() + within;
    loop {
        let b = rotel.batches();
        if b.len() >= n {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "rotel received {} batches within {within:?}, wanted {n}\nnetsight log:\n{}",
            b.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// What both transports must deliver: resource, semantic-convention names, units,
/// attributes, and values equal to what netsight reads itself.
fn check_content(s: &Setup, rotel: &Rotel, daemon: &Daemon) {
    wait_for_batches(rotel, daemon, 3, Duration::from_secs(40));
    // The first exports may precede the first full collection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let batches = loop {
        let b = rotel.batches();
        let complete = b.last().is_some_and(|l| {
            [
                "system.network.io",
                "system.network.connection.count",
                "netsight.rules.loaded",
            ]
            .iter()
            .all(|n| l.metric(n).is_some())
        });
        if complete {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "batches stay incomplete: {:?}",
            b.last().map(|l| l.metrics.len())
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let last = batches.last().expect("a batch");

    // Resource.
    let res = &last.resource;
    assert_eq!(res.get("service.name").map(String::as_str), Some("netsight"), "{res:?}");
    assert_eq!(
        res.get("service.version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(res.get("host.name").is_some_and(|h| !h.is_empty()), "{res:?}");
    if let Some(id) = machine_id() {
        assert_eq!(res.get("host.id"), Some(&id));
    }
    assert_eq!(res.get("test.run").map(String::as_str), Some("otlp-e2e"));

    // Semantic-convention network metrics: type, unit, attributes.
    for (name, unit) in [
        ("system.network.io", "By"),
        ("system.network.packet.count", "{packet}"),
        ("system.network.packet.dropped", "{packet}"),
        ("system.network.errors", "{error}"),
    ] {
        let m = last.metric(name).unwrap_or_else(|| panic!("{name} not received"));
        assert_eq!((m.unit.as_str(), m.data_type.as_str()), (unit, "Sum"), "{name}");
        assert_eq!(m.monotonic, Some(true), "{name}");
        assert_eq!(
            m.temporality.as_deref(),
            Some("AGGREGATION_TEMPORALITY_CUMULATIVE"),
            "{name}"
        );
        for dir in ["receive", "transmit"] {
            for dev in ["lo", "ns0"] {
                assert!(
                    last.point(name, &[("network.interface.name", dev), ("network.io.direction", dir)])
                        .is_some(),
                    "{name} has no point for {dev} {dir}: {:?}",
                    m.points
                );
            }
        }
    }
    let conn = last
        .metric("system.network.connection.count")
        .expect("connection count");
    assert_eq!((conn.unit.as_str(), conn.data_type.as_str()), ("{connection}", "Sum"));
    assert_eq!(conn.monotonic, Some(false));
    assert!(conn.points.iter().all(|p| {
        p.attrs.contains_key("network.connection.state")
            && matches!(
                p.attrs.get("network.transport").map(String::as_str),
                Some("tcp" | "udp")
            )
    }));

    // Values: N's loopback is quiet, so OTLP, collect --once and /metrics agree exactly.
    let snap = collect(s);
    let (_, body) = get(&s.r, "/metrics").expect("scrape");
    for (prom, otel) in [
        ("netsight_network_receive_bytes_total", "system.network.io"),
        ("netsight_network_receive_packets_total", "system.network.packet.count"),
    ] {
        let want = snap.value(prom, &[("device", "lo")]);
        assert!(want > 0.0, "the datagrams should have counted on lo");
        let got = last
            .point(
                otel,
                &[("network.interface.name", "lo"), ("network.io.direction", "receive")],
            )
            .expect("lo point")
            .value;
        assert_eq!(got, want, "{otel} lo receive vs {prom}");
        assert_eq!(metric(&body, &format!("{prom}{{device=\"lo\"}}")), Some(want));
    }
    let tx = snap.value("netsight_network_transmit_bytes_total", &[("device", "lo")]);
    let got = last
        .point(
            "system.network.io",
            &[("network.interface.name", "lo"), ("network.io.direction", "transmit")],
        )
        .expect("lo transmit")
        .value;
    assert_eq!(got, tx);
    // Our own listener: exactly what collect --once counts.
    let listen = snap.value("netsight_tcp_connections", &[("family", "ipv4"), ("state", "listen")]);
    assert!(listen >= 1.0);
    let got = last
        .point(
            "system.network.connection.count",
            &[
                ("network.transport", "tcp"),
                ("network.type", "ipv4"),
                ("network.connection.state", "listen"),
            ],
        )
        .expect("tcp listen point")
        .value;
    assert_eq!(got, listen);

    // netsight.* names from the catalog, including the rule engine's series.
    let up = last.metric("netsight.collector.up").expect("netsight.collector.up");
    assert_eq!(up.data_type, "Gauge");
    assert_eq!(
        last.point("netsight.collector.up", &[("collector", "netdev")])
            .map(|p| p.value),
        Some(1.0)
    );
    let dur = last.metric("netsight.collector.duration").expect("collector duration");
    assert_eq!(dur.unit, "s");
    let retrans = last
        .metric("netsight.netstat.tcp.retrans_segs")
        .expect("netstat counter");
    assert_eq!((retrans.data_type.as_str(), retrans.monotonic), ("Sum", Some(true)));
    let loaded = metric(&body, "netsight_rules_loaded").expect("rules loaded");
    assert_eq!(last.point("netsight.rules.loaded", &[]).map(|p| p.value), Some(loaded));
    for (prom, otel) in [
        ("netsight_anomaly", "netsight.anomaly"),
        ("netsight_root_cause", "netsight.root_cause"),
        ("netsight_rule_value", "netsight.rule.value"),
    ] {
        let n_prom = body.lines().filter(|l| l.starts_with(&format!("{prom}{{"))).count();
        let n_otel = last.metric(otel).map(|m| m.points.len()).unwrap_or(0);
        assert_eq!(
            n_otel > 0,
            n_prom > 0,
            "{otel}: {n_otel} points, {prom}: {n_prom} series"
        );
    }
    assert!(last.metric("netsight.otlp.exports").is_some());

    // Cumulative: constant start time, advancing timestamps, counters never decrease.
    // ns0 carries the exports themselves, so its transmit counter keeps growing.
    let series = |b: &Batch| {
        b.point(
            "system.network.io",
            &[("network.interface.name", "ns0"), ("network.io.direction", "transmit")],
        )
        .cloned()
    };
    let pts: Vec<Point> = batches.iter().filter_map(series).collect();
    assert!(pts.len() >= 3, "{pts:?}");
    for w in pts.windows(2) {
        assert_eq!(w[0].start, w[1].start, "start time of a cumulative series changed");
        assert!(w[1].time > w[0].time);
        assert!(w[1].value >= w[0].value, "counter went down: {w:?}");
    }
    assert!(
        pts.last().expect("point").value > pts[0].value,
        "exports should count on ns0"
    );

    // A changing counter lies between what netsight reads before and after: A ≤ V ≤ B.
    let a_time = now_ns();
    let a = collect(s).value("netsight_network_transmit_bytes_total", &[("device", "ns0")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        // The exported snapshot is at most one collection interval older than the export.
        if let Some(p) = rotel
            .batches()
            .iter()
            .rev()
            .find(|b| b.time() > a_time + 2_500_000_000)
            .and_then(series)
        {
            break p.value;
        }
        assert!(Instant::now() < deadline, "no batch after the reference read");
        std::thread::sleep(Duration::from_millis(250));
    };
    let b = collect(s).value("netsight_network_transmit_bytes_total", &[("device", "ns0")]);
    assert!(a <= v && v <= b, "ns0 transmit: {a} ≤ {v} ≤ {b} does not hold");
}

#[test]
fn grpc_export_matches_what_netsight_reads() {
    let s = setup();
    let rotel = Rotel::start(&s.r, s.dir.path(), "grpc");
    let mut daemon = Daemon::start(
        &s.n,
        s.dir.path(),
        &format!(
            "  enabled: true\n  protocol: grpc\n  endpoint: http://{R_ADDR}:4317\n  interval: 1s\n  timeout: 2s\n  \
             resource: {{test.run: otlp-e2e}}\n"
        ),
    );
    check_content(&s, &rotel, &daemon);
    assert!(
        sigterm_and_wait(&mut daemon.child, "netsight", Duration::from_secs(15)),
        "netsight did not shut down"
    );
    rotel.stop();
}

#[test]
fn http_protobuf_export_matches_what_netsight_reads() {
    let s = setup();
    let rotel = Rotel::start(&s.r, s.dir.path(), "http");
    let mut daemon = Daemon::start(
        &s.n,
        s.dir.path(),
        &format!(
            "  enabled: true\n  protocol: http\n  endpoint: http://{R_ADDR}:4318\n  interval: 1s\n  timeout: 2s\n  \
             gzip: false\n  headers: {{x-test: e2e}}\n  resource: {{test.run: otlp-e2e}}\n"
        ),
    );
    check_content(&s, &rotel, &daemon);
    assert!(
        sigterm_and_wait(&mut daemon.child, "netsight", Duration::from_secs(15)),
        "netsight did not shut down"
    );
    rotel.stop();
}

/// The collector goes away for 20 s and comes back. With a 1 s export interval that is
/// 20 cycles: the backoff climbs through its 1, 3, 7 and 15-cycle steps. Nothing is
/// queued while it is down (each cycle sends current cumulative values), so a longer
/// outage would only add identical skipped cycles.
#[test]
fn collector_outage_recovery_without_restart() {
    let s = setup();
    let rotel = Rotel::start(&s.r, s.dir.path(), "before");
    let daemon = Daemon::start(
        &s.n,
        s.dir.path(),
        &format!("  enabled: true\n  endpoint: http://{R_ADDR}:4317\n  interval: 1s\n  timeout: 2s\n"),
    );
    wait_for_batches(&rotel, &daemon, 3, Duration::from_secs(40));
    let (_, body) = get(&s.r, "/metrics").expect("scrape");
    let failures0 = metric(&body, "netsight_otlp_export_failures_total").expect("failure counter");
    let exports0 = metric(&body, "netsight_otlp_exports_total").expect("export counter");
    assert!(exports0 >= 1.0);
    let rss0 = daemon.rss_kib();

    rotel.stop();
    let outage = Instant::now();
    let mut last_ts = 0.0;
    let mut advanced = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        let t = Instant::now();
        let (status, body) = get(&s.r, "/metrics").expect("scrape during the outage");
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "scrape took {:?}", t.elapsed());
        let ts = metric(&body, "netsight_snapshot_timestamp_seconds").expect("timestamp");
        if ts > last_ts {
            advanced += 1;
            last_ts = ts;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        advanced >= 15,
        "collection stalled during the outage ({advanced} new snapshots in 20 s)"
    );
    let (_, body) = get(&s.r, "/metrics").expect("scrape");
    let failures1 = metric(&body, "netsight_otlp_export_failures_total").expect("failure counter");
    assert!(
        failures1 > failures0,
        "no export failure counted: {failures0} → {failures1}\n{}",
        daemon.log()
    );
    // Bounded retries: at most three attempts per cycle, and backoff skips cycles.
    assert!(failures1 - failures0 <= 3.0 * 20.0, "{failures0} → {failures1}");
    let rss1 = daemon.rss_kib();

    let rotel = Rotel::start(&s.r, s.dir.path(), "after");
    let restarted = Instant::now();
    let back = wait_for_batches(&rotel, &daemon, 2, Duration::from_secs(60));
    eprintln!(
        "outage: failures {failures0} → {failures1}, RSS {rss0} → {rss1} KiB, two batches {:?} after the restart",
        restarted.elapsed()
    );
    assert!(back.last().expect("batch").metric("system.network.io").is_some());
    let (_, body) = get(&s.r, "/metrics").expect("scrape");
    assert!(metric(&body, "netsight_otlp_exports_total").expect("exports") > exports0);
    assert!(daemon.log().contains("OTLP export recovered"), "{}", daemon.log());
    // Nothing accumulates while the collector is down.
    assert!(
        rss1 < rss0 + 16 * 1024,
        "RSS grew from {rss0} to {rss1} KiB during the outage"
    );
    rotel.stop();
}

#[test]
fn debug_log_parser_reads_rotel_layout() {
    let sample = "\x1b[1mResourceMetrics #0\x1b[0m\nResource attributes:\n     -> service.name: Str(netsight)\n\
ScopeMetrics #0\nMetric #0\nDescriptor:\n     -> Name: system.network.io\n     -> Description: x\n     -> Unit: By\n\
     -> DataType: Sum\n     -> IsMonotonic: true\n     -> AggregationTemporality: AGGREGATION_TEMPORALITY_CUMULATIVE\n\
NumberDataPoints #0\nData point attributes:\n     -> network.interface.name: Str(lo)\nStartTimestamp: 5\nTimestamp: 7\nValue: 42\n";
    let b = parse(&strip_ansi(sample));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].resource.get("service.name").map(String::as_str), Some("netsight"));
    let p = b[0]
        .point("system.network.io", &[("network.interface.name", "lo")])
        .expect("point");
    assert_eq!((p.start, p.time, p.value), (5, 7, 42.0));
    assert_eq!(b[0].metrics[0].unit, "By");
}

/// Test CA, a server certificate for R's address and a client certificate (openssl).
fn make_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (Debian package `openssl`)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "ec_paramgen_curve:prime256v1";
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        ec,
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=otlp test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    for (name, eku, san) in [
        ("server", "serverAuth", format!("IP:{R_ADDR}")),
        ("client", "clientAuth", "DNS:netsight".into()),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            ec,
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={eku}\nsubjectAltName={san}\n"),
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

/// socat terminating TLS (client certificate required) in front of rotel's plain port.
struct TlsProxy(Child);

impl TlsProxy {
    fn start(ns: &Netns, dir: &Path, listen: u16, to: u16) -> TlsProxy {
        use std::os::unix::process::CommandExt;
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "socat"])
            .arg(format!(
                "OPENSSL-LISTEN:{listen},bind={R_ADDR},reuseaddr,fork,cert={},key={},cafile={},verify=1",
                p("server.crt"),
                p("server.key"),
                p("ca.crt")
            ))
            .arg(format!("TCP:{R_ADDR}:{to}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the per-connection children are stopped with it.
            .process_group(0)
            .spawn()
            .expect("socat must be installed (Debian package `socat`)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.enter(move || TcpStream::connect((R_ADDR, listen)).is_ok()) {
            assert!(Instant::now() < deadline, "socat did not listen on {listen}");
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsProxy(child)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child this test started.
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// OTLP over TLS with a client certificate (mutual TLS), gRPC and HTTP, through a TLS
/// terminator in front of rotel (which has no TLS receiver itself).
#[test]
fn tls_with_client_certificate_over_grpc_and_http() {
    let s = setup();
    let pki = s.dir.path().join("pki");
    std::fs::create_dir(&pki).expect("mkdir");
    make_pki(&pki);
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let rotel = Rotel::start(&s.r, s.dir.path(), "tls");
    let _grpc = TlsProxy::start(&s.r, &pki, 4417, 4317);
    let _http = TlsProxy::start(&s.r, &pki, 4418, 4318);
    let tls_full = format!(
        "  tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n",
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    for (protocol, port) in [("grpc", 4417), ("http", 4418)] {
        let before = rotel.batches().len();
        let mut daemon = Daemon::start(
            &s.n,
            s.dir.path(),
            &format!("  enabled: true\n  protocol: {protocol}\n  endpoint: https://{R_ADDR}:{port}\n  interval: 1s\n{tls_full}"),
        );
        let got = wait_for_batches(&rotel, &daemon, before + 2, Duration::from_secs(40));
        assert!(
            got.last().expect("batch").metric("system.network.io").is_some(),
            "{protocol}"
        );
        assert!(sigterm_and_wait(&mut daemon.child, "netsight", Duration::from_secs(15)));
    }
    // Without the client certificate the terminator refuses the handshake: exports
    // fail, are counted, and nothing arrives.
    let before = rotel.batches().len();
    let daemon = Daemon::start(
        &s.n,
        s.dir.path(),
        &format!(
            "  enabled: true\n  endpoint: https://{R_ADDR}:4417\n  interval: 1s\n  tls: {{ca_file: {}}}\n",
            p("ca.crt")
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let failures = get(&s.r, "/metrics").and_then(|(_, b)| metric(&b, "netsight_otlp_export_failures_total"));
        if failures.is_some_and(|f| f >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failure counted without a client certificate\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        rotel.batches().len(),
        before,
        "a batch arrived without a client certificate"
    );
    drop(daemon);
    rotel.stop();
}
