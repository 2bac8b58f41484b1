//! `netsight rules check|test` and hot reload in the running daemon.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netsight");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rules");

fn netsight(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run netsight");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_embedded_packs_are_valid() {
    let (code, out, err) = netsight(&["rules", "check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("OK: "), "{out}");
}

#[test]
fn check_reports_four_located_errors() {
    let file = format!("{DIR}/broken.yaml");
    let (code, _, err) = netsight(&["rules", "check", &file]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    let expect = [
        (":7:9: ", "expected ',' or '}'"),
        (":12:15: ", "unknown metric `netsight_no_such_metric_total`"),
        (":19:11: ", "bad expression `rate(value) / (`"),
        (":41:15: ", "cause graph has a cycle"),
    ];
    for (line, (loc, msg)) in lines.iter().zip(expect) {
        assert!(line.starts_with(&format!("{file}{loc}")), "{line}");
        assert!(line.contains(msg), "{line}");
    }
}

#[test]
fn construct_tests_pass() {
    let (code, out, err) = netsight(&["rules", "test", &format!("{DIR}/constructs.test.yaml")]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_wrong_expectation_fails_the_test_run() {
    let text = std::fs::read_to_string(format!("{DIR}/constructs.test.yaml")).expect("read");
    let wrong = text.replacen(
        "{at: 5s, rule: threshold, firing: true}",
        "{at: 5s, rule: threshold, firing: false}",
        1,
    );
    assert_ne!(text, wrong);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        format!("{DIR}/constructs.rules.yaml"),
        dir.path().join("constructs.rules.yaml"),
    )
    .expect("copy");
    let f = dir.path().join("wrong.test.yaml");
    std::fs::write(&f, wrong).expect("write");
    let (code, out, _) = netsight(&["rules", "test", &f.to_string_lossy()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("at 5s: threshold fires, expected silent"), "{out}");
}

fn scrape(ns: &common::Netns) -> String {
    ns.enter(|| {
        let mut s = TcpStream::connect("127.0.0.1:9977").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut b = String::new();
        s.read_to_string(&mut b).ok()?;
        Some(b)
    })
    .unwrap_or_default()
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

fn wait_for(ns: &common::Netns, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape(ns);
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{}",
            &body[..body.len().min(2000)]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_broken_reload_keeps_the_last_good_rules() {
    let ns = common::Netns::new("nrl");
    let dir = tempfile::tempdir().expect("tempdir");
    let rules_dir = dir.path().join("rules.d");
    std::fs::create_dir(&rules_dir).expect("mkdir");
    let good = std::fs::read_to_string(format!("{DIR}/constructs.rules.yaml")).expect("read");
    std::fs::write(rules_dir.join("mine.yaml"), &good).expect("write");
    let cfg = dir.path().join("netsight.yaml");
    std::fs::write(&cfg, format!("rules:\n  paths: [{}]\n", rules_dir.display())).expect("write");
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            BIN,
            "serve",
            "--listen",
            "127.0.0.1:9977",
            "--interval",
            "1s",
            "--config",
        ])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id() as libc::pid_t;
    let guard_stderr = child.stderr.take();
    let _guard = Kill(child);
    let body = wait_for(&ns, "first snapshot", |b| metric(b, "netsight_rules_loaded").is_some());
    let loaded = metric(&body, "netsight_rules_loaded").expect("loaded");
    assert!(loaded > 13.0, "embedded + file rules: {loaded}");
    assert_eq!(metric(&body, "netsight_rules_last_reload_success"), Some(1.0));

    // A broken file and SIGHUP: the previous rules stay, the failure is visible.
    let broken = std::fs::read_to_string(format!("{DIR}/broken.yaml")).expect("read");
    std::fs::write(rules_dir.join("broken.yaml"), broken).expect("write");
    // SAFETY: signalling the daemon we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let body = wait_for(&ns, "failed reload", |b| {
        metric(b, "netsight_rules_last_reload_success") == Some(0.0)
    });
    assert_eq!(metric(&body, "netsight_rules_loaded"), Some(loaded));

    // Fixing the file is picked up without a signal.
    std::fs::remove_file(rules_dir.join("broken.yaml")).expect("rm");
    let body = wait_for(&ns, "successful reload", |b| {
        metric(b, "netsight_rules_last_reload_success") == Some(1.0)
    });
    assert_eq!(metric(&body, "netsight_rules_loaded"), Some(loaded));
    drop(_guard);
    let mut log = String::new();
    if let Some(mut e) = guard_stderr {
        let _ = e.read_to_string(&mut log);
    }
    assert!(
        log.contains("broken.yaml:12:15: unknown metric"),
        "log lacks the located error:\n{log}"
    );
}

#[test]
fn the_daemon_saves_state_on_shutdown_and_restores_it() {
    let ns = common::Netns::new("nrp");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("netsight.state");
    let cfg = dir.path().join("netsight.yaml");
    std::fs::write(&cfg, format!("rules:\n  state_file: {}\n", state.display())).expect("write");
    let run = |expect_restore: bool| {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                BIN,
                "serve",
                "--listen",
                "127.0.0.1:9977",
                "--interval",
                "1s",
                "--config",
            ])
            .arg(&cfg)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serve");
        let pid = child.id() as libc::pid_t;
        wait_for(&ns, "a few ticks", |b| {
            b.lines().any(|l| l.starts_with("netsight_baseline{"))
        });
        // SAFETY: signalling the daemon we started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success());
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(log.contains("baseline state restored"), expect_restore, "{log}");
    };
    run(false);
    let header = std::fs::read(&state).expect("state file written at shutdown");
    assert!(header.starts_with(b"netsight-state 1 "));
    run(true);
}
