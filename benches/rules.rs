//! Rule-engine cost: `cargo bench --bench rules`.
//! 50 rules, each over 200 label groups (10k series and 10k group evaluations per
//! tick), a third of them with baselines; prints per-tick time, per-series state
//! memory, and tick time while seasonal refits run in the background.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use netsight::rules::testing::{snapshot_at, InputSeries};
use netsight::rules::{load, Engine, RuleSource};
use netsight::snapshot::History;

const GROUPS: usize = 200;
const RULES: usize = 50;

fn rules_yaml(seasonal: bool) -> String {
    let mut s = String::from("rules:\n");
    for r in 0..RULES {
        let metric = format!("netsight_netstat_bench{r}_total");
        let (baseline, when) = match r % 3 {
            0 => ("", "value > 1000".to_string()),
            1 => (
                "    baseline: {model: ewma, k: 6, min_sigma: 1}\n",
                "value > baseline_upper".to_string(),
            ),
            _ if seasonal => (
                "    baseline: {model: seasonal, periods: [60s], step: 1s, refit_every: 30s, k: 6, min_sigma: 1}\n",
                "zscore > 6".to_string(),
            ),
            _ => (
                "    baseline: {model: mad, k: 6, min_sigma: 1}\n",
                "zscore > 6".to_string(),
            ),
        };
        s.push_str(&format!(
            "  - name: r{r}\n    layer: transport\n    severity: warning\n    series: {{metric: {metric}, by: [port]}}\n    expr: rate(value)\n{baseline}    when: {when}\n"
        ));
    }
    s
}

fn series(ticks: usize) -> InputSeries {
    let mut out = Vec::new();
    for r in 0..RULES {
        for g in 0..GROUPS {
            let mut labels = BTreeMap::new();
            labels.insert("port".to_string(), (10_000 + g).to_string());
            let values = (0..ticks)
                .map(|t| Some((t * (10 + g % 7) + (t * 31 + g) % 5) as f64))
                .collect();
            out.push((format!("netsight_netstat_bench{r}_total"), labels, values));
        }
    }
    out
}

fn run(seasonal: bool, ticks: usize) -> (Vec<f64>, Engine) {
    let set = load(&[RuleSource {
        name: "bench.yaml".into(),
        text: rules_yaml(seasonal),
    }])
    .expect("bench rules load");
    let mut engine = Engine::new(set);
    let mut hist = History::new(120);
    let s = series(ticks);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut times = Vec::new();
    for i in 0..ticks {
        let snap = snapshot_at(&s, i, t0 + Duration::from_secs(i as u64));
        hist.record(&snap);
        let start = Instant::now();
        engine.evaluate(&snap, &hist);
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    (times, engine)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rules bench: run with `cargo bench --bench rules`");
        return;
    }
    let ticks = 200;
    println!(
        "rule engine: {RULES} rules x {GROUPS} groups = {} series/evaluations per tick, {ticks} ticks",
        RULES * GROUPS
    );
    println!("{:<44} {:>10} {:>10} {:>10}", "case", "mean ms", "p95 ms", "max ms");
    for (label, seasonal) in [
        ("EWMA/MAD/threshold mix", false),
        ("with seasonal models refitting (1 in 3 rules)", true),
    ] {
        let (times, engine) = run(seasonal, ticks);
        let steady = &times[20..];
        let mean = steady.iter().sum::<f64>() / steady.len() as f64;
        println!(
            "{label:<44} {mean:>10.2} {:>10.2} {:>10.2}",
            pct(steady, 0.95),
            pct(steady, 1.0)
        );
        let mem = engine.state_memory();
        for (model, (groups, baseline, total)) in mem {
            let n = groups.max(1) as f64;
            println!(
                "  per series, {model:<9}: baseline {:>6.0} bytes, whole group state {:>6.0} bytes ({groups} series)",
                baseline as f64 / n,
                total as f64 / n
            );
        }
    }
}
