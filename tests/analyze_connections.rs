//! `netsight analyze connections|listening|bandwidth|tcp` against the real kernel,
//! each in a fresh network namespace (deleted on drop): counts are compared with
//! `ss` in the same quiet instant, planted conflicts and exposures are found,
//! known traffic is measured, MIB rates are checked against /proc/net/snmp, and a
//! run without privileges says what is missing while its JSON still parses.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use common::Netns;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_netsight");
const PYTHON: &str = "/usr/bin/python3";

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "output is not JSON ({e}); status {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "netsight failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .expect("comm")
        .trim_end()
        .to_string()
}

/// A child process in the namespace (`ip netns exec` execs in place, so the
/// child's pid is the program's), killed and reaped on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(ns: &Netns, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Proc { child, stdin, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line the child prints.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read child");
        assert!(!l.is_empty(), "child {} exited early", self.pid());
        l.trim_end().to_string()
    }

    fn send(&mut self, line: &str) {
        let w = self.stdin.as_mut().expect("stdin");
        writeln!(w, "{line}").expect("write child");
        w.flush().expect("flush");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// netsight in the namespace, in the background (for sampled commands).
fn spawn_netsight(ns: &Netns, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, BIN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netsight")
}

// ---------------------------------------------------------------------------
// connections vs ss

fn listener(addr: &str, backlog: i32) -> TcpListener {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    // SAFETY: listen on a socket fd we own.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
    l
}

fn read_eof(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = [0u8; 4096];
    while s.read(&mut buf).expect("read to EOF") > 0 {}
}

/// Sockets in several states, created inside the namespace and held open.
fn connection_scenario() -> Vec<OwnedFd> {
    let mut held: Vec<OwnedFd> = Vec::new();
    let l1 = listener("127.0.0.1:7100", 16);
    // Three served connections with a little traffic.
    for _ in 0..3 {
        let mut c = TcpStream::connect("127.0.0.1:7100").expect("connect");
        let (mut s, _) = l1.accept().expect("accept");
        c.write_all(&[1u8; 2000]).expect("write");
        let mut got = [0u8; 2000];
        s.read_exact(&mut got).expect("read");
        held.push(c.into());
        held.push(s.into());
    }
    // Client closes first and the server follows: the client port ends in TIME_WAIT.
    for _ in 0..2 {
        let c = TcpStream::connect("127.0.0.1:7100").expect("tw");
        let (mut s, _) = l1.accept().expect("accept tw");
        drop(c);
        read_eof(&mut s);
        drop(s);
    }
    // The client closes, the server never does: CLOSE_WAIT (held) / FIN_WAIT2 (orphan).
    let c = TcpStream::connect("127.0.0.1:7100").expect("cw");
    let (mut s, _) = l1.accept().expect("accept cw");
    drop(c);
    read_eof(&mut s);
    held.push(s.into());
    // One connection left waiting in the accept queue: its server side has no file.
    held.push(TcpStream::connect("127.0.0.1:7100").expect("queued").into());
    held.push(l1.into());
    // IPv6 listener with one connection, and an idle wildcard listener.
    let l2 = listener("[::1]:7101", 8);
    let c = TcpStream::connect("[::1]:7101").expect("v6");
    let (s, _) = l2.accept().expect("accept v6");
    held.extend([c.into(), s.into(), l2.into()]);
    held.push(listener("0.0.0.0:7102", 4).into());
    held
}

fn ss_state(s: &str) -> &'static str {
    match s {
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
        other => panic!("unknown ss state {other}"),
    }
}

/// Per state, per local port, and sockets held by `comm`, from `ss -tanp`.
type SsCounts = (BTreeMap<String, u64>, BTreeMap<u16, u64>, u64, u64);

