//! Samples, immutable snapshots and the short per-series history.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use crate::catalog::{MetricDesc, MetricKind};

/// A descriptor that is either from the static catalog or built at run time
/// (netstat fields the catalog does not know yet).
#[derive(Clone, Debug)]
pub enum DescRef {
    Static(&'static MetricDesc),
    Owned(Arc<MetricDesc>),
}

impl Deref for DescRef {
    type Target = MetricDesc;
    fn deref(&self) -> &MetricDesc {
        match self {
            DescRef::Static(d) => d,
            DescRef::Owned(d) => d,
        }
    }
}

impl From<&'static MetricDesc> for DescRef {
    fn from(d: &'static MetricDesc) -> Self {
        DescRef::Static(d)
    }
}

impl From<Arc<MetricDesc>> for DescRef {
    fn from(d: Arc<MetricDesc>) -> Self {
        DescRef::Owned(d)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Upper bounds, ascending, without +Inf.
    pub bounds: Arc<[f64]>,
    /// Cumulative counts per bound (same length as `bounds`).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Histogram(HistogramValue),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Scalar(v) => Some(*v),
            Value::Histogram(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Label values in the order of the descriptor's `labels`.
    pub labels: Vec<String>,
    pub value: Value,
}

#[derive(Clone, Debug)]
pub struct Family {
    pub desc: DescRef,
    pub samples: Vec<Sample>,
    /// Label names decided at run time (the rule engine's outputs carry the union of
    /// the loaded rules' group labels); `None` means the descriptor's `labels`.
    pub dynamic_labels: Option<Arc<[String]>>,
}

impl Family {
    pub fn label_names(&self) -> Vec<&str> {
        match &self.dynamic_labels {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => self.desc.labels.to_vec(),
        }
    }

    /// Index of label `name`, if the family has it.
    pub fn label_index(&self, name: &str) -> Option<usize> {
        match &self.dynamic_labels {
            Some(names) => names.iter().position(|n| n == name),
            None => self.desc.labels.iter().position(|n| *n == name),
        }
    }
}

/// What a collector writes into during one collection.
#[derive(Default, Debug)]
pub struct Emitter {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Emitter {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, desc: DescRef) -> &mut Family {
        let idx = match self.index.get(desc.name.as_ref()) {
            Some(&i) => i,
            None => {
                let i = self.families.len();
                self.index.insert(desc.name.to_string(), i);
                self.families.push(Family { desc, samples: Vec::new(), dynamic_labels: None });
                i
            }
        };
        &mut self.families[idx]
    }

    /// Records one scalar sample. `labels` must match the descriptor's label names.
    pub fn push(&mut self, desc: impl Into<DescRef>, labels: Vec<String>, value: f64) {
        let desc = desc.into();
        debug_assert_eq!(desc.labels.len(), labels.len(), "labels of {}", desc.name);
        self.family(desc).samples.push(Sample { labels, value: Value::Scalar(value) });
    }

    /// Records a sample without labels.
    pub fn push0(&mut self, desc: impl Into<DescRef>, value: f64) {
        self.push(desc, Vec::new(), value);
    }

    pub fn push_histogram(
        &mut self,
        desc: impl Into<DescRef>,
        labels: Vec<String>,
        value: HistogramValue,
    ) {
        let desc = desc.into();
        debug_assert_eq!(desc.kind, MetricKind::Histogram);
        self.family(desc).samples.push(Sample { labels, value: Value::Histogram(value) });
    }

    /// Records a sample of a family whose label names are decided at run time.
    pub fn push_dynamic(
        &mut self,
        desc: impl Into<DescRef>,
        names: &Arc<[String]>,
        labels: Vec<String>,
        value: f64,
    ) {
        debug_assert_eq!(names.len(), labels.len());
        let fam = self.family(desc.into());
        fam.dynamic_labels = Some(names.clone());
        fam.samples.push(Sample { labels, value: Value::Scalar(value) });
    }

    /// Makes sure a family appears even when it has no samples this tick.
    pub fn declare(&mut self, desc: impl Into<DescRef>) {
        self.family(desc.into());
    }

    pub fn into_families(self) -> Vec<Family> {
        self.families
    }

    pub fn len(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One immutable, timestamped view of everything collected in a tick.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    pub families: Vec<Family>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot { taken_at: SystemTime::UNIX_EPOCH, families: Vec::new() }
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.desc.name == name)
    }

    /// Value of the first sample of `name` whose labels include every `(label, value)`.
    pub fn value(&self, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
        let fam = self.family(name)?;
        fam.samples
            .iter()
            .find(|s| {
                matchers.iter().all(|(l, v)| {
                    fam.label_index(l).and_then(|i| s.labels.get(i)).is_some_and(|x| x == v)
                })
            })
            .and_then(|s| s.value.as_f64())
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// Identity of one series: metric name plus label values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub name: Arc<str>,
    pub labels: Vec<String>,
}

/// Fixed-capacity ring of `(unix seconds, value)` points.
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(f64, f64)>,
    head: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring { points: Vec::with_capacity(cap.min(16)), head: 0, cap: cap.max(1) }
    }

