//! `netsight rules test`: unit tests for rules, in the spirit of `promtool test rules`.
//! Input series use promtool's expanding notation (`0+10x30`, `1 2 _ 4`), are fed
//! to the real engine one tick at a time, and expectations are checked at given times.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::load::{RuleError, RuleSource};
use super::Engine;
use crate::catalog::{MetricDesc, MetricKind};
use crate::snapshot::{DescRef, Emitter, History, Snapshot};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files relative to the test file; `<embedded>` loads the built-in packs.
    pub rule_files: Vec<String>,
    #[serde(default = "one_second", with = "humantime_serde_compat")]
    pub interval: Duration,
    pub tests: Vec<TestCase>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// `metric{label="v"}` → values in expanding notation.
    pub series: BTreeMap<String, String>,
    pub expect: Vec<Expectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Offset from the first sample, e.g. `30s`.
    pub at: String,
    pub rule: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub firing: bool,
    /// Expected root cause when firing (`""`: none attached).
    #[serde(default)]
    pub cause: Option<String>,
}

/// Expands promtool notation: `a+bxn` (n+1 values from a, step b), `a-bxn`,
/// `axn` (n+1 copies), `_` (missing), `_xn` (n missing), plain numbers.
pub fn expand(notation: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in notation.split_whitespace() {
        if let Some((head, n)) = tok.split_once('x') {
            let n: usize = n.parse().map_err(|_| format!("bad repeat count in {tok:?}"))?;
            if head == "_" {
                out.extend(std::iter::repeat_n(None, n));
                continue;
            }
            let (start, step) = match head.rfind(['+', '-']).filter(|&i| i > 0) {
                Some(i) => {
                    let a: f64 = head[..i].parse().map_err(|_| format!("bad start in {tok:?}"))?;
                    let b: f64 = head[i + 1..].parse().map_err(|_| format!("bad step in {tok:?}"))?;
                    (a, if &head[i..i + 1] == "-" { -b } else { b })
                }
                None => (head.parse().map_err(|_| format!("bad value in {tok:?}"))?, 0.0),
            };
            out.extend((0..=n).map(|i| Some(start + step * i as f64)));
        } else if tok == "_" {
            out.push(None);
        } else {
            out.push(Some(tok.parse().map_err(|_| format!("bad value {tok:?}"))?));
        }
    }
    Ok(out)
}

/// Splits `name{a="1",b="2"}` into the name and its labels.
pub fn parse_series(s: &str) -> Result<(String, BTreeMap<String, String>), String> {
    let Some((name, rest)) = s.split_once('{') else {
        return Ok((s.trim().to_string(), BTreeMap::new()));
    };
    let body = rest.strip_suffix('}').ok_or_else(|| format!("missing `}}` in {s:?}"))?;
    let mut labels = BTreeMap::new();
    for pair in body.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("bad label {pair:?} in {s:?}"))?;
        labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    Ok((name.trim().to_string(), labels))
}

/// Input series for a replay: name, labels, values per tick.
pub type InputSeries = Vec<(String, BTreeMap<String, String>, Vec<Option<f64>>)>;

/// Builds the snapshot of tick `i`.
pub fn snapshot_at(series: &InputSeries, i: usize, t: SystemTime) -> Snapshot {
    type Points<'a> = Vec<(&'a BTreeMap<String, String>, f64)>;
    let mut by_name: BTreeMap<&str, Points> = BTreeMap::new();
    for (name, labels, values) in series {
        if let Some(Some(v)) = values.get(i) {
            by_name.entry(name).or_default().push((labels, *v));
        }
    }
    let mut e = Emitter::new();
    for (name, samples) in by_name {
        let (desc, names): (DescRef, Vec<String>) = match crate::catalog::find(name) {
            Some(d) => (DescRef::Static(d), d.labels.iter().map(|s| s.to_string()).collect()),
            None => {
                let mut names: Vec<String> = samples.iter().flat_map(|(l, _)| l.keys().cloned()).collect();
                names.sort();
                names.dedup();
                let kind = if name.ends_with("_total") {
                    MetricKind::Counter
                } else {
                    MetricKind::Gauge
                };
                let d = MetricDesc {
                    name: name.to_string().into(),
                    kind,
                    unit: "",
                    help: "test input".into(),
                    labels: &[],
                    otel_name: name.to_string().into(),
                };
                (DescRef::Owned(Arc::new(d)), names)
            }
        };
        let names: Arc<[String]> = names.into();
        for (labels, v) in samples {
            let vals: Vec<String> = names
                .iter()
                .map(|n| labels.get(n).cloned().unwrap_or_default())
                .collect();
            e.push_dynamic(desc.clone(), &names, vals, v);
        }
    }
    Snapshot::new(t, e.into_families())
}

