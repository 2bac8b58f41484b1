//! Rule-engine cost: `cargo bench --bench rules`.
//! 50 rules, each over 200 label groups (10k series and 10k group evaluations per
//! tick), a third of them with baselines; prints per-tick time (mean, p50, p99,
//! max), the engine's real heap per series for each baseline kind (counted by a
//! global allocator), and tick times while seasonal refits run in the background.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use netsight::rules::testing::{snapshot_at, InputSeries};
use netsight::rules::{load, Engine, RuleSource};
use netsight::snapshot::History;

/// Counts the heap bytes freed while `COUNTING` is on, as malloc really handed them
/// out: each chunk's usable size (rounding included) plus glibc's 8-byte chunk
/// header. Dropping an engine with counting on measures its whole heap. Only the
/// measuring thread counts (the refit worker may still be freeing old jobs), and
/// nothing is counted otherwise: timed ticks pay one thread-local read per free.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static FREED: AtomicIsize = AtomicIsize::new(0);

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}
const CHUNK_HEADER: isize = 8;

fn usable(p: *mut u8) -> isize {
    // SAFETY: `p` was just returned by (or is about to be given back to) the system
    // allocator, which is glibc malloc on the bench machines.
    unsafe { libc::malloc_usable_size(p.cast()) as isize + CHUNK_HEADER }
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counting() {
            FREED.fetch_add(usable(p), Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const GROUPS: usize = 200;
const RULES: usize = 50;

#[derive(Clone, Copy, PartialEq)]
enum Mix {
    /// A third threshold-only, a third EWMA, a third MAD.
    Standard,
    /// As `Standard` with seasonal (MSTL, background refits) instead of MAD.
    Seasonal,
    /// Every rule with the same baseline (memory per kind).
    Only(&'static str),
}

fn baseline_of(mix: Mix, r: usize) -> (String, &'static str) {
    let model = match mix {
        Mix::Only(m) => m,
        _ => match r % 3 {
            0 => return (String::new(), "value > 1000"),
            1 => "ewma",
            _ if mix == Mix::Seasonal => "seasonal",
            _ => "mad",
        },
    };
    match model {
        "ewma" => (
            "    baseline: {model: ewma, k: 6, min_sigma: 1}\n".into(),
            "value > baseline_upper",
        ),
        "seasonal" => (
            "    baseline: {model: seasonal, periods: [60s], step: 1s, refit_every: 30s, k: 6, min_sigma: 1}\n".into(),
            "zscore > 6",
        ),
        other => (
            format!("    baseline: {{model: {other}, k: 6, min_sigma: 1}}\n"),
            "zscore > 6",
        ),
    }
}

fn rules_yaml(mix: Mix) -> String {
    let mut s = String::from("rules:\n");
    for r in 0..RULES {
        let metric = format!("netsight_netstat_bench{r}_total");
        let (baseline, when) = baseline_of(mix, r);
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

struct Run {
    /// Per tick: wall time of `evaluate` in ms (dropping its output included), and
    /// whether seasonal refits were running in the background during it.
    ticks: Vec<(f64, bool)>,
    engine: Engine,
}

fn run(mix: Mix, ticks: usize) -> Run {
    let set = load(&[RuleSource {
        name: "bench.yaml".into(),
        text: rules_yaml(mix),
    }])
    .expect("bench rules load");
    let mut engine = Engine::new(set);
    let mut hist = History::new(120);
    let s = series(ticks);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::new();
    for i in 0..ticks {
        let snap = snapshot_at(&s, i, t0 + Duration::from_secs(i as u64));
        hist.record(&snap);
        let busy = engine.refits_pending() > 0;
        let start = Instant::now();
        engine.evaluate(&snap, &hist);
        out.push((start.elapsed().as_secs_f64() * 1e3, busy));
    }
    Run { ticks: out, engine }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn row(label: &str, v: &[f64]) {
    if v.is_empty() {
        println!("{label:<52} {:>8}", "-");
        return;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "{label:<52} {:>6} {mean:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        v.len(),
        pct(v, 0.5),
        pct(v, 0.99),
        pct(v, 1.0)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rules bench: run with `cargo bench --bench rules`");
        return;
    }
    let ticks = 300;
    let warmup = 20;
    println!(
        "rule engine: {RULES} rules x {GROUPS} groups = {} series/evaluations per tick, {ticks} ticks ({warmup} warm-up ticks not counted)",
        RULES * GROUPS
    );
    println!(
        "{:<52} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "case (ms per tick)", "ticks", "mean", "p50", "p99", "max"
    );
    let standard = run(Mix::Standard, ticks);
    let v: Vec<f64> = standard.ticks[warmup..].iter().map(|t| t.0).collect();
    row("threshold/EWMA/MAD mix", &v);
    drop(standard);

    let seasonal = run(Mix::Seasonal, ticks);
    let all: Vec<f64> = seasonal.ticks[warmup..].iter().map(|t| t.0).collect();
    let busy: Vec<f64> = seasonal.ticks[warmup..].iter().filter(|t| t.1).map(|t| t.0).collect();
    let idle: Vec<f64> = seasonal.ticks[warmup..].iter().filter(|t| !t.1).map(|t| t.0).collect();
    row("threshold/EWMA/seasonal mix, all ticks", &all);
    row("  ticks with seasonal refits running", &busy);
    row("  ticks with no refit running", &idle);
    drop(seasonal);

    // Memory: an engine whose 50 rules all use one baseline kind, run long enough to
    // fill every window (MAD ring, changepoint window: 64 values); its heap is what
    // dropping it frees, divided by the groups it tracked.
    println!(
        "engine heap per series (real allocations: GroupState in its table slot, labels, output label cache, baseline, windows); inline GroupState {} bytes",
        std::mem::size_of::<netsight::rules::engine::GroupState>()
    );
    for kind in ["ewma", "mad", "detector", "seasonal"] {
        // 200 ticks: past the seasonal model's first fit (two 60 s periods).
        let r = run(Mix::Only(kind), 200);
        // Let background refits finish so their results are counted too.
        let deadline = Instant::now() + Duration::from_secs(120);
        while r.engine.refits_pending() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let groups = r.engine.group_count();
        let Run { ticks: t, engine } = r;
        drop(t);
        FREED.store(0, Ordering::Relaxed);
        COUNTING.with(|c| c.set(true));
        drop(engine);
        COUNTING.with(|c| c.set(false));
        let freed = FREED.load(Ordering::Relaxed);
        println!(
            "  {kind:<10} {:>7.0} bytes per series ({groups} series)",
            freed as f64 / groups.max(1) as f64
        );
    }
}
