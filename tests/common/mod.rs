//! Shared helpers for integration tests that run against the real kernel inside
//! network namespaces created (and always deleted) by the test.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

pub mod mib;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted when dropped, even if the test panics.
pub struct Netns {
    pub name: String,
}

pub fn run(cmd: &[&str]) -> Output {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its stderr when it fails.
pub fn run_ok(cmd: &[&str]) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with loopback up.
    pub fn new(prefix: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        run_ok(&cmd)
    }

    /// Runs a command inside the namespace (`ip netns exec`, which also mounts the
    /// namespace's own /sys).
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run(&full)
    }

    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        run_ok(&full)
    }

    /// Runs the netsight binary inside the namespace.
    pub fn netsight(&self, args: &[&str]) -> Output {
        let bin = env!("CARGO_BIN_EXE_netsight");
        let mut cmd = vec![bin];
        cmd.extend_from_slice(args);
        self.exec(&cmd)
    }

    /// `netsight collect --once --format json` inside the namespace, parsed.
    pub fn collect_json(&self, extra: &[&str]) -> Snapshot {
        let mut args = vec!["collect", "--once", "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.netsight(&args);
        assert!(
            out.status.success(),
            "collect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Snapshot(serde_json::from_slice(&out.stdout).expect("collect output is JSON"))
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it creates live
    /// in the namespace (setns on a thread affects only that thread).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// Creates a veth pair `a` (here, with `addr_a`) ↔ `b` (in `peer`, with `addr_b`),
    /// both up. Addresses in CIDR form, e.g. `10.200.1.1/24`.
    pub fn veth_to(&self, peer: &Netns, a: &str, addr_a: &str, b: &str, addr_b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b, "netns", &peer.name]);
        self.ip(&["addr", "add", addr_a, "dev", a]);
        peer.ip(&["addr", "add", addr_b, "dev", b]);
        self.ip(&["link", "set", a, "up"]);
        peer.ip(&["link", "set", b, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// The JSON snapshot printed by `collect --format json`.
pub struct Snapshot(pub Value);

impl Snapshot {
    pub fn family(&self, name: &str) -> Option<&Value> {
        self.0["families"].as_array()?.iter().find(|f| f["name"] == name)
    }

    /// Samples of `name` whose labels include every matcher.
    pub fn samples<'a>(&'a self, name: &str, matchers: &[(&str, &str)]) -> Vec<&'a Value> {
        let Some(f) = self.family(name) else { return Vec::new() };
        f["samples"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| matchers.iter().all(|(k, v)| s["labels"][*k] == *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The single value of `name` with these labels; panics if absent or ambiguous.
    pub fn value(&self, name: &str, matchers: &[(&str, &str)]) -> f64 {
        let s = self.samples(name, matchers);
        assert_eq!(s.len(), 1, "{name}{matchers:?}: {} samples", s.len());
        s[0]["value"].as_f64().expect("scalar value")
    }

    pub fn try_value(&self, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
        let s = self.samples(name, matchers);
        (s.len() == 1).then(|| s[0]["value"].as_f64()).flatten()
    }
}

/// Asserts that `promtool check metrics` (Debian package `prometheus`) accepts
/// `exposition` without a word: no error, no lint.
#[allow(dead_code)] // not every test binary that includes `common` checks metrics
pub fn assert_promtool_accepts(exposition: &[u8]) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition)
        .expect("feed promtool");
    let res = child.wait_with_output().expect("promtool");
    assert!(
        res.status.success() && res.stdout.is_empty() && res.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}
