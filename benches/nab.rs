//! `cargo bench --bench nab -- DIR`: detection quality of the default detector on the
//! Numenta Anomaly Benchmark corpus in DIR (NAB's `data/` and `labels/` layout), next to
//! a plain rolling z-score, and what the detector costs per series.
//!
//! Prints the NAB scores (standard, reward_low_FP_rate, reward_low_FN_rate), event-level
//! precision/recall/F1 and mean detection delay on the whole corpus and on the
//! network/host subset, a per-category breakdown, then memory per series and
//! nanoseconds per update. BENCHMARKS.md ("Detection quality (NAB)") records the figures.
//!
//! DIR may also come from `NAB_DIR`. Without the `--bench` argument (as under
//! `cargo test --all-targets`) or without a corpus it prints a one-line note and exits 0.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use netsight::cli::replay;
use netsight::nab::{self, corpus::Corpus, score, Model};
use netsight::rules::detector::Detector;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("nab bench: run with `cargo bench --bench nab -- DIR` (DIR: a NAB corpus); skipped");
        return;
    }
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .or_else(|| std::env::var("NAB_DIR").ok());
    let Some(dir) = dir.map(PathBuf::from) else {
        println!("nab bench: no corpus given (`cargo bench --bench nab -- DIR` or NAB_DIR); skipped");
        return;
    };
    let corpus = match Corpus::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nab bench: {e:#}");
            std::process::exit(1);
        }
    };

    let t = Instant::now();
    let netsight = nab::run_corpus(&corpus, Model::Netsight);
    let replay_ns = t.elapsed().as_nanos() as f64 / corpus.rows() as f64;
    let t = Instant::now();
    let zscore = nab::run_corpus(&corpus, Model::RollingZscore);
    let zscore_ns = t.elapsed().as_nanos() as f64 / corpus.rows() as f64;

    print!("{}", replay::report(&corpus, &netsight, &zscore));
    println!("\nPer category, netsight at the whole-corpus standard threshold:\n");
    print!("{}", categories(&corpus, &netsight));

    // Cost: memory of one series' state after its whole series, and a tight update loop.
    let mut max_bytes = 0;
    for f in &corpus.files {
        let mut d = Detector::default();
        for &x in &f.values {
            d.observe(x);
        }
        max_bytes = max_bytes.max(d.memory_bytes());
    }
    let values: Vec<f64> = corpus.files.iter().flat_map(|f| f.values.iter().copied()).collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut d = Detector::default();
        let t = Instant::now();
        for &x in &values {
            black_box(d.observe(black_box(x)));
        }
        best = best.min(t.elapsed().as_nanos() as f64 / values.len() as f64);
    }
    println!("\nCost per series (netsight detector):\n");
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| state per series (inline + heap, largest over the corpus) | {max_bytes} bytes |");
    println!(
        "| `observe` (score + learn), one series fed {} values, best of 3 | {best:.0} ns |",
        values.len()
    );
    println!("| whole-corpus replay, per row (includes allocation of the outputs) | {replay_ns:.0} ns |");
    println!("| rolling z-score (288-value window), per row | {zscore_ns:.0} ns |");
}

/// Standard-profile raw score, windows found and false events per category, at the
/// corpus-wide standard threshold.
fn categories(corpus: &Corpus, scores: &[Vec<f64>]) -> String {
    let all = nab::evaluate(corpus, scores, |_| true);
    let thr = all.standard().threshold;
    let mut cats: BTreeMap<&str, (f64, usize, usize, usize)> = BTreeMap::new();
    for (f, s) in corpus.files.iter().zip(scores) {
        let series = score::Series {
            scores: s,
            windows: &f.windows,
        };
        let r = score::score_series(&series, &score::STANDARD, thr);
        let e = score::event_metrics(&[series], thr);
        let c = cats.entry(f.category.as_str()).or_default();
        c.0 += r.raw;
        c.1 += f.windows.len();
        c.2 += e.detected;
        c.3 += e.false_events;
    }
    let mut out = String::from(
        "| category | windows found | false events | raw standard score | normalised |\n|---|---:|---:|---:|---:|\n",
    );
    for (k, (raw, w, d, fp)) in cats {
        let norm = if w > 0 {
            format!("{:.1}", score::normalize(raw, w, &score::STANDARD))
        } else {
            "—".into()
        };
        out.push_str(&format!("| {k} | {d}/{w} | {fp} | {raw:.2} | {norm} |\n"));
    }
    out
}
