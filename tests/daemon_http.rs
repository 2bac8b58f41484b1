//! The daemon end to end: `netsight serve` inside a fresh namespace (its own loopback,
//! so the default port never collides), scraped over real TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Netns;

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(ns: &Netns, extra: &[&str]) -> Daemon {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, bin, "serve", "--listen", "127.0.0.1:9977"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netsight serve");
    let d = Daemon { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, _, _)) = get(ns, "/healthz") {
            return d;
        }
        assert!(Instant::now() < deadline, "daemon did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 GET from inside the namespace: (status, headers, body).
fn get(ns: &Netns, path: &str) -> Option<(u16, String, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let mut s = TcpStream::connect("127.0.0.1:9977").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        parse_response(&buf)
    })
}

fn parse_response(buf: &[u8]) -> Option<(u16, String, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn serves_metrics_health_and_index() {
    let ns = Netns::new("ndh");
    let _d = start(&ns, &[]);
    let (status, head, body) = get(&ns, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(
        metric(&body, r#"netsight_collector_up{collector="netstat"}"#),
        Some(1.0)
    );
    assert!(body.contains("# TYPE netsight_netstat_tcp_retrans_segs_total counter"));
    let (status, _, index) = get(&ns, "/").expect("index");
    assert_eq!(status, 200);
    assert!(index.contains("/metrics") && index.contains("/healthz"));
    assert_eq!(get(&ns, "/nope").map(|r| r.0), Some(404));
}

#[test]
fn scrapes_read_the_snapshot_and_never_trigger_collection() {
    let ns = Netns::new("ndh");
    let _d = start(&ns, &["--interval", "30s"]);
    let ts = |b: &str| metric(b, "netsight_snapshot_timestamp_seconds").expect("timestamp");
    let (_, _, a) = get(&ns, "/metrics").expect("scrape");
    std::thread::sleep(Duration::from_millis(300));
    let (_, _, b) = get(&ns, "/metrics").expect("scrape");
    assert_eq!(ts(&a), ts(&b), "a scrape produced a new snapshot");
}

#[test]
fn two_hundred_concurrent_scrapes_all_answer() {
    let ns = Netns::new("ndh");
    let _d = start(&ns, &["--interval", "1s"]);
    let name = ns.name.clone();
    let results: Vec<(Option<u16>, Duration)> = ns.enter(move || {
        let _ = name;
        let handles: Vec<_> = (0..200)
            .map(|_| {
                std::thread::spawn(|| {
                    let t = Instant::now();
                    let r = (|| {
                        let mut s = TcpStream::connect("127.0.0.1:9977").ok()?;
                        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .ok()?;
                        let mut buf = Vec::new();
                        s.read_to_end(&mut buf).ok()?;
                        parse_response(&buf).map(|r| r.0)
                    })();
                    (r, t.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("scrape thread")).collect()
    });
    let ok = results.iter().filter(|r| r.0 == Some(200)).count();
    assert_eq!(ok, 200, "only {ok}/200 scrapes answered 200");
    let mut lat: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64() * 1e3).collect();
    lat.sort_by(f64::total_cmp);
    eprintln!("200 concurrent scrapes: p50 {:.1} ms, max {:.1} ms", lat[100], lat[199]);
    // The daemon must still be healthy and collecting afterwards.
    assert_eq!(get(&ns, "/healthz").map(|r| r.0), Some(200));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let ns = Netns::new("ndh");
    let mut d = start(&ns, &[]);
    // `ip netns exec` execs netsight, so the child PID is the daemon's.
    let pid = d.child.id() as libc::pid_t;
    // SAFETY: signalling a child process we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = d.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_arguments_and_config_fail_with_a_clear_message() {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let out = Command::new(bin)
        .args(["serve", "--interval", "100ms"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1s minimum"));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(&cfg, "interval: 5s\nlisten: [\n").expect("write");
    let out = Command::new(bin)
        .args(["collect", "--once", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:"), "{err}");
}

#[test]
fn live_host_exposition_passes_promtool() {
    let bin = env!("CARGO_BIN_EXE_netsight");
    let out = Command::new(bin).args(["collect", "--once"]).output().expect("run");
    assert!(out.status.success());
    common::assert_promtool_accepts(&out.stdout);
}

#[test]
fn a_tiny_cpu_budget_slows_collectors_down_and_says_so() {
    let ns = Netns::new("ndh");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("budget.yaml");
    // sysctl's own floor (30 s by default) set to one tick: every interval above
    // 1 s below is the budget's doing.
    std::fs::write(
        &cfg,
        "budget:\n  cpu_percent: 0.0001\ncollectors:\n  sysctl:\n    interval: 1s\n",
    )
    .expect("write");
    let cfg = cfg.to_string_lossy().into_owned();
    let mut d = start(&ns, &["--interval", "1s", "--config", &cfg]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let slowed = loop {
        let (_, _, body) = get(&ns, "/metrics").expect("scrape");
        let max = body
            .lines()
            .filter(|l| l.starts_with("netsight_collector_interval_seconds{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        if max > 1.0 {
            break max;
        }
        assert!(Instant::now() < deadline, "no collector lowered its cadence");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(slowed >= 2.0);
    let _ = d.child.kill();
    let out = d.child.wait_with_output_stderr();
    assert!(out.contains("lowering its cadence"), "no log line: {out}");
}

trait StderrOf {
    fn wait_with_output_stderr(&mut self) -> String;
}

impl StderrOf for Child {
    fn wait_with_output_stderr(&mut self) -> String {
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}