    pub fn push(&mut self, t: f64, v: f64) {
        if self.points.len() < self.cap {
            self.points.push((t, v));
        } else {
            self.points[self.head] = (t, v);
            self.head = (self.head + 1) % self.cap;
        }
    }

    /// Points oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let (a, b) = self.points.split_at(self.head);
        b.iter().chain(a.iter()).copied()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn last(&self) -> Option<(f64, f64)> {
        if self.points.is_empty() {
            None
        } else if self.points.len() < self.cap {
            self.points.last().copied()
        } else {
            Some(self.points[(self.head + self.cap - 1) % self.cap])
        }
    }

    /// Per-second rate over the last two points; a counter reset yields the new value
    /// divided by the gap (as Prometheus' `rate` does) rather than a negative spike.
    pub fn rate(&self) -> Option<f64> {
        let n = self.points.len();
        if n < 2 {
            return None;
        }
        let pts: Vec<(f64, f64)> = self.iter().skip(n - 2).collect();
        let (t0, v0) = pts[0];
        let (t1, v1) = pts[1];
        let dt = t1 - t0;
        if dt <= 0.0 {
            return None;
        }
        let dv = if v1 >= v0 { v1 - v0 } else { v1 };
        Some(dv / dt)
    }
}

/// Short in-memory history of every scalar series, fed one snapshot per tick.
/// Series absent from `stale_after` consecutive snapshots are dropped so churn
/// (closed ports, removed interfaces) cannot grow it without bound.
#[derive(Debug)]
pub struct History {
    cap: usize,
    stale_after: u64,
    generation: u64,
    series: HashMap<SeriesKey, (Ring, u64)>,
}

impl History {
    pub fn new(cap: usize) -> Self {
        History { cap, stale_after: 3, generation: 0, series: HashMap::new() }
    }

    pub fn record(&mut self, snap: &Snapshot) {
        self.generation += 1;
        let t = snap
            .taken_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        for fam in &snap.families {
            let name: Arc<str> = Arc::from(fam.desc.name.as_ref());
            for s in &fam.samples {
                let Some(v) = s.value.as_f64() else { continue };
                let key = SeriesKey { name: name.clone(), labels: s.labels.clone() };
                let gen = self.generation;
                let cap = self.cap;
                let entry = self.series.entry(key).or_insert_with(|| (Ring::new(cap), gen));
                entry.0.push(t, v);
                entry.1 = gen;
            }
        }
        let min_gen = self.generation.saturating_sub(self.stale_after);
        self.series.retain(|_, (_, g)| *g > min_gen);
    }

    pub fn get(&self, name: &str, labels: &[String]) -> Option<&Ring> {
        let key = SeriesKey { name: Arc::from(name), labels: labels.to_vec() };
        self.series.get(&key).map(|(r, _)| r)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Points of the series whose metric `keep` accepts, for persistence.
    pub fn export(&self, keep: impl Fn(&str) -> bool) -> Vec<SavedSeries> {
        self.series
            .iter()
            .filter(|(k, _)| keep(&k.name))
            .map(|(k, (ring, _))| SavedSeries {
                name: k.name.to_string(),
                labels: k.labels.clone(),
                points: ring.iter().collect(),
            })
            .collect()
    }

    /// Restores exported series (before the first snapshot of a restarted daemon).
    pub fn import(&mut self, saved: Vec<SavedSeries>) {
        for s in saved {
            let mut ring = Ring::new(self.cap);
            for (t, v) in s.points {
                ring.push(t, v);
            }
            let key = SeriesKey { name: Arc::from(s.name.as_str()), labels: s.labels };
            self.series.insert(key, (ring, self.generation));
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedSeries {
    pub name: String,
    pub labels: Vec<String>,
    pub points: Vec<(f64, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_points_in_order() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(i as f64, i as f64 * 10.0);
        }
        let pts: Vec<_> = r.iter().collect();
        assert_eq!(pts, vec![(2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]);
        assert_eq!(r.last(), Some((4.0, 40.0)));
    }

    #[test]
    fn rate_after_counter_reset_is_not_negative() {
        let mut r = Ring::new(4);
        r.push(0.0, 1000.0);
        r.push(5.0, 10.0);
        assert_eq!(r.rate(), Some(2.0));
    }
}
