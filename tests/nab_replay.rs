//! `netsight replay`: NAB's results layout on a tiny synthetic corpus
//! (tests/fixtures/nab), NAB's scoring on hand-made cases, and the CSV mode.
//! Needs nothing outside the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use netsight::nab::corpus::{Corpus, Table};
use netsight::nab::score::{self, Series, NO_DETECTION, PROFILES, STANDARD};
use netsight::nab::{self, Model};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nab")
}

fn netsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_netsight"))
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn corpus_loads_with_windows_as_rows() {
    let c = Corpus::load(&fixtures()).expect("load");
    let keys: Vec<String> = c.files.iter().map(|f| f.key()).collect();
    assert_eq!(
        keys,
        [
            "synthHost/cpu_spike.csv",
            "synthHost/quiet.csv",
            "synthNet/rx_shift.csv"
        ]
    );
    assert_eq!(c.files[0].windows, vec![(280, 320)]);
    assert!(c.files[1].windows.is_empty());
    assert_eq!(c.files[2].windows, vec![(235, 265)]);
    assert_eq!((c.windows(), c.rows()), (2, 1200));
}

#[test]
fn replay_writes_nab_results_layout() {
    let out = tempfile::tempdir().expect("tempdir");
    let st = netsight()
        .args(["replay", "--nab"])
        .arg(fixtures())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let corpus = Corpus::load(&fixtures()).expect("load");
    for detector in ["netsight", "rollingzscore"] {
        for f in &corpus.files {
            let path = out
                .path()
                .join(detector)
                .join(&f.category)
                .join(format!("{detector}_{}", f.name));
            let rows = read_csv(&path);
            assert_eq!(
                rows[0],
                ["timestamp", "value", "anomaly_score", "label"],
                "{}",
                path.display()
            );
            assert_eq!(rows.len() - 1, f.len(), "one row per data row: {}", path.display());
            let data = read_csv(&fixtures().join("data").join(&f.category).join(&f.name));
            for (i, row) in rows[1..].iter().enumerate() {
                assert_eq!(row[0], data[i + 1][0], "timestamps copied in order");
                assert_eq!(row[1], data[i + 1][1], "values copied verbatim");
                let s: f64 = row[2].parse().expect("score");
                assert!((0.0..=1.0).contains(&s), "{s}");
                let inside = f.windows.iter().any(|&(l, r)| l <= i && i <= r);
                assert_eq!(
                    row[3],
                    if inside { "1" } else { "0" },
                    "label of row {i} in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn replay_finds_the_synthetic_anomalies() {
    let corpus = Corpus::load(&fixtures()).expect("load");
    let scores = nab::run_corpus(&corpus, Model::Netsight);
    let e = nab::evaluate(&corpus, &scores, |_| true);
    assert_eq!(e.events.detected, 2, "{e:?}");
    assert_eq!(e.events.false_events, 0, "{e:?}");
    // The spike and the shift are caught on their first sample, the middle of their
    // windows: S(−0.5)/S(−1) ≈ 0.86 each.
    let std = e.standard();
    assert!(std.score > 90.0, "{std:?}");
    // The quiet series never gets near an alarm.
    assert!(
        scores[1].iter().all(|&s| s < 0.05),
        "max {}",
        scores[1].iter().cloned().fold(0.0, f64::max)
    );

    let st = netsight()
        .args(["replay", "--nab"])
        .arg(fixtures())
        .arg("--score")
        .output()
        .expect("run");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("| netsight | all: 3 (2) |"), "{text}");
    assert!(text.contains("| rolling z-score | all: 3 (2) |"), "{text}");
    assert!(text.contains("ARTime 74.9"), "{text}");
}

/// NAB's scoring on the fixture windows with hand-made detectors: 400 rows, so 60
/// probationary rows; windows 280..=320 (41 rows) and 235..=265 (31 rows).
#[test]
fn scorer_on_hand_made_detections() {
    let corpus = Corpus::load(&fixtures()).expect("load");
    let with = |hits: &[(usize, usize, f64)]| -> Vec<Vec<f64>> {
        let mut s: Vec<Vec<f64>> = corpus.files.iter().map(|f| vec![0.0; f.len()]).collect();
        for &(file, row, v) in hits {
            s[file][row] = v;
        }
        s
    };
    fn series<'a>(corpus: &'a Corpus, s: &'a [Vec<f64>]) -> Vec<Series<'a>> {
        corpus
            .files
            .iter()
            .zip(s)
            .map(|(f, s)| Series {
                scores: s,
                windows: &f.windows,
            })
            .collect()
    }
    let run = |s: &[Vec<f64>], p: &score::Profile| score::optimize(&series(&corpus, s), p);
    // Perfect: each window detected on its first row.
    let perfect = with(&[(0, 280, 1.0), (2, 235, 1.0)]);
    for p in PROFILES {
        let r = run(&perfect, &p);
        assert!((r.score - 100.0).abs() < 1e-9, "{r:?}");
    }
    // Null: nothing ever fires.
    let null = with(&[]);
    for p in PROFILES {
        let r = run(&null, &p);
        assert!(r.score.abs() < 1e-9 && r.threshold == NO_DETECTION, "{r:?}");
    }
    // Late detection on the last row of the first window (position −1/41), nothing for
    // the second: S(−1/41)/S(−1) − 1, normalised over 2 windows.
    let late = with(&[(0, 320, 1.0)]);
    let tp = score::scaled_sigmoid(-1.0 / 41.0) / score::scaled_sigmoid(-1.0);
    assert!((tp - 0.061_726).abs() < 1e-5, "{tp}");
    let r = run(&late, &STANDARD);
    assert!((r.raw - (tp - 1.0)).abs() < 1e-9, "{r:?}");
    assert!((r.score - 100.0 * (tp - 1.0 + 2.0) / 4.0).abs() < 1e-7, "{r:?}");
    // A false alarm in the quiet series (no window before it: −0.11) costs less than the
    // first window is worth, so the optimiser keeps the threshold that includes both.
    let fp = with(&[(0, 280, 0.9), (1, 200, 0.95)]);
    let r = run(&fp, &STANDARD);
    assert_eq!(r.threshold, 0.9);
    assert!((r.raw - (1.0 - 0.11 - 1.0)).abs() < 1e-9, "{r:?}");
    assert!((r.score - 100.0 * (2.0 - 0.11) / 4.0).abs() < 1e-7, "{r:?}");
    // In reward_low_FP_rate the false alarm costs 0.22.
    let r = run(&fp, &score::REWARD_LOW_FP);
    assert!((r.raw - (1.0 - 0.22 - 1.0)).abs() < 1e-9, "{r:?}");
    // A false alarm right after the first window (row 322, 2 rows past its end):
    // S(2/40)·0.11 = −0.01368.
    let after = with(&[(0, 280, 1.0), (0, 322, 1.0), (2, 235, 1.0)]);
    let r = run(&after, &STANDARD);
    let cost = score::scaled_sigmoid(2.0 / 40.0) * 0.11;
    assert!((cost + 0.013_679).abs() < 1e-5, "{cost}");
    assert!((r.raw - (2.0 + cost)).abs() < 1e-9, "{r:?}");
    // Event view of that case: 2 windows found, 1 false event, no delay.
    let e = score::event_metrics(&series(&corpus, &after), 1.0);
    assert_eq!((e.detected, e.false_events), (2, 1));
    assert!((e.precision - 2.0 / 3.0).abs() < 1e-12 && e.recall == 1.0 && e.mean_delay_rows == 0.0);
}

#[test]
fn csv_mode_scores_each_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One series: timestamp,value.
    let single = dir.path().join("single.csv");
    let mut text = String::from("timestamp,value\n");
    for i in 0..400 {
        let v = if i == 350 { 500.0 } else { 100.0 + (i % 7) as f64 };
        text.push_str(&format!("{i},{v}\n"));
    }
    std::fs::write(&single, &text).expect("write");
    let st = netsight()
        .arg("replay")
        .arg(&single)
        .args(["--threshold", "0.5"])
        .output()
        .expect("run");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let out = String::from_utf8_lossy(&st.stdout);
    let t = Table::parse(&out).expect("output parses");
    assert_eq!(t.columns, ["value", "anomaly_score"]);
    assert_eq!(t.rows(), 400);
    assert_eq!(t.raw[0][350], "500");
    assert!(t.values[1][350].expect("score") > 0.5, "{:?}", t.values[1][350]);
    let alarms = String::from_utf8_lossy(&st.stderr);
    assert!(alarms.contains("350 value=500"), "{alarms}");

    // Several series in one file, with gaps; written to --out.
    let wide = dir.path().join("wide.csv");
    let mut text = String::from("time,eth0_rx,eth1_rx\n");
    for i in 0..300 {
        let a = if i == 250 { 9000.0 } else { 1000.0 + (i % 5) as f64 };
        let b = if i % 50 == 0 {
            String::new()
        } else {
            format!("{}", 20.0 + (i % 3) as f64)
        };
        text.push_str(&format!("{i},{a},{b}\n"));
    }
    std::fs::write(&wide, &text).expect("write");
    let scored = dir.path().join("scored.csv");
    let st = netsight()
        .arg("replay")
        .arg(&wide)
        .arg("--out")
        .arg(&scored)
        .output()
        .expect("run");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let t = Table::parse(&std::fs::read_to_string(&scored).expect("read")).expect("parse");
    assert_eq!(t.timestamp_header, "time");
    assert_eq!(
        t.columns,
        ["eth0_rx", "eth0_rx_anomaly_score", "eth1_rx", "eth1_rx_anomaly_score"]
    );
    assert!(t.values[1][250].expect("score") > 0.5);
    assert!(
        t.values[3].iter().flatten().all(|&s| s < 0.5),
        "the quiet column stays quiet"
    );
    assert_eq!(t.raw[2][100], "", "a gap stays a gap");
    assert_eq!(t.raw[3][100], "", "and has no score");

    // Several files go to a directory.
    let outdir = dir.path().join("scored");
    let st = netsight()
        .arg("replay")
        .arg(&single)
        .arg(&wide)
        .arg("--out")
        .arg(&outdir)
        .output()
        .expect("run");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert!(outdir.join("single.scored.csv").is_file() && outdir.join("wide.scored.csv").is_file());
}

#[test]
fn replay_reports_bad_input() {
    let st = netsight().args(["replay", "--score", "x.csv"]).output().expect("run");
    assert!(!st.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data/cat")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("labels")).expect("mkdir");
    std::fs::write(
        dir.path().join("data/cat/a.csv"),
        "timestamp,value\n2024-01-01 00:00:00,1\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("labels/combined_windows.json"), "{}").expect("write");
    let st = netsight()
        .args(["replay", "--nab"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!st.status.success());
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("cat/a.csv: no entry"),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn rolling_zscore_is_only_a_comparison() {
    // Both models produce one score per value, in [0, 1], without look-ahead: scoring a
    // prefix gives the same scores as the prefix of the whole run.
    let values: Vec<f64> = (0..500)
        .map(|i| ((i * 37) % 101) as f64 + if i == 400 { 300.0 } else { 0.0 })
        .collect();
    for m in [Model::Netsight, Model::RollingZscore] {
        let all = m.run_dense(&values);
        let prefix = m.run_dense(&values[..450]);
        assert_eq!(&all[..450], &prefix[..], "{m:?}");
        assert!(all.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(all[400] > 0.5, "{m:?}: {}", all[400]);
    }
}
