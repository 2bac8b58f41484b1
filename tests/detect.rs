//! `netsight detect` over a daemon that saw an injected fault (accept-queue overflow
//! of a listener with backlog 1, inside a namespace), and over a Prometheus
//! query_range API (a stub serving canned series) where the rules are replayed.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Netns;
use serde_json::Value;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(ns: &Netns) -> Daemon {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            bin,
            "serve",
            "--listen",
            "127.0.0.1:9977",
            "--interval",
            "1s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start netsight serve");
    let d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ns.enter(|| TcpStream::connect("127.0.0.1:9977").is_ok()) {
        assert!(Instant::now() < deadline, "daemon did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

/// Connection attempts against a never-accepting listener with backlog 1.
fn overflow_accept_queue(ns: &Netns, port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        // SAFETY: listen() again on our own listening socket only shrinks its backlog.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 1) }, 0);
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut keep = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..10 {
                if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(20)) {
                    keep.push(s);
                }
            }
            if keep.len() > 200 {
                keep.clear();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn detect(ns: &Netns, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["detect"];
    full.extend_from_slice(args);
    let out = ns.netsight(&full);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn reports_a_daemon_seen_fault_with_its_root_cause() {
    let ns = Netns::new("ndt");
    // A known somaxconn, so the cause's evidence is predictable.
    ns.exec_ok(&["sysctl", "-q", "-w", "net.core.somaxconn=128"]);
    let _d = start_daemon(&ns);
    let url = "http://127.0.0.1:9977";

    // Nothing happened yet.
    let (code, out, err) = detect(&ns, &["--daemon", url, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["anomalies"], serde_json::json!([]));
    assert_eq!(v["source"]["kind"], "daemon");

    // Inject the fault until the daemon has logged it.
    let stop = Arc::new(AtomicBool::new(false));
    let load = overflow_accept_queue(&ns, 7200, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let (code, out, err) = detect(&ns, &["--daemon", url, "--time-range", "10m", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}{err}"));
        let hit = v["anomalies"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["rule"] == "tcp_listen_overflow" && !x["cause"].is_null())
        });
        if hit {
            assert_eq!(code, 1, "anomalies found → exit 1");
            break v;
        }
        assert!(Instant::now() < deadline, "no tcp_listen_overflow reported: {v:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");

    let a = report["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .find(|x| x["rule"] == "tcp_listen_overflow")
        .expect("the overflow");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["layer"], "transport");
    assert!(a["start"].as_f64().expect("start") > 1.6e9);
    assert!(a["value"].as_f64().expect("value") > 0.0);
    // The rule attributes the overflow to the listener; the cause explains it with
    // the evidence read (the listener's backlog against net.core.somaxconn = 128).
    if let Some(port) = a["labels"].get("port") {
        assert_eq!(port, "7200", "{a:#}");
    }
    let cause = a["cause"]["name"].as_str().expect("cause name").to_string();
    assert!(
        [
            "app_backlog_small",
            "backlog_capped_by_somaxconn",
            "somaxconn_limit",
            "slow_accept"
        ]
        .contains(&cause.as_str()),
        "{a:#}"
    );
    assert_eq!(
        a["cause"]["evidence"]["netsight_sysctl_net_core_somaxconn"], 128.0,
        "{a:#}"
    );
    assert!(!a["cause"]["explanation"].as_str().unwrap_or("").is_empty(), "{a:#}");
    assert!(!a["cause"]["recommendation"].as_str().unwrap_or("").is_empty(), "{a:#}");
    assert!(report["summary"]["by_rule"]["tcp_listen_overflow"].as_u64() >= Some(1));
    assert!(report["summary"]["by_root_cause"][&cause].as_u64() >= Some(1));

    // The human report names the rule and its root cause.
    let (code, text, _) = detect(&ns, &["--daemon", url, "--time-range", "10m"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("tcp_listen_overflow"), "{text}");
    assert!(text.contains(&format!("root cause: {cause}")), "{text}");
    assert!(
        text.contains("evidence: ") && text.contains("netsight_sysctl_net_core_somaxconn = 128"),
        "{text}"
    );
}

#[test]
fn an_unreachable_daemon_is_an_error_with_exit_2() {
    let ns = Netns::new("ndt");
    let (code, out, err) = detect(&ns, &["--daemon", "http://127.0.0.1:9", "--json"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("cannot reach 127.0.0.1:9"), "{err}");
}

/// Labels (as JSON members) and value at step i of a canned series.
type Series<'a> = Box<dyn Fn(usize) -> f64 + 'a>;

/// Serves query_range for instance "web1:9977": a listener (`web` on port 8080,
/// backlog 1) whose accept queue is full while ListenOverflows rises, for 8 steps
/// two thirds of the way into the window; an empty result for every other metric.
fn prometheus_stub(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).into_owned();
    let target = req.split_whitespace().nth(1).unwrap_or("").to_string();
    let param = |k: &str| -> f64 {
        target
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let metric = target
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("query="))
        .unwrap_or("")
        .split("%7B")
        .next()
        .unwrap_or("")
        .to_string();
    let (start, end, step) = (param("start"), param("end"), param("step"));
    let n = if step > 0.0 {
        ((end - start) / step).floor() as usize + 1
    } else {
        0
    };
    let rise = n * 2 / 3;
    let during = move |i: usize| (rise..rise + 8).contains(&i);
    let listener = r#""family":"ipv4","address":"0.0.0.0","port":"8080","process":"web","#;
    let series: Option<(&str, Series)> = match metric.as_str() {
        "netsight_netstat_tcpext_listen_overflows_total" => {
            Some(("", Box::new(move |i| 30.0 * (i.clamp(rise, rise + 8) - rise) as f64)))
        }
        "netsight_tcp_listen_queue_length" => Some((listener, Box::new(move |i| if during(i) { 2.0 } else { 0.0 }))),
        "netsight_tcp_listen_backlog" => Some((listener, Box::new(|_| 1.0))),
        "netsight_sysctl_net_core_somaxconn" => Some(("", Box::new(|_| 4096.0))),
        _ => None,
    };
    let body = if !target.starts_with("/api/v1/query_range?") || !target.contains("job%3D%22netsight%22") {
        r#"{"status":"error","errorType":"bad_data","error":"unexpected request"}"#.to_string()
    } else if let Some((labels, f)) = series {
        let values: Vec<String> = (0..n)
            .map(|i| format!("[{},\"{}\"]", start + step * i as f64, f(i)))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{{labels}"__name__":"{metric}","instance":"web1:9977","job":"netsight"}},"values":[{}]}}]}}}}"#,
            values.join(",")
        )
    } else {
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.to_string()
    };
    let _ = s.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

