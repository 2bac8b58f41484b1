//! Replaying recorded series through the rule engine's detector and judging it on the
//! Numenta Anomaly Benchmark (NAB): reading NAB's corpus layout ([`corpus`]), writing
//! NAB's results layout ([`write_results`]), and NAB's scoring ([`score`]).
//!
//! The replay scores each series with [`crate::rules::detector::Detector`], the model
//! behind `baseline: {model: detector}` in rules, with its default configuration: one
//! configuration for the whole corpus, no labels read while scoring. [`zscore`] is a
//! plain rolling z-score, only a point of comparison.

pub mod corpus;
pub mod score;
pub mod zscore;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::rules::detector::Detector;
use corpus::{Corpus, DataFile};
use score::{EventMetrics, ProfileResult, Series, PROFILES, STANDARD};

/// The detector name in NAB's results layout (NAB forbids `_` in it).
pub const DETECTOR_NAME: &str = "netsight";

/// A model that can replay a series: one anomaly score in [0, 1] per value, each
/// computed before the value is learned (no look-ahead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// The rule engine's default detector.
    Netsight,
    /// A plain rolling z-score, for comparison.
    RollingZscore,
}

impl Model {
    pub fn name(self) -> &'static str {
        match self {
            Model::Netsight => DETECTOR_NAME,
            Model::RollingZscore => "rollingzscore",
        }
    }

    /// Scores every value in order; `None` values are skipped (scored `None`, not learned).
    pub fn run(self, values: &[Option<f64>]) -> Vec<Option<f64>> {
        match self {
            Model::Netsight => {
                let mut d = Detector::default();
                values.iter().map(|v| v.map(|x| d.observe(x))).collect()
            }
            Model::RollingZscore => {
                let mut z = zscore::RollingZscore::default();
                values.iter().map(|v| v.map(|x| z.observe(x))).collect()
            }
        }
    }

    /// Scores a series without gaps.
    pub fn run_dense(self, values: &[f64]) -> Vec<f64> {
        let v: Vec<Option<f64>> = values.iter().map(|&x| Some(x)).collect();
        self.run(&v).into_iter().map(|s| s.unwrap_or(0.0)).collect()
    }
}

/// The network/host-monitoring subset: every realAWSCloudwatch series, the three
/// host-like realKnownCause series and the artificial series (31 files, 44 windows).
pub fn in_subset(key: &str) -> bool {
    const KNOWN_CAUSE: [&str; 3] = [
        "realKnownCause/ec2_request_latency_system_failure.csv",
        "realKnownCause/cpu_utilization_asg_misconfiguration.csv",
        "realKnownCause/machine_temperature_system_failure.csv",
    ];
    key.starts_with("realAWSCloudwatch/") || key.starts_with("artificial") || KNOWN_CAUSE.contains(&key)
}

/// Scores every file of a corpus with `model`.
pub fn run_corpus(corpus: &Corpus, model: Model) -> Vec<Vec<f64>> {
    corpus.files.iter().map(|f| model.run_dense(&f.values)).collect()
}

/// Writes `out/<detector>/<category>/<detector>_<file>` with NAB's header
/// `timestamp,value,anomaly_score,label`, one row per data row in file order.
pub fn write_results(out: &Path, detector: &str, corpus: &Corpus, scores: &[Vec<f64>]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::with_capacity(corpus.files.len());
    for (f, s) in corpus.files.iter().zip(scores) {
        let dir = out.join(detector).join(&f.category);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{detector}_{}", f.name));
        let mut text = String::with_capacity(f.len() * 48);
        text.push_str("timestamp,value,anomaly_score,label\n");
        for (((t, v), a), l) in f.timestamps.iter().zip(&f.raw_values).zip(s).zip(f.labels()) {
            // `{}` prints the shortest text that reads back as the same f64, so NAB's
            // scorer sees exactly the scores judged here.
            let _ = writeln!(text, "{t},{v},{a},{l}");
        }
        std::fs::File::create(&path)
            .and_then(|mut fh| fh.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// NAB's three profiles at their optimised thresholds, and event-level figures at the
/// standard profile's threshold.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub files: usize,
    pub windows: usize,
    pub profiles: Vec<ProfileResult>,
    pub events: EventMetrics,
}

impl Evaluation {
    pub fn standard(&self) -> &ProfileResult {
        &self.profiles[0]
    }
}

/// Scores the files selected by `keep` (by key `category/file.csv`).
pub fn evaluate(corpus: &Corpus, scores: &[Vec<f64>], keep: impl Fn(&str) -> bool) -> Evaluation {
    let picked: Vec<(&DataFile, &Vec<f64>)> = corpus
        .files
        .iter()
        .zip(scores)
        .filter(|(f, _)| keep(&f.key()))
        .collect();
    let series: Vec<Series> = picked
        .iter()
        .map(|(f, s)| Series {
            scores: s,
            windows: &f.windows,
        })
        .collect();
    let profiles: Vec<ProfileResult> = PROFILES.iter().map(|p| score::optimize(&series, p)).collect();
    let std_threshold = profiles
        .iter()
        .find(|p| p.profile == STANDARD)
        .map_or(score::NO_DETECTION, |p| p.threshold);
    Evaluation {
        files: series.len(),
        windows: series.iter().map(|s| s.windows.len()).sum(),
        events: score::event_metrics(&series, std_threshold),
        profiles,
    }
}

/// Published NAB v1.1 standard-profile scores (NAB README / results/final_results.json).
pub const PUBLISHED: [(&str, f64); 6] = [
    ("ARTime", 74.9),
    ("Numenta HTM", 70.1),
    ("CAD OSE", 69.9),
    ("earthgecko Skyline", 58.2),
    ("Random Cut Forest", 51.7),
    ("Windowed Gaussian", 39.7),
];

/// A Markdown table: one row per (detector, corpus part).
pub fn render_table(rows: &[(&str, &str, &Evaluation)]) -> String {
    let mut out = String::new();
    out.push_str("| detector | files (windows) | standard | low FP | low FN | threshold | precision | recall | F1 | mean delay |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, part, e) in rows {
        let p = |i: usize| e.profiles.get(i).map_or(f64::NAN, |p| p.score);
        let _ = writeln!(
            out,
            "| {name} | {part}: {} ({}) | {:.1} | {:.1} | {:.1} | {:.4} | {:.2} | {:.2} | {:.2} | {:.0}% of window ({:.0} rows) |",
            e.files,
            e.windows,
            p(0),
            p(1),
            p(2),
            e.standard().threshold,
            e.events.precision,
            e.events.recall,
            e.events.f1,
            e.events.mean_delay_pct,
            e.events.mean_delay_rows,
        );
    }
    out
}
