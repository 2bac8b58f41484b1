//! A short in-memory history per series (ring buffers) for rates and windows:
//! what the rule engine reads. Only the metrics the rules reference are kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rustc_hash::{FxBuildHasher, FxHasher};

use super::{Family, FamilyName, IntoLabels, LabelValues, Snapshot};

/// Fixed-capacity ring of `(unix seconds, value)` points.
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(f64, f64)>,
    head: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Ring {
            points: Vec::with_capacity(cap.min(16)),
            head: 0,
            cap: cap.max(1),
        }
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

    /// The point `k` places before the newest (0 = newest).
    pub fn nth_from_end(&self, k: usize) -> Option<(f64, f64)> {
        let n = self.points.len();
        if k >= n {
            return None;
        }
        let idx = if n < self.cap {
            n - 1 - k
        } else {
            (self.head + self.cap - 1 - k) % self.cap
        };
        Some(self.points[idx])
    }

    /// Per-second rate over the last two points; a counter reset yields the new value
    /// divided by the gap (as Prometheus' `rate` does) rather than a negative spike.
    pub fn rate(&self) -> Option<f64> {
        let n = self.points.len();
        if n < 2 {
            return None;
        }
        let (t0, v0) = self.nth_from_end(1)?;
        let (t1, v1) = self.nth_from_end(0)?;
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
///
/// Entries are keyed by a 64-bit hash of name and labels so that recording and
/// lookups allocate nothing; the stored name and labels are compared on every hit,
/// so a (vanishingly unlikely) collision makes a series look absent, never wrong.
#[derive(Debug)]
pub struct History {
    cap: usize,
    stale_after: u64,
    generation: u64,
    series: HashMap<u64, HistEntry, FxBuildHasher>,
    /// The metrics recorded; `None`: every one ([`History::record_only`]).
    only: Option<Vec<FamilyName>>,
}

#[derive(Debug)]
struct HistEntry {
    name: Arc<str>,
    labels: LabelValues,
    ring: Ring,
    generation: u64,
}

/// Hash of a series identity; the same for any string type of the label values
/// (`str`, `String` and `Arc<str>` hash alike), so lookups need not convert.
pub fn series_hash<L: AsRef<str>>(name: &str, labels: &[L]) -> u64 {
    series_hash_from(name_hasher(name), labels)
}

/// The hasher of [`series_hash`] after the name, so that a family's series hash
/// the name once.
fn name_hasher(name: &str) -> FxHasher {
    use std::hash::Hash;
    let mut h = FxHasher::default();
    name.hash(&mut h);
    h
}

fn series_hash_from<L: AsRef<str>>(mut h: FxHasher, labels: &[L]) -> u64 {
    use std::hash::{Hash, Hasher};
    h.write_usize(labels.len());
    for l in labels {
        l.as_ref().hash(&mut h);
    }
    h.finish()
}

fn same_labels<A: AsRef<str>, B: AsRef<str>>(a: &[A], b: &[B]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref())
}

impl History {
    pub fn new(cap: usize) -> Self {
        History {
            cap,
            stale_after: 3,
            generation: 0,
            series: HashMap::default(),
            only: None,
        }
    }

    /// From now on records only the metrics in `names` (`None`: every metric, the
    /// default) and forgets the series of any other. The daemon keeps the history
    /// its rules read and no more: recording all ~600 series of an idle host was a
    /// tenth of its tick.
    pub fn record_only<S: AsRef<str>>(&mut self, names: Option<impl IntoIterator<Item = S>>) {
        self.only = names.map(|n| {
            let mut names: Vec<FamilyName> = n.into_iter().map(|s| FamilyName::new(s.as_ref())).collect();
            names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            names.dedup();
            names
        });
        if let Some(only) = &self.only {
            self.series.retain(|_, e| only.iter().any(|n| n.as_str() == &*e.name));
        }
    }

    pub fn record(&mut self, snap: &Snapshot) {
        self.generation += 1;
        let t = snap
            .taken_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        match self.only.take() {
            // The few metrics the rules read are looked up in the snapshot's
            // index, rather than every family's name (~500 a tick) in the set.
            Some(only) => {
                for name in &only {
                    if let Some(fam) = snap.find(name) {
                        self.record_family(fam, t);
                    }
                }
                self.only = Some(only);
            }
            None => {
                for fam in &snap.families {
                    self.record_family(fam, t);
                }
            }
        }
        let min_gen = self.generation.saturating_sub(self.stale_after);
        self.series.retain(|_, e| e.generation > min_gen);
    }

    fn record_family(&mut self, fam: &Family, t: f64) {
        let gen = self.generation;
        let mut name: Option<Arc<str>> = None;
        let hasher = name_hasher(&fam.desc.name);
        for s in &fam.samples {
            let Some(v) = s.value.as_f64() else { continue };
            let h = series_hash_from(hasher.clone(), &s.labels);
            match self.series.get_mut(&h) {
                Some(e)
                    if *e.name == *fam.desc.name && (Arc::ptr_eq(&e.labels, &s.labels) || *e.labels == *s.labels) =>
                {
                    e.ring.push(t, v);
                    e.generation = gen;
                }
                Some(_) => {}
                None => {
                    let name = name.get_or_insert_with(|| Arc::from(fam.desc.name.as_ref())).clone();
                    let mut ring = Ring::new(self.cap);
                    ring.push(t, v);
                    self.series.insert(
                        h,
                        HistEntry {
                            name,
                            labels: s.labels.clone(),
                            ring,
                            generation: gen,
                        },
                    );
                }
            }
        }
    }

    pub fn get<L: AsRef<str>>(&self, name: &str, labels: &[L]) -> Option<&Ring> {
        self.series
            .get(&series_hash(name, labels))
            .filter(|e| &*e.name == name && same_labels(&e.labels, labels))
            .map(|e| &e.ring)
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
            .values()
            .filter(|e| keep(&e.name))
            .map(|e| SavedSeries {
                name: e.name.to_string(),
                labels: e.labels.iter().map(|l| l.to_string()).collect(),
                points: e.ring.iter().collect(),
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
            let h = series_hash(&s.name, &s.labels);
            let entry = HistEntry {
                name: Arc::from(s.name.as_str()),
                labels: s.labels.into_labels(),
                ring,
                generation: self.generation,
            };
            self.series.insert(h, entry);
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
    use crate::snapshot::{Emitter, LabelValue};

    #[test]
    fn history_finds_a_series_whatever_the_label_string_type() {
        let mut e = Emitter::new();
        let desc = crate::catalog::find("netsight_network_receive_bytes_total").expect("in catalog");
        e.push(desc, vec!["eth0".to_string()], 5.0);
        let mut h = History::new(4);
        h.record(&Snapshot::new(SystemTime::now(), e.into_families()));
        let name = "netsight_network_receive_bytes_total";
        assert!(h.get(name, &["eth0"]).is_some());
        assert!(h.get(name, &["eth0".to_string()]).is_some());
        assert!(h.get(name, &[LabelValue::from("eth0")]).is_some());
        assert!(h.get(name, &["eth1"]).is_none());
        assert!(
            h.get(name, &["eth0", ""]).is_none(),
            "a longer label list is another series"
        );
    }

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
