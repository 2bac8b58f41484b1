//! Detection scenarios: the default rule packs proven by real fault injection.
//!
//! Every fault is injected for real inside network namespaces this test creates
//! (veth pairs, a tap "wire", nftables, tc, sysctls, hping3), with
//! `netsight serve --interval 1s` running inside the affected namespace and its
//! /metrics and /api/v1/events read from inside that namespace. For each fault the
//! expected rule must fire with the expected root cause (from the event log, and
//! exported as netsight_root_cause) within the latency budget — median ≤ 10 s,
//! worst ≤ 30 s after the fault starts — with no other rule firing except the
//! consequences a scenario declares; a control run of ordinary mixed traffic must
//! raise no anomaly at all. A scenario whose tool is missing fails, it is never
//! skipped. The result table is printed (run with `--nocapture` to see it) and
//! recorded in BENCHMARKS.md ("Detection scenarios").
//!
//! Needs root (namespaces, nftables). About 7 minutes on 2 cores:
//!   cargo test --test scenarios -- --nocapture
//! NETSIGHT_SCENARIOS=loss,synflood runs a subset (development only);
//! NETSIGHT_CONTROL_SECS overrides the control run's length (default 150, min 120).

mod common;
#[path = "scenarios/faults.rs"]
mod faults;
#[path = "scenarios/harness.rs"]
mod harness;
#[path = "scenarios/traffic.rs"]
mod traffic;

use std::time::Instant;

use faults::Row;

type Scenario = (&'static str, fn() -> Row);

const SCENARIOS: &[Scenario] = &[
    ("loss", faults::path_loss),
    ("saturation", faults::saturation),
    ("conntrack", faults::conntrack_full),
    ("accept", faults::accept_overflow),
    ("synflood", faults::syn_flood),
    ("timewait", faults::time_wait_flood),
    ("ephemeral", faults::ephemeral_exhaustion),
    ("closewait", faults::close_wait_leak),
    ("portscan", faults::port_scan),
    ("flapping", faults::flapping),
    ("firewall", faults::firewall_drop),
];

fn run_guarded(name: &str, f: impl FnOnce() -> Row) -> Row {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Row {
                scenario: name.into(),
                problems: vec![format!("scenario failed to run: {msg}")],
                ..Row::default()
            }
        }
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | expected rule / cause | fired rule | cause | detection latency | false alarms | also fired (allowed) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let fa = if r.false_alarms.is_empty() {
            "0".to_string()
        } else {
            format!("{}: {}", r.false_alarms.len(), r.false_alarms.join("; "))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.expected,
            r.fired
                .clone()
                .unwrap_or_else(|| if r.is_control { "—".into() } else { "**none**".into() }),
            r.cause.clone().unwrap_or_else(|| "—".into()),
            r.latency.map(|l| format!("{l:.1} s")).unwrap_or_else(|| "—".into()),
            fa,
            if r.also.is_empty() {
                "—".into()
            } else {
                r.also.join(", ")
            },
        ));
    }
    out
}

#[test]
fn fault_injection_scenarios() {
    let only: Option<Vec<String>> = std::env::var("NETSIGHT_SCENARIOS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let want = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, f) in SCENARIOS {
        if !want(name) {
            continue;
        }
        let t = Instant::now();
        let row = run_guarded(name, f);
        eprintln!(
            "scenario {name}: {:.0} s, fired {:?}, cause {:?}, latency {:?}, false alarms {:?}, also {:?}, problems {:?}\n  recommendation: {}",
            t.elapsed().as_secs_f64(),
            row.fired,
            row.cause,
            row.latency,
            row.false_alarms,
            row.also,
            row.problems,
            row.recommendation
        );
        rows.push(row);
    }
    if want("control") {
        let secs: u64 = std::env::var("NETSIGHT_CONTROL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(150);
        let secs = if only.is_some() { secs } else { secs.max(120) };
        let row = run_guarded("control", || faults::control(secs));
        eprintln!(
            "control: false alarms {:?}, problems {:?}",
            row.false_alarms, row.problems
        );
        rows.push(row);
    }
    let mut lat: Vec<f64> = rows.iter().filter_map(|r| r.latency).collect();
    lat.sort_by(f64::total_cmp);
    let median = if lat.is_empty() {
        0.0
    } else if lat.len() % 2 == 1 {
        lat[lat.len() / 2]
    } else {
        (lat[lat.len() / 2 - 1] + lat[lat.len() / 2]) / 2.0
    };
    let worst = lat.last().copied().unwrap_or(0.0);
    println!("\n{}", table(&rows));
    println!(
        "detection latency: median {median:.1} s, worst {worst:.1} s over {} faults; suite {:.0} s",
        lat.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failures: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| {
            format!(
                "{}: problems {:?}, false alarms {:?}",
                r.scenario, r.problems, r.false_alarms
            )
        })
        .collect();
    if median > 10.0 {
        failures.push(format!("median detection latency {median:.1} s > 10 s"));
    }
    if worst > 30.0 {
        failures.push(format!("worst detection latency {worst:.1} s > 30 s"));
    }
    assert!(
        failures.is_empty(),
        "{} scenario failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Not a test of its own: the body of the helper processes the scenarios start
/// (`<this binary> --exact helper_process` with NETSIGHT_SCENARIO_HELPER set), so
/// that sockets are owned by a separate process with its own name. Without the
/// variable it returns at once.
#[test]
fn helper_process() {
    let Ok(spec) = std::env::var("NETSIGHT_SCENARIO_HELPER") else {
        return;
    };
    // Die with the test process even if it is killed before its guards run.
    // SAFETY: prctl(PR_SET_PDEATHSIG) on ourselves.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let parts: Vec<&str> = spec.split_whitespace().collect();
    // The process name (comm of the main thread) is what netsight reports.
    let pid = std::process::id();
    std::fs::write(format!("/proc/self/task/{pid}/comm"), parts[0]).expect("set comm");
    match parts[0] {
        "leakysrv" => traffic::leaky_server(parts[1]),
        "slowaccept" => traffic::never_accepting_server(parts[1], parts[2].parse().expect("backlog")),
        other => panic!("unknown helper {other}"),
    }
}