fn ss_counts(text: &str, comm: &str) -> SsCounts {
    let mut states = BTreeMap::new();
    let mut ports = BTreeMap::new();
    let (mut mine, mut total) = (0, 0);
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        *states.entry(ss_state(cols[0]).to_string()).or_insert(0) += 1;
        let port: u16 = cols[3].rsplit(':').next().expect("port").parse().expect("numeric port");
        *ports.entry(port).or_insert(0) += 1;
        if line.contains(&format!("((\"{comm}\",")) {
            mine += 1;
        }
        total += 1;
    }
    (states, ports, mine, total)
}

#[test]
fn connections_json_counts_equal_ss_in_the_same_instant() {
    let ns = Netns::new("nsa-conn");
    let _held = ns.enter(connection_scenario);
    let comm = my_comm();
    // A quiet instant: ss reads the same before and after netsight.
    let mut attempt = 0;
    let (report, ss) = loop {
        attempt += 1;
        let before = ns.exec_ok(&["ss", "-tanp"]);
        let out = ns.netsight(&["analyze", "connections", "--json", "--processes", "--top", "0"]);
        let after = ns.exec_ok(&["ss", "-tanp"]);
        if before == after || attempt == 5 {
            assert_eq!(before, after, "the namespace never became quiet");
            break (ok_json(&out), ss_counts(&before, &comm));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (states, ports, mine, total) = ss;
    assert_eq!(report["total"], total, "{report:#}");
    let got_states: BTreeMap<String, u64> = report["states"]
        .as_array()
        .expect("states")
        .iter()
        .map(|s| {
            (
                s["state"].as_str().expect("name").to_string(),
                s["count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(got_states, states);
    // The scenario's states are all there.
    for st in ["listen", "established", "time_wait", "close_wait", "fin_wait2"] {
        assert!(got_states.contains_key(st), "{st} missing: {got_states:?}");
    }
    let shares: f64 = report["states"]
        .as_array()
        .expect("states")
        .iter()
        .map(|s| s["share_percent"].as_f64().expect("share"))
        .sum();
    assert!((shares - 100.0).abs() < 0.5, "{shares}");
    let got_ports: BTreeMap<u16, u64> = report["local_ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().expect("port") as u16,
                p["sockets"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(got_ports, ports);
    let procs = report["processes"].as_array().expect("processes");
    let got_mine: u64 = procs
        .iter()
        .filter(|p| p["comm"] == comm.as_str())
        .map(|p| p["sockets"].as_u64().expect("sockets"))
        .sum();
    assert_eq!(got_mine, mine, "sockets of {comm}: {procs:#?}");
    let me = procs
        .iter()
        .find(|p| p["pid"] == std::process::id())
        .expect("this process");
    let listeners: Vec<&str> = me["listeners"]
        .as_array()
        .expect("l")
        .iter()
        .map(|v| v.as_str().expect("s"))
        .collect();
    assert_eq!(listeners, ["0.0.0.0:7102", "127.0.0.1:7100", "[::1]:7101"]);
    // The CLOSE_WAIT warning names this process.
    let cw = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["kind"] == "close_wait")
        .expect("close_wait");
    assert!(
        cw["cause"]
            .as_str()
            .expect("cause")
            .contains(&format!("{comm} (pid {})", std::process::id())),
        "{cw:#}"
    );
    assert!(
        report["limitations"].as_array().expect("limitations").is_empty(),
        "{report:#}"
    );

    // Filters: only TIME_WAIT; only port 7101.
    let tw = ok_json(&ns.netsight(&["analyze", "connections", "--json", "--state", "time-wait"]));
    assert_eq!(tw["total"], states["time_wait"]);
    assert_eq!(tw["filters"]["state"], "time_wait");
    assert!(tw["processes"].is_null());
    let p = ok_json(&ns.netsight(&["analyze", "connections", "--json", "--port", "7101"]));
    assert_eq!(p["total"], 3, "listener and both ends of the connection: {p:#}");

    // Text for a person: the tables and the warning.
    let out = ns.netsight(&["analyze", "connections", "--processes"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "TCP sockets:",
        "STATE",
        "close_wait",
        "Top processes",
        "Sample connections",
        "CLOSE_WAIT",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // A bad state is a usage error.
    assert_eq!(
        ns.netsight(&["analyze", "connections", "--state", "bogus"])
            .status
            .code(),
        Some(2)
    );
}

// ---------------------------------------------------------------------------
// listening: conflicts and exposure

const REUSEPORT_LISTENER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
sys.stdin.read()
"#;

#[test]
fn listening_finds_a_planted_port_conflict_and_wildcard_exposure() {
    let ns = Netns::new("nsa-listen");
    let mut a = Proc::spawn(&ns, &[PYTHON, "-c", REUSEPORT_LISTENER, "7200"]);
    let mut b = Proc::spawn(&ns, &[PYTHON, "-c", REUSEPORT_LISTENER, "7200"]);
    assert_eq!(a.line(), "ready");
    assert_eq!(b.line(), "ready");
    let _held: Vec<OwnedFd> = ns.enter(|| {
        vec![
            listener("0.0.0.0:7201", 16).into(),   // allow-listed
            listener("127.0.0.1:7202", 16).into(), // loopback only
            UdpSocket::bind("0.0.0.0:7203").expect("udp").into(),
        ]
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("netsight.yaml");
    std::fs::write(&cfg, "analyze:\n  exposure_allowlist: [\"tcp/7201\"]\n").expect("config");
    let cfg = cfg.to_str().expect("utf-8 path");

    let r = ok_json(&ns.netsight(&["analyze", "listening", "--processes", "--json", "--config", cfg]));
    let conflicts = r["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{r:#}");
    let c = &conflicts[0];
    assert_eq!((c["protocol"].as_str(), c["port"].as_u64()), (Some("tcp"), Some(7200)));
    assert_eq!(c["reuseport"], true);
    assert_eq!(c["severity"], "warning");
    assert_eq!(c["sockets"], 2);
    let mut pids: Vec<u64> = c["processes"]
        .as_array()
        .expect("p")
        .iter()
        .map(|p| p["pid"].as_u64().expect("pid"))
        .collect();
    pids.sort();
    let mut want = vec![a.pid() as u64, b.pid() as u64];
    want.sort();
    assert_eq!(pids, want);
    assert!(c["processes"]
        .as_array()
        .expect("p")
        .iter()
        .all(|p| p["process"] == "python3"));
    assert!(c["message"].as_str().expect("m").contains("SO_REUSEPORT"));

    let listener_row = |port: u64, proto: &str| {
        r["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .filter(|l| l["port"] == port && l["protocol"] == proto)
            .cloned()
            .collect::<Vec<Value>>()
    };
    let l7200 = listener_row(7200, "tcp");
    assert_eq!(l7200.len(), 2);
    assert!(l7200
        .iter()
        .all(|l| l["exposure_risk"] == true && l["wildcard"] == true && l["backlog"] == 8));
    let l7201 = listener_row(7201, "tcp");
    assert_eq!(
        (l7201[0]["exposure_risk"].as_bool(), l7201[0]["allowlisted"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(l7201[0]["pid"], std::process::id());
    let l7202 = listener_row(7202, "tcp");
    assert_eq!(
        (l7202[0]["wildcard"].as_bool(), l7202[0]["exposure_risk"].as_bool()),
        (Some(false), Some(false))
    );
    let l7203 = listener_row(7203, "udp");
    assert_eq!(l7203[0]["exposure_risk"], true);
    assert!(l7203[0]["backlog"].is_null());
    let exposed: Vec<(String, u64)> = r["exposure"]
        .as_array()
        .expect("exposure")
        .iter()
        .map(|e| {
            (
                e["protocol"].as_str().expect("p").to_string(),
                e["port"].as_u64().expect("port"),
            )
        })
        .collect();
    assert_eq!(
        exposed,
        [("tcp".into(), 7200), ("tcp".into(), 7200), ("udp".into(), 7203)]
    );
    assert_eq!(r["exposure_allowlist"][0], "tcp/7201");

    // Without --processes the shared address alone reveals the conflict.
    let r = ok_json(&ns.netsight(&["analyze", "listening", "--json", "--config", cfg]));
    let c = &r["conflicts"][0];
    assert_eq!((c["port"].as_u64(), c["reuseport"].as_bool()), (Some(7200), Some(true)));
    assert!(c["message"].as_str().expect("m").contains("--processes"));

    let out = ns.netsight(&["analyze", "listening", "--processes", "--config", cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "Port conflicts",
        "tcp port 7200 is held by 2 processes",
        "Exposure risks",
        "allow-listed",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
}

// ---------------------------------------------------------------------------
// bandwidth: a process sending a known volume

/// Waits for "go", then sends argv[1] bytes to itself over a loopback TCP
/// connection, reads them back on the other end, prints "done", and holds the
/// connection until stdin closes.
const SENDER: &str = r#"
import socket, sys, threading
n = int(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept()
got = [0]
def sink():
    while got[0] < n:
        b = s.recv(1 << 20)
        if not b: break
        got[0] += len(b)
t = threading.Thread(target=sink); t.start()
chunk = b"x" * (1 << 20); left = n
while left > 0:
    k = min(left, len(chunk)); c.sendall(chunk[:k]); left -= k
t.join()
print("done", got[0], flush=True)
sys.stdin.read()
"#;

#[test]
fn bandwidth_ranks_the_process_sending_a_known_volume_first() {
    const BIG: u64 = 48 << 20;
    const SMALL: u64 = 8 << 20;
    let ns = Netns::new("nsa-bw");
    let mut big = Proc::spawn(&ns, &[PYTHON, "-c", SENDER, &BIG.to_string()]);
    let mut small = Proc::spawn(&ns, &[PYTHON, "-c", SENDER, &SMALL.to_string()]);
    assert_eq!(big.line(), "ready");
    assert_eq!(small.line(), "ready");
    let ns_run = spawn_netsight(
        &ns,
        &["analyze", "bandwidth", "--json", "--processes", "--sample", "3s"],
    );
    // Well after netsight's first dump, well before its second.
    std::thread::sleep(Duration::from_millis(1000));
    big.send("go");
    small.send("go");
    assert_eq!(big.line(), format!("done {BIG}"));
    assert_eq!(small.line(), format!("done {SMALL}"));
    let out = ns_run.wait_with_output().expect("netsight");
    let r = ok_json(&out);
    let procs = r["processes"].as_array().expect("processes");
    assert!(procs.len() >= 2, "{r:#}");
    assert_eq!(procs[0]["pid"], big.pid(), "{procs:#?}");
    assert_eq!(procs[0]["process"], "python3");
    assert_eq!(procs[1]["pid"], small.pid(), "{procs:#?}");
    let within = |v: &Value, want: u64| {
        let v = v.as_u64().expect("bytes") as f64;
        (v - want as f64).abs() <= want as f64 * 0.05
    };
    assert!(
        within(&procs[0]["sent_bytes"], BIG),
        "sent {} of {BIG}",
        procs[0]["sent_bytes"]
    );
    assert!(
        within(&procs[0]["received_bytes"], BIG),
        "received {}",
        procs[0]["received_bytes"]
    );
    assert!(
        within(&procs[1]["sent_bytes"], SMALL),
        "sent {} of {SMALL}",
        procs[1]["sent_bytes"]
    );
    // The top connection is the big sender's sending end; it opened during the sample.
    let top = &r["connections"][0];
    assert!(
        within(&top["sent_bytes"], BIG) || within(&top["received_bytes"], BIG),
        "{top:#}"
    );
    assert_eq!(top["new"], true);
    assert_eq!(top["interface"], "lo");
    // Loopback carried it: the interface moved at least the payload twice (rx + tx),
    // and connections account for most of its bytes.
    let lo = r["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo");
    assert!(lo["tx_bytes"].as_u64().expect("tx") >= BIG + SMALL, "{lo:#}");
    let share = lo["connection_share_percent"].as_f64().expect("share");
    assert!((80.0..=100.5).contains(&share), "{share}");
    let secs = r["sample_seconds"].as_f64().expect("secs");
    assert!((2.9..4.0).contains(&secs), "{secs}");
    assert!(
        (lo["tx_bytes_per_second"].as_f64().expect("rate") - lo["tx_bytes"].as_f64().expect("b") / secs).abs() < 1.0
    );

    // --interface narrows the report; an unknown one is an error.
    let r = ok_json(&ns.netsight(&[
        "analyze",
        "bandwidth",
        "--json",
        "--sample",
        "200ms",
        "--interface",
        "lo",
    ]));
    assert_eq!(r["interfaces"].as_array().expect("i").len(), 1);
    assert!(r["processes"].is_null());
    let out = ns.netsight(&[
        "analyze",
        "bandwidth",
        "--json",
        "--sample",
        "200ms",
        "--interface",
        "nope0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["error"]["message"].as_str().expect("m").contains("nope0"));
    assert_eq!(
        ns.netsight(&["analyze", "bandwidth", "--sample", "0s"]).status.code(),
        Some(2)
    );
}

// ---------------------------------------------------------------------------
// tcp: rates against /proc/net/snmp

fn snmp_tcp(ns: &Netns) -> BTreeMap<String, i64> {
    let text = ns.exec_ok(&["cat", "/proc/net/snmp"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    lines[0]
        .split_whitespace()
        .skip(1)
        .zip(lines[1].split_whitespace().skip(1))
        .map(|(k, v)| (k.to_string(), v.parse().expect("int")))
        .collect()
}

#[test]
fn tcp_rates_match_the_counter_deltas() {
    const CONNS: i64 = 20;
    let ns = Netns::new("nsa-tcp");
    let l: TcpListener = ns.enter(|| listener("127.0.0.1:7300", 64));
    let server = std::thread::spawn(move || {
        for _ in 0..CONNS {
            let (mut s, _) = l.accept().expect("accept");
            read_eof(&mut s);
        }
    });
    let before = snmp_tcp(&ns);
    let run = spawn_netsight(&ns, &["analyze", "tcp", "--json", "--sample", "2s"]);
    std::thread::sleep(Duration::from_millis(800));
    ns.enter(|| {
        for _ in 0..CONNS {
            let mut c = TcpStream::connect("127.0.0.1:7300").expect("connect");
            c.write_all(&[9u8; 1000]).expect("write");
        }
    });
    server.join().expect("server");
    let out = run.wait_with_output().expect("netsight");
    let after = snmp_tcp(&ns);
    let r = ok_json(&out);
    let secs = r["sample_seconds"].as_f64().expect("sample_seconds");
    assert!((1.9..3.0).contains(&secs), "{secs}");
    let row = |g: &str, f: &str| {
        r["counters"]
            .as_array()
            .expect("counters")
            .iter()
            .find(|c| c["group"] == g && c["field"] == f)
            .unwrap_or_else(|| panic!("{g}.{f} missing"))
            .clone()
    };
    for field in [
        "ActiveOpens",
        "PassiveOpens",
        "OutSegs",
        "InSegs",
        "RetransSegs",
        "OutRsts",
    ] {
        let c = row("Tcp", field);
        let want = after[field] - before[field];
        assert_eq!(c["delta"].as_i64(), Some(want), "Tcp.{field}: {c:#}");
        let rate = c["per_second"].as_f64().expect("rate");
        assert!(
            (rate - want as f64 / secs).abs() < 1e-6,
            "Tcp.{field}: {rate} vs {want}/{secs}"
        );
        assert_eq!(c["value"].as_i64(), Some(after[field]));
    }
    assert_eq!(row("Tcp", "ActiveOpens")["delta"], CONNS);
    assert_eq!(row("Tcp", "PassiveOpens")["delta"], CONNS);
    assert!(row("Tcp", "CurrEstab")["delta"].is_null(), "gauges have no delta");
    let figures = &r["summary"]["figures"];
    assert_eq!(
        figures["segments_out"]["during_sample"],
        after["OutSegs"] - before["OutSegs"]
    );
    let ratio = r["summary"]["retransmission_ratio_percent"].as_f64().expect("ratio");
    let want =
        (after["RetransSegs"] - before["RetransSegs"]) as f64 / (after["OutSegs"] - before["OutSegs"]) as f64 * 100.0;
    assert!((ratio - want).abs() < 0.001, "{ratio} vs {want}");
    assert!(r["congestion_control"]["default"].is_string());
    assert!(r["sysctls"]
        .as_array()
        .expect("sysctls")
        .iter()
        .any(|s| s["name"] == "net.ipv4.tcp_sack"));

    // --detail lists every field of every group; --sample 0s gives no rates.
    let d = ok_json(&ns.netsight(&["analyze", "tcp", "--json", "--detail", "--sample", "0s"]));
    assert!(d["sample_seconds"].is_null());
    let counters = d["counters"].as_array().expect("counters");
    assert!(counters.len() > 100, "{}", counters.len());
    assert!(counters.iter().all(|c| c["per_second"].is_null()));
    assert!(counters
        .iter()
        .any(|c| c["group"] == "IpExt" && c["field"] == "InOctets"));
}

// ---------------------------------------------------------------------------
// without privileges

fn assert_names_missing_caps(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(out);
    let lim = r["limitations"].as_array().expect("limitations");
    let attr = lim
        .iter()
        .find(|l| l["what"] == "process_attribution")
        .unwrap_or_else(|| panic!("{what}: {r:#}"));
    let caps: Vec<&str> = attr["missing_capabilities"]
        .as_array()
        .expect("caps")
        .iter()
        .map(|c| c.as_str().expect("s"))
        .collect();
    assert_eq!(caps, ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"], "{what}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CAP_SYS_PTRACE") && stderr.contains("CAP_DAC_READ_SEARCH"),
        "{what}: {stderr}"
    );
}

#[test]
fn without_privileges_the_missing_capability_is_named_and_json_still_parses() {
    let ns = Netns::new("nsa-priv");
    let _held: Vec<OwnedFd> = ns.enter(|| {
        let l = listener("127.0.0.1:7400", 8);
        let c = TcpStream::connect("127.0.0.1:7400").expect("connect");
        let (s, _) = l.accept().expect("accept");
        vec![l.into(), c.into(), s.into()]
    });
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN];
    let no_caps = [
        "setpriv",
        "--inh-caps=-sys_ptrace,-dac_read_search",
        "--bounding-set=-sys_ptrace,-dac_read_search",
        BIN,
    ];
    for (who, prefix) in [("nobody", &nobody[..]), ("root without the capabilities", &no_caps[..])] {
        for cmd in [
            &["analyze", "connections", "--processes", "--json"][..],
            &["analyze", "listening", "--processes", "--json"][..],
        ] {
            let mut args = prefix.to_vec();
            args.extend_from_slice(cmd);
            let out = ns.exec(&args);
            let what = format!("{who}: {cmd:?}");
            assert_names_missing_caps(&out, &what);
            let r = json(&out);
            // The counts are still there; only the owners are unknown.
            if cmd[1] == "connections" {
                assert_eq!(r["total"], 3, "{what}: {r:#}");
                assert_eq!(r["unattributed"]["unknown"], 3, "{what}: {r:#}");
            } else {
                assert_eq!(r["listeners"][0]["port"], 7400);
                assert!(r["listeners"][0]["pid"].is_null());
            }
        }
    }
    // Text output tells the person too.
    let mut args = nobody.to_vec();
    args.extend_from_slice(&["analyze", "connections", "--processes"]);
    let out = ns.exec(&args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Limitations") && text.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
        "{text}"
    );
    // With them (root), nothing is missing.
    let r = ok_json(&ns.netsight(&["analyze", "connections", "--processes", "--json"]));
    assert!(r["limitations"].as_array().expect("l").is_empty(), "{r:#}");
    assert_eq!(r["unattributed"]["unknown"], 0);
}