/// Runs every test case of one file; returns failure messages (empty = passed).
pub fn run_file(path: &Path) -> Result<Vec<String>, Vec<RuleError>> {
    super::seasonal::set_synchronous(true);
    let text = std::fs::read_to_string(path).map_err(|e| vec![io_err(path, e)])?;
    let file: TestFile = serde_yaml::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        vec![RuleError {
            file: path.display().to_string(),
            line,
            column,
            message: e.to_string(),
        }]
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut sources = Vec::new();
    for f in &file.rule_files {
        if f == "<embedded>" {
            sources.extend(super::sources::embedded());
        } else {
            let p = dir.join(f);
            let text = std::fs::read_to_string(&p).map_err(|e| vec![io_err(&p, e)])?;
            sources.push(RuleSource {
                name: p.display().to_string(),
                text,
            });
        }
    }
    let set = super::load(&sources)?;
    let mut failures = Vec::new();
    for case in &file.tests {
        if let Err(msgs) = run_case(case, &set, file.interval) {
            failures.extend(
                msgs.into_iter()
                    .map(|m| format!("{}: {}: {m}", path.display(), case.name)),
            );
        }
    }
    Ok(failures)
}

fn io_err(path: &Path, e: std::io::Error) -> RuleError {
    RuleError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message: e.to_string(),
    }
}

fn run_case(case: &TestCase, set: &super::RuleSet, interval: Duration) -> Result<(), Vec<String>> {
    let mut series: InputSeries = Vec::new();
    for (k, v) in &case.series {
        let (name, labels) = parse_series(k).map_err(|e| vec![e])?;
        series.push((name, labels, expand(v).map_err(|e| vec![format!("{k}: {e}")])?));
    }
    let mut expects: Vec<(usize, &Expectation)> = Vec::new();
    for e in &case.expect {
        let at = humantime::parse_duration(&e.at).map_err(|err| vec![format!("bad `at` {:?}: {err}", e.at)])?;
        let step = (at.as_secs_f64() / interval.as_secs_f64()).round() as usize;
        expects.push((step, e));
    }
    let steps = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let mut engine = Engine::new(set.clone());
    let mut hist = History::new(512);
    // As the daemon does: only what the rules read is recorded, so a rule that
    // reads a metric `referenced_metrics` misses fails its tests.
    hist.record_only(Some(set.referenced_metrics()));
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut failures = Vec::new();
    for i in 0..steps.max(expects.iter().map(|e| e.0 + 1).max().unwrap_or(0)) {
        let snap = snapshot_at(&series, i, t0 + interval * i as u32);
        hist.record(&snap);
        engine.evaluate(&snap, &hist);
        for (_, e) in expects.iter().filter(|(s, _)| *s == i) {
            let labels: Vec<(&str, &str)> = e.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let got = engine.firing_cause(&e.rule, &labels);
            match (&got, e.firing) {
                (Some(_), false) => failures.push(format!("at {}: {} fires, expected silent", e.at, e.rule)),
                (None, true) => failures.push(format!("at {}: {} silent, expected firing", e.at, e.rule)),
                (Some(c), true) => {
                    if let Some(want) = &e.cause {
                        if c != want {
                            failures.push(format!("at {}: {} cause {c:?}, expected {want:?}", e.at, e.rule));
                        }
                    }
                }
                (None, false) => {}
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promtool_notation_expands() {
        assert_eq!(
            expand("0+10x3").expect("ok"),
            vec![Some(0.0), Some(10.0), Some(20.0), Some(30.0)]
        );
        assert_eq!(expand("5 _ 7").expect("ok"), vec![Some(5.0), None, Some(7.0)]);
        assert_eq!(
            expand("1x2 _x2").expect("ok"),
            vec![Some(1.0), Some(1.0), Some(1.0), None, None]
        );
        assert_eq!(expand("10-1x2").expect("ok"), vec![Some(10.0), Some(9.0), Some(8.0)]);
        assert!(expand("1+x").is_err());
    }

    #[test]
    fn series_names_parse() {
        let (n, l) = parse_series(r#"netsight_network_receive_drop_total{device="eth0"}"#).expect("ok");
        assert_eq!(n, "netsight_network_receive_drop_total");
        assert_eq!(l.get("device").map(String::as_str), Some("eth0"));
    }
}