#[test]
fn replays_the_rules_over_prometheus_range_queries() {
    let ns = Netns::new("ndt");
    let path = format!("/var/run/netns/{}", ns.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns on a valid namespace fd; affects only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = TcpListener::bind("127.0.0.1:9090").expect("bind stub");
        tx.send(()).expect("ready");
        for s in l.incoming().flatten() {
            std::thread::spawn(move || prometheus_stub(s));
        }
    });
    rx.recv().expect("stub started");
    let args = [
        "--prometheus",
        "http://127.0.0.1:9090",
        "--selector",
        "job=\"netsight\"",
        "--time-range",
        "30m",
        "--step",
        "15s",
        "--json",
    ];
    let (code, out, err) = detect(&ns, &args);
    assert_eq!(code, 1, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["source"]["kind"], "prometheus");
    assert_eq!(v["source"]["step_seconds"], 15.0);
    let a = v["anomalies"].as_array().expect("anomalies");
    let hit = a
        .iter()
        .find(|x| x["rule"] == "tcp_listen_overflow")
        .unwrap_or_else(|| panic!("no overflow in {v:#}"));
    assert_eq!(hit["instance"], "web1:9977");
    assert_eq!(
        hit["firing"], false,
        "the counter stops rising, so the anomaly ends: {hit:#}"
    );
    // The listener's backlog (1) is far below somaxconn (4096): the cause names the
    // application's small backlog.
    let cause = hit["cause"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no cause: {hit:#}"));
    assert!(["app_backlog_small", "slow_accept"].contains(&cause), "{hit:#}");
    let start = hit["start"].as_f64().expect("start");
    assert!(start > v["from"].as_f64().expect("from") && start < v["to"].as_f64().expect("to"));
}
