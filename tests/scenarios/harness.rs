//! Scenario plumbing: guards that always clean up (threads, processes, namespaces,
//! tap devices), the netsight daemon under test, and reading its event log.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::{run, Netns};

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Joins the calling thread to the named network namespace.
pub fn setns(ns: &str) {
    let file = File::open(format!("/var/run/netns/{ns}")).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread inside `ns` and returns its result (sockets created there
/// belong to the namespace and can be used from any thread afterwards).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        setns(&ns);
        f()
    })
    .join()
    .expect("thread in namespace panicked")
}

/// Background threads sharing one stop flag; stopped and joined on drop.
pub struct Workers {
    pub stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        Workers {
            stop: Arc::new(AtomicBool::new(false)),
            handles: Vec::new(),
        }
    }

    /// Spawns `f(stop)` on a thread that joined `ns` first.
    pub fn spawn_in(&mut self, ns: &str, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let ns = ns.to_string();
        let stop = self.stop.clone();
        self.handles.push(std::thread::spawn(move || {
            setns(&ns);
            f(stop)
        }));
    }

    /// Spawns `f(stop)` without changing namespace.
    pub fn spawn(&mut self, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        self.handles.push(std::thread::spawn(move || f(stop)));
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A child process ended by PID on drop (SIGTERM, then SIGKILL).
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    /// Runs `cmd` inside `ns` (`ip netns exec` execs it: the PID is the command's).
    pub fn spawn_in(ns: &str, cmd: &[&str], env: &[(&str, &str)], stderr: Option<File>) -> Proc {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match stderr {
            Some(f) => c.stderr(f),
            None => c.stderr(Stdio::null()),
        };
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?} in {ns}: {e}"));
        Proc {
            child,
            what: format!("{cmd:?}"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.pid();
        if !self.alive() {
            return;
        }
        // SAFETY: signalling a child process this guard started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Fails loudly when a tool a scenario needs is missing (never a silent skip).
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed (Debian package `{package}`; scripts/test.sh installs it)"
    );
}

/// Applies an nftables ruleset inside `ns`.
pub fn nft(ns: &Netns, ruleset: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("rules.nft");
    std::fs::write(&f, ruleset).expect("write ruleset");
    ns.exec_ok(&["nft", "-f", &f.to_string_lossy()]);
}

pub fn sysctl(ns: &Netns, kv: &str) {
    ns.exec_ok(&["sysctl", "-q", "-w", kv]);
}

/// Two namespaces joined by a veth pair: `a` 10.77.0.1/24 (device `va`) and
/// `b` 10.77.0.2/24 (device `vb`).
pub fn pair(prefix: &str) -> (Netns, Netns) {
    let a = Netns::new(&format!("{prefix}a"));
    let b = Netns::new(&format!("{prefix}b"));
    a.veth_to(&b, "va", "10.77.0.1/24", "vb", "10.77.0.2/24");
    (a, b)
}

pub const A: &str = "10.77.0.1";
pub const B: &str = "10.77.0.2";

/// The daemon under test: `netsight serve --interval 1s` inside a namespace.
pub struct Daemon {
    proc: Proc,
    pub ns: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    pub started: f64,
}

/// Settings every scenario daemon uses on top of the embedded defaults: the test
/// binary is a debug build, so the CPU budget (2 % of a core by default, sized for
/// release builds) is raised so no collector slows its cadence mid-scenario; the
/// socket-to-process map is rebuilt every 5 s (default 30 s) so sockets opened
/// during a fault are attributed to their process within the latency budget.
pub const DAEMON_CONFIG: &str = "budget:\n  cpu_percent: 50\ncollectors:\n  sockets:\n    process_refresh: 5s\n";

impl Daemon {
    pub fn start(ns: &Netns) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("netsight.yaml");
        std::fs::write(&cfg, DAEMON_CONFIG).expect("write config");
        let log = dir.path().join("netsight.log");
        let bin = env!("CARGO_BIN_EXE_netsight");
        let cfg_s = cfg.to_string_lossy().into_owned();
        let proc = Proc::spawn_in(
            &ns.name,
            &[
                bin,
                "serve",
                "--listen",
                "127.0.0.1:9977",
                "--interval",
                "1s",
                "--config",
                &cfg_s,
            ],
            &[("RUST_LOG", "info")],
            Some(File::create(&log).expect("log file")),
        );
        let mut d = Daemon {
            proc,
            ns: ns.name.clone(),
            log,
            _dir: dir,
            started: now(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.get("/healthz").is_some_and(|b| b.starts_with("ok")) {
                break;
            }
            assert!(d.proc.alive(), "netsight exited: {}", d.log_text());
            assert!(
                Instant::now() < deadline,
                "netsight did not become healthy: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d.started = now();
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One GET over a connection made inside the namespace; the body on 200.
    pub fn get(&self, path: &str) -> Option<String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let s = in_ns(&self.ns, || {
            TcpStream::connect_timeout(&"127.0.0.1:9977".parse().unwrap(), Duration::from_secs(2))
        });
        let mut s = s.ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1)? == "200").then(|| body.to_string())
    }

    pub fn events(&self) -> Vec<Event> {
        let Some(body) = self.get("/api/v1/events") else {
            return Vec::new();
        };
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v.as_array()
            .map(|a| a.iter().map(Event::from_json).collect())
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.proc.alive()
    }
}

/// One firing/resolved transition from /api/v1/events.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: u64,
    pub rule: String,
    /// Unix seconds.
    pub time: f64,
    pub labels: BTreeMap<String, String>,
    pub cause: Option<String>,
    pub explanation: String,
    pub recommendation: String,
    pub text: String,
}

