//! `netsight monitor network` as a person sees it: driven in tmux (fixed size,
//! send-keys, capture-pane) inside a namespace where the test overflows a
//! listener's accept queue, so the embedded rule `tcp_listen_overflow` fires and
//! must appear highlighted. Also the plain-lines and JSON fallbacks without a terminal.

mod common;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Netns;

/// A tmux server on its own socket, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)")
    }

    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", "mon"];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.cmd(&args).stdout).into_owned()
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "mon"]).status.success()
    }

    /// Captures until `pred` holds or `secs` pass; returns the last capture.
    fn wait_for(&self, secs: u64, escapes: bool, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.capture(escapes);
            if pred(&s) {
                return Some(s);
            }
            if Instant::now() > deadline {
                eprintln!("last screen:\n{s}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

fn refresh_number(screen: &str) -> Option<u64> {
    let i = screen.find("refresh #")? + "refresh #".len();
    screen[i..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Fills a never-accepting listener (backlog 1) on 127.0.0.1:`port` inside `ns`
/// with connection attempts until `stop`: every dropped SYN counts as a
/// TcpExt ListenOverflows.
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
        drop(l);
    })
}

#[test]
fn tui_shows_interfaces_updates_highlights_anomalies_and_quits() {
    let ns = Netns::new("nmt");
    let peer = Netns::new("nmp");
    ns.veth_to(&peer, "mt0", "10.232.0.1/24", "mp0", "10.232.0.2/24");
    let tmux = Tmux {
        socket: format!("netsight-test-{}", std::process::id()),
    };
    let bin = env!("CARGO_BIN_EXE_netsight");
    let command = format!("ip netns exec {} {bin} monitor network --interval 1", ns.name);
    let out = tmux.cmd(&["new-session", "-d", "-s", "mon", "-x", "160", "-y", "48", &command]);
    assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));

    // The interfaces are listed and the screen refreshes.
    let first = tmux
        .wait_for(20, false, |s| {
            s.contains("Interfaces") && s.contains("mt0") && refresh_number(s).is_some_and(|n| n >= 2)
        })
        .expect("the monitor shows the interfaces");
    assert!(first.contains("lo"), "{first}");
    assert!(
        first.contains("TCP connections") && first.contains("TCP counters"),
        "{first}"
    );
    assert!(first.contains("no active anomalies"), "{first}");
    let n1 = refresh_number(&first).expect("refresh number");
    let later = tmux
        .wait_for(10, false, |s| refresh_number(s).is_some_and(|n| n > n1))
        .expect("the screen updates between captures");
    assert!(later.contains("mt0"), "{later}");

    // A resized window is redrawn to its new size.
    let out = tmux.cmd(&["resize-window", "-t", "mon", "-x", "120", "-y", "40"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for(10, false, |s| {
        s.lines().next().is_some_and(|l| l.contains("netsight monitor")) && s.lines().all(|l| l.chars().count() <= 120)
    })
    .expect("redrawn after resize");

    // Accept-queue overflow: tcp_listen_overflow appears, highlighted (red background).
    let stop = Arc::new(AtomicBool::new(false));
    let load = overflow_accept_queue(&ns, 7100, stop.clone());
    let shown = tmux.wait_for(30, true, |s| s.contains("tcp_listen_overflow"));
    let shown = shown.expect("tcp_listen_overflow shown in the anomalies area");
    let line = shown
        .lines()
        .find(|l| l.contains("tcp_listen_overflow"))
        .expect("anomaly line")
        .to_string();
    let before = &line[..line.find("tcp_listen_overflow").expect("rule")];
    // Red background: SGR 41, or tmux's 256-colour form 48;5;1 (9: bright red).
    let red_bg = ["\x1b[41m", ";41m", "\x1b[48;5;1m", "\x1b[48;5;9m"];
    assert!(
        red_bg.iter().any(|c| before.contains(c)),
        "the anomaly is not highlighted in red: {line:?}"
    );
    let plain = tmux.capture(false);
    assert!(
        plain.contains("Anomalies (1 firing)") || plain.contains("firing)"),
        "{plain}"
    );
    assert!(plain.contains("[critical]"), "{plain}");
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");

    // q quits and the terminal is given back.
    let out = tmux.cmd(&["send-keys", "-t", "mon", "q"]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "monitor did not quit on q:\n{}",
            tmux.capture(false)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_a_terminal_prints_plain_lines_or_json() {
    let ns = Netns::new("nmt");
    let out = ns.netsight(&["monitor", "network", "--interval", "0.5", "--count", "3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for l in &lines {
        assert!(
            l.contains("interfaces: lo ") && l.contains("tcp estab") && l.contains("anomalies: none"),
            "{l}"
        );
        assert!(!l.contains('\x1b'), "escape codes in plain output: {l:?}");
    }
    // Rates appear from the second line on.
    assert!(lines[0].contains("rx - tx -"), "{}", lines[0]);
    assert!(lines[2].contains(" B/s"), "{}", lines[2]);

    let out = ns.netsight(&["monitor", "network", "--interval", "0.5", "--count", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let views: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(views.len(), 2);
    let v = &views[1];
    assert_eq!(v["tick"], 2);
    let lo = v["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["device"] == "lo")
        .expect("lo");
    assert!(lo["rx_bytes_per_second"].is_number(), "{v:#}");
    assert!(
        v["tcp_states"].is_object() && v["tcp_rates"]["listen_overflows"].is_number(),
        "{v:#}"
    );
    assert!(v["anomalies"].as_array().is_some_and(|a| a.is_empty()), "{v:#}");
}

#[test]
fn without_cap_net_admin_names_what_is_missing() {
    let ns = Netns::new("nmt");
    let bin = env!("CARGO_BIN_EXE_netsight");
    let base = [
        "ip",
        "netns",
        "exec",
        &ns.name,
        "setpriv",
        "--bounding-set",
        "-all",
        "--inh-caps",
        "-all",
        "--",
        bin,
        "monitor",
        "network",
        "--count",
        "1",
    ];
    let out = common::run(&[&base[..], &["--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON line");
    let missing = v["missing_privileges"].as_array().expect("missing_privileges");
    assert!(missing.iter().any(|m| m["granted_by"] == "CAP_NET_ADMIN"), "{v:#}");
    let out = common::run(&base);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("netsight: note: ") && err.contains("needs CAP_NET_ADMIN"),
        "{err}"
    );
}
