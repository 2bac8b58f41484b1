//! `netsight replay`: runs the rule engine's detector over recorded series.
//!
//! * CSV mode: `netsight replay FILE...` reads `timestamp,value` files, or wide CSVs
//!   with several value columns (each scored as its own series), and writes each row
//!   with an anomaly score per column.
//! * NAB mode: `netsight replay --nab DIR [--out RESULTS] [--score]` replays every
//!   series of a Numenta Anomaly Benchmark corpus, writes NAB's results layout
//!   (`RESULTS/netsight/<category>/netsight_<file>.csv`) and/or scores it with NAB's
//!   scoring (standard, reward_low_FP_rate, reward_low_FN_rate), next to a plain
//!   rolling z-score for comparison.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::nab::{self, corpus::Corpus, corpus::Table, Model};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// CSV files to score: `timestamp,value`, or a header `timestamp,a,b,...` with one
    /// series per column (empty cells are gaps).
    #[arg(value_name = "FILE", conflicts_with = "nab")]
    pub files: Vec<PathBuf>,
    /// A NAB corpus: DIR/data/<category>/<file>.csv and DIR/labels/combined_windows.json.
    #[arg(long, value_name = "DIR")]
    pub nab: Option<PathBuf>,
    /// NAB mode: the results directory (NAB's layout, detectors `netsight` and
    /// `rollingzscore`). CSV mode: the output file (one input) or directory (several);
    /// default standard output.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// NAB mode: score the replay with NAB's scoring and print the figures.
    #[arg(long)]
    pub score: bool,
    /// CSV mode: list the rows whose anomaly score reaches this level (on stderr).
    #[arg(long, value_name = "SCORE")]
    pub threshold: Option<f64>,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    match &args.nab {
        Some(dir) => run_nab(dir, args.out.as_deref(), args.score),
        None => {
            if args.files.is_empty() {
                bail!("give CSV files to replay, or --nab DIR");
            }
            if args.score {
                bail!("--score needs --nab (plain CSV files carry no labels)");
            }
            run_csv(&args.files, args.out.as_deref(), args.threshold)
        }
    }
}

/// Replays a NAB corpus; writes results and/or prints the scores.
pub fn run_nab(dir: &Path, out: Option<&Path>, score: bool) -> Result<()> {
    let corpus = Corpus::load(dir)?;
    let netsight = nab::run_corpus(&corpus, Model::Netsight);
    let zscore = nab::run_corpus(&corpus, Model::RollingZscore);
    if let Some(out) = out {
        for (model, scores) in [(Model::Netsight, &netsight), (Model::RollingZscore, &zscore)] {
            let written = nab::write_results(out, model.name(), &corpus, scores)?;
            eprintln!(
                "wrote {} results files under {}",
                written.len(),
                out.join(model.name()).display()
            );
        }
    }
    if score || out.is_none() {
        print!("{}", report(&corpus, &netsight, &zscore));
    }
    Ok(())
}

/// The figures table for a replayed corpus: netsight and the rolling z-score, on the
/// whole corpus and on the network/host subset, then the published references.
pub fn report(corpus: &Corpus, netsight: &[Vec<f64>], zscore: &[Vec<f64>]) -> String {
    let evals = [
        ("netsight", "all", nab::evaluate(corpus, netsight, |_| true)),
        ("netsight", "subset", nab::evaluate(corpus, netsight, nab::in_subset)),
        ("rolling z-score", "all", nab::evaluate(corpus, zscore, |_| true)),
        (
            "rolling z-score",
            "subset",
            nab::evaluate(corpus, zscore, nab::in_subset),
        ),
    ];
    let rows: Vec<(&str, &str, &nab::Evaluation)> = evals.iter().map(|(d, p, e)| (*d, *p, e)).collect();
    let mut out = format!(
        "NAB corpus {}: {} files, {} windows, {} rows (NAB scoring: threshold optimised per detector and profile; \
         precision/recall/F1/delay at the standard threshold)\n\n",
        corpus.root.display(),
        corpus.files.len(),
        corpus.windows(),
        corpus.rows()
    );
    out.push_str(&nab::render_table(&rows));
    out.push_str("\nPublished NAB v1.1 standard scores (whole corpus): ");
    let refs: Vec<String> = nab::PUBLISHED.iter().map(|(n, s)| format!("{n} {s}")).collect();
    let _ = writeln!(out, "{}", refs.join(", "));
    out
}

fn run_csv(files: &[PathBuf], out: Option<&Path>, threshold: Option<f64>) -> Result<()> {
    if files.len() > 1 {
        if let Some(dir) = out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let table = Table::parse(&text).with_context(|| file.display().to_string())?;
        let scores: Vec<Vec<Option<f64>>> = table.values.iter().map(|v| Model::Netsight.run(v)).collect();
        let csv = render_scored(&table, &scores);
        match out {
            Some(o) if files.len() > 1 || o.is_dir() => {
                let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("series");
                let path = o.join(format!("{stem}.scored.csv"));
                std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
            }
            Some(o) => std::fs::write(o, csv).with_context(|| format!("writing {}", o.display()))?,
            None => std::io::stdout().lock().write_all(csv.as_bytes())?,
        }
        if let Some(t) = threshold {
            let mut err = std::io::stderr().lock();
            for (c, col) in table.columns.iter().enumerate() {
                for (i, s) in scores[c].iter().enumerate() {
                    if let Some(s) = s.filter(|s| *s >= t) {
                        let _ = writeln!(
                            err,
                            "{}: {} {col}={} anomaly_score={s:.4}",
                            file.display(),
                            table.timestamps[i],
                            table.raw[c][i]
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// `timestamp,value,anomaly_score` for one series; for several, each value column is
/// followed by its `<column>_anomaly_score`. Gaps stay empty.
pub fn render_scored(table: &Table, scores: &[Vec<Option<f64>>]) -> String {
    let mut s = String::with_capacity(table.rows() * 32 * table.columns.len().max(1));
    s.push_str(&table.timestamp_header);
    if table.columns.len() == 1 {
        let _ = write!(s, ",{},anomaly_score", table.columns[0]);
    } else {
        for c in &table.columns {
            let _ = write!(s, ",{c},{c}_anomaly_score");
        }
    }
    s.push('\n');
    for i in 0..table.rows() {
        s.push_str(&table.timestamps[i]);
        for (c, col) in scores.iter().enumerate() {
            let _ = write!(s, ",{},", table.raw[c][i]);
            if let Some(v) = col[i] {
                let _ = write!(s, "{v}");
            }
        }
        s.push('\n');
    }
    s
}