impl Event {
    fn from_json(v: &Value) -> Event {
        let labels = v["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        Event {
            id: v["id"].as_u64().unwrap_or(0),
            rule: v["title"].as_str().unwrap_or("").to_string(),
            time: v["time"].as_f64().unwrap_or(0.0) / 1000.0,
            labels,
            cause: v["cause"]["name"].as_str().map(str::to_string),
            explanation: v["cause"]["explanation"].as_str().unwrap_or("").to_string(),
            recommendation: v["cause"]["recommendation"].as_str().unwrap_or("").to_string(),
            text: v["text"].as_str().unwrap_or("").to_string(),
        }
    }

    /// `rule{label="value",…}`.
    pub fn describe(&self) -> String {
        let l: Vec<String> = self
            .labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if l.is_empty() {
            self.rule.clone()
        } else {
            format!("{}{{{}}}", self.rule, l.join(","))
        }
    }
}

/// True when `metrics` has `netsight_root_cause` = 1 for this rule and cause.
pub fn root_cause_exported(metrics: &str, rule: &str, cause: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("netsight_root_cause{")
            && l.contains(&format!("rule=\"{rule}\""))
            && l.contains(&format!("cause=\"{cause}\""))
            && l.ends_with(" 1")
    })
}

/// Sleeps until `t` (unix seconds), returning early if the daemon died.
pub fn sleep_until(t: f64) {
    let d = t - now();
    if d > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(d));
    }
}

/// Paces a loop at `per_second` iterations.
pub struct Pacer {
    next: Instant,
    period: Duration,
}

impl Pacer {
    pub fn new(per_second: f64) -> Pacer {
        Pacer {
            next: Instant::now(),
            period: Duration::from_secs_f64(1.0 / per_second.max(1e-3)),
        }
    }

    pub fn wait(&mut self) {
        self.next += self.period;
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else if now - self.next > Duration::from_secs(1) {
            // Far behind (the machine was busy): do not burst to catch up.
            self.next = now;
        }
    }
}

/// Small deterministic PRNG (xorshift64*) for traffic shapes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// `ip netns exec NS CMD…`, ignoring failure (cleanup paths).
pub fn exec_quiet(ns: &str, cmd: &[&str]) {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(cmd);
    let _ = run(&full);
}

/// A tap device in a namespace, gone when the file is closed.
pub struct Tap {
    pub file: File,
    pub name: String,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Creates tap `name` inside `ns` (IFF_TAP | IFF_NO_PI).
pub fn open_tap(ns: &str, name: &str) -> Tap {
    let n = name.to_string();
    let file = in_ns(ns, move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        let mut ifr = [0u8; 40];
        ifr[..n.len()].copy_from_slice(n.as_bytes());
        let flags: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: TUNSETIFF with a 40-byte struct ifreq on our own tun fd.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
        assert_eq!(rc, 0, "TUNSETIFF {n}: {}", std::io::Error::last_os_error());
        file
    });
    Tap {
        file,
        name: name.to_string(),
    }
}

/// Copies frames from tap `from` to tap `to` until stopped: half of a wire.
pub fn wire(from: &File, to: &File, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    let (rfd, wfd) = (from.as_raw_fd(), to.as_raw_fd());
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd: rfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 100) };
        if r <= 0 {
            continue;
        }
        // SAFETY: reading into our own buffer from our own fd.
        let n = unsafe { libc::read(rfd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        // SAFETY: writing bytes we just read to our own fd.
        unsafe { libc::write(wfd, buf.as_ptr().cast(), n as usize) };
    }
}
